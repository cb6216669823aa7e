"""The Conv1d kind: nn.Conv1d <-> TTConv1d, three cores in STT or HTT (PTT refused: one spatial axis).

Ranks are (r1, r2) from `maths.layer_ranks` on the (Cin, k, Cout) tensor (Conv2d's `r1,r2,r3` maps to
(r1, r3)); the global methods take their per-layer rule. Counting sees a length L as a 1 x L map; hw
sees a 1 x k conv (`hw.tt_conv1d_cores`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ttsnn_cli.errors import BadInputError
from ttsnn_cli.kinds.base import DenseConvLeaves, LayerKind
from ttsnn_cli.kinds.conv2d import skip_reason
from ttsnn_cli.kinds.nir_nodes import conv1d_node, fold_bn
from ttsnn_cli.kinds.steps import HTTStep, timestep
from ttsnn_cli.kinds.stepmode import fold_steps
from ttsnn_cli.layers.conv1d import PTT_REFUSAL, TTConv1d, conv1d_padding
from ttsnn_cli.maths import layer_ranks, tt
from ttsnn_cli.maths.ranks import RankSpec, ResolvedRanks


class DenseFolded1d(nn.Module):
    """A TTConv1d folded back into dense Conv1d layers (`--reconstruct-dense`), as `DenseFolded`."""

    def __init__(self, name: str, layer: TTConv1d, context: Any) -> None:
        super().__init__()
        self.slot_name, self.context, self.stride = name, context, layer.stride
        self.mode_pad, self.padding_mode = layer._mode_pad, layer.padding_mode
        left, right = (0, 0) if layer._mode_pad is not None else layer.padding
        self.pads = None if left == right else (left, right)
        bias = layer.core3.bias
        self.full = nn.Conv1d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                              left if left == right else 0, layer.dilation, bias=bias is not None)
        dtype = layer.core1.weight.dtype
        self.reduced: nn.Conv1d | None = None
        if layer.mode == "htt":
            assert layer.timesteps is not None
            self.full_steps, self.pad_reduced = math.ceil(layer.timesteps / 2), layer._pad_reduced
            self.reduced = nn.Conv1d(layer.in_channels, layer.out_channels, 1, bias=bias is not None)
        with torch.no_grad():
            self.full.weight.copy_(layer.effective_kernel().to(dtype))
            if self.reduced is not None:
                self.reduced.weight.copy_(layer.reduced_kernel().to(dtype)[:, :, None])
            for conv in (self.full, self.reduced):
                if conv is not None and bias is not None:
                    conv.bias.copy_(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode_pad is not None:
            x = F.pad(x, self.mode_pad, mode=self.padding_mode)
        full = self.full(x if self.pads is None else F.pad(x, self.pads))
        if self.reduced is None:
            return full
        reduced = self.reduced(F.pad(x, self.pad_reduced)[..., :: self.stride])
        step = timestep(self.context, self.slot_name)
        if isinstance(step, torch.Tensor):
            return torch.where(step < self.full_steps, full, reduced)
        return full if step < self.full_steps else reduced


class Conv1dKind(DenseConvLeaves, LayerKind):
    name, label, dense, tt = "conv1d", "Conv1d", nn.Conv1d, TTConv1d
    batched_dims = 3
    budget_units = ("weights",)
    conv_fn = F.conv1d

    def skip_reason(self, module: nn.Module) -> str | None:
        return skip_reason(module)  # type: ignore[arg-type]

    def mode_refusal(self, mode: str) -> str | None:
        if mode == "ptt":
            return f"{PTT_REFUSAL}; use --mode stt/htt or drop conv1d from --layer-types"
        return None

    def _caps(self, module: nn.Module) -> tuple[int, ...]:
        return tt.max_tt_ranks_1d(tuple(module.weight.shape))  # type: ignore[union-attr]

    def resolve_ranks(self, module: nn.Module, spec: RankSpec, override: Any, mode: str, linear_cores: int,
                      shared: ResolvedRanks | None) -> ResolvedRanks:
        return layer_ranks.resolve_shape_ranks(
            lambda: tt.conv1d_tensor(module.weight), self._caps(module),  # type: ignore[arg-type]
            lambda ranks: self.core_weights(module, ranks, linear_cores), module.weight.numel(),  # type: ignore[union-attr]
            spec, override, equal=mode != "stt", triple_to_pair=True, shared=shared)

    def tt_tensor(self, module: nn.Module, linear_cores: int) -> torch.Tensor:
        return tt.conv1d_tensor(module.weight)  # type: ignore[arg-type]

    def core_weights(self, module: nn.Module, ranks: tuple[int, ...], linear_cores: int) -> int:
        return tt.tt_param_count_1d(tuple(module.weight.shape), ranks)  # type: ignore[arg-type, union-attr]

    def build(self, module: nn.Module, ranks: tuple[int, ...], mode: str, timesteps: int | None, svd: str,
              linear_cores: int) -> nn.Module:
        return TTConv1d.from_conv(module, ranks, mode, timesteps, svd)  # type: ignore[arg-type]

    def shape_fields(self, module: nn.Module) -> tuple[list[int] | None, int, int]:
        m: Any = module
        kernel = [m.kernel_size] if isinstance(m.kernel_size, int) else list(m.kernel_size)
        return kernel, m.in_channels, m.out_channels

    def describe(self, module: nn.Module) -> str:
        m: Any = module
        if self.owns_tt(module):
            return f"{m.in_channels}->{m.out_channels}, k {m.kernel_size}, stride {m.stride}, {m.mode}"
        return f"{m.in_channels}->{m.out_channels}, k {m.kernel_size[0]}, stride {m.stride[0]}, groups {m.groups}"

    def count_type(self, module: nn.Module) -> str:
        return f"tt-{module.mode}" if self.owns_tt(module) else "conv"

    def workloads(self, name: str, module: nn.Module, leaves: dict[str, Any]) -> list[Any]:
        from hw import LayerWorkload, tt_conv1d_cores  # only here: compress and export never load the hw model

        m: Any = module
        if self.owns_tt(module):
            core1 = leaves.get(f"{name}.core1")
            if core1 is None or core1.in_hw is None:
                return []
            dense = LayerWorkload(name, 1, core1.in_hw[1], 1, m.kernel_size, m.in_channels, m.out_channels,
                                  stride=(1, m.stride), padding=(0, m.padding[0]), spike_input=core1.binary)
            return tt_conv1d_cores(dense, m.ranks)
        stats = leaves.get(name)
        if stats is None or stats.in_hw is None:
            return []
        return [LayerWorkload(name, 1, stats.in_hw[1], 1, m.kernel_size[0], m.in_channels // m.groups, m.out_channels,
                              stride=(1, m.stride[0]), padding=(0, conv1d_padding(m)[0]), spike_input=stats.binary)]

    def export_replacement(self, name: str, module: nn.Module, context: Any, reconstruct_dense: bool) -> nn.Module | None:
        if reconstruct_dense:
            return fold_steps(DenseFolded1d(name, module, context), module)  # type: ignore[arg-type]
        return fold_steps(HTTStep(name, module, context, conv1d=True) if module.mode == "htt" else None, module)  # type: ignore[union-attr]

    def nir_nodes(self, name: str, module: nn.Module, bn: nn.Module | None, x: torch.Tensor) -> tuple[list[tuple[str, Any]], torch.Tensor]:
        """A Conv1d (one node) or a TTConv1d (three nodes); zero, symmetric padding only."""
        m: Any = module
        length = int(x.shape[-1])
        y = m(x)
        y = bn(y) if bn is not None else y
        if self.owns_tt(module):
            if m.mode != "stt":
                raise BadInputError(f"layer {name}: HTT switches path at t = ceil(T/2) and a NIR graph is time-invariant; "
                                    "export ONNX, or re-compress in stt for NIR")
            left, right = m.padding
            if m.padding_mode != "zeros" or left != right:
                raise BadInputError(f"layer {name}: padding {m.padding} ({m.padding_mode}) has no NIR Conv1d equivalent "
                                    "(zeros, symmetric only)")
            meta = {"tt_layer": name, "tt_mode": m.mode, "tt_ranks": list(m.ranks)}
            a = m.core1(x)
            weight, bias = fold_bn(m.core3.weight.detach(), m.core3.bias, bn)
            return [(f"{name}.core1", conv1d_node(name, m.core1.weight.detach(), None, 1, 0, 1, length, {**meta, "tt_core": "G1"})),
                    (f"{name}.core2", conv1d_node(name, m.core2.weight.detach(), None, m.stride, left, m.dilation,
                                                  length, {**meta, "tt_core": "G2"})),
                    (f"{name}.core3", conv1d_node(name, weight, bias, 1, 0, 1, int(m._chain(a).shape[-1]),
                                                  {**meta, "tt_core": "G3"}))], y
        left, right = conv1d_padding(m)
        if m.padding_mode != "zeros" or left != right or m.groups != 1:
            raise BadInputError(f"layer {name}: Conv1d with padding {(left, right)} ({m.padding_mode}) or groups "
                                f"{m.groups} has no NIR equivalent here (zeros, symmetric, groups 1)")
        weight, bias = fold_bn(m.weight.detach(), m.bias, bn)
        return [(name, conv1d_node(name, weight, bias, m.stride[0], left, m.dilation[0], length))], y
