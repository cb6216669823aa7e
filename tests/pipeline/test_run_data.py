"""`ttsnn run RECIPE --data SPEC` overrides the recipe's data (a DIR relative to the current folder)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from ttsnn_cli.cli.commands import app
from ttsnn_cli.pipeline.recipe import load_recipe
from ttsnn_cli.storage.bundle import get_meta
from ttsnn_cli.storage.load import load_checkpoint

ROOT = Path(__file__).resolve().parents[2]


def _recipe(folder: Path) -> Path:
    path = folder / "r.yaml"
    path.write_text(yaml.safe_dump({
        "name": "t", "data": "cifar10:not/here",
        "model": {"arch": "zoo:digits_csnn", "kwargs": {"width": 4}, "timesteps": 2, "input_shape": [1, 16, 16]},
        "compress": {"ranks": 2, "mode": "stt", "exclude": [r"stem\.conv"]},
    }))
    return path


def _data_of_run(recipe: Path, out: Path, *extra: str) -> str:
    result = CliRunner().invoke(app, ["run", str(recipe), "--out", str(out), "--json", *extra])
    assert result.exit_code == 0, result.stderr
    bundle = json.loads(result.stdout)["compress"]["output"]
    return get_meta(load_checkpoint(bundle)).io.data


def test_data_option_overrides_the_recipe(tmp_path, monkeypatch):
    recipe = _recipe(tmp_path)
    assert _data_of_run(recipe, tmp_path / "a") == f"cifar10:{(tmp_path / 'not/here').resolve()}"
    assert _data_of_run(recipe, tmp_path / "b", "--data", "digits") == "digits"
    monkeypatch.chdir(tmp_path / "a")
    assert _data_of_run(recipe, tmp_path / "c", "--data", "cifar10:mine") == f"cifar10:{(tmp_path / 'a/mine').resolve()}"


def test_paper_recipes_are_consistent():
    """Every paper recipe runs the same stages (train, compress, finetune, report); siblings differ
    only in mode (and the planning-only report options)."""
    for dataset in ("cifar10-resnet18", "ncaltech101-resnet34"):
        parsed = {mode: load_recipe(ROOT / "recipes" / f"{dataset}-{mode}.yaml")[0] for mode in ("stt", "ptt", "htt")}
        for mode, recipe in parsed.items():
            assert recipe.train and recipe.compress and recipe.finetune and recipe.report, (dataset, mode)
            assert recipe.compress.mode == mode
            assert recipe.compress.layers == parsed["stt"].compress.layers
            assert recipe.train == parsed["stt"].train and recipe.finetune == parsed["stt"].finetune
