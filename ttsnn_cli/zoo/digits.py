"""`digits_csnn`: the quickstart network, a small conv-dominated SNN for upsampled 8x8 digits.

Input [T, B, 1, 16, 16] (scikit-learn's digits upsampled 2x, direct encoding), output per-step logits
[T, B, classes]; the prediction is the mean over T (as in the MS-ResNets). Layout:
    stem.conv 3x3 Cin->w, stem.bn, stem.lif
    conv1 3x3 w->2w, bn1, lif1, pool1 (avg 2)      16 -> 8
    conv2 3x3 2w->2w, bn2, lif2, pool2 (avg 2)     8 -> 4
    conv3 3x3 2w->4w, bn3, lif3
    global average pool, fc Linear(4w, classes)
With w = 32 the three inner 3x3 convs hold 95 % of the weights, so TT compression matters; the stem
(Cin = 1) is too small to decompose (exclude `stem\\.conv`). Stateless layers run folded over T*B; the
LIFs (`neurons.MultiStepLIF`) loop over time.
"""

from __future__ import annotations

import torch
from torch import nn

from ttsnn_cli.spiking.neurons import MultiStepLIF
from ttsnn_cli.spiking.state import time_folded
from ttsnn_cli.zoo import register


class _Stem(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.lif = MultiStepLIF()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lif(self.bn(self.conv(x)))


class DigitsCSNN(nn.Module):
    """See the module docstring. forward: [T, B, C, H, W] -> [T, B, classes]."""

    multistep = True

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 32) -> None:
        super().__init__()
        w = width
        self.stem = _Stem(in_channels, w)
        self.conv1, self.bn1, self.lif1 = nn.Conv2d(w, 2 * w, 3, 1, 1, bias=False), nn.BatchNorm2d(2 * w), MultiStepLIF()
        self.pool1 = nn.AvgPool2d(2)
        self.conv2, self.bn2, self.lif2 = nn.Conv2d(2 * w, 2 * w, 3, 1, 1, bias=False), nn.BatchNorm2d(2 * w), MultiStepLIF()
        self.pool2 = nn.AvgPool2d(2)
        self.conv3, self.bn3, self.lif3 = nn.Conv2d(2 * w, 4 * w, 3, 1, 1, bias=False), nn.BatchNorm2d(4 * w), MultiStepLIF()
        self.fc = nn.Linear(4 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        steps, batch = x.shape[:2]
        with time_folded(self, steps):
            y = self.stem(x.flatten(0, 1))
            y = self.pool1(self.lif1(self.bn1(self.conv1(y))))
            y = self.pool2(self.lif2(self.bn2(self.conv2(y))))
            y = self.lif3(self.bn3(self.conv3(y)))
            y = self.fc(y.mean((2, 3)))
        return y.unflatten(0, (steps, batch))


@register(
    "digits_csnn",
    input_shape=lambda kw: (kw.get("in_channels", 1), 16, 16),
    timesteps=4,
    data="digits",
    description="quickstart conv SNN for scikit-learn digits upsampled to 16x16 (~130k weights)",
)
def digits_csnn(in_channels: int = 1, num_classes: int = 10, width: int = 32) -> DigitsCSNN:
    return DigitsCSNN(in_channels, num_classes, width)
