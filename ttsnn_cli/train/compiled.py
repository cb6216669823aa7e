"""`--compile`: the training step's forward and backward through `torch.compile`.

Why: on a GPU the eager step is bound by the host (thousands of small kernels, the neuron's loop
over T); a compiled step fuses the elementwise work and, on CUDA, replays the step as a CUDA graph
(`mode="reduce-overhead"`), which takes the per-kernel launch cost off the host. ttsnn's models
compile without graph breaks (`fullgraph=True` in the tests): the one-node LIF is a custom op the
compiler keeps whole (`spiking.lif_sequence`), and what the neurons decide from tensor values is read
once before compiling (`neurons.freeze_for_compile`). A user's network that does break the graph
still compiles, in pieces (`fullgraph=False` here), and gives the eager values.

The same function as eager to float tolerance (fused elementwise code may round differently); the
first steps pay the compilation (tens of seconds on a CPU), and a last batch of another size
compiles once more. On the CPU, inductor's generated C++ needs a compiler; measure before using it
there (docs/performance.md).
"""

from __future__ import annotations

import torch
from torch import nn

from ttsnn_cli.spiking.neurons import freeze_for_compile


def compile_step(runner: nn.Module, model: nn.Module, device: torch.device) -> nn.Module:
    """`runner` (the model's [T, B, ...] forward) compiled for `device`, the neurons' plans frozen first."""
    freeze_for_compile(model)
    mode = "reduce-overhead" if device.type == "cuda" else None
    return torch.compile(runner, mode=mode, dynamic=False)  # type: ignore[return-value]
