"""What autograd keeps for backward: binary spike tensors kept packed instead of as floats.

A convolution saves its input for the weight gradient. When that input is the output of a neuron
whose spikes are exactly 0 or 1 (`MultiStepLIF.binary_output`), the float32 copy holds one bit of
information in 32: `packed_spikes(spikes)` keeps it as a bool tensor (4x smaller) while the layer
reading it runs, and turns it back into floats, bitwise identical, when backward needs it. Only the
tensor given is packed; everything else saved inside the block (weights, a TT layer's inner
activations) is kept as usual. Used by the models that know which convs read spikes
(`zoo.msresnet.MSBlock`); it applies to a dense conv and to a TT layer's first core alike.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


class _Packed:
    """A 0/1 float tensor held as bool; `unpack` restores dtype and memory format."""

    __slots__ = ("bits", "dtype")

    def __init__(self, tensor: torch.Tensor) -> None:
        self.bits = tensor.bool()  # keeps the memory format (channels_last stays so)
        self.dtype = tensor.dtype

    def unpack(self) -> torch.Tensor:
        return self.bits.to(self.dtype)


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a is b or (
        a.data_ptr() == b.data_ptr() and a.shape == b.shape and a.stride() == b.stride() and a.dtype == b.dtype
    )


@contextlib.contextmanager
def packed_spikes(spikes: torch.Tensor, enabled: bool = True) -> Iterator[None]:
    """Within the block, autograd saves `spikes` (a 0/1 float tensor) packed as bool."""
    if not enabled or not torch.is_grad_enabled() or not spikes.requires_grad or spikes.dtype == torch.bool:
        yield
        return

    def pack(tensor: torch.Tensor) -> torch.Tensor | _Packed:
        return _Packed(tensor) if _same(tensor, spikes) else tensor

    def unpack(saved: torch.Tensor | _Packed) -> torch.Tensor:
        return saved.unpack() if isinstance(saved, _Packed) else saved

    with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        yield
