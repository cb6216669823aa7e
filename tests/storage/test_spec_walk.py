"""A trusted module spec builds only what that module defines (ttsnn_cli.storage.trust): trusting
`mynets` is not trusting `torch`, `os` or anything else `mynets` imports."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from ttsnn_cli import save_model
from ttsnn_cli.cli.commands import app
from ttsnn_cli.errors import BadInputError
from ttsnn_cli.storage.bundle import FORMAT, state_checksum
from ttsnn_cli.storage.trust import build_arch

MODULE = """
import os
import torch
from torch import save
from torch.nn import Linear
from . import blocks

class Net(torch.nn.Module):
    def __init__(self, width=4):
        super().__init__()
        self.fc = torch.nn.Linear(width, 2)

    @classmethod
    def build(cls, width=4):
        return cls(width)

def build(width=4):
    return Net(width)
"""


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user package `walknets` with a submodule, importable from tmp_path."""
    root = tmp_path / "walknets"
    root.mkdir()
    (root / "__init__.py").write_text(MODULE)
    (root / "blocks.py").write_text("import torch\n\ndef block(width=4):\n    return torch.nn.Linear(width, width)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("TTSNN_TRUSTED_ARCH", "walknets")
    yield tmp_path
    for name in [m for m in sys.modules if m.split(".")[0] == "walknets"]:
        del sys.modules[name]


@pytest.mark.parametrize("spec", ["walknets:build", "walknets:Net", "walknets:Net.build", "walknets:blocks.block",
                                  "walknets.blocks:block"])
def test_what_the_module_defines_builds(package: Path, spec: str) -> None:
    assert isinstance(build_arch(spec, {"width": 3}), torch.nn.Module)


@pytest.mark.parametrize("spec", ["walknets:torch.os.system", "walknets:os.system", "walknets:save",
                                  "walknets:Linear", "walknets:torch.nn.Linear", "walknets:blocks.torch.save",
                                  "walknets:Net.__init__.__globals__"])
def test_a_path_through_what_the_module_imports_is_refused(package: Path, spec: str) -> None:
    with pytest.raises(BadInputError, match="may only name code its own module defines|no attribute"):
        build_arch(spec, {"command": "true"})


def test_a_bundle_recording_a_walk_into_os_never_runs_it(package: Path, tmp_path: Path) -> None:
    """The attack as reported: the module is trusted through TTSNN_TRUSTED_ARCH, the bundle records
    `walknets:torch.os.system` with a command in its kwargs."""
    marker = tmp_path / "ran"
    state = torch.nn.Linear(4, 2).state_dict()
    bundle = {"format": FORMAT, "format_version": 1, "ttsnn_version": "0",
              "arch": {"spec": "walknets:torch.os.system", "kwargs": {"command": f"touch {marker}"}},
              "tt": None, "io": None, "state_dict": state, "state_sha256": state_checksum(state),
              "source": None, "history": []}
    torch.save(bundle, tmp_path / "evil.tt")
    result = CliRunner().invoke(app, ["inspect", str(tmp_path / "evil.tt")])
    assert result.exit_code == 3, result.output
    assert not marker.exists()
    assert "its own module defines" in result.output


def test_a_save_through_a_trusted_module_overwrites_nothing(package: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    with pytest.raises(BadInputError):
        build_arch("walknets:save", {"obj": 1, "f": str(victim)})
    assert victim.read_text() == "keep"


def test_a_legitimate_user_bundle_still_loads(package: Path, tmp_path: Path) -> None:
    from walknets import build

    save_model(build(4), tmp_path / "ok.tt", arch="walknets:Net.build", arch_kwargs={"width": 4})
    result = CliRunner().invoke(app, ["inspect", str(tmp_path / "ok.tt")])
    assert result.exit_code == 0, result.output
