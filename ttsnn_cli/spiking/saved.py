"""What autograd keeps for backward: binary spike tensors kept packed instead of as floats.

A convolution saves its input for the weight gradient. When that input is the output of a neuron
whose spikes are exactly 0 or 1 (`MultiStepLIF.binary_output`), the float32 copy holds one bit of
information in 32: `packed_spikes(spikes)` keeps it as a bool tensor (4x smaller) while the layer
reading it runs, and turns it back into floats, bitwise identical, when backward needs it. When the
neuron already keeps the spikes in its own one-byte state (`lif_sequence._LIFSequence`), that same tensor
is kept instead of a copy: nothing new is stored for the layer's input at all. Only the tensor given
is packed; everything else saved inside the block (weights, a TT layer's inner
activations) is kept as usual. Used by the models that know which convs read spikes
(`zoo.msresnet.MSBlock`); it applies to a dense conv and to a TT layer's first core alike.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from ttsnn_cli.spiking.lif_sequence import spikes_of_state


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
    (`train.memory.recomputing_tt`), switches it on."""

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
