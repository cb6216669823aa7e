"""`--budget-on weights|macs|time` (issue 24): what the global rank budgets count, how MACs and time are
measured, and the ratios compress reports for the result."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from ttsnn_cli.cli.commands import app
from ttsnn_cli.compress import costs as costs_module
from ttsnn_cli.compress.costs import MacCosts, probe, time_ranks
from ttsnn_cli.compress.decompose import CompressConfig, compress_model, free_layers, plan_layers
from ttsnn_cli.compress.allocation import LayerCurve, Point, choose_ranks
from ttsnn_cli.maths.ranks import RankSpec, WeightCosts, budget_ranks, uniform_ranks
from ttsnn_cli.maths.tt import conv2d_tensor, tt_param_count
from ttsnn_cli.report.counting import count_model
from ttsnn_cli.storage.trust import build_arch

pytestmark = pytest.mark.usefixtures("one_thread")
runner = CliRunner()
SHAPE = (1, 16, 16)  # digits_csnn's frame


def _digits() -> nn.Module:
    torch.manual_seed(0)
    return build_arch("zoo:digits_csnn", {})


def _mac_costs(model: nn.Module, mode: str = "stt", timesteps: int | None = 4) -> MacCosts:
    config = CompressConfig(RankSpec("budget", value=4.0), mode=mode, timesteps=timesteps)  # type: ignore[arg-type]
    layers = free_layers(plan_layers(model, config)[0], config)
    return MacCosts(layers, probe(model, SHAPE, timesteps or 1, list(layers)), mode, timesteps)


@pytest.mark.parametrize("mode", ["stt", "ptt", "htt"])
def test_tt_macs_are_what_report_counts_for_the_decomposed_layer(mode: str) -> None:
    """The MAC cost of a rank choice is the count `ttsnn report` makes of the real TT layer."""
    model = _digits()
    macs = _mac_costs(model, mode)
    name = "conv2"
    ranks = (3, 3, 3)
    config = CompressConfig(RankSpec("fixed", ranks), mode=mode, timesteps=4, include=[f"^{name}$"])  # type: ignore[arg-type]
    compressed, _ = compress_model(_digits(), config)
    counted = {row["name"]: row["macs_per_timestep"] for row in count_model(compressed, SHAPE, 4)["layers"]}
    dense = {row["name"]: row["macs_per_timestep"] for row in count_model(_digits(), SHAPE, 4)["layers"]}
    assert math.isclose(macs.at(name, ranks), counted[name])
    assert math.isclose(macs.dense(name), dense[name])


def test_budget_and_uniform_meet_a_mac_target_and_weights_stay_the_default() -> None:
    model = _digits()
    macs = _mac_costs(model)
    layers = macs.layers
    kernels = {n: conv2d_tensor(c.weight) for n, c in layers.items()}  # type: ignore[union-attr, arg-type]
    chosen = budget_ranks(kernels, 8.0, equal=False, costs=macs)
    dense = sum(macs.dense(n) for n in layers)
    assert dense / sum(macs.at(n, chosen[n].effective) for n in layers) >= 8.0
    dims = {n: tuple(k.shape) for n, k in kernels.items()}
    assert budget_ranks(kernels, 8.0, equal=False) == budget_ranks(kernels, 8.0, equal=False, costs=WeightCosts(dims))
    for name, resolved in uniform_ranks(dims, 4.0, macs).items():
        r = resolved.effective
        assert macs.dense(name) / macs.at(name, r) >= 4.0 or r == (1, 1, 1)


class _Doubled:
    """A cost that is twice the weights: the allocation must follow the cost it is given."""

    unit = "units"

    def __init__(self, shapes: dict) -> None:
        self.shapes = shapes

    def dense(self, name: str) -> float:
        return float(math.prod(self.shapes[name]))

    def at(self, name: str, ranks) -> float:
        return 2.0 * tt_param_count(self.shapes[name], ranks)


def test_sensitivity_allocation_counts_the_cost_it_is_given() -> None:
    shape = (64, 64, 3, 3)
    curves = {n: LayerCurve(n, math.prod(shape), [Point((r,) * 3, tt_param_count(shape, (r,) * 3), 1.0, 1.0 / r)
                                                    for r in (1, 4, 8, 16, 32)]) for n in ("a", "b")}
    costs = _Doubled({"a": shape, "b": shape})
    by_weights, by_cost = choose_ranks(curves, 4.0), choose_ranks(curves, 4.0, costs)
    spent = sum(costs.at(n, by_cost[n].effective) for n in curves)
    assert 2 * math.prod(shape) / spent >= 4.0
    assert sum(r.effective[0] for r in by_cost.values()) < sum(r.effective[0] for r in by_weights.values())


def _invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def test_compress_budget_on_macs_reports_all_ratios(tmp_path: Path) -> None:
    out = tmp_path / "m.tt"
    result = _invoke("compress", "--arch", "zoo:digits_csnn", "--rank-method", "budget:6", "--budget-on", "macs",
                     "-o", out, "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    ratios, budget = document["ratios"], document["budget"]
    assert {"weights", "macs", "time", "model_weights", "model_macs"} <= set(ratios)
    assert ratios["time"] is None  # only measured with --budget-on time
    assert budget["on"] == "macs" and budget["met"] and budget["reached"] >= 6.0
    assert ratios["macs"] >= 6.0 * (1 - 1e-9)  # every decomposed layer is a Conv2d the budget allocates here
    weights = _invoke("compress", "--arch", "zoo:digits_csnn", "--rank-method", "budget:6", "-o", tmp_path / "w.tt", "--json")
    plain = json.loads(weights.stdout)
    assert plain["budget"]["on"] == "weights" and plain["ratios"]["weights"] >= 6.0 and plain["ratios"]["macs"] > 1


def test_compress_budget_on_time_measures_with_the_clock_it_is_given(tmp_path: Path, monkeypatch) -> None:
    """The plumbing, not speeds: a fake clock where a layer's step costs its parameter count."""
    seen = []

    def fake_step_time(layer, item_shape, timesteps, device, timer, seed=0):
        seen.append(tuple(item_shape))
        return 1e-6 * sum(p.numel() for p in layer.parameters())

    monkeypatch.setattr(costs_module, "step_time", fake_step_time)
    out = tmp_path / "t.tt"
    result = _invoke("compress", "--arch", "zoo:digits_csnn", "--rank-method", "budget:4", "--budget-on", "time",
                     "--device", "cpu", "-o", out, "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    budget = document["budget"]
    assert budget["on"] == "time" and budget["unit"] == "seconds" and budget["met"]
    timing = budget["timing"]["layers"]
    assert set(timing) == {layer["name"] for layer in document["layers"] if layer["skipped"] is None}
    for name, table in timing.items():
        assert table["ranks"] == sorted(table["ranks"]) and table["seconds"] == sorted(table["seconds"])
    assert document["ratios"]["time"] is not None and document["ratios"]["time"] >= 4.0 * 0.9
    assert SHAPE in seen  # the first layer is timed at the model's real input shape


def test_sensitivity_and_uniform_take_a_mac_budget(tmp_path: Path) -> None:
    for method, extra in (("sensitivity:4", ["--data", "digits", "--calib-samples", "8"]), ("uniform:4", [])):
        result = _invoke("compress", "--arch", "zoo:digits_csnn", "--rank-method", method, "--budget-on", "macs",
                         *extra, "-o", tmp_path / f"{method[0]}.tt", "--json")
        assert result.exit_code == 0, result.output
        budget = json.loads(result.stdout)["budget"]
        assert budget["on"] == "macs" and budget["unit"] == "MACs" and budget["reached"] >= 4.0 * (1 - 1e-9), method


@pytest.mark.parametrize("args, match", [
    (["--ranks", "4", "--budget-on", "macs"], "spends no budget"),
    (["--rank-method", "budget:4", "--budget-on", "flops"], "--budget-on takes"),
    (["--rank-method", "budget:4", "--budget-on", "time", "--device", "tpu"], "--device takes"),
])
def test_bad_budget_options_exit_3_in_one_line(tmp_path: Path, args: list[str], match: str) -> None:
    result = _invoke("compress", "--arch", "zoo:digits_csnn", *args, "-o", tmp_path / "x.tt")
    assert result.exit_code == 3, result.output
    assert match in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_time_ranks_are_bounded_and_ascending() -> None:
    ranks = time_ranks((512, 512, 3, 3))
    assert ranks[0] == 1 and ranks == sorted(set(ranks)) and len(ranks) <= costs_module.TIME_RANKS


def test_recipes_take_budget_on_and_the_sweep_search(tmp_path: Path) -> None:
    from ttsnn_cli.pipeline.recipe import Recipe

    recipe = tmp_path / "r.yaml"
    recipe.write_text("model:\n  arch: zoo:digits_csnn\ncompress:\n  rank_method: budget:4\n  budget_on: macs\n")
    result = _invoke("compress", "--recipe", recipe, "-o", tmp_path / "r.tt", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["budget"]["on"] == "macs"
    section = Recipe.model_validate({"model": {"arch": "zoo:digits_csnn"},
                                     "sweep": {"max_acc_drop": 1.0, "search": True, "search_points": 5}}).sweep
    assert section is not None and section.search and section.search_points == 5
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  arch: zoo:digits_csnn\ncompress:\n  rank_method: budget:4\n  budget_on: flops\n")
    refused = _invoke("compress", "--recipe", bad, "-o", tmp_path / "b.tt")
    assert refused.exit_code == 3 and "budget_on" in refused.stderr


def test_a_time_budget_keeps_a_layer_dense_that_tt_only_slows(tmp_path: Path, monkeypatch) -> None:
    def fake_step_time(layer, item_shape, timesteps, device, timer, seed=0):
        if hasattr(layer, "core1") and layer.in_channels == 1:
            return 1.0  # the stem as TT: slower than any dense layer here
        return 1e-6 * sum(p.numel() for p in layer.parameters())

    monkeypatch.setattr(costs_module, "step_time", fake_step_time)
    result = _invoke("compress", "--arch", "zoo:digits_csnn", "--rank-method", "budget:2", "--budget-on", "time",
                     "--device", "cpu", "-o", tmp_path / "t.tt", "--json")
    assert result.exit_code == 0, result.output
    layers = {layer["name"]: layer for layer in json.loads(result.stdout)["layers"]}
    assert "not faster than the dense layer" in layers["stem.conv"]["skipped"]
    assert all(layer["skipped"] is None for name, layer in layers.items() if name.startswith("conv"))
