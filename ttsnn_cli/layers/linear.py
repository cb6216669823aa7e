"""The TT-matrix Linear: a drop-in replacement for one nn.Linear, as d trainable cores.

W (out, in) with out = m1*...*md and in = n1*...*nd (factors from `tt.factorize`) is held as cores
G_k of shape (r_{k-1}, m_k, n_k, r_k), r_0 = r_d = 1 (tt.py, "TT-matrix"). The forward never builds
W: it contracts the input with one core at a time,
    x [B, n1, ..., nd] -> ... -> [B, m1, ..., mk, r_k, n_{k+1}, ..., nd] -> ... -> [B, m1, ..., md],
each step one einsum over (r_{k-1}, n_k), so the cost is sum_k M_{<k} r_{k-1} n_k m_k r_k N_{>k}
MACs per input vector (`macs_per_item`) instead of in * out. Inputs are [..., in] like nn.Linear.

TT modes (STT/PTT/HTT) are about a conv's spatial cores; a TT-matrix has none, so it always runs
this exact chain, whatever mode the rest of the model uses.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ttsnn_cli.maths import tt


class TTLinear(nn.Module):
    """Linear as a TT-matrix. `cores[k]` is (r_{k-1}, m_k, n_k, r_k); `bias` is (out,) or None."""

    def __init__(self, in_features: int, out_features: int, in_factors: tuple[int, ...],
                 out_factors: tuple[int, ...], ranks: tuple[int, ...], bias: bool = True) -> None:
        super().__init__()
        in_factors, out_factors = tuple(int(f) for f in in_factors), tuple(int(f) for f in out_factors)
        ranks = tuple(int(r) for r in ranks)
        if len(in_factors) != len(out_factors) or len(ranks) != len(in_factors) - 1:
            raise ValueError(f"TT-matrix needs d in factors, d out factors and d - 1 ranks; got "
                             f"{in_factors}, {out_factors}, {ranks}")
        if math.prod(in_factors) != in_features or math.prod(out_factors) != out_features:
            raise ValueError(f"factors {in_factors} -> {out_factors} do not multiply to {in_features} -> {out_features}")
        if ranks and min(ranks) < 1:
            raise ValueError(f"TT ranks must be at least 1, got {ranks}")
        self.in_features, self.out_features = in_features, out_features
        self.in_factors, self.out_factors, self.ranks = in_factors, out_factors, ranks
        bonds = (1, *ranks, 1)
        self.cores = nn.ParameterList(
            nn.Parameter(torch.zeros(bonds[k], m, n, bonds[k + 1])) for k, (m, n) in enumerate(zip(out_factors, in_factors))
        )
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    @classmethod
    def from_linear(cls, linear: nn.Linear, ranks: tuple[int, ...], in_factors: tuple[int, ...],
                    out_factors: tuple[int, ...], svd: str = "qr_svd") -> TTLinear:
        """TT-SVD of `linear`'s weight (float64), cores stored in the layer's dtype; bias copied."""
        layer = cls(linear.in_features, linear.out_features, in_factors, out_factors, ranks, linear.bias is not None)
        cores = tt.tt_matrix_svd(linear.weight, layer.out_factors, layer.in_factors, layer.ranks, svd)
        with torch.no_grad():
            for param, core in zip(layer.cores, cores):
                param.copy_(core)
            if linear.bias is not None:
                layer.bias.copy_(linear.bias.detach())
        return layer.to(device=linear.weight.device, dtype=linear.weight.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        t = x.reshape(-1, 1, 1, x.shape[-1])  # [B * M_{<k}, r_{k-1}, n_k * N_{>k}] with k = 1
        rest = self.in_features
        for core, n in zip(self.cores, self.in_factors):
            rest //= n
            t = t.reshape(-1, core.shape[0], n, rest)
            t = torch.einsum("arnz,rmns->amsz", t, core)  # [B * M_{<k}, m_k, r_k, N_{>k}]
        out = t.reshape(*lead, self.out_features)
        return out if self.bias is None else out + self.bias

    def macs_per_item(self) -> int:
        """MACs of one input vector through the chain: sum_k M_{<k} r_{k-1} n_k m_k r_k N_{>k}."""
        bonds, total, before, rest = (1, *self.ranks, 1), 0, 1, self.in_features
        for k, (m, n) in enumerate(zip(self.out_factors, self.in_factors)):
            rest //= n
            total += before * bonds[k] * n * m * bonds[k + 1] * rest
            before *= m
        return total

    def effective_weight(self) -> torch.Tensor:
        """The dense (out, in) matrix the cores compute, float64 (for errors, NIR and --reconstruct-dense)."""
        return tt.tt_matrix_weight([c.detach().to(torch.float64).cpu() for c in self.cores])

    def param_count(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def extra_repr(self) -> str:
        return (f"{self.in_features}, {self.out_features}, in_factors={self.in_factors}, "
                f"out_factors={self.out_factors}, ranks={self.ranks}")

    def config(self) -> dict:
        return {"in_features": self.in_features, "out_features": self.out_features,
                "in_factors": list(self.in_factors), "out_factors": list(self.out_factors),
                "ranks": list(self.ranks), "bias": self.bias is not None, "mode": "stt"}

    @classmethod
    def from_config(cls, config: dict) -> TTLinear:
        return cls(config["in_features"], config["out_features"], tuple(config["in_factors"]),
                   tuple(config["out_factors"]), tuple(config["ranks"]), bool(config["bias"]))
