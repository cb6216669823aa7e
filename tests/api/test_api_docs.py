"""The Python API's documentation runs: every `python` block of docs/python-api.md, in order, as one
script in an empty folder (a real process, so the tutorial network is `__main__:Net` as in a
notebook or a script); and the README's API example, likewise (in full under `-m slow`; its calls
and arguments checked against the API in the default run). So neither can rot."""

from __future__ import annotations

import ast
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks(markdown: Path) -> str:
    """Every ```python block of `markdown`, in order, as one script."""
    blocks = BLOCK.findall(markdown.read_text(encoding="utf-8"))
    assert blocks, f"no python block in {markdown}"
    return "\n".join(blocks)


def run_script(code: str, folder: Path) -> subprocess.CompletedProcess[str]:
    script = folder / "example.py"
    script.write_text(code, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "TTSNN_TRUSTED_ARCH"}  # as a user's shell has it
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, script.name], cwd=folder, env=env, capture_output=True, text=True,
                          timeout=300)


def test_the_python_api_page_runs_in_an_empty_folder(tmp_path: Path) -> None:
    done = run_script(python_blocks(ROOT / "docs" / "python-api.md"), tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "dense:" in out and "fine-tuned:" in out and "gates failed: []" in out
    assert "verified True" in out and "(4, 3, 10)" in out
    assert "epochs must be >= 1, got 0" in out  # the error names the argument
    assert "--" not in out.split("epochs must")[0].splitlines()[-1]
    assert {"dense.tt", "tt.tt", "tuned.tt", "tuned.onnx"} <= {p.name for p in tmp_path.iterdir()}


def readme_example() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Python API", 1)[1].split("\n## ", 1)[0]
    code = BLOCK.findall(section)
    assert code, "the README's Python API section has a python block"
    return "\n".join(code)


def test_the_readme_api_example_calls_real_functions_with_real_arguments() -> None:
    """The fast check of the default run: every `ttsnn.NAME(...)` of the README exists and takes the
    keywords given (the slow test below runs it all, about 40 s on two CPU cores)."""
    import ttsnn_cli
    from ttsnn_cli.api.training import train_option_names

    calls = [node for node in ast.walk(ast.parse(readme_example())) if isinstance(node, ast.Call)
             and isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name)
             and node.func.value.id == "ttsnn"]
    assert {call.func.attr for call in calls} >= {"train", "compress", "finetune", "report", "export"}  # type: ignore[attr-defined]
    for call in calls:
        name = call.func.attr  # type: ignore[attr-defined]
        assert name in ttsnn_cli.__all__, name
        parameters = set(inspect.signature(getattr(ttsnn_cli, name)).parameters)
        if name in ("train", "finetune"):
            parameters |= set(train_option_names())
        assert {k.arg for k in call.keywords} <= parameters, (name, {k.arg for k in call.keywords} - parameters)


@pytest.mark.slow
def test_the_readme_api_example_runs_in_an_empty_folder(tmp_path: Path) -> None:
    done = run_script(readme_example(), tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "True"  # export verified
