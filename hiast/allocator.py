"""glibc malloc settings for a process that allocates and frees the same large CPU tensors every iteration.

By default glibc serves a block of more than a few MiB with a fresh mmap and gives it back to the kernel when it
is freed (or trims the heap top), so the next iteration's tensor of the same size faults in and zeroes its pages
again: on the 2-core machine a 10 MB [4, 19, 128, 256] float tensor cost ~4 ms of page faults on every
elementwise operator that created one (BENCHMARKS.md, "A self-training iteration"). Raising the mmap threshold
to glibc's maximum and the trim threshold far above keeps freed blocks in the heap for reuse. Execution only:
no number changes; the process keeps its peak memory instead of returning it.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3        # glibc's mallopt parameter numbers (malloc.h)
MMAP_THRESHOLD = 32 * 1024 * 1024                   # the largest glibc accepts on 64-bit
TRIM_THRESHOLD = 1 << 30
ENV = "HIAST_MALLOC"                                # "default" leaves glibc's own settings


def keep_freed_memory() -> bool:
    """Apply the settings above to this process (and the processes it forks); True if they were applied."""
    if os.environ.get(ENV, "").strip().lower() == "default":
        return False
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
