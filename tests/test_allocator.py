"""The allocator setting: freed large blocks stay with the process (so the next tensor does not fault in new pages)."""

import os
import subprocess
import sys

import pytest

PROBE = """
import numpy as np
from fames.allocator import keep_freed_memory
def rss():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096
on = keep_freed_memory()
a = np.ones(64 << 20, dtype=np.uint8)  # 64 MB, above glibc's largest mmap threshold
held = rss()
del a
print(on, (held - rss()) >> 20)
"""


def _probe(env: dict[str, str]) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True,
                         env={**os.environ, **env}).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux") or not os.path.exists("/proc/self/statm"),
                    reason="glibc's mallopt and /proc are Linux features")
def test_freed_memory_is_kept_and_the_opt_out_returns_it():
    on, returned_mb = _probe({})
    assert on == "True" and returned_mb < 8  # the 64 MB stay in the heap
    off, returned_mb = _probe({"FAMES_MALLOC": "0"})
    assert off == "False" and returned_mb >= 60  # glibc's default: unmapped on free
