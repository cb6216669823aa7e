"""A user-style network with grouped convs, importable as `grouped_nets` (tests/kinds/test_grouped.py)."""

from __future__ import annotations

import snntorch as snn
from torch import nn


def grouped_net(channels: int = 8, groups: int = 2, num_classes: int = 5, beta: float = 0.8) -> nn.Sequential:
    """[B, 4, 8, 8] -> Conv2d 4->C -> LIF -> grouped 3x3 Conv2d C->C (groups G, stride 2) -> LIF ->
    Flatten -> Linear -> LIF (zero reset: NIR's LIF)."""
    kw = dict(beta=beta, init_hidden=True, reset_mechanism="zero")
    return nn.Sequential(
        nn.Conv2d(4, channels, 3, padding=1), snn.Leaky(**kw),
        nn.Conv2d(channels, channels, 3, stride=2, padding=1, groups=groups), snn.Leaky(**kw),
        nn.Flatten(), nn.Linear(channels * 16, num_classes), snn.Leaky(output=True, **kw),
    )
