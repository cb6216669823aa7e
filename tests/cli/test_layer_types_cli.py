"""`compress --layer-types/--linear-cores` (and the recipe's compress.layer_types) end to end:
bundles reload exactly, inspect shows the new layers, bad input is one line and exit 3."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import user_nets
import yaml
from typer.testing import CliRunner

from ttsnn_cli import load_model
from ttsnn_cli.cli.commands import app
from ttsnn_cli.layers.conv1d import TTConv1d
from ttsnn_cli.layers.linear import TTLinear
from ttsnn_cli.spiking.runner import run_timesteps

runner = CliRunner()
AUDIO = "user_nets:audio_net"


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def audio_checkpoint(tmp_path: Path) -> Path:
    path = tmp_path / "audio.pt"
    torch.manual_seed(0)
    torch.save(user_nets.audio_net().state_dict(), path)
    return path


def test_conv1d_and_linear_bundle_reloads_to_the_same_outputs(tmp_path: Path, audio_checkpoint: Path) -> None:
    out = tmp_path / "a.tt"
    result = invoke("compress", audio_checkpoint, "--arch", AUDIO, "--ranks", "6", "--layer-types", "conv1d,linear",
                    "--linear-cores", "2", "--input-shape", "16,40", "--timesteps", "4", "-o", out, "--json")
    assert result.exit_code == 0, result.stderr
    layers = {row["name"]: row for row in json.loads(result.stdout)["layers"]}
    assert layers["0"]["ranks"] == [6, 6] and layers["0"]["kernel"] == [5]
    assert layers["9"]["skipped"] is None and layers["9"]["ranks"] == [6] and layers["9"]["kernel"] is None
    model = load_model(out, arch=AUDIO)
    assert isinstance(model[0], TTConv1d) and isinstance(model[9], TTLinear)
    again = load_model(out, arch=AUDIO)
    x = torch.rand(4, 2, 16, 40)
    with torch.no_grad():
        assert torch.equal(run_timesteps(model, x), run_timesteps(again, x))
    shown = json.loads(invoke("inspect", out, "--arch", AUDIO, "--json").stdout)
    rows = {row["name"]: row for row in shown["layers"]}
    assert rows["0"]["type"] == "TTConv1d" and rows["9"]["type"] == "TTLinear" and rows["9"]["ranks"] == [6]
    assert "TT-matrix" in rows["9"]["shape"] and shown["tt_mode"] == "stt"


@pytest.mark.parametrize("args,match", [
    (["--layer-types", "conv3d"], "--layer-types"),
    (["--mode", "ptt"], "layer 0: PTT needs two spatial axes"),
    (["--layer-types", "linear", "--ranks", "1000"], "would grow"),
])
def test_bad_layer_choices_exit_3_in_one_line(tmp_path: Path, audio_checkpoint: Path, args, match: str) -> None:
    result = invoke("compress", audio_checkpoint, "--arch", AUDIO, "--ranks", "4", *args, "-o", tmp_path / "x.tt")
    assert result.exit_code == 3 and match in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "x.tt").exists()


def test_recipe_layer_types(tmp_path: Path, audio_checkpoint: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"name": "audio", "model": {"arch": AUDIO, "checkpoint": audio_checkpoint.name},
                                      "compress": {"ranks": 4, "layer_types": ["linear"], "linear_cores": 2}}))
    result = invoke("compress", "--recipe", recipe, "-o", tmp_path / "r.tt", "--json")
    assert result.exit_code == 0, result.stderr
    decomposed = [row["name"] for row in json.loads(result.stdout)["layers"] if row["skipped"] is None]
    assert decomposed == ["9"]
    result = invoke("compress", "--recipe", recipe, "--layer-types", "conv1d", "-o", tmp_path / "s.tt", "--json")
    assert [row["name"] for row in json.loads(result.stdout)["layers"] if row["skipped"] is None] == ["0", "2", "4"]
    recipe.write_text(yaml.safe_dump({"name": "audio", "model": {"arch": AUDIO}, "compress": {"ranks": 4, "layer_types": ["lstm"]}}))
    result = invoke("compress", "--recipe", recipe, "-o", tmp_path / "t.tt")
    assert result.exit_code == 3 and "compress.layer_types" in result.stderr


def test_finetune_trains_conv1d_cores_and_tt_matrix_on_digits(tmp_path: Path) -> None:
    arch = "user_nets:digits_conv1d"
    checkpoint = tmp_path / "d.pt"
    torch.manual_seed(0)
    torch.save(user_nets.digits_conv1d().state_dict(), checkpoint)
    out = tmp_path / "c.tt"
    result = invoke("compress", checkpoint, "--arch", arch, "--ranks", "6", "--layer-types", "conv1d,linear",
                    "--input-shape", "1,16,16", "--timesteps", "2", "-o", out, "--json")
    assert result.exit_code == 0, result.stderr
    before = load_model(out, arch=arch)
    result = invoke("finetune", out, "--arch", arch, "--data", "digits", "--epochs", "1", "--batch-size", "64",
                    "--timesteps", "2", "--train", "cores", "-o", tmp_path / "t.tt", "--json")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["epochs"] == 1 and 0 <= document["test_accuracy"] <= 100  # accuracy: benchmarks/bench_layers.py
    tuned = load_model(tmp_path / "t.tt", arch=arch)
    assert isinstance(tuned[1], TTConv1d) and isinstance(tuned[5], TTLinear)
    assert not torch.equal(tuned[5].cores[0], before[5].cores[0])  # cores trained
    assert not torch.equal(tuned[1].core2.weight, before[1].core2.weight)
