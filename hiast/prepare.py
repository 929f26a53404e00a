"""Scenario-level data: manifests of the source and target roots, splits and datasets built from them."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from hiast import datasets
from hiast.scenario import DataConfig, Scenario

log = logging.getLogger(__name__)


def scan(data: DataConfig, workers: int = 2) -> pd.DataFrame:
    """The manifest of one side's root, restricted to its train and val splits."""
    splits = [data.train_split] + ([data.val_split] if data.val_split else [])
    return datasets.build_manifest(data.dataset, data.root, splits=splits, workers=workers, progress=True)


def split_rows(manifest: pd.DataFrame, data: DataConfig, part: str, seed: int) -> pd.DataFrame:
    """Rows of one part: "train" (train split minus the held-out share, capped at max_images),
    "holdout" (the held-out share of the train split) or "val" (the val split)."""
    if part == "val":
        rows = manifest[manifest.split == data.val_split]
    elif part in ("train", "holdout"):
        rows = manifest[manifest.split == data.train_split]
        order = np.random.default_rng(seed).permutation(len(rows))
        n_holdout = int(round(len(rows) * data.holdout))
        keep = np.sort(order[n_holdout:]) if part == "train" else np.sort(order[:n_holdout])
        rows = rows.iloc[keep]
        if part == "train" and data.max_images:
            rows = rows.iloc[: data.max_images]
    else:
        raise ValueError(f"part must be 'train', 'holdout' or 'val', got {part!r}")
    if rows.empty:
        raise datasets.DatasetError(f"{data.root}: no images in the {part!r} part "
                                    f"(split {data.train_split if part != 'val' else data.val_split!r})")
    return rows.reset_index(drop=True)


def dataset(scenario: Scenario, manifest: pd.DataFrame, transform=None) -> datasets.SegmentationDataset:
    return datasets.SegmentationDataset(manifest, scenario.label_space, transform, size=scenario.base_size)


def with_hidden_labels(manifest: pd.DataFrame, folder: Path) -> pd.DataFrame:
    """Attach labels kept outside the official layout (the synthetic Oxford train split's `anno_train/`,
    used only to measure oracles and pseudo-label precision) to an unlabelled manifest."""
    out = manifest.copy()
    paths = [folder / f"{image_id}.png" for image_id in out.image_id]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise datasets.DatasetError(f"{folder}: {len(missing)} hidden label(s) missing, e.g. {missing[0]}")
    out["label"] = [str(p) for p in paths]
    return out
