"""The Conv2d kind: nn.Conv2d (groups = 1) <-> TTConv2d, four cores in STT, PTT or HTT.

Conv2d is the paper's layer: its ranks are the `maths.ranks` authority (the global methods allocate
across the Conv2d layers), its counts are the paper's counting convention (report/counting.py), and
its hw workloads are `hw.tt_cores`. Grouped Conv2d layers are the `conv2d_grouped` kind.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ttsnn_cli.errors import BadInputError
from ttsnn_cli.kinds.base import DenseConvLeaves, LayerKind
from ttsnn_cli.kinds.nir_nodes import conv_node, fold_bn, symmetric_padding
from ttsnn_cli.kinds.steps import HTTStep, timestep
from ttsnn_cli.kinds.stepmode import fold_steps
from ttsnn_cli.layers.conv2d import TTConv2d, conv_padding
from ttsnn_cli.maths.ranks import RankSpec, ResolvedRanks, cap_ranks, parse_ranks, resolve_layer_ranks
from ttsnn_cli.maths.tt import centre_tap, conv2d_tensor, tt_param_count


def skip_reason(conv: nn.Conv2d | nn.Conv1d) -> str | None:
    """Why a Conv2d or Conv1d cannot (usefully) become TT cores, or None when it can."""
    if conv.groups != 1:
        kind = "depthwise" if conv.groups == conv.in_channels == conv.out_channels else "grouped"
        return f"{kind} conv (groups={conv.groups}): TT cores cannot split channel groups"
    if conv.kernel_size == (1, 1):
        return "1x1 conv: already a channel matrix, nothing spatial to split"
    if conv.kernel_size == (1,):
        return "1-wide conv: already a channel matrix, nothing spatial to split"
    if conv.padding_mode not in ("zeros", "reflect", "replicate", "circular"):
        return f"padding_mode {conv.padding_mode!r} not supported"
    return None


def hw_pads(padding: tuple[int, int, int, int]) -> tuple[int, int]:
    """(left, right, top, bottom) -> hw's (top, left)."""
    left, _right, top, _bottom = padding
    return (top, left)


def tt_middle_kernel(layer: TTConv2d) -> torch.Tensor:
    """The merged middle cores (r3, r1, kh, kw), float64: STT chain or PTT cross (export/nir.py)."""
    w2 = layer.core2.weight.detach().double()[:, :, :, 0]  # (r2, r1, kh)
    w3 = layer.core3.weight.detach().double()[:, :, 0, :]  # (r3, r2, kw)
    kh, kw = layer.kernel_size
    if layer.mode == "stt":
        return torch.einsum("cbj,bai->caij", w3, w2)
    kernel = torch.zeros(w3.shape[0], w2.shape[1], kh, kw, dtype=torch.float64)
    kernel[:, :, :, centre_tap(kw)] += w2.permute(0, 1, 2) / 2
    kernel[:, :, centre_tap(kh), :] += w3 / 2
    return kernel


class DenseFolded(nn.Module):
    """A TTConv2d folded back into dense convs (`--reconstruct-dense`); exact up to float rounding:
    STT into `effective_kernel()`, PTT into its cross kernel, HTT into the cross kernel for
    t < ceil(T/2) and a 1x1 conv of `reduced_kernel()` (centre tap, stride) after."""

    def __init__(self, name: str, layer: TTConv2d, context: Any) -> None:
        super().__init__()
        self.slot_name, self.context, self.mode = name, context, layer.mode
        self.stride, self.dilation = layer.stride, layer.dilation
        self.mode_pad, self.padding_mode = layer._mode_pad, layer.padding_mode
        left, right, top, bottom = (0, 0, 0, 0) if layer._mode_pad is not None else layer.padding
        symmetric = left == right and top == bottom
        self.pads = None if symmetric else (left, right, top, bottom)
        padding = (top, left) if symmetric else (0, 0)
        weight = layer.effective_kernel().to(layer.core1.weight.dtype)
        bias = layer.core4.bias
        self.full = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, padding,
                              layer.dilation, bias=bias is not None)
        with torch.no_grad():
            self.full.weight.copy_(weight)
            if bias is not None:
                self.full.bias.copy_(bias)
        self.reduced: nn.Conv2d | None = None
        if layer.mode == "htt":
            assert layer.timesteps is not None
            self.full_steps = math.ceil(layer.timesteps / 2)
            self.pad_reduced = layer._pad_reduced
            self.reduced = nn.Conv2d(layer.in_channels, layer.out_channels, 1, bias=bias is not None)
            with torch.no_grad():
                self.reduced.weight.copy_(layer.reduced_kernel().to(weight.dtype)[:, :, None, None])
                if bias is not None:
                    self.reduced.bias.copy_(bias)

    def _full(self, x: torch.Tensor) -> torch.Tensor:
        return self.full(x if self.pads is None else F.pad(x, self.pads))

    def _reduced(self, x: torch.Tensor) -> torch.Tensor:
        assert self.reduced is not None
        sh, sw = self.stride
        return self.reduced(F.pad(x, self.pad_reduced)[..., ::sh, ::sw])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode_pad is not None:
            x = F.pad(x, self.mode_pad, mode=self.padding_mode)
        if self.reduced is None:
            return self._full(x)
        step = timestep(self.context, self.slot_name)
        if isinstance(step, torch.Tensor):
            return torch.where(step < self.full_steps, self._full(x), self._reduced(x))
        return self._full(x) if step < self.full_steps else self._reduced(x)


class Conv2dKind(DenseConvLeaves, LayerKind):
    name, label, dense, tt = "conv2d", "Conv2d", nn.Conv2d, TTConv2d
    budget_units = ("weights", "macs", "time")
    recomputes = True
    rebuilds = True
    conv_fn = F.conv2d

    def owns_dense(self, module: nn.Module, exact: bool = True) -> bool:
        return super().owns_dense(module, exact) and module.groups == 1  # type: ignore[union-attr]

    def skip_reason(self, module: nn.Module) -> str | None:
        return skip_reason(module)  # type: ignore[arg-type]

    def resolve_ranks(self, module: nn.Module, spec: RankSpec, override: Any, mode: str, linear_cores: int,
                      shared: ResolvedRanks | None) -> ResolvedRanks:
        equal, shape = mode != "stt", tuple(module.weight.shape)  # type: ignore[union-attr]
        if override is not None:
            return cap_ranks(shape, parse_ranks(override), equal)
        if shared is not None:
            capped = cap_ranks(shape, shared.effective, equal)
            return ResolvedRanks(shared.requested, capped.effective, capped.note or shared.note)
        return resolve_layer_ranks(module.weight, spec, equal)  # type: ignore[arg-type]

    def core_weights(self, module: nn.Module, ranks: tuple[int, ...], linear_cores: int) -> int:
        return tt_param_count(tuple(module.weight.shape), ranks)  # type: ignore[arg-type, union-attr]

    def tt_tensor(self, module: nn.Module, linear_cores: int) -> torch.Tensor:
        return conv2d_tensor(module.weight)  # type: ignore[arg-type]

    def build(self, module: nn.Module, ranks: tuple[int, ...], mode: str, timesteps: int | None, svd: str,
              linear_cores: int) -> nn.Module:
        return TTConv2d.from_conv(module, ranks, mode, timesteps, svd)  # type: ignore[arg-type]

    def shape_fields(self, module: nn.Module) -> tuple[list[int] | None, int, int]:
        return list(module.kernel_size), module.in_channels, module.out_channels  # type: ignore[union-attr, arg-type]

    def describe(self, module: nn.Module) -> str:
        kh, kw = module.kernel_size  # type: ignore[misc, union-attr]
        head = f"{module.in_channels}->{module.out_channels}, {kh}x{kw}, stride {module.stride}"
        return f"{head}, {module.mode}" if self.owns_tt(module) else f"{head}, groups {module.groups}"

    def count_type(self, module: nn.Module) -> str:
        return f"tt-{module.mode}" if self.owns_tt(module) else "conv"

    def workloads(self, name: str, module: nn.Module, leaves: dict[str, Any]) -> list[Any]:
        from hw import LayerWorkload, tt_cores  # only here: compress and export never load the hw model

        m: Any = module
        if self.owns_tt(module):
            core1 = leaves.get(f"{name}.core1")
            if core1 is None or core1.in_hw is None:
                return []
            ih, iw = core1.in_hw
            kh, kw = m.kernel_size
            dense = LayerWorkload(name, ih, iw, kh, kw, m.in_channels, m.out_channels, stride=m.stride,
                                  padding=hw_pads(m.padding), spike_input=core1.binary)
            return tt_cores(dense, m.ranks)
        stats = leaves.get(name)
        if stats is None or stats.in_hw is None:
            return []
        ih, iw = stats.in_hw
        kh, kw = m.kernel_size
        return [LayerWorkload(name, ih, iw, kh, kw, m.in_channels // m.groups, m.out_channels, stride=m.stride,
                              padding=hw_pads(conv_padding(m)), spike_input=stats.binary)]

    def export_replacement(self, name: str, module: nn.Module, context: Any, reconstruct_dense: bool) -> nn.Module | None:
        if reconstruct_dense:
            return fold_steps(DenseFolded(name, module, context), module)  # type: ignore[arg-type]
        return fold_steps(HTTStep(name, module, context) if module.mode == "htt" else None, module)  # type: ignore[union-attr]

    def nir_nodes(self, name: str, module: nn.Module, bn: nn.Module | None, x: torch.Tensor) -> tuple[list[tuple[str, Any]], torch.Tensor]:
        m: Any = module
        hw = (int(x.shape[2]), int(x.shape[3])) if x.dim() == 4 else (0, 0)
        if not self.owns_tt(module):
            if isinstance(m.padding, str):
                raise BadInputError(f"layer {name}: string padding {m.padding!r} is not exported; give explicit padding")
            padding = symmetric_padding(name, (m.padding[1], m.padding[1], m.padding[0], m.padding[0]), m.padding_mode)
            weight, bias = fold_bn(m.weight.detach(), m.bias, bn)
            node = conv_node(name, weight, bias, m.stride, padding, m.dilation, m.groups, hw)
            y = m(x)
            return [(name, node)], (bn(y) if bn is not None else y)
        if m.mode == "htt":
            raise BadInputError(f"layer {name}: HTT switches path at t = ceil(T/2) and a NIR graph is time-invariant; "
                                "export ONNX, or re-compress in stt/ptt for NIR")
        padding = symmetric_padding(name, m.padding, m.padding_mode)
        meta = {"tt_layer": name, "tt_mode": m.mode, "tt_ranks": list(m.ranks)}
        first = conv_node(name, m.core1.weight.detach(), None, (1, 1), (0, 0), (1, 1), 1, hw, {**meta, "tt_core": "G1"})
        a = m.core1(x)
        middle_kernel = tt_middle_kernel(m)
        middle = conv_node(name, middle_kernel, None, m.stride, padding, m.dilation, 1, hw, {**meta, "tt_core": "G2G3"})
        a = F.conv2d(a.double(), middle_kernel, None, m.stride, padding, m.dilation).float()
        weight, bias = fold_bn(m.core4.weight.detach(), m.core4.bias, bn)
        last = conv_node(name, weight, bias, (1, 1), (0, 0), (1, 1), 1, (int(a.shape[2]), int(a.shape[3])),
                         {**meta, "tt_core": "G4"})
        y = m(x)
        y = bn(y) if bn is not None else y
        return [(f"{name}.core1", first), (f"{name}.core23", middle), (f"{name}.core4", last)], y
