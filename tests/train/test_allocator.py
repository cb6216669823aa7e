"""`allocator.keep_freed_memory`: freed memory stays in the process (glibc), and the command applies it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc settings: Linux only")

_PROBE = """
import ctypes, os, sys
{setup}
page = os.sysconf("SC_PAGE_SIZE")
def resident():
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * page
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
before = resident()
block = libc.malloc(256 << 20)
ctypes.memset(block, 1, 256 << 20)  # touch every page, as a tensor being written does
libc.free(block)
print(applied, (resident() - before) >> 20)
"""


def _probe(setup: str, **env: str) -> tuple[str, int]:
    environment = {k: v for k, v in os.environ.items() if k != "TTSNN_KEEP_FREED_MEMORY"} | env
    done = subprocess.run([sys.executable, "-c", _PROBE.format(setup=setup)], capture_output=True, text=True,
                          env=environment, timeout=120, check=True)
    applied, kept = done.stdout.split()
    return applied, int(kept)


def _glibc() -> bool:
    import ctypes

    return hasattr(ctypes.CDLL(None), "gnu_get_libc_version")


@pytest.mark.skipif(not _glibc(), reason="not glibc")
def test_freed_memory_stays_in_the_process_only_when_asked() -> None:
    keep = "from ttsnn_cli.train.allocator import keep_freed_memory\napplied = keep_freed_memory()"
    applied, kept = _probe(keep)
    assert applied == "True" and kept >= 250  # a 256 MB block freed, still resident for the next step
    applied, kept = _probe("applied = None")
    assert kept < 16  # glibc's own behaviour: a block this large goes back to the kernel
    applied, kept = _probe(keep, TTSNN_KEEP_FREED_MEMORY="0")
    assert applied == "False" and kept < 16


@pytest.mark.skipif(not _glibc(), reason="not glibc")
def test_the_command_line_keeps_freed_memory() -> None:
    """`ttsnn` (the console script's main) applies it before anything else runs."""
    setup = ("import ttsnn_cli.cli.entry as entry, ttsnn_cli.train.allocator as allocator\n"
             "calls = []\n"
             "real = allocator.keep_freed_memory\n"
             "entry.keep_freed_memory = lambda: calls.append(real()) or calls[-1]\n"
             "import io\nsys.argv, out, sys.stdout = ['ttsnn', '--help'], sys.stdout, io.StringIO()\n"
             "try:\n    entry.main()\nexcept SystemExit:\n    pass\n"
             "sys.stdout = out\n"
             "applied = calls == [True]")
    applied, kept = _probe(setup)
    assert applied == "True" and kept >= 250
