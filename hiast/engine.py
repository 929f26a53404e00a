"""Shared training/inference plumbing: seeding, loaders, resolution handling, evaluation."""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import queue
import random
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from hiast.metrics import confusion_matrix
from hiast.transforms import normalize

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seed_worker(worker_id: int) -> None:
    """DataLoader worker init: numpy and random follow torch's per-worker seed (the official code forgot)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def device_of(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def check_precision(precision: str, device: torch.device, key: str = "model.precision") -> None:
    """Warn when bf16 autocast will be emulated (slower than fp32): CPUs without AVX512-BF16/AMX, old GPUs.
    `key`: the scenario option that asked for bf16, named in the warning."""
    if precision != "bf16":
        return
    if device.type == "cpu":
        native = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    else:
        native = device.type != "cuda" or torch.cuda.is_bf16_supported(including_emulation=False)
    if not native:
        log.warning("%s: bf16 has no native support on %s here and will be slower than fp32; "
                    "set %s: fp32 in the scenario", key, device, key)


def make_loader(dataset, batch_size: int, shuffle: bool, seed: int, workers: int = 0,
                drop_last: bool = False) -> torch.utils.data.DataLoader:
    generator = torch.Generator()
    generator.manual_seed(seed)
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, num_workers=workers, drop_last=drop_last,
        worker_init_fn=seed_worker, generator=generator, persistent_workers=workers > 0,
        collate_fn=collate)


def collate(items: list[dict]) -> dict:
    out = {}
    for key in items[0]:
        values = [item[key] for item in items]
        if isinstance(values[0], torch.Tensor):
            out[key] = torch.stack([v.as_subclass(torch.Tensor) for v in values])
        elif isinstance(values[0], (int, np.integer)):
            out[key] = torch.tensor(values)
        else:
            out[key] = values
    return out


def forever(loader) -> Iterator[dict]:
    """Iterate a loader endlessly (a new shuffled epoch each pass)."""
    while True:
        yield from loader


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


LOADER_NICE = 19     # loading yields a core to the training and teacher threads whenever they want it


def lower_priority(increment: int = LOADER_NICE) -> bool:
    """Lower the calling thread's CPU scheduling priority by `increment` (a nice value; no privilege needed).
    Linux only, where a priority is per thread; elsewhere nothing is changed. True if it was lowered.

    Why: with `train.overlap` three things want the CPU at once (the student's step, the teacher's forward,
    loading). Loading has the most slack (it runs two batches ahead); at equal priority the scheduler shares
    a core among all three and the student's step, which every iteration waits for, gets two thirds of one."""
    if sys.platform != "linux" or increment <= 0:
        return False
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + increment))
    except OSError:
        return False
    return True


def spare_core() -> bool:
    """True when this process's torch threads leave at least one of the CPUs it may run on free: a helper
    thread (decoding ahead) then runs beside the compute instead of taking CPU time from it."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:            # not Linux
        cpus = os.cpu_count() or 1
    return torch.get_num_threads() < cpus


def lower_worker_priority(worker_id: int) -> None:
    """DataLoader `worker_init_fn`: loader processes run at `LOADER_NICE`."""
    lower_priority(LOADER_NICE)


def prefetched(iterable, depth: int = 2, nice: int = 0) -> Iterator:
    """Iterate `iterable` in a background thread, up to `depth` items ahead, so that loading the next batch
    overlaps the current step's compute. Items come in order, and an exception of the iterable is raised here.
    Closing the generator (or leaving the loop early) stops the thread. `nice` > 0 lowers the thread's
    priority (`lower_priority`)."""
    if depth < 1:
        raise ValueError(f"prefetch depth: expected >= 1, got {depth}")
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        lower_priority(nice)
        try:
            for item in iterable:
                if not put(item):
                    return
            put(end)
        except BaseException as error:   # handed to the consumer, which re-raises it
            put(_Failure(error))

    thread = threading.Thread(target=produce, name="hiast-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            if item is end:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        stop.set()
        thread.join()


@contextlib.contextmanager
def torch_threads(count: int):
    """torch's intra-op thread count set to `count` inside the block, and back to what it was after."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def mapped_in_streams(fn: Callable, items: Iterable, streams: int, lookahead: int = 2) -> Iterator:
    """fn(item) for each item, in the items' order, computed by `streams` threads side by side, each running
    torch's operators on one thread (torch is set to one intra-op thread for the generator's life). Each
    result is therefore the one-thread result, bit for bit, whatever `streams` is. `items` is consumed in
    the caller's thread, at most `lookahead * streams` ahead of what was yielded; an exception of `fn` is
    raised here, at its item. Closing the generator early waits for the calls in flight."""
    if streams < 1 or lookahead < 1:
        raise ValueError(f"streams and lookahead: expected >= 1, got {streams} and {lookahead}")
    with torch_threads(1), ThreadPoolExecutor(streams, thread_name_prefix="hiast-stream") as pool:
        pending: collections.deque = collections.deque()
        try:
            for item in items:
                pending.append(pool.submit(fn, item))
                if len(pending) >= lookahead * streams:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def to_input(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 [B, 3, H, W] -> normalised float on `device`."""
    return normalize()(images.to(device, non_blocking=True))


def upsample(logits: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)


@torch.no_grad()
def predict(model: torch.nn.Module, images: torch.Tensor, input_size=None, out_size=None,
            flip: bool = False, scales=(1.0,)) -> torch.Tensor:
    """Softmax probabilities [B, C, *out_size] for normalised images, averaged over scales and flips.

    Images are resized to `input_size` x scale (the official evaluation resizes to 768x1536) and the
    logits upsampled bilinearly to `out_size` (default: the images' own size).
    """
    out_size = tuple(out_size or images.shape[-2:])
    base = tuple(input_size or images.shape[-2:])
    total = None
    for scale in scales:
        size = (max(8, round(base[0] * scale)), max(8, round(base[1] * scale)))
        resized = images if size == tuple(images.shape[-2:]) else F.interpolate(
            images, size=size, mode="bilinear", align_corners=False)
        views = [resized, resized.flip(-1)] if flip else [resized]
        for k, view in enumerate(views):
            probs = upsample(model(view), out_size).softmax(1)
            probs = probs.flip(-1) if k else probs
            total = probs if total is None else total + probs
    views = len(scales) * (2 if flip else 1)
    return total if views == 1 else total / views   # x / 1 == x: one view skips a pass over the probabilities


@torch.no_grad()
def evaluate(model: torch.nn.Module, dataset, num_classes: int, device: torch.device, batch_size: int = 4,
             input_size=None, flip: bool = False, scales=(1.0,), workers: int = 0,
             on_batch=None) -> torch.Tensor:
    """The confusion matrix [C, C] of `model` over the whole `dataset` (labels at full resolution).

    `on_batch(batch, predictions)` is called for each batch (e.g. to save colour masks).
    """
    was_training = model.training
    model.eval()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    loader = make_loader(dataset, batch_size, shuffle=False, seed=0, workers=workers)
    for batch in progress(loader, "evaluate"):
        labels = batch["label"]
        probs = predict(model, to_input(batch["image"], device), input_size, labels.shape[-2:], flip, scales)
        # max's indices are argmax's (the first maximum, NaN counting as one) at a third of its time on a CPU
        predictions = probs.max(1).indices.cpu()
        confusion += confusion_matrix(labels, predictions, num_classes)
        if on_batch is not None:
            on_batch(batch, predictions)
    model.train(was_training)
    return confusion


class _LineWriter:
    """A file-like for tqdm in log files: each refresh becomes one whole line (no carriage returns)."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> None:
        text = text.replace("\r", "").strip()
        if text:
            self.stream.write(text + "\n")

    def flush(self) -> None:
        self.stream.flush()


def progress(iterable, desc: str, total: int | None = None, **kwargs):
    """tqdm with a rate and time left; in a log file (not a terminal) it prints whole lines now and then."""
    from tqdm import tqdm
    interactive = sys.stderr.isatty()
    return tqdm(iterable, desc=desc, total=total, dynamic_ncols=interactive, ascii=not interactive,
                mininterval=0.5 if interactive else 30.0, disable=os.environ.get("HIAST_NO_PROGRESS") == "1",
                file=sys.stderr if interactive else _LineWriter(sys.stderr), **kwargs)


@torch.no_grad()
def recalibrate_bn(model: torch.nn.Module, batches, device: torch.device) -> int:
    """AdaBN (Li et al., 2016): re-estimate every BatchNorm's running mean and variance as the plain average
    over `batches` (uint8 image tensors [B, 3, H, W]) of the batch statistics in train mode; weights are
    untouched. Returns the number of images seen; the model is left in eval mode."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None           # cumulative moving average: every batch weighs the same
    model.to(device).train()
    seen = 0
    try:
        for images in batches:
            model(to_input(images, device))
            seen += len(images)
    finally:
        for m, momentum in zip(norms, saved):
            m.momentum = momentum
        model.eval()
    if norms and not seen:
        raise ValueError("recalibrate_bn: no images to estimate the BatchNorm statistics from")
    return seen
