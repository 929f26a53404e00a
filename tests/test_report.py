"""Report figures: coverage / precision counted by hand, figures written from tiny files, missing files named."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hiast import imageio, report
from hiast.classes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, colorize
from hiast.h5io import H5FormatError, PseudoLabelWriter, write_instance_bank

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# One 2x3 image: pseudo-labels (255 = none) against the target labels (255 = ignore), 4 classes.
PSEUDO = np.array([[0, 0, 1], [255, 1, 2]], dtype=np.uint8)
TARGET = np.array([[0, 1, 1], [0, 255, 2]], dtype=np.uint8)


def assert_png(path):
    assert path.is_file() and path.read_bytes()[:8] == PNG_MAGIC
    assert not list(path.parent.glob(".*.tmp"))


def test_coverage_and_precision_by_hand():
    counts = report.pseudo_label_counts(PSEUDO, TARGET, 4)
    # labelled: class 0 at (0,0) (0,1); class 1 at (0,2) (1,1); class 2 at (1,2); class 3 nowhere
    np.testing.assert_array_equal(counts.labelled, [2, 2, 1, 0])
    # with a known target label: (1,1) has target 255, so class 1 keeps only (0,2)
    np.testing.assert_array_equal(counts.checked, [2, 1, 1, 0])
    # confirmed: (0,0) 0=0, (0,1) 0!=1, (0,2) 1=1, (1,2) 2=2
    np.testing.assert_array_equal(counts.correct, [1, 1, 1, 0])
    assert counts.pixels == 6
    table = report.coverage_precision(counts, ["a", "b", "c", "d"], hard=[1])
    np.testing.assert_allclose(table.coverage, [2 / 6, 2 / 6, 1 / 6, 0])
    np.testing.assert_allclose(table.precision, [0.5, 1.0, 1.0, np.nan])
    assert table.hard.tolist() == [False, True, False, False]
    assert table["class"].tolist() == ["a", "b", "c", "d"]


def test_counts_add_up_over_images_and_without_target():
    other = np.full((2, 3), 3, dtype=np.uint8)
    total = report.pseudo_label_counts(PSEUDO, TARGET, 4) + report.pseudo_label_counts(other, TARGET, 4)
    stacked = report.pseudo_label_counts(np.stack([PSEUDO, other]), np.stack([TARGET, TARGET]), 4)
    for field in ("labelled", "checked", "correct"):
        np.testing.assert_array_equal(getattr(total, field), getattr(stacked, field))
    assert total.pixels == stacked.pixels == 12
    # class 3 everywhere in the second image: 5 known target pixels, none of them class 3
    assert stacked.checked[3] == 5 and stacked.correct[3] == 0
    unlabelled = report.coverage_precision(report.pseudo_label_counts(PSEUDO, None, 4), "abcd")
    np.testing.assert_allclose(unlabelled.coverage, [2 / 6, 2 / 6, 1 / 6, 0])
    assert unlabelled.precision.isna().all()
    with pytest.raises(ValueError, match="shape"):
        report.pseudo_label_counts(PSEUDO, TARGET[:, :2], 4)


def test_threshold_table_and_constant_classes():
    trajectories = [np.array([[0.9, 0.9], [0.8, 0.9]]), np.array([[0.7, 0.9]])]
    table = report.threshold_table(trajectories, ["a", "b"])
    assert len(table) == 6
    assert table[(table["round"] == 1) & (table["class"] == "a")].threshold.tolist() == [0.9, 0.8]
    assert table[table["round"] == 2].instance.tolist() == [1, 1]
    assert report.constant_classes(table) == {"b"}
    with pytest.raises(ValueError, match="round 1"):
        report.threshold_table([np.zeros((2, 3))], ["a", "b"])


def _summary(path, rounds=2):
    rows = [dict(scenario="tiny", stage="warmup", model="warmup", **{"mIoU-19": 10.0}, road=50.0, sky=np.nan)]
    for r in range(1, rounds + 1):
        for model, bonus in (("student", 2.0), ("teacher", 1.0)):
            rows.append(dict(scenario="tiny", stage=f"round_{r}", model=model, **{"mIoU-19": 10 + r * bonus},
                             road=50 + r * bonus, sky=20.0))
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_summary_tables_and_figures(tmp_path):
    path = _summary(tmp_path / "summary.csv", rounds=10)
    table = report.read_summary(path)
    assert report.metric_columns(table) == ["mIoU-19"] and report.class_columns(table) == ["road", "sky"]
    wide = report.miou_by_round(table)
    assert list(wide.index) == ["warmup"] + [f"round_{r}" for r in range(1, 11)]  # round_10 last
    assert wide.loc["round_2", ("student", "mIoU-19")] == 14.0
    compared, final = report.warmup_vs_final(table)
    assert final == "round_10"
    assert compared.loc["road"].tolist() == [50.0, 70.0, 20.0] and np.isnan(compared.loc["sky", "change"])
    assert report.warmup_vs_final(table, "teacher")[0].loc["road", "final"] == 60.0
    out = tmp_path / "report"
    assert_png(report.miou_figure(path, out / "miou_by_round.png"))
    assert_png(report.per_class_figure(path, out / "per_class_iou.png"))


def _pseudo_labels(path, ids, labels, trajectory):
    n, h, w = labels.shape
    attrs = dict(policy="IAS", alpha=0.5, beta=0.9, gamma=8.0, manifest_fingerprint="0123456789abcdef")
    with PseudoLabelWriter(path, ids, h, w, 19, attrs) as writer:
        for i in range(n):
            counts = np.bincount(labels[i][labels[i] != 255], minlength=19)
            writer.write(i, labels[i], trajectory[-1], pixel_counts=counts)
        writer.set_extra("threshold_trajectory", trajectory)
        writer.set_attrs(class_mean_conf=np.full(19, 0.5))
    return path


def _tiny_target(tmp_path):
    """Two train images with ground truth at twice the pseudo-label size (TARGET tiled), one val image."""
    root = tmp_path / "data"
    rows = []
    for split, image_id in (("train", "c_000000_000019"), ("train", "c_000001_000019"), ("val", "v_000000_000019")):
        image = root / f"{image_id}_leftImg8bit.png"
        label = root / f"{image_id}_gtFine_labelTrainIds.png"
        imageio.write_rgb(image, np.random.default_rng(len(rows)).integers(0, 256, (4, 6, 3), dtype=np.uint8))
        imageio.write_gray(label, np.kron(TARGET, np.ones((2, 2), np.uint8)))
        rows.append(dict(image_id=image_id, image=str(image), label=str(label), split=split, height=4, width=6,
                         label_height=4, label_width=6, dataset="cityscapes"))
    manifest = tmp_path / "target.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return manifest, [r["image_id"] for r in rows]


def test_pseudo_label_figures_from_tiny_files(tmp_path):
    manifest, ids = _tiny_target(tmp_path)
    labels = np.stack([PSEUDO, np.full((2, 3), 255, np.uint8)])  # the second image has no pseudo-label
    rounds = []
    for r in (1, 2):
        trajectory = np.linspace(0.9, 0.9 - 0.1 * r, 3)[:, None].repeat(19, 1).astype(np.float32)
        trajectory[:, 5] = 0.9  # one class constant
        rounds.append(_pseudo_labels(tmp_path / f"round_{r}" / "pseudo_labels.h5", ids[:2], labels, trajectory))
    banks = []
    for r, hard in ((1, [1]), (2, [])):
        bank = tmp_path / f"round_{r}" / "instance_bank.h5"
        attrs = dict(paste="all_hard", max_donors=50, drop_smallest=0.0, manifest_fingerprint="0123456789abcdef",
                     pseudo_label_fingerprint="0123456789abcdef", height=4, width=6)
        prob = np.zeros(19)
        prob[hard] = 1.0
        write_instance_bank(bank, hard, np.full(19, 0.5), prob, {c: ([], []) for c in hard}, {}, attrs)
        banks.append(bank)

    table = report.pseudo_label_table(rounds, banks, manifest)
    first = table[table["round"] == 1].set_index("class")
    # the same hand counts as above, over 2 images of 6 pixels (the ground truth resized to 2x3)
    np.testing.assert_allclose(first.coverage.iloc[:3], [2 / 12, 2 / 12, 1 / 12])
    np.testing.assert_allclose(first.precision.iloc[:3], [0.5, 1.0, 1.0])
    assert first.precision.iloc[3:].isna().all()
    assert first.hard.sum() == 1 and first.loc["sidewalk", "hard"]
    assert not table[table["round"] == 2].hard.any()

    out = tmp_path / "report"
    assert_png(report.pseudo_label_figure(rounds, banks, manifest, out / "pseudo_labels.png", out / "t.csv"))
    assert pd.read_csv(out / "t.csv").shape[0] == 2 * 19
    assert_png(report.thresholds_figure(rounds, out / "thresholds.png"))

    masks = tmp_path / "round_2" / "masks"
    imageio.write_rgb(masks / "student" / f"{ids[2]}.png", colorize(np.kron(TARGET, np.ones((2, 2), np.uint8))))
    assert_png(report.examples_figure(2, rounds[1], manifest, masks, out / "examples_round_2.png"))
    assert_png(report.examples_figure(2, rounds[1], manifest, None, out / "no_masks.png", count=1))

    # a warm-up too weak to label any pixel (the smoke preset): the figure is still drawn
    empty = _pseudo_labels(tmp_path / "empty" / "pseudo_labels.h5", ids[:2], np.full((2, 2, 3), 255, np.uint8),
                           np.full((3, 19), 0.9, np.float32))
    assert_png(report.pseudo_label_figure([empty], banks[1:], manifest, out / "empty.png", out / "empty.csv"))


def test_missing_files_are_named(tmp_path, capsys):
    missing = tmp_path / "results" / "summary.csv"
    with pytest.raises(report.ReportError, match=str(missing)):
        report.miou_figure(missing, tmp_path / "out.png")
    h5 = tmp_path / "round_1" / "pseudo_labels.h5"
    with pytest.raises(H5FormatError, match=str(h5)):
        report.thresholds_figure([h5], tmp_path / "out.png")
    manifest = tmp_path / "target.csv"
    assert report.main(["examples", "--round", "1", "--pseudo-labels", str(h5), "--manifest", str(manifest),
                        "--output", str(tmp_path / "out.png")]) == 2
    assert str(manifest) in capsys.readouterr().err
    assert report.main(["per-class", "--summary", str(missing), "--output", str(tmp_path / "out.png")]) == 2
    assert str(missing) in capsys.readouterr().err
    assert not (tmp_path / "out.png").exists()


def test_label_space_and_palette():
    names, palette = report.label_space_of(19)
    assert names == list(CITYSCAPES_CLASSES) and (palette == CITYSCAPES_PALETTE).all()
    assert report.label_space_of(9)[0][0] == "sky"
    with pytest.raises(report.ReportError, match="7 classes"):
        report.label_space_of(7)
    assert report.example_indices(10, 3) == [0, 4, 9] and report.example_indices(2, 5) == [0, 1]
