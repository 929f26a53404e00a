"""Fail early, with the numbers, when a stage's outputs will not fit on the disk.

A stage estimates the bytes it is about to write (an upper bound: uncompressed sizes, plus the temporary
copy that is renamed at the end) and checks the free space of the folder it writes to before any work.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

GIB = 1 << 30


class DiskSpaceError(OSError):
    """Not enough free space for a stage's outputs."""


def _existing_parent(path: Path) -> Path:
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def require_free_space(output: str | os.PathLike, needed_bytes: int, what: str) -> None:
    """Raise DiskSpaceError naming `what`, the folder, the bytes needed and free, when `output`'s folder has
    less than `needed_bytes` free. HIAST_SKIP_DISK_CHECK=1 turns the check off (a filesystem that reports
    free space wrongly)."""
    if os.environ.get("HIAST_SKIP_DISK_CHECK") == "1":
        return
    folder = _existing_parent(Path(output).parent)
    free = shutil.disk_usage(folder).free
    if free < needed_bytes:
        raise DiskSpaceError(f"{what}: needs about {needed_bytes / GIB:.2f} GiB in {folder} "
                             f"({needed_bytes:,} bytes, estimated before starting) but only {free / GIB:.2f} GiB "
                             f"({free:,} bytes) is free; free some space or write results elsewhere "
                             f"(HIAST_SKIP_DISK_CHECK=1 skips this check)")


def pseudo_label_bytes(images: int, height: int, width: int, num_classes: int) -> int:
    """pseudo_labels.h5, uncompressed: labels (uint8) + thresholds (float32) + pixel counts (int64)."""
    return images * (height * width + num_classes * 12) + (1 << 20)


def model_output_bytes(images: int, height: int, width: int) -> int:
    """model_outputs_<k>.h5 of a shard: conf float32 + pred uint8 per pixel."""
    return images * height * width * 5 + (1 << 20)


def training_bytes(model: torch.nn.Module, copies: int) -> int:
    """`copies` files of the model's size (weights, EMA teacher, resumable state with Adam's two moments)."""
    size = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    return copies * size + (1 << 20)
