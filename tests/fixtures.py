"""Tiny dataset roots written in the real on-disk formats, with hand-chosen label values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from hiast import imageio
from hiast.config import build
from hiast.scenario import Scenario

# 2x3 label patterns in each raw format and the train ids they must decode to.
GTA5_RAW = np.array([[7, 8, 26], [0, 33, 11]], dtype=np.uint8)
GTA5_TRAIN = np.array([[0, 1, 13], [255, 18, 2]], dtype=np.uint8)
SYNTHIA_RAW = np.array([[3, 4, 21], [0, 12, 1]], dtype=np.uint16)
SYNTHIA_TRAIN = np.array([[0, 1, 3], [255, 17, 10]], dtype=np.uint8)
OXFORD_RAW = np.array([[1, 11, 17], [8, 10, 4]], dtype=np.uint8)
OXFORD_TRAIN = np.array([[0, 8, 8], [255, 7, 3]], dtype=np.uint8)


def tile(pattern: np.ndarray, reps: int = 4) -> np.ndarray:
    return np.kron(pattern, np.ones((reps, reps), dtype=pattern.dtype))


def rgb(seed: int, shape=(8, 12)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)


def write_gta5(root: Path, n: int = 2) -> Path:
    for i in range(1, n + 1):
        imageio.write_rgb(root / "images" / f"{i:05d}.png", rgb(i))
        imageio.write_palettised(root / "labels" / f"{i:05d}.png", tile(GTA5_RAW))
    return root


def write_synthia(root: Path, n: int = 2) -> Path:
    base = root / "RAND_CITYSCAPES"
    for i in range(n):
        imageio.write_rgb(base / "RGB" / f"{i:07d}.png", rgb(i))
        label = np.zeros((8, 12, 3), dtype=np.uint16)
        label[..., 0] = tile(SYNTHIA_RAW)
        label[..., 1] = 1000 + i  # instance ids: must be ignored
        imageio.write_png16(base / "GT" / "LABELS" / f"{i:07d}.png", label)
    return root


def cityscapes_names(split: str, n: int) -> list[tuple[str, str]]:
    city = {"train": "aachen", "val": "lindau"}[split]
    return [(city, f"{city}_{i:06d}_000019") for i in range(n)]


def write_cityscapes(root: Path, n: int = 2, train_ids: bool = False) -> Path:
    for split in ("train", "val"):
        for k, (city, stem) in enumerate(cityscapes_names(split, n)):
            imageio.write_rgb(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", rgb(k))
            imageio.write_gray(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", tile(GTA5_RAW))
            if train_ids:
                imageio.write_gray(root / "gtFine" / split / city / f"{stem}_gtFine_labelTrainIds.png",
                                   tile(GTA5_TRAIN))
    return root


def write_oxford(root: Path, n: int = 2) -> Path:
    for i in range(n):
        imageio.write_rgb(root / "train" / f"1418132504537582_{i:05d}.png", rgb(i))
        imageio.write_rgb(root / "val" / f"1418132700000000_{i:05d}.png", rgb(100 + i))
        anno = np.zeros((8, 12, 4), dtype=np.uint8)
        anno[..., 0] = tile(OXFORD_RAW)
        anno[..., 1] = 77  # other channels carry no class id
        anno[..., 3] = 255
        imageio.write_rgba(root / "anno" / f"1418132700000000_{i:05d}.png", anno)
    return root


DEVICE = torch.device("cpu")


def tiny_scenario(root, **overrides) -> Scenario:
    return build(Scenario, tiny_scenario_data(root, **overrides))


def tiny_scenario_data(root, **overrides) -> dict:
    """The tiny scenario as the mapping a scenario YAML file holds."""
    data = {
        "name": "tiny", "seed": 0, "synthetic": True, "label_space": "cityscapes19", "metrics": ["mIoU-19"],
        "base_size": [64, 128],
        "source": {"dataset": "gta5", "root": str(root / "GTA5"), "val_split": None},
        "target": {"dataset": "cityscapes", "root": str(root / "cityscapes")},
        "model": {"backbone": "resnet18", "pretrained": False},
        "warmup": {"source_only": {"iterations": 4, "batch_size": 2, "lr": 1e-3, "head_lr_mult": 1.0},
                   "adversarial": {"iterations": 2, "batch_size": 2}},
        "rounds": [{"pseudo": {"alpha": 0.5}, "bank": {"num_hard": 5},
                    "train": {"iterations": 4, "batch_size": 2, "lr": 1e-4, "checkpoint_every": 2}}],
    }
    data.update(overrides)
    return data
