"""layers.conv1d: the TT Conv1d against its dense oracle, over every Conv1d shape option."""

from __future__ import annotations

import pytest
import torch
from oracle import rel_error, shape_grid
from torch import nn

from ttsnn_cli.layers.conv1d import PTT_REFUSAL, TTConv1d
from ttsnn_cli.maths import tt
from ttsnn_cli.spiking.state import reset_states, time_folded

GRID = shape_grid([2, 3, 5], [1, 2, 3], [0, 1, 2, "same", "valid"], [1, 2])


def planted_conv1d(cout: int, cin: int, k: int, ranks: tuple[int, int]) -> torch.Tensor:
    """A (Cout, Cin, k) kernel of exact TT ranks `ranks`, from random cores."""
    r1, r2 = ranks
    cores = tt.TTCores1d(torch.randn(r1, cin, dtype=torch.float64), torch.randn(k, r2, r1, dtype=torch.float64),
                         torch.randn(cout, r2, dtype=torch.float64))
    return tt.conv1d_kernel(cores).float()


def test_caps_and_param_count() -> None:
    assert tt.max_tt_ranks_1d((64, 32, 3)) == (32, 64)
    assert tt.max_tt_ranks_1d((4, 32, 5)) == (20, 4)
    assert tt.tt_param_count_1d((64, 32, 3), (4, 5)) == 32 * 4 + 3 * 4 * 5 + 5 * 64


def test_planted_conv1d_kernel_is_recovered_at_its_rank_and_not_below() -> None:
    kernel = planted_conv1d(24, 16, 5, (4, 6))
    assert tt.relative_error(tt.conv1d_kernel(tt.tt_svd_conv1d(kernel, (4, 6))), kernel) < 1e-6
    assert tt.relative_error(tt.conv1d_kernel(tt.tt_svd_conv1d(kernel, (4, 5))), kernel) > 1e-3


@pytest.mark.parametrize("channels,kernel,stride,padding,dilation,bias", GRID)
def test_full_rank_stt_reproduces_the_dense_conv1d(channels, kernel, stride, padding, dilation, bias) -> None:
    conv = nn.Conv1d(*channels, kernel, stride, padding, dilation, bias=bias)
    layer = TTConv1d.from_conv(conv, tt.max_tt_ranks_1d(tuple(conv.weight.shape)))
    x = torch.randn(2, channels[0], 17)
    with torch.no_grad():
        assert rel_error(layer(x), conv(x)) < 1e-5
        assert tt.relative_error(layer.effective_kernel(), conv.weight) < 1e-6


@pytest.mark.parametrize("padding_mode", ["reflect", "replicate", "circular"])
@pytest.mark.parametrize("padding", [1, 2, "same"])
def test_full_rank_stt_with_non_zero_padding_modes(padding_mode: str, padding) -> None:
    conv = nn.Conv1d(4, 6, 4, padding=padding, dilation=1 if padding == "same" else 2, padding_mode=padding_mode)
    layer = TTConv1d.from_conv(conv, tt.max_tt_ranks_1d(tuple(conv.weight.shape)))
    x = torch.randn(2, 4, 15)
    with torch.no_grad():
        assert rel_error(layer(x), conv(x)) < 1e-5


@pytest.mark.parametrize("channels,kernel,stride,padding,dilation,bias", GRID[::4])
def test_htt_full_then_reduced_steps_match_their_oracles(channels, kernel, stride, padding, dilation, bias) -> None:
    """Steps t < ceil(T/2) are the dense conv; later steps the 1x1 G3 G1 read at the centre tap."""
    conv = nn.Conv1d(*channels, kernel, stride, padding, dilation, bias=bias)
    r = min(tt.max_tt_ranks_1d(tuple(conv.weight.shape)))
    layer = TTConv1d.from_conv(conv, (r, r), "htt", timesteps=3)
    oracle = nn.Conv1d(*channels, kernel, stride, padding, dilation, bias=bias)
    reduced = torch.zeros_like(conv.weight)
    centre = tt.centre_tap(kernel)
    with torch.no_grad():
        oracle.weight.copy_(layer.effective_kernel())
        reduced[:, :, centre] = layer.reduced_kernel().float()
        if bias:
            oracle.bias.copy_(conv.bias)
        x = torch.randn(3, 2, channels[0], 16)
        reset_states(layer)
        per_step = [layer(x[t]) for t in range(3)]
        assert rel_error(per_step[0], oracle(x[0])) < 1e-5 and rel_error(per_step[1], oracle(x[1])) < 1e-5
        oracle.weight.copy_(reduced)
        assert rel_error(per_step[2], oracle(x[2])) < 1e-5
        with time_folded(layer, 3):
            folded = layer(x.flatten(0, 1)).unflatten(0, (3, 2))
        assert rel_error(folded, torch.stack(per_step)) < 1e-6


def test_ptt_is_refused_and_htt_needs_equal_ranks() -> None:
    conv = nn.Conv1d(4, 6, 3)
    with pytest.raises(ValueError, match="two spatial axes"):
        TTConv1d.from_conv(conv, (2, 2), "ptt")
    assert "Conv1d" in PTT_REFUSAL
    with pytest.raises(ValueError, match="equal ranks"):
        TTConv1d.from_conv(conv, (2, 3), "htt", timesteps=4)


def test_low_rank_layer_trains_and_config_round_trips() -> None:
    conv = nn.Conv1d(8, 12, 3, stride=2, padding=1)
    layer = TTConv1d.from_conv(conv, (3, 4))
    layer(torch.randn(2, 8, 20)).square().sum().backward()
    assert all(p.grad is not None for p in layer.parameters())
    twin = TTConv1d.from_config(layer.config())
    twin.load_state_dict(layer.state_dict())
    x = torch.randn(2, 8, 20)
    with torch.no_grad():
        assert torch.equal(twin(x), layer(x))
