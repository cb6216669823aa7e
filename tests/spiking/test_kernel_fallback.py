"""The compiled neuron falls back to the PyTorch loop on any failure, builds only where nobody else
can swap the library, and never stalls a command for long (ttsnn_cli.spiking.lif_kernel)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.spiking.lif_cases import TRAIN_A_NEURON
from ttsnn_cli.spiking import lif_kernel

needs_cc = pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler here")


def _run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("CC", "TTSNN_NATIVE")}
    return subprocess.run([sys.executable, "-c", TRAIN_A_NEURON], capture_output=True, text=True, timeout=300,
                          env={**base, **env})


def _sanitizer_works() -> bool:
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "a.c"
        source.write_text("int f(void) { return 1; }\n")
        done = subprocess.run(["cc", "-fsanitize=address", "-shared", "-fPIC", "-o", f"{folder}/a.so", str(source)],
                              capture_output=True, check=False)
        return done.returncode == 0


@pytest.mark.skipif(shutil.which("g++") is None, reason="no C++ compiler here")
def test_a_cpp_compiler_gives_mangled_symbols_and_the_loop_runs() -> None:
    done = _run({"CC": "g++"})
    assert done.returncode == 0, done.stderr
    assert "could not build it" in done.stdout and "undefined symbol" in done.stdout


@needs_cc
def test_a_sanitizer_build_that_would_abort_the_process_is_never_loaded() -> None:
    if not _sanitizer_works():
        pytest.skip("cc cannot build with -fsanitize=address here")
    done = _run({"CC": "cc -fsanitize=address"})
    assert done.returncode == 0, done.stderr
    assert "could not build it" in done.stdout


@needs_cc
def test_a_compiler_that_builds_an_empty_library_leaves_the_loop_in_charge(tmp_path: Path) -> None:
    compiler = tmp_path / "cc-empty"
    empty = tmp_path / "empty.c"
    empty.write_text("int nothing_here(void) { return 0; }\n")
    compiler.write_text(f'#!/bin/sh\nout=""\nwhile [ $# -gt 0 ]; do [ "$1" = -o ] && out="$2"; shift; done\n'
                        f'exec cc -shared -fPIC -o "$out" {empty}\n')
    compiler.chmod(0o755)
    done = _run({"CC": str(compiler)})
    assert done.returncode == 0, done.stderr
    assert "could not build it" in done.stdout


@pytest.mark.skipif(sys.platform != "linux", reason="a POSIX shell compiler that hangs")
def test_a_hanging_compiler_is_stopped_with_everything_it_started(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The driver forks a child that holds stderr open (as gcc's cc1 would): killing the driver alone
    would leave us waiting on the pipe."""
    compiler = tmp_path / "cc-hangs"
    compiler.write_text("#!/bin/sh\nsleep 300 &\nwait\n")
    compiler.chmod(0o755)
    monkeypatch.setenv("CC", str(compiler))
    monkeypatch.setattr(lif_kernel, "_BUILD_TIMEOUT_S", 1)
    lif_kernel._build.cache_clear()
    try:
        start = time.monotonic()
        status = lif_kernel.build_status()
        elapsed = time.monotonic() - start
    finally:
        monkeypatch.undo()
        lif_kernel._build.cache_clear()
    assert "stopped" in status
    assert elapsed < 10


@needs_cc
def test_a_shared_tmpdir_others_may_write_is_not_where_the_kernel_is_built(tmp_path: Path) -> None:
    shared, cache = tmp_path / "shared", tmp_path / "cache"
    shared.mkdir()
    shared.chmod(0o777)
    watcher = ("import os, sys, runpy\n"
               "seen = []\n"
               "real = os.mkdir\n"
               "def spy(path, *a, **k):\n"
               "    seen.append(str(path))\n"
               "    return real(path, *a, **k)\n"
               "os.mkdir = spy\n"
               "exec(sys.argv[1])\n"
               "print([p for p in seen if 'ttsnn-lif-' in p])\n")
    base = {k: v for k, v in os.environ.items() if k not in ("CC", "TTSNN_NATIVE")}
    done = subprocess.run([sys.executable, "-c", watcher, TRAIN_A_NEURON], capture_output=True, text=True,
                          timeout=300, env={**base, "TMPDIR": str(shared), "XDG_CACHE_HOME": str(cache)})
    assert done.returncode == 0, done.stderr
    assert "built with" in done.stdout
    built_in = eval(done.stdout.strip().splitlines()[-1])  # noqa: S307 - our own printed list
    assert built_in and all(p.startswith(str(cache.resolve())) for p in built_in)
    assert list(shared.iterdir()) == []
