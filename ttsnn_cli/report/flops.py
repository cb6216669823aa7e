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

from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ttsnn_cli.report.counting import on_meta, probe_input
from ttsnn_cli.spiking.runner import prepare_run, run_timesteps


def training_flops(model: nn.Module, input_shape: tuple[int, ...], timesteps: int, batch: int = 1) -> dict[str, Any]:
    """``{"forward", "backward", "total", "timesteps", "batch"}``: FLOPs of one training iteration."""
    meta = on_meta(model).train()
    inputs = probe_input(tuple(input_shape), timesteps, batch).to("meta")
    prepare_run(meta, inputs)  # an own-loop model's layout probe must not be counted
    counter = FlopCounterMode(display=False)
    with counter:
        out = run_timesteps(meta, inputs)
        forward = counter.get_total_flops()
        out.mean(0).sum().backward()
    total = counter.get_total_flops()
    return {"forward": int(forward), "backward": int(total - forward), "total": int(total),
            "timesteps": timesteps, "batch": batch}
