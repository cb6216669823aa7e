"""A user's forward misbehaving (bad return value, any exception, sys.exit, a print) in every command that
runs it: exit 3 and one stderr line naming the user's code, never an internal error or a traceback.

The network lives in a module written to a temporary folder (as a user's own file would be) and is
named with `--arch ttsnn_faulty_nets:build`; `fault` picks the misbehaviour, `after` how many calls
run cleanly first (so the fault also hits later calls: past the compatibility check, inside the
exporter's trace). A sample runs as real processes through `python -m ttsnn_cli` (the console entry).
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ttsnn_cli import save_model
from ttsnn_cli.cli.commands import app
from ttsnn_cli.storage.bundle import ModelIO

ROOT = Path(__file__).resolve().parents[2]
MODULE = "ttsnn_faulty_nets"
SOURCE = '''
import sys

import snntorch as snn
import torch
from torch import nn

CALLS = [0]  # forward calls of faulty models since the last build (copies share it: meta, export)


def _raise(kind):
    if kind == "exit":
        sys.exit(4)
    if kind == "zero":
        return 1 / 0
    raise {"type": TypeError, "key": KeyError, "assert": AssertionError, "stop": StopIteration,
           "memory": MemoryError, "base": BaseException, "interrupt": KeyboardInterrupt}[kind]("boom")


RETURNS = {
    "dict": lambda y: {"out": y}, "none": lambda y: None, "int": lambda y: 3, "str": lambda y: "spikes",
    "empty": lambda y: (), "long": lambda y: y.long(), "complex": lambda y: y.to(torch.complex64),
    "batch": lambda y: y[:1], "print": lambda y: (print("hello from forward"), y)[1],
}


class Net(nn.Module):
    """Called once per step (init_hidden neurons): [B, 1, 16, 16] -> spikes [B, 10]."""

    def __init__(self, fault="ok", after=0):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.lif1 = snn.Leaky(beta=0.8, init_hidden=True)
        self.fc = nn.Linear(4 * 8 * 8, 10)
        self.lif2 = snn.Leaky(beta=0.8, init_hidden=True, output=True)
        self.fault, self.after = fault, after

    def forward(self, x):
        y = self.lif2(self.fc(nn.functional.avg_pool2d(self.lif1(self.conv(x)), 2).flatten(1)))[0]
        if self.fault == "ok":
            return y
        CALLS[0] += 1
        if CALLS[0] <= self.after:
            return y
        return RETURNS[self.fault](y) if self.fault in RETURNS else _raise(self.fault)


def build(fault="ok", after=0):
    CALLS[0] = 0
    return Net(fault, after)
'''

BAD_RETURNS = {"dict": "returned a dict", "none": "returned None", "int": "returned an int", "str": "returned a str",
               "empty": "returned an empty tuple", "long": "returned an int64 tensor",
               "complex": "returned a complex64 tensor", "batch": "keep the batch"}
RAISES = {"type": "raised TypeError: boom", "key": "raised KeyError: 'boom'", "assert": "raised AssertionError: boom",
          "zero": "raised ZeroDivisionError: division by zero", "stop": "raised StopIteration: boom",
          "memory": "raised MemoryError: boom", "exit": "called sys.exit(4)", "base": "raised BaseException: boom"}
FAULTS = {**BAD_RETURNS, **RAISES}
TRAIN = ["--data", "digits", "--epochs", "1", "--timesteps", "2", "--batch-size", "256"]


@pytest.fixture(scope="module")
def user_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("user_code")
    (folder / f"{MODULE}.py").write_text(SOURCE)
    return folder


@pytest.fixture
def user_module(user_folder: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """The user's module importable (here and in subprocesses) and trusted when a bundle records it."""
    monkeypatch.syspath_prepend(str(user_folder))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(user_folder), str(ROOT)]))
    monkeypatch.setenv("TTSNN_TRUSTED_ARCH", f"{os.environ.get('TTSNN_TRUSTED_ARCH', '')},{MODULE}")
    monkeypatch.chdir(tmp_path)
    return importlib.import_module(MODULE)


def _bundle(module, path: Path, fault: str, after: int) -> Path:
    """A dense bundle recording the user's arch with `fault`, its input and T (so no --arch is needed)."""
    return save_model(module.build(), path, arch=f"{MODULE}:build", arch_kwargs={"fault": fault, "after": after},
                      io=ModelIO((1, 16, 16), 2, "digits"))


def _kwargs(fault: str, after: int) -> str:
    return json.dumps({"fault": fault, "after": after})


def _invoke(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


def _one_error(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr and lines[0].startswith("error: "), stderr
    return lines[0]


def _assert_user_error(result, fault: str, role: str = "model") -> None:
    assert result.exit_code == 3, (result.exit_code, result.stdout, result.stderr)
    line = _one_error(result.stderr)
    assert f"the {role}'s forward ({MODULE}:build)" in line and FAULTS[fault] in line, line
    assert "internal error" not in line and result.stdout == ""


@pytest.mark.parametrize("fault", list(FAULTS))
def test_train_names_the_forward_failing_past_the_first_calls(user_module, tmp_path: Path, fault: str) -> None:
    # after=2: the compatibility check (one sample, 2 steps) passes, the first training batch fails
    result = _invoke("train", "--arch", f"{MODULE}:build", "--arch-kwargs", _kwargs(fault, 2), *TRAIN,
                     "-o", tmp_path / "o.tt", "--json")
    _assert_user_error(result, fault)
    assert not (tmp_path / "o.tt").exists()


@pytest.mark.parametrize("fault", [f for f in FAULTS if f != "batch"])  # report runs one sample: y[:1] keeps it
def test_report_names_the_forward_failing_on_its_second_call(user_module, tmp_path: Path, fault: str) -> None:
    bundle = _bundle(user_module, tmp_path / "m.tt", fault, 1)
    result = _invoke("report", bundle, "--json")
    _assert_user_error(result, fault)


@pytest.mark.parametrize("fault", list(FAULTS))
def test_export_names_the_forward_failing_while_traced(user_module, tmp_path: Path, fault: str) -> None:
    # after=2: the check run passes (2 steps), the exporter's trace of the unrolled graph fails
    bundle = _bundle(user_module, tmp_path / "m.tt", fault, 2)
    result = _invoke("export", bundle, "--onnx", tmp_path / "m.onnx", "--json")
    _assert_user_error(result, fault)
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("fault", ["dict", "long", "batch", "key", "zero", "exit", "base"])
def test_a_teacher_failing_is_named_as_the_teacher(user_module, tmp_path: Path, fault: str) -> None:
    student = _bundle(user_module, tmp_path / "student.tt", "ok", 0)
    teacher = _bundle(user_module, tmp_path / "teacher.tt", fault, 2)
    result = _invoke("finetune", student, "--teacher", teacher, *TRAIN, "-o", tmp_path / "o.tt", "--json")
    _assert_user_error(result, fault, role="teacher")


def test_a_shape_mismatch_still_says_which_data(user_module, tmp_path: Path) -> None:
    result = _invoke("train", "--arch", f"{MODULE}:build", "--data", "cifar10:/nonexistent", "-o", tmp_path / "o.tt")
    assert result.exit_code == 3 and "internal error" not in _one_error(result.stderr)
    bundle = save_model(user_module.build(), tmp_path / "m.tt", arch=f"{MODULE}:build", io=ModelIO((3, 16, 16), 2))
    result = _invoke("report", bundle)
    assert result.exit_code == 3
    assert "cannot consume input shape [3, 16, 16]" in _one_error(result.stderr)


@pytest.mark.parametrize("command", ["train", "report", "export"])
def test_a_forward_printing_keeps_json_stdout_one_document(user_module, tmp_path: Path, command: str) -> None:
    bundle = _bundle(user_module, tmp_path / "m.tt", "print", 0)
    args = {"train": ["train", "--arch", f"{MODULE}:build", "--arch-kwargs", _kwargs("print", 0), *TRAIN,
                      "-o", tmp_path / "o.tt"],
            "report": ["report", bundle],
            "export": ["export", bundle, "--onnx", tmp_path / "m.onnx"]}[command]
    result = _invoke(*args, "--json")
    assert result.exit_code == 0, result.stderr
    assert isinstance(json.loads(result.stdout), dict)
    assert "hello from forward" in result.stderr


def _console(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ttsnn_cli", *map(str, args)], capture_output=True, text=True,
                          timeout=300, env=os.environ.copy())


@pytest.mark.parametrize("fault,code", [("exit", 3), ("base", 3), ("interrupt", 130)])
def test_console_entry_turns_exits_and_base_exceptions_into_one_line(user_module, tmp_path: Path, fault: str,
                                                                    code: int) -> None:
    proc = _console("train", "--arch", f"{MODULE}:build", "--arch-kwargs", _kwargs(fault, 2), *TRAIN,
                    "-o", tmp_path / "o.tt", "--json")
    assert proc.returncode == code, proc.stderr
    line = _one_error(proc.stderr)
    assert proc.stdout == ""
    if code == 3:
        assert f"the model's forward ({MODULE}:build) {FAULTS[fault]}" in line
    else:
        assert line == "error: interrupted"


def test_console_entry_json_survives_a_printing_forward(user_module, tmp_path: Path) -> None:
    proc = _console("train", "--arch", f"{MODULE}:build", "--arch-kwargs", _kwargs("print", 0), *TRAIN,
                    "-o", tmp_path / "o.tt", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["output"] == str(tmp_path / "o.tt")
    assert "hello from forward" in proc.stderr
