"""Speed benchmarks (`hiast bench ias`, `hiast bench shards`): figures and ratios measured in one run.

Each benchmark times the candidate and its reference on the same inputs in the same process, alternating
them, and reports medians and the ratio, so that the noise of a shared machine hits both alike.
"""

from __future__ import annotations

import json
import logging
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from hiast import pseudo
from hiast.imageio import atomic_path

log = logging.getLogger(__name__)

# Cityscapes train-id pixel shares (approximate), so that the per-class sizes look like a real instance.
CITYSCAPES_SHARES = np.array([32.6, 5.4, 20.2, 0.6, 0.8, 1.1, 0.2, 0.5, 14.1, 1.0, 3.6, 1.1, 0.1, 6.2, 0.2,
                              0.2, 0.2, 0.1, 0.4])


def instance_arrays(height: int = 768, width: int = 1536, images: int = 2, seed: int = 0,
                    num_classes: int = 19) -> tuple[np.ndarray, np.ndarray]:
    """(conf float32, pred uint8) [images, height, width] shaped like a segmentation model's output on
    street scenes: Cityscapes class shares, confidences crowding below 1 (a beta tail) and 15% exactly 1."""
    if not 1 <= num_classes <= len(CITYSCAPES_SHARES):
        raise ValueError(f"num_classes: expected 1..{len(CITYSCAPES_SHARES)}, got {num_classes}")
    rng = np.random.default_rng(seed)
    shares = CITYSCAPES_SHARES[:num_classes] / CITYSCAPES_SHARES[:num_classes].sum()
    pred = rng.choice(num_classes, size=(images, height, width), p=shares).astype(np.uint8)
    conf = 1 - rng.beta(0.35, 3.0, size=pred.shape) * (1 - 1 / num_classes)
    conf[rng.random(pred.shape) < 0.15] = 1.0
    return conf.astype(np.float32), pred


def official_ias_step(thresholds: np.ndarray, conf: np.ndarray, pred: np.ndarray, alpha: float, beta: float,
                      gamma: float, mean_conf: np.ndarray, momentum: float = 0.99):
    """The official way of one IAS step (reference §1.1 and the issue's description of the HIAST code): a
    Python list per class (confidences cast to float16), np.quantile per class, the thresholds mapped to the
    pixels with np.apply_along_axis, per-class sums in Python. Returns (thresholds, labels, mean_conf)."""
    num_classes = len(thresholds)
    conf16 = conf.astype(np.float16)
    lists = [[float(thresholds[c])] for c in range(num_classes)]
    for c in range(num_classes):
        lists[c].extend(conf16[pred == c].tolist())
    new = thresholds.copy()
    for c in range(num_classes):
        psi = np.quantile(np.array(lists[c]), 1 - alpha * thresholds[c] ** gamma)
        new[c] = beta * thresholds[c] + (1 - beta) * psi
        if new[c] >= 1:
            new[c] = 0.999
    flat = pred.reshape(pred.shape[0], -1)
    pixel_thresholds = np.apply_along_axis(lambda row: new[row], 1, flat).reshape(pred.shape)
    labels = np.where(conf >= pixel_thresholds, pred, 255).astype(np.uint8)
    mean_conf = mean_conf.copy()
    for c in range(num_classes):
        kept = labels == c
        count = int(kept.sum())
        if count:
            value = float(conf[kept].sum()) / count
            mean_conf[c] = value if mean_conf[c] == 0 else momentum * mean_conf[c] + (1 - momentum) * value
    return new, labels, mean_conf


def _median_time(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def ias_speed(height: int = 768, width: int = 1536, repeats: int = 7, seed: int = 0,
              device: str = "cpu") -> dict:
    """The IAS step (threshold update, selection, per-class statistics) for one instance of 2 images:
    `hiast.pseudo.IASState.step` against `official_ias_step`, on the same arrays, alternating."""
    conf, pred = instance_arrays(height, width, seed=seed)
    num_classes = 19
    alpha, beta, gamma = 0.5, 0.9, 8.0
    ours_times, official_times = [], []
    conf_t, pred_t = torch.from_numpy(conf).to(device), torch.from_numpy(pred).to(device)
    for _ in range(repeats):
        state = pseudo.IASState(num_classes, alpha, beta, gamma)
        t, step = _median_time(lambda state=state: _synced(state.step, conf_t, pred_t), 1)
        ours_times.append(t)
        t, official = _median_time(lambda: official_ias_step(np.full(num_classes, 0.9), conf, pred, alpha, beta,
                                                             gamma, np.zeros(num_classes)), 1)
        official_times.append(t)
    labels = step.labels.cpu().numpy()
    ours, theirs = statistics.median(ours_times), statistics.median(official_times)
    exact = pseudo.ias_update(np.full(num_classes, 0.9), conf, pred, alpha, beta, gamma)
    return {
        "benchmark": "ias_step", "pixels_per_instance": int(conf.size), "shape": list(conf.shape),
        "device": str(device), "torch_threads": torch.get_num_threads(), "repeats": repeats,
        "ours_s": ours, "official_s": theirs, "speedup": theirs / ours,
        "thresholds_equal_float64_np_quantile": bool(np.array_equal(step.thresholds, exact)),
        # the official casts confidences to float16 before the quantile: its thresholds differ slightly
        "max_threshold_difference_vs_official_float16": float(np.abs(step.thresholds - official[0]).max()),
        "label_agreement_vs_official": float((labels == official[1]).mean()),
        "machine": machine(),
    }


def _synced(fn, *args):
    out = fn(*args)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out


def machine() -> dict:
    import os
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None}


def write_json(result: dict, output: str | Path | None) -> None:
    if output is None:
        return
    with atomic_path(output) as tmp:
        tmp.write_text(json.dumps(result, indent=1))
