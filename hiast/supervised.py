"""Supervised training on labelled images: the source-only warm-up and the target "oracle"."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from hiast import engine
from hiast.classes import IGNORE
from hiast.model import param_groups

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SupervisedConfig:
    iterations: int = 2000
    batch_size: int = 4
    lr: float = 1e-4               # backbone; the head gets head_lr_mult x
    head_lr_mult: float = 10.0
    weight_decay: float = 5e-4
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: str = "cosine"       # "cosine" (eta_min = 0.001 lr) or "constant"
    workers: int = 0
    log_every: int = 100


def make_optimizer(model: torch.nn.Module, cfg) -> torch.optim.Optimizer:
    return torch.optim.Adam(param_groups(model, cfg.lr, cfg.head_lr_mult), lr=cfg.lr, betas=tuple(cfg.betas),
                            weight_decay=cfg.weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, cfg) -> torch.optim.lr_scheduler.LRScheduler:
    if cfg.schedule == "cosine":
        # eta_min is per group in the official code (0.001 x each group's lr): a lambda keeps the ratio.
        import math
        total = max(1, cfg.iterations)
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda it: 0.001 + 0.999 * 0.5 * (1 + math.cos(math.pi * min(it, total) / total)))
    if cfg.schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: 1.0)
    raise ValueError(f"schedule: expected 'cosine' or 'constant', got {cfg.schedule!r}")


def segmentation_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of logits (upsampled to the labels' size) against train ids, 255 ignored; 0 if empty."""
    logits = engine.upsample(logits, labels.shape[-2:])
    labels = labels.long()
    if not (labels != IGNORE).any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits, labels, ignore_index=IGNORE)


def train_supervised(model: torch.nn.Module, dataset, cfg: SupervisedConfig, device: torch.device,
                     seed: int = 0, desc: str = "supervised") -> list[float]:
    """Train `model` in place on (image, label) items of `dataset`; returns the loss per iteration."""
    model.to(device).train()
    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg)
    loader = engine.make_loader(dataset, cfg.batch_size, shuffle=True, seed=seed, workers=cfg.workers,
                                drop_last=len(dataset) >= cfg.batch_size)
    batches = engine.forever(loader)
    losses = []
    for iteration in engine.progress(range(cfg.iterations), desc):
        batch = next(batches)
        images = engine.to_input(batch["image"], device)
        loss = segmentation_ce(model(images), batch["label"].to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
        if cfg.log_every and (iteration + 1) % cfg.log_every == 0:
            recent = losses[-cfg.log_every:]
            log.info("%s it %d/%d loss %.4f", desc, iteration + 1, cfg.iterations, sum(recent) / len(recent))
    return losses
