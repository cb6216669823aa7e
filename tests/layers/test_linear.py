"""layers.linear and maths.tt's TT-matrix: factorisation rule, exactness at full rank, planted ranks,
and a forward that matches the dense matrix for any leading shape."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ttsnn_cli.layers.linear import TTLinear
from ttsnn_cli.maths import tt


@pytest.mark.parametrize("size,parts,expected", [
    (784, 3, (14, 8, 7)), (1000, 3, (10, 10, 10)), (10, 3, (5, 2, 1)), (7, 2, (7, 1)), (1, 3, (1, 1, 1)),
    (128, 3, (8, 4, 4)), (64, 1, (64,)), (97, 3, (97, 1, 1)),
])
def test_factorize_is_balanced_and_exact(size: int, parts: int, expected: tuple[int, ...]) -> None:
    factors = tt.factorize(size, parts)
    assert factors == expected and math.prod(factors) == size and len(factors) == parts


def _full_ranks(out_f, in_f):
    return tt.max_tt_matrix_ranks(out_f, in_f)


@pytest.mark.parametrize("out_features,in_features,d,bias", [
    (10, 784, 3, True), (1000, 784, 3, False), (12, 30, 2, True), (7, 13, 3, True), (64, 128, 4, False),
])
def test_full_rank_tt_matrix_reproduces_the_dense_linear(out_features, in_features, d, bias) -> None:
    linear = nn.Linear(in_features, out_features, bias=bias)
    in_f, out_f = tt.factorize(in_features, d), tt.factorize(out_features, d)
    layer = TTLinear.from_linear(linear, _full_ranks(out_f, in_f), in_f, out_f)
    assert tt.relative_error(layer.effective_weight(), linear.weight) < 1e-6
    with torch.no_grad():
        for shape in [(5, in_features), (3, 2, in_features), (in_features,)]:
            x = torch.randn(*shape)
            y, want = layer(x), linear(x)
            assert y.shape == want.shape
            assert float((y - want).norm() / want.norm()) < 1e-5


def test_planted_tt_matrix_is_recovered_at_its_ranks_and_not_below() -> None:
    out_f, in_f, ranks = (4, 5, 3), (6, 4, 5), (3, 5)
    bonds = (1, *ranks, 1)
    cores = [torch.randn(bonds[k], m, n, bonds[k + 1], dtype=torch.float64) for k, (m, n) in enumerate(zip(out_f, in_f))]
    weight = tt.tt_matrix_weight(cores).float()
    assert tt.relative_error(tt.tt_matrix_weight(tt.tt_matrix_svd(weight, out_f, in_f, ranks)), weight) < 1e-6
    assert tt.relative_error(tt.tt_matrix_weight(tt.tt_matrix_svd(weight, out_f, in_f, (3, 4))), weight) > 1e-3


def test_forward_contracts_cores_without_the_dense_matrix_and_counts_its_macs() -> None:
    linear = nn.Linear(784, 1000)
    in_f, out_f = tt.factorize(784, 3), tt.factorize(1000, 3)
    layer = TTLinear.from_linear(linear, (8, 8), in_f, out_f)
    assert layer.param_count() == tt.tt_matrix_param_count(out_f, in_f, (8, 8)) + 1000
    assert layer.param_count() < linear.weight.numel() / 20
    # the MAC formula matches torch's own FLOP counter over the forward (2 FLOPs per MAC, + bias adds)
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        layer(torch.randn(3, 784))
    assert counter.get_total_flops() == 2 * 3 * layer.macs_per_item()
    assert layer.macs_per_item() < 784 * 1000  # (14,8,7) x (10,10,10) at rank 8: 477,120
    oracle = nn.Linear(784, 1000)
    with torch.no_grad():
        oracle.weight.copy_(layer.effective_weight())
        oracle.bias.copy_(layer.bias)
        x = torch.randn(4, 784)
        assert float((layer(x) - oracle(x)).norm() / oracle(x).norm()) < 1e-5


def test_gradients_reach_every_core_and_config_round_trips() -> None:
    layer = TTLinear.from_linear(nn.Linear(30, 12), (2, 3), (5, 3, 2), (3, 2, 2))
    layer(torch.randn(4, 30)).square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in layer.parameters())
    twin = TTLinear.from_config(layer.config())
    twin.load_state_dict(layer.state_dict())
    x = torch.randn(2, 30)
    with torch.no_grad():
        assert torch.equal(twin(x), layer(x))


def test_bad_factors_are_refused() -> None:
    with pytest.raises(ValueError, match="multiply"):
        TTLinear(30, 12, (5, 3, 3), (3, 2, 2), (2, 2))
    with pytest.raises(ValueError, match="d - 1 ranks"):
        TTLinear(30, 12, (5, 3, 2), (3, 2, 2), (2,))
