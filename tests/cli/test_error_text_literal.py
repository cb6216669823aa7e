"""Error lines quote what the user typed: a spec like `mod:factory` followed by `: ...`, or a path
holding `:smile:`, prints as typed, never as an emoji or rich markup."""

from __future__ import annotations

from typer.testing import CliRunner

from ttsnn_cli.cli.commands import app


def test_specs_and_paths_print_as_typed(tmp_path) -> None:
    result = CliRunner().invoke(app, ["train", "--arch", "zoo:digits_csnn", "--data", "nosuchmod:factory",
                                      "-o", str(tmp_path / "o.tt")])
    assert result.exit_code == 3
    assert "--data nosuchmod:factory: No module named 'nosuchmod'" in result.stderr
    path = tmp_path / "a:smile:[bold]b.tt"
    result = CliRunner().invoke(app, ["compress", str(path), "--ranks", "8", "-o", str(tmp_path / "o.tt")])
    assert result.exit_code == 3 and f"checkpoint {path} does not exist" in result.stderr
