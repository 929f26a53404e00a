import logging
import os

import numpy as np
import pandas as pd
import pytest

from hiast import datasets, imageio
from hiast.datasets import DatasetError, build_manifest

from fixtures import (GTA5_RAW, GTA5_TRAIN, OXFORD_TRAIN, SYNTHIA_TRAIN, tile, write_cityscapes,
                      write_gta5, write_oxford, write_synthia)


def load_labels(manifest, label_space="cityscapes19", split=None):
    if split:
        manifest = manifest[manifest.split == split]
    ds = datasets.SegmentationDataset(manifest, label_space)
    return [ds.load(i)[1] for i in range(len(ds))]


def test_gta5_palettised_label_ids_map_to_train_ids(tmp_path):
    manifest = build_manifest("gta5", write_gta5(tmp_path / "GTA5"))
    assert list(manifest.columns) == datasets.MANIFEST_COLUMNS
    assert len(manifest) == 2 and set(manifest.split) == {"train"}
    assert (manifest.height == 8).all() and (manifest.width == 12).all()
    for labels in load_labels(manifest):
        assert (labels == tile(GTA5_TRAIN)).all()


def test_synthia_16bit_channel0(tmp_path):
    manifest = build_manifest("synthia", write_synthia(tmp_path / "SYNTHIA_RAND_CITYSCAPES"))
    assert len(manifest) == 2
    for labels in load_labels(manifest):
        assert (labels == tile(SYNTHIA_TRAIN)).all()


def test_synthia_id_above_255_is_refused(tmp_path):
    root = write_synthia(tmp_path / "S", n=1)
    bad = np.zeros((8, 12, 3), dtype=np.uint16)
    bad[0, 0, 0] = 259  # would alias to 3 (road) if read as 8 bits
    path = root / "RAND_CITYSCAPES" / "GT" / "LABELS" / "0000000.png"
    imageio.write_png16(path, bad)
    with pytest.raises(DatasetError, match=r"0000000\.png.*\[259\].*SYNTHIA"):
        build_manifest("synthia", root)


@pytest.mark.parametrize("train_ids", [False, True])
def test_cityscapes_label_ids_or_train_ids(tmp_path, train_ids):
    manifest = build_manifest("cityscapes", write_cityscapes(tmp_path / "cs", train_ids=train_ids))
    assert sorted(manifest.split.unique()) == ["train", "val"]
    suffix = "_gtFine_labelTrainIds.png" if train_ids else "_gtFine_labelIds.png"
    assert manifest.label.str.endswith(suffix).all()
    assert manifest.image_id.iloc[0].endswith("_000019")
    for labels in load_labels(manifest):
        assert (labels == tile(GTA5_TRAIN)).all()


def test_cityscapes_as_oxford_source_merges_to_nine_classes(tmp_path):
    manifest = build_manifest("cityscapes", write_cityscapes(tmp_path / "cs"), splits=["train"])
    labels = load_labels(manifest, "oxford9")[0]
    # road->8, sidewalk->7, car->3, void->255, bicycle->2, building->6
    assert (labels == tile(np.array([[8, 7, 3], [255, 2, 6]], dtype=np.uint8))).all()


def test_oxford_train_unlabelled_val_channel0(tmp_path):
    manifest = build_manifest("oxford", write_oxford(tmp_path / "ox"))
    train, val = manifest[manifest.split == "train"], manifest[manifest.split == "val"]
    assert len(train) == 2 and (train.label == "").all()
    assert len(val) == 2 and val.label.str.contains("anno").all()
    for labels in load_labels(manifest, "oxford9", "val"):
        assert (labels == tile(OXFORD_TRAIN)).all()
    for labels in load_labels(manifest, "oxford9", "train"):
        assert (labels == 255).all()
    with pytest.raises(DatasetError, match="oxford9|cityscapes19"):
        load_labels(manifest, "cityscapes19", "val")


def test_missing_and_empty_roots(tmp_path):
    with pytest.raises(DatasetError, match=r"nowhere.*does not exist"):
        build_manifest("gta5", tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"empty.*is empty"):
        build_manifest("gta5", tmp_path / "empty")
    root = tmp_path / "cs"
    (root / "leftImg8bit" / "train").mkdir(parents=True)
    (root / "gtFine" / "train").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"no cityscapes images.*train"):
        build_manifest("cityscapes", root, splits=["train"])
    with pytest.raises(DatasetError, match=r"leftImg8bit/val folder does not exist"):
        build_manifest("cityscapes", root)


def test_orphans_are_named(tmp_path):
    root = write_gta5(tmp_path / "GTA5", n=3)
    os.remove(root / "labels" / "00002.png")
    os.remove(root / "images" / "00003.png")
    with pytest.raises(DatasetError) as err:
        build_manifest("gta5", root)
    text = str(err.value)
    assert "image without label" in text and "images/00002.png" in text
    assert "label without image" in text and "labels/00003.png" in text


def test_truncated_and_corrupt_files_are_named(tmp_path):
    root = write_gta5(tmp_path / "GTA5", n=3)
    image = root / "images" / "00001.png"
    image.write_bytes(image.read_bytes()[:60])
    (root / "labels" / "00002.png").write_bytes(b"not a png at all")
    with pytest.raises(DatasetError) as err:
        build_manifest("gta5", root)
    text = str(err.value)
    assert "2 bad gta5 file(s)" in text
    assert "images/00001.png" in text and "labels/00002.png" in text


def test_unknown_label_values_are_named(tmp_path):
    root = write_gta5(tmp_path / "GTA5", n=2)
    bad = tile(GTA5_RAW).copy()
    bad[0, 0] = 40
    imageio.write_palettised(root / "labels" / "00002.png", bad)
    with pytest.raises(DatasetError, match=r"labels/00002\.png: label values \[40\] outside the Cityscapes "
                                           r"label ids id space \(expected 0\.\.33\)"):
        build_manifest("gta5", root)
    root = write_oxford(tmp_path / "ox", n=1)
    anno = np.zeros((8, 12, 4), dtype=np.uint8)
    anno[..., 0] = 21
    imageio.write_rgba(root / "anno" / "1418132700000000_00000.png", anno)
    with pytest.raises(DatasetError, match=r"\[21\].*Oxford"):
        build_manifest("oxford", root)


def test_label_of_other_size_is_resized_nearest_and_counted(tmp_path, caplog):
    root = write_gta5(tmp_path / "GTA5", n=2)
    # label at half resolution: each 4x4 block becomes 2x2
    imageio.write_palettised(root / "labels" / "00001.png", tile(GTA5_RAW, 2))
    with caplog.at_level(logging.WARNING):
        manifest = build_manifest("gta5", root)
    assert datasets.size_mismatches(manifest) == 1
    assert "1 label(s) differ in size" in caplog.text
    labels = load_labels(manifest)[0]
    assert labels.shape == (8, 12) and (labels == tile(GTA5_TRAIN)).all()


def test_manifest_round_trip_and_fingerprint(tmp_path):
    manifest = build_manifest("oxford", write_oxford(tmp_path / "ox"))
    path = tmp_path / "m" / "manifest.csv"
    datasets.write_manifest(manifest, path)
    back = datasets.read_manifest(path)
    pd.testing.assert_frame_equal(manifest.reset_index(drop=True), back, check_dtype=False)
    assert datasets.manifest_fingerprint(back) == datasets.manifest_fingerprint(manifest)
    assert datasets.manifest_fingerprint(back.iloc[::-1]) != datasets.manifest_fingerprint(manifest)
    assert [p.name for p in path.parent.iterdir()] == ["manifest.csv"]  # no temporary left
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DatasetError, match=r"bad\.csv.*lacks column"):
        datasets.read_manifest(tmp_path / "bad.csv")


def test_dataset_items_are_tensors(tmp_path):
    manifest = build_manifest("gta5", write_gta5(tmp_path / "GTA5"))
    item = datasets.SegmentationDataset(manifest, size=(4, 6))[1]
    assert tuple(item["image"].shape) == (3, 4, 6) and tuple(item["label"].shape) == (4, 6)
    assert item["image_id"] == "00002" and item["index"] == 1
    # nearest resize by 1/2 of the 4x-tiled pattern keeps the pattern, tiled 2x
    assert (item["label"].numpy() == tile(GTA5_TRAIN, 2)).all()


@pytest.mark.parametrize("size", [None, (4, 6)])
def test_images_only_never_reads_the_labels(tmp_path, size):
    """load_image / ImagesOnly give load()'s and __getitem__'s image bit for bit (resized to the base size
    or not), and still work when every label file is gone: the target-side stages never decode them."""
    import torch
    manifest = build_manifest("gta5", write_gta5(tmp_path / "GTA5"))
    data = datasets.SegmentationDataset(manifest, size=size)
    expected = [data.load(i)[0] for i in range(len(data))]
    items = [data[i]["image"] for i in range(len(data))]
    for label in manifest.label:
        os.remove(label)
    images = datasets.ImagesOnly(data)
    assert len(images) == len(data)
    for i in range(len(data)):
        assert np.array_equal(data.load_image(i), expected[i])
        item = images[i]
        assert item["index"] == i and item["image"].dtype == torch.uint8
        assert torch.equal(item["image"], items[i].as_subclass(torch.Tensor))
    with pytest.raises(imageio.ImageReadError):   # the labels are really gone
        data.load(0)


def test_cli_manifest(tmp_path, capsys):
    from hiast.cli import main
    root = write_gta5(tmp_path / "GTA5")
    out = tmp_path / "gta5.csv"
    assert main(["manifest", "gta5", str(root), str(out)]) == 0
    assert len(datasets.read_manifest(out)) == 2
    assert main(["manifest", "gta5", str(tmp_path / "missing"), str(tmp_path / "x.csv")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "x.csv").exists()
