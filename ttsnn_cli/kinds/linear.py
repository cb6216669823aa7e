"""The Linear kind: nn.Linear <-> TTLinear, a TT-matrix of d cores (`--linear-cores`), on request only.

A TT-matrix has no spatial cores, so it runs its exact chain in every mode (the report's note says
so) and is a leaf for counting: its MACs are its contraction chain (`TTLinear.macs_per_item`), its
weights its cores, its hw workloads the chain's GEMMs (`hw.tt_matrix_steps`). NIR has no contraction
node: it exports as one Affine of the reconstructed weight.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ttsnn_cli.kinds.base import LayerKind, LeafCall
from ttsnn_cli.kinds.nir_nodes import to_numpy
from ttsnn_cli.layers.linear import TTLinear
from ttsnn_cli.maths import layer_ranks, tt
from ttsnn_cli.maths.ranks import RankSpec, ResolvedRanks


def linear_factors(linear: nn.Linear, cores: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(out factors, in factors) of a Linear's TT-matrix with `cores` cores (`tt.factorize`)."""
    return tt.factorize(linear.out_features, cores), tt.factorize(linear.in_features, cores)


def dense_linear(layer: TTLinear) -> nn.Linear:
    """The nn.Linear of a TT-matrix's reconstructed weight (`--reconstruct-dense`, NIR)."""
    linear = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None)
    with torch.no_grad():
        linear.weight.copy_(layer.effective_weight().to(linear.weight.dtype))
        if layer.bias is not None:
            linear.bias.copy_(layer.bias)
    return linear.to(layer.cores[0].dtype)


def _first_step_fanout(layer: TTLinear) -> int:
    """Values a TT-matrix's first contraction writes per input element: m_1 r_1."""
    return layer.out_factors[0] * (layer.ranks[0] if layer.ranks else 1)


class LinearKind(LayerKind):
    name, label, dense, tt = "linear", "Linear", nn.Linear, TTLinear
    has_cores = False
    budget_units = ("weights",)
    mode_applies = False
    folds_batchnorm = False

    def unselected_reason(self, module: nn.Module, layer_types: tuple[str, ...]) -> str:
        return "Linear: not in --layer-types (add linear to decompose it as a TT-matrix), stays dense"

    def resolve_ranks(self, module: nn.Module, spec: RankSpec, override: Any, mode: str, linear_cores: int,
                      shared: ResolvedRanks | None) -> ResolvedRanks:
        out_f, in_f = linear_factors(module, linear_cores)  # type: ignore[arg-type]
        return layer_ranks.resolve_shape_ranks(
            lambda: tt.matrix_tensor(module.weight, out_f, in_f), tt.max_tt_matrix_ranks(out_f, in_f),  # type: ignore[arg-type]
            lambda ranks: self.core_weights(module, ranks, linear_cores), module.weight.numel(),  # type: ignore[union-attr]
            spec, override, equal=False, shared=shared)

    def tt_tensor(self, module: nn.Module, linear_cores: int) -> torch.Tensor:
        return tt.matrix_tensor(module.weight, *linear_factors(module, linear_cores))  # type: ignore[arg-type]

    def equal_ranks(self, mode: str) -> bool:
        return False  # a TT-matrix runs one chain in every mode: its bonds are free

    def core_weights(self, module: nn.Module, ranks: tuple[int, ...], linear_cores: int) -> int:
        return tt.tt_matrix_param_count(*linear_factors(module, linear_cores), ranks)  # type: ignore[arg-type]

    def build(self, module: nn.Module, ranks: tuple[int, ...], mode: str, timesteps: int | None, svd: str,
              linear_cores: int) -> nn.Module:
        out_f, in_f = linear_factors(module, linear_cores)  # type: ignore[arg-type]
        return TTLinear.from_linear(module, ranks, in_f, out_f, svd)  # type: ignore[arg-type]

    def effective_weight(self, layer: nn.Module) -> torch.Tensor:
        return layer.effective_weight()  # type: ignore[operator]

    def note(self, module: nn.Module, mode: str, linear_cores: int) -> str | None:
        out_f, in_f = linear_factors(module, linear_cores)  # type: ignore[arg-type]
        note = layer_ranks.describe_factors(in_f, out_f)
        if mode != "stt":
            note += f" (no spatial cores: runs the exact chain in {mode.upper()} too)"
        return note

    def shape_fields(self, module: nn.Module) -> tuple[list[int] | None, int, int]:
        return None, module.in_features, module.out_features  # type: ignore[return-value]

    def describe(self, module: nn.Module) -> str:
        m: Any = module
        if self.owns_tt(module):
            return (f"{m.in_features}->{m.out_features}, TT-matrix "
                    f"{'x'.join(map(str, m.in_factors))} -> {'x'.join(map(str, m.out_factors))}")
        return f"{m.in_features}->{m.out_features}"

    def leaf_weights(self, module: nn.Module) -> int:
        if self.owns_tt(module):
            return sum(c.numel() for c in module.cores)  # type: ignore[union-attr]
        return module.weight.numel()  # type: ignore[union-attr]

    def leaf_call(self, module: nn.Module, x: torch.Tensor, out: torch.Tensor) -> LeafCall:
        m: Any = module
        items = out.numel() // m.out_features
        if self.owns_tt(module):
            total = items * m.macs_per_item()
            return LeafCall(items, total, total - items * m.in_features * _first_step_fanout(m), (1, 1), (1, 1))
        return LeafCall(items, out.numel() * m.in_features, 0, (1, 1), (1, 1))

    def exact_acs(self, module: nn.Module, x: torch.Tensor) -> int:
        """Dense: each nonzero input feeds every output; TT-matrix: its first step's m_1 r_1 values."""
        nonzero = int((x != 0).to(torch.float32).sum().item())
        return nonzero * (_first_step_fanout(module) if self.owns_tt(module) else module.out_features)  # type: ignore[arg-type]

    def count_type(self, module: nn.Module) -> str:
        return "tt-linear" if self.owns_tt(module) else "linear"

    def workloads(self, name: str, module: nn.Module, leaves: dict[str, Any]) -> list[Any]:
        from hw import LayerWorkload, tt_matrix_steps  # only here: compress and export never load the hw model

        m: Any = module
        stats = leaves.get(name)
        if stats is None or not stats.samples:
            return []
        if self.owns_tt(module):
            return tt_matrix_steps(name, m.in_factors, m.out_factors, m.ranks, stats.binary)
        return [LayerWorkload(name, 1, 1, 1, 1, m.in_features, m.out_features, kind="linear", spike_input=stats.binary)]

    def export_replacement(self, name: str, module: nn.Module, context: Any, reconstruct_dense: bool) -> nn.Module | None:
        return dense_linear(module) if reconstruct_dense else None  # type: ignore[arg-type]

    def nir_nodes(self, name: str, module: nn.Module, bn: nn.Module | None, x: torch.Tensor) -> tuple[list[tuple[str, Any]], torch.Tensor]:
        import nir

        m: Any = module
        if self.owns_tt(module):
            weight = m.effective_weight()
            meta = {"tt_layer": name, "tt_matrix": "reconstructed Affine: NIR has no tensor-contraction node, so the "
                    "TT-matrix cores are multiplied out", "in_factors": list(m.in_factors),
                    "out_factors": list(m.out_factors), "tt_ranks": list(m.ranks)}
            node = (nir.Affine(weight=to_numpy(weight), bias=to_numpy(m.bias), metadata=meta) if m.bias is not None
                    else nir.Linear(weight=to_numpy(weight), metadata=meta))
            return [(name, node)], m(x)
        node = (nir.Affine(weight=to_numpy(m.weight), bias=to_numpy(m.bias)) if m.bias is not None
                else nir.Linear(weight=to_numpy(m.weight)))
        return [(name, node)], m(x)
