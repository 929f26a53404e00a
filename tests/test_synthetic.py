"""The embedded synthetic benchmark: renderer properties and the four dataset roots' on-disk formats."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hiast import synthetic
from hiast.classes import (CITYSCAPES_LABELID_TO_TRAINID, OXFORD_NUM_RAW_IDS, OXFORD_RAWID_TO_TRAINID,
                           SYNTHIA_ID_TO_TRAINID, lookup_table)
from hiast.imageio import read_png_unchanged, read_rgb

H, W = 64, 128
COUNTS = {"gta5": 2, "synthia": 2, "cityscapes_train": 2, "cityscapes_val": 1, "oxford_train": 1,
          "oxford_val": 2}
HARD = (5, 6, 7, 12, 16, 17, 18)


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.png"))


def _decoded(root: Path) -> dict[str, np.ndarray]:
    return {str(p.relative_to(root)): read_png_unchanged(p) for p in _files(root)}


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic") / "a"
    synthetic.generate_benchmark(root, seed=3, height=H, width=W, counts=COUNTS, workers=1)
    return root


@pytest.fixture(scope="module")
def gta_scenes():
    style = synthetic.DOMAIN_STYLES["gta5"]
    return [synthetic.render_scene(np.random.default_rng([11, i]), style, 128, 256) for i in range(30)]


# --- determinism -----------------------------------------------------------------------------------------------

def test_render_is_deterministic():
    style = synthetic.DOMAIN_STYLES["cityscapes"]
    a = synthetic.render_scene(np.random.default_rng(5), style, H, W)
    b = synthetic.render_scene(np.random.default_rng(5), style, H, W)
    c = synthetic.render_scene(np.random.default_rng(6), style, H, W)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_generation_deterministic_and_seed_dependent(bench, tmp_path):
    counts = {k: 0 for k in COUNTS} | {"gta5": 2, "oxford_val": 1}
    again = tmp_path / "b"
    synthetic.generate_benchmark(again, seed=3, height=H, width=W, counts=counts, workers=1)
    first, second = _decoded(bench), _decoded(again)
    assert set(second) <= set(first) and len(second) == 2 * 2 + 2
    for name, array in second.items():
        assert np.array_equal(array, first[name]), name
    other = tmp_path / "c"
    synthetic.generate_benchmark(other, seed=4, height=H, width=W, counts=counts, workers=1)
    third = _decoded(other)
    assert set(third) == set(second)
    assert any(not np.array_equal(third[k], second[k]) for k in second)


def test_workers_do_not_change_the_output(bench, tmp_path):
    parallel = tmp_path / "p"
    synthetic.generate_benchmark(parallel, seed=3, height=H, width=W, counts=COUNTS, workers=2)
    first, second = _decoded(bench), _decoded(parallel)
    assert set(first) == set(second)
    for name in first:
        assert np.array_equal(first[name], second[name]), name


# --- on-disk formats -------------------------------------------------------------------------------------------

def test_layout_and_marker(bench):
    assert sorted(p.name for p in (bench / "GTA5" / "images").iterdir()) == ["00001.png", "00002.png"]
    assert sorted(p.name for p in (bench / "GTA5" / "labels").iterdir()) == ["00001.png", "00002.png"]
    synthia = bench / "SYNTHIA_RAND_CITYSCAPES" / "RAND_CITYSCAPES"
    assert sorted(p.name for p in (synthia / "RGB").iterdir()) == ["0000000.png", "0000001.png"]
    assert sorted(p.name for p in (synthia / "GT" / "LABELS").iterdir()) == ["0000000.png", "0000001.png"]
    cs = bench / "cityscapes"
    assert len(list((cs / "leftImg8bit" / "train").rglob("*_000019_leftImg8bit.png"))) == 2
    assert len(list((cs / "gtFine" / "val").rglob("*_gtFine_labelIds.png"))) == 1
    ox = bench / "oxford_robotcar"
    assert len(list((ox / "train").glob("*.png"))) == 1
    val = sorted(p.name for p in (ox / "val").glob("*.png"))
    assert val == sorted(p.name for p in (ox / "anno").glob("*.png")) and len(val) == 2
    # Hidden labels of the (officially unlabelled) train split, for oracles only.
    hidden = sorted(p.name for p in (ox / "anno_train").glob("*.png"))
    assert hidden == sorted(p.name for p in (ox / "train").glob("*.png"))
    assert not list(bench.rglob("*.tmp"))
    marker = json.loads((bench / ".complete").read_text())
    assert marker["seed"] == 3 and marker["height"] == H and marker["width"] == W
    assert marker["counts"] == synthetic.DEFAULT_COUNTS | COUNTS
    assert (bench / "README.txt").is_file()


def test_images_are_rgb_of_the_requested_size(bench):
    for path in _files(bench):
        if any(part in ("images", "RGB", "leftImg8bit", "train", "val") for part in path.relative_to(bench).parts) \
                and "gtFine" not in path.parts:
            image = read_rgb(path)
            assert image.shape == (H, W, 3) and image.dtype == np.uint8, path


def test_gta5_labels_are_palettised_label_ids(bench):
    valid = set(CITYSCAPES_LABELID_TO_TRAINID) | {0}
    for path in (bench / "GTA5" / "labels").iterdir():
        raw = read_png_unchanged(path)
        assert raw.shape == (H, W, 1) and raw.dtype == np.uint8
        assert set(np.unique(raw).tolist()) <= valid
    from PIL import Image
    with Image.open(next((bench / "GTA5" / "labels").iterdir())) as image:
        assert image.mode == "P"


def test_synthia_labels_are_16bit_without_absent_classes(bench):
    for path in (bench / "SYNTHIA_RAND_CITYSCAPES" / "RAND_CITYSCAPES" / "GT" / "LABELS").iterdir():
        raw = read_png_unchanged(path)
        assert raw.shape == (H, W, 3) and raw.dtype == np.uint16
        ids = set(np.unique(raw[..., 0]).tolist())
        assert ids <= set(SYNTHIA_ID_TO_TRAINID) | {0}
        assert not ids & {16, 18, 20}          # terrain, truck, train
        assert not np.unique(raw[..., 2]).any()


def test_cityscapes_label_ids_and_train_ids_agree(bench):
    lut = lookup_table(CITYSCAPES_LABELID_TO_TRAINID)
    files = list((bench / "cityscapes" / "gtFine").rglob("*_gtFine_labelIds.png"))
    assert len(files) == 3
    for path in files:
        ids = read_png_unchanged(path)[..., 0]
        train = read_png_unchanged(Path(str(path).replace("_labelIds", "_labelTrainIds")))[..., 0]
        assert np.array_equal(lut[ids], train)
        assert set(np.unique(train).tolist()) <= set(range(19)) | {255}


def test_oxford_annotations_map_to_nine_classes(bench):
    lut = lookup_table(OXFORD_RAWID_TO_TRAINID, size=256)
    for path in (bench / "oxford_robotcar" / "anno").iterdir():
        raw = read_png_unchanged(path)
        assert raw.shape == (H, W, 4) and raw.dtype == np.uint8
        assert (raw[..., 3] == 255).all() and not raw[..., 1:3].any()
        assert raw[..., 0].max() < OXFORD_NUM_RAW_IDS
        nine = lut[raw[..., 0]]
        assert set(np.unique(nine).tolist()) <= set(range(9)) | {255}
        assert (nine < 9).any()


def test_oxford_raw_ids_through_the_lut():
    nine = lookup_table(OXFORD_RAWID_TO_TRAINID)[synthetic.TRAINID_TO_OXFORD_RAW[:19]]
    from hiast.classes import CITYSCAPES_TRAINID_TO_OXFORD
    assert nine.tolist() == [CITYSCAPES_TRAINID_TO_OXFORD[c] for c in range(19)]
    assert synthetic.TRAINID_TO_OXFORD_RAW[0] == 11


# --- renderer content ------------------------------------------------------------------------------------------

def test_labels_are_train_ids(gta_scenes):
    for rgb, labels in gta_scenes[:5]:
        assert rgb.shape == (128, 256, 3) and rgb.dtype == np.uint8
        assert labels.shape == (128, 256) and labels.dtype == np.uint8
        assert set(np.unique(labels).tolist()) <= set(range(19)) | {255}


def test_synthia_style_never_emits_absent_classes():
    style = synthetic.DOMAIN_STYLES["synthia"]
    for i in range(12):
        _, labels = synthetic.render_scene(np.random.default_rng([2, i]), style, 64, 128)
        assert not np.isin(labels, [9, 14, 16]).any()


def test_all_classes_appear_and_hard_classes_are_small(gta_scenes):
    counts = np.zeros(256, np.int64)
    for _, labels in gta_scenes:
        counts += np.bincount(labels.ravel(), minlength=256)
    assert (counts[:19] > 0).all(), [c for c in range(19) if counts[c] == 0]
    share = counts / counts.sum()
    for c in HARD:
        assert share[c] < 0.03, (c, share[c])
    assert share[255] < 0.01


def test_gap_scales_the_style_distance():
    neutral = [synthetic.make_style(d, gap=0.0) for d in synthetic.DOMAINS]
    assert len({(s.saturation, s.blur_sigma, s.horizon_range) for s in neutral}) == 1
    gta, cs = synthetic.make_style("gta5", 2.0), synthetic.make_style("cityscapes", 2.0)
    base_gta, base_cs = synthetic.DOMAIN_STYLES["gta5"], synthetic.DOMAIN_STYLES["cityscapes"]
    assert abs(gta.saturation - cs.saturation) > abs(base_gta.saturation - base_cs.saturation)
    assert synthetic.make_style("synthia", 0.0).absent_classes == (9, 14, 16)
