"""compress.decompose on whole networks in both user styles: layer by layer, then spikes statistically."""

from __future__ import annotations

import copy

import pytest
import torch
import user_nets
from torch import nn

from ttsnn_cli.compress.decompose import CompressConfig, compress_model
from ttsnn_cli.errors import BadInputError
from ttsnn_cli.layers.conv2d import TTConv2d
from ttsnn_cli.maths.ranks import RankSpec
from ttsnn_cli.spiking.runner import run_timesteps

FULL = RankSpec("fixed", (10_000, 10_000, 10_000))  # capped to each kernel's full TT ranks


def _make_spiky(model: nn.Module) -> None:
    """Scale weights so that neurons spike often enough for a meaningful comparison."""
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, (nn.Conv2d, nn.Linear)):
                layer.weight.mul_(5)


def _conv_inputs(model: nn.Module, run) -> dict[str, list[torch.Tensor]]:
    seen: dict[str, list[torch.Tensor]] = {}
    hooks = [m.register_forward_hook(lambda mod, args, out, n=n: seen.setdefault(n, []).append(args[0].detach()))
             for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and "." not in n.replace("core", "")]
    run(model)
    for hook in hooks:
        hook.remove()
    return seen


@pytest.mark.parametrize("factory,shape", [(user_nets.sequential_net, (1, 16, 16)), (user_nets.loop_net, (1, 16, 14))])
def test_full_rank_stt_network_matches_dense_layer_by_layer_and_in_spikes(factory, shape) -> None:
    dense = factory().eval()
    _make_spiky(dense)
    tt_model, result = compress_model(copy.deepcopy(dense), CompressConfig(FULL, allow_growth=True))
    decomposed = {r.name for r in result.layers if r.skipped is None}
    assert decomposed and all(isinstance(tt_model.get_submodule(n), TTConv2d) for n in decomposed)
    assert all(r.rel_error < 1e-5 for r in result.layers if r.skipped is None)

    inputs = torch.rand(4, 8, *shape).repeat(1, 1, 1, 1, 1)
    static = inputs[:1].expand(4, -1, -1, -1, -1)
    with torch.no_grad():
        # layer by layer: every TT layer, fed what its dense conv saw, gives the dense output
        dense_inputs = _conv_inputs(dense, lambda m: run_timesteps(m, static))
        for name in decomposed:
            conv, layer = dense.get_submodule(name), tt_model.get_submodule(name)
            for x in dense_inputs[name]:
                expected = conv(x)
                assert float((layer(x) - expected).norm() / expected.norm().clamp_min(1e-12)) < 1e-5
        # whole network: spikes agree except rare float32 threshold flips
        dense_out = run_timesteps(dense, static)
        tt_out = run_timesteps(tt_model, static)
    assert dense_out.shape == tt_out.shape
    agreement = float((dense_out == tt_out).float().mean())
    assert agreement > 0.98, agreement


def test_skip_reasons_and_include_exclude() -> None:
    model = user_nets.loop_net()
    _, result = compress_model(model, CompressConfig(RankSpec("fixed", (2, 2, 2))))
    reasons = {r.name: r.skipped for r in result.layers}
    assert "depthwise" in reasons["depthwise"]
    assert reasons["fc"].startswith("Linear")
    assert reasons["conv1"] is None and reasons["conv2"] is None

    seq = user_nets.sequential_net()
    _, result = compress_model(seq, CompressConfig(RankSpec("fixed", (2, 2, 2)), exclude=[r"^0$"]))
    reasons = {r.name: r.skipped for r in result.layers}
    assert reasons["0"] == "excluded by --exclude ^0$"
    assert reasons["5"].startswith("1x1")
    assert reasons["2"] is None and reasons["4"] is None

    _, result = compress_model(user_nets.sequential_net(), CompressConfig(RankSpec("fixed", (2, 2, 2)), include=["^2$"]))
    assert [r.name for r in result.layers if r.skipped is None] == ["2"]


def test_per_layer_overrides_win_and_unlisted_layers_need_ranks() -> None:
    model = user_nets.sequential_net()
    _, result = compress_model(model, CompressConfig(RankSpec("fixed", (2, 2, 2)), overrides={"2": "3,4,5", "4": 2}))
    ranks = {r.name: r.ranks for r in result.layers if r.skipped is None}
    assert ranks == {"0": [1, 2, 2], "2": [3, 4, 5], "4": [2, 2, 2]}
    with pytest.raises(BadInputError, match="layer 0"):
        compress_model(user_nets.sequential_net(), CompressConfig(RankSpec("fixed", None), overrides={"2": 3}))


def test_totals_count_the_whole_model_and_the_decomposed_part() -> None:
    model = user_nets.sequential_net()
    before = sum(p.numel() for p in model.parameters())
    _, result = compress_model(model, CompressConfig(RankSpec("fixed", (2, 2, 2))))
    totals = result.totals
    assert totals["params_before"] == before
    assert totals["params_after"] == sum(p.numel() for p in model.parameters())
    assert totals["param_ratio"] == pytest.approx(before / totals["params_after"])
    decomposed = [r for r in result.layers if r.skipped is None]
    assert totals["decomposed_params_after"] == sum(r.params_after for r in decomposed)


def test_no_eligible_layer_is_an_error() -> None:
    with pytest.raises(BadInputError, match="no layer to decompose"):
        compress_model(nn.Sequential(nn.Linear(3, 3)), CompressConfig(RankSpec("fixed", (2, 2, 2))))


def test_htt_needs_timesteps() -> None:
    with pytest.raises(BadInputError, match="timesteps"):
        compress_model(user_nets.sequential_net(), CompressConfig(RankSpec("fixed", (2, 2, 2)), mode="htt"))


@pytest.mark.parametrize("factory,shape", [(user_nets.sequential_net, (1, 16, 16)), (user_nets.loop_net, (1, 16, 14))])
def test_the_spike_comparison_is_not_vacuous(factory, shape) -> None:
    """The networks above really spike (else 'spikes agree' would prove nothing)."""
    dense = factory().eval()
    _make_spiky(dense)
    with torch.no_grad():
        out = run_timesteps(dense, torch.rand(1, 8, *shape).expand(4, -1, -1, -1, -1))
    assert 0.02 < float(out.float().mean()) < 0.98
