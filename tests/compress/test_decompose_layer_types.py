"""decompose.py with --layer-types: Conv1d and Linear (TT-matrix) beside Conv2d, and what stays as it was."""

from __future__ import annotations

import copy

import pytest
import torch
import user_nets
from torch import nn

from ttsnn_cli.compress.decompose import CompressConfig, compress_model
from ttsnn_cli.errors import BadInputError
from ttsnn_cli.layers.conv1d import TTConv1d
from ttsnn_cli.layers.conv2d import TTConv2d
from ttsnn_cli.layers.linear import TTLinear
from ttsnn_cli.maths.ranks import RankSpec
from ttsnn_cli.spiking.runner import run_timesteps

FULL = RankSpec("fixed", (10_000, 10_000, 10_000))


def test_default_layer_types_leave_conv2d_models_exactly_as_before() -> None:
    model = user_nets.sequential_net()
    _, result = compress_model(model, CompressConfig(RankSpec("fixed", (4, 4, 4))))
    # the 1-channel stem would grow at these ranks (54 -> 70 weights): it stays dense, saying so
    assert [type(m) for m in model.modules() if isinstance(m, (TTConv2d, TTConv1d, TTLinear))] == [TTConv2d] * 2
    assert next(r for r in result.layers if r.name == "0").skipped.startswith("would grow 54 -> 70")
    linear = next(r for r in result.layers if r.type == "Linear")
    assert linear.skipped.startswith("Linear: not in --layer-types")


def test_audio_net_conv1d_layers_decompose_and_skips_are_stated() -> None:
    dense = user_nets.audio_net().eval()
    # full rank: every Conv1d would grow (its cores hold more than the kernel), so none is decomposed
    with pytest.raises(BadInputError, match="would grow"):
        compress_model(copy.deepcopy(dense), CompressConfig(FULL))
    model, result = compress_model(copy.deepcopy(dense), CompressConfig(RankSpec("fixed", (8, 8, 8))))
    by_name = {r.name: r for r in result.layers}
    assert by_name["5"].skipped.startswith("1-wide conv")
    assert {r.name for r in result.layers if r.skipped is None} == {"0", "2", "4"}
    assert all(isinstance(model.get_submodule(n), TTConv1d) for n in ("0", "2", "4"))
    x = torch.rand(4, 3, 16, 40)
    with torch.no_grad():
        out = run_timesteps(model, x)
    assert out[0].shape == run_timesteps(dense, x)[0].shape


def test_planted_low_rank_conv1d_and_linear_are_recovered_through_compress() -> None:
    dense = user_nets.audio_net().eval()
    with torch.no_grad():
        conv = dense[0]
        # plant a rank-(3, 4) Conv1d kernel: compress at those ranks recovers it to float precision
        from ttsnn_cli.maths import tt
        cores = tt.TTCores1d(torch.randn(3, 16, dtype=torch.float64), torch.randn(5, 4, 3, dtype=torch.float64),
                             torch.randn(32, 4, dtype=torch.float64))
        conv.weight.copy_(tt.conv1d_kernel(cores))
    config = CompressConfig(RankSpec("fixed", (8, 8, 8)), overrides={"0": [3, 4]}, layer_types=("conv1d",))
    model, result = compress_model(copy.deepcopy(dense), config)
    row = next(r for r in result.layers if r.name == "0")
    assert row.ranks == [3, 4] and row.rel_error < 1e-6
    x = torch.rand(2, 16, 40)
    with torch.no_grad():
        assert float((model[0](x) - conv(x)).norm() / conv(x).norm()) < 1e-5


def test_spiking_mlp_with_rleaky_decomposes_every_linear_including_the_recurrent_one() -> None:
    dense = user_nets.recurrent_mlp().eval()
    config = CompressConfig(RankSpec("fixed", (4, 4, 4)), layer_types=("linear",), linear_cores=2)
    model, result = compress_model(copy.deepcopy(dense), config)
    names = {r.name: r for r in result.layers}
    assert names["1"].skipped is None and names["2.recurrent"].skipped is None
    assert isinstance(model[2].recurrent, TTLinear)
    assert names["1"].note.startswith("TT-matrix 8x8 -> 12x8")
    x = torch.rand(5, 3, 1, 8, 8)
    with torch.no_grad():
        spikes = run_timesteps(model, x)
    assert spikes.shape[-2:] == (3, 10) if isinstance(spikes, torch.Tensor) else spikes[0].shape[-2:] == (3, 10)
    dense_layer, layer = dense[2].recurrent, model[2].recurrent
    y = torch.rand(3, 96)
    with torch.no_grad():  # the recurrent TT-matrix is the rank-4 TT-SVD of the dense one: close, not equal
        err = float((layer(y) - dense_layer(y)).norm() / dense_layer(y).norm())
    assert 0 < err < 1


def test_small_linear_that_would_grow_is_skipped_with_the_reason() -> None:
    dense = nn.Sequential(nn.Linear(10, 3), nn.Linear(784, 1000))
    _, result = compress_model(dense, CompressConfig(RankSpec("fixed", (8, 8, 8)), layer_types=("linear",)))
    assert result.layers[0].skipped.startswith("would grow")
    assert result.layers[1].skipped is None and result.layers[1].params_after < result.layers[1].params_before / 20


def test_ptt_is_refused_for_a_conv1d_in_one_line_naming_it() -> None:
    with pytest.raises(BadInputError, match=r"layer 0: PTT needs two spatial axes"):
        compress_model(user_nets.audio_net(), CompressConfig(RankSpec("fixed", (4, 4, 4)), mode="ptt"))
    # a PTT model of Conv2d and TT-matrix Linear layers is fine: the Linear runs its exact chain
    model, result = compress_model(user_nets.sequential_net(), CompressConfig(RankSpec("fixed", (4, 4, 4)), mode="ptt",
                                                                              layer_types=("conv2d", "linear")))
    linear = next(r for r in result.layers if r.type == "Linear")
    assert "exact chain in PTT" in linear.note


def test_htt_conv1d_takes_equal_ranks_and_no_layer_at_all_is_an_error() -> None:
    model, result = compress_model(user_nets.audio_net(), CompressConfig(RankSpec("fixed", (4, 6, 8)), mode="htt", timesteps=4))
    assert all(r.ranks[0] == r.ranks[1] for r in result.layers if r.skipped is None)
    with pytest.raises(BadInputError, match="no layer to decompose"):
        compress_model(user_nets.recurrent_mlp(), CompressConfig(RankSpec("fixed", (4, 4, 4))))


@pytest.mark.parametrize("method", [RankSpec("vbmf"), RankSpec("energy", value=0.9), RankSpec("budget", value=4)])
def test_rank_methods_resolve_for_conv1d_and_linear(method: RankSpec) -> None:
    dense = nn.Sequential(nn.Conv1d(16, 32, 5), nn.Linear(36, 256))
    _, result = compress_model(dense, CompressConfig(method, layer_types=("conv1d", "linear")))
    for row in result.layers:
        assert row.skipped is None or row.skipped.startswith("would grow")
        if row.skipped is None:
            assert row.ranks and min(row.ranks) >= 1
            if method.method == "budget":
                assert row.params_after * 4 <= row.params_before + 256 * 4 + 32 * 4  # weights shrink 4x (bias aside)
