"""Keep freed CPU memory in the process for the next training step (glibc's malloc).

Why: on CPU every tensor comes from malloc, and glibc serves large blocks (above a threshold that is
at most 32 MB, a single activation of MS-ResNet18's first stage at batch 32) with fresh pages from
the kernel, which it hands back when the tensor is freed. Every training step then page-faults and
zeroes the same activations again: without this setting an MS-ResNet18 step at batch 32 takes 2.3x
as long in PTT and 1.4x in dense (`benchmarks/bench_training.py --levers`, "allocator"). Serving
every block from the heap and never trimming it lets each step reuse the memory the previous one
freed, as the caching allocators of GPU frameworks do. The price is resident memory: the process
keeps its high-water mark, plus some fragmentation (the benchmark reports both).

The setting is process-wide and cannot be undone, so the library never applies it by itself: the
`ttsnn` command does at start, and a Python user who wants it calls `keep_freed_memory()`.
`TTSNN_KEEP_FREED_MEMORY=0` keeps the C library's own behaviour.
"""

from __future__ import annotations

import ctypes
import os
import sys

ENV_SWITCH = "TTSNN_KEEP_FREED_MEMORY"

_M_TRIM_THRESHOLD = -1  # glibc's malloc.h
_M_MMAP_MAX = -4
_NEVER = 2**31 - 1


def keep_freed_memory() -> bool:
    """Serve every allocation from the heap and never return freed memory to the kernel (glibc on
    Linux only); True if applied. Call it before the first large allocation."""
    if os.environ.get(ENV_SWITCH, "1").strip() == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)  # the C library this process already runs on
        libc.gnu_get_libc_version  # noqa: B018 - glibc only: musl's mallopt does nothing
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _NEVER))
