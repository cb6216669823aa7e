"""Export helpers the conv kinds share: the timestep an exported layer reads, and HTT made explicit.

An export copy (`export.functional`) keeps its runtime state in a step context with `step` (a python
int while unrolling, a 0-d tensor in step mode) and `calls` (per-layer call counts). The kinds' export
replacements read it through `timestep`, so they need only that duck type, not the exporter.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def timestep(context: Any, name: str) -> int | torch.Tensor:
    """The step tensor in step mode, else this layer's own call count (as TTConv2d counts calls)."""
    if isinstance(context.step, torch.Tensor):
        return context.step
    count = context.calls.get(name, 0)
    context.calls[name] = count + 1
    return count


class HTTStep(nn.Module):
    """An HTT TTConv2d or TTConv1d whose path follows the context's timestep: the full path for
    t < ceil(T/2), the reduced one after (in step mode both are computed and `torch.where` picks)."""

    def __init__(self, name: str, layer: nn.Module, context: Any, conv1d: bool = False) -> None:
        super().__init__()
        self.slot_name, self.layer, self.context = name, layer, context
        assert layer.timesteps is not None
        self.full_steps = math.ceil(layer.timesteps / 2)
        self.conv1d = conv1d

    def _a(self, x: torch.Tensor) -> torch.Tensor:
        a = self.layer.core1(x)
        return a if self.layer._mode_pad is None else F.pad(a, self.layer._mode_pad, mode=self.layer.padding_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self._a(x)
        step = timestep(self.context, self.slot_name)
        layer = self.layer
        path, last = (layer._chain, layer.core3) if self.conv1d else (layer._parallel, layer.core4)
        if isinstance(step, torch.Tensor):
            return torch.where(step < self.full_steps, last(path(a)), last(layer._reduced(a)))
        if step < self.full_steps:
            return last(path(a))
        return last(layer._reduced(a))
