"""The global rank methods over every kind (Conv2d, Conv1d, TT-matrix Linear share one weight budget),
and `fisher:X` (Fisher-weighted reconstruction error) against what it estimates."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import user_nets
from torch import nn
from torch.utils.data import Subset

from ttsnn_cli.compress.allocation import LayerCurve, Point, minmax_ranks
from ttsnn_cli.compress.decompose import CompressConfig, compress_model, free_layers, plan_layers
from ttsnn_cli.compress.fisher import fisher_error, fisher_information
from ttsnn_cli.compress.recovery import recover
from ttsnn_cli.compress.sensitivity import (
    calibration_set,
    candidate_factors,
    check_curves,
    curves_document,
    measure_sensitivity,
    sensitivity_ranks,
)
from ttsnn_cli.data import DataBundle, load_data
from ttsnn_cli.kinds import kind_of, tt_dims
from ttsnn_cli.layers.conv1d import TTConv1d
from ttsnn_cli.layers.linear import TTLinear
from ttsnn_cli.maths.ranks import ErrorProfile, RankSpec, budget_ranks, uniform_ranks
from ttsnn_cli.maths.tt import tensor_tt_params, unfolding_caps

pytestmark = pytest.mark.usefixtures("one_thread")


def _audio() -> nn.Module:
    torch.manual_seed(0)
    return user_nets.audio_net()


def _decomposed_weights(model: nn.Module) -> tuple[int, int]:
    """(dense weights, TT core weights) of the layers compress decomposed."""
    dense = tt = 0
    for module in model.modules():
        if isinstance(module, TTConv1d):
            dense += module.in_channels * module.out_channels * module.kernel_size
            tt += sum(p.numel() for n, p in module.named_parameters() if "bias" not in n)
        elif isinstance(module, TTLinear):
            dense += module.in_features * module.out_features
            tt += sum(c.numel() for c in module.cores)
    return dense, tt


@pytest.mark.parametrize("method", ["budget", "uniform"])
@pytest.mark.parametrize("factor", [2.0, 6.0])
def test_conv1d_and_linear_share_one_weight_budget(method: str, factor: float) -> None:
    config = CompressConfig(RankSpec(method, value=factor), layer_types=("conv1d", "linear"))  # type: ignore[arg-type]
    chosen = free_layers(plan_layers(_audio(), config)[0], config)
    assert {type(m) for m in chosen.values()} == {nn.Conv1d, nn.Linear}  # both kinds allocated together
    model, result = compress_model(_audio(), config)
    dense, tt = _decomposed_weights(model)
    assert dense / tt >= factor
    for layer in result.layers:
        if layer.skipped is None:
            assert f"{method} {factor:g}x" in (layer.note or "") or "capped" in (layer.note or "")


def test_the_budget_takes_weights_from_a_redundant_linear_layer() -> None:
    """A low-rank Linear (as TT-matrix) gives weights to a full-rank Conv1d: per-layer factors differ,
    the total meets the target, and the redundant layer shrinks more."""
    model = _audio()
    linear = model[9]
    with torch.no_grad():
        u, v = torch.randn(linear.out_features, 2), torch.randn(2, linear.in_features)
        linear.weight.copy_(u @ v)
    config = CompressConfig(RankSpec("budget", value=4.0), layer_types=("conv1d", "linear"))
    layers = free_layers(plan_layers(model, config)[0], config)
    dims = tt_dims(layers, 3)
    tensors = {n: kind_of(m).tt_tensor(m, 3) for n, m in layers.items()}
    chosen = budget_ranks(tensors, 4.0, equal=False)
    dense = sum(math.prod(d) for d in dims.values())
    assert dense / sum(tensor_tt_params(dims[n], chosen[n].effective) for n in dims) >= 4.0
    shrink = {n: math.prod(dims[n]) / tensor_tt_params(dims[n], chosen[n].effective) for n in dims}
    assert shrink["9"] > max(shrink[n] for n in dims if n != "9")
    assert len(chosen["9"].effective) == 2 and len(chosen["0"].effective) == 2  # 3 cores, 2 bonds each


def test_error_profile_bounds_the_tt_svd_of_every_kind() -> None:
    """Oseledets' bound, read from any kind's TT tensor, bounds the error of the layer compress builds."""
    model = _audio()
    for name, rank in (("0", (3, 5)), ("9", (2, 4))):
        module = model.get_submodule(name)
        kind = kind_of(module)
        profile = ErrorProfile.of(kind.tt_tensor(module, 3))
        layer = kind.build(module, rank, "stt", None, "qr_svd", 3)
        error = torch.linalg.norm(kind.effective_weight(layer).detach() - module.weight.detach().double()) / torch.linalg.norm(module.weight.double())
        assert float(error.detach()) <= profile.bound(rank) + 1e-9


def test_uniform_on_tt_matrices_shrinks_each_layer() -> None:
    dims = {"a": (4 * 8, 4 * 8, 4 * 4), "b": (2 * 8, 5 * 8, 4 * 8)}
    for name, resolved in uniform_ranks(dims, 8.0).items():
        assert math.prod(dims[name]) / tensor_tt_params(dims[name], resolved.effective) >= 8.0


def test_macs_budget_leaves_conv1d_and_linear_to_the_per_layer_rule() -> None:
    config = CompressConfig(RankSpec("budget", value=4.0), layer_types=("conv1d", "linear"), budget_on="macs")
    assert free_layers(plan_layers(_audio(), config)[0], config) == {}


# ------------------------------------------------------------------------------------------------ fisher
def _digits_calibration(samples: int = 16, steps: int = 2):
    full = load_data("digits", timesteps=steps, augment=False)
    data = DataBundle("digits", Subset(full.train, range(64)), Subset(full.test, range(8)), (1, 16, 16), 10)
    return data, calibration_set(data, samples, steps, 0)


def test_fisher_is_a_mean_squared_gradient_and_restores_the_model() -> None:
    torch.manual_seed(0)
    model = user_nets.sequential_net(channels=4)
    model.train()
    for p in model.parameters():
        p.requires_grad_(False)
    _, calibration = _digits_calibration()
    layers = {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    fisher = fisher_information(model, layers, calibration.inputs, calibration.labels, batch_size=8)
    assert model.training and not any(p.requires_grad for p in model.parameters())
    copy.deepcopy(model)  # no neuron keeps a state with the last batch's graph (init_hidden neurons)
    assert all(p.grad is None for p in model.parameters())
    for name, value in fisher.items():
        assert value.shape == layers[name].weight.shape and bool((value >= 0).all())
    assert any(float(value.sum()) > 0 for value in fisher.values())
    # by hand: the mean over the two batches of the squared gradient
    for p in model.parameters():
        p.requires_grad_(True)
    model.eval()
    from ttsnn_cli.spiking.runner import run_timesteps
    name = max(fisher, key=lambda n: float(fisher[n].sum()))
    total = torch.zeros_like(layers[name].weight, dtype=torch.float64)
    for start in (0, 8):
        x, y = calibration.inputs[:, start:start + 8], calibration.labels[start:start + 8]
        loss = nn.functional.cross_entropy(run_timesteps(model, x, fold=True).mean(0), y)
        grad, = torch.autograd.grad(loss, [layers[name].weight])
        total += grad.double() ** 2
    torch.testing.assert_close(fisher[name], total / 2)


def test_fisher_error_is_zero_at_full_rank_relative_and_grows_as_ranks_fall() -> None:
    torch.manual_seed(0)
    model = user_nets.sequential_net(channels=6)
    data, calibration = _digits_calibration()
    config = CompressConfig(RankSpec("fisher", value=4.0))
    layers = free_layers(plan_layers(model, config)[0], config)
    base, curves = measure_sensitivity(model, layers, calibration, candidate_factors([4.0]), "stt", 2,
                                       criterion="fisher")
    for name, curve in curves.items():
        errors = [p.loss_increase for p in curve.points]
        assert all(0 <= v <= 1 + 1e-9 for v in errors) and errors[0] >= errors[-1]
        conv = layers[name]
        kind = kind_of(conv)
        full = kind.build(conv, unfolding_caps(tt_dims({name: conv}, 3)[name]), "stt", 2, "qr_svd", 3)
        fisher = fisher_information(model, {name: conv}, calibration.inputs, calibration.labels)[name]
        assert fisher_error(fisher, conv.weight, kind.effective_weight(full)) < 1e-12
        assert fisher_error(fisher, conv.weight, torch.zeros_like(conv.weight)) == pytest.approx(1.0)
    # a layer the loss ignores (zero Fisher) is measured by its plain relative error, never free
    weight = torch.randn(4, 3, 3, 3)
    assert fisher_error(torch.zeros(4, 3, 3, 3, dtype=torch.float64), weight, 0.5 * weight) == pytest.approx(0.25)


def test_minmax_allocation_balances_the_worst_layer() -> None:
    """The min-max rule: within budget, and no layer can take one step up without breaking it while the
    worst layer stays where it is (the level is the smallest that fits)."""
    shape_dims = (64, 3, 3, 64)
    dense = math.prod(shape_dims)

    def curve(name: str, scale: float) -> LayerCurve:
        points = [Point((r,) * 3, tensor_tt_params(shape_dims, (r,) * 3), scale / r, scale / r) for r in (1, 2, 4, 8, 16, 32)]
        return LayerCurve(name, dense, points)

    curves = {"hard": curve("hard", 1.0), "easy": curve("easy", 0.1)}
    chosen = minmax_ranks(curves, 6.0)
    spent = sum(tensor_tt_params(shape_dims, r.effective) for r in chosen.values())
    assert 2 * dense / spent >= 6.0
    assert chosen["hard"].effective[0] > chosen["easy"].effective[0]  # the hard layer keeps more
    assert all(r.note.startswith("fisher 6x (min-max)") for r in chosen.values())
    assert "cannot be met" in minmax_ranks(curves, 1e6)["hard"].note


@pytest.mark.parametrize("method, criterion, wording", [("fisher", "fisher", "Fisher"),
                                                     ("recovery", "recovered", "second half")])
def test_min_max_data_methods_meet_their_budget_and_say_how_they_chose(method: str, criterion: str, wording: str) -> None:
    """fisher:X and recovery:X (measured on held-out samples): the budget met, the notes and the JSON
    say how, and the curves a sweep stores read back."""
    torch.manual_seed(0)
    model = user_nets.sequential_net(channels=6)
    data, _ = _digits_calibration()
    config = CompressConfig(RankSpec(method, value=4.0))  # type: ignore[arg-type]
    layers = free_layers(plan_layers(model, config)[0], config)
    chosen, document = sensitivity_ranks(model, layers, 4.0, data, 16, 2, 0, method=method)
    assert document["criterion"] == criterion and wording in document["loss"]
    dims = tt_dims(layers, 3)
    dense = sum(math.prod(d) for d in dims.values())
    assert dense / sum(tensor_tt_params(dims[n], chosen[n].effective) for n in dims) >= 4.0
    assert all(r.note.startswith(f"{method} 4x (min-max)") for r in chosen.values())
    check_curves(document, f"{method}.json", dims)


def test_measured_curves_cover_conv1d_and_linear_layers() -> None:
    """sensitivity:X measures Conv1d and TT-matrix Linear layers too (the digits Conv1d net)."""
    torch.manual_seed(0)
    model = user_nets.digits_conv1d(hidden=8)
    data, calibration = _digits_calibration(samples=8)
    config = CompressConfig(RankSpec("sensitivity", value=2.0), layer_types=("conv1d", "linear"))
    layers = free_layers(plan_layers(model, config)[0], config)
    assert {type(m) for m in layers.values()} == {nn.Conv1d, nn.Linear}
    base, curves = measure_sensitivity(model, layers, calibration, candidate_factors([2.0]), "stt", 2)
    document = curves_document(base, curves, calibration, 0) | {"factors": candidate_factors([2.0])}
    check_curves(document, "c.json", tt_dims(layers, 3))
    assert all(len(p.ranks) == 2 for c in curves.values() for p in c.points)


# ------------------------------------------------------------------------------------------------ recovery
def test_recover_trains_only_the_layer_and_leaves_the_model_as_it_was() -> None:
    torch.manual_seed(0)
    model = user_nets.sequential_net(channels=6)
    model.train()
    _, calibration = _digits_calibration()
    frozen = {n for n, p in model.named_parameters() if n.startswith("2.")}
    for n, p in model.named_parameters():
        p.requires_grad_(n not in frozen)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    conv = model.get_submodule("4")
    layer = kind_of(conv).build(conv, (2, 2, 2), "stt", 2, "qr_svd", 3)
    start = [p.detach().clone() for p in layer.parameters()]
    model.set_submodule("4", layer)
    recover(model, layer, calibration.inputs, calibration.labels, steps=3, batch_size=8)
    assert any(not torch.equal(a, b) for a, b in zip(start, layer.parameters()))  # the cores moved
    model.set_submodule("4", conv)
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]) and p.grad is None, n
        assert p.requires_grad == (n not in frozen), n
    assert model.training
    copy.deepcopy(model)  # no neuron keeps the last batch's graph


def test_recovery_needs_two_calibration_samples_before_any_work(tmp_path) -> None:
    from typer.testing import CliRunner

    from ttsnn_cli.cli.commands import app

    result = CliRunner().invoke(app, ["compress", "--arch", "zoo:digits_csnn", "--rank-method", "recovery:8",
                                      "--data", "digits", "--calib-samples", "1", "-o", str(tmp_path / "r.tt")])
    assert result.exit_code == 3 and "--calib-samples 2 or more" in result.output
    assert not (tmp_path / "r.tt").exists()
