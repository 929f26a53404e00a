"""Stages fail early, naming the numbers, when their outputs will not fit on the disk."""

from collections import namedtuple

import pytest
import torch

from hiast import diskspace, stages
from fixtures import DEVICE

Usage = namedtuple("Usage", "total used free")


def test_require_free_space_names_the_stage_folder_and_numbers(tmp_path, monkeypatch):
    monkeypatch.setattr(diskspace.shutil, "disk_usage", lambda path: Usage(10 << 30, 9 << 30, 1 << 30))
    diskspace.require_free_space(tmp_path / "a" / "b.h5", 1 << 29, "thing")          # fits: nothing happens
    with pytest.raises(diskspace.DiskSpaceError) as err:
        diskspace.require_free_space(tmp_path / "a" / "b.h5", 3 << 30, "pseudo-labels round 2")
    message = str(err.value)
    assert "pseudo-labels round 2" in message and str(tmp_path) in message
    assert "3.00 GiB" in message and "1.00 GiB" in message
    monkeypatch.setenv("HIAST_SKIP_DISK_CHECK", "1")
    diskspace.require_free_space(tmp_path / "b.h5", 3 << 30, "thing")


def test_estimates():
    # 2,975 Cityscapes images at 768x1536, 19 classes: about 3.3 GiB of uncompressed labels
    assert diskspace.pseudo_label_bytes(2975, 768, 1536, 19) == 2975 * (768 * 1536 + 19 * 12) + (1 << 20)
    model = torch.nn.Linear(10, 10)    # 110 float32 values
    assert diskspace.training_bytes(model, 3) == 3 * 440 + (1 << 20)
    assert diskspace.model_output_bytes(2, 4, 5) == 2 * 20 * 5 + (1 << 20)


def test_pseudo_label_stage_stops_before_any_work(tiny_run, monkeypatch):
    scenario, out, _ = tiny_run
    monkeypatch.setattr(diskspace.shutil, "disk_usage", lambda path: Usage(1 << 20, 1 << 20, 1000))
    with pytest.raises(diskspace.DiskSpaceError, match="pseudo-labels round 1: needs about"):
        stages.pseudo_labels(scenario, 1, out / "warmup.pt", out / "target.csv", out / "full.h5", DEVICE)
    with pytest.raises(diskspace.DiskSpaceError, match="self-training round 1"):
        stages.self_train(scenario, 1, out / "warmup.pt", out / "pl.h5", out / "bank.h5", out / "target.csv",
                          out / "s.pt", out / "t.pt", out / "st", DEVICE)
    assert not (out / "full.h5").exists() and not (out / "s.pt").exists()
