"""Self-training losses: pseudo-label CE, RAR (KLD-to-uniform and entropy) and the soft-CE consistency
(reference §1.3, §1.4, §5.10).

logits [B, C, H, W]; mask [B, H, W] bool selects the region. Each region loss is summed over the region's
pixels and the C classes and divided by C * N (N = region pixels): the official normalisation by the number
of non-zero entries of a [B, C, H, W] mask, i.e. an extra 1/C compared with a per-pixel mean. An empty region
gives 0 that is still connected to the logits' graph (backward works and gives zero gradients).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = 255


def _region_mean(per_pixel: torch.Tensor, mask: torch.Tensor, num_classes: int) -> torch.Tensor:
    """sum of per_pixel [B, H, W] over mask / (C * N); 0 (with grad) for an empty mask. No host sync."""
    mask = mask.to(device=per_pixel.device, dtype=torch.bool)
    if mask.shape != per_pixel.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match the pixels {tuple(per_pixel.shape)}")
    total = torch.where(mask, per_pixel, torch.zeros_like(per_pixel)).sum()
    return total / (mask.sum() * num_classes).clamp(min=1)


def kld_uniform(logits: torch.Tensor, mask: torch.Tensor, log_p: torch.Tensor | None = None) -> torch.Tensor:
    """RAR smoothing on the pseudo-labelled region: sum_region sum_c -(1/C) log p_c / (C N).
    `log_p`: log_softmax(logits, 1) when the caller has it already (the self-training step shares one)."""
    num_classes = logits.shape[1]
    log_p = F.log_softmax(logits, dim=1) if log_p is None else log_p
    per_pixel = -log_p.sum(dim=1) / num_classes
    return _region_mean(per_pixel, mask, num_classes)


def entropy(logits: torch.Tensor, mask: torch.Tensor, log_p: torch.Tensor | None = None) -> torch.Tensor:
    """RAR sharpening on the ignored region: sum_region sum_c -p_c log p_c / (C N)."""
    log_p = F.log_softmax(logits, dim=1) if log_p is None else log_p
    per_pixel = -(log_p.exp() * log_p).sum(dim=1)
    return _region_mean(per_pixel, mask, logits.shape[1])


def soft_ce(logits: torch.Tensor, target_probs: torch.Tensor, mask: torch.Tensor,
            log_p: torch.Tensor | None = None) -> torch.Tensor:
    """Consistency: sum_region sum_c -q_c log p_c / (C N), q = target_probs [B, C, H, W].

    The divisor is exactly C * N; the official code divides by the number of non-zero entries of the
    [B, C, H, W] loss tensor, which is C * N unless some -q_c log p_c is exactly 0 (e.g. q_c == 0).
    `target_probs` is NOT detached here: the caller passes the teacher's probabilities already detached.
    """
    if target_probs.shape != logits.shape:
        raise ValueError(f"target shape {tuple(target_probs.shape)} != logits shape {tuple(logits.shape)}")
    log_p = F.log_softmax(logits, dim=1) if log_p is None else log_p
    per_pixel = -(target_probs * log_p).sum(dim=1)
    return _region_mean(per_pixel, mask, logits.shape[1])


def pseudo_ce(logits: torch.Tensor, labels: torch.Tensor, log_p: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy averaged over the labelled pixels (label 255 ignored); 0 (with grad) if there are none."""
    labels = labels.to(device=logits.device, dtype=torch.int64)
    if log_p is None:
        total = F.cross_entropy(logits, labels, ignore_index=IGNORE, reduction="sum")
    else:
        total = F.nll_loss(log_p, labels, ignore_index=IGNORE, reduction="sum")
    return total / (labels != IGNORE).sum().clamp(min=1)
