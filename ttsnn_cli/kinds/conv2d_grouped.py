"""The grouped Conv2d kind: nn.Conv2d with groups > 1 <-> TTConv2dGrouped, one TT chain per group.

A grouped conv is G independent convs (Cin/G -> Cout/G each), so each group gets its own STT chain
and the four cores of all groups run as four grouped convs (G groups each):
  core1: 1x1,     Cin   -> G r1       core2: kh x 1, G r1 -> G r2 (stride (s_h, 1), dilation (d_h, 1))
  core3: 1 x kw,  G r2  -> G r3       core4: 1x1,    G r3 -> Cout (+ bias)
Ranks (r1, r2, r3) are per group, resolved on one group's kernel shape (Cout/G, Cin/G, kh, kw) and
shared by all groups (vbmf / energy: the largest over the groups; budget: per layer).
Opt-in: `--layer-types conv2d_grouped` (default off, so existing results do not change; without it a
grouped conv keeps its skip reason). STT only: PTT and HTT are refused in one line. Depthwise convs
(Cin/G = 1) are grouped convs too, but their cores nearly always outgrow the kernel: growth skips them.
Counts, hw workloads and exports follow from the grouped cores: dense-side hooks are Conv2d's; ONNX
exports the cores as they are (or one grouped conv with --reconstruct-dense); NIR maps the cores to
three Conv2d nodes (block-diagonal kernels, exact; see `nir_nodes`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ttsnn_cli.errors import BadInputError
from ttsnn_cli.kinds.base import LayerKind
from ttsnn_cli.kinds.conv2d import Conv2dKind, hw_pads, skip_reason
from ttsnn_cli.kinds.nir_nodes import conv_node, fold_bn, symmetric_padding
from ttsnn_cli.kinds.stepmode import fold_steps
from ttsnn_cli.layers.conv2d import Pads, conv_padding
from ttsnn_cli.maths import tt
from ttsnn_cli.maths.ranks import RankSpec, RankSpecError, ResolvedRanks, cap_ranks, parse_ranks, resolve_layer_ranks


def _pair(value: int | tuple[int, ...]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


class TTConv2dGrouped(nn.Module):
    """A grouped Conv2d as four grouped TT cores (module docstring). Input [N, Cin, H, W]; output
    [N, Cout, Ho, Wo], exactly the grouped conv's."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int], ranks: tuple[int, int, int],
                 groups: int, stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] | Pads = 0,
                 dilation: int | tuple[int, int] = 1, bias: bool = True, padding_mode: str = "zeros",
                 mode: str = "stt") -> None:
        super().__init__()
        if mode != "stt":
            raise ValueError(f"a grouped TT conv runs STT only, got mode {mode!r}")
        if groups < 1 or in_channels % groups or out_channels % groups:
            raise ValueError(f"groups {groups} must divide channels {in_channels} -> {out_channels}")
        r1, r2, r3 = (int(r) for r in ranks)
        if min(r1, r2, r3) < 1:
            raise ValueError(f"TT ranks must be at least 1, got {ranks}")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size, self.stride, self.dilation = _pair(kernel_size), _pair(stride), _pair(dilation)
        if isinstance(padding, int) or len(padding) == 2:
            ph, pw = _pair(padding)
            padding = (pw, pw, ph, ph)
        self.padding: Pads = tuple(int(p) for p in padding)  # type: ignore[assignment]
        self.padding_mode, self.mode, self.ranks = padding_mode, mode, (r1, r2, r3)
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        self._mode_pad: Pads | None = None if padding_mode == "zeros" else self.padding
        left, right, top, bottom = (0, 0, 0, 0) if self._mode_pad else self.padding
        g = groups
        self.core1 = nn.Conv2d(in_channels, g * r1, 1, groups=g, bias=False)
        self.core2, self._pad2 = self._branch(g * r1, g * r2, (kh, 1), (sh, 1), (dh, 1), (0, 0, top, bottom))
        self.core3, self._pad3 = self._branch(g * r2, g * r3, (1, kw), (1, sw), (1, dw), (left, right, 0, 0))
        self.core4 = nn.Conv2d(g * r3, out_channels, 1, groups=g, bias=bias)

    def _branch(self, cin: int, cout: int, kernel: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int],
                pads: Pads) -> tuple[nn.Conv2d, Pads | None]:
        """A middle core; symmetric padding goes into the conv, asymmetric ('same') into an F.pad."""
        left, right, top, bottom = pads
        symmetric = left == right and top == bottom
        conv = nn.Conv2d(cin, cout, kernel, stride, (top, left) if symmetric else 0, dilation, groups=self.groups, bias=False)
        return conv, None if symmetric else pads

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, ranks: tuple[int, int, int], svd: str = "qr_svd") -> TTConv2dGrouped:
        """TT-SVD of each group's kernel (float64), cores stored in the conv's dtype; bias to core4."""
        layer = cls(conv.in_channels, conv.out_channels, conv.kernel_size, ranks, conv.groups, conv.stride,  # type: ignore[arg-type]
                    conv_padding(conv), conv.dilation, conv.bias is not None, conv.padding_mode)  # type: ignore[arg-type]
        per = conv.out_channels // conv.groups
        layer.load_cores([tt.tt_svd(conv.weight[g * per:(g + 1) * per], layer.ranks, svd) for g in range(conv.groups)])
        if conv.bias is not None:
            layer.core4.bias.data.copy_(conv.bias.detach())
        return layer.to(device=conv.weight.device, dtype=conv.weight.dtype)

    def load_cores(self, cores: list[tt.TTCores]) -> None:
        """One `tt.TTCores` per group, into the group's slice of each core (TTConv2d's layout)."""
        (r1, r2, r3), per = self.ranks, self.out_channels // self.groups
        with torch.no_grad():
            for g, c in enumerate(cores):
                self.core1.weight[g * r1:(g + 1) * r1].copy_(c.first[:, :, None, None])
                self.core2.weight[g * r2:(g + 1) * r2].copy_(c.vertical.permute(1, 2, 0)[:, :, :, None])
                self.core3.weight[g * r3:(g + 1) * r3].copy_(c.horizontal.permute(1, 2, 0)[:, :, None, :])
                self.core4.weight[g * per:(g + 1) * per].copy_(c.last[:, :, None, None])

    def cores(self) -> list[tt.TTCores]:
        """Each group's cores in the layout of `tt.TTCores` (float64 copies, detached, on CPU)."""
        (r1, r2, r3), per = self.ranks, self.out_channels // self.groups
        w = [core.weight.detach().to(torch.float64).cpu() for core in (self.core1, self.core2, self.core3, self.core4)]
        return [tt.TTCores(first=w[0][g * r1:(g + 1) * r1, :, 0, 0],
                           vertical=w[1][g * r2:(g + 1) * r2, :, :, 0].permute(2, 0, 1),
                           horizontal=w[2][g * r3:(g + 1) * r3, :, 0, :].permute(2, 0, 1),
                           last=w[3][g * per:(g + 1) * per, :, 0, 0]) for g in range(self.groups)]

    def effective_kernel(self) -> torch.Tensor:
        """The grouped conv's (Cout, Cin/G, kh, kw) kernel the cores compute, float64."""
        return torch.cat([tt.stt_kernel(c) for c in self.cores()])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.core1(x)
        if self._mode_pad is not None:
            a = F.pad(a, self._mode_pad, mode=self.padding_mode)
        a = self.core2(a if self._pad2 is None else F.pad(a, self._pad2))
        return self.core4(self.core3(a if self._pad3 is None else F.pad(a, self._pad3)))

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, ranks={self.ranks}, "
                f"groups={self.groups}, stride={self.stride}, padding={self.padding}, dilation={self.dilation}")

    def config(self) -> dict:
        """Everything needed to rebuild this layer empty before loading its state_dict (bundles)."""
        return {"in_channels": self.in_channels, "out_channels": self.out_channels, "kernel_size": list(self.kernel_size),
                "ranks": list(self.ranks), "groups": self.groups, "mode": self.mode, "stride": list(self.stride),
                "padding": list(self.padding), "dilation": list(self.dilation), "bias": self.core4.bias is not None,
                "padding_mode": self.padding_mode}

    @classmethod
    def from_config(cls, config: dict) -> TTConv2dGrouped:
        return cls(config["in_channels"], config["out_channels"], tuple(config["kernel_size"]), tuple(config["ranks"]),
                   int(config["groups"]), tuple(config["stride"]), tuple(config["padding"]), tuple(config["dilation"]),
                   bool(config["bias"]), config.get("padding_mode", "zeros"), config.get("mode", "stt"))


class GroupedFolded(nn.Module):
    """A TTConv2dGrouped folded back into one grouped conv (`--reconstruct-dense`)."""

    def __init__(self, layer: TTConv2dGrouped) -> None:
        super().__init__()
        self.pads, self.padding_mode = layer.padding, layer.padding_mode
        self.conv = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, 0, layer.dilation,
                              groups=layer.groups, bias=layer.core4.bias is not None)
        with torch.no_grad():
            self.conv.weight.copy_(layer.effective_kernel().to(layer.core1.weight.dtype))
            if layer.core4.bias is not None:
                self.conv.bias.copy_(layer.core4.bias)
        self.to(layer.core1.weight.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mode = "constant" if self.padding_mode == "zeros" else self.padding_mode
        return self.conv(F.pad(x, self.pads, mode=mode))


def _group_shape(conv: Any) -> tuple[int, int, int, int]:
    return (conv.out_channels // conv.groups, conv.in_channels // conv.groups, *conv.kernel_size)


def block_diagonal(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """A grouped conv's (Cout, Cin/G, kh, kw) kernel as the dense (Cout, Cin, kh, kw) one it computes."""
    out, per_in = weight.shape[0], weight.shape[1]
    dense = weight.new_zeros(out, per_in * groups, *weight.shape[2:])
    per_out = out // groups
    for g in range(groups):
        dense[g * per_out:(g + 1) * per_out, g * per_in:(g + 1) * per_in] = weight[g * per_out:(g + 1) * per_out]
    return dense


class Conv2dGroupedKind(Conv2dKind):
    name, tt = "conv2d_grouped", TTConv2dGrouped
    budget_units = ()
    recomputes = False
    rebuilds = False

    def owns_dense(self, module: nn.Module, exact: bool = True) -> bool:
        own = LayerKind.owns_dense(self, module, exact)  # nn.Conv2d (and SpikingJelly's layer.Conv2d)
        return own and module.groups > 1  # type: ignore[union-attr, operator]

    def unselected_reason(self, module: nn.Module, layer_types: tuple[str, ...]) -> str:
        """Without conv2d_grouped, a grouped conv keeps the reason it had before this kind existed."""
        if "conv2d" not in layer_types:
            return super().unselected_reason(module, layer_types)
        return skip_reason(module)  # type: ignore[arg-type, return-value]

    def skip_reason(self, module: nn.Module) -> str | None:
        m: Any = module
        if m.kernel_size == (1, 1):
            return "1x1 conv: already a channel matrix, nothing spatial to split"
        if m.padding_mode not in ("zeros", "reflect", "replicate", "circular"):
            return f"padding_mode {m.padding_mode!r} not supported"
        return None

    def mode_refusal(self, mode: str) -> str | None:
        if mode != "stt":
            return "a grouped conv decomposes in STT only; use --mode stt or drop conv2d_grouped from --layer-types"
        return None

    def rank_caps(self, module: nn.Module, linear_cores: int) -> tuple[int, ...]:
        return tt.max_tt_ranks(_group_shape(module))  # one group's kernel: every group shares the ranks

    def resolve_ranks(self, module: nn.Module, spec: RankSpec, override: Any, mode: str, linear_cores: int,
                      shared: ResolvedRanks | None) -> ResolvedRanks:
        m: Any = module
        shape = _group_shape(m)
        if override is not None:
            return cap_ranks(shape, parse_ranks(override), False)
        if spec.method == "budget":
            caps = tt.max_tt_ranks(shape)
            rank = 1
            while rank < max(caps) and self.core_weights(m, tuple(min(rank + 1, c) for c in caps), 0) * float(spec.value) <= m.weight.numel():  # type: ignore[arg-type]
                rank += 1
            resolved = cap_ranks(shape, (rank, rank, rank), False)
            return ResolvedRanks(resolved.requested, resolved.effective, f"budget {spec.value:g}x: rank {rank} (per layer)")
        if spec.method not in ("fixed", "vbmf", "energy"):
            raise RankSpecError(f"unknown rank method {spec.method!r}")
        per = m.out_channels // m.groups
        each = [resolve_layer_ranks(m.weight[g * per:(g + 1) * per], spec, False) for g in range(m.groups)]
        requested = tuple(max(r.requested[i] for r in each) for i in range(3))
        effective = tuple(max(r.effective[i] for r in each) for i in range(3))
        return ResolvedRanks(requested, effective, next((r.note for r in each if r.note), None))  # type: ignore[arg-type]

    def core_weights(self, module: nn.Module, ranks: tuple[int, ...], linear_cores: int) -> int:
        return module.groups * tt.tt_param_count(_group_shape(module), ranks)  # type: ignore[operator, arg-type]

    def build(self, module: nn.Module, ranks: tuple[int, ...], mode: str, timesteps: int | None, svd: str,
              linear_cores: int) -> nn.Module:
        return TTConv2dGrouped.from_conv(module, ranks, svd)  # type: ignore[arg-type]

    def describe(self, module: nn.Module) -> str:
        if not self.owns_tt(module):
            return super().describe(module)
        m: Any = module
        kh, kw = m.kernel_size
        return f"{m.in_channels}->{m.out_channels}, {kh}x{kw}, stride {m.stride}, groups {m.groups}, {m.mode}"

    def workloads(self, name: str, module: nn.Module, leaves: dict[str, Any]) -> list[Any]:
        """hw has no groups: each core is a conv whose `c` is one group's input channels and whose `k`
        is all groups' outputs (so MACs and weights are the grouped core's), as a dense grouped conv."""
        from hw import LayerWorkload, tt_cores  # only here: compress and export never load the hw model

        if not self.owns_tt(module):
            return super().workloads(name, module, leaves)
        m: Any = module
        core1 = leaves.get(f"{name}.core1")
        if core1 is None or core1.in_hw is None:
            return []
        (ih, iw), (kh, kw), g = core1.in_hw, m.kernel_size, m.groups
        dense = LayerWorkload(name, ih, iw, kh, kw, m.in_channels // g, m.out_channels, stride=m.stride,
                              padding=hw_pads(m.padding), spike_input=core1.binary)
        first, h, w, last = tt_cores(dense, tuple(g * r for r in m.ranks))  # type: ignore[arg-type]
        r1, r2, r3 = m.ranks
        return [first, replace(h, c=r1), replace(w, c=r2), replace(last, c=r3)]

    def export_replacement(self, name: str, module: nn.Module, context: Any, reconstruct_dense: bool) -> nn.Module | None:
        return fold_steps(GroupedFolded(module) if reconstruct_dense else None, module)  # type: ignore[arg-type]

    def nir_nodes(self, name: str, module: nn.Module, bn: nn.Module | None, x: torch.Tensor) -> tuple[list[tuple[str, Any]], torch.Tensor]:
        """Three Conv2d nodes: core1, the merged middle cores (per group, exact), core4, each grouped
        core written as its block-diagonal dense kernel (exact): nir 1.0.8's type check takes a grouped
        Conv2d's input channels as the kernel's Cin/G and refuses the graph it wrote."""
        if not self.owns_tt(module):
            return super().nir_nodes(name, module, bn, x)
        m: Any = module
        if x.dim() != 4:
            raise BadInputError(f"layer {name}: a grouped TT conv needs a [B, C, H, W] input for NIR")
        hw, g, (r1, r2, r3) = (int(x.shape[2]), int(x.shape[3])), m.groups, m.ranks
        padding = symmetric_padding(name, m.padding, m.padding_mode)
        meta = {"tt_layer": name, "tt_mode": m.mode, "tt_ranks": list(m.ranks), "groups": g}
        w2 = m.core2.weight.detach().double()[:, :, :, 0].reshape(g, r2, r1, -1)  # (G, r2, r1, kh)
        w3 = m.core3.weight.detach().double()[:, :, 0, :].reshape(g, r3, r2, -1)  # (G, r3, r2, kw)
        middle_kernel = torch.einsum("gcbj,gbai->gcaij", w3, w2).reshape(g * r3, r1, *m.kernel_size)
        first = conv_node(name, block_diagonal(m.core1.weight.detach(), g), None, (1, 1), (0, 0), (1, 1), 1, hw,
                          {**meta, "tt_core": "G1"})
        middle = conv_node(name, block_diagonal(middle_kernel, g), None, m.stride, padding, m.dilation, 1, hw,
                           {**meta, "tt_core": "G2G3"})
        a = F.conv2d(m.core1(x).double(), middle_kernel, None, m.stride, padding, m.dilation, g).float()
        weight, bias = fold_bn(m.core4.weight.detach(), m.core4.bias, bn)
        last = conv_node(name, block_diagonal(weight, g), bias, (1, 1), (0, 0), (1, 1), 1,
                         (int(a.shape[2]), int(a.shape[3])), {**meta, "tt_core": "G4"})
        y = m(x)
        return [(f"{name}.core1", first), (f"{name}.core23", middle), (f"{name}.core4", last)], (bn(y) if bn is not None else y)
