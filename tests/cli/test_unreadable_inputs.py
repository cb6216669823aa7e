"""An unreadable input file (mode 000, read by a user without root's capabilities) is bad input: exit 3
and one line from the library, never the argument parser's usage error (exit 2) (issue 25).

typer checks `os.access(path, R_OK)` for every Path parameter by default; the commands turn that off
(`cli.common.library_reads_files`) so the library's guarded read says what is wrong. Root reads
regardless of permissions, so the real check runs the command in a process without the
capabilities that bypass them (`setpriv`), or as it is when the tests run as another user.
"""

from __future__ import annotations

import inspect
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.models import ParameterInfo

from ttsnn_cli.cli.commands import app

ROOT = Path(__file__).resolve().parents[2]


def test_no_path_parameter_is_checked_by_the_parser() -> None:
    checked = []
    for command in app.registered_commands:
        for name, parameter in inspect.signature(command.callback).parameters.items():
            if isinstance(parameter.default, ParameterInfo) and parameter.default.readable:
                checked.append(f"{command.callback.__name__}.{name}")
    assert not checked, f"typer would refuse an unreadable file with exit 2: {checked}"


def _without_read_override() -> list[str] | None:
    """The prefix that runs a command as a user whom permissions bind, or None where none can."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    drop = "-dac_override,-dac_read_search"
    probe = subprocess.run([setpriv, f"--bounding-set={drop}", f"--inh-caps={drop}", "true"], capture_output=True)
    return [setpriv, f"--bounding-set={drop}", f"--inh-caps={drop}"] if probe.returncode == 0 else None


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ttsnn_cli import save_model
    from ttsnn_cli.storage.bundle import ModelIO
    from ttsnn_cli.storage.trust import build_arch

    folder = tmp_path_factory.mktemp("locked")
    save_model(build_arch("zoo:digits_csnn", {"width": 4}), folder / "m.tt", arch="zoo:digits_csnn",
               arch_kwargs={"width": 4}, io=ModelIO((1, 16, 16), 2, "digits"))
    (folder / "r.yaml").write_text("model: {arch: zoo:digits_csnn}\ncompress: {ranks: 2}\n")
    for name in ("m.tt", "r.yaml"):
        (folder / name).chmod(0)
    folder.chmod(0o777)
    yield folder
    for name in ("m.tt", "r.yaml"):
        (folder / name).chmod(0o644)


COMMANDS = {
    "inspect": ["inspect", "m.tt"],
    "report": ["report", "m.tt"],
    "compress": ["compress", "m.tt", "--ranks", "2", "-o", "o.tt"],
    "export": ["export", "m.tt", "--onnx", "o.onnx"],
    "finetune": ["finetune", "m.tt", "--data", "digits", "-o", "o.tt"],
    "sweep": ["sweep", "m.tt", "--data", "digits", "-o", "sw", "--targets", "4", "--methods", "budget"],
    "run": ["run", "r.yaml", "--out", "run"],
    "compress-recipe": ["compress", "--recipe", "r.yaml", "-o", "o.tt"],
}


@pytest.mark.parametrize("name", [pytest.param(n, marks=() if n == "inspect" else pytest.mark.slow) for n in COMMANDS])
def test_an_unreadable_file_is_bad_input(name: str, locked: Path) -> None:
    prefix = _without_read_override()
    if prefix is None:
        pytest.skip("runs as root and cannot drop the capabilities that bypass file permissions (no setpriv)")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([*prefix, sys.executable, "-m", "ttsnn_cli", *COMMANDS[name]], cwd=locked, env=env,
                          capture_output=True, text=True, timeout=300)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 3, done.stderr
    assert len(lines) == 1 and "permission denied" in lines[-1].lower(), done.stderr
    assert sorted(p.name for p in locked.iterdir()) == ["m.tt", "r.yaml"]
