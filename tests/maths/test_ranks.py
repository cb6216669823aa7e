"""maths.ranks: parsing, capping, VBMF (never 0), energy, uniform and the global budget."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_tt import planted_kernel

from ttsnn_cli.maths import tt
from ttsnn_cli.maths.ranks import (
    ErrorProfile,
    RankSpecError,
    budget_ranks,
    cap_ranks,
    energy_ranks,
    evbmf_rank,
    parse_rank_spec,
    parse_ranks,
    uniform_ranks,
    vbmf_rank,
)


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


def test_uniform_shrinks_every_layer_at_least_the_factor() -> None:
    shapes = {"a": (64, 64, 3, 3), "b": (128, 64, 3, 3), "c": (256, 256, 3, 3)}
    resolved = uniform_ranks({n: _dims(s) for n, s in shapes.items()}, 8.0)
    for name, shape in shapes.items():
        r = resolved[name].effective
        dense = int(np.prod(shape))
        assert dense / tt.tt_param_count(shape, r) >= 8.0
        bigger = (r[0] + 1,) * 3
        assert dense / tt.tt_param_count(shape, bigger) < 8.0  # largest such rank


def _mixed_layers() -> dict[str, torch.Tensor]:
    """One layer with a low-rank (redundant) kernel, two full-rank random ones of different sizes."""
    torch.manual_seed(0)
    return {
        "redundant": planted_kernel(48, 48, 3, 3, (4, 6, 4)) + 1e-3 * torch.randn(48, 48, 3, 3),
        "random": torch.randn(48, 48, 3, 3),
        "wide": torch.randn(96, 48, 3, 3),
    }


def _dims(shape: tuple) -> tuple:
    """A Conv2d kernel shape (Cout, Cin, kh, kw) as its TT tensor's dims (Cin, kh, kw, Cout)."""
    cout, cin, kh, kw = shape
    return (cin, kh, kw, cout)


def _tensors(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {n: tt.conv2d_tensor(w) for n, w in weights.items()}


def _tt_weights(shapes: dict[str, tuple], ranks: dict[str, tuple]) -> int:
    return sum(tt.tt_param_count(shapes[n], ranks[n]) for n in shapes)


@pytest.mark.parametrize("factor", [2.0, 4.0, 8.0, 16.0])
@pytest.mark.parametrize("equal", [True, False])
def test_global_budget_meets_the_total_and_beats_uniform_on_the_worst_layer(factor: float, equal: bool) -> None:
    weights = _mixed_layers()
    shapes = {n: tuple(w.shape) for n, w in weights.items()}
    dense = sum(int(np.prod(s)) for s in shapes.values())
    chosen = {n: r.effective for n, r in budget_ranks(_tensors(weights), factor, equal).items()}
    assert dense / _tt_weights(shapes, chosen) >= factor
    profiles = {n: ErrorProfile.of(tt.conv2d_tensor(w)) for n, w in weights.items()}
    uniform = {n: r.effective for n, r in uniform_ranks({n: _dims(s) for n, s in shapes.items()}, factor).items()}
    worst_global = max(profiles[n].bound(chosen[n]) for n in weights)
    worst_uniform = max(profiles[n].bound(uniform[n]) for n in weights)
    if equal:  # the same family of choices as uniform: min-max can only do better
        assert worst_global <= worst_uniform + 1e-12
        assert all(len(set(r)) == 1 for r in chosen.values())
    # the redundant layer gives weights away: it shrinks more than the random ones
    ratio = {n: np.prod(shapes[n]) / tt.tt_param_count(shapes[n], chosen[n]) for n in shapes}
    assert ratio["redundant"] > ratio["random"]


def test_global_budget_is_tight_one_rank_more_for_the_worst_layer_breaks_it() -> None:
    weights = _mixed_layers()
    shapes = {n: tuple(w.shape) for n, w in weights.items()}
    dense = sum(int(np.prod(s)) for s in shapes.values())
    chosen = {n: r.effective for n, r in budget_ranks(_tensors(weights), 8.0, equal=True).items()}
    profiles = {n: ErrorProfile.of(tt.conv2d_tensor(w)) for n, w in weights.items()}
    worst = max(weights, key=lambda n: profiles[n].bound(chosen[n]))
    bigger = dict(chosen, **{worst: (chosen[worst][0] + 1,) * 3})
    assert dense / _tt_weights(shapes, bigger) < 8.0


def test_error_bound_holds_for_real_tt_svd() -> None:
    weight = torch.randn(24, 16, 3, 3)
    profile = ErrorProfile.of(tt.conv2d_tensor(weight))
    for ranks in [(2, 3, 2), (5, 8, 6), (16, 20, 24)]:
        ranks = tuple(min(r, c) for r, c in zip(ranks, tt.max_tt_ranks(tuple(weight.shape))))
        error = tt.relative_error(tt.stt_kernel(tt.tt_svd(weight, ranks)), weight)
        assert error <= profile.bound(ranks) + 1e-9


def test_global_budget_that_cannot_be_met_says_so() -> None:
    resolved = budget_ranks({"tiny": tt.conv2d_tensor(torch.randn(4, 1, 3, 3))}, 50.0)
    assert resolved["tiny"].effective == (1, 1, 1) and "cannot be met" in resolved["tiny"].note


def test_budget_and_uniform_parse_and_sensitivity_needs_a_number() -> None:
    assert parse_rank_spec(None, "budget:8").method == "budget"
    assert parse_rank_spec(None, "uniform:4").value == 4.0
    assert parse_rank_spec(None, "sensitivity:10").describe() == "sensitivity:10"
    for bad in ("uniform:0.5", "sensitivity:", "budget:inf", "sensitivity:nan"):
        with pytest.raises(RankSpecError):
            parse_rank_spec(None, bad)
