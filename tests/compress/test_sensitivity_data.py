"""`sensitivity:X` measures loss on data the model was trained on: `--data` (or a recipe's data), else
the data a bundle records. A zoo entry's default data is not that, so a model with no data at all
(a freshly initialised zoo model, a plain state_dict) is refused in one line before any work, and a
target too large to reach chooses the smallest ranks instead of overflowing (issue 25)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from ttsnn_cli.cli.commands import app
from ttsnn_cli.compress.sensitivity import MAX_FACTOR, candidate_factors
from ttsnn_cli.storage.trust import build_arch

ZOO, KW = "zoo:digits_csnn", '{"width": 4}'


def _invoke(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


def _refused(result, folder: Path) -> None:
    assert result.exit_code == 3, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--data" in lines[0] and "records none" in lines[0]
    assert not list(folder.glob("*.tt"))


def test_a_fresh_zoo_model_has_no_data(tmp_path: Path) -> None:
    result = _invoke("compress", "--arch", ZOO, "--arch-kwargs", KW, "--rank-method", "sensitivity:2", "-o", tmp_path / "o.tt")
    _refused(result, tmp_path)


def test_a_state_dict_of_a_zoo_model_has_no_data(tmp_path: Path) -> None:
    torch.manual_seed(0)
    torch.save(build_arch(ZOO, {"width": 4}).state_dict(), tmp_path / "dense.pt")
    result = _invoke("compress", tmp_path / "dense.pt", "--arch", ZOO, "--arch-kwargs", KW,
                     "--rank-method", "sensitivity:2", "-o", tmp_path / "o.tt")
    _refused(result, tmp_path)


def test_a_recipe_without_data_is_refused_and_leaves_no_folder(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text('model: {arch: zoo:digits_csnn, kwargs: {width: 4}}\ncompress: {rank_method: "sensitivity:2"}\n')
    result = _invoke("run", recipe, "--out", tmp_path / "run")
    assert result.exit_code == 3 and "records none" in result.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("trained") / "dense.tt"
    done = _invoke("train", "--arch", ZOO, "--arch-kwargs", KW, "--data", "digits", "--epochs", "1", "--timesteps", "2",
                   "--batch-size", "256", "-o", out)
    assert done.exit_code == 0, done.stderr
    return out


def test_a_bundle_uses_the_data_it_records(trained: Path, tmp_path: Path) -> None:
    result = _invoke("compress", trained, "--rank-method", "sensitivity:2", "--calib-samples", "8", "--json",
                     "-o", tmp_path / "o.tt")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["sensitivity"]["data"] == "digits"


def test_an_unreachable_target_takes_the_smallest_ranks(trained: Path, tmp_path: Path) -> None:
    """sensitivity:1e308 once overflowed (exit 1); now it does what budget:1e308 does."""
    ranks = {}
    for method in ("sensitivity:1e308", "budget:1e308"):
        result = _invoke("compress", trained, "--rank-method", method, "--data", "digits", "--calib-samples", "8",
                         "--json", "-o", tmp_path / f"{method.split(':')[0]}.tt")
        assert result.exit_code == 0, result.stderr
        ranks[method] = [row["ranks"] for row in json.loads(result.stdout)["layers"]]
    assert ranks["sensitivity:1e308"] == ranks["budget:1e308"]


@pytest.mark.parametrize("targets", [[1.0], [4.0, 8.0], [1e12], [1e300], [1e308], [1.0, 1e308]])
def test_the_factor_grid_is_finite_and_bounded(targets: list[float]) -> None:
    factors = candidate_factors(targets)
    assert factors and all(math.isfinite(f) and 1 <= f <= MAX_FACTOR for f in factors)
    assert factors == sorted(factors) and len(factors) < 100
