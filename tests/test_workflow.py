"""The Snakemake workflow: config slices per stage, smoke preset, lint, dry runs, reruns after an edit."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hiast import workflow as hw
from hiast.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def resolved(name="synthetic_gta5_to_cityscapes", smoke=None):
    return hw.resolve(ROOT / "config" / "scenarios", name, smoke)[0]


def test_round_two_edit_changes_only_round_two_slices():
    before = resolved()
    after = json.loads(json.dumps(before))
    after["rounds"][1]["pseudo"]["alpha"] = 0.3
    after["rounds"][1]["train"]["iterations"] = 7
    changed = {(stage, r) for stage in ("pseudo", "bank", "train") for r in (1, 2, 3)
               if hw.stage_json(before, stage, r) != hw.stage_json(after, stage, r)}
    assert changed == {("pseudo", 2), ("train", 2)}
    for stage in ("warmup", "eval", "manifest"):
        assert hw.stage_json(before, stage) == hw.stage_json(after, stage)


def test_stage_json_round_trips_to_the_scenario():
    raw = resolved()
    scenario = hw.scenario_from_json(hw.stage_json(raw, "train", 2))
    assert scenario.rounds[1].train == hw.scenario_from_json(json.dumps(raw)).rounds[1].train
    with pytest.raises(ValueError, match="round 4"):
        hw.stage_slice(raw, "train", 4)
    with pytest.raises(ConfigError, match="not valid JSON"):
        hw.scenario_from_json("{")


@pytest.mark.parametrize("part, key, default, other", [
    ("train", "overlap", True, False),
    ("train", "bn_statistics", "student", "frozen"),
    ("train", "fused_objective", False, True),
    ("pseudo", "bn_statistics", "as_saved", "target"),
])
def test_option_added_later_at_its_default_leaves_the_params_unchanged(part, key, default, other):
    """Options added after results existed (train.overlap, train/pseudo.bn_statistics): at their default they
    are not in the stage's params (the params of earlier runs, so no "params changed" rerun), the rebuilt
    scenario still has the default; set otherwise, the value is passed and changes only that round's stage."""
    assert hw.LATER_DEFAULTS[part][key] == default
    raw = resolved()
    text = hw.stage_json(raw, part, 1)
    assert f'"{key}"' not in text and raw["rounds"][0][part][key] == default
    assert "workers" in text                                  # options older than the results stay in
    assert getattr(getattr(hw.scenario_from_json(text).rounds[0], part), key) == default
    changed_raw = json.loads(json.dumps(raw))
    changed_raw["rounds"][0][part][key] = other
    rebuilt = hw.scenario_from_json(hw.stage_json(changed_raw, part, 1))
    assert getattr(getattr(rebuilt.rounds[0], part), key) == other
    changed = {(stage, r) for stage in ("pseudo", "bank", "train") for r in (1, 2, 3)
               if hw.stage_json(raw, stage, r) != hw.stage_json(changed_raw, stage, r)}
    assert changed == {(part, 1)}


def test_the_discriminator_precision_at_its_default_leaves_the_warmup_params_unchanged():
    """warmup.adversarial.discriminator_precision (added after results existed): at "fp32" it is not in the
    warm-up's params; "bf16" is passed, and changes the warm-up's params only (every round follows from the
    warm-up's file, not from its params)."""
    assert hw.LATER_DEFAULTS["adversarial"]["discriminator_precision"] == "fp32"
    raw = resolved()
    text = hw.stage_json(raw, "warmup")
    assert '"discriminator_precision"' not in text and '"discriminator_lr"' in text
    assert hw.scenario_from_json(text).warmup.adversarial.discriminator_precision == "fp32"
    changed_raw = json.loads(json.dumps(raw))
    changed_raw["warmup"]["adversarial"]["discriminator_precision"] = "bf16"
    assert hw.scenario_from_json(hw.stage_json(changed_raw, "warmup")).warmup.adversarial.discriminator_precision == "bf16"
    stages = [("warmup", None), ("oracle", None), ("eval", None)] + [
        (stage, r) for stage in ("pseudo", "bank", "train") for r in (1, 2, 3)]
    changed = {(stage, r) for stage, r in stages if hw.stage_json(raw, stage, r) != hw.stage_json(changed_raw, stage, r)}
    assert changed == {("warmup", None)}
    assert raw["warmup"]["adversarial"]["discriminator_precision"] == "fp32"   # the slice copied, not edited


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "config" / "scenarios").glob("*.yaml")))
def test_every_stage_slice_of_every_shipped_scenario_rebuilds(name):
    # A slice leaves `metrics` out; an oxford9 scenario must still rebuild (its default metric is mIoU-9).
    raw = resolved(name)
    for stage in ("warmup", "eval", "oracle"):
        scenario = hw.scenario_from_json(hw.stage_json(raw, stage))
        assert scenario.label_space == raw["label_space"]
    for r in range(1, len(raw["rounds"]) + 1):
        for stage in ("pseudo", "bank", "train"):
            scenario = hw.scenario_from_json(hw.stage_json(raw, stage, r))
            assert scenario.metrics == {"cityscapes19": ("mIoU-19",), "oxford9": ("mIoU-9",)}[raw["label_space"]]


def test_smoke_preset_maps_roots_and_every_round():
    smoke = yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())["smoke"]
    real = resolved("gta5_to_cityscapes", smoke)
    assert real["source"]["root"] == "data/smoke/GTA5" and real["target"]["root"] == "data/smoke/cityscapes"
    assert real["model"]["backbone"] == "resnet18" and real["base_size"] == [64, 128]
    assert all(r["train"]["iterations"] == 4 for r in real["rounds"])
    assert real["rounds"][2]["train"]["lr"] == 1e-6  # the scenario's own round settings survive
    synth = resolved("synthetic_synthia_to_cityscapes", smoke)
    assert synth["source"]["root"] == "data/smoke/SYNTHIA_RAND_CITYSCAPES"


def test_unknown_scenario_is_named():
    with pytest.raises(ConfigError, match=r"no scenario file .*nope\.yaml; known scenarios"):
        hw.resolve(ROOT / "config" / "scenarios", "nope")


def test_launcher_prefix():
    assert hw.launcher_prefix({"launcher": "local"}, "self_train", "x") == ""
    prefix = hw.launcher_prefix({"launcher": "slurm", "slurm": {"partition": "gpu"}}, "self_train", "r/logs")
    assert "-m hiast.launch --rule self_train --folder r/logs" in prefix and prefix.endswith(" -- ")
    assert hw.launcher_prefix({"launcher": "slurm"}, "instance_bank", "x") == ""  # light rules stay local


def run_snakemake(*args, cwd=ROOT, check=True):
    env = dict(os.environ, HIAST_NO_PROGRESS="1")
    result = subprocess.run(SNAKEMAKE + list(args), cwd=cwd, capture_output=True, text=True, env=env, timeout=900)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def job_counts(output: str) -> dict:
    table = output.split("Job stats:")[-1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m.group(1) != "total"}


def test_lint_is_clean():
    result = run_snakemake("--lint")
    assert "Congratulations, your workflow is in a good condition" in result.stdout + result.stderr


@pytest.mark.parametrize("scenario", ["gta5_to_cityscapes", "synthia_to_cityscapes", "cityscapes_to_oxford"])
def test_dry_run_of_each_real_scenario_plans_the_expected_jobs(scenario, tmp_path):
    result = run_snakemake("-n", "--config", f"scenarios=[{scenario}]", f"results={tmp_path}/results")
    counts = job_counts(result.stdout)
    assert counts == {"manifest": 2, "warmup": 1, "eval_warmup": 1, "pseudo_labels": 3, "instance_bank": 3,
                      "self_train": 3, "eval_round": 3, "scenario_summary": 1, "results_table": 1, "all": 1,
                      "report_miou": 1, "report_per_class": 1, "report_thresholds": 1, "report_pseudo_labels": 1,
                      "report_examples": 3}


def test_bad_config_stops_before_any_job(tmp_path):
    result = run_snakemake("-n", "--config", "bogus_key=1", check=False)
    assert result.returncode != 0 and "bogus_key" in result.stdout + result.stderr
    scenarios = tmp_path / "scenarios"
    scenarios.mkdir()
    (scenarios / "bad.yaml").write_text("rounds: [{pseudo: {alpha: 2.0}}]\n")
    result = run_snakemake("-n", "--config", "scenarios=[bad]", f"scenario_dir={scenarios}", check=False)
    text = result.stdout + result.stderr
    assert result.returncode != 0 and "rounds[0].pseudo.alpha: 2.0 is out of range" in text
    assert "Job stats" not in text


@pytest.fixture(scope="module")
def smoke_project(tmp_path_factory):
    """A project folder with its own config, results and data, run once through the smoke preset."""
    work = tmp_path_factory.mktemp("project")
    shutil.copytree(ROOT / "config", work / "config")
    args = ["-s", str(ROOT / "workflow" / "Snakefile"), "-d", str(work), "--cores", "2",
            "--configfile", str(work / "config" / "smoke.yaml"), "--config",
            "scenarios=[synthetic_gta5_to_cityscapes]"]
    run_snakemake(*args)
    return work, args


def test_smoke_run_writes_every_contract_path(smoke_project):
    work, _ = smoke_project
    results = work / "results" / "smoke" / "synthetic_gta5_to_cityscapes"
    for path in ["manifests/source.csv", "manifests/target.csv", "warmup/model.pt", "warmup/eval.csv",
                 "summary.csv"] + [f"round_{r}/{f}" for r in (1, 2, 3) for f in
                                   ("pseudo_labels.h5", "instance_bank.h5", "model.pt", "teacher.pt", "eval.csv")]:
        assert (results / path).is_file(), path
    # last round, warm-up, and the marked best-on-target-val section
    assert (work / "results" / "smoke" / "summary.md").read_text().count("synthetic_gta5_to_cityscapes") == 3
    assert (results / "benchmarks" / "self_train_1.tsv").is_file()


def test_editing_round_two_reruns_round_two_and_later_only(smoke_project):
    work, args = smoke_project
    path = work / "config" / "scenarios" / "synthetic_gta5_to_cityscapes.yaml"
    data = yaml.safe_load(path.read_text())
    data["rounds"][1].setdefault("pseudo", {})["alpha"] = 0.3
    path.write_text(yaml.safe_dump(data))
    counts = job_counts(run_snakemake(*args, "-n").stdout)
    # rounds 2 and 3 (round 3 is labelled by round 2's teacher); the warm-up and round 1 keep their files
    assert counts == {"pseudo_labels": 2, "instance_bank": 2, "self_train": 2, "eval_round": 2,
                      "scenario_summary": 1, "results_table": 1, "all": 1, "report_miou": 1, "report_per_class": 1,
                      "report_thresholds": 1, "report_pseudo_labels": 1, "report_examples": 2}


def test_sharded_pseudo_labels_through_the_workflow_are_byte_identical(smoke_project):
    """Round 3 relabelled with pseudo.shards = 2: two inference jobs, then the sequential pass; the labels and
    thresholds equal the unsharded run's byte for byte, and the shards' outputs are removed afterwards."""
    import h5py
    work, args = smoke_project
    results = work / "results" / "smoke" / "synthetic_gta5_to_cityscapes"
    with h5py.File(results / "round_3" / "pseudo_labels.h5") as f:
        before = {name: f[name][()].tobytes() for name in ("labels", "thresholds")}
    path = work / "config" / "scenarios" / "synthetic_gta5_to_cityscapes.yaml"
    data = yaml.safe_load((ROOT / "config" / "scenarios" / "synthetic_gta5_to_cityscapes.yaml").read_text())
    data["rounds"][2].setdefault("pseudo", {})["shards"] = 2
    path.write_text(yaml.safe_dump(data))
    result = run_snakemake(*args)
    counts = job_counts(result.stdout + result.stderr)
    assert counts["pseudo_shard"] == 2 and counts["pseudo_labels"] == 1 and "warmup" not in counts
    with h5py.File(results / "round_3" / "pseudo_labels.h5") as f:
        assert {name: f[name][()].tobytes() for name in ("labels", "thresholds")} == before
    assert not list((results / "round_3").glob("shards/*.h5"))


def test_experiments_config_plans_shared_warmups_oracles_and_the_seed_table(tmp_path):
    """config/experiments.yaml: 55 runs, but one warm-up per scenario and seed is trained (3 x 3) and the 46
    ablation/grid/diagnosis variants copy theirs; one oracle per scenario file; results/experiments.md. Only the
    source_term runs' training jobs read the source manifest."""
    result = run_snakemake("-n", "-p", "--configfile", "config/config.yaml", "config/experiments.yaml",
                           "--config", f"results={tmp_path}/results")
    counts = job_counts(result.stdout)
    assert counts["warmup"] == 55 and counts["oracle"] == 3 and counts["experiments_table"] == 1
    warmups = [line for line in result.stdout.splitlines() if " -m hiast warmup " in line]
    copies = [line for line in warmups if "--copy-from" in line]
    assert len(warmups) == 55 and len(copies) == 46
    results = f"{tmp_path}/results"
    trains = [line for line in result.stdout.splitlines() if " -m hiast train " in line]
    with_source = [line for line in trains if "--source-manifest" in line]
    assert len(trains) == 55 * 3 and len(with_source) == 6
    for run in ("source_term", "lr_x10+source_term"):
        manifest = f"--source-manifest {results}/synthetic_gta5_to_cityscapes@{run}/manifests/source.csv"
        assert sum(manifest in line for line in with_source) == 3
    line = next(w for w in warmups if f"--output {results}/synthetic_gta5_to_cityscapes@st_nt+seed1/warmup" in w)
    assert f"--copy-from {results}/synthetic_gta5_to_cityscapes@seed1/warmup/model.pt" in line


def test_several_gpus_run_the_training_rules_through_the_spawner(tmp_path):
    scenarios = tmp_path / "scenarios"
    scenarios.mkdir()
    data = yaml.safe_load((ROOT / "config" / "scenarios" / "gta5_to_cityscapes.yaml").read_text())
    data["gpus"] = 2
    data["warmup"]["source_only"]["batch_size"] = 8
    (scenarios / "two.yaml").write_text(yaml.safe_dump(data))
    result = run_snakemake("-n", "-p", "--config", "scenarios=[two]", f"scenario_dir={scenarios}",
                           f"results={tmp_path}/results")
    lines = [line for line in result.stdout.splitlines() if " -m hiast " in line]
    spawned = [line.split(" -m hiast ")[1].split()[0] for line in lines if "-m hiast.spawn --nproc 2 -- " in line]
    assert sorted(set(spawned)) == ["train", "warmup"]           # training stages only
    assert not any("hiast.spawn" in line for line in lines if " -m hiast pseudo " in line or " -m hiast eval " in line)
