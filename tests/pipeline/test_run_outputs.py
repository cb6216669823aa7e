"""`ttsnn run`: a recipe's outputs stay inside the run folder and are never the run's own inputs or
other outputs, even with --force; every refusal is one line, exit 3, before any work."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from ttsnn_cli import save_model
from ttsnn_cli.cli.commands import app
from ttsnn_cli.storage.bundle import ModelIO
from ttsnn_cli.zoo import zoo_entry

runner = CliRunner()
MODEL = {"arch": "zoo:digits_csnn", "kwargs": {"width": 4}, "timesteps": 2, "input_shape": [1, 16, 16]}


def _tree(folder: Path) -> dict[str, str]:
    """Every file below `folder` (links as their target) with a digest of its bytes: what a run may not change."""
    found = {}
    for path in sorted(folder.rglob("*")):
        if path.is_symlink():
            found[str(path.relative_to(folder))] = "-> " + os.readlink(path)
        elif path.is_file():
            found[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def _recipe(folder: Path, **sections) -> Path:
    path = folder / "r.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "model": dict(MODEL), **sections}))
    return path


def _bundle(path: Path) -> Path:
    model = zoo_entry("digits_csnn").factory(width=4)
    return save_model(model, path, arch="zoo:digits_csnn", arch_kwargs={"width": 4}, io=ModelIO((1, 16, 16), 2, None))


def _refused(args: list[str], *needles: str) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 3, (result.exit_code, result.stderr, result.stdout)
    text = result.stderr.strip()
    assert text.count("error:") == 1 and "Traceback" not in text, text
    line = " ".join(text.split())  # (rich may wrap a long line on a narrow terminal)
    for needle in needles:
        assert needle in line, line
    return line


@pytest.fixture
def world(tmp_path: Path) -> Path:
    """The recipe's folder inside a bigger one holding a file a hostile recipe would like to replace."""
    (tmp_path / "escaped.onnx").write_bytes(b"someone else's file")
    (tmp_path / "project").mkdir()
    return tmp_path


@pytest.mark.parametrize(("value", "needle"), [
    ("../escaped.onnx", "leaves the run folder"),
    ("sub/../../escaped.onnx", "leaves the run folder"),
    ("ABSOLUTE", "outside the run folder"),
    ("~/escaped.onnx", "outside the run folder"),
])
def test_recipe_outputs_may_not_leave_the_run_folder(world: Path, value: str, needle: str) -> None:
    value = str(world / "escaped.onnx") if value == "ABSOLUTE" else value
    recipe = _recipe(world / "project", compress={"ranks": 2}, export={"onnx": value, "verify": False})
    out = world / "project" / "out"
    out.mkdir()
    (out / "old.txt").write_text("an earlier run")  # --force over a used folder
    before = _tree(world)
    _refused(["run", str(recipe), "--out", str(out), "--force"], "export.onnx", needle)
    assert _tree(world) == before  # refused before any work: not even compressed.tt


@pytest.mark.parametrize("key", ["report.plot", "export.nir", "sweep.plot"])
def test_every_output_a_recipe_names_is_checked(world: Path, key: str) -> None:
    section, field = key.split(".")
    extra = {"onnx": "m.onnx", "verify": False} if section == "export" else {}
    recipe = _recipe(world / "project", compress={"ranks": 2}, **{section: {**extra, field: "../escaped.onnx"}})
    before = _tree(world)
    _refused(["run", str(recipe), "--out", str(world / "project" / "out"), "--force"], key, "leaves the run folder")
    assert _tree(world) == before and not (world / "project" / "out").exists()  # no run folder left either


def test_a_symlink_in_the_run_folder_leading_out_is_refused(world: Path) -> None:
    recipe = _recipe(world / "project", compress={"ranks": 2}, export={"onnx": "graphs/escaped.onnx", "verify": False})
    out = world / "project" / "out"
    out.mkdir()
    (out / "graphs").symlink_to(world)
    before = _tree(world)
    _refused(["run", str(recipe), "--out", str(out), "--force"], "export.onnx", "symbolic link")
    assert _tree(world) == before


def test_a_fixed_output_that_is_a_link_leading_out_is_refused(world: Path) -> None:
    recipe = _recipe(world / "project", compress={"ranks": 2})
    out = world / "project" / "out"
    out.mkdir()
    (out / "compressed.tt").symlink_to(world / "escaped.onnx")
    before = _tree(world)
    _refused(["run", str(recipe), "--out", str(out), "--force"], "compressed.tt", "outside the run folder")
    assert _tree(world) == before


@pytest.mark.parametrize("value", ["compressed.tt", "./compressed.tt", "report.json"])
def test_an_output_may_not_be_another_output_even_with_force(world: Path, value: str) -> None:
    recipe = _recipe(world / "project", compress={"ranks": 2}, report={},
                     export={"onnx": value, "verify": False})
    before = _tree(world)
    _refused(["run", str(recipe), "--out", str(world / "project" / "out"), "--force"], "export.onnx", "also the run's")
    assert _tree(world) == before


@pytest.mark.parametrize(("checkpoint", "sections", "needles"), [
    ("d.tt", {"export": {"onnx": "d.tt", "verify": False}}, ("export.onnx", "the run's input")),
    ("d.tt", {"export": {"onnx": "r.yaml", "verify": False}}, ("export.onnx", "the run's input")),
    ("compressed.tt", {"compress": {"ranks": 2}}, ("compress output", "model.checkpoint")),
], ids=["export-over-checkpoint", "export-over-recipe", "stage-output-over-checkpoint"])
def test_an_output_may_not_be_an_input_even_with_force(world: Path, checkpoint: str, sections: dict[str, Any],
                                                       needles: tuple[str, str]) -> None:
    """The run folder is the recipe's own folder (--force over it): the checkpoint and the recipe stay,
    whether an export names them or a stage's fixed output (compress's compressed.tt) is the checkpoint."""
    project = world / "project"
    _bundle(project / checkpoint)
    recipe = _recipe(project, **sections)
    recipe.write_text(recipe.read_text().replace("model:\n", f"model:\n  checkpoint: {checkpoint}\n"))
    before = _tree(world)
    _refused(["run", str(recipe), "--out", str(project), "--force"], *needles)
    assert _tree(world) == before


def test_outputs_in_a_subfolder_of_the_run_folder_are_written_there(world: Path) -> None:
    """The rule refuses escapes, not folders: `plots/r.png` lands in the run folder's `plots/`."""
    project = world / "project"
    recipe = _recipe(project, compress={"ranks": 2}, report={"plot": "plots/r.png"})
    before = _tree(world)
    result = runner.invoke(app, ["run", str(recipe), "--out", str(project / "out"), "--json"])
    assert result.exit_code == 0, result.stderr
    written = Path(json.loads(result.stdout)["report"]["plot"])
    assert written == (project / "out" / "plots" / "r.png").resolve() and written.read_bytes()[:4] == b"\x89PNG"
    assert {k: v for k, v in _tree(world).items() if not k.startswith("project/out/")} == before
