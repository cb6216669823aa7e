"""The current folder on the import path (ttsnn_cli.host.imports): last, never hiding a package."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ttsnn_cli.host.imports import current_folder_last


def test_the_current_folder_moves_to_the_end_however_spelled(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", ["", str(tmp_path), ".", "/somewhere/site-packages"])
    current_folder_last()
    assert sys.path == ["/somewhere/site-packages", str(tmp_path)]


def test_a_planted_package_in_the_current_folder_never_runs(tmp_path: Path) -> None:
    """`python -m ttsnn_cli` puts the current folder first; an `onnxruntime.py` there must not be
    what ttsnn imports, while a user module there is still found by --arch."""
    marker = tmp_path / "ran"
    (tmp_path / "onnxruntime.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    (tmp_path / "mynets.py").write_text(
        "import torch\n\ndef build():\n    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))\n")
    script = ("import sys\nfrom ttsnn_cli.host.imports import current_folder_last\n"
              "current_folder_last()\n"
              "from ttsnn_cli.storage.trust import build_arch\n"
              "print(type(build_arch('mynets:build')).__name__)\n"
              "import onnxruntime\nprint(onnxruntime.__file__)\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    built, origin = done.stdout.splitlines()
    assert built == "Sequential" and not origin.startswith(str(tmp_path))
    assert not marker.exists()


def test_python_m_ttsnn_export_verify_runs_the_real_onnxruntime(tmp_path: Path) -> None:
    """The whole path as a user meets it: a project folder holding the user's network and a stray
    `onnxruntime.py`; `python -m ttsnn_cli export --verify` must import the installed onnxruntime."""
    marker = tmp_path / "ran"
    (tmp_path / "onnxruntime.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    (tmp_path / "mynets.py").write_text(
        "import torch\nimport snntorch as snn\n\ndef build():\n"
        "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 4),\n"
        "                               snn.Leaky(beta=0.9, init_hidden=True, output=True))\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    make = ("import mynets\nfrom ttsnn_cli import ModelIO, save_model\n"
            "save_model(mynets.build(), 'm.tt', arch='mynets:build', io=ModelIO((1, 4, 4), 4, None))\n")
    subprocess.run([sys.executable, "-c", make], cwd=tmp_path, env=env, check=True, timeout=120)
    done = subprocess.run([sys.executable, "-m", "ttsnn_cli", "export", "m.tt", "--arch", "mynets:build",
                           "--onnx", "m.onnx", "--verify"], cwd=tmp_path, capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "verified" in done.stdout + done.stderr and not marker.exists()
