"""`benchmarks/bench_cuda.py` runs its code paths on the CPU (a dry run: no figure worth reading) and
writes the figures its GPU run will write, so the GPU run is not where its bugs are found."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _dry_run(tmp_path: Path, only: str) -> dict:
    out = tmp_path / "cuda.json"
    command = [sys.executable, str(ROOT / "benchmarks" / "bench_cuda.py"), "--device", "cpu", "--batches", "2",
               "--steps", "1", "--json", str(out)] + (["--only", only] if only else [])
    done = subprocess.run(command, capture_output=True, text=True, timeout=1200, cwd=tmp_path,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "fused LIF kernel: Triton" in done.stdout
    return json.loads(out.read_text())


def test_the_cuda_benchmark_runs_on_the_cpu_and_writes_its_figures(tmp_path: Path) -> None:
    results = _dry_run(tmp_path, "dense,PTT LIF loop")
    rows = results["batches"]["2"]
    assert set(rows) == {"dense", "PTT LIF loop"}
    assert rows["dense"]["speed_vs_dense"] == 1.0 and rows["PTT LIF loop"]["ms"] > 0
    assert 0 < rows["dense"]["ops"] < rows["PTT LIF loop"]["ops"]  # the loop dispatches ops per time step
    assert set(results["lif_ms"]["2"]) == {"fused", "loop"}


@pytest.mark.slow
def test_every_configuration_of_the_cuda_benchmark_runs_on_the_cpu(tmp_path: Path) -> None:
    from bench_cuda import CONFIGS  # type: ignore[import-not-found]

    assert set(_dry_run(tmp_path, "")["batches"]["2"]) == set(CONFIGS)


@pytest.fixture(autouse=True)
def _benchmarks_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
