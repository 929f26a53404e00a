"""Pseudo-label selection: IAS (instance adaptive selector), CBST, constant and no threshold (reference §1.1).

Everything here is pure arithmetic on per-pixel confidences (max softmax probability) and predictions (argmax);
the model and the file I/O live elsewhere. Functions accept numpy arrays or torch tensors (CPU or CUDA) and
answer in the kind of their main input, as each docstring says.

IAS, for one instance (a batch of images, 2 in the official code) and each class c:

    S_c   = {theta_c_prev} U {conf_i : pred_i == c}
    Psi_c = quantile(S_c, 1 - alpha * theta_c_prev ** gamma)        (numpy's default 'linear' method)
    theta_c = beta * theta_c_prev + (1 - beta) * Psi_c,  clamped to 0.999 where >= 1

and the instance is labelled with the updated thresholds. The per-class quantiles are computed for all classes
at once from one sort by (class, value) — no per-class Python loop and no torch.quantile (whose input size is
limited) — and reproduce np.quantile bit for bit in float64 (the interpolation is numpy's `_lerp`).

Precision note: the official HIAST code casts the confidences to float16 before the quantile and stores the
instance thresholds Psi in float32; here everything is float64 (the confidences are only widened, exactly).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np
import torch

IGNORE = 255
CLAMP = 0.999


# --- per-class linear quantiles ------------------------------------------------------------------------------

def _lerp_np(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """numpy's quantile interpolation (`numpy.lib._function_base_impl._lerp`), elementwise."""
    diff = b - a
    return np.where(t >= 0.5, b - diff * (1 - t), a + diff * t)


def _lerp_torch(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    diff = b - a
    return torch.where(t >= 0.5, b - diff * (1 - t), a + diff * t)


def _class_quantiles_np(values: np.ndarray, keys: np.ndarray, q: np.ndarray, num_classes: int,
                        empty: float) -> np.ndarray:
    """For each class c, np.quantile(values[keys == c], q[c]) ('linear'); `empty` where the class has no value."""
    # sort by (class, value): values first, then a stable sort of the classes (radix sort on small ints)
    by_value = np.argsort(values)
    small = np.uint8 if num_classes <= 256 else (np.int16 if num_classes <= 32767 else np.int64)
    order = by_value[np.argsort(keys[by_value].astype(small), kind="stable")]
    sorted_values, sorted_keys = values[order], keys[order]
    classes = np.arange(num_classes)
    start = np.searchsorted(sorted_keys, classes, side="left")
    count = np.searchsorted(sorted_keys, classes, side="right") - start
    virtual = (count - 1).astype(np.float64) * q  # numpy: (n - 1) * quantile
    floor = np.floor(virtual)
    t = virtual - floor
    last = np.maximum(count - 1, 0)
    lo = np.minimum(floor.astype(np.int64), last)  # at or above the last index numpy takes the last value
    hi = np.minimum(lo + 1, last)
    if len(sorted_values) == 0:
        return np.full(num_classes, empty, dtype=np.float64)
    safe = np.minimum(start, len(sorted_values) - 1)
    a = sorted_values[np.where(count > 0, start + lo, safe)]
    b = sorted_values[np.where(count > 0, start + hi, safe)]
    return np.where(count > 0, _lerp_np(a, b, t), empty)


def _class_quantiles_torch(values: torch.Tensor, keys: torch.Tensor, q: torch.Tensor, num_classes: int,
                           empty: float) -> torch.Tensor:
    """Torch twin of `_class_quantiles_np` (same float64 arithmetic, on the values' device)."""
    device = values.device
    if values.numel() == 0:
        return torch.full((num_classes,), empty, dtype=torch.float64, device=device)
    by_value = torch.sort(values).indices  # equal values are interchangeable: no need for a stable sort here
    small = torch.int16 if num_classes <= 32767 else torch.int64
    by_class = torch.sort(keys[by_value].to(small), stable=True).indices
    order = by_value[by_class]
    sorted_values, sorted_keys = values[order], keys[order]
    classes = torch.arange(num_classes, device=device, dtype=sorted_keys.dtype)
    start = torch.searchsorted(sorted_keys, classes, right=False)
    count = torch.searchsorted(sorted_keys, classes, right=True) - start
    virtual = (count - 1).to(torch.float64) * q
    floor = torch.floor(virtual)
    t = virtual - floor
    last = (count - 1).clamp(min=0)
    lo = torch.minimum(floor.to(torch.int64), last)
    hi = torch.minimum(lo + 1, last)
    safe = start.clamp(max=len(sorted_values) - 1)
    present = count > 0
    a = sorted_values[torch.where(present, start + lo, safe)]
    b = sorted_values[torch.where(present, start + hi, safe)]
    return torch.where(present, _lerp_torch(a, b, t), torch.full_like(a, empty))


def _check_pred(pred_min: int, pred_max: int, num_classes: int) -> None:
    if pred_min < 0 or pred_max >= num_classes:
        raise ValueError(f"predictions {pred_min}..{pred_max} out of range for {num_classes} classes")


# --- IAS -----------------------------------------------------------------------------------------------------

def ias_update(thresholds, conf, pred, alpha: float, beta: float, gamma: float):
    """One IAS step: the thresholds [C] after seeing one instance (reference §1.1, steps 2-4).

    `conf`, `pred`: the instance's pixels (max softmax probability, argmax), any shape, flattened here.
    Numpy in -> float64 numpy out. Torch `conf` -> float64 tensor on conf's device, computed there
    (`thresholds` may then be numpy or a tensor). The quantile levels 1 - alpha * theta ** gamma are computed
    per class with Python float arithmetic (the only loop over classes, over C scalars), exactly as the
    official per-class scalar expression; the result equals the official np.quantile loop bit for bit.
    """
    is_torch = isinstance(conf, torch.Tensor)
    if is_torch:
        device = conf.device
        theta = torch.as_tensor(thresholds, dtype=torch.float64, device=device)
        theta_host = theta.detach().cpu().numpy()
    else:
        theta_host = np.asarray(thresholds, dtype=np.float64)
    num_classes = theta_host.shape[0]
    levels = np.array([1.0 - alpha * float(th) ** gamma for th in theta_host], dtype=np.float64)
    if not np.all((levels >= 0) & (levels <= 1)):
        raise ValueError(f"quantile levels 1 - alpha * theta ** gamma outside [0, 1]: {levels}")

    if is_torch:
        values = torch.cat([conf.detach().reshape(-1).to(torch.float64), theta])
        flat_pred = torch.as_tensor(pred, device=device).reshape(-1).to(torch.int64)
        if flat_pred.numel():
            _check_pred(int(flat_pred.min()), int(flat_pred.max()), num_classes)
        keys = torch.cat([flat_pred, torch.arange(num_classes, device=device)])
        q = torch.as_tensor(levels, device=device)
        psi = _class_quantiles_torch(values, keys, q, num_classes, empty=np.nan)
        new = theta * beta + psi * (1 - beta)
        return torch.where(new >= 1, torch.full_like(new, CLAMP), new)

    values = np.concatenate([np.asarray(conf, dtype=np.float64).reshape(-1), theta_host])
    flat_pred = np.asarray(pred).reshape(-1).astype(np.int64)
    if flat_pred.size:
        _check_pred(int(flat_pred.min()), int(flat_pred.max()), num_classes)
    keys = np.concatenate([flat_pred, np.arange(num_classes)])
    psi = _class_quantiles_np(values, keys, levels, num_classes, empty=np.nan)
    new = beta * theta_host + (1 - beta) * psi
    new[new >= 1] = CLAMP
    return new


def select(conf, pred, thresholds):
    """Pseudo-labels: pred where conf >= thresholds[pred], else 255. Same shape as `pred`.

    Numpy in -> np.uint8; torch in -> torch.uint8 on pred's device. The comparison is made in float64.
    """
    if isinstance(pred, torch.Tensor):
        thr = torch.as_tensor(thresholds, dtype=torch.float64, device=pred.device)
        if thr.shape[0] > IGNORE:
            raise ValueError("at most 255 classes fit uint8 labels")
        index = pred.to(torch.int64)
        keep = torch.as_tensor(conf, device=pred.device).to(torch.float64) >= thr[index]
        return torch.where(keep, index, torch.full_like(index, IGNORE)).to(torch.uint8)
    thr = np.asarray(thresholds, dtype=np.float64)
    if thr.shape[0] > IGNORE:
        raise ValueError("at most 255 classes fit uint8 labels")
    index = np.asarray(pred).astype(np.int64)
    keep = np.asarray(conf, dtype=np.float64) >= thr[index]
    return np.where(keep, index, IGNORE).astype(np.uint8)


def cbst_thresholds(conf, pred, num_classes: int, p: float = 0.2):
    """CBST: per class the (1 - p) quantile (np.quantile 'linear') of conf over the pixels predicted as it.

    A class no pixel is predicted as gets threshold 1.0 (no pixel is ever selected by it anyway; the official
    code starts from ones and np.quantile of an empty list would fail). Subsampling is the caller's job.
    Numpy in -> float64 numpy; torch in -> float64 tensor on conf's device.
    """
    if not 0 <= p <= 1:
        raise ValueError(f"p must lie in [0, 1], got {p}")
    levels = np.full(num_classes, 1.0 - p, dtype=np.float64)
    if isinstance(conf, torch.Tensor):
        keys = torch.as_tensor(pred, device=conf.device).reshape(-1).to(torch.int64)
        if keys.numel():
            _check_pred(int(keys.min()), int(keys.max()), num_classes)
        return _class_quantiles_torch(conf.detach().reshape(-1).to(torch.float64), keys,
                                      torch.as_tensor(levels, device=conf.device), num_classes, empty=1.0)
    keys = np.asarray(pred).reshape(-1).astype(np.int64)
    if keys.size:
        _check_pred(int(keys.min()), int(keys.max()), num_classes)
    return _class_quantiles_np(np.asarray(conf, dtype=np.float64).reshape(-1), keys, levels, num_classes, 1.0)


def ct_thresholds(num_classes: int, value: float = 0.9) -> np.ndarray:
    """CT: the same constant threshold for every class."""
    return np.full(num_classes, value, dtype=np.float64)


def nt_thresholds(num_classes: int) -> np.ndarray:
    """NT: no threshold (zeros, so `select` keeps the plain argmax everywhere)."""
    return np.zeros(num_classes, dtype=np.float64)


# --- statistics that feed HPLA -------------------------------------------------------------------------------

def _host(array) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        return array.detach().cpu().numpy()
    return np.asarray(array)


def class_mean_confidence_update(mean_conf, conf, labels, momentum: float = 0.99):
    """The running class mean confidence (`class_mean_probabilities.npy`, reference §1.1).

    For each class c with kept pixels (labels == c) in this instance, b_c = mean conf over them, and
    mean_conf[c] <- b_c if mean_conf[c] == 0 else momentum * mean_conf[c] + (1 - momentum) * b_c.
    Classes without kept pixels are unchanged. The mean is accumulated in float64 on the CPU (deterministic;
    the official code averages float32). Returns a new float64 array of `mean_conf`'s kind (a torch tensor
    on its device, or numpy).
    """
    old = _host(mean_conf).astype(np.float64)
    num_classes = old.shape[0]
    flat_labels = _host(labels).reshape(-1).astype(np.int64)
    flat_conf = _host(conf).reshape(-1).astype(np.float64)
    kept = flat_labels != IGNORE
    counts = np.bincount(flat_labels[kept], minlength=num_classes)
    if counts.shape[0] > num_classes:
        raise ValueError(f"label {counts.shape[0] - 1} out of range for {num_classes} classes")
    sums = np.bincount(flat_labels[kept], weights=flat_conf[kept], minlength=num_classes)
    present = counts > 0
    batch = np.divide(sums, counts, out=np.zeros(num_classes), where=present)
    new = np.where(present & (old == 0), batch,
                   np.where(present, old * momentum + batch * (1 - momentum), old))
    if isinstance(mean_conf, torch.Tensor):
        return torch.as_tensor(new, dtype=torch.float64, device=mean_conf.device)
    return new


def class_pixel_counts(labels, num_classes: int) -> np.ndarray:
    """int64 [C]: pseudo-labelled pixels per class (255 skipped), over all of `labels` (numpy or torch)."""
    if isinstance(labels, torch.Tensor):
        flat = labels.reshape(-1).to(torch.int64)
        counts = torch.bincount(flat[flat != IGNORE], minlength=num_classes).cpu().numpy()
    else:
        flat = np.asarray(labels).reshape(-1).astype(np.int64)
        counts = np.bincount(flat[flat != IGNORE], minlength=num_classes)
    if counts.shape[0] > num_classes:
        raise ValueError(f"label {counts.shape[0] - 1} out of range for {num_classes} classes")
    return counts.astype(np.int64)


def image_class_pixel_counts(labels, num_classes: int) -> np.ndarray:
    """int64 [n_img, C]: `class_pixel_counts` of each image of labels [n_img, H, W], in one bincount."""
    flat = _host(labels).astype(np.int64).reshape(len(labels), -1)
    image = np.broadcast_to(np.arange(flat.shape[0])[:, None], flat.shape)
    kept = flat != IGNORE
    if kept.any() and flat[kept].max() >= num_classes:
        raise ValueError(f"label {flat[kept].max()} out of range for {num_classes} classes")
    counts = np.bincount(image[kept] * num_classes + flat[kept], minlength=flat.shape[0] * num_classes)
    return counts.reshape(flat.shape[0], num_classes).astype(np.int64)


# --- a sequential IAS pass -----------------------------------------------------------------------------------

def instance_order(n_images: int, instance_size: int, seed: int) -> list[np.ndarray]:
    """The fixed instance order: np.random.default_rng(seed).permutation(n_images) in chunks of
    `instance_size` (the last may be smaller). The chunks partition range(n_images)."""
    if instance_size < 1:
        raise ValueError(f"instance_size must be >= 1, got {instance_size}")
    permutation = np.random.default_rng(seed).permutation(n_images)
    return [permutation[i:i + instance_size] for i in range(0, n_images, instance_size)]


@dataclass
class IASStep:
    """What one instance yields: its labels and the statistics right after it."""
    labels: object               # [n_img, H, W] uint8, numpy or torch like the instance's pred
    thresholds: np.ndarray       # [C] float64, the updated thresholds the labels were selected with
    class_mean_conf: np.ndarray  # [C] float64, the running class mean confidence after this instance
    pixel_counts: np.ndarray     # [n_img, C] int64, pseudo-labelled pixels per image and class


class IASState:
    """Running IAS state: thresholds (init `init` for every class) and the class mean confidence."""

    def __init__(self, num_classes: int, alpha: float, beta: float, gamma: float, init: float = 0.9,
                 momentum: float = 0.99):
        self.num_classes, self.alpha, self.beta, self.gamma, self.momentum = num_classes, alpha, beta, gamma, momentum
        self.thresholds = np.full(num_classes, init, dtype=np.float64)
        self.class_mean_conf = np.zeros(num_classes, dtype=np.float64)

    def step(self, conf, pred) -> IASStep:
        """Update the thresholds with one instance (conf, pred: [n_img, H, W]) and label it with them."""
        self.thresholds = _host(ias_update(self.thresholds, conf, pred, self.alpha, self.beta,
                                           self.gamma)).astype(np.float64)
        labels = select(conf, pred, self.thresholds)
        self.class_mean_conf = class_mean_confidence_update(self.class_mean_conf, conf, labels, self.momentum)
        counts = image_class_pixel_counts(labels, self.num_classes) if np.ndim(pred) >= 3 else \
            class_pixel_counts(labels, self.num_classes)[None]
        return IASStep(labels, self.thresholds.copy(), self.class_mean_conf.copy(), counts)


def run_ias(instances: Iterable, num_classes: int, alpha: float, beta: float, gamma: float, init: float = 0.9,
            momentum: float = 0.99) -> Iterator[IASStep]:
    """Sequential IAS over `instances`, each (conf, pred) of shape [n_img, H, W]; yields one IASStep each."""
    state = IASState(num_classes, alpha, beta, gamma, init, momentum)
    for conf, pred in instances:
        yield state.step(conf, pred)
