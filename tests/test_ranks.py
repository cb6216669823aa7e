"""ranks.py: parsing, capping, VBMF (never 0), energy and budget."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ttsnn_cli import tt
from ttsnn_cli.ranks import (
    RankSpecError,
    budget_ranks,
    cap_ranks,
    energy_ranks,
    evbmf_rank,
    parse_rank_spec,
    parse_ranks,
    vbmf_rank,
)
from test_tt import planted_kernel


def test_parse_ranks_accepts_one_or_three() -> None:
    assert parse_ranks("8") == (8, 8, 8)
    assert parse_ranks("8,16,8") == (8, 16, 8)
    assert parse_ranks([4, 5, 6]) == (4, 5, 6)
    assert parse_ranks(3) == (3, 3, 3)


@pytest.mark.parametrize("text", ["0", "-2", "abc", "8,8,8,8", "8,8", "1.5", ""])
def test_parse_ranks_refuses_nonsense(text: str) -> None:
    with pytest.raises(RankSpecError):
        parse_ranks(text)


@pytest.mark.parametrize("method", ["energy:1.5", "energy:0", "energy:x", "budget:0.5", "vbmf:3", "magic", "budget:"])
def test_parse_rank_method_refuses_nonsense(method: str) -> None:
    with pytest.raises(RankSpecError):
        parse_rank_spec(None, method)


def test_ranks_and_method_together_are_refused_and_fixed_needs_ranks() -> None:
    with pytest.raises(RankSpecError, match="not both"):
        parse_rank_spec("8", "vbmf")
    with pytest.raises(RankSpecError, match="--ranks"):
        parse_rank_spec(None, None)
    assert parse_rank_spec(None, None, per_layer=True).ranks is None


def test_capped_ranks_are_reported_as_effective() -> None:
    resolved = cap_ranks((4, 3, 3, 3), (64, 64, 64), equal=False)
    assert resolved.effective == tt.max_tt_ranks((4, 3, 3, 3)) == (3, 9, 4)
    assert "capped" in resolved.note
    assert cap_ranks((4, 3, 3, 3), (64, 64, 64), equal=True).effective == (3, 3, 3)
    with pytest.raises(RankSpecError, match="equal"):
        cap_ranks((8, 8, 3, 3), (2, 3, 2), equal=True)


@pytest.mark.parametrize("rank", [2, 7, 15])
def test_evbmf_finds_a_planted_rank_under_noise(rank: int) -> None:
    rng = np.random.default_rng(rank)
    signal = rng.normal(size=(48, rank)) @ rng.normal(size=(rank, 300))
    noisy = signal + 0.3 * rng.normal(size=signal.shape)
    assert evbmf_rank(noisy) == rank
    assert evbmf_rank(noisy.T) == rank


def test_vbmf_never_returns_zero_on_random_weights() -> None:
    rank, note = vbmf_rank(torch.randn(32, 32, 3, 3))
    assert rank >= 1
    assert "no signal" in note


def test_energy_ranks_recover_planted_ranks() -> None:
    kernel = planted_kernel(16, 12, 3, 3, (3, 5, 4))
    assert energy_ranks(kernel, 0.999999) == (3, 5, 4)
    assert energy_ranks(kernel, 0.5)[0] <= 3


def test_budget_shrinks_every_layer_at_least_the_factor() -> None:
    shapes = {"a": (64, 64, 3, 3), "b": (128, 64, 3, 3), "c": (256, 256, 3, 3)}
    resolved = budget_ranks(shapes, 8.0)
    for name, shape in shapes.items():
        r = resolved[name].effective
        dense = int(np.prod(shape))
        assert dense / tt.tt_param_count(shape, r) >= 8.0
        bigger = (r[0] + 1,) * 3
        assert dense / tt.tt_param_count(shape, bigger) < 8.0  # largest such rank
