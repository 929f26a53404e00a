import os
import platform
import subprocess
import sys
import textwrap

import pytest

from hiast import allocator, cli

# RSS that a fresh process keeps after allocating, touching and freeing MIB MiB (numpy: glibc malloc underneath),
# in the main thread or in a worker thread
PROBE = textwrap.dedent("""
    import sys, threading
    from hiast import allocator
    applied = allocator.keep_freed_memory()
    import numpy as np
    mib, in_thread = int(sys.argv[1]), sys.argv[2] == "thread"
    def rss_kib():
        return int(open("/proc/self/statm").read().split()[1]) * 4
    def touch_and_free():
        block = np.ones(mib * 1024 * 1024 // 4, dtype=np.float32)
        del block
    before = rss_kib()
    if in_thread:
        worker = threading.Thread(target=touch_and_free)
        worker.start()
        worker.join()
    else:
        touch_and_free()
    print(applied, rss_kib() - before)
""")

glibc_linux = pytest.mark.skipif(sys.platform != "linux" or platform.libc_ver()[0] != "glibc",
                                 reason="mallopt settings are glibc's")


def run_probe(env_value, mib=16, where="main"):
    env = {k: v for k, v in os.environ.items() if k != allocator.ENV}
    if env_value is not None:
        env[allocator.ENV] = env_value
    applied, kept_kib = subprocess.run([sys.executable, "-c", PROBE, str(mib), where], env=env, capture_output=True,
                                       text=True, check=True).stdout.split()
    return applied == "True", int(kept_kib)


@glibc_linux
def test_freed_large_block_stays_in_the_process_only_with_the_settings():
    applied, kept = run_probe(None)
    assert applied and kept > 12 * 1024            # the 16 MB block was kept for reuse
    assert run_probe("reuse") == (True, pytest.approx(kept, abs=2048))
    applied, kept = run_probe("default")           # glibc's own settings: the block went back to the kernel
    assert not applied and kept < 4 * 1024


@glibc_linux
@pytest.mark.parametrize("where", ["main", "thread"])
def test_heap_mode_keeps_blocks_over_the_largest_mmap_threshold(where):
    # 64 MiB is over glibc's largest mmap threshold (32 MiB): `reuse` still maps it afresh and gives it back,
    # `heap` serves it from the one heap, whichever thread frees it, and keeps it
    applied, kept = run_probe("reuse", mib=64, where=where)
    assert applied and kept < 4 * 1024
    applied, kept = run_probe("heap", mib=64, where=where)
    assert applied and kept > 56 * 1024


def test_malloc_modes_and_their_settings():
    assert allocator.malloc_mode(None) == allocator.malloc_mode("") == allocator.malloc_mode(" Reuse ") == "reuse"
    assert allocator.malloc_mode("HEAP") == "heap"
    assert allocator.settings("default") == []
    assert allocator.settings("reuse") == [(-3, 32 * 1024 * 1024), (-1, 1 << 30)]
    assert allocator.settings("heap") == allocator.settings("reuse") + [(-4, 0), (-8, 1)]


def test_unknown_malloc_mode_is_refused_naming_the_variable(monkeypatch, capsys):
    with pytest.raises(ValueError, match=r"HIAST_MALLOC='jemalloc': expected one of reuse, heap, default"):
        allocator.malloc_mode("jemalloc")
    monkeypatch.setenv(allocator.ENV, "jemalloc")
    assert cli.main(["generate", "--root", "unused", "--count", "gta5=0"]) == 2
    assert "HIAST_MALLOC='jemalloc'" in capsys.readouterr().err
