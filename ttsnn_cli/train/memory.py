"""The memory-saving mode of training (`--recompute-tt`): keep less for backward, for a little time.

A dense conv saves only its input for backward. A TT layer saves its input too, and in addition the
first core's output A (r channels) and the last core's input (r channels): at the paper's ranks that
is up to 0.75 of an output-sized tensor more per layer, which cancels the parameter savings in
activation-dominated training steps (benchmarks/bench_training.py counts it). Under
`recomputing_tt(model)` each TTConv2d runs through `torch.utils.checkpoint` (non-reentrant): it saves
its input only and recomputes the cheap cores during backward. Values and gradients are unchanged.
Inside an MS-ResNet block (`zoo.msresnet.MSBlock`, a `saved.PacksSpikes`), the mode also keeps the
0/1 spikes the convs read as the neuron's one-byte state instead of floats, and a TT layer feeding
a BatchNorm is not rerun at all: its last core and the BatchNorm always take the fused form that
keeps no Cout-channel tensor (`lowrank_bn.conv1x1_bn`; by default only where that is faster).

Both are off by default because each costs time (the defaults are the fastest exact settings). The
switches are the modules' runtime flags (like `folded_timesteps`), set for the block only: nothing
is persisted (state_dict and pickling untouched), and each flag returns to what it was.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn

from ttsnn_cli.kinds import kind_of
from ttsnn_cli.spiking.saved import PacksSpikes

_CLASS_DEFAULT = object()  # the flag was not set on the instance: remove it again afterwards


def _recomputes(module: nn.Module) -> bool:
    """A TT layer whose kind has the `recompute` switch (TTConv2d)."""
    kind = kind_of(module)
    return kind is not None and kind.recomputes and kind.owns_tt(module)


@contextlib.contextmanager
def recomputing_tt(model: nn.Module, enabled: bool = True) -> Iterator[None]:
    """Within the block, every TTConv2d of `model` recomputes its cores in backward and every block
    that can keep its spikes packed does."""
    flags = []
    if enabled:
        flags = [(m, "recompute") for m in model.modules() if _recomputes(m)]
        flags += [(m, "pack_spikes") for m in model.modules() if isinstance(m, PacksSpikes)]
    saved = [(module, name, module.__dict__.get(name, _CLASS_DEFAULT)) for module, name in flags]
    for module, name in flags:
        setattr(module, name, True)
    try:
        yield
    finally:
        for module, name, before in saved:
            if before is _CLASS_DEFAULT:
                delattr(module, name)
            else:
                setattr(module, name, before)
