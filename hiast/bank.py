"""HPLA (hard-aware pseudo-label augmentation), the pure parts: hard classes, donor table, sampling, pasting
(reference §1.2 and §5.2-5.6).

* Hard classes: the k classes with the lowest class mean confidence (`class_mean_probabilities.npy`, not the
  IAS thresholds). Classes never pseudo-labelled have mean confidence 0, so they are the hardest (official).
* Sampling probability over classes: P(c) = (1 - m_c)^2 / sum over the hard classes, zero elsewhere (the
  official rejection sampling restricted to the hard classes, renormalised).
* Donors of a hard class: the target images whose pseudo-label holds it, by ascending pixel count, minus the
  smallest round(0.1 n) (Python's round, i.e. round-half-to-even, as the official `[round(0.1*n):]`).
* Pasting: donor pixels whose label is in `classes` replace the receiver's at the same positions.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


def hard_classes(class_mean_conf, k: int, excluded: Sequence[int] = ()) -> tuple[np.ndarray, np.ndarray]:
    """(hard classes [<=k] int64 hardest first, sampling probabilities [C] float64).

    Hard = the k eligible classes with the lowest mean confidence; ties are broken by class id (stable sort).
    `excluded` classes are never hard (the SYNTHIA terrain/truck/train, without the official +inf that makes
    the probabilities NaN, reference §5.5). k >= the number of eligible classes takes them all; k = 0 gives
    an empty hard set and all-zero probabilities. P(c) is proportional to (1 - m_c)^2 over the hard classes;
    if that is 0 for all of them (every m = 1) P is uniform over the hard classes.
    """
    m = np.asarray(class_mean_conf, dtype=np.float64).reshape(-1)
    num_classes = m.shape[0]
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    excluded = np.asarray(list(excluded), dtype=np.int64)
    if excluded.size and ((excluded < 0) | (excluded >= num_classes)).any():
        raise ValueError(f"excluded classes {excluded.tolist()} outside 0..{num_classes - 1}")
    eligible = np.ones(num_classes, dtype=bool)
    eligible[excluded] = False
    order = np.argsort(m, kind="stable")
    hard = order[eligible[order]][:k].astype(np.int64)
    probs = np.zeros(num_classes, dtype=np.float64)
    if hard.size:
        weights = (1.0 - m[hard]) ** 2
        total = weights.sum()
        probs[hard] = weights / total if total > 0 else 1.0 / hard.size
    return hard, probs


def donor_table(pixel_counts, hard, drop_smallest: float = 0.1) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """For each hard class c: (image indices int64, pixel counts int64) of its donors, ascending by pixels.

    `pixel_counts` [N, C]: pseudo-labelled pixels per image and class. The donors of c are the images with
    count > 0, sorted by count (ties by image index, stable), minus the first round(drop_smallest * n) with
    Python's round (half to even: n = 5 drops round(0.5) = 0, n = 15 drops round(1.5) = 2). A class no image
    holds gets two empty arrays. One global sort by (class, count, image); the loop only slices.
    """
    counts = np.asarray(pixel_counts, dtype=np.int64)
    if counts.ndim != 2:
        raise ValueError(f"pixel_counts must be [N, C], got shape {counts.shape}")
    hard = np.asarray(hard, dtype=np.int64).reshape(-1)
    sub = counts[:, hard]                                   # [N, K]
    image, column = np.nonzero(sub > 0)
    pixels = sub[image, column]
    order = np.lexsort((image, pixels, column))             # primary: hard-class column, then pixels, then image
    image, column, pixels = image[order].astype(np.int64), column[order], pixels[order]
    bounds = np.searchsorted(column, np.arange(hard.size + 1))
    table = {}
    for j, cls in enumerate(hard.tolist()):
        start, stop = int(bounds[j]), int(bounds[j + 1])
        start += round(drop_smallest * (stop - start))
        table[cls] = (image[start:stop].copy(), pixels[start:stop].copy())
    return table


def sample_class(rng: np.random.Generator, probs) -> int:
    """Draw a class from `probs` [C] (the hard-class sampling probabilities)."""
    p = np.asarray(probs, dtype=np.float64)
    if not p.sum() > 0:
        raise ValueError("no class to sample: all probabilities are zero")
    return int(rng.choice(p.shape[0], p=p))


def sample_donor(rng: np.random.Generator, donors_for_class) -> int:
    """A donor image index drawn uniformly from one class's (image indices, pixels) entry of `donor_table`."""
    image_index = np.asarray(donors_for_class[0])
    if image_index.size == 0:
        raise ValueError("this class has no donor image")
    return int(image_index[rng.integers(image_index.size)])


def paste(image, labels, donor_image, donor_labels, classes, channels_last: bool | None = None):
    """Copy the donor pixels whose donor label is in `classes` onto the receiver at the same positions.

    Returns (new image, new labels, pasted mask [H, W] bool); the inputs are not modified. Sizes must match
    (resizing the donor is the caller's job). Numpy or torch (all four arrays of one kind). Images are
    [C, H, W] or [H, W, C] (or [H, W]): `channels_last=None` infers the layout from the labels' shape; when
    both fit (H == W == C) it assumes [C, H, W] for torch and [H, W, C] for numpy.
    """
    hw = tuple(labels.shape)
    if tuple(donor_labels.shape) != hw or tuple(donor_image.shape) != tuple(image.shape):
        raise ValueError(f"size mismatch: receiver {tuple(image.shape)} / {hw}, "
                         f"donor {tuple(donor_image.shape)} / {tuple(donor_labels.shape)}")
    is_torch = isinstance(labels, torch.Tensor)
    if image.ndim == 2:
        last = False
    elif channels_last is not None:
        last = channels_last
    else:
        first_fits, last_fits = tuple(image.shape[-2:]) == hw, tuple(image.shape[:2]) == hw
        if not (first_fits or last_fits):
            raise ValueError(f"image shape {tuple(image.shape)} does not fit labels {hw}")
        last = last_fits and not (first_fits and is_torch)
    if is_torch:
        cls = torch.as_tensor(list(classes), dtype=donor_labels.dtype, device=donor_labels.device)
        mask = torch.isin(donor_labels, cls)
        image_mask = mask.unsqueeze(-1) if last else mask
        return (torch.where(image_mask, donor_image, image), torch.where(mask, donor_labels, labels), mask)
    mask = np.isin(np.asarray(donor_labels), np.asarray(list(classes)))
    image_mask = mask[..., None] if last else mask
    return (np.where(image_mask, donor_image, image), np.where(mask, donor_labels, labels).astype(labels.dtype),
            mask)
