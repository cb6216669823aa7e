"""`ttsnn export` through CliRunner (errors: one line, exit 3; JSON keys) and one real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import snntorch as snn
import torch
from torch import nn
from typer.testing import CliRunner

from ttsnn_cli import save_model
from ttsnn_cli.cli.commands import app
from ttsnn_cli.layers.conv2d import TTConv2d
from ttsnn_cli.storage.bundle import ModelIO
from ttsnn_cli.zoo import zoo_entry

TESTS = Path(__file__).resolve().parent  # `--arch test_export_cli:...` names this module
runner = CliRunner()


@pytest.fixture(autouse=True)
def _importable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(TESTS))  # `--arch test_export_cli:FACTORY`


def tiny_seq() -> nn.Sequential:
    """User style B, zero reset (NIR-exportable)."""
    kw = dict(beta=0.8, reset_mechanism="zero", init_hidden=True)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), snn.Leaky(**kw), nn.Flatten(), nn.Linear(4 * 6 * 6, 3),
                         snn.Leaky(output=True, **kw))


class OwnLoop(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.lif = nn.Conv2d(1, 2, 3, padding=1), snn.Leaky(beta=0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mem, out = self.lif.init_leaky(), []
        for _ in range(4):
            spk, mem = self.lif(self.conv(x), mem)
            out.append(spk)
        return torch.stack(out)


def own_loop() -> OwnLoop:
    return OwnLoop()


def _digits_bundle(path: Path, mode: str | None) -> Path:
    model = zoo_entry("digits_csnn").factory(width=4)
    if mode:
        model.set_submodule("conv1", TTConv2d(4, 8, 3, (2, 2, 2), mode, 1, 1, bias=False, timesteps=4))
    return save_model(model, path, arch="zoo:digits_csnn", arch_kwargs={"width": 4}, io=ModelIO((1, 16, 16), 4, None))


def _one_error_line(result) -> str:
    text = result.stderr.strip()
    assert text.count("error:") == 1 and "Traceback" not in text, text  # (rich wraps long paths)
    return text.replace("\n", "")


def test_nir_only_export_prints_the_contract_keys(tmp_path: Path) -> None:
    bundle = _digits_bundle(tmp_path / "d.tt", "stt")
    result = runner.invoke(app, ["export", str(bundle), "--nir", str(tmp_path / "d.nir"), "--json"])
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    for key in ("onnx", "verified", "max_abs_diff", "nir", "mode", "timesteps", "tt"):
        assert key in document
    assert document["nir"] == str(tmp_path / "d.nir") and document["onnx"] is None
    assert document["tt"] == {"mode": "stt", "layers": {"conv1": [2, 2, 2]}}
    assert (tmp_path / "d.nir").stat().st_size > 0


@pytest.mark.parametrize("args,match", [
    (["MISSING", "--onnx", "OUT/m.onnx"], "does not exist"),
    (["SEQ", "--onnx", "OUT/no/such/folder/m.onnx"], "does not exist"),
    (["SEQ", "--onnx", "SEQ", "--arch", "test_export_cli:tiny_seq"], "is the input file"),
    (["SEQ", "--onnx", "OUT/m.onnx"], "plain state_dict"),
    (["SEQ", "--onnx", "OUT/m.onnx", "--arch", "test_export_cli:tiny_seq", "--timesteps", "4"], "input shape is unknown"),
    (["SEQ", "--onnx", "OUT/m.onnx", "--arch", "test_export_cli:tiny_seq", "--timesteps", "4", "--input-shape", "1,x"],
     "--input-shape"),
    (["SEQ", "--onnx", "OUT/m.onnx", "--arch", "test_export_cli:tiny_seq", "--timesteps", "4", "--input-shape", "2,6,6"],
     "does not run on input"),
    (["LOOP", "--onnx", "OUT/m.onnx", "--arch", "test_export_cli:own_loop", "--timesteps", "4", "--input-shape", "1,6,6",
      "--mode", "step"], "runs its own time loop"),
    (["LOOP", "--nir", "OUT/m.nir", "--arch", "test_export_cli:own_loop", "--timesteps", "4", "--input-shape", "1,6,6"],
     "layer order lives in python code"),
    (["HTT", "--nir", "OUT/m.nir"], "layer conv1: HTT"),
    (["SEQ", "--arch", "test_export_cli:tiny_seq"], "nothing to export"),
], ids=["missing", "no-folder", "overwrite-input", "no-arch", "no-shape", "bad-shape", "wrong-shape", "own-loop-step",
        "own-loop-nir", "htt-nir", "no-output"])
def test_bad_input_is_one_line_and_exit_3(tmp_path: Path, args: list[str], match: str) -> None:
    seq = tmp_path / "seq.pt"
    torch.save(tiny_seq().state_dict(), seq)
    loop = tmp_path / "loop.pt"
    torch.save(own_loop().state_dict(), loop)
    htt = _digits_bundle(tmp_path / "h.tt", "htt")
    names = {"MISSING": str(tmp_path / "missing.pt"), "SEQ": str(seq), "LOOP": str(loop), "HTT": str(htt)}
    argv = ["export"] + [names.get(a, a.replace("OUT", str(tmp_path))) for a in args]
    result = runner.invoke(app, argv)
    assert result.exit_code == 3, (result.stdout, result.stderr)
    assert match in _one_error_line(result)
    assert result.stdout == ""


def test_subprocess_export_verify_json(tmp_path: Path) -> None:
    """The real console path: a state_dict + --arch, unrolled ONNX verified, NIR beside it, --json on stdout."""
    checkpoint = tmp_path / "seq.pt"
    torch.manual_seed(0)
    torch.save(tiny_seq().state_dict(), checkpoint)
    env = dict(os.environ, PYTHONPATH=str(TESTS), OMP_NUM_THREADS="1")
    argv = [sys.executable, "-m", "ttsnn_cli", "export", str(checkpoint), "--arch", "test_export_cli:tiny_seq",
            "--timesteps", "3", "--input-shape", "1,6,6", "--onnx", str(tmp_path / "m.onnx"), "--nir",
            str(tmp_path / "m.nir"), "--verify", "--json"]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    document = json.loads(done.stdout)
    assert document["verified"] is True and document["max_abs_diff"] <= 1e-4
    assert document["onnx"] == str(tmp_path / "m.onnx") and document["nir"] == str(tmp_path / "m.nir")
    assert document["timesteps"] == 3 and document["mode"] == "unrolled" and document["opset"] >= 18
    assert 0.999 <= document["spike_agreement"] <= 1 and document["onnx_bytes"] == (tmp_path / "m.onnx").stat().st_size
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.nir", "m.onnx", "seq.pt"]


@pytest.mark.slow
def test_recipe_export_stage_runs_on_the_pipeline_model(tmp_path: Path) -> None:
    """`ttsnn run` with only a model (a TT bundle) and an export section: ONNX verified + NIR in the run folder."""
    _digits_bundle(tmp_path / "d.tt", "ptt")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model:\n  arch: zoo:digits_csnn\n  kwargs: {width: 4}\n  checkpoint: d.tt\n"
                      "export:\n  onnx: m.onnx\n  nir: m.nir\n  verify: true\n")
    result = runner.invoke(app, ["run", str(recipe), "--out", str(tmp_path / "out"), "--json"])
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)["export"]
    assert document["verified"] is True and document["onnx"] == str(tmp_path / "out" / "m.onnx")
    assert (tmp_path / "out" / "m.nir").exists() and document["tt"]["mode"] == "ptt"
