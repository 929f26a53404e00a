"""Segmentation metrics: confusion matrix, per-class IoU and mean IoU over a class subset.

mIoU-16 and mIoU-13 are the means over their 16 / 13 classes of a 19-class confusion matrix (target
pixels of the other classes are not ignored: a prediction on them counts as a false positive). The
official code's figures are mean(19 IoUs) x 19/16 and, with IoU[3:6] zeroed, x 19/13; the two agree
exactly when the IoUs of terrain, truck and train are 0 (see README, "Reading results/").
"""

from __future__ import annotations

import numpy as np
import torch

from hiast.classes import IGNORE


def confusion_matrix(labels: torch.Tensor, predictions: torch.Tensor, num_classes: int) -> torch.Tensor:
    """[C, C] int64 counts, rows = ground truth, columns = prediction; ignore-labelled pixels skipped."""
    labels = labels.reshape(-1).long()
    predictions = predictions.reshape(-1).long()
    keep = (labels != IGNORE) & (labels >= 0) & (labels < num_classes)
    index = labels[keep] * num_classes + predictions[keep]
    return torch.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def iou(confusion) -> np.ndarray:
    """Per-class IoU = TP / (TP + FP + FN); NaN for a class absent from both labels and predictions."""
    confusion = np.asarray(confusion, dtype=np.float64)
    true_positive = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - true_positive
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, true_positive / np.where(union > 0, union, 1), np.nan)


def miou(confusion, classes=None) -> float:
    """Mean IoU over `classes` (default: all), classes with no pixel at all (NaN IoU) left out of the mean."""
    values = iou(confusion)
    if classes is not None:
        values = values[list(classes)]
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float("nan")


def official_synthia_miou(confusion, num_kept: int = 16) -> float:
    """The official code's figure: mean of the 19 IoUs (absent = 0) times 19/16, or for 13 classes with
    wall/fence/pole zeroed, times 19/13. Reported beside ours for comparison only."""
    values = np.nan_to_num(iou(confusion), nan=0.0)
    if num_kept == 13:
        values[3:6] = 0.0
    elif num_kept != 16:
        raise ValueError(f"num_kept must be 16 or 13, got {num_kept}")
    return float(values.mean() * len(values) / num_kept)
