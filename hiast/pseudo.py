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


# --- per-class order statistics and linear quantiles --------------------------------------------------------
#
# IAS needs, per class and instance, two order statistics of the class's confidences (numpy's 'linear'
# quantile interpolates between them). Sorting the ~2.4 M pixels of an instance is what makes it slow, so
# they are found by a two-level selection instead:
#   1. a histogram of (class, bin) in one bincount, where the bin is the exponent and 3 leading mantissa bits
#      of 1 - conf (reversed): bins are ~1/8 of an octave of the distance to 1, so the confidences crowding
#      just below 1 spread over many bins (1 - conf is computed in conf's dtype: rounding is monotone, so
#      bins keep the values' order; exactly-1 values get a bin of their own);
#   2. the cumulative histogram gives the bin holding each wanted rank; only the pixels of those few bins
#      are sorted, exactly, in their own dtype.
# Every step is a torch op on the input's device (a GPU keeps the work); numpy input goes through
# torch.from_numpy (no copy). The result is exactly np.quantile's.

_CODE = {torch.float32: (torch.int32, 20, 1016), torch.float64: (torch.int64, 49, 8184)}


def _as_tensor(array) -> torch.Tensor:
    return array if isinstance(array, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(array))


def _prepare(conf, pred, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat conf (float32 or float64, in [0, 1]) and class ids, checked; torch on conf's device."""
    values = _as_tensor(conf).detach().reshape(-1)
    if values.dtype not in _CODE:
        values = values.to(torch.float32 if values.dtype in (torch.float16, torch.bfloat16) else torch.float64)
    keys = _as_tensor(pred).reshape(-1).to(values.device)
    if keys.dtype.is_floating_point:
        raise ValueError(f"predictions must be integer class ids, got {keys.dtype}")
    if keys.numel() != values.numel():
        raise ValueError(f"conf has {values.numel()} pixels but pred has {keys.numel()}")
    if values.numel():
        low, high = torch.aminmax(values)
        if not (0 <= float(low) and float(high) <= 1):   # NaN fails too
            raise ValueError(f"confidences must lie in [0, 1], got values in [{float(low)}, {float(high)}]")
        kmin, kmax = torch.aminmax(keys) if keys.dtype != torch.bool else (keys.min(), keys.max())
        if int(kmin) < 0 or int(kmax) >= num_classes:
            raise ValueError(f"predictions {int(kmin)}..{int(kmax)} out of range for {num_classes} classes")
    return values, keys


class _ClassHistogram:
    """Per-class histogram of `values` (see the comment above); `counts` [C] is the class sizes."""

    def __init__(self, values: torch.Tensor, keys: torch.Tensor, num_classes: int):
        int_type, shift, top = _CODE[values.dtype]
        self.bins = top + 1
        self.values, self.num_classes = values, num_classes
        # key = class * bins + code, code = top - (bits of 1 - value >> shift): 0..top, non-decreasing in value;
        # in place: fewer passes and allocations than the plain expression (a third to a half less time on a CPU
        # at 768x1536)
        shifted = (1 - values).view(int_type)
        shifted >>= shift
        self.key = keys.to(int_type, copy=True).mul_(self.bins).add_(top).sub_(shifted)
        hist = torch.bincount(self.key, minlength=num_classes * self.bins).view(num_classes, self.bins)
        self.cum = hist.cumsum(1)
        self.counts = self.cum[:, -1]

    def order_statistics(self, ranks: torch.Tensor) -> torch.Tensor:
        """values[keys == c] sorted ascending, at ranks[c, j] (int64; 0 where the rank is not in
        0..counts[c]-1, e.g. for an empty class)."""
        device = self.values.device
        rows = torch.arange(self.num_classes, device=device)[:, None]
        valid = (ranks >= 0) & (ranks < self.counts[:, None])
        ranks = torch.where(valid, ranks, 0)
        bin_index = torch.searchsorted(self.cum, ranks.contiguous(), right=True)   # bin holding each rank
        bin_index = torch.where(valid, bin_index, 0)
        before = torch.where(bin_index > 0, self.cum.gather(1, (bin_index - 1).clamp(min=0)), 0)
        wanted = (rows * self.bins + bin_index).to(self.key.dtype)
        table = torch.zeros(self.num_classes * self.bins, dtype=torch.bool, device=device)
        table[wanted.reshape(-1)] = True
        members = table.index_select(0, self.key).nonzero().squeeze(1)               # the pixels of the wanted bins only
        if members.numel() == 0:
            return torch.zeros(ranks.shape, dtype=self.values.dtype, device=device)
        member_keys, member_values = self.key[members], self.values[members]
        order = torch.sort(member_values).indices
        order = order[torch.sort(member_keys[order], stable=True).indices]   # by (bin key, value)
        first = torch.searchsorted(member_keys[order], wanted.reshape(-1)).reshape(wanted.shape)
        position = torch.where(valid, first + ranks - before, 0)
        return torch.where(valid, member_values[order][position], 0)


def _lerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """numpy's quantile interpolation (`numpy.lib._function_base_impl._lerp`), elementwise, float64."""
    diff = b - a
    return torch.where(t >= 0.5, b - diff * (1 - t), a + diff * t)


def _quantile_ranks(counts: torch.Tensor, levels: torch.Tensor):
    """numpy 'linear': (lower index, upper index, fraction) of level q in n sorted values."""
    virtual = (counts - 1).clamp(min=0).to(torch.float64) * levels
    floor = torch.floor(virtual)
    last = (counts - 1).clamp(min=0)
    lower = torch.minimum(floor.to(torch.int64), last)   # at or above the last index numpy takes the last value
    return lower, torch.minimum(lower + 1, last), virtual - floor


def class_quantiles(conf, pred, levels, num_classes: int, empty: float = float("nan"), joined=None):
    """For each class c, np.quantile(S_c, levels[c]) ('linear') with S_c = conf[pred == c], plus the single
    value joined[c] when `joined` is given (IAS's previous threshold); `empty` where S_c is empty.
    Float64 tensor on conf's device."""
    values, keys = _prepare(conf, pred, num_classes)
    device = values.device
    levels = torch.as_tensor(levels, dtype=torch.float64, device=device)
    if values.numel() == 0:
        counts = torch.zeros(num_classes, dtype=torch.int64, device=device)
        histogram = None
    else:
        histogram = _ClassHistogram(values, keys, num_classes)
        counts = histogram.counts
    if joined is None:
        lower, upper, fraction = _quantile_ranks(counts, levels)
        ranks = torch.stack([lower, upper], 1)
        if histogram is None:
            return torch.full((num_classes,), empty, dtype=torch.float64, device=device)
        present = counts > 0
        stats = histogram.order_statistics(torch.where(present[:, None], ranks, 0)).to(torch.float64)
        return torch.where(present, _lerp(stats[:, 0], stats[:, 1], fraction), empty)
    # S = V + {theta}: its i-th value is clamp(theta, V[i-1], V[i]) with V[-1] = -inf and V[n] = +inf
    theta = torch.as_tensor(joined, dtype=torch.float64, device=device)
    lower, upper, fraction = _quantile_ranks(counts + 1, levels)
    ranks = torch.stack([lower - 1, lower, upper - 1, upper], 1)
    inside = (ranks >= 0) & (ranks < counts[:, None])
    outside = torch.where(ranks < 0, -torch.inf, torch.inf).to(torch.float64)
    if histogram is None:
        stats = outside
    else:
        safe = torch.minimum(ranks.clamp(min=0), (counts - 1).clamp(min=0)[:, None])
        stats = torch.where(inside, histogram.order_statistics(safe).to(torch.float64), outside)
    a = torch.minimum(torch.maximum(theta, stats[:, 0]), stats[:, 1])
    b = torch.minimum(torch.maximum(theta, stats[:, 2]), stats[:, 3])
    return _lerp(a, b, fraction)


# --- IAS -----------------------------------------------------------------------------------------------------

def ias_update(thresholds, conf, pred, alpha: float, beta: float, gamma: float):
    """One IAS step: the thresholds [C] after seeing one instance (reference §1.1, steps 2-4).

    `conf`, `pred`: the instance's pixels (max softmax probability, argmax), any shape, flattened here.
    Numpy in -> float64 numpy out. Torch `conf` -> float64 tensor on conf's device, computed there
    (`thresholds` may then be numpy or a tensor). The quantile levels 1 - alpha * theta ** gamma are computed
    per class with Python float arithmetic (over C scalars), exactly as the official per-class scalar
    expression; the result equals the official np.quantile loop bit for bit.
    """
    theta_host = _host(thresholds).astype(np.float64)
    levels = np.array([1.0 - alpha * float(th) ** gamma for th in theta_host], dtype=np.float64)
    if not np.all((levels >= 0) & (levels <= 1)):
        raise ValueError(f"quantile levels 1 - alpha * theta ** gamma outside [0, 1]: {levels}")
    device = conf.device if isinstance(conf, torch.Tensor) else torch.device("cpu")
    theta = torch.as_tensor(theta_host, device=device)
    psi = class_quantiles(conf, pred, levels, len(theta_host), joined=theta)
    new = theta * beta + psi * (1 - beta)
    new = torch.where(new >= 1, torch.full_like(new, CLAMP), new)
    return new if isinstance(conf, torch.Tensor) else new.numpy()


def _round_up(thresholds: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The smallest value of `dtype` at or above each float64 threshold: for values of that dtype,
    v >= t exactly when v >= _round_up(t), so the comparison needs no widening of the pixels."""
    narrow = thresholds.to(dtype)
    return torch.where(narrow.to(torch.float64) < thresholds, torch.nextafter(narrow, torch.full_like(narrow, 2)),
                       narrow)


def select(conf, pred, thresholds):
    """Pseudo-labels: pred where conf >= thresholds[pred], else 255. Same shape as `pred`.

    Numpy in -> np.uint8; torch in -> torch.uint8 on pred's device. The comparison is exact (as in float64).
    """
    values = _as_tensor(conf)
    index = _as_tensor(pred).to(values.device)
    thr = torch.as_tensor(_host(thresholds), dtype=torch.float64, device=values.device)
    if thr.shape[0] > IGNORE:
        raise ValueError("at most 255 classes fit uint8 labels")
    if values.dtype in (torch.float16, torch.bfloat16):
        values = values.to(torch.float32)
    thr = _round_up(thr, values.dtype) if values.dtype == torch.float32 else thr.to(values.dtype)
    keep = values >= thr.index_select(0, index.reshape(-1).to(torch.int32)).reshape(index.shape)
    # pred | 0 where kept, pred | 255 = 255 where not (keep as uint8, minus 1, wraps 0 to 255): branch-free, where
    # torch.where's element-wise choice on an irregular mask ran at ~3 ns a pixel (BENCHMARKS.md, "The IAS step")
    labels = index.to(torch.uint8) | (keep.view(torch.uint8) - 1)
    return labels if isinstance(pred, torch.Tensor) else labels.numpy()


def cbst_thresholds(conf, pred, num_classes: int, p: float = 0.2):
    """CBST: per class the (1 - p) quantile (np.quantile 'linear') of conf over the pixels predicted as it.

    A class no pixel is predicted as gets threshold 1.0 (no pixel is ever selected by it anyway; the official
    code starts from ones and np.quantile of an empty list would fail). Subsampling is the caller's job.
    Numpy in -> float64 numpy; torch in -> float64 tensor on conf's device.
    """
    if not 0 <= p <= 1:
        raise ValueError(f"p must lie in [0, 1], got {p}")
    levels = np.full(num_classes, 1.0 - p, dtype=np.float64)
    out = class_quantiles(conf, pred, levels, num_classes, empty=1.0)
    return out if isinstance(conf, torch.Tensor) else out.numpy()


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


def _kept_sums(conf: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """float64 [C]: sum of conf over the pixels labelled c. Deterministic: a bincount on the CPU, and per-class
    reductions on a GPU (whose bincount adds floats with atomics, in no fixed order)."""
    if conf.device.type == "cpu":
        index = labels if labels.dtype == torch.uint8 else labels.to(torch.int32)
        sums = torch.bincount(index, weights=conf.to(torch.float64), minlength=IGNORE + 1)
        return sums[:num_classes]
    conf = conf.to(torch.float64)
    return torch.stack([torch.where(labels == c, conf, 0).sum() for c in range(num_classes)])


def image_class_pixel_counts(labels, num_classes: int) -> np.ndarray:
    """int64 [n_img, C]: pseudo-labelled pixels per image and class (255 skipped) of labels [n_img, ...],
    in one bincount."""
    flat = _as_tensor(labels).reshape(len(labels), -1)
    if flat.dtype != torch.uint8:
        if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) > IGNORE):
            raise ValueError(f"labels must be class ids or {IGNORE}")
        flat = flat.to(torch.uint8)
    # one bincount per image, straight on the uint8 labels (no widened copy)
    counts = torch.stack([torch.bincount(row, minlength=IGNORE + 1) for row in flat]) if len(flat) else \
        torch.zeros((0, IGNORE + 1), dtype=torch.int64, device=flat.device)
    counts = counts.reshape(flat.shape[0], IGNORE + 1)
    stray = counts[:, num_classes:IGNORE].sum(0).nonzero()
    if stray.numel():
        raise ValueError(f"label {int(stray[-1]) + num_classes} out of range for {num_classes} classes")
    return _host(counts[:, :num_classes]).astype(np.int64)


def class_pixel_counts(labels, num_classes: int) -> np.ndarray:
    """int64 [C]: pseudo-labelled pixels per class (255 skipped), over all of `labels` (numpy or torch)."""
    return image_class_pixel_counts(_as_tensor(labels).reshape(1, -1), num_classes)[0]


def _mean_conf_update(old: torch.Tensor, counts: torch.Tensor, sums: torch.Tensor, momentum: float) -> torch.Tensor:
    present = counts > 0
    batch = sums / counts.clamp(min=1)
    return torch.where(present & (old == 0), batch, torch.where(present, old * momentum + batch * (1 - momentum), old))


def class_mean_confidence_update(mean_conf, conf, labels, momentum: float = 0.99):
    """The running class mean confidence (`class_mean_probabilities.npy`, reference §1.1).

    For each class c with kept pixels (labels == c) in this instance, b_c = mean conf over them, and
    mean_conf[c] <- b_c if mean_conf[c] == 0 else momentum * mean_conf[c] + (1 - momentum) * b_c.
    Classes without kept pixels are unchanged. Sums in float64, deterministic (the official code averages
    float32). Returns a new float64 array of `mean_conf`'s kind (a torch tensor on its device, or numpy).
    """
    values = _as_tensor(conf)
    old = torch.as_tensor(_host(mean_conf), dtype=torch.float64, device=values.device)
    num_classes = old.shape[0]
    flat_labels = _as_tensor(labels).to(values.device).reshape(-1)
    counts = torch.as_tensor(class_pixel_counts(flat_labels, num_classes), device=values.device)
    new = _mean_conf_update(old, counts, _kept_sums(values.reshape(-1), flat_labels, num_classes), momentum)
    if isinstance(mean_conf, torch.Tensor):
        return new.to(mean_conf.device)
    return new.cpu().numpy()


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
    """Running pseudo-labelling state: thresholds (`init` for every class, or the array `init`) and the class
    mean confidence. With `adaptive` (IAS) each instance updates the thresholds before it is labelled; without
    (CBST, CT, NT) the thresholds stay fixed. The state lives on the device of the first instance, so on a
    GPU the whole step stays there; only the [C] statistics and the labels come back."""

    def __init__(self, num_classes: int, alpha: float, beta: float, gamma: float, init=0.9,
                 momentum: float = 0.99, adaptive: bool = True):
        self.num_classes, self.alpha, self.beta, self.gamma, self.momentum = num_classes, alpha, beta, gamma, momentum
        self.adaptive = adaptive
        initial = np.broadcast_to(np.asarray(init, dtype=np.float64), (num_classes,))
        self._thresholds = torch.as_tensor(initial.copy())
        self._mean_conf = torch.zeros(num_classes, dtype=torch.float64)

    @property
    def thresholds(self) -> np.ndarray:
        return _host(self._thresholds).copy()

    @property
    def class_mean_conf(self) -> np.ndarray:
        return _host(self._mean_conf).copy()

    def step(self, conf, pred) -> IASStep:
        """Label one instance (conf, pred: [n_img, H, W], numpy or torch) and update the statistics."""
        values = _as_tensor(conf)
        index = _as_tensor(pred).to(values.device)
        if index.dim() < 3:
            values, index = values.reshape(1, -1), index.reshape(1, -1)
        self._thresholds = self._thresholds.to(values.device)
        self._mean_conf = self._mean_conf.to(values.device)
        if self.adaptive:
            self._thresholds = ias_update(self._thresholds, values, index, self.alpha, self.beta, self.gamma)
        labels = select(values, index, self._thresholds)
        counts = image_class_pixel_counts(labels, self.num_classes)
        sums = _kept_sums(values.reshape(-1), labels.reshape(-1), self.num_classes)
        self._mean_conf = _mean_conf_update(self._mean_conf, torch.as_tensor(counts.sum(0), device=values.device),
                                            sums, self.momentum)
        labels = labels.reshape(_as_tensor(pred).shape)
        if not isinstance(pred, torch.Tensor):
            labels = labels.cpu().numpy()
        return IASStep(labels, self.thresholds, self.class_mean_conf, counts)


def run_ias(instances: Iterable, num_classes: int, alpha: float, beta: float, gamma: float, init: float = 0.9,
            momentum: float = 0.99) -> Iterator[IASStep]:
    """Sequential IAS over `instances`, each (conf, pred) of shape [n_img, H, W]; yields one IASStep each."""
    state = IASState(num_classes, alpha, beta, gamma, init, momentum)
    for conf, pred in instances:
        yield state.step(conf, pred)
