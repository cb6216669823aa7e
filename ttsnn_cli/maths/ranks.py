"""Choosing TT ranks, resolved in one place before any decomposition (tensorly's `validate_tt_rank`).

Methods (DESIGN.md): `fixed` (an int, or r1,r2,r3), `vbmf` (Empirical VBMF, the paper's choice),
`energy:F` (smallest ranks keeping fraction F of every unfolding's spectral energy), and three that
share one weight budget X over all decomposed layers:

- `budget:X` (global, no data): the ranks whose TT cores hold at most 1/X of the decomposed kernels'
  weights *in total* while making the worst layer's normalised reconstruction error as small as
  possible (min-max, as ALDS does). The error of a rank choice is Oseledets' TT-SVD bound,
  ||W - TT(W)||^2 / ||W||^2 <= sum_k tail_k(r_k) (tail_k: the fraction of spectral energy the k-th
  unfolding loses at rank r_k), so a common error level e gives each layer the smallest ranks with
  tail_k(r_k) <= e / 3; the smallest level whose ranks fit the budget is found by bisection over the
  finite set of levels where some rank changes. Layers with redundant spectra give weights to those
  without, so per-layer shrink factors differ.
- `uniform:X` (what `budget:X` meant before): every layer on its own, the largest equal ranks whose
  cores are at least X times smaller than its kernel.
- `sensitivity:X` (needs data, `ttsnn_cli.compress.sensitivity`): the same global budget, spent where the
  measured loss increase per weight saved is smallest.
- `fisher:X` (needs data): `budget:X`'s min-max rule on each layer's Fisher-weighted relative error
  sum F (W - TT(W))^2 / sum F W^2, F the diagonal empirical Fisher information: the reconstruction
  error weighted by how much the loss cares about each weight (`ttsnn_cli.compress.fisher`).
- `recovery:X` (needs data): min-max on each layer's loss measured after a few SGD steps of its
  cores alone (`ttsnn_cli.compress.recovery`): what fine-tuning can recover, not the raw damage.

The global methods allocate every layer whose kind allows it (Conv2d; Conv1d and TT-matrix Linear
under a weight budget), through each layer's TT tensor (`LayerKind.tt_tensor`).

What the budget counts (`--budget-on`) is a `Costs`: the kernels' weights (`WeightCosts`, the
default), or a cost the caller measures per layer and rank (MACs per timestep at the shapes the model
sees, measured step time: `ttsnn_cli.compress.costs`). The allocators only ever ask a `Costs` for a
layer's dense cost and its cost at some ranks, so one allocator serves every budget.

Requested ranks are always capped by the kernel's TT ranks, and the caller reports the effective
ranks, never the requested ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import torch
from scipy.optimize import minimize_scalar

from ttsnn_cli.maths.tt import Ranks, max_tt_ranks, tensor_tt_params, tt_unfoldings, unfolding_caps

Method = Literal["fixed", "vbmf", "energy", "budget", "uniform", "sensitivity", "fisher", "recovery"]

#: methods that spend one weight budget X over all decomposed layers at once
GLOBAL_METHODS = ("budget", "uniform", "sensitivity", "fisher", "recovery")

#: global methods that choose from per-layer loss curves measured on data (`compress.sensitivity`)
DATA_METHODS = ("sensitivity", "fisher", "recovery")


#: what a global budget counts (`--budget-on`): TT core weights, MACs per timestep, or measured step time
BUDGET_ON = ("weights", "macs", "time")


class Costs(Protocol):
    """What a global budget counts, per layer: its dense cost and its cost at TT ranks.

    Why a protocol: the allocators (`budget_ranks`, `uniform_ranks`, `sensitivity.choose_ranks`)
    only compare sums of these numbers, so weights, MACs and seconds share one allocator."""

    #: the budget's unit, as notes and the JSON name it (`weights`, `MACs`, `seconds`)
    unit: str

    def dense(self, name: str) -> float:
        """The layer's cost as the dense layer it replaces."""
        ...

    def at(self, name: str, ranks: Ranks) -> float:
        """The layer's cost as a TT layer at `ranks` (non-decreasing in every rank)."""
        ...


class WeightCosts:
    """The default budget: TT core weights against the dense kernel's (what `budget:X` always meant).

    Keyed by each layer's TT tensor dims (`LayerKind.tt_dims`: a Conv2d's (Cin, kh, kw, Cout), a
    Conv1d's (Cin, k, Cout), a TT-matrix's (m_k n_k)...), so Conv2d, Conv1d and Linear layers share it."""

    unit = "weights"

    def __init__(self, dims: dict[str, tuple[int, ...]]) -> None:
        self.dims = dict(dims)

    def dense(self, name: str) -> float:
        return float(math.prod(self.dims[name]))

    def at(self, name: str, ranks: Ranks) -> float:
        return float(tensor_tt_params(self.dims[name], ranks))


class RankSpecError(ValueError):
    """A rank or rank-method the user wrote that makes no sense; the message says what is allowed."""


@dataclass(frozen=True)
class RankSpec:
    method: Method = "fixed"
    ranks: Ranks | None = None
    value: float | None = None

    def describe(self) -> str:
        if self.method == "fixed":
            return f"fixed {','.join(map(str, self.ranks))}" if self.ranks else "per-layer"
        return self.method if self.value is None else f"{self.method}:{self.value:g}"


def parse_ranks(text: str | int | list[int] | tuple[int, ...]) -> Ranks:
    """`8` -> (8, 8, 8); `8,16,8` -> (8, 16, 8). Anything else is a RankSpecError."""
    if isinstance(text, int) and not isinstance(text, bool):
        parts: list = [text]
    elif isinstance(text, (list, tuple)):
        parts = list(text)
    else:
        parts = [p.strip() for p in str(text).split(",")]
    try:
        values = [int(p) for p in parts]
    except (TypeError, ValueError):
        raise RankSpecError(f"ranks must be whole numbers: an int (r1 = r2 = r3) or r1,r2,r3; got {text!r}") from None
    if len(values) == 1:
        values = values * 3
    if len(values) != 3:
        raise RankSpecError(f"ranks take one value or three (r1,r2,r3), got {len(values)}: {text!r}")
    if min(values) < 1:
        raise RankSpecError(f"ranks must be at least 1, got {text!r}")
    return values[0], values[1], values[2]


def parse_rank_spec(ranks: str | int | None, method: str | None, per_layer: bool = False) -> RankSpec:
    """Combine `--ranks` and `--rank-method` into one validated spec.

    With `per_layer` (a recipe's per-layer table exists), fixed ranks may be absent: every layer to
    decompose must then be listed in the table.
    """
    method = (method or "fixed").strip()
    name, _, argument = method.partition(":")
    if name == "fixed":
        if ranks is None and per_layer:
            return RankSpec("fixed", None)
        if ranks is None:
            raise RankSpecError("give --ranks (e.g. --ranks 8 or --ranks 8,16,8) or a --rank-method "
                                "(vbmf, energy:0.95, budget:8, uniform:8, sensitivity:8, fisher:8, recovery:8)")
        return RankSpec("fixed", parse_ranks(ranks))
    if ranks is not None:
        raise RankSpecError(f"--ranks fixes the ranks, --rank-method {method} chooses them: give one, not both")
    if name == "vbmf":
        if argument:
            raise RankSpecError(f"vbmf takes no argument, got {method!r}")
        return RankSpec("vbmf")
    if name == "energy" or name in GLOBAL_METHODS:
        try:
            value = float(argument)
        except ValueError:
            raise RankSpecError(f"{name} needs a number, e.g. {name}:{'0.95' if name == 'energy' else '8'}; got {method!r}") from None
        if name == "energy" and not 0 < value <= 1:
            raise RankSpecError(f"energy:F keeps a fraction F of the spectral energy, 0 < F <= 1; got {value:g}")
        if name != "energy" and not (math.isfinite(value) and value >= 1):
            raise RankSpecError(f"{name}:X shrinks the decomposed weights X times, X >= 1; got {value:g}")
        return RankSpec(name, value=value)  # type: ignore[arg-type]
    raise RankSpecError(f"unknown rank method {method!r}; choose fixed, vbmf, energy:F, budget:X, uniform:X, sensitivity:X, fisher:X or recovery:X")


@dataclass(frozen=True)
class ResolvedRanks:
    requested: Ranks
    effective: Ranks
    note: str | None = None  # why effective differs from requested, or how they were chosen


def round_ranks(resolved: ResolvedRanks, multiple: int, caps: tuple[int, ...], equal: bool) -> ResolvedRanks:
    """`--round-ranks N`: each effective rank to the nearest multiple of N (at least N), never above
    its cap (a bond capped below N keeps its cap); equal ranks stay equal.

    Why: GPU tensor cores run GEMMs and convolutions whose channel counts are multiples of 8 (bf16)
    fastest; the paper's ranks (24-186, mostly odd) waste them. The counts reported follow the
    rounded ranks, so a global budget may end a little over or under its target (the JSON says)."""
    if multiple <= 1:
        return resolved
    rounded = tuple(min(cap, max(multiple, multiple * math.floor(r / multiple + 0.5)))
                    for r, cap in zip(resolved.effective, caps))
    if equal:
        rounded = (min(rounded),) * len(rounded)
    if rounded == tuple(resolved.effective):
        return resolved
    note = (f"rounded from {','.join(map(str, resolved.effective))} to {','.join(map(str, rounded))} "
            f"(--round-ranks {multiple})")
    return ResolvedRanks(resolved.requested, rounded, f"{resolved.note}; {note}" if resolved.note else note)  # type: ignore[arg-type]


def cap_ranks(shape: tuple[int, ...], requested: Ranks, equal: bool) -> ResolvedRanks:
    """Cap to the kernel's TT ranks; with `equal` (PTT/HTT) all three become the same value."""
    caps = max_tt_ranks(shape)
    if equal:
        if len(set(requested)) != 1:
            raise RankSpecError(f"PTT and HTT need equal ranks r1 = r2 = r3, got {','.join(map(str, requested))}")
        r = min(requested[0], *caps)
        effective: Ranks = (r, r, r)
    else:
        effective = tuple(min(r, c) for r, c in zip(requested, caps))  # type: ignore[assignment]
    note = None
    if effective != requested:
        note = f"capped from {','.join(map(str, requested))} to {','.join(map(str, effective))} (kernel TT ranks {','.join(map(str, caps))})"
    return ResolvedRanks(requested, effective, note)


def resolve_layer_ranks(weight: torch.Tensor, spec: RankSpec, equal: bool) -> ResolvedRanks:
    """Ranks for one kernel under a per-layer method (fixed, vbmf, energy)."""
    shape = tuple(weight.shape)
    if spec.method == "fixed":
        if spec.ranks is None:
            raise RankSpecError("has no ranks: give --ranks, or list it under compress.layers")
        return cap_ranks(shape, spec.ranks, equal)
    if spec.method == "vbmf":
        rank, note = vbmf_rank(weight)
        resolved = cap_ranks(shape, (rank, rank, rank), equal=True)
        return ResolvedRanks(resolved.requested, resolved.effective, note or resolved.note)
    if spec.method == "energy":
        assert spec.value is not None
        wanted = energy_ranks(weight, spec.value)
        if equal:
            wanted = (max(wanted),) * 3
        return cap_ranks(shape, wanted, equal)
    raise RankSpecError(f"{spec.method} ranks are chosen over all layers at once, not per layer")


def unfoldings(weight: torch.Tensor) -> list[torch.Tensor]:
    """The three TT unfoldings of the (Cin, kh, kw, Cout) tensor, float64."""
    tensor = weight.detach().to(torch.float64).cpu().permute(1, 2, 3, 0)
    dims = tensor.shape
    return [tensor.reshape(math.prod(dims[:k]), -1) for k in (1, 2, 3)]


def energy_ranks(weight: torch.Tensor, fraction: float) -> Ranks:
    """Smallest ranks keeping `fraction` of each unfolding's spectral energy (sum of squared s.v.)."""
    ranks = []
    for matrix in unfoldings(weight):
        energy = torch.linalg.svdvals(matrix) ** 2
        total = float(energy.sum())
        if total == 0:
            ranks.append(1)
            continue
        kept = torch.cumsum(energy, 0) / total
        ranks.append(int(torch.searchsorted(kept, torch.tensor(fraction - 1e-12, dtype=kept.dtype)).item()) + 1)
    return ranks[0], ranks[1], ranks[2]


def uniform_ranks(dims: dict[str, tuple[int, ...]], factor: float, costs: Costs | None = None) -> dict[str, ResolvedRanks]:
    """`uniform:X`: per layer, the largest equal rank r whose TT layer costs at most 1/X of the dense
    layer (in weights by default, or in what `costs` counts). `dims`: each layer's TT tensor dims.

    Every layer shrinks at least X times, so the decomposed layers as a whole do too; a layer
    too small to shrink that much gets rank 1 (and the note says so).
    """
    costs = costs or WeightCosts(dims)
    resolved = {}
    for name, shape in dims.items():
        bonds = len(shape) - 1
        dense = costs.dense(name)
        limit = min(unfolding_caps(shape))
        rank = 1
        while rank < limit and costs.at(name, (rank + 1,) * bonds) * factor <= dense:
            rank += 1
        note = f"uniform {factor:g}x: rank {rank}"
        if costs.at(name, (rank,) * bonds) * factor > dense:
            what = "" if costs.unit == "weights" else f"'s {costs.unit}"
            note += f" (even rank 1 shrinks this layer{what} only {dense / costs.at(name, (1,) * bonds):.2f}x)"
        resolved[name] = ResolvedRanks((rank,) * bonds, (rank,) * bonds, note)  # type: ignore[arg-type]
    return resolved


@dataclass(frozen=True)
class ErrorProfile:
    """A TT tensor's spectral tails: `tails[k][r]` is the fraction of ||W||^2 that the k-th TT unfolding
    loses at rank r (index 0 = 1), so Oseledets' bound on the squared normalised TT-SVD error at
    ranks (r1, ..., r_(d-1)) is the sum of tails[k][r_k]. Any kind's TT tensor (`LayerKind.tt_tensor`)."""

    dims: tuple[int, ...]
    tails: tuple[np.ndarray, ...]

    @classmethod
    def of(cls, tensor: torch.Tensor) -> ErrorProfile:
        tails = []
        for matrix in tt_unfoldings(tensor):
            energy = (torch.linalg.svdvals(matrix) ** 2).numpy()
            total = float(energy.sum())
            if total == 0:
                tails.append(np.zeros(len(energy) + 1))
                continue
            kept = np.concatenate([[0.0], np.cumsum(energy)]) / total
            tails.append(np.clip(1.0 - kept, 0.0, None))
        return cls(tuple(tensor.shape), tuple(tails))

    @property
    def bonds(self) -> int:
        return len(self.tails)

    def equal_levels(self) -> np.ndarray:
        """Squared bound at equal ranks r = r1 = ... = r_(d-1), indexed by r (0 .. the smallest cap)."""
        top = min(len(tail) for tail in self.tails)
        return sum(tail[:top] for tail in self.tails)

    def ranks_at(self, level: float, equal: bool) -> Ranks:
        """The smallest ranks whose squared bound is at most `level`: with `equal`, the smallest equal
        rank; otherwise each unfolding keeps its own smallest rank within level / (d - 1)."""
        if equal:
            return (_first_at_most(self.equal_levels(), level),) * self.bonds  # type: ignore[return-value]
        ranks = [_first_at_most(tail, level / self.bonds) for tail in self.tails]
        for k in range(1, self.bonds - 1):  # TT-SVD cannot exceed a neighbour's rank times its mode
            ranks[k] = max(1, min(ranks[k], ranks[k - 1] * self.dims[k], ranks[k + 1] * self.dims[k + 1]))
        return tuple(ranks)  # type: ignore[return-value]

    def bound(self, ranks: Ranks) -> float:
        """Oseledets' bound on the normalised error ||W - TT(W)|| / ||W|| at `ranks`."""
        total = sum(float(tail[min(r, len(tail) - 1)]) for tail, r in zip(self.tails, ranks))
        return math.sqrt(max(total, 0.0))

    def levels(self, equal: bool) -> np.ndarray:
        """Every level at which some rank of this tensor changes."""
        if equal:
            return np.unique(self.equal_levels()[1:])
        return np.unique(np.concatenate([self.bonds * tail[1:] for tail in self.tails]))


def lowest_fitting(levels: list[float], fits: Callable[[float], bool]) -> int:
    """The index of the smallest of the ascending `levels` that `fits`, by bisection: `fits` must hold
    for every level above one that fits (a larger error level never costs more), and for the last."""
    low, high = 0, len(levels) - 1
    while low < high:
        middle = (low + high) // 2
        if fits(levels[middle]):
            high = middle
        else:
            low = middle + 1
    return high


def _first_at_most(values: np.ndarray, level: float) -> int:
    """The first index r >= 1 with values[r] <= level (values non-increasing), else the last index."""
    hits = np.nonzero(values[1:] <= level * (1 + 1e-12) + 1e-15)[0]
    return int(hits[0]) + 1 if len(hits) else len(values) - 1


def budget_ranks(tensors: dict[str, torch.Tensor], factor: float, equal: bool | dict[str, bool] = True,
                 costs: Costs | None = None) -> dict[str, ResolvedRanks]:
    """`budget:X` (see the module docstring): min-max normalised error under a global budget.

    `tensors` maps layer names to their TT tensors (`LayerKind.tt_tensor`: a Conv2d's (Cin, kh, kw,
    Cout), a Conv1d's, a TT-matrix's), `equal` says (for all, or per layer) whether the layer's mode
    needs equal ranks. The ranks returned make
    sum(TT cost) <= sum(dense cost) / X (cost: weights, or what `costs` counts) whenever rank 1
    everywhere does; otherwise every layer gets rank 1 and the notes say the budget cannot be met.
    Every level's ranks are non-decreasing as the level falls, so for any cost non-decreasing in the
    ranks the bisection finds the smallest level that fits.
    """
    profiles = {name: ErrorProfile.of(t) for name, t in tensors.items()}
    costs = costs or WeightCosts({name: p.dims for name, p in profiles.items()})
    same = {name: equal if isinstance(equal, bool) else equal[name] for name in profiles}
    dense = sum(costs.dense(name) for name in profiles)
    allowed = dense / factor
    unit = "" if costs.unit == "weights" else f" in {costs.unit}"

    def plan(level: float) -> dict[str, Ranks]:
        return {name: p.ranks_at(level, same[name]) for name, p in profiles.items()}

    def cost(ranks: dict[str, Ranks]) -> float:
        return sum(costs.at(name, r) for name, r in ranks.items())

    top = float(max(p.bonds for p in profiles.values()))  # the level at which every rank is 1
    levels = np.unique(np.concatenate([[0.0, top], *(p.levels(same[n]) for n, p in profiles.items())]))
    if cost(plan(levels[-1])) > allowed:
        ones = {name: (1,) * p.bonds for name, p in profiles.items()}
        reached = dense / cost(ones)  # type: ignore[arg-type]
        note = (f"budget {factor:g}x{unit} cannot be met: rank 1 everywhere shrinks the decomposed layers' "
                f"{costs.unit} only {reached:.2f}x")
        return {name: ResolvedRanks(r, r, note) for name, r in ones.items()}  # type: ignore[arg-type]
    chosen = plan(levels[lowest_fitting(list(levels), lambda level: cost(plan(level)) <= allowed)])
    worst = max(profiles[name].bound(r) for name, r in chosen.items())
    resolved = {}
    for name, ranks in chosen.items():
        note = (f"budget {factor:g}x{unit} (global): error bound {profiles[name].bound(ranks):.3f} "
                f"(worst layer {worst:.3f}), this layer {costs.dense(name) / costs.at(name, ranks):.2f}x smaller{unit}")
        resolved[name] = ResolvedRanks(ranks, ranks, note)
    return resolved


# ------------------------------------------------------------------------------------- EVBMF
def vbmf_rank(weight: torch.Tensor) -> tuple[int, str | None]:
    """The paper's rule: EVBMF rank of the mode-0 unfolding (Cout x Cin*kh*kw), else mode-1.

    The paper's code stops there and returns 0 on untrained weights; we never return 0: when both
    unfoldings show no signal above the noise, we keep 90 % of the mode-0 spectral energy instead,
    and the note says so (VBMF ranks are only meaningful for trained weights).
    """
    w = weight.detach().to(torch.float64).cpu()
    cout, cin, kh, kw = w.shape
    mode0 = w.reshape(cout, -1)
    rank = evbmf_rank(mode0.numpy())
    if rank > 0:
        return rank, None
    mode1 = w.permute(1, 0, 2, 3).reshape(cin, -1)
    rank = evbmf_rank(mode1.numpy())
    if rank > 0:
        return rank, "vbmf: mode-0 unfolding gave rank 0, used mode-1"
    energy = torch.linalg.svdvals(mode0) ** 2
    kept = torch.cumsum(energy, 0) / energy.sum()
    fallback = int(torch.searchsorted(kept, torch.tensor(0.9, dtype=kept.dtype)).item()) + 1
    return fallback, f"vbmf found no signal above noise (untrained weights?); used 90% energy rank {fallback}"


def evbmf_rank(matrix: np.ndarray) -> int:
    """Empirical VBMF (Nakajima et al., JMLR 2013, Thm. 2 and the noise-variance estimate).

    The noise variance sigma^2 is found by minimising the free energy; components whose singular
    value exceeds sqrt(M sigma^2 (1 + tau)(1 + alpha / tau)) are kept.
    """
    y = np.asarray(matrix, dtype=np.float64)
    if y.shape[0] > y.shape[1]:
        y = y.T
    length, width = y.shape  # L <= M
    alpha = length / width
    tau_bar = 2.5129 * np.sqrt(alpha)
    s = np.linalg.svd(y, compute_uv=False)
    if not np.any(s > 0):
        return 0
    x_bar = (1 + tau_bar) * (1 + alpha / tau_bar)
    h_upper = int(min(np.ceil(length / (1 + alpha)) - 1, length)) - 1
    h_upper = max(0, min(h_upper, length - 1))
    upper = float(np.sum(s**2) / (length * width))
    tail = s[h_upper + 1 :] if h_upper + 1 < len(s) else s[-1:]
    lower = max(float(s[min(h_upper + 1, len(s) - 1)] ** 2 / (width * x_bar)), float(np.mean(tail**2) / width))
    if not lower < upper:
        lower = upper * 1e-6

    def free_energy(sigma2: float) -> float:
        x = s**2 / (width * sigma2)
        z1 = x[x > x_bar]
        z2 = x[x <= x_bar]
        tau_z1 = 0.5 * (z1 - (1 + alpha) + np.sqrt(np.maximum((z1 - (1 + alpha)) ** 2 - 4 * alpha, 0)))
        term1 = np.sum(z2 - np.log(z2))
        term2 = np.sum(z1 - tau_z1)
        term3 = np.sum(np.log((tau_z1 + 1) / z1))
        term4 = alpha * np.sum(np.log(tau_z1 / alpha + 1))
        return float(term1 + term2 + term3 + term4)

    sigma2 = minimize_scalar(free_energy, bounds=(lower, upper), method="bounded").x
    threshold = np.sqrt(width * sigma2 * (1 + tau_bar) * (1 + alpha / tau_bar))
    return int(np.sum(s > threshold))
