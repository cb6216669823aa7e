"""Ranks for the layer shapes beside Conv2d: a Conv1d's (r1, r2) and a TT-matrix's d - 1 ranks.

Pure functions of a shape's TT tensor, its rank caps and its weight count; the layer kinds
(`kinds/`) say which tensor, caps and count a layer type has.

The same methods as `ranks.py` (which stays the Conv2d authority), applied to each shape's TT
unfoldings:
- fixed: an int is every rank; `r1,r2,r3` (Conv2d's triple) maps to a Conv1d as (r1, r3), the
  input-side and output-side ranks, and to a TT-matrix only when all three are equal or d = 4;
  a per-layer override may give exactly the layer's own number of ranks;
- vbmf: EVBMF rank of each TT unfolding (90 % spectral energy where EVBMF finds no signal);
- energy:F: the smallest rank keeping fraction F of each unfolding's energy;
- budget:X: per layer, the largest equal rank whose cores are at least X times smaller.
Requested ranks are capped by the unfolding sizes, as for Conv2d.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ttsnn_cli.maths import tt
from ttsnn_cli.maths.ranks import RankSpec, RankSpecError, ResolvedRanks, evbmf_rank


def _fit(values: tuple[int, ...], count: int, triple_to_pair: bool) -> tuple[int, ...]:
    """Given ranks (1 value, 3 for Conv2d's triple, or the layer's own count) -> the layer's count."""
    if len(values) == count:
        return values
    if len(values) == 1 or len(set(values)) == 1:
        return (values[0],) * count
    if triple_to_pair and len(values) == 3:
        return (values[0], values[2])
    raise RankSpecError(f"ranks {','.join(map(str, values))} do not fit a layer with {count} TT rank(s): give one "
                        f"rank, or {count} under compress.layers")


def parse_override(value: int | str | list[int] | tuple[int, ...]) -> tuple[int, ...]:
    """A per-layer override: an int, 'a,b,...' or a list, of any length (checked against the layer later)."""
    parts = [value] if isinstance(value, int) and not isinstance(value, bool) else (
        list(value) if isinstance(value, (list, tuple)) else str(value).split(","))
    try:
        values = tuple(int(str(p).strip()) for p in parts)
    except ValueError:
        raise RankSpecError(f"ranks must be whole numbers, got {value!r}") from None
    if not values or min(values) < 1:
        raise RankSpecError(f"ranks must be at least 1, got {value!r}")
    return values


def _spectral_ranks(tensor: torch.Tensor, spec: RankSpec) -> tuple[tuple[int, ...], str | None]:
    notes = []
    ranks = []
    for matrix in tt.tt_unfoldings(tensor):
        energy = torch.linalg.svdvals(matrix) ** 2
        total = float(energy.sum())
        if spec.method == "vbmf":
            rank = evbmf_rank(matrix.numpy())
            if rank > 0:
                ranks.append(rank)
                continue
            notes.append("vbmf found no signal above noise in an unfolding; used its 90% energy rank")
            fraction = 0.9
        else:
            fraction = float(spec.value)  # type: ignore[arg-type]
        if total == 0:
            ranks.append(1)
            continue
        kept = torch.cumsum(energy, 0) / total
        ranks.append(int(torch.searchsorted(kept, torch.tensor(fraction - 1e-12, dtype=kept.dtype)).item()) + 1)
    return tuple(ranks), (notes[0] if notes else None)


def resolve_shape_ranks(tensor: Callable[[], torch.Tensor], caps: tuple[int, ...], core_weights: Callable[[tuple[int, ...]], int],
                        dense_weights: int, spec: RankSpec, override: object, equal: bool,
                        triple_to_pair: bool = False, shared: ResolvedRanks | None = None) -> ResolvedRanks:
    """The effective ranks of one layer whose TT tensor is `tensor()` (built only for vbmf/energy),
    with unfolding caps `caps` and `core_weights(ranks)` weights at given ranks (the module docstring
    says each method). `triple_to_pair`: Conv2d's `r1,r2,r3` means (r1, r3) here (a Conv1d).
    `shared`: the ranks a global method allocated to this layer (used unless overridden)."""
    note = None
    if override is not None:
        requested = _fit(parse_override(override), len(caps), triple_to_pair)  # type: ignore[arg-type]
    elif shared is not None:
        requested, note = tuple(shared.effective), shared.note
    elif spec.method == "fixed":
        if spec.ranks is None:
            raise RankSpecError("has no ranks: give --ranks, or list it under compress.layers")
        requested = _fit(tuple(spec.ranks), len(caps), triple_to_pair)
    elif spec.method in ("vbmf", "energy"):
        requested, note = _spectral_ranks(tensor(), spec)
    elif spec.method == "budget":
        rank = 1
        while rank < max(caps) and core_weights(tuple(min(rank + 1, c) for c in caps)) * float(spec.value) <= dense_weights:  # type: ignore[arg-type]
            rank += 1
        requested, note = (rank,) * len(caps), f"budget {spec.value:g}x: rank {rank} (per layer)"
    else:
        raise RankSpecError(f"unknown rank method {spec.method!r}")
    if equal:
        requested = (max(requested),) * len(requested)
    effective = tuple(min(r, c) for r, c in zip(requested, caps))
    if equal:
        effective = (min(effective),) * len(effective)
    if effective != requested and note is None:
        note = (f"capped from {','.join(map(str, requested))} to {','.join(map(str, effective))} "
                f"(TT ranks {','.join(map(str, caps))})")
    return ResolvedRanks(requested, effective, note)  # type: ignore[arg-type]


def describe_factors(in_factors: tuple[int, ...], out_factors: tuple[int, ...]) -> str:
    return f"TT-matrix {'x'.join(map(str, in_factors))} -> {'x'.join(map(str, out_factors))}"
