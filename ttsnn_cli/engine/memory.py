"""Less training memory for TT layers: recompute their inner cores in backward instead of saving them.

A dense conv saves only its input for backward. A TT layer saves its input too, and in addition the
first core's output A (r channels) and the last core's input (r channels): at the paper's ranks that
is up to 0.75 of an output-sized tensor more per layer, which cancels the parameter savings in
activation-dominated training steps (benchmarks/bench_training.py counts it). Under
`recomputing_tt(model)` each TTConv2d runs through `torch.utils.checkpoint` (non-reentrant): it saves
its input only and recomputes the cheap cores during backward. Values and gradients are unchanged.
Inside an MS-ResNet block (`zoo.msresnet.MSBlock`), where the layer reads 0/1 spikes kept packed and
feeds a BatchNorm, the flag instead keeps the TT layer's own saved tensors and drops BatchNorm's: the
last core's output is recomputed from its r3-channel input (`saved.conv1x1_bn`), one 1x1 conv more
in backward instead of rerunning every core on float spikes.

The switch is the layers' runtime `recompute` flag (like `folded_timesteps`), set for the block only:
nothing is persisted (state_dict and pickling untouched).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn

from ttsnn_cli.layers import TTConv2d


@contextlib.contextmanager
def recomputing_tt(model: nn.Module, enabled: bool = True) -> Iterator[None]:
    """Within the block, every TTConv2d of `model` recomputes its cores in backward."""
    layers = [m for m in model.modules() if isinstance(m, TTConv2d)] if enabled else []
    for layer in layers:
        layer.recompute = True
    try:
        yield
    finally:
        for layer in layers:
            layer.recompute = False
