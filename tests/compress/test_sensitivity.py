"""compress.sensitivity: candidate ranks, the measured curves (model left untouched, deterministic) and
the greedy allocation under the global budget; `compress --rank-method sensitivity:X` end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from ttsnn_cli.cli.commands import app
from ttsnn_cli.compress.allocation import LayerCurve, Point, choose_ranks
from ttsnn_cli.compress.sensitivity import (
    calibration_set,
    candidate_factors,
    candidate_ranks,
    measure_sensitivity,
)
from ttsnn_cli.data import load_data
from ttsnn_cli.maths.tt import tt_param_count
from ttsnn_cli.storage.trust import build_arch

pytestmark = pytest.mark.usefixtures("one_thread")


def _curve(name: str, dense: int, shape: tuple, increases: dict[int, float]) -> LayerCurve:
    points = [Point((r, r, r), tt_param_count(shape, (r, r, r)), 1.0 + inc, inc) for r, inc in sorted(increases.items())]
    return LayerCurve(name, dense, points)


def test_candidate_grid_spans_both_sides_of_the_target() -> None:
    factors = candidate_factors([8])
    assert factors[0] == 2 and math.isclose(factors[-1], 32) and len(factors) == 9
    assert candidate_factors([4, 32])[0] == 1
    shape = (64, 32, 3, 3)
    ranks = candidate_ranks((32, 3, 3, 64), factors)  # the kernel's TT tensor dims (Cin, kh, kw, Cout)
    assert ranks[0] == (1, 1, 1) and ranks == sorted(set(ranks))
    dense = math.prod(shape)
    for factor in factors:
        assert any(dense / tt_param_count(shape, r) >= factor for r in ranks)


def test_greedy_spends_the_budget_where_loss_per_weight_is_cheapest() -> None:
    shape = (64, 64, 3, 3)
    dense = math.prod(shape)
    ranks = [1, 4, 8, 16, 24, 32]
    tough = _curve("tough", dense, shape, {r: 2.0 / r for r in ranks})   # loses a lot when cut
    easy = _curve("easy", dense, shape, {r: 0.01 / r for r in ranks})    # hardly notices
    chosen = choose_ranks({"tough": tough, "easy": easy}, 8.0)
    weights = sum(tt_param_count(shape, chosen[n].effective) for n in chosen)
    assert 2 * dense / weights >= 8.0
    assert chosen["tough"].effective[0] > chosen["easy"].effective[0]


def test_noise_never_makes_a_smaller_rank_look_better() -> None:
    shape = (32, 32, 3, 3)
    dense = math.prod(shape)
    noisy = _curve("a", dense, shape, {1: 0.5, 4: -0.02, 8: 0.01, 16: 0.0})  # rank 4 "better" than 8: noise
    flat = _curve("b", dense, shape, {1: 0.5, 4: 0.2, 8: 0.1, 16: 0.0})
    chosen = choose_ranks({"a": noisy, "b": flat}, 6.0)
    assert 2 * dense / sum(tt_param_count(shape, r.effective) for r in chosen.values()) >= 6.0


def test_unreachable_budget_is_noted() -> None:
    shape = (8, 4, 3, 3)
    curve = _curve("x", math.prod(shape), shape, {1: 1.0, 2: 0.5})
    assert "cannot be met" in choose_ranks({"x": curve}, 1000.0)["x"].note


@pytest.fixture(scope="module")
def small_model_and_calibration():
    torch.manual_seed(0)
    model = build_arch("zoo:digits_csnn", {"width": 4}).eval()
    data = load_data("digits", timesteps=2, augment=False)
    return model, calibration_set(data, 24, timesteps=2, seed=3)


def test_measurement_leaves_the_model_untouched_and_is_deterministic(small_model_and_calibration) -> None:
    model, calibration = small_model_and_calibration
    before = {k: v.clone() for k, v in model.state_dict().items()}
    layers = {"conv1": model.conv1, "conv2": model.conv2}
    events = []
    base, curves = measure_sensitivity(model, layers, calibration, [2.0, 8.0], progress=events.append)
    assert model.conv1 is layers["conv1"] and model.conv2 is layers["conv2"]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert events[-1]["done"] == events[-1]["total"] == sum(len(c.points) for c in curves.values())
    again_base, again = measure_sensitivity(model, layers, calibration, [2.0, 8.0])
    assert again_base == base and [c.to_dict() for c in again.values()] == [c.to_dict() for c in curves.values()]
    for curve in curves.values():
        weights = [p.weights for p in curve.points]
        assert weights == sorted(weights) and curve.points[0].ranks == (1, 1, 1)


def test_calibration_subset_follows_the_seed() -> None:
    data = load_data("digits", timesteps=2, augment=False)
    a, b, c = (calibration_set(data, 16, 2, seed) for seed in (1, 1, 2))
    assert a.indices == b.indices != c.indices
    assert a.inputs.shape == (2, 16, 1, 16, 16) and torch.equal(a.inputs, b.inputs)


def test_compress_sensitivity_through_the_cli(tmp_path: Path) -> None:
    runner = CliRunner()
    torch.manual_seed(0)
    state = build_arch("zoo:digits_csnn", {"width": 4}).state_dict()
    torch.save(state, tmp_path / "dense.pt")
    args = ["compress", str(tmp_path / "dense.pt"), "--arch", "zoo:digits_csnn", "--arch-kwargs", '{"width": 4}',
            "--rank-method", "sensitivity:3", "--exclude", "stem", "--calib-samples", "16", "--json"]
    result = runner.invoke(app, [*args, "-o", str(tmp_path / "a.tt"), "--data", "digits"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["sensitivity"]["calib_samples"] == 16
    assert document["totals"]["decomposed_param_ratio"] >= 3
    for layer in document["layers"]:
        if layer["skipped"] is None:
            assert layer["sensitivity"] and {"ranks", "weights", "loss", "loss_increase"} <= set(layer["sensitivity"][0])
    again = runner.invoke(app, [*args, "-o", str(tmp_path / "b.tt"), "--data", "digits"])
    assert [l["ranks"] for l in json.loads(again.stdout)["layers"]] == [l["ranks"] for l in document["layers"]]


def test_sensitivity_without_data_is_bad_input(tmp_path: Path, seq_checkpoint: Path) -> None:
    result = CliRunner().invoke(app, ["compress", str(seq_checkpoint), "--arch", "user_nets:sequential_net",
                                      "--rank-method", "sensitivity:3", "-o", str(tmp_path / "c.tt")])
    assert result.exit_code == 3 and "--data" in result.stderr and not (tmp_path / "c.tt").exists()
