import os
import platform
import subprocess
import sys
import textwrap

import pytest

from hiast import allocator

# RSS of a fresh process after allocating, touching and freeing 16 MB (numpy: glibc malloc underneath)
PROBE = textwrap.dedent("""
    import sys
    from hiast import allocator
    applied = allocator.keep_freed_memory()
    import numpy as np
    def rss_kib():
        return int(open("/proc/self/statm").read().split()[1]) * 4
    before = rss_kib()
    block = np.ones(4 * 1024 * 1024, dtype=np.float32)
    del block
    print(applied, rss_kib() - before)
""")

glibc_linux = pytest.mark.skipif(sys.platform != "linux" or platform.libc_ver()[0] != "glibc",
                                 reason="mallopt settings are glibc's")


def run_probe(env_value):
    env = {k: v for k, v in os.environ.items() if k != allocator.ENV}
    if env_value is not None:
        env[allocator.ENV] = env_value
    applied, kept_kib = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True,
                                       check=True).stdout.split()
    return applied == "True", int(kept_kib)


@glibc_linux
def test_freed_large_block_stays_in_the_process_only_with_the_settings():
    applied, kept = run_probe(None)
    assert applied and kept > 12 * 1024            # the 16 MB block was kept for reuse
    applied, kept = run_probe("default")           # glibc's own settings: the block went back to the kernel
    assert not applied and kept < 4 * 1024
