"""Networks written the two ways snntorch users write them, for `--arch user_nets:FACTORY` in tests.

Style B: nn.Sequential of layers and `snn.Leaky(init_hidden=True)`, called once per timestep.
Style A: a class with `init_leaky()` states and its own time loop.
Both mix every conv shape the decomposer must handle (kernels 3x3, 5x5, 3x5; stride; dilation;
padding; bias or not) with layers it must skip (1x1, depthwise, Linear).
"""

from __future__ import annotations

import snntorch as snn
import torch
from torch import nn


def sequential_net(channels: int = 6, num_classes: int = 10, beta: float = 0.8) -> nn.Sequential:
    c = channels
    return nn.Sequential(
        nn.Conv2d(1, c, 3, padding=1),
        snn.Leaky(beta=beta, init_hidden=True),
        nn.Conv2d(c, 2 * c, 5, stride=2, padding=2, bias=False),
        snn.Leaky(beta=beta, init_hidden=True),
        nn.Conv2d(2 * c, 2 * c, (3, 5), padding=(2, 4), dilation=(2, 2)),
        nn.Conv2d(2 * c, 2 * c, 1),
        snn.Leaky(beta=beta, init_hidden=True),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(2 * c * 4 * 4, num_classes),
        snn.Leaky(beta=beta, init_hidden=True, output=True),
    )


class LoopNet(nn.Module):
    """Tutorial style: own loop over `num_steps`, static input, returns stacked (spikes, membranes)."""

    def __init__(self, channels: int = 6, num_classes: int = 10, num_steps: int = 4, beta: float = 0.8) -> None:
        super().__init__()
        c = channels
        self.num_steps = num_steps
        self.conv1 = nn.Conv2d(1, c, 3, padding=1)
        self.lif1 = snn.Leaky(beta=beta)
        self.depthwise = nn.Conv2d(c, c, 3, padding=1, groups=c)
        self.conv2 = nn.Conv2d(c, 2 * c, 3, stride=(2, 1), padding=(1, 0), bias=False)
        self.lif2 = snn.Leaky(beta=beta)
        self.fc = nn.Linear(2 * c * 8 * 12, num_classes)  # input 1x16x14
        self.lif3 = snn.Leaky(beta=beta)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mem1, mem2, mem3 = self.lif1.init_leaky(), self.lif2.init_leaky(), self.lif3.init_leaky()
        spikes, membranes = [], []
        for _ in range(self.num_steps):
            spk1, mem1 = self.lif1(self.depthwise(self.conv1(x)), mem1)
            spk2, mem2 = self.lif2(self.conv2(spk1), mem2)
            spk3, mem3 = self.lif3(self.fc(spk2.flatten(1)), mem3)
            spikes.append(spk3)
            membranes.append(mem3)
        return torch.stack(spikes), torch.stack(membranes)


def loop_net(**kwargs: int) -> LoopNet:
    return LoopNet(**kwargs)


def not_a_module() -> str:
    return "nope"


def audio_net(channels: int = 16, hidden: int = 32, length: int = 40, num_classes: int = 10, beta: float = 0.8) -> nn.Sequential:
    """A keyword-spotting style SNN (SHD-like): Conv1d over time-frequency channels, per step
    input [channels, length]; stride, dilation, 'same' and bias vary, plus a 1-wide conv to skip."""
    return nn.Sequential(
        nn.Conv1d(channels, hidden, 5, padding=2),
        snn.Leaky(beta=beta, init_hidden=True),
        nn.Conv1d(hidden, hidden, 3, stride=2, padding=2, dilation=2, bias=False),
        snn.Leaky(beta=beta, init_hidden=True),
        nn.Conv1d(hidden, hidden, 4, padding="same"),
        nn.Conv1d(hidden, hidden, 1),
        snn.Leaky(beta=beta, init_hidden=True),
        nn.AvgPool1d(2),
        nn.Flatten(),
        nn.Linear(hidden * (length // 4), num_classes),
        snn.Leaky(beta=beta, init_hidden=True, output=True),
    )


def recurrent_mlp(inputs: int = 64, hidden: int = 96, num_classes: int = 10, beta: float = 0.8) -> nn.Sequential:
    """A spiking MLP (snntorch tutorial 5 style) with an RLeaky whose recurrent weights are a Linear."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(inputs, hidden),
        snn.RLeaky(beta=beta, linear_features=hidden, init_hidden=True),
        nn.Linear(hidden, num_classes),
        snn.Leaky(beta=beta, init_hidden=True, output=True),
    )


def digits_conv1d(hidden: int = 24, beta: float = 0.8) -> nn.Sequential:
    """The digits images (1 x 16 x 16) with rows as channels: a Conv1d SNN over the columns."""
    return nn.Sequential(
        nn.Flatten(1, 2),
        nn.Conv1d(16, hidden, 3, padding=1), snn.Leaky(beta=beta, init_hidden=True),
        nn.AvgPool1d(2), nn.Flatten(), nn.Linear(hidden * 8, 10), snn.Leaky(beta=beta, init_hidden=True, output=True),
    )
