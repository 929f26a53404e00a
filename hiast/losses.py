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


class _FusedObjective(torch.autograd.Function):
    """The four self-training terms, and their gradient computed in the forward, without autograd's tape.

    The same sums as `pseudo_ce`, `kld_uniform`, `entropy` and `soft_ce` with their normalisations; the
    gradient with respect to the logits is written out instead of being taped term by term (per pixel,
    p = softmax, H = -sum p log p, q = teacher probabilities):
      CE: p - onehot(y);  KL-to-uniform: p - 1/C;  entropy: -p (log p + H);  soft CE: p sum(q) - q.
    Autograd's tape runs ~25 elementwise passes over the [B, C, H, W] logits for these; this runs ~12.
    """

    @staticmethod
    def forward(ctx, logits, labels, teacher_probs, region, weights):
        w_ce, w_kld, w_ent, w_cons = weights
        num_classes = logits.shape[1]
        # one layout for every pass: a channels_last model's upsampled logits mixed with [B, 1, H, W] masks
        # would make most of the operators below copy (measured: 1.3x slower on CPU)
        logits = logits.contiguous()
        teacher_probs = teacher_probs.contiguous() if teacher_probs is not None else None
        log_p = torch.log_softmax(logits, dim=1)
        p = log_p.exp()
        confident = (labels != IGNORE).unsqueeze(1)              # [B, 1, H, W]
        conf_f = confident.to(logits.dtype)
        n_confident = conf_f.sum()
        n_ignored = confident.numel() - n_confident
        values = torch.zeros(4, dtype=logits.dtype, device=logits.device)
        # per pixel [B, 1, H, W]: grad = p * scale + offset, then the per-class parts (one-hot, p log p, q)
        scale = torch.zeros_like(conf_f)
        offset = torch.zeros_like(conf_f)
        per_class = []                                   # (tensor [B, C, H, W], per-pixel factor)
        safe = None
        if w_ce:
            divisor = n_confident.clamp(min=1)
            c_ce = w_ce / divisor
            safe = torch.where(confident, labels.unsqueeze(1), 0).long()
            values[0] = -(log_p.gather(1, safe) * conf_f).sum() / divisor
            scale += c_ce * conf_f
        if w_kld:
            divisor = (n_confident * num_classes).clamp(min=1)
            c_kld = w_kld / divisor
            values[1] = -(log_p.sum(dim=1, keepdim=True) * conf_f).sum() / num_classes / divisor
            scale += c_kld * conf_f
            offset -= (c_kld / num_classes) * conf_f
        if w_ent:
            divisor = (n_ignored * num_classes).clamp(min=1)
            ign_f = 1.0 - conf_f
            p_log_p = p * log_p
            neg_h = p_log_p.sum(dim=1, keepdim=True)                # -H per pixel
            c_ent = w_ent / divisor
            values[2] = -(neg_h * ign_f).sum() / divisor
            scale += (c_ent * ign_f) * neg_h                        # -p (log p + H) = p (-H) - p log p
            per_class.append((p_log_p, -c_ent * ign_f))
        if w_cons:
            region_f = region.unsqueeze(1).to(logits.dtype)
            divisor = (region_f.sum() * num_classes).clamp(min=1)
            c_cons = w_cons / divisor
            values[3] = -((teacher_probs * log_p).sum(dim=1, keepdim=True) * region_f).sum() / divisor
            scale += (c_cons * region_f) * teacher_probs.sum(dim=1, keepdim=True)
            per_class.append((teacher_probs, -c_cons * region_f))
        grad = torch.addcmul(offset, p, scale)                       # one pass writes the [B, C, H, W] result
        for tensor, factor in per_class:
            grad.addcmul_(tensor, factor)
        if safe is not None:
            grad.scatter_add_(1, safe, -c_ce * conf_f)
        weight = torch.tensor(weights, dtype=logits.dtype, device=logits.device)
        # a non-finite logit anywhere makes the total non-finite, as the taped sum's `logits.sum() * 0` does
        total = (values * weight).sum() + logits.sum() * 0.0
        ctx.save_for_backward(grad)
        ctx.mark_non_differentiable(values)
        return total, values

    @staticmethod
    def backward(ctx, grad_total, _grad_values):
        (grad,) = ctx.saved_tensors
        return grad * grad_total, None, None, None, None


def fused_objective(logits: torch.Tensor, labels: torch.Tensor, teacher_probs: torch.Tensor | None,
                    region: torch.Tensor | None, ce: float, kld: float, entropy_weight: float,
                    consistency: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """ce * pseudo_ce + kld * kld_uniform(confident) + entropy_weight * entropy(ignored) + consistency *
    soft_ce(teacher_probs, region), with one hand-written backward (see `_FusedObjective`).
    Returns the weighted total (differentiable in `logits`) and the unweighted terms whose weight is non-zero
    (detached), keyed like the self-training history: ce, kld, entropy, consistency."""
    labels = labels.to(device=logits.device, dtype=torch.int64)
    if labels.shape != (logits.shape[0], *logits.shape[2:]):
        raise ValueError(f"labels shape {tuple(labels.shape)} does not match the logits {tuple(logits.shape)}")
    if teacher_probs is None or region is None:
        consistency = 0.0
    elif teacher_probs.shape != logits.shape:
        raise ValueError(f"target shape {tuple(teacher_probs.shape)} != logits shape {tuple(logits.shape)}")
    weights = (float(ce), float(kld), float(entropy_weight), float(consistency))
    total, values = _FusedObjective.apply(logits, labels, teacher_probs if consistency else None,
                                          region.to(logits.device) if consistency else None, weights)
    names = ("ce", "kld", "entropy", "consistency")
    return total, {name: values[k] for k, name in enumerate(names) if weights[k]}
