"""The compress / inspect / run / schema commands through CliRunner, and once as a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from ttsnn_cli.cli.commands import app

ARCH = "user_nets:sequential_net"
runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def test_compress_json_contract(tmp_path: Path, seq_checkpoint: Path) -> None:
    out = tmp_path / "m.tt"
    result = invoke("compress", seq_checkpoint, "--arch", ARCH, "--ranks", "3", "-o", out, "--json")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["mode"] == "stt" and document["output"] == str(out)
    assert {"params_before", "params_after", "param_ratio"} <= set(document["totals"])
    layer_keys = {"name", "kernel", "ranks", "params_before", "params_after", "rel_error", "skipped"}
    assert all(layer_keys <= set(layer) for layer in document["layers"])
    skipped = {layer["name"]: layer["skipped"] for layer in document["layers"]}
    assert skipped["5"].startswith("1x1") and skipped["9"].startswith("Linear")
    assert out.exists()


def test_table_goes_to_stderr_and_nothing_to_stdout(tmp_path: Path, seq_checkpoint: Path) -> None:
    result = invoke("compress", seq_checkpoint, "--arch", ARCH, "--ranks", "2,3,2", "-o", tmp_path / "m.tt")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    assert "whole model" in result.stderr and "decomposed layers" in result.stderr


def test_capped_ranks_warn_and_report_effective(tmp_path: Path, seq_checkpoint: Path) -> None:
    result = invoke("compress", seq_checkpoint, "--arch", ARCH, "--ranks", "500", "-o", tmp_path / "m.tt", "--json",
                    "--allow-growth")
    assert result.exit_code == 0
    assert "capped" in result.stderr
    first = json.loads(result.stdout)["layers"][0]
    assert first["ranks"] == [1, 3, 6] and first["requested_ranks"] == [500, 500, 500]


def test_a_layer_that_would_grow_stays_dense_with_the_reason(tmp_path: Path, seq_checkpoint: Path) -> None:
    """The 1-input-channel stem at rank 8 would hold more weights as cores than as a kernel."""
    result = invoke("compress", seq_checkpoint, "--arch", ARCH, "--ranks", "8", "-o", tmp_path / "m.tt", "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    stem = doc["layers"][0]
    assert stem["name"] == "0" and stem["ranks"] is None
    assert stem["skipped"].startswith("would grow 54 -> ")
    assert all(row["params_after"] <= row["params_before"] for row in doc["layers"])


def test_nothing_to_decompose_lists_every_reason_and_still_prints_json(tmp_path: Path, seq_checkpoint: Path) -> None:
    result = invoke("compress", seq_checkpoint, "--arch", ARCH, "--ranks", "500", "-o", tmp_path / "m.tt", "--json")
    assert result.exit_code == 3
    assert len(result.stderr.strip().splitlines()) == 1
    doc = json.loads(result.stdout)
    names = [row["name"] for row in doc["layers"]]
    assert names == ["0", "2", "4", "5", "9"] and all(row["skipped"] for row in doc["layers"])
    for row in doc["layers"]:
        assert f"{row['name']}: " in result.stderr.replace("\n", " ")
    assert not (tmp_path / "m.tt").exists()


@pytest.mark.parametrize("ranks", ["0", "-1", "abc", "8,8,8,8"])
def test_bad_ranks_exit_3(tmp_path: Path, seq_checkpoint: Path, ranks: str) -> None:
    result = invoke("compress", seq_checkpoint, "--arch", ARCH, "--ranks", ranks, "-o", tmp_path / "m.tt")
    assert result.exit_code == 3
    assert "ranks" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_unknown_mode_is_a_usage_error(tmp_path: Path, seq_checkpoint: Path) -> None:
    result = invoke("compress", seq_checkpoint, "--arch", ARCH, "--ranks", "2", "--mode", "xtt", "-o", tmp_path / "m.tt")
    assert result.exit_code == 2


@pytest.mark.parametrize(
    "args,match",
    [
        (["--arch", "nope_module:f"], "cannot import"),
        (["--arch", ARCH, "--arch-kwargs", "{bad"], "not valid JSON"),
        (["--arch", "zoo:unknown_net"], "unknown zoo model"),
        ([], "plain state_dict"),
    ],
)
def test_bad_arch_options_exit_3(tmp_path: Path, seq_checkpoint: Path, args: list[str], match: str) -> None:
    result = invoke("compress", seq_checkpoint, *args, "--ranks", "2", "-o", tmp_path / "m.tt")
    assert result.exit_code == 3, result.stderr
    assert match in result.stderr


def test_outputs_are_protected(tmp_path: Path, seq_checkpoint: Path) -> None:
    before = seq_checkpoint.read_bytes()
    result = invoke("compress", seq_checkpoint, "--arch", ARCH, "--ranks", "2", "-o", seq_checkpoint)
    assert result.exit_code == 3 and "is the input" in result.stderr
    assert seq_checkpoint.read_bytes() == before
    result = invoke("compress", seq_checkpoint, "--arch", ARCH, "--ranks", "2", "-o", tmp_path / "missing" / "m.tt")
    assert result.exit_code == 3 and "does not exist" in result.stderr
    existing = tmp_path / "existing.tt"
    existing.write_text("keep me")
    result = invoke("compress", seq_checkpoint, "--arch", ARCH, "--ranks", "2", "-o", existing)
    assert result.exit_code == 3 and "--force" in result.stderr and existing.read_text() == "keep me"
    result = invoke("compress", seq_checkpoint, "--arch", ARCH, "--ranks", "2", "-o", existing, "--force")
    assert result.exit_code == 0
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("content", [b"", b"hello", b"PK\x03\x04broken"])
def test_bad_checkpoint_files_exit_3(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    result = invoke("compress", path, "--arch", ARCH, "--ranks", "2", "-o", tmp_path / "m.tt")
    assert result.exit_code == 3 and "Traceback" not in result.stderr


def test_missing_checkpoint_exits_3(tmp_path: Path) -> None:
    result = invoke("compress", tmp_path / "nope.pt", "--arch", ARCH, "--ranks", "2", "-o", tmp_path / "m.tt")
    assert result.exit_code == 3 and "does not exist" in result.stderr


def test_rank_methods_through_the_cli(tmp_path: Path, seq_checkpoint: Path) -> None:
    for i, method in enumerate(["vbmf", "energy:0.9", "budget:4"]):
        # on untrained weights vbmf/energy keep high ranks: without --allow-growth such layers stay dense
        plain = invoke("compress", seq_checkpoint, "--arch", ARCH, "--rank-method", method, "-o", tmp_path / f"p{i}.tt",
                       "--json")
        assert plain.exit_code in (0, 3), plain.stderr
        assert all(row["params_after"] <= row["params_before"] for row in json.loads(plain.stdout)["layers"])
        result = invoke("compress", seq_checkpoint, "--arch", ARCH, "--rank-method", method, "-o", tmp_path / f"{i}.tt",
                        "--json", "--allow-growth")
        assert result.exit_code == 0, result.stderr
        document = json.loads(result.stdout)
        assert all(min(layer["ranks"]) >= 1 for layer in document["layers"] if layer["ranks"])
    assert json.loads(result.stdout)["totals"]["decomposed_param_ratio"] >= 4


def test_inspect_shows_ranks(tmp_path: Path, seq_checkpoint: Path) -> None:
    out = tmp_path / "m.tt"
    assert invoke("compress", seq_checkpoint, "--arch", ARCH, "--ranks", "2", "--mode", "htt", "--timesteps", "6", "-o", out).exit_code == 0
    result = invoke("inspect", out, "--json")
    document = json.loads(result.stdout)
    assert document["tt_mode"] == "htt" and document["io"]["timesteps"] == 6
    assert {layer["name"]: layer["ranks"] for layer in document["layers"]}["2"] == [2, 2, 2]
    assert "TTConv2d" in invoke("inspect", out).stderr


def _write_recipe(tmp_path: Path, checkpoint: Path, **compress) -> Path:
    recipe = {
        "name": "t",
        "model": {"arch": ARCH, "checkpoint": checkpoint.name, "input_shape": [1, 16, 16], "timesteps": 4},
        "compress": {"ranks": 2, "exclude": ["^0$"], **compress},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_recipe_fills_options_and_command_line_wins(tmp_path: Path, seq_checkpoint: Path) -> None:
    recipe = _write_recipe(tmp_path, seq_checkpoint, layers={"2": "3,4,3"})
    result = invoke("compress", "--recipe", recipe, "-o", tmp_path / "a.tt", "--json")
    assert result.exit_code == 0, result.stderr
    layers = {layer["name"]: layer for layer in json.loads(result.stdout)["layers"]}
    assert layers["0"]["skipped"].startswith("excluded") and layers["2"]["ranks"] == [3, 4, 3]
    result = invoke("compress", "--recipe", recipe, "--mode", "ptt", "-o", tmp_path / "b.tt", "--json")
    assert result.exit_code == 3 and "equal ranks" in result.stderr  # PTT cannot take the recipe's 3,4,3
    result = invoke("compress", "--recipe", _write_recipe(tmp_path, seq_checkpoint), "--mode", "ptt", "-o", tmp_path / "c.tt", "--json")
    assert json.loads(result.stdout)["mode"] == "ptt"


def test_recipe_unknown_keys_name_their_path(tmp_path: Path, seq_checkpoint: Path) -> None:
    recipe = _write_recipe(tmp_path, seq_checkpoint, rank_methd="vbmf")
    result = invoke("compress", "--recipe", recipe, "-o", tmp_path / "a.tt")
    assert result.exit_code == 3 and "compress.rank_methd: unknown key" in result.stderr
    recipe.write_text("model: [unclosed")
    assert invoke("run", recipe).exit_code == 3


def test_run_recipe_and_schema(tmp_path: Path, seq_checkpoint: Path) -> None:
    recipe = _write_recipe(tmp_path, seq_checkpoint)
    out = tmp_path / "run"
    result = invoke("run", recipe, "--out", out, "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["compress"]["output"] == str(out / "compressed.tt")
    assert invoke("run", recipe, "--out", out).exit_code == 3  # would overwrite
    assert invoke("run", recipe, "--out", out, "--force").exit_code == 0
    schema = json.loads(invoke("schema").stdout)
    assert "compress" in schema["properties"] and "model" in schema["required"]


def test_plan_from_zoo_without_checkpoint(tmp_path: Path) -> None:
    result = invoke("compress", "--arch", "zoo:digits_csnn", "--ranks", "4", "-o", tmp_path / "z.tt", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["totals"]["decomposed_layers"] >= 1


def test_real_process_version_and_error(tmp_path: Path, seq_checkpoint: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    version = subprocess.run([sys.executable, "-m", "ttsnn_cli", "--version"], capture_output=True, text=True, env=env)
    assert version.returncode == 0 and version.stdout.startswith("ttsnn ")
    done = subprocess.run(
        [sys.executable, "-m", "ttsnn_cli", "compress", str(seq_checkpoint), "--arch", ARCH, "--ranks", "0", "-o", str(tmp_path / "x.tt")],
        capture_output=True, text=True, env=env, cwd=tmp_path,
    )
    assert done.returncode == 3 and "Traceback" not in done.stderr and done.stdout == ""
    done = subprocess.run(
        [sys.executable, "-m", "ttsnn_cli", "compress", str(seq_checkpoint), "--arch", ARCH, "--ranks", "2", "-o", str(tmp_path / "x.tt"), "--json"],
        capture_output=True, text=True, env=env, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["output"].endswith("x.tt")
    torch.load(tmp_path / "x.tt", weights_only=True)


def test_recipe_data_paths_resolve_against_the_recipe_folder(tmp_path: Path, seq_checkpoint: Path) -> None:
    recipe = _write_recipe(tmp_path, seq_checkpoint)
    data = yaml.safe_load(recipe.read_text())
    data["data"] = "cifar10:data/cifar"
    recipe.write_text(yaml.safe_dump(data))
    out = tmp_path / "run"
    assert invoke("run", recipe, "--out", out).exit_code == 0
    recorded = torch.load(out / "compressed.tt", weights_only=True)["io"]["data"]
    assert recorded == f"cifar10:{tmp_path / 'data' / 'cifar'}"


def test_uniform_and_global_budget_through_the_cli(tmp_path: Path, seq_checkpoint: Path) -> None:
    for i, method in enumerate(["uniform:3", "budget:3"]):
        result = invoke("compress", seq_checkpoint, "--arch", ARCH, "--rank-method", method, "-o", tmp_path / f"{i}.tt", "--json")
        assert result.exit_code == 0, result.stderr
        document = json.loads(result.stdout)
        assert document["rank_method"] == method and document["totals"]["decomposed_param_ratio"] >= 3
    result = invoke("compress", seq_checkpoint, "--arch", ARCH, "--rank-method", "budget:1000", "-o", tmp_path / "x.tt")
    assert result.exit_code == 0 and "cannot be met" in result.stderr
