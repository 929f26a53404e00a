"""Output-space adversarial warm-up (AdaptSegNet / AdvEnt, optional MinEnt): reference §1.0 and §1.5.

One fully-convolutional discriminator D looks at the segmentation output of a source or a target image and
tells them apart; the segmentation net learns to make target outputs look like source outputs while it is
supervised on the labelled source images. Each iteration:

1. generator step (D frozen: its parameters get requires_grad=False for the step):
   * source: ``source_weight * CE(upsample(logits_s), labels_s)`` (`segmentation_ce`, 255 ignored);
   * target: ``adversarial_weight * gan_loss(D(input_t), target_is_source=True)``: D's verdict on the target
     output is pushed towards "source";
   * optional MinEnt: ``target_entropy_weight * mean normalised entropy`` of the target softmax (per-pixel
     entropy / log C, averaged over all pixels of the whole target image);
   the source loss is back-propagated before the target forward (AdaptSegNet's order: only one image
   graph is alive at a time), the gradients add up, then one Adam step for the segmentation net.
2. discriminator step: ``discriminator_weight * (gan_loss(D(input_s), True) + gan_loss(D(input_t), False)) / 2``
   on the *detached* outputs of step 1, then one Adam step for D only.

Choices, where the official code (`adversarial_warmup_segmentor.py`, whose warm-up config is not shipped)
leaves room or differs:
* Labels: 1 = source, 0 = target. The official segmentor uses the opposite (0 = source); both GAN losses are
  symmetric in the label swap, so training is the same.
* D sees the output at the input image's resolution (logits upsampled bilinearly, as AdaptSegNet and the
  official code do). D halves the size five times (each 4x4 / stride 2 / padding 1 conv maps n to n // 2),
  so it needs inputs of at least 32x32: on 1/8-resolution logits of a small crop it would have nothing left.
  Upsampling uses `engine.upsample` (align_corners=False, as everywhere in this project; the official code
  uses align_corners=True here).
* D input "softmax" (AdaptSegNet) or "entropy" (AdvEnt): the weighted self-information map
  ``-p_c log p_c / log C`` per class, computed from log_softmax (no log(p + eps) clamp). Its sum over classes
  is the normalised entropy, in [0, 1].
* GAN loss "lsgan" (MSE of the raw D output against 1/0, the official default) or "bce" (BCE with logits).
* D computes in fp32 (`discriminator_precision`, default and official) or under bfloat16 autocast ("bf16"); its
  scores go to the loss in float32 either way, and its weights and Adam state stay float32.
* Optimisers: the segmentation net uses Adam on `param_groups(model, lr, head_lr_mult)` (trunk at lr, ASPP at
  lr x head_lr_mult), betas (0.9, 0.999), weight decay `stage.weight_decay`; D uses Adam at
  `stage.discriminator_lr`, betas (0.9, 0.99), no weight decay (AdaptSegNet). Both learning rates are
  constant: `AdversarialStage` has no schedule option (AdaptSegNet decays both polynomially).
* D is initialised from a random-number stream seeded by `seed` that leaves the global one untouched, and the
  two streams of batches are iteration-addressed (`hiast.sampling`) with seeds `seed` (source) and `seed + 1`
  (target), so a run is deterministic given `seed` (on CPU; on GPU as far as cuDNN is) and resumable.
* Histories hold the *unweighted* terms per iteration: source CE ("seg"), generator adversarial loss ("adv"),
  discriminator loss, i.e. the mean of its two halves ("d_loss"), and the mean normalised target entropy
  ("entropy", logged even when MinEnt is off).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from hiast import checkpoint, engine
from hiast.model import param_groups
from hiast.supervised import iteration_loader, segmentation_ce

log = logging.getLogger(__name__)

DISCRIMINATOR_INPUTS = ("softmax", "entropy")
GAN_LOSSES = ("bce", "lsgan")
DISCRIMINATOR_PRECISIONS = ("fp32", "bf16")
SOURCE_LABEL, TARGET_LABEL = 1.0, 0.0
# Each of D's five 4x4/stride-2/padding-1 convs maps a side n to n // 2.
DISCRIMINATOR_STRIDE = 32
HISTORY_KEYS = ("seg", "adv", "d_loss", "entropy")


class Discriminator(nn.Module):
    """Fully-convolutional output-space discriminator (AdaptSegNet's FCDiscriminator).

    Four 4x4 stride-2 convs (ndf, 2ndf, 4ndf, 8ndf channels, padding 1), each followed by LeakyReLU(0.2),
    then a 4x4 stride-2 conv to one channel (`classifier`): [B, C, H, W] -> raw scores [B, 1, H//32, W//32].
    Parameter names (conv1..conv4, classifier) follow the official module.
    """

    def __init__(self, num_classes: int, ndf: int = 64):
        super().__init__()
        if num_classes < 1 or ndf < 1:
            raise ValueError(f"Discriminator: num_classes and ndf must be >= 1, got {num_classes}, {ndf}")
        self.num_classes = num_classes
        self.conv1 = nn.Conv2d(num_classes, ndf, kernel_size=4, stride=2, padding=1)
        self.conv2 = nn.Conv2d(ndf, ndf * 2, kernel_size=4, stride=2, padding=1)
        self.conv3 = nn.Conv2d(ndf * 2, ndf * 4, kernel_size=4, stride=2, padding=1)
        self.conv4 = nn.Conv2d(ndf * 4, ndf * 8, kernel_size=4, stride=2, padding=1)
        self.classifier = nn.Conv2d(ndf * 8, 1, kernel_size=4, stride=2, padding=1)
        self.leaky_relu = nn.LeakyReLU(negative_slope=0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.num_classes:
            raise ValueError(f"Discriminator: expected [B, {self.num_classes}, H, W], got {list(x.shape)}")
        if min(x.shape[-2:]) < DISCRIMINATOR_STRIDE:
            raise ValueError(f"Discriminator: input {list(x.shape[-2:])} is smaller than "
                             f"{DISCRIMINATOR_STRIDE}x{DISCRIMINATOR_STRIDE}; feed the output upsampled to the "
                             f"image size (discriminator_input)")
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            x = self.leaky_relu(conv(x))
        return self.classifier(x)


def build_discriminator(num_classes: int, ndf: int = 64, seed: int | None = None) -> Discriminator:
    """A Discriminator; with `seed`, initialised from a private stream (the global RNG is left as it was)."""
    if seed is None:
        return Discriminator(num_classes, ndf)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Discriminator(num_classes, ndf)


# ------------------------------------------------------------------------------------------------ maps


def self_information(logits: torch.Tensor) -> torch.Tensor:
    """AdvEnt's weighted self-information map ``-p_c log p_c / log C`` [B, C, H, W] from logits [B, C, H, W].

    Summed over classes it is the per-pixel entropy normalised to [0, 1] (1 for a uniform prediction)."""
    num_classes = logits.shape[1]
    if num_classes < 2:
        raise ValueError(f"self_information: needs at least 2 classes, got {num_classes}")
    log_p = F.log_softmax(logits, dim=1)
    return -(log_p.exp() * log_p) / math.log(num_classes)


def mean_entropy(logits: torch.Tensor) -> torch.Tensor:
    """MinEnt: the per-pixel entropy normalised by log C, averaged over batch and pixels (a scalar)."""
    return self_information(logits).sum(1).mean()


def discriminator_input(logits: torch.Tensor, size=None, kind: str = "softmax") -> torch.Tensor:
    """What D sees: `logits` upsampled bilinearly to `size` (None: as they are), then the softmax
    ("softmax", AdaptSegNet) or the self-information map ("entropy", AdvEnt)."""
    if kind not in DISCRIMINATOR_INPUTS:
        raise ValueError(f"discriminator input: expected one of {DISCRIMINATOR_INPUTS}, got {kind!r}")
    if size is not None and tuple(size) != tuple(logits.shape[-2:]):
        logits = engine.upsample(logits, size)
    return logits.softmax(1) if kind == "softmax" else self_information(logits)


def judge(discriminator: nn.Module, x: torch.Tensor, precision: str = "fp32") -> torch.Tensor:
    """D's raw scores of `x` as float32: in fp32, or computed under bfloat16 autocast ("bf16")."""
    if precision not in DISCRIMINATOR_PRECISIONS:
        raise ValueError(f"discriminator_precision: expected one of {DISCRIMINATOR_PRECISIONS}, got {precision!r}")
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        scores = discriminator(x)
    return scores.float()


def gan_loss(pred: torch.Tensor, target_is_source: bool, kind: str = "lsgan") -> torch.Tensor:
    """GAN loss of raw D scores `pred` against an all-1 (source) or all-0 (target) map.

    "lsgan": mean squared error (the official default); "bce": binary cross-entropy with logits."""
    target = torch.full_like(pred, SOURCE_LABEL if target_is_source else TARGET_LABEL)
    if kind == "lsgan":
        return F.mse_loss(pred, target)
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(pred, target)
    raise ValueError(f"gan loss: expected one of {GAN_LOSSES}, got {kind!r}")


# ----------------------------------------------------------------------------------------------- steps


class GeneratorOutput(NamedTuple):
    seg: float                    # source CE (unweighted)
    adv: float                    # generator adversarial loss (unweighted)
    entropy: float                # mean normalised target entropy (unweighted)
    source_input: torch.Tensor    # detached D input of the source output, for the discriminator step
    target_input: torch.Tensor    # detached D input of the target output


def _precision(stage) -> str:
    return getattr(stage, "discriminator_precision", "fp32")


def _set_requires_grad(module: nn.Module, flag: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(flag)


def generator_step(model: nn.Module, discriminator: nn.Module, optimizer: torch.optim.Optimizer,
                   source_images: torch.Tensor, source_labels: torch.Tensor, target_images: torch.Tensor,
                   stage) -> GeneratorOutput:
    """One update of the segmentation net: weighted source CE + adversarial (+ MinEnt) loss on the target.

    Images are normalised float [B, 3, H, W] on the model's device, labels [B, H, W] train ids. D is frozen
    for the step (its requires_grad flags are restored afterwards; it gets no gradients)."""
    kind = stage.discriminator_input
    optimizer.zero_grad(set_to_none=True)
    flags = [p.requires_grad for p in discriminator.parameters()]
    _set_requires_grad(discriminator, False)
    try:
        # source: supervised loss, back-propagated at once so that its graph is freed before the target pass
        source_logits = engine.upsample(model(source_images), source_images.shape[-2:])
        seg = segmentation_ce(source_logits, source_labels)
        (stage.source_weight * seg).backward()
        source_input = discriminator_input(source_logits.detach(), None, kind)
        del source_logits

        # target: fool D (target output classified as source), optionally minimise the entropy
        target_logits = engine.upsample(model(target_images), target_images.shape[-2:])
        target_input = discriminator_input(target_logits, None, kind)
        adv = gan_loss(judge(discriminator, target_input, _precision(stage)), target_is_source=True,
                       kind=stage.gan_loss)
        entropy = (target_input.sum(1).mean() if kind == "entropy" else mean_entropy(target_logits))
        loss = stage.adversarial_weight * adv
        if stage.target_entropy_weight > 0:
            loss = loss + stage.target_entropy_weight * entropy
        loss.backward()
        optimizer.step()
    finally:
        for p, flag in zip(discriminator.parameters(), flags):
            p.requires_grad_(flag)
    return GeneratorOutput(float(seg.detach()), float(adv.detach()), float(entropy.detach()),
                           source_input, target_input.detach())


def discriminator_step(discriminator: nn.Module, optimizer: torch.optim.Optimizer, source_input: torch.Tensor,
                       target_input: torch.Tensor, stage) -> float:
    """One update of D on detached D inputs: source labelled 1, target 0, each half of the loss, times
    `stage.discriminator_weight`. Returns the unweighted loss (mean of the two halves)."""
    optimizer.zero_grad(set_to_none=True)
    precision = _precision(stage)
    source_loss = gan_loss(judge(discriminator, source_input.detach(), precision), target_is_source=True,
                           kind=stage.gan_loss)
    target_loss = gan_loss(judge(discriminator, target_input.detach(), precision), target_is_source=False,
                           kind=stage.gan_loss)
    loss = (source_loss + target_loss) / 2
    (stage.discriminator_weight * loss).backward()
    optimizer.step()
    return float(loss.detach())


def make_optimizers(model: nn.Module, discriminator: nn.Module, stage):
    """(segmentation Adam, discriminator Adam) with the stage's constant learning rates."""
    seg_opt = torch.optim.Adam(param_groups(model, stage.lr, stage.head_lr_mult), lr=stage.lr,
                               betas=(0.9, 0.999), weight_decay=stage.weight_decay)
    d_opt = torch.optim.Adam(discriminator.parameters(), lr=stage.discriminator_lr, betas=(0.9, 0.99))
    return seg_opt, d_opt


# --------------------------------------------------------------------------------------------- training


class _Indexed:
    """A plain dataset as an `item(index, rng)` source: its transforms draw from torch's generator, which
    SeededItems seeds per sample, so every batch is a function of (seed, iteration) and a resumed run draws
    what an uninterrupted one would."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def item(self, index: int, rng) -> dict:
        return self.dataset[index]


def train_adversarial(model: nn.Module, source_dataset, target_dataset, stage, device: torch.device,
                      seed: int = 0, desc: str = "adversarial", discriminator: nn.Module | None = None,
                      state_path: Path | None = None) -> dict[str, list[float]]:
    """Adversarially adapt `model` in place for `stage.iterations` iterations (see the module docstring).

    Datasets yield dicts with "image" uint8 [3, H, W]; source items also "label" [H, W] (target labels are
    not read). `discriminator` (default: a fresh `build_discriminator(num_classes, seed=seed)`) is trained in
    place, so a caller that passes one keeps it. With `state_path`, the whole state (both networks, both
    optimisers, histories) is saved every `stage.checkpoint_every` iterations and on SIGTERM/SIGUSR2, and a
    rerun resumes from it to the same weights. Returns {"seg", "adv", "d_loss", "entropy"}: one float per
    iteration each."""
    for name, allowed in (("discriminator_input", DISCRIMINATOR_INPUTS), ("gan_loss", GAN_LOSSES)):
        if getattr(stage, name) not in allowed:
            raise ValueError(f"{name}: expected one of {allowed}, got {getattr(stage, name)!r}")
    engine.check_precision(_precision(stage), device, "warmup.adversarial.discriminator_precision")
    model.to(device).train()
    if discriminator is None:
        num_classes = getattr(model, "num_classes", None)
        if num_classes is None:
            raise ValueError("train_adversarial: pass a discriminator for a model without `num_classes`")
        discriminator = build_discriminator(num_classes, seed=seed)
    discriminator.to(device).train()
    seg_opt, d_opt = make_optimizers(model, discriminator, stage)

    history: dict[str, list[float]] = {key: [] for key in HISTORY_KEYS}
    start = 0
    stateful = {"model": model, "discriminator": discriminator, "seg_optimizer": seg_opt, "d_optimizer": d_opt}
    saved = checkpoint.restore(state_path, **stateful)
    if saved is not None:
        history, start = {k: list(v) for k, v in saved["history"].items()}, int(saved["iteration"])
        log.info("%s: resuming at iteration %d from %s", desc, start, state_path)

    def save(iteration: int) -> None:
        checkpoint.snapshot(state_path, {"iteration": iteration, "history": history}, **stateful)

    workers = getattr(stage, "workers", 0)
    source_batches = iteration_loader(_Indexed(source_dataset), stage.batch_size, seed, start, stage.iterations,
                                      workers)
    target_batches = iteration_loader(_Indexed(target_dataset), stage.batch_size, seed + 1, start,
                                      stage.iterations, workers)
    every = getattr(stage, "checkpoint_every", 0)
    with checkpoint.StopFlag() as flag:
        for iteration, source, target in zip(engine.progress(range(start, stage.iterations), desc),
                                             source_batches, target_batches):
            out = generator_step(model, discriminator, seg_opt,
                                 engine.to_input(source["image"], device), source["label"].to(device),
                                 engine.to_input(target["image"], device), stage)
            d_loss = discriminator_step(discriminator, d_opt, out.source_input, out.target_input, stage)
            values = {"seg": out.seg, "adv": out.adv, "d_loss": d_loss, "entropy": out.entropy}
            if not all(math.isfinite(v) for v in values.values()):
                terms = ", ".join(f"{k}={v}" for k, v in values.items())
                raise checkpoint.Diverged(f"{desc}: non-finite loss at iteration {iteration} ({terms}); "
                                          f"the last good state is kept in {state_path}")
            for key, value in values.items():
                history[key].append(value)
            done = iteration + 1
            if stage.log_every and done % stage.log_every == 0:
                means = {k: sum(v[-stage.log_every:]) / len(v[-stage.log_every:]) for k, v in history.items()}
                log.info("%s it %d/%d seg %.4f adv %.4f d_loss %.4f entropy %.4f", desc, done,
                         stage.iterations, means["seg"], means["adv"], means["d_loss"], means["entropy"])
            if every and done % every == 0 and done < stage.iterations:
                save(done)
            if flag.stop and done < stage.iterations:
                save(done)
                raise checkpoint.Interrupted(f"{desc}: stopped at iteration {done}; state saved to {state_path}")
    return history
