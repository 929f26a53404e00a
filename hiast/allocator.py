"""glibc malloc settings for a process that allocates and frees the same large CPU tensors every iteration.

By default glibc serves a block of more than a few MiB with a fresh mmap and gives it back to the kernel when it
is freed (or trims the heap top), so the next iteration's tensor of the same size faults in and zeroes its pages
again: on the 2-core machine a 10 MB [4, 19, 128, 256] float tensor cost ~4 ms of page faults on every
elementwise operator that created one (BENCHMARKS.md, "A self-training iteration"). Raising the mmap threshold
to glibc's maximum and the trim threshold far above keeps freed blocks in the heap for reuse. Execution only:
no number changes; the process keeps its peak memory instead of returning it.

`HIAST_MALLOC` chooses the settings:
- unset, empty or `reuse` (the default): the two thresholds above. Blocks over 32 MiB (glibc's largest mmap
  threshold), and blocks a thread's own arena cannot hold, are still mmapped afresh each time.
- `heap`: also no mmap at all and one arena for every thread, so blocks of any size, freed by any thread, are
  reused. For CPU runs at the real datasets' sizes, whose activations are hundreds of MB: the ResNet-101
  labeller's forward at 768x1536 spent a third of its CPU time in the kernel faulting pages in
  (BENCHMARKS.md, "Large tensors on a CPU"). It costs peak memory (freed blocks fragment the one heap).
- `default`: glibc's own settings.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys

# glibc's mallopt parameter numbers (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -3, -4, -8
MMAP_THRESHOLD = 32 * 1024 * 1024                   # the largest glibc accepts on 64-bit
TRIM_THRESHOLD = 1 << 30
ENV = "HIAST_MALLOC"
MODES = ("reuse", "heap", "default")


def malloc_mode(value: str | None) -> str:
    """The mode that a value of HIAST_MALLOC names (unset or empty: `reuse`); ValueError for any other."""
    mode = (value or "").strip().lower() or "reuse"
    if mode not in MODES:
        raise ValueError(f"environment variable {ENV}={value!r}: expected one of {', '.join(MODES)} "
                         f"(unset: reuse)")
    return mode


def settings(mode: str) -> list[tuple[int, int]]:
    """The (mallopt parameter, value) pairs that `mode` applies, in order."""
    if mode == "default":
        return []
    pairs = [(M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, TRIM_THRESHOLD)]
    if mode == "heap":
        pairs += [(M_MMAP_MAX, 0), (M_ARENA_MAX, 1)]
    return pairs


def keep_freed_memory() -> bool:
    """Apply HIAST_MALLOC's settings (above) to this process and the processes it forks; True if any were
    applied. A value that names no mode raises ValueError before anything is changed."""
    pairs = settings(malloc_mode(os.environ.get(ENV)))
    if not pairs or sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return all([bool(mallopt(parameter, value)) for parameter, value in pairs])
