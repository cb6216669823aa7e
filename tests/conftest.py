"""Shared fixtures: the user-style networks importable as `user_nets`, small checkpoints on disk."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

TESTS = Path(__file__).parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

import user_nets  # noqa: E402


#: whether this machine really has a CUDA device (read once, before any test hides it)
CUDA_PRESENT = torch.cuda.is_available()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if CUDA_PRESENT:
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _cpu_unless_marked_cuda(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test not marked `cuda` runs as on a machine without a GPU, in this process and in the
    ones it starts: `--device auto` then means the CPU, so the default suite checks the same numbers
    (the compiled CPU neuron, bitwise comparisons) with or without a GPU present. The `cuda` tests
    compare the GPU paths against these."""
    if "cuda" in request.keywords or not CUDA_PRESENT:
        return
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")


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
