"""pseudo_labels.h5 and instance_bank.h5: round trips, atomic writes and validation on read."""

from __future__ import annotations

import pickle
import zlib

import h5py
import numpy as np
import pytest

from hiast.h5io import (H5FormatError, PseudoLabelWriter, file_fingerprint, read_instance_bank,
                        read_pseudo_labels, write_instance_bank)

N, H, W, C = 6, 8, 12, 5
FP = "abcdef0123456789"


def _pl_attrs(**extra):
    return dict(policy="ias", alpha=0.2, beta=0.9, gamma=8.0, manifest_fingerprint=FP, **extra)


def _pl_data(seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, C, (N, H, W)).astype(np.uint8)
    labels[rng.random((N, H, W)) < 0.3] = 255
    thresholds = rng.random((N, C)).astype(np.float32)
    counts = np.stack([np.bincount(lab[lab != 255], minlength=C) for lab in labels]).astype(np.int64)
    return [f"img_{i:03d}" for i in range(N)], labels, thresholds, counts


def _write_pl(path, skip=(), raise_inside=False, seed=0):
    ids, labels, thresholds, counts = _pl_data(seed)
    order = np.random.default_rng(1).permutation(N)
    with PseudoLabelWriter(path, ids, H, W, C, _pl_attrs(note="extra")) as writer:
        for i in order:
            if i not in skip:
                writer.write(int(i), labels[i], thresholds[i], pixel_counts=counts[i])
        writer.set_extra("threshold_trajectory", thresholds[order[:3]])
        writer.set_extra("instance_order", np.array([[order[0], order[1]], [order[2], -1],
                                                     [order[3], order[4]]]))
        writer.set_attrs(class_mean_conf=np.linspace(0.5, 0.9, C))
        if raise_inside:
            raise RuntimeError("boom")
    return ids, labels, thresholds, counts, order


def test_pseudo_labels_round_trip(tmp_path):
    path = tmp_path / "pseudo_labels.h5"
    ids, labels, thresholds, counts, order = _write_pl(path)
    assert not list(tmp_path.glob(".*.tmp"))
    pl = read_pseudo_labels(path, expected_fingerprint=FP, expected_count=N)
    assert pl.image_ids == ids and len(pl) == N
    assert (pl.height, pl.width, pl.num_classes) == (H, W, C)
    np.testing.assert_array_equal(pl.thresholds, thresholds)
    np.testing.assert_array_equal(pl.all_labels(), labels)
    for i in range(N):
        np.testing.assert_array_equal(pl.labels(i), labels[i])
    np.testing.assert_array_equal(pl.pixel_counts, counts)
    np.testing.assert_array_equal(pl.threshold_trajectory, thresholds[order[:3]])
    assert pl.instance_order.shape == (3, 2) and pl.instance_order[1, 1] == -1
    np.testing.assert_allclose(pl.class_mean_conf, np.linspace(0.5, 0.9, C))
    assert pl.attrs["policy"] == "ias" and pl.attrs["gamma"] == 8.0 and pl.attrs["note"] == "extra"
    assert pl.attrs["complete"] is True and pl.attrs["format_version"] == 1 and pl.attrs["num_classes"] == C
    assert pl.index_of("img_004") == 4
    pl.close()
    with h5py.File(path, "r") as f:
        assert f["labels"].chunks == (1, H, W)
        assert f["labels"].compression is not None and f["labels"].shuffle
        assert f["labels"].dtype == np.uint8 and f["thresholds"].dtype == np.float32
        assert f["pixel_counts"].fillvalue == -1 and np.isnan(f["thresholds"].fillvalue)
        assert f["labels"].fillvalue == 255 and f["labels"].compression == "gzip"
        assert f["labels"].compression_opts == 1
        assert h5py.check_string_dtype(f["image_ids"].dtype).encoding == "utf-8"


def test_pseudo_labels_pickled_reader_reopens(tmp_path):
    path = tmp_path / "pseudo_labels.h5"
    _, labels, *_ = _write_pl(path)
    pl = read_pseudo_labels(path)
    np.testing.assert_array_equal(pl.labels(2), labels[2])  # parent handle open
    clone = pickle.loads(pickle.dumps(pl))
    assert clone._file is None
    np.testing.assert_array_equal(clone.labels(3), labels[3])
    clone.close()
    pl.close()


def test_missing_index_fails_and_keeps_old_file(tmp_path):
    path = tmp_path / "pseudo_labels.h5"
    path.write_bytes(b"previous contents")
    with pytest.raises(ValueError, match=r"never written.*\b(2|4)\b"):
        _write_pl(path, skip=(2, 4))
    assert path.read_bytes() == b"previous contents"
    assert not list(tmp_path.glob(".*.tmp"))
    fresh = tmp_path / "fresh.h5"
    with pytest.raises(ValueError, match="2 of 6 images never written"):
        _write_pl(fresh, skip=(2, 4))
    assert not fresh.exists() and not list(tmp_path.glob(".*.tmp"))


def test_exception_inside_writer_removes_temp(tmp_path):
    path = tmp_path / "pseudo_labels.h5"
    _write_pl(path, seed=0)
    before = path.read_bytes()
    with pytest.raises(RuntimeError, match="boom"):
        _write_pl(path, raise_inside=True, seed=5)
    assert path.read_bytes() == before and not list(tmp_path.glob(".*.tmp"))


def test_writer_rejects_bad_rows(tmp_path):
    ids, labels, thresholds, _ = _pl_data()
    with pytest.raises(ValueError):
        with PseudoLabelWriter(tmp_path / "p.h5", ids, H, W, C, _pl_attrs()) as writer:
            writer.write(0, labels[0], thresholds[0])
            writer.write(0, labels[0], thresholds[0])  # twice
    bad = labels[1].copy()
    bad[0, 0] = C
    with pytest.raises(ValueError, match="labels of image 1"):
        with PseudoLabelWriter(tmp_path / "p.h5", ids, H, W, C, _pl_attrs()) as writer:
            writer.write(1, bad, thresholds[1])
    with pytest.raises(ValueError, match="class_mean_conf"):  # required attr never set
        with PseudoLabelWriter(tmp_path / "p.h5", ids, H, W, C, _pl_attrs()) as writer:
            for i in range(N):
                writer.write(i, labels[i], thresholds[i])
    assert not (tmp_path / "p.h5").exists() and not list(tmp_path.glob(".*.tmp"))


def test_truncated_file(tmp_path):
    path = tmp_path / "pseudo_labels.h5"
    _write_pl(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(H5FormatError, match="pseudo_labels.h5"):
        read_pseudo_labels(path)
    with pytest.raises(H5FormatError, match="does not exist"):
        read_pseudo_labels(tmp_path / "nope.h5")
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(H5FormatError, match="text.h5"):
        read_pseudo_labels(tmp_path / "text.h5")


def test_incomplete_file(tmp_path):
    path = tmp_path / "pseudo_labels.h5"
    _write_pl(path)
    with h5py.File(path, "a") as f:
        f.attrs["complete"] = False
    with pytest.raises(H5FormatError, match="complete"):
        read_pseudo_labels(path)


def test_count_and_fingerprint_mismatch(tmp_path):
    path = tmp_path / "pseudo_labels.h5"
    _write_pl(path)
    with pytest.raises(H5FormatError, match=r"has 6 images, the manifest has 12"):
        read_pseudo_labels(path, expected_count=12)
    with pytest.raises(H5FormatError, match=rf"{FP}.*0000000000000000.*regenerate"):
        read_pseudo_labels(path, expected_fingerprint="0000000000000000")


@pytest.mark.parametrize("name", ["thresholds", "labels", "image_ids"])
def test_missing_dataset(tmp_path, name):
    path = tmp_path / "pseudo_labels.h5"
    _write_pl(path)
    with h5py.File(path, "a") as f:
        del f[name]
    with pytest.raises(H5FormatError, match=rf"pseudo_labels.h5.*missing dataset '{name}'"):
        read_pseudo_labels(path)


def test_missing_attribute_shape_and_dtype(tmp_path):
    path = tmp_path / "pseudo_labels.h5"
    _write_pl(path)
    with h5py.File(path, "a") as f:
        del f.attrs["policy"]
    with pytest.raises(H5FormatError, match="policy"):
        read_pseudo_labels(path)
    _write_pl(path)
    with h5py.File(path, "a") as f:
        f.attrs["num_classes"] = C + 1
        f.attrs["class_mean_conf"] = np.zeros(C + 1)
    with pytest.raises(H5FormatError, match=r"thresholds has shape \(6, 5\), expected \(6, 6\)"):
        read_pseudo_labels(path)
    _write_pl(path)
    with h5py.File(path, "a") as f:
        data = f["thresholds"][()]
        del f["thresholds"]
        f["thresholds"] = data.astype(np.float64)
    with pytest.raises(H5FormatError, match="dtype float64, expected float32"):
        read_pseudo_labels(path)


# --- instance bank ---------------------------------------------------------------------------------------

BH, BW, BC = 16, 20, 6


def _bank_inputs():
    """Hard classes 4 and 1; donor images 3, 7, 9 with a region each."""
    rng = np.random.default_rng(3)
    regions = {}
    for image, (top, left, bottom, right) in {3: (2, 3, 7, 10), 7: (0, 0, 16, 5), 9: (10, 12, 14, 20)}.items():
        h, w = bottom - top, right - left
        lab = np.full((h, w), 255, np.uint8)
        regions[image] = [np.array([top, left, bottom, right]),
                          rng.integers(0, 256, (h, w, 3), dtype=np.uint8), lab]
    regions[3][2][1:3, 2:5] = 4          # 6 px of class 4
    regions[3][2][4, 6] = 1              # 1 px of class 1
    regions[7][2][5:15, 1:3] = 4         # 20 px of class 4
    regions[9][2][0:4, 0:8] = 1          # 32 px of class 1
    donors = {4: ([7, 3], [20, 6]), 1: ([3, 9], [1, 32])}
    prob = np.zeros(BC)
    prob[4], prob[1] = 0.75, 0.25
    conf = np.linspace(0.3, 0.9, BC)
    attrs = dict(paste="rare_bbox", max_donors=50, drop_smallest=0.1, manifest_fingerprint=FP,
                 pseudo_label_fingerprint="1111222233334444", height=BH, width=BW)
    return [4, 1], conf, prob, donors, {k: tuple(v) for k, v in regions.items()}, attrs


def test_instance_bank_round_trip(tmp_path):
    path = tmp_path / "instance_bank.h5"
    hard, conf, prob, donors, regions, attrs = _bank_inputs()
    write_instance_bank(path, hard, conf, prob, donors, regions, attrs)
    assert not list(tmp_path.glob(".*.tmp"))
    bank = read_instance_bank(path, expected_fingerprint=FP,
                              expected_pseudo_label_fingerprint="1111222233334444")
    np.testing.assert_array_equal(bank.hard_classes, [4, 1])
    np.testing.assert_array_equal(bank.class_mean_conf, conf)
    np.testing.assert_array_equal(bank.sampling_prob, prob)
    np.testing.assert_array_equal(bank.donors[4][0], [3, 7])   # sorted by ascending pixels
    np.testing.assert_array_equal(bank.donors[4][1], [6, 20])
    np.testing.assert_array_equal(bank.donors[1][0], [3, 9])
    np.testing.assert_array_equal(bank.donor_bboxes[4], [[3, 5, 5, 8], [5, 1, 15, 3]])
    np.testing.assert_array_equal(bank.donor_bboxes[1], [[6, 9, 7, 10], [10, 12, 14, 20]])
    assert bank.attrs["num_hard"] == 2 and bank.attrs["complete"] is True and bank.attrs["paste"] == "rare_bbox"
    assert (bank.height, bank.width) == (BH, BW)
    for image, (bbox, rgb, lab) in regions.items():
        got_bbox, got_rgb, got_lab = bank.region(image)
        np.testing.assert_array_equal(got_bbox, bbox)
        np.testing.assert_array_equal(got_rgb, rgb)
        np.testing.assert_array_equal(got_lab, lab)
    with pytest.raises(KeyError):
        bank.region(5)
    clone = pickle.loads(pickle.dumps(bank))
    assert clone._file is None
    np.testing.assert_array_equal(clone.region(9)[1], regions[9][1])
    clone.close()
    bank.close()
    with h5py.File(path, "r") as f:
        assert f["donor_images/rgb"].shape == (5 * 7 + 16 * 5 + 4 * 8, 3)
        np.testing.assert_array_equal(f["donor_images/offset"][()], [0, 35, 115])
        assert f["donors/4/bbox"].dtype == np.int32


def test_instance_bank_region_cache_is_bounded_read_only_and_not_pickled(tmp_path, monkeypatch):
    """A second read of a donor comes from memory (the file closed and deleted, it still answers), equal to
    the stored region and read-only; the cache keeps to REGION_CACHE_BYTES, dropping the least recently used
    region first; a pickled copy (a loader worker) starts empty and reads the file."""
    from hiast import h5io
    path = tmp_path / "instance_bank.h5"
    hard, conf, prob, donors, regions, attrs = _bank_inputs()
    write_instance_bank(path, hard, conf, prob, donors, regions, attrs)
    # region bytes (rgb + labels = 4 per pixel): image 3 is 5x7 (140), 7 is 16x5 (320), 9 is 4x8 (128)
    monkeypatch.setattr(h5io, "REGION_CACHE_BYTES", 140 + 128)
    bank = read_instance_bank(path)
    first = bank.region(3)
    with pytest.raises(ValueError):
        first[1][0, 0, 0] = 1                      # shared with later reads: not writable
    first[0][0] = -1                               # the bbox is the caller's own copy
    bank.region(7)                                 # 320 bytes: larger than the cache, not kept
    bank.region(9)
    assert list(bank._cache) == [0, 2] and bank._cache_bytes == 140 + 128
    clone = pickle.loads(pickle.dumps(bank))
    assert not clone._cache and clone._cache_bytes == 0
    bank.region(3)                                 # 3 becomes the most recent
    assert list(bank._cache) == [2, 0]
    bank.close()
    path.unlink()
    for image in (3, 9):
        bbox, rgb, lab = bank.region(image)
        np.testing.assert_array_equal(bbox, regions[image][0])
        np.testing.assert_array_equal(rgb, regions[image][1])
        np.testing.assert_array_equal(lab, regions[image][2])
    with pytest.raises(H5FormatError):
        bank.region(7)                             # not cached: needs the (deleted) file
    with pytest.raises(H5FormatError):
        clone.region(9)


def test_instance_bank_no_hard_classes(tmp_path):
    path = tmp_path / "instance_bank.h5"
    *_, attrs = _bank_inputs()
    write_instance_bank(path, [], np.full(BC, 0.9), np.zeros(BC), {}, {}, attrs)
    bank = read_instance_bank(path)
    assert bank.num_hard == 0 and bank.donors == {} and bank.hard_classes.dtype == np.int64
    assert not bank.sampling_prob.any()
    with pytest.raises(KeyError):
        bank.region(0)


def test_instance_bank_validation(tmp_path):
    path = tmp_path / "instance_bank.h5"
    hard, conf, prob, donors, regions, attrs = _bank_inputs()
    bad = prob.copy()
    bad[0] = 0.1
    with pytest.raises(ValueError, match="outside the hard classes"):
        write_instance_bank(path, hard, conf, bad, donors, regions, attrs)
    with pytest.raises(ValueError, match="sums to"):
        write_instance_bank(path, hard, conf, prob / 2, donors, regions, attrs)
    with pytest.raises(ValueError, match=r"no region given for donor image\(s\) \[9\]"):
        write_instance_bank(path, hard, conf, prob, donors, {k: v for k, v in regions.items() if k != 9},
                            attrs)
    assert not path.exists() and not list(tmp_path.glob(".*.tmp"))

    write_instance_bank(path, hard, conf, prob, donors, regions, attrs)
    with pytest.raises(H5FormatError, match=rf"{FP}.*ffff.*regenerate"):
        read_instance_bank(path, expected_fingerprint="ffff")
    with pytest.raises(H5FormatError, match=r"made for pseudo-label file .*eeee: regenerate"):
        read_instance_bank(path, expected_pseudo_label_fingerprint="eeee")
    with h5py.File(path, "a") as f:
        f["sampling_prob"][0] = 0.5
    with pytest.raises(H5FormatError, match="instance_bank.h5.*sampling_prob"):
        read_instance_bank(path)
    write_instance_bank(path, hard, conf, prob, donors, regions, attrs)
    with h5py.File(path, "a") as f:
        del f["donor_images/offset"]
    with pytest.raises(H5FormatError, match="missing dataset 'donor_images/offset'"):
        read_instance_bank(path)
    write_instance_bank(path, hard, conf, prob, donors, regions, attrs)
    with h5py.File(path, "a") as f:
        f.attrs["complete"] = False
    with pytest.raises(H5FormatError, match="complete"):
        read_instance_bank(path)
    write_instance_bank(path, hard, conf, prob, donors, regions, attrs)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(H5FormatError, match="instance_bank.h5"):
        read_instance_bank(path)


def test_file_fingerprint(tmp_path):
    (tmp_path / "a").write_bytes(b"abc")
    assert file_fingerprint(tmp_path / "a") == "ba7816bf8f01cfea"



def _sum_labels_into(pl, queue):
    queue.put([int(pl.labels(i).astype(np.int64).sum()) for i in range(len(pl))])


def test_forked_worker_opens_its_own_handle(tmp_path):
    import multiprocessing as mp
    path = tmp_path / "pseudo_labels.h5"
    _, labels, *_ = _write_pl(path)
    pl = read_pseudo_labels(path)
    pl.labels(0)  # the parent holds an open handle, inherited (not pickled) by the forked child
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_sum_labels_into, args=(pl, queue))
    child.start()
    got = queue.get(timeout=30)
    child.join(timeout=30)
    assert child.exitcode == 0
    assert got == [int(lab.astype(np.int64).sum()) for lab in labels]
    np.testing.assert_array_equal(pl.labels(5), labels[5])
    pl.close()


def test_label_chunks_written_directly_read_back_through_the_filters(tmp_path):
    """write_label_chunk compresses with zlib itself: h5py reads the chunk back through the dataset's own
    filters (shuffle + gzip) to the same map as h5py's own write, and a dataset without gzip is written
    the usual way."""
    from hiast.h5io import write_label_chunk
    _, labels, _, _ = _pl_data(seed=3)
    with h5py.File(tmp_path / "chunks.h5", "w") as f:
        direct = f.create_dataset("direct", (N, H, W), np.uint8, chunks=(1, H, W), compression="gzip",
                                  compression_opts=1, shuffle=True, fillvalue=255)
        usual = f.create_dataset("usual", (N, H, W), np.uint8, chunks=(1, H, W), compression="gzip",
                                 compression_opts=1, shuffle=True, fillvalue=255)
        plain = f.create_dataset("plain", (N, H, W), np.uint8, fillvalue=255)
        checked = f.create_dataset("checked", (N, H, W), np.uint8, chunks=(1, H, W), compression="gzip",
                                   fletcher32=True, fillvalue=255)          # a filter this path must not skip
        strong = f.create_dataset("strong", (N, H, W), np.uint8, chunks=(1, H, W), compression="gzip",
                                  compression_opts=9, fillvalue=255)
        for i in (4, 0, 2):
            write_label_chunk(direct, i, labels[i])
            usual[i] = labels[i]
            write_label_chunk(plain, i, labels[i].astype(np.int64))
            write_label_chunk(checked, i, labels[i])
            write_label_chunk(strong, i, labels[i])
        np.testing.assert_array_equal(checked[...], usual[...])
        assert strong.id.read_direct_chunk((4, 0, 0))[1] == zlib.compress(labels[4].tobytes(), 9)  # its own level
        mask, chunk = direct.id.read_direct_chunk((4, 0, 0))
        assert mask == 0 and len(chunk) < H * W          # every filter applied, compressed
        np.testing.assert_array_equal(direct[...], usual[...])
        np.testing.assert_array_equal(plain[...], usual[...])
        np.testing.assert_array_equal(direct[[0, 2, 4]], labels[[0, 2, 4]])
        assert (direct[1] == 255).all()                  # unwritten chunks keep the fill value


def test_per_image_counts_and_set_extra_counts_exclude_each_other(tmp_path):
    ids, labels, thresholds, counts = _pl_data()
    with pytest.raises(ValueError, match="already set with set_extra"):
        with PseudoLabelWriter(tmp_path / "p.h5", ids, H, W, C, _pl_attrs()) as writer:
            writer.set_extra("pixel_counts", counts)
            writer.write(0, labels[0], thresholds[0], pixel_counts=counts[0])
    with pytest.raises(ValueError, match="already given per image"):
        with PseudoLabelWriter(tmp_path / "p.h5", ids, H, W, C, _pl_attrs()) as writer:
            writer.write(0, labels[0], thresholds[0], pixel_counts=counts[0])
            writer.set_extra("pixel_counts", counts)
    with PseudoLabelWriter(tmp_path / "p.h5", ids, H, W, C, _pl_attrs(class_mean_conf=np.zeros(C))) as writer:
        for i in range(N):
            writer.write(i, labels[i], thresholds[i])
        writer.set_extra("pixel_counts", counts)
    pl = read_pseudo_labels(tmp_path / "p.h5")
    np.testing.assert_array_equal(pl.pixel_counts, counts)
    np.testing.assert_array_equal(pl.thresholds, thresholds)
    pl.close()
    assert not list(tmp_path.glob(".*.tmp"))
