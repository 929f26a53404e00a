"""Evaluation stage: confusion matrix over the whole target val split -> eval.csv (+ colour masks).

`eval.csv` has one row per evaluated model (e.g. student, teacher), a column `model`, one column per metric
defined for the scenario (`mIoU-19`, `mIoU-16`, `mIoU-13`, `mIoU-9`, in percent) and one per class name
(IoU in percent; empty where the class has no pixel in labels or predictions). The reported model is the
last one of the round: no checkpoint is ever selected with target labels.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from hiast import engine, metrics, prepare
from hiast.classes import LABEL_SPACES, METRIC_CLASSES, colorize
from hiast.imageio import atomic_path, write_rgb
from hiast.scenario import Scenario

log = logging.getLogger(__name__)


def metric_row(confusion, scenario_metrics, class_names) -> dict:
    """Percent values: one entry per metric, one per class."""
    per_class = 100 * metrics.iou(confusion)
    row = {name: 100 * metrics.miou(confusion, METRIC_CLASSES[name]) for name in scenario_metrics}
    row.update({name: value for name, value in zip(class_names, per_class)})
    return row


def write_table(table: pd.DataFrame, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.4f")


def evaluate_models(scenario: Scenario, models: dict[str, torch.nn.Module], val_rows: pd.DataFrame,
                    device: torch.device, mask_dir: Path | None = None) -> pd.DataFrame:
    """Evaluate each named model on `val_rows`; returns the eval table (also saves colour masks)."""
    class_names, palette = LABEL_SPACES[scenario.label_space]
    data = prepare.dataset(scenario, val_rows)
    cfg = scenario.evaluation
    rows = []
    for name, model in models.items():
        model.to(device)
        saved = [0]

        def save_masks(batch, predictions, name=name, saved=saved):
            if mask_dir is None or saved[0] >= cfg.save_masks:
                return
            for image_id, prediction in zip(batch["image_id"], predictions):
                if saved[0] >= cfg.save_masks:
                    break
                write_rgb(Path(mask_dir) / name / f"{image_id}.png",
                          colorize(prediction.numpy().astype(np.uint8), palette))
                saved[0] += 1

        confusion = engine.evaluate(model, data, scenario.num_classes, device, batch_size=cfg.batch_size,
                                    input_size=scenario.sized(cfg.input_scale), flip=cfg.flip,
                                    scales=cfg.scales, on_batch=save_masks)
        row = {"model": name, **metric_row(confusion.numpy(), scenario.metrics, class_names)}
        log.info("%s: %s", name, ", ".join(f"{m} {row[m]:.2f}" for m in scenario.metrics))
        rows.append(row)
    return pd.DataFrame(rows, columns=["model", *scenario.metrics, *class_names])
