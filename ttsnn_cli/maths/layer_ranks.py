"""Ranks for the layer shapes beside Conv2d: a Conv1d's (r1, r2) and a TT-matrix's d - 1 ranks.

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

import torch
from torch import nn

from ttsnn_cli.maths import tt
from ttsnn_cli.maths.ranks import RankSpec, RankSpecError, ResolvedRanks, evbmf_rank


def linear_factors(linear: nn.Linear, cores: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(out factors, in factors) of a Linear's TT-matrix with `cores` cores (`tt.factorize`)."""
    return tt.factorize(linear.out_features, cores), tt.factorize(linear.in_features, cores)


def shape_tensor(module: nn.Module, cores: int) -> torch.Tensor:
    """The tensor TT-SVD decomposes: (Cin, k, Cout) for a Conv1d, (m1 n1, ..., md nd) for a Linear."""
    if isinstance(module, nn.Conv1d):
        return tt.conv1d_tensor(module.weight)
    out_f, in_f = linear_factors(module, cores)  # type: ignore[arg-type]
    return tt.matrix_tensor(module.weight, out_f, in_f)


def caps_of(module: nn.Module, cores: int) -> tuple[int, ...]:
    if isinstance(module, nn.Conv1d):
        return tt.max_tt_ranks_1d(tuple(module.weight.shape))
    return tt.max_tt_matrix_ranks(*linear_factors(module, cores))  # type: ignore[arg-type]


def param_count_of(module: nn.Module, ranks: tuple[int, ...], cores: int) -> int:
    """Core weights at `ranks` (bias excluded)."""
    if isinstance(module, nn.Conv1d):
        return tt.tt_param_count_1d(tuple(module.weight.shape), ranks)  # type: ignore[arg-type]
    return tt.tt_matrix_param_count(*linear_factors(module, cores), ranks)  # type: ignore[arg-type]


def _fit(values: tuple[int, ...], count: int, conv1d: bool) -> tuple[int, ...]:
    """Given ranks (1 value, 3 for Conv2d's triple, or the layer's own count) -> the layer's count."""
    if len(values) == count:
        return values
    if len(values) == 1 or len(set(values)) == 1:
        return (values[0],) * count
    if conv1d and len(values) == 3:
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


def _spectral_ranks(module: nn.Module, cores: int, spec: RankSpec) -> tuple[tuple[int, ...], str | None]:
    notes = []
    ranks = []
    for matrix in tt.tt_unfoldings(shape_tensor(module, cores)):
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


def resolve_module_ranks(module: nn.Module, spec: RankSpec, override: object, equal: bool, cores: int) -> ResolvedRanks:
    """The effective ranks of one Conv1d or Linear (see the module docstring for each method)."""
    caps = caps_of(module, cores)
    conv1d = isinstance(module, nn.Conv1d)
    note = None
    if override is not None:
        requested = _fit(parse_override(override), len(caps), conv1d)  # type: ignore[arg-type]
    elif spec.method == "fixed":
        if spec.ranks is None:
            raise RankSpecError("has no ranks: give --ranks, or list it under compress.layers")
        requested = _fit(tuple(spec.ranks), len(caps), conv1d)
    elif spec.method in ("vbmf", "energy"):
        requested, note = _spectral_ranks(module, cores, spec)
    elif spec.method == "budget":
        dense = module.weight.numel()
        rank = 1
        while rank < max(caps) and param_count_of(module, tuple(min(rank + 1, c) for c in caps), cores) * float(spec.value) <= dense:  # type: ignore[arg-type]
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


def would_grow(module: nn.Module, ranks: tuple[int, ...], cores: int) -> str | None:
    """The skip reason when the cores at `ranks` hold no fewer weights than the dense layer."""
    after, before = param_count_of(module, ranks, cores), module.weight.numel()
    if after >= before:
        return (f"would grow: TT cores at ranks {','.join(map(str, ranks))} hold {after:,} weights, "
                f"the dense layer {before:,}; stays dense")
    return None


def describe_factors(module: nn.Module, cores: int) -> str:
    out_f, in_f = linear_factors(module, cores)  # type: ignore[arg-type]
    return f"TT-matrix {'x'.join(map(str, in_f))} -> {'x'.join(map(str, out_f))}"

