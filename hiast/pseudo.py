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
#   1. a histogram of (class, bin) in one pass, where the bin is the exponent and 3 leading mantissa bits
#      of 1 - conf (reversed): bins are ~1/8 of an octave of the distance to 1, so the confidences crowding
#      just below 1 spread over many bins (1 - conf is computed in conf's dtype: rounding is monotone, so
#      bins keep the values' order; exactly-1 values, and only they, fall in each class's top bin);
#   2. the cumulative histogram gives the bin holding each wanted rank; only the pixels of those few bins
#      are sorted, exactly, in their own dtype (a top bin needs no sorting: it holds 1.0 alone).
# The passes over the pixels run on the input's device (a GPU keeps them); the arithmetic over [C] classes and
# [C, bins] histograms runs on the host in numpy, with the same IEEE float64 operations that torch would do.
# So a GPU runs a few dozen kernels per step and waits for them a few times (BENCHMARKS.md, "The IAS step on a
# device"), where one torch operator per small array cost ~250 launches. The result is exactly np.quantile's.

_CODE = {torch.float32: (torch.int32, 20, 1016), torch.float64: (torch.int64, 49, 8184)}
_NUMPY = {torch.float32: np.float32, torch.float64: np.float64}


def _as_tensor(array) -> torch.Tensor:
    return array if isinstance(array, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(array))


def _host(array) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        return array.detach().cpu().numpy()
    return np.asarray(array)


def _to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """A host array on `device`. To a GPU through pinned memory without blocking: a copy from pageable memory
    would make the host wait until the device has run everything queued before it."""
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    return tensor.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else tensor.to(device)


def _sync_free(tensor: torch.Tensor) -> bool:
    """Whether `tensor`'s device must be spared operators that make the host wait for it (CUDA's bincount
    reads its input's maximum first) and float atomics (which add in no fixed order): anything but a CPU."""
    return tensor.device.type != "cpu"


def _count(index: torch.Tensor, length: int) -> torch.Tensor:
    """int64 [length]: how often each of 0..length-1 occurs in `index` (all of it in range, checked by the
    caller). A bincount on a CPU; elsewhere integer atomics, exact in any order and with no host wait."""
    if not _sync_free(index):
        return torch.bincount(index, minlength=length)
    ones = torch.ones(index.numel(), dtype=torch.int64, device=index.device)
    return torch.zeros(length, dtype=torch.int64, device=index.device).index_add_(0, index, ones)


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
        kmin, kmax = torch.aminmax(keys) if keys.dtype != torch.bool else (keys.min(), keys.max())
        # one copy to the host for the four bounds (in conf's dtype: a rounded id out of range stays out of it)
        low, high, kmin, kmax = torch.stack([*torch.aminmax(values), kmin, kmax]).tolist()
        if not (0 <= low and high <= 1):   # NaN fails too
            raise ValueError(f"confidences must lie in [0, 1], got values in [{low}, {high}]")
        if kmin < 0 or kmax >= num_classes:
            raise ValueError(f"predictions {int(kmin)}..{int(kmax)} out of range for {num_classes} classes")
    return values, keys


class _ClassHistogram:
    """Per-class histogram of `values` (see the comment above), held on the host; `counts` [C] (numpy) is
    the class sizes."""

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
        self.hist = _host(_count(self.key, num_classes * self.bins)).reshape(num_classes, self.bins)
        self.cum = self.hist.cumsum(1)
        self.counts = self.cum[:, -1]

    def order_statistics(self, ranks: np.ndarray) -> np.ndarray:
        """values[keys == c] sorted ascending, at ranks[c, j] (numpy int64 -> numpy, in the values' dtype; 0
        where the rank is not in 0..counts[c]-1, e.g. for an empty class)."""
        classes, bins = self.num_classes, self.bins
        rows = np.arange(classes)[:, None]
        valid = (ranks >= 0) & (ranks < self.counts[:, None])
        ranks = np.where(valid, ranks, 0)
        # the bin holding each rank, in one search: offset by `span` > every count, the rows' cumulative
        # counts are one increasing sequence
        span = int(self.counts.sum()) + 1
        found = np.searchsorted((self.cum + rows * span).ravel(), (ranks + rows * span).ravel(), side="right")
        bin_index = np.where(valid, found.reshape(ranks.shape) - rows * bins, 0)
        before = np.where(bin_index > 0, self.cum[rows, np.maximum(bin_index - 1, 0)], 0)
        wanted = rows * bins + bin_index                     # global bin keys
        out = np.zeros(ranks.shape, dtype=_NUMPY[self.values.dtype])
        ones = valid & (bin_index == bins - 1)
        out[ones] = 1                                        # a top bin holds 1.0 alone
        sort = valid & ~ones
        if not sort.any():
            return out
        marked = np.unique(wanted[sort])                     # ascending bin keys
        table = np.zeros(classes * bins, dtype=bool)
        table[marked] = True
        device = self.values.device
        members = _to_device(table, device).index_select(0, self.key).nonzero().squeeze(1)
        member_keys, member_values = self.key[members], self.values[members]
        order = torch.sort(member_values).indices
        order = order[torch.sort(member_keys[order], stable=True).indices]   # by (bin key, value)
        # the sorted members are the marked bins one after the other: each starts after the bins before it
        sizes = self.hist.reshape(-1)[marked]
        starts = np.cumsum(sizes) - sizes
        position = starts[np.searchsorted(marked, wanted[sort])] + (ranks - before)[sort]
        out[sort] = _host(member_values[order[_to_device(position, device)]])
        return out


def _lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """numpy's quantile interpolation (`numpy.lib._function_base_impl._lerp`), elementwise, float64."""
    diff = b - a
    return np.where(t >= 0.5, b - diff * (1 - t), a + diff * t)


def _quantile_ranks(counts: np.ndarray, levels: np.ndarray):
    """numpy 'linear': (lower index, upper index, fraction) of level q in n sorted values."""
    last = np.maximum(counts - 1, 0)
    virtual = last.astype(np.float64) * levels
    floor = np.floor(virtual)
    lower = np.minimum(floor.astype(np.int64), last)   # at or above the last index numpy takes the last value
    return lower, np.minimum(lower + 1, last), virtual - floor


def _class_quantiles(values: torch.Tensor, keys: torch.Tensor, levels: np.ndarray, num_classes: int,
                     empty: float, joined: np.ndarray | None) -> np.ndarray:
    """`class_quantiles` on prepared input: float64 numpy [C]."""
    if values.numel() == 0:
        counts, histogram = np.zeros(num_classes, dtype=np.int64), None
    else:
        histogram = _ClassHistogram(values, keys, num_classes)
        counts = histogram.counts
    if joined is None:
        if histogram is None:
            return np.full(num_classes, empty, dtype=np.float64)
        lower, upper, fraction = _quantile_ranks(counts, levels)
        present = counts > 0
        ranks = np.where(present[:, None], np.stack([lower, upper], 1), -1)
        stats = histogram.order_statistics(ranks).astype(np.float64)
        return np.where(present, _lerp(stats[:, 0], stats[:, 1], fraction), empty)
    # S = V + {theta}: its i-th value is clamp(theta, V[i-1], V[i]) with V[-1] = -inf and V[n] = +inf
    lower, upper, fraction = _quantile_ranks(counts + 1, levels)
    ranks = np.stack([lower - 1, lower, upper - 1, upper], 1)
    inside = (ranks >= 0) & (ranks < counts[:, None])
    stats = np.where(ranks < 0, -np.inf, np.inf)
    if histogram is not None:
        stats = np.where(inside, histogram.order_statistics(np.where(inside, ranks, -1)).astype(np.float64), stats)
    a = np.minimum(np.maximum(joined, stats[:, 0]), stats[:, 1])
    b = np.minimum(np.maximum(joined, stats[:, 2]), stats[:, 3])
    return _lerp(a, b, fraction)


def class_quantiles(conf, pred, levels, num_classes: int, empty: float = float("nan"), joined=None):
    """For each class c, np.quantile(S_c, levels[c]) ('linear') with S_c = conf[pred == c], plus the single
    value joined[c] when `joined` is given (IAS's previous threshold); `empty` where S_c is empty.
    Float64 tensor on conf's device (on the CPU for numpy conf)."""
    values, keys = _prepare(conf, pred, num_classes)
    levels = np.broadcast_to(_host(levels).astype(np.float64), (num_classes,))
    joined = None if joined is None else np.broadcast_to(_host(joined).astype(np.float64), (num_classes,))
    return torch.from_numpy(_class_quantiles(values, keys, levels, num_classes, empty, joined)).to(values.device)


# --- IAS -----------------------------------------------------------------------------------------------------

def _levels(thresholds: np.ndarray, alpha: float, gamma: float) -> np.ndarray:
    """IAS's quantile levels 1 - alpha * theta ** gamma, per class in Python float arithmetic, exactly as the
    official per-class scalar expression."""
    levels = np.array([1.0 - alpha * float(th) ** gamma for th in thresholds], dtype=np.float64)
    if not np.all((levels >= 0) & (levels <= 1)):
        raise ValueError(f"quantile levels 1 - alpha * theta ** gamma outside [0, 1]: {levels}")
    return levels


def _updated(theta: np.ndarray, values: torch.Tensor, keys: torch.Tensor, alpha: float, beta: float,
             gamma: float) -> np.ndarray:
    """`ias_update` on prepared input and host thresholds: float64 numpy [C]."""
    psi = _class_quantiles(values, keys, _levels(theta, alpha, gamma), len(theta), float("nan"), theta)
    new = theta * beta + psi * (1 - beta)
    return np.where(new >= 1, CLAMP, new)


def ias_update(thresholds, conf, pred, alpha: float, beta: float, gamma: float):
    """One IAS step: the thresholds [C] after seeing one instance (reference §1.1, steps 2-4).

    `conf`, `pred`: the instance's pixels (max softmax probability, argmax), any shape, flattened here.
    Numpy in -> float64 numpy out. Torch `conf` -> float64 tensor on conf's device, whose passes over the
    pixels run there (`thresholds` may then be numpy or a tensor). The quantile levels are computed per class
    in Python float arithmetic (`_levels`); the result equals the official np.quantile loop bit for bit.
    """
    theta = _host(thresholds).astype(np.float64).reshape(-1)
    values, keys = _prepare(conf, pred, len(theta))
    new = _updated(theta, values, keys, alpha, beta, gamma)
    return torch.from_numpy(new).to(values.device) if isinstance(conf, torch.Tensor) else new


def _round_up(thresholds: np.ndarray) -> np.ndarray:
    """The smallest float32 at or above each float64 threshold: for float32 values, v >= t exactly when
    v >= _round_up(t), so the comparison needs no widening of the pixels."""
    narrow = thresholds.astype(np.float32)
    return np.where(narrow.astype(np.float64) < thresholds, np.nextafter(narrow, np.float32(2)), narrow)


def select(conf, pred, thresholds):
    """Pseudo-labels: pred where conf >= thresholds[pred], else 255. Same shape as `pred`.

    Numpy in -> np.uint8; torch in -> torch.uint8 on pred's device. The comparison is exact (as in float64).
    """
    values = _as_tensor(conf)
    index = _as_tensor(pred).to(values.device)
    thr = _host(thresholds).astype(np.float64).reshape(-1)
    if thr.shape[0] > IGNORE:
        raise ValueError("at most 255 classes fit uint8 labels")
    if values.dtype in (torch.float16, torch.bfloat16):
        values = values.to(torch.float32)
    table = _to_device(_round_up(thr) if values.dtype == torch.float32 else thr, values.device).to(values.dtype)
    keep = values >= table.index_select(0, index.reshape(-1).to(torch.int32)).reshape(index.shape)
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

def _kept_sums(conf: torch.Tensor, labels: torch.Tensor, num_classes: int) -> np.ndarray:
    """float64 numpy [C]: sum of conf over the pixels labelled c, deterministic. A bincount on a CPU. Elsewhere
    (a GPU's float atomics add in no fixed order) an integer sum of conf in units of 2**-k, k = 62 - the bit
    length of the pixel count, so that no sum can overflow: exact in any order, and equal to the CPU's float64
    sums wherever those are exact (float32 confidences of at least 2**-17 in an instance of up to 4 M pixels)."""
    if not _sync_free(conf):
        index = labels if labels.dtype == torch.uint8 else labels.to(torch.int32)
        return _host(torch.bincount(index, weights=conf.to(torch.float64), minlength=IGNORE + 1)[:num_classes])
    unit = 2.0 ** (62 - max(conf.numel(), 1).bit_length())
    fixed = torch.round(conf.to(torch.float64) * unit).to(torch.int64)
    sums = torch.zeros(IGNORE + 1, dtype=torch.int64, device=conf.device).index_add_(0, labels.to(torch.int32), fixed)
    return _host(sums[:num_classes]).astype(np.float64) / unit


def image_class_pixel_counts(labels, num_classes: int) -> np.ndarray:
    """int64 [n_img, C]: pseudo-labelled pixels per image and class (255 skipped) of labels [n_img, ...]."""
    flat = _as_tensor(labels).reshape(len(labels), -1)
    if flat.dtype != torch.uint8:
        if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) > IGNORE):
            raise ValueError(f"labels must be class ids or {IGNORE}")
        flat = flat.to(torch.uint8)
    if not len(flat):
        counts = np.zeros((0, IGNORE + 1), dtype=np.int64)
    elif not _sync_free(flat):   # one bincount per image, straight on the uint8 labels (no widened copy)
        counts = _host(torch.stack([torch.bincount(row, minlength=IGNORE + 1) for row in flat]))
    else:                          # one count of (image, label) for all images
        offsets = torch.arange(len(flat), dtype=torch.int32, device=flat.device)[:, None] * (IGNORE + 1)
        counts = _host(_count((flat.to(torch.int32) + offsets).reshape(-1), len(flat) * (IGNORE + 1)))
    counts = counts.reshape(len(flat), IGNORE + 1)
    stray = np.flatnonzero(counts[:, num_classes:IGNORE].sum(0))
    if stray.size:
        raise ValueError(f"label {int(stray[-1]) + num_classes} out of range for {num_classes} classes")
    return counts[:, :num_classes].astype(np.int64)


def class_pixel_counts(labels, num_classes: int) -> np.ndarray:
    """int64 [C]: pseudo-labelled pixels per class (255 skipped), over all of `labels` (numpy or torch)."""
    return image_class_pixel_counts(_as_tensor(labels).reshape(1, -1), num_classes)[0]


def _mean_conf_update(old: np.ndarray, counts: np.ndarray, sums: np.ndarray, momentum: float) -> np.ndarray:
    present = counts > 0
    batch = sums / np.maximum(counts, 1)
    return np.where(present & (old == 0), batch, np.where(present, old * momentum + batch * (1 - momentum), old))


def class_mean_confidence_update(mean_conf, conf, labels, momentum: float = 0.99):
    """The running class mean confidence (`class_mean_probabilities.npy`, reference §1.1).

    For each class c with kept pixels (labels == c) in this instance, b_c = mean conf over them, and
    mean_conf[c] <- b_c if mean_conf[c] == 0 else momentum * mean_conf[c] + (1 - momentum) * b_c.
    Classes without kept pixels are unchanged. Sums deterministic, exact where float64 sums are (`_kept_sums`;
    the official code averages float32). Returns a new float64 array of `mean_conf`'s kind (a torch tensor on its device, or numpy).
    """
    values = _as_tensor(conf)
    old = _host(mean_conf).astype(np.float64)
    num_classes = old.shape[0]
    flat_labels = _as_tensor(labels).to(values.device).reshape(-1)
    counts = class_pixel_counts(flat_labels, num_classes)
    new = _mean_conf_update(old, counts, _kept_sums(values.reshape(-1), flat_labels, num_classes), momentum)
    if isinstance(mean_conf, torch.Tensor):
        return torch.from_numpy(new).to(mean_conf.device)
    return new


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
    (CBST, CT, NT) the thresholds stay fixed. The [C] state lives on the host; the passes over an instance's
    pixels run on its device (a GPU keeps them and its labels), and only [C]-sized statistics cross over."""

    def __init__(self, num_classes: int, alpha: float, beta: float, gamma: float, init=0.9,
                 momentum: float = 0.99, adaptive: bool = True):
        self.num_classes, self.alpha, self.beta, self.gamma, self.momentum = num_classes, alpha, beta, gamma, momentum
        self.adaptive = adaptive
        self._thresholds = np.broadcast_to(np.asarray(init, dtype=np.float64), (num_classes,)).copy()
        self._mean_conf = np.zeros(num_classes, dtype=np.float64)

    @property
    def thresholds(self) -> np.ndarray:
        return self._thresholds.copy()

    @property
    def class_mean_conf(self) -> np.ndarray:
        return self._mean_conf.copy()

    def step(self, conf, pred) -> IASStep:
        """Label one instance (conf, pred: [n_img, H, W], numpy or torch) and update the statistics."""
        values = _as_tensor(conf)
        index = _as_tensor(pred).to(values.device)
        if index.dim() < 3:
            values, index = values.reshape(1, -1), index.reshape(1, -1)
        if self.adaptive:
            flat_values, flat_keys = _prepare(values, index, self.num_classes)
            self._thresholds = _updated(self._thresholds, flat_values, flat_keys, self.alpha, self.beta, self.gamma)
        labels = select(values, index, self._thresholds)
        counts = image_class_pixel_counts(labels, self.num_classes)
        sums = _kept_sums(values.reshape(-1), labels.reshape(-1), self.num_classes)
        self._mean_conf = _mean_conf_update(self._mean_conf, counts.sum(0), sums, self.momentum)
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
