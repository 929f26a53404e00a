from pathlib import Path

import pytest

from hiast import prepare
from hiast.config import ConfigError
from hiast.datasets import build_manifest
from hiast.scenario import DataConfig, Scenario, load_scenario

from fixtures import write_cityscapes, write_oxford

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("path", sorted((ROOT / "config" / "scenarios").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_scenario_loads(path):
    scenario = load_scenario(path)
    assert scenario.name == path.stem
    assert scenario.num_classes in (9, 19)


def test_official_defaults():
    s = Scenario()
    assert len(s.rounds) == 3
    r = s.rounds[0]
    assert (r.pseudo.policy, r.pseudo.alpha, r.pseudo.beta, r.pseudo.gamma) == ("IAS", 0.5, 0.9, 8.0)
    assert r.pseudo.instance_size == 2 and r.pseudo.initial_threshold == 0.9
    assert (r.bank.num_hard, r.bank.paste, r.bank.max_donors) == (14, "all_hard", 1)
    t = r.train
    assert (t.iterations, t.batch_size, t.lr, t.head_lr_mult) == (8000, 6, 3e-6, 10.0)
    assert (t.kld_weight, t.entropy_weight, t.consistency_weight, t.ema_momentum) == (0.1, 1.0, 0.5, 0.999)
    assert s.warmup.adversarial.discriminator_precision == "fp32"             # the official code's


def write(tmp_path, text):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    return path


def test_scenario_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"s\.yaml\.rounds\[1\]\.pseudo\.alpha: 1\.5 is out of range"):
        load_scenario(write(tmp_path, "rounds: [{}, {pseudo: {alpha: 1.5}}]\n"))
    with pytest.raises(ConfigError, match=r"s\.yaml\.warmup\.source_only\.iterations: -5 is out of range"):
        load_scenario(write(tmp_path, "warmup: {source_only: {iterations: -5}}\n"))
    with pytest.raises(ConfigError, match=r"unknown key; did you mean 'label_space'"):
        load_scenario(write(tmp_path, "label_spce: oxford9\n"))
    with pytest.raises(ConfigError, match=r"batch_size: 6 is not divisible by gpus=4"):
        load_scenario(write(tmp_path, "gpus: 4\n"))
    with pytest.raises(ConfigError, match=r"unknown metric 'mIoU-20'"):
        load_scenario(write(tmp_path, "metrics: [mIoU-20]\n"))
    with pytest.raises(ConfigError, match=r"rounds\[0\]\.train\.bn_statistics: 'frozn' is not allowed; expected one "
                                          r"of \['student', 'frozen', 'target'\]"):
        load_scenario(write(tmp_path, "rounds: [{train: {bn_statistics: frozn}}]\n"))
    with pytest.raises(ConfigError, match=r"warmup\.adversarial\.discriminator_precision: 'fp16' is not allowed; "
                                          r"expected one of \['fp32', 'bf16'\]"):
        load_scenario(write(tmp_path, "warmup: {adversarial: {discriminator_precision: fp16}}\n"))
    assert load_scenario(write(tmp_path, "warmup: {adversarial: {discriminator_precision: bf16}}\n")) \
        .warmup.adversarial.discriminator_precision == "bf16"


def test_split_rows_holdout_and_cap(tmp_path):
    root = write_cityscapes(tmp_path / "cs", n=10)
    manifest = build_manifest("cityscapes", root)
    data = DataConfig(dataset="cityscapes", root=root, holdout=0.2)
    train = prepare.split_rows(manifest, data, "train", seed=1)
    holdout = prepare.split_rows(manifest, data, "holdout", seed=1)
    assert len(train) == 8 and len(holdout) == 2
    assert not set(train.image_id) & set(holdout.image_id)
    assert list(prepare.split_rows(manifest, data, "train", seed=1).image_id) == list(train.image_id)
    assert len(prepare.split_rows(manifest, data, "val", seed=1)) == 10
    capped = DataConfig(dataset="cityscapes", root=root, max_images=3)
    assert len(prepare.split_rows(manifest, capped, "train", seed=0)) == 3


def test_hidden_labels(tmp_path):
    root = write_oxford(tmp_path / "ox", n=2)
    manifest = build_manifest("oxford", root)
    train = prepare.split_rows(manifest, DataConfig(dataset="oxford", root=root), "train", 0)
    with pytest.raises(Exception, match="hidden label"):
        prepare.with_hidden_labels(train, root / "anno_train")
