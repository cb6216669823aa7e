"""layers.conv2d: every TT mode against its dense oracle, over every conv shape the decomposer accepts."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from oracle import rel_error, shape_grid
from torch import nn

from ttsnn_cli.layers.conv2d import TTConv2d
from ttsnn_cli.maths import tt
from ttsnn_cli.spiking.state import reset_states, time_folded

GRID = shape_grid([3, 5, (3, 5), (2, 4)], [1, 2, (2, 1)], [0, 1, (2, 1), "same"], [1, 2])


def _conv(channels, kernel, stride, padding, dilation, bias, padding_mode="zeros") -> nn.Conv2d | None:
    if padding == "same" and stride != 1:
        return None  # torch forbids strided 'same'
    return nn.Conv2d(*channels, kernel, stride, padding, dilation, bias=bias, padding_mode=padding_mode)


@pytest.mark.parametrize("channels,kernel,stride,padding,dilation,bias", GRID)
def test_full_rank_stt_reproduces_the_dense_conv(channels, kernel, stride, padding, dilation, bias) -> None:
    conv = _conv(channels, kernel, stride, padding, dilation, bias)
    if conv is None:
        pytest.skip("strided 'same' padding is not a torch conv")
    layer = TTConv2d.from_conv(conv, tt.max_tt_ranks(tuple(conv.weight.shape)), "stt")
    x = torch.randn(2, channels[0], 13, 11)
    with torch.no_grad():
        assert rel_error(layer(x), conv(x)) < 1e-5


@pytest.mark.parametrize("padding_mode", ["reflect", "replicate", "circular"])
def test_full_rank_stt_with_non_zero_padding_modes(padding_mode: str) -> None:
    conv = nn.Conv2d(4, 6, (3, 5), stride=(2, 1), padding=(1, 2), padding_mode=padding_mode)
    layer = TTConv2d.from_conv(conv, tt.max_tt_ranks(tuple(conv.weight.shape)))
    x = torch.randn(2, 4, 12, 10)
    with torch.no_grad():
        assert rel_error(layer(x), conv(x)) < 1e-5


@pytest.mark.parametrize("channels,kernel,stride,padding,dilation,bias", GRID[::3])
@pytest.mark.parametrize("mode", ["ptt", "htt"])
def test_parallel_path_equals_a_dense_conv_with_its_cross_kernel(channels, kernel, stride, padding, dilation, bias, mode) -> None:
    conv = _conv(channels, kernel, stride, padding, dilation, bias)
    if conv is None:
        pytest.skip("strided 'same' padding is not a torch conv")
    r = min(tt.max_tt_ranks(tuple(conv.weight.shape)))
    layer = TTConv2d.from_conv(conv, (r, r, r), mode, timesteps=4)
    oracle = _conv(channels, kernel, stride, padding, dilation, bias)
    with torch.no_grad():
        oracle.weight.copy_(layer.effective_kernel())
        if bias:
            oracle.bias.copy_(conv.bias)
        x = torch.randn(2, channels[0], 13, 11)
        reset_states(layer)
        assert rel_error(layer(x), oracle(x)) < 1e-5


def test_ptt_forward_is_the_paper_equation_for_same_convs() -> None:
    """Y = G4 ((G2 A + G3 A) / 2), computed here from the core weights with F.conv2d directly."""
    conv = nn.Conv2d(6, 8, 3, padding=1)
    layer = TTConv2d.from_conv(conv, (4, 4, 4), "ptt")
    x = torch.randn(2, 6, 9, 9)
    with torch.no_grad():
        a = F.conv2d(x, layer.core1.weight)
        vertical = F.conv2d(a, layer.core2.weight, padding=(1, 0))
        horizontal = F.conv2d(a, layer.core3.weight, padding=(0, 1))
        expected = F.conv2d((vertical + horizontal) / 2, layer.core4.weight, layer.core4.bias)
        assert torch.allclose(layer(x), expected, atol=1e-6)


@pytest.mark.parametrize("steps", [4, 6, 7])
def test_htt_uses_the_parallel_path_for_the_first_half_then_one_by_one(steps: int) -> None:
    conv = nn.Conv2d(5, 7, 3, stride=2, padding=1)
    htt = TTConv2d.from_conv(conv, (4, 4, 4), "htt", timesteps=steps)
    ptt = TTConv2d.from_conv(conv, (4, 4, 4), "ptt")
    ptt.load_state_dict(htt.state_dict())
    xs = torch.randn(steps, 3, 5, 12, 12)
    full = math.ceil(steps / 2)
    reset_states(htt)
    with torch.no_grad():
        per_step = torch.stack([htt(xs[t]) for t in range(steps)])
        for t in range(steps):
            a = htt.core1(xs[t])
            reduced = htt.core4(a[..., ::2, ::2])  # centre tap of a padded 3x3, stride 2
            expected = ptt(xs[t]) if t < full else reduced
            assert torch.allclose(per_step[t], expected, atol=1e-6), t
        with time_folded(htt, steps):
            folded = htt(xs.flatten(0, 1)).unflatten(0, (steps, 3))
        assert torch.allclose(folded, per_step, atol=1e-6)
        # a reset starts the count again
        reset_states(htt)
        assert torch.allclose(htt(xs[0]), per_step[0], atol=1e-6)


def test_htt_without_timesteps_and_ptt_with_unequal_ranks_are_refused() -> None:
    with pytest.raises(ValueError, match="timesteps"):
        TTConv2d(4, 4, 3, (2, 2, 2), "htt")
    with pytest.raises(ValueError, match="equal ranks"):
        TTConv2d(4, 4, 3, (2, 3, 2), "ptt")
    with pytest.raises(ValueError, match="grouped"):
        TTConv2d.from_conv(nn.Conv2d(4, 4, 3, groups=2), (2, 2, 2))


def test_cores_are_trainable_parameters_and_config_round_trips() -> None:
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=1)
    layer = TTConv2d.from_conv(conv, (2, 3, 2))
    names = {name for name, p in layer.named_parameters() if p.requires_grad}
    assert names == {"core1.weight", "core2.weight", "core3.weight", "core4.weight", "core4.bias"}
    clone = TTConv2d.from_config(layer.config())
    clone.load_state_dict(layer.state_dict())
    x = torch.randn(1, 4, 8, 8)
    assert torch.equal(clone(x), layer(x))
    layer(x).sum().backward()
    assert all(p.grad is not None for p in layer.parameters())


def test_ptt_branch_sum_goes_into_core2s_buffer_and_leaves_a_hooked_output_alone():
    """The sum is bitwise the out-of-place one; with a hook holding core2's output, that output
    stays what the hook saw."""
    torch.manual_seed(0)
    layer = TTConv2d(6, 8, 3, (4, 4, 4), mode="ptt", padding=1)
    x = torch.randn(2, 6, 5, 5)
    a = layer.core1(x)
    expected = layer.core2(a) + layer.core3(a)
    assert torch.equal(layer._branch_sum(a), expected)
    kept = []
    layer.core2.register_forward_hook(lambda module, args, out: kept.append((out, out.clone())))
    assert torch.equal(layer._branch_sum(a), expected)
    held, seen = kept[0]
    assert torch.equal(held, seen)
