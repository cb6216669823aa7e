"""Outputs are checked and written under the same name: never through a symbolic link (`--onnx
/dev/stdout --force` used to replace the link by a regular file), and `~` expanded for both the check
and the write (`-o '~/x.tt'` used to check $HOME/x.tt but write ./~/x.tt)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ttsnn_cli import save_model
from ttsnn_cli.cli.commands import app
from ttsnn_cli.errors import BadInputError
from ttsnn_cli.storage.bundle import ModelIO
from ttsnn_cli.storage.outputs import atomic_write_bytes, check_output_path
from ttsnn_cli.zoo import zoo_entry

runner = CliRunner()
COMPRESS = ["compress", "--arch", "zoo:digits_csnn", "--arch-kwargs", '{"width": 4}', "--ranks", "2"]


def _bundle(path: Path) -> Path:
    model = zoo_entry("digits_csnn").factory(width=4)
    return save_model(model, path, arch="zoo:digits_csnn", arch_kwargs={"width": 4}, io=ModelIO((1, 16, 16), 2, None))


def _one_line_exit_3(args: list[str], needle: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 3, (result.exit_code, result.stderr)
    text = result.stderr.strip()
    assert text.count("error:") == 1 and "Traceback" not in text, text
    assert needle in " ".join(text.split()), text


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("force", [[], ["--force"]])
def test_export_through_a_symlink_is_refused_and_both_stay(tmp_path: Path, force: list[str]) -> None:
    """What `--onnx /dev/stdout --force` did, on a link of our own: the link and its target stay."""
    bundle = _bundle(tmp_path / "d.tt")
    target = tmp_path / "target.onnx"
    target.write_bytes(b"the target")
    link = tmp_path / "out.onnx"
    link.symlink_to(target)
    kept = bundle.read_bytes()
    _one_line_exit_3(["export", str(bundle), "--onnx", str(link), *force], "is a symbolic link; name the file itself")
    assert link.is_symlink() and os.readlink(link) == str(target) and target.read_bytes() == b"the target"
    assert bundle.read_bytes() == kept and _names(tmp_path) == ["d.tt", "out.onnx", "target.onnx"]


def test_a_graph_never_replaces_its_model_even_with_force(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path / "d.tt")
    kept = bundle.read_bytes()
    _one_line_exit_3(["export", str(bundle), "--onnx", str(bundle), "--force"], "is the input file")
    assert bundle.read_bytes() == kept and _names(tmp_path) == ["d.tt"]


@pytest.mark.parametrize("force", [[], ["--force"]])
def test_a_dangling_symlink_output_is_one_line_exit_3(tmp_path: Path, force: list[str]) -> None:
    link = tmp_path / "m.tt"
    link.symlink_to(tmp_path / "nowhere" / "m.tt")
    _one_line_exit_3([*COMPRESS, "-o", str(link), *force], "is a symbolic link")
    assert link.is_symlink() and _names(tmp_path) == ["m.tt"]


def test_a_symlink_loop_output_is_one_line_exit_3(tmp_path: Path) -> None:
    link = tmp_path / "m.tt"
    link.symlink_to(link)
    _one_line_exit_3([*COMPRESS, "-o", str(link), "--force"], "is a symbolic link")
    assert link.is_symlink()


@pytest.mark.parametrize("force", [False, True])
def test_publish_refuses_a_name_that_became_a_symlink(tmp_path: Path, force: bool) -> None:
    """Between the check and the publish the name became a link: the link and its target stay."""
    out = tmp_path / "m.tt"
    if force:
        out.write_bytes(b"old")
    check_output_path(out, force=force)
    out.unlink(missing_ok=True)
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    out.symlink_to(victim)
    with pytest.raises(BadInputError, match="symbolic link"):
        atomic_write_bytes(out, b"new")
    assert out.is_symlink() and victim.read_bytes() == b"precious"
    assert _names(tmp_path) == ["m.tt", "victim"]  # no temporary left


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """$HOME in tmp_path, and the current folder beside it (where an unexpanded `~` would land)."""
    (tmp_path / "home").mkdir()
    (tmp_path / "cwd").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path / "cwd")
    return tmp_path / "home"


def test_tilde_output_is_checked_and_written_in_home(home: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, [*COMPRESS, "-o", "~/x.tt", "--json"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["output"] == str(home / "x.tt") and (home / "x.tt").is_file()
    assert _names(tmp_path / "cwd") == []  # no ./~ folder
    _one_line_exit_3([*COMPRESS, "-o", "~/x.tt"], "exists; pass --force")


def test_tilde_never_replaces_a_file_in_a_folder_named_tilde(home: Path, tmp_path: Path) -> None:
    """The old bug's data loss: ./~/x.tt replaced without --force because $HOME/x.tt was free."""
    (tmp_path / "cwd" / "~").mkdir()
    (tmp_path / "cwd" / "~" / "x.tt").write_bytes(b"keep me")
    result = runner.invoke(app, [*COMPRESS, "-o", "~/x.tt"])
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "cwd" / "~" / "x.tt").read_bytes() == b"keep me" and (home / "x.tt").is_file()


def test_tilde_plot_and_graph_land_in_home(home: Path, tmp_path: Path) -> None:
    bundle = _bundle(tmp_path / "d.tt")
    result = runner.invoke(app, ["report", str(bundle), "--plot", "~/r.png", "--json"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["plot"] == str(home / "r.png") and (home / "r.png").is_file()
    result = runner.invoke(app, ["export", str(bundle), "--nir", "~/m.nir", "--json"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["nir"] == str(home / "m.nir") and (home / "m.nir").is_file()
    assert _names(tmp_path / "cwd") == []
