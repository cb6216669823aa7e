"""A forward that branches on values (snntorch's Leaky with reset_delay=False compares its reset in
Python) cannot run on the meta device that counting uses: counts and training FLOPs then come from
a real CPU run of the same shapes, equal to the hand count, never an error."""

from __future__ import annotations

import snntorch as snn
import torch
from torch import nn

from ttsnn_cli.report.counting import count_model
from ttsnn_cli.report.flops import training_flops


class TutorialNet(nn.Module):
    """Conv -> Leaky -> Linear -> Leaky, both neurons resetting in the step they fire."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.lif1 = snn.Leaky(beta=0.9, init_hidden=True, reset_delay=False)
        self.fc = nn.Linear(8 * 16 * 16, 10)
        self.lif2 = snn.Leaky(beta=0.9, init_hidden=True, output=True, reset_delay=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lif2(self.fc(self.lif1(self.conv(x)).flatten(1)))[0]


MACS = 8 * 1 * 9 * 16 * 16 + 8 * 16 * 16 * 10  # conv + linear, per sample and timestep


def test_counts_of_a_value_branching_network_are_the_hand_count() -> None:
    model = TutorialNet()
    counts = count_model(model, (1, 16, 16), 4)
    assert counts["macs_per_timestep"] == MACS
    assert counts["params"]["weights"] == 8 * 9 + 8 * 16 * 16 * 10


def test_training_flops_of_a_value_branching_network() -> None:
    model = TutorialNet()
    flops = training_flops(model, (1, 16, 16), 4, batch=2)
    assert flops["forward"] == 2 * MACS * 4 * 2
    assert flops["backward"] > 0
    assert all(p.grad is None for p in model.parameters())  # the run was on a copy
