"""Shared fixtures: the user-style networks importable as `user_nets`, small checkpoints on disk."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

TESTS = Path(__file__).parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

import user_nets  # noqa: E402


#: whether this machine really has a CUDA device (read once, before any test hides it), and which it shows
CUDA_PRESENT = torch.cuda.is_available()
_VISIBLE = os.environ.get("CUDA_VISIBLE_DEVICES")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if CUDA_PRESENT:
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


_REAL_IS_AVAILABLE = torch.cuda.is_available


@pytest.fixture(scope="session", autouse=True)
def _cpu_by_default() -> Iterator[None]:
    """The whole session runs as on a machine without a GPU, in this process and in the ones it
    starts: `--device auto` then means the CPU, so the default suite checks the same numbers (the
    compiled CPU neuron, bitwise comparisons) with or without a GPU present. Session-wide, so the
    module-scoped fixtures that train or export (set up before any test's own fixtures) run on the
    CPU too. The `cuda` tests get the GPU back (`_gpu_for_cuda_tests`) and compare its paths with
    these."""
    if not CUDA_PRESENT:
        yield
        return
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.cuda, "is_available", lambda: False)
        patch.setenv("CUDA_VISIBLE_DEVICES", "")
        yield


@pytest.fixture(autouse=True)
def _gpu_for_cuda_tests(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if "cuda" in request.keywords and CUDA_PRESENT:
        monkeypatch.setattr(torch.cuda, "is_available", _REAL_IS_AVAILABLE)
        if _VISIBLE is None:
            monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
        else:
            monkeypatch.setenv("CUDA_VISIBLE_DEVICES", _VISIBLE)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


#: the test suite's own network modules, trusted as a user trusts theirs (docs/trust-and-outputs.md); tests of the
#: trust boundary itself clear this variable
TRUSTED_TEST_MODULES = "user_nets,report_models,test_export_cli"


@pytest.fixture(autouse=True)
def _trusted_test_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TTSNN_TRUSTED_ARCH", TRUSTED_TEST_MODULES)


@pytest.fixture
def seq_checkpoint(tmp_path: Path) -> Path:
    path = tmp_path / "seq.pt"
    torch.save(user_nets.sequential_net().state_dict(), path)
    return path


@pytest.fixture
def loop_checkpoint(tmp_path: Path) -> Path:
    path = tmp_path / "loop.pt"
    torch.save({"model_state_dict": user_nets.loop_net().state_dict(), "epoch": 3}, path)
    return path


@pytest.fixture
def tests_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make `user_nets` importable for subprocesses too."""
    monkeypatch.setenv("PYTHONPATH", str(TESTS))


@pytest.fixture(scope="module")
def one_thread():
    """Tiny convs on a busy 2-core machine: torch's thread pool costs 100x more than it saves."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
