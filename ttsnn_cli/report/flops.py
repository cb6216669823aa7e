"""Training FLOPs per iteration (one sample, forward + backward over T timesteps) with
`torch.utils.flop_counter.FlopCounterMode` (DESIGN.md: real components only).

The run is on a meta-device copy of the model in training mode: FlopCounterMode counts from
shapes, so no arithmetic is done. The loss is the sum of the time-averaged output (its own cost is
negligible and uncounted). FlopCounterMode counts 2 FLOPs per MAC of convolutions and matrix
products only (BN, neurons, pooling are not counted), so forward FLOPs = 2 x the conv + linear MACs
over T (tests check it against `counting`). Backward: input gradients (none for the first layer,
whose input needs no gradient) and weight gradients.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ttsnn_cli.report.counting import counted_run
from ttsnn_cli.spiking.runner import prepare_run, run_timesteps


def training_flops(model: nn.Module, input_shape: tuple[int, ...], timesteps: int, batch: int = 1) -> dict[str, Any]:
    """``{"forward", "backward", "total", "timesteps", "batch"}``: FLOPs of one training iteration."""
    def count(copy: nn.Module, inputs: torch.Tensor) -> tuple[float, float]:
        prepare_run(copy, inputs)  # an own-loop model's layout probe must not be counted
        counter = FlopCounterMode(display=False)
        with counter:
            out = run_timesteps(copy, inputs)
            forward = counter.get_total_flops()
            out.mean(0).sum().backward()
        return forward, counter.get_total_flops()

    forward, total = counted_run(model, tuple(input_shape), timesteps, count, batch=batch, train=True)
    return {"forward": int(forward), "backward": int(total - forward), "total": int(total),
            "timesteps": timesteps, "batch": batch}
