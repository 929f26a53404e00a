"""Supervised training on labelled images: the source-only warm-up and the target "oracle"."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from hiast import checkpoint, distributed, engine
from hiast.classes import IGNORE
from hiast.model import param_groups
from hiast.sampling import IterationBatchSampler, SeededItems
from hiast.scenario import SupervisedStage

log = logging.getLogger(__name__)


def make_optimizer(model: torch.nn.Module, cfg) -> torch.optim.Optimizer:
    return torch.optim.Adam(param_groups(model, cfg.lr, cfg.head_lr_mult), lr=cfg.lr, betas=tuple(cfg.betas),
                            weight_decay=cfg.weight_decay)


def lr_factor(schedule: str, total: int):
    """The schedule as a factor of each group's base lr (cosine: eta_min = 0.001 x the group's lr)."""
    if schedule == "cosine":
        total = max(1, total)
        return lambda it: 0.001 + 0.999 * 0.5 * (1 + math.cos(math.pi * min(it, total) / total))
    if schedule == "constant":
        return lambda it: 1.0
    raise ValueError(f"schedule: expected 'cosine' or 'constant', got {schedule!r}")


def make_scheduler(optimizer: torch.optim.Optimizer, cfg) -> torch.optim.lr_scheduler.LRScheduler:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg.schedule, cfg.iterations))


def segmentation_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of logits (upsampled to the labels' size) against train ids, 255 ignored; 0 if empty."""
    logits = engine.upsample(logits, labels.shape[-2:])
    labels = labels.long()
    if not (labels != IGNORE).any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits, labels, ignore_index=IGNORE)


class Augmented:
    """(image, label) items of a SegmentationDataset through a joint transform, for SeededItems."""

    def __init__(self, dataset, transform):
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def item(self, index: int, rng: np.random.Generator) -> dict:
        item = self.dataset[index]
        image, label = self.transform(item["image"], item["label"])
        return {"image": image, "label": label, "index": index}


def iteration_loader(data, batch_size: int, seed: int, start: int, stop: int, workers: int = 0,
                     context: distributed.Context = distributed.SINGLE, low_priority: bool = False):
    """Batches start..stop-1 of an iteration-addressed stream over `data` (an object with `item`); with
    several processes, this rank's share of each global batch. `low_priority`: the loader processes run at
    a lower CPU priority (`engine.lower_priority`)."""
    sampler = IterationBatchSampler(len(data), batch_size, seed, start=start, stop=stop, rank=context.rank,
                                    world_size=context.world_size)
    return torch.utils.data.DataLoader(SeededItems(data), batch_sampler=sampler, num_workers=workers,
                                       collate_fn=engine.collate,
                                       worker_init_fn=engine.lower_worker_priority if low_priority and workers else None)


def train_supervised(model: torch.nn.Module, dataset, transform, cfg: SupervisedStage, device: torch.device,
                     seed: int = 0, desc: str = "supervised", state_path: Path | None = None,
                     keep_final_state: bool = False,
                     context: distributed.Context = distributed.SINGLE) -> list[float]:
    """Train `model` in place on (image, label) items of `dataset` augmented by `transform`; resumable from
    `state_path`. `keep_final_state` saves the state once more at the end, so that a later stage of the same
    job (the adversarial warm-up) that is interrupted does not make a rerun repeat this one. Returns the loss
    per iteration. With several processes (`context`), DDP averages the gradients, rank 0 saves the states.
    """
    model.to(device).train()
    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg)
    losses: list[float] = []
    start = 0
    saved = checkpoint.restore(state_path, model=model, optimizer=optimizer, scheduler=scheduler)
    if saved is not None:
        losses, start = list(saved["losses"]), int(saved["iteration"])
        log.info("%s: resuming at iteration %d from %s", desc, start, state_path)

    def save(iteration: int) -> None:
        if context.is_main:
            checkpoint.snapshot(state_path, {"iteration": iteration, "losses": losses}, model=model,
                                optimizer=optimizer, scheduler=scheduler)
        distributed.barrier(context)

    net = distributed.wrap(model, context, device)
    loader = iteration_loader(Augmented(dataset, transform), cfg.batch_size, seed, start, cfg.iterations,
                              cfg.workers, context)
    with checkpoint.StopFlag() as flag:
        for iteration, batch in zip(engine.progress(range(start, cfg.iterations), desc), loader):
            images = engine.to_input(batch["image"], device)
            loss = segmentation_ce(net(images), batch["label"].to(device))
            if distributed.any_rank(not torch.isfinite(loss), context, device):
                raise checkpoint.Diverged(f"{desc}: non-finite loss at iteration {iteration} (ce={float(loss.detach())}); "
                                          f"the last good state is kept in {state_path}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(float(loss.detach()))
            done = iteration + 1
            if cfg.log_every and done % cfg.log_every == 0:
                log.info("%s it %d/%d loss %.4f", desc, done, cfg.iterations, np.mean(losses[-cfg.log_every:]))
            if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < cfg.iterations:
                save(done)
            if distributed.any_rank(flag.stop, context, device) and done < cfg.iterations:
                save(done)
                raise checkpoint.Interrupted(f"{desc}: stopped at iteration {done}; state saved to {state_path}")
    if keep_final_state and start < cfg.iterations:
        save(cfg.iterations)
    return losses
