"""One self-training round: pseudo-labelled target images (+ HPLA copy-paste) -> student and EMA teacher.

Per iteration (reference §1.3-1.4): the student sees the strong view (weak crop + CCA) for every loss:
CE on pseudo-labels, KL-to-uniform on the pseudo-labelled pixels (RAR smoothing), entropy on the other
pixels (RAR sharpening), and soft cross-entropy to the EMA teacher's softmax on the weak view, on the pixels
without pseudo-label. The teacher is re-initialised from the student at the start of the round and follows
it by EMA (0.999) every iteration, buffers copied.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torchvision import tv_tensors

from hiast import bank as hpla
from hiast import checkpoint, distributed, engine, losses
from hiast.classes import IGNORE
from hiast.datasets import SegmentationDataset, resize_nearest
from hiast.model import freeze_bn_statistics, param_groups
from hiast.supervised import iteration_loader, lr_factor, segmentation_ce
from hiast.scenario import BankConfig, SelfTrainConfig
from hiast.transforms import cca, ms

log = logging.getLogger(__name__)


class PseudoLabelledTarget:
    """Target train images with their pseudo-labels, HPLA copy-paste, and the weak / strong views.

    `item(index, rng)` returns {"weak", "strong": uint8 [3, h, w], "label": uint8 [h, w], "pasted": bool
    [h, w], "index"}; all randomness comes from `rng` and torch's (seeded) generator.
    """

    def __init__(self, images: SegmentationDataset, pseudo_labels, bank=None, bank_cfg: BankConfig | None = None,
                 scale: float = 1.0, strong: bool = True, weak_view=None):
        if len(pseudo_labels) != len(images):
            raise ValueError(f"{len(pseudo_labels)} pseudo-labels for {len(images)} images")
        self.images, self.pseudo, self.bank = images, pseudo_labels, bank
        self.bank_cfg = bank_cfg or BankConfig(enabled=False)
        # the weak view is the target's training crop (MS by default, OMS for Oxford)
        self.weak_view = weak_view if weak_view is not None else ms(scale)
        self.strong_view = cca(scale) if strong else None

    def __len__(self) -> int:
        return len(self.images)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image = self.images.load_image(index)   # the target's own labels are never read
        labels = resize_nearest(self.pseudo.labels(index), *image.shape[:2])
        return image, labels

    def copy_paste(self, image: np.ndarray, labels: np.ndarray, rng: np.random.Generator):
        """HPLA: paste hard-class regions of donor images (reference §1.2); returns image, labels, mask."""
        pasted = np.zeros(labels.shape, dtype=bool)
        cfg, bank = self.bank_cfg, self.bank
        if bank is None or not cfg.enabled or len(bank.hard_classes) == 0 or rng.random() >= cfg.probability:
            return image, labels, pasted
        hard = [int(c) for c in bank.hard_classes]
        covered: set[int] = set()
        for _ in range(cfg.max_donors):
            cls = hpla.sample_class(rng, bank.sampling_prob)
            image_index, _pixels = bank.donors[cls]
            if len(image_index) == 0:
                continue
            donor = int(image_index[rng.integers(len(image_index))])
            (top, left, bottom, right), rgb, region_labels = bank.region(donor)
            if bottom > labels.shape[0] or right > labels.shape[1]:
                raise ValueError(f"bank region of image {donor} {top, left, bottom, right} exceeds the image "
                                 f"size {labels.shape}: the bank was built for another base size")
            classes = hard if cfg.paste == "all_hard" else [cls]
            window = (slice(top, bottom), slice(left, right))
            new_image, new_labels, mask = hpla.paste(image[window], labels[window], rgb, region_labels, classes)
            image, labels = image.copy(), labels.copy()
            image[window], labels[window] = new_image, new_labels
            pasted[window] |= np.asarray(mask, dtype=bool)
            covered |= set(np.unique(region_labels[np.isin(region_labels, classes)]).tolist())
            if len(covered) >= 0.5 * len(hard):
                break
        return image, labels, pasted

    def item(self, index: int, rng: np.random.Generator) -> dict:
        image, labels = self.load(index)
        image, labels, pasted = self.copy_paste(image, labels, rng)
        stacked = torch.from_numpy(np.stack([labels, pasted.astype(np.uint8)]))
        weak, masks = self.weak_view(tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)),
                                     tv_tensors.Mask(stacked))
        strong = self.strong_view(weak) if self.strong_view is not None else weak
        return {"weak": weak, "strong": strong, "label": masks[0], "pasted": masks[1].bool(), "index": index}


@torch.no_grad()
def ema_update(teacher: torch.nn.Module, student: torch.nn.Module, momentum: float) -> None:
    """teacher <- momentum * teacher + (1 - momentum) * student for parameters; buffers copied."""
    # one fused call per operation over all tensors (the same arithmetic as t.mul_(m).add_(s, alpha=1 - m))
    targets = list(teacher.parameters())
    torch._foreach_mul_(targets, momentum)
    torch._foreach_add_(targets, [s.detach() for s in student.parameters()], alpha=1 - momentum)
    for t, s in zip(teacher.buffers(), student.buffers()):
        t.copy_(s)


@torch.no_grad()
def teacher_softmax(teacher: torch.nn.Module, weak: torch.Tensor, size, device: torch.device) -> torch.Tensor:
    """The EMA teacher's class probabilities on the weak view (uint8 batch), upsampled to `size`."""
    return engine.upsample(teacher(engine.to_input(weak, device)), size).softmax(1)


def region_mask(labels: torch.Tensor, region: str) -> torch.Tensor:
    confident = labels != IGNORE
    return {"ignored": ~confident, "confident": confident, "all": torch.ones_like(confident)}[region]


@dataclass
class StepLosses:
    total: torch.Tensor
    terms: dict[str, float]


def student_losses(student_logits: torch.Tensor, labels: torch.Tensor, teacher_probs: torch.Tensor | None,
                   cfg: SelfTrainConfig) -> StepLosses:
    """The HIAST objective on logits already upsampled to the labels' size."""
    if cfg.fused_objective:    # no teacher (or region): fused_objective drops the consistency term itself
        region = region_mask(labels, cfg.consistency_region) if cfg.consistency_weight else None
        total, values = losses.fused_objective(student_logits, labels, teacher_probs, region, cfg.ce_weight,
                                               cfg.kld_weight, cfg.entropy_weight, cfg.consistency_weight)
        return StepLosses(total, {k: float(v) for k, v in values.items()})
    confident = labels != IGNORE
    terms = {}
    total = student_logits.sum() * 0.0
    log_p = torch.nn.functional.log_softmax(student_logits, dim=1)   # one for every term (and its backward)
    if cfg.ce_weight:
        terms["ce"] = losses.pseudo_ce(student_logits, labels, log_p)
        total = total + cfg.ce_weight * terms["ce"]
    if cfg.kld_weight:
        terms["kld"] = losses.kld_uniform(student_logits, confident, log_p)
        total = total + cfg.kld_weight * terms["kld"]
    if cfg.entropy_weight:
        terms["entropy"] = losses.entropy(student_logits, ~confident, log_p)
        total = total + cfg.entropy_weight * terms["entropy"]
    if cfg.consistency_weight and teacher_probs is not None:
        terms["consistency"] = losses.soft_ce(student_logits, teacher_probs,
                                              region_mask(labels, cfg.consistency_region), log_p)
        total = total + cfg.consistency_weight * terms["consistency"]
    return StepLosses(total, {k: float(v.detach()) for k, v in terms.items()})


def train_round(student: torch.nn.Module, data: PseudoLabelledTarget, cfg: SelfTrainConfig, device: torch.device,
                seed: int, state_path: Path | None = None, desc: str = "self-training",
                stop_after: int | None = None,
                context: distributed.Context = distributed.SINGLE,
                source=None) -> tuple[torch.nn.Module, dict]:
    """Self-train `student` in place; returns (teacher, history). Resumes from `state_path` if it holds a state.
    `source` (items of labelled, augmented source images, e.g. `supervised.Augmented`) is read only when
    `cfg.source_weight > 0`: one source batch per iteration, its CE added as the term "source".
    With several processes (`context`), DDP averages the student's gradients (each rank holds the same
    teacher), and rank 0 saves the states.

    `stop_after` (tests) simulates an interruption: save the state after that many iterations and raise
    `checkpoint.Interrupted`, as a signal would.
    """
    student.to(device).train()
    if cfg.bn_statistics != "student":     # "frozen", or "target" (re-estimated by the caller beforehand)
        freeze_bn_statistics(student)
    teacher = copy.deepcopy(student).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    optimizer = torch.optim.Adam(param_groups(student, cfg.lr, cfg.head_lr_mult), lr=cfg.lr,
                                 betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg.schedule, cfg.iterations))
    history: dict[str, list[float]] = {}
    start = 0
    saved = checkpoint.restore(state_path, student=student, teacher=teacher, optimizer=optimizer,
                               scheduler=scheduler)
    if saved is not None:
        history = {k: list(v) for k, v in saved["history"].items()}
        start = int(saved["iteration"])
        log.info("%s: resuming at iteration %d from %s", desc, start, state_path)

    def save(iteration: int) -> None:
        if context.is_main:
            checkpoint.snapshot(state_path, {"iteration": iteration, "history": history}, student=student,
                                teacher=teacher, optimizer=optimizer, scheduler=scheduler)
        distributed.barrier(context)

    if cfg.source_weight and source is None:
        raise ValueError("train.source_weight > 0 needs the labelled source images (--source-manifest)")
    net = distributed.wrap(student, context, device)
    loader = iteration_loader(data, cfg.batch_size, seed, start, cfg.iterations, cfg.workers, context,
                              low_priority=cfg.overlap)
    if cfg.source_weight:
        # its own seeded stream, so that the target batches are those of a run without it
        source_batches = iteration_loader(source, cfg.batch_size, seed + 7919, start, cfg.iterations, cfg.workers,
                                          context, low_priority=cfg.overlap)
        loader = (dict(batch, source=source_batch) for batch, source_batch in zip(loader, source_batches))
    last_good = start
    # cfg.overlap: the next batch loads in a background thread (and loader processes) at a lower CPU priority,
    # and the teacher's forward runs beside the student's (both need only the current weights), so the step's
    # compute hides them; same numbers.
    teacher_thread = None
    with contextlib.ExitStack() as cleanup:
        if cfg.overlap:
            loader = cleanup.enter_context(contextlib.closing(engine.prefetched(loader, nice=engine.LOADER_NICE)))
            if cfg.consistency_weight:
                teacher_thread = cleanup.enter_context(ThreadPoolExecutor(1, thread_name_prefix="hiast-teacher"))
        flag = cleanup.enter_context(checkpoint.StopFlag())
        for iteration, batch in zip(engine.progress(range(start, cfg.iterations), desc), loader):
            labels = batch["label"].to(device).long()
            teacher_probs = teacher_future = None
            if teacher_thread is not None:
                teacher_future = teacher_thread.submit(teacher_softmax, teacher, batch["weak"], labels.shape[-2:],
                                                       device)
            strong = engine.to_input(batch["strong"], device)
            logits = engine.upsample(net(strong), labels.shape[-2:])
            if teacher_future is not None:
                teacher_probs = teacher_future.result()
            elif cfg.consistency_weight:
                teacher_probs = teacher_softmax(teacher, batch["weak"], labels.shape[-2:], device)
            step = student_losses(logits, labels, teacher_probs, cfg)
            if cfg.source_weight:
                source_ce = segmentation_ce(net(engine.to_input(batch["source"]["image"], device)),
                                            batch["source"]["label"].to(device))
                step.terms["source"] = float(source_ce.detach())
                step.total = step.total + cfg.source_weight * source_ce
            if distributed.any_rank(not torch.isfinite(step.total), context, device):
                raise checkpoint.Diverged(f"{desc}: non-finite loss at iteration {iteration} "
                               f"(terms: {', '.join(f'{k}={v:.4g}' for k, v in step.terms.items())}); "
                               f"the last good state (iteration {last_good}) is kept in {state_path}")
            optimizer.zero_grad(set_to_none=True)
            step.total.backward()
            optimizer.step()
            scheduler.step()
            ema_update(teacher, student, cfg.ema_momentum)
            for key, value in {"loss": float(step.total.detach()), **step.terms}.items():
                history.setdefault(key, []).append(value)
            done = iteration + 1
            if cfg.log_every and done % cfg.log_every == 0:
                log.info("%s it %d/%d %s", desc, done, cfg.iterations,
                         " ".join(f"{k} {np.mean(v[-cfg.log_every:]):.4f}" for k, v in history.items()))
            if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < cfg.iterations:
                save(done)
                last_good = done
            stop = distributed.any_rank(flag.stop, context, device)
            if stop or (stop_after is not None and done >= stop_after and done < cfg.iterations):
                save(done)
                raise checkpoint.Interrupted(f"{desc}: stopped at iteration {done}; state saved to {state_path}")
    return teacher, history
