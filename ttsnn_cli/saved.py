"""What autograd keeps for backward: binary spike tensors kept packed instead of as floats.

A convolution saves its input for the weight gradient. When that input is the output of a neuron
whose spikes are exactly 0 or 1 (`MultiStepLIF.binary_output`), the float32 copy holds one bit of
information in 32: `packed_spikes(spikes)` keeps it as a bool tensor (4x smaller) while the layer
reading it runs, and turns it back into floats, bitwise identical, when backward needs it. When the
neuron already keeps the spikes in its own one-byte state (`neurons._LIFSequence`), that same tensor
is kept instead of a copy: nothing new is stored for the layer's input at all. Only the tensor given
is packed; everything else saved inside the block (weights, a TT layer's inner
activations) is kept as usual. Used by the models that know which convs read spikes
(`zoo.msresnet.MSBlock`); it applies to a dense conv and to a TT layer's first core alike.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ttsnn_cli.neurons import spikes_of_state


class _Packed:
    """A 0/1 float tensor held as bool, or as the neuron state byte it was computed from (`state`);
    `unpack` restores dtype and memory format."""

    __slots__ = ("bits", "dtype", "from_state")

    def __init__(self, tensor: torch.Tensor, state: torch.Tensor | None = None) -> None:
        self.from_state = state is not None
        self.bits = state if state is not None else tensor.bool()  # both keep the memory format
        self.dtype = tensor.dtype

    def unpack(self) -> torch.Tensor:
        return spikes_of_state(self.bits, self.dtype) if self.from_state else self.bits.to(self.dtype)


class PacksSpikes:
    """A block whose convolutions can keep the 0/1 spikes they read packed for backward
    (`packed_spikes`), switched by its runtime `pack_spikes` flag (not persisted).

    Off by default: packing keeps 1 byte per spike where a float copy keeps 4 (a third less saved
    memory in an MS-ResNet18 step), but decoding the byte again in backward costs about 5 % of a TT
    step and 2 % of a dense one (benchmarks/bench_training.py --levers), and the defaults are the
    fastest exact settings. The memory-saving mode, `--recompute-tt`
    (`engine.memory.recomputing_tt`), switches it on."""

    pack_spikes: bool = False


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a is b or (
        a.data_ptr() == b.data_ptr() and a.shape == b.shape and a.stride() == b.stride() and a.dtype == b.dtype
    )


@contextlib.contextmanager
def packed_spikes(spikes: torch.Tensor, enabled: bool = True, state: torch.Tensor | None = None) -> Iterator[None]:
    """Within the block, autograd saves `spikes` (a 0/1 float tensor) packed as bool, or as `state`,
    the neuron's state byte they were computed from (`spikes == spikes_of_state(state)`)."""
    if not enabled or not torch.is_grad_enabled() or not spikes.requires_grad or spikes.dtype == torch.bool:
        yield
        return

    def pack(tensor: torch.Tensor) -> torch.Tensor | _Packed:
        return _Packed(tensor, state) if _same(tensor, spikes) else tensor

    def unpack(saved: torch.Tensor | _Packed) -> torch.Tensor:
        return saved.unpack() if isinstance(saved, _Packed) else saved

    with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        yield


class _Conv1x1BN(torch.autograd.Function):
    """BatchNorm (training mode) of a 1x1 conv's output, keeping only the conv's input for backward.

    A BatchNorm saves its input; after a TT layer that is the Cout-channel output of the last core,
    which is recomputed here in backward from that core's r3-channel input (a 1x1 conv, the cheapest
    core). Running statistics are updated as nn.BatchNorm2d updates them; gradients are the plain
    path's (one more float rounding order inside the recomputed conv at most: none on CPU).
    """

    @staticmethod
    def forward(ctx, m, weight, bias, gamma, beta, running_mean, running_var, momentum: float, eps: float):  # type: ignore[override]
        y = F.conv2d(m, weight, bias)
        out, save_mean, save_invstd = torch.ops.aten.native_batch_norm(
            y, gamma, beta, running_mean, running_var, True, momentum, eps)
        ctx.eps, ctx.has_bias = eps, bias is not None
        ctx.save_for_backward(m, weight, bias, gamma, save_mean, save_invstd)  # running stats: not needed
        return out

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        m, weight, bias, gamma, save_mean, save_invstd = ctx.saved_tensors
        with torch.no_grad():
            y = F.conv2d(m, weight, bias)
        need = ctx.needs_input_grad
        grad_y, grad_gamma, grad_beta = torch.ops.aten.native_batch_norm_backward(
            grad.contiguous(memory_format=_format(y)), y, gamma, None, None, save_mean, save_invstd,
            True, ctx.eps, [True, gamma is not None and need[3], gamma is not None and need[4]])
        grad_m, grad_w, grad_b = torch.ops.aten.convolution_backward(
            grad_y, m, weight, [weight.shape[0]] if ctx.has_bias else None, [1, 1], [0, 0], [1, 1], False,
            [0, 0], 1, [need[0], need[1], ctx.has_bias and need[2]])
        return grad_m, grad_w, grad_b, grad_gamma, grad_beta, None, None, None, None


def _format(t: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous() else torch.contiguous_format


def conv1x1_bn(m: torch.Tensor, conv: nn.Conv2d, bn: nn.BatchNorm2d) -> torch.Tensor:
    """bn(conv(m)) for a 1x1 stride-1 conv; in training with gradients, the conv's output is
    recomputed in backward instead of being kept for BatchNorm (`_Conv1x1BN`)."""
    if not (bn.training and torch.is_grad_enabled() and bn.track_running_stats and bn.running_mean is not None):
        return bn(conv(m))
    bn.num_batches_tracked.add_(1)
    momentum = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    return _Conv1x1BN.apply(m, conv.weight, conv.bias, bn.weight, bn.bias, bn.running_mean, bn.running_var,
                            momentum, bn.eps)
