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


# ------------------------------------------------------------------------------------------------
# The user-network zoo: every execution style x neuron type x reset x pooling, written the
# way snntorch's tutorials write them. Input: one 1x16x16 frame per step (the `digits` data), 10 classes.
_KINDS = ("leaky", "synaptic", "alpha", "lapicque", "rleaky", "rsynaptic")


def make_neuron(kind: str, *, channels: int | None = None, features: int | None = None, init_hidden: bool = True,
                output: bool = False, reset: str | None = None, **extra) -> nn.Module:
    """One snntorch neuron of `kind`; recurrent kinds get a conv recurrence for `channels`, else linear."""
    common = dict(init_hidden=init_hidden, output=output, **extra)
    if reset is not None:
        common["reset_mechanism"] = reset
    if kind == "leaky":
        return snn.Leaky(beta=0.8, **common)
    if kind == "synaptic":
        return snn.Synaptic(alpha=0.7, beta=0.8, **common)
    if kind == "alpha":
        return snn.Alpha(alpha=0.8, beta=0.6, threshold=0.5, **common)
    if kind == "lapicque":
        return snn.Lapicque(beta=0.8, **common)
    recurrence = dict(conv2d_channels=channels, kernel_size=3) if channels else dict(linear_features=features)
    if kind == "rleaky":
        return snn.RLeaky(beta=0.8, **recurrence, **common)
    if kind == "rsynaptic":
        return snn.RSynaptic(alpha=0.7, beta=0.8, **recurrence, **common)
    raise ValueError(kind)


def neuron_seq(kind: str = "leaky", reset: str | None = None, pool: str = "avg", c: int = 4, **extra) -> nn.Sequential:
    """Sequential, init_hidden neurons of one kind everywhere (the output neuron too)."""
    pooling = nn.AvgPool2d(2) if pool == "avg" else nn.MaxPool2d(2)
    return nn.Sequential(
        nn.Conv2d(1, c, 3, padding=1),
        make_neuron(kind, channels=c, reset=reset, **extra),
        pooling,
        nn.Conv2d(c, 2 * c, 3, padding=1),
        make_neuron(kind, channels=2 * c, reset=reset, **extra),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(2 * c * 4 * 4, 10),
        make_neuron(kind, features=10, reset=reset, output=True, **extra),
    )


class ConvBlock(nn.Module):
    """A user's block: conv + BN + neuron (init_hidden), called once per step inside a Sequential."""

    def __init__(self, cin: int, cout: int, kind: str = "leaky") -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.lif = make_neuron(kind, channels=cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lif(self.bn(self.conv(x)))


def block_seq(kind: str = "leaky", c: int = 4) -> nn.Sequential:
    """nn.Sequential of the user's own blocks (stepped inside, folded around them)."""
    return nn.Sequential(ConvBlock(1, c, kind), nn.AvgPool2d(2), ConvBlock(c, 2 * c, kind), nn.AvgPool2d(2),
                         nn.Flatten(), nn.Linear(2 * c * 16, 10), snn.Leaky(beta=0.8, init_hidden=True))


class StepNet(nn.Module):
    """A class called once per timestep, init_hidden neurons, returning (spk, mem) of the last neuron."""

    def __init__(self, kind: str = "leaky", reset: str | None = "zero", c: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, c, 5, padding=2)
        self.lif1 = make_neuron(kind, channels=c, reset=reset)
        self.conv2 = nn.Conv2d(c, 2 * c, 3, padding=1)
        self.lif2 = make_neuron(kind, channels=2 * c, reset=reset)
        self.fc = nn.Linear(2 * c * 16, 10)
        self.out = snn.Leaky(beta=0.8, init_hidden=True, output=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = nn.functional.max_pool2d(self.lif1(self.conv1(x)), 2)
        x = nn.functional.avg_pool2d(self.lif2(self.conv2(x)), 2)
        return self.out(self.fc(x.flatten(1)))


class TutorialNet(nn.Module):
    """snntorch tutorial 6: init_leaky() states, own loop over num_steps on one static frame, returns
    (spk_rec, mem_rec) stacked [T, B, 10]."""

    def __init__(self, num_steps: int = 8, beta: float = 0.9, c: int = 4) -> None:
        super().__init__()
        self.num_steps = num_steps
        self.conv1 = nn.Conv2d(1, c, 5, padding=2)
        self.lif1 = snn.Leaky(beta=beta)
        self.conv2 = nn.Conv2d(c, 2 * c, 5, padding=2)
        self.lif2 = snn.Leaky(beta=beta)
        self.fc1 = nn.Linear(2 * c * 4 * 4, 10)
        self.lif3 = snn.Leaky(beta=beta)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mem1, mem2, mem3 = self.lif1.init_leaky(), self.lif2.init_leaky(), self.lif3.init_leaky()
        spk_rec, mem_rec = [], []
        for _ in range(self.num_steps):
            spk1, mem1 = self.lif1(nn.functional.max_pool2d(self.conv1(x), 2), mem1)
            spk2, mem2 = self.lif2(nn.functional.max_pool2d(self.conv2(spk1), 2), mem2)
            spk3, mem3 = self.lif3(self.fc1(spk2.flatten(1)), mem3)
            spk_rec.append(spk3)
            mem_rec.append(mem3)
        return torch.stack(spk_rec), torch.stack(mem_rec)


class SequenceLoopNet(nn.Module):
    """Own loop over the sequence it is given, x[T, B, ...] (rate-coded or event input), Synaptic
    neurons with explicit state, returning batch-first [B, T, 10]."""

    def __init__(self, c: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, c, 3, padding=1)
        self.syn1 = snn.Synaptic(alpha=0.7, beta=0.8)
        self.fc = nn.Linear(c * 8 * 8, 10)
        self.syn2 = snn.Synaptic(alpha=0.7, beta=0.8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        syn1, mem1 = self.syn1.init_synaptic()
        syn2, mem2 = self.syn2.init_synaptic()
        out = []
        for step in range(x.shape[0]):
            spk1, syn1, mem1 = self.syn1(nn.functional.avg_pool2d(self.conv(x[step]), 2), syn1, mem1)
            spk2, syn2, mem2 = self.syn2(self.fc(spk1.flatten(1)), syn2, mem2)
            out.append(spk2)
        return torch.stack(out, dim=1)


def tutorial_net(**kwargs) -> TutorialNet:
    return TutorialNet(**kwargs)


def sequence_loop_net(**kwargs) -> SequenceLoopNet:
    return SequenceLoopNet(**kwargs)


def step_net(**kwargs) -> StepNet:
    return StepNet(**kwargs)


def neuron_mlp(kind: str = "leaky", reset: str | None = None, hidden: int = 32) -> nn.Sequential:
    """Spiking MLP on the flattened frame (tutorial 5 style), one neuron kind; recurrent kinds get a
    linear recurrence."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(256, hidden),
        make_neuron(kind, features=hidden, reset=reset),
        nn.Linear(hidden, 10),
        make_neuron(kind, features=10, reset=reset, output=True),
    )
