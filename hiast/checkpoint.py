"""Full training state for resumption: saved atomically, loaded with weights_only=True.

A training job saves its state (models, optimiser, scheduler, iteration, histories) every few hundred
iterations and when it receives SIGTERM / SIGUSR2 (preemption, time limit); restarted, it resumes from
that state and ends with the same weights as an uninterrupted run (batches are iteration-addressed,
see hiast.sampling). These intermediate files are not Snakemake outputs, so a retried job still finds them.
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

import torch

from hiast.imageio import atomic_path

log = logging.getLogger(__name__)


class Interrupted(RuntimeError):
    """Training stopped on a signal after saving its state; rerun the same command to resume."""

    exit_code = 75  # EX_TEMPFAIL: the job is requeueable


class Diverged(RuntimeError):
    """A NaN or infinite loss: training stopped with the iteration and loss terms named; the last good
    state file is left as it was."""


class StopFlag:
    """Records SIGTERM / SIGUSR2 so the training loop can stop at the next iteration boundary."""

    SIGNALS = (signal.SIGTERM, signal.SIGUSR2)

    def __init__(self):
        self.signum: int | None = None
        self._previous = {}

    def __enter__(self) -> "StopFlag":
        for signum in self.SIGNALS:
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread: signals stay with their current handlers
                pass
        return self

    def _handle(self, signum, frame) -> None:
        log.warning("received %s: saving the training state at the next iteration",
                    signal.Signals(signum).name)
        self.signum = signum

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    @property
    def stop(self) -> bool:
        return self.signum is not None


def save_state(path: str | os.PathLike, state: dict) -> None:
    """Write a training-state dict (tensors, numbers, strings, lists, dicts) atomically."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_state(path: str | os.PathLike) -> dict | None:
    """The saved training state, or None when there is none; a corrupt file is reported and ignored."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a state we cannot read is not trusted: start over, but say so
        log.error("%s: unreadable training state (%s); starting from the beginning", path, err)
        return None


def restore(path: str | os.PathLike | None, **stateful) -> dict | None:
    """Load the saved state at `path` (if any) into each named object (`model=...`, `optimizer=...`) by its
    key; returns the whole saved dict (for the iteration and histories), or None when there is none."""
    saved = load_state(path) if path else None
    if saved is not None:
        for name, obj in stateful.items():
            obj.load_state_dict(saved[name])
    return saved


def snapshot(path: str | os.PathLike | None, extra: dict, **stateful) -> None:
    """Save each named object's state_dict plus `extra` (iteration, histories) atomically; no-op without path."""
    if path is not None:
        save_state(path, {**{name: obj.state_dict() for name, obj in stateful.items()}, **extra})
