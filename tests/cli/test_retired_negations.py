"""Boolean flags are single (`--force`); the `--no-X` spellings earlier versions printed beside some
of them restated the default and still parse, cancelling an earlier `--X` as they did."""

from __future__ import annotations

import subprocess
import sys

from ttsnn_cli.cli.entry import accept_retired_negations


def test_retired_negations_are_dropped_and_cancel_the_flag_before_them() -> None:
    assert accept_retired_negations(["export", "m.tt", "--no-verify", "--onnx", "m.onnx"]) == \
        ["export", "m.tt", "--onnx", "m.onnx"]
    assert accept_retired_negations(["compress", "--force", "m.tt", "--no-force"]) == ["compress", "m.tt"]
    assert accept_retired_negations(["run", "r.yaml", "--no-force", "--force"]) == ["run", "r.yaml", "--force"]
    assert accept_retired_negations(["x", "--", "--no-force"]) == ["x", "--", "--no-force"]
    assert accept_retired_negations(["x", "--no-such-flag"]) == ["x", "--no-such-flag"]


def test_the_console_entry_accepts_them(tmp_path) -> None:
    done = subprocess.run([sys.executable, "-m", "ttsnn_cli", "export", str(tmp_path / "missing.tt"), "--onnx",
                           str(tmp_path / "m.onnx"), "--no-verify", "--no-force"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 3, done.stderr  # the missing model, not an unknown option
    assert "does not exist" in done.stderr
