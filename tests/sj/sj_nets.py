"""SpikingJelly networks written as its users write them, importable as `sj_nets` (tests/sj/).

Imports SpikingJelly: import this module only after `pytest.importorskip("spikingjelly")`.

`sew_ms_net`: a SEW-ResNet- and MS-ResNet-style network in multi-step mode for 16x16 digits
(`functional.set_step_mode(net, "m")`, forward takes x_seq [T, B, C, H, W] and returns [T, B, classes]):
  stem     layer.Conv2d 1->C 3x3 + layer.BatchNorm2d + ParametricLIFNode
  sew      SEW block (Fang et al. 2021): two conv-BN-IFNode units, output spikes ADDed to the input spikes
  down     layer.SeqToANNContainer(nn.Conv2d C->2C 3x3 stride 2, nn.BatchNorm2d) + LIFNode
  ms       MS block (Hu et al., the membrane shortcut): LIFNode -> layer.Conv2d -> layer.BatchNorm2d,
           added to the block's (real-valued) input
  head     LIFNode -> layer.AdaptiveAvgPool2d -> layer.Flatten -> layer.Linear
`sew_ms_single`: the same network in single-step mode (called once per step with [B, C, H, W]).
`nir_chain`: an nn.Sequential with every neuron setting ttsnn writes as NIR (LIF, PLIF with v_reset -0.5,
  soft-reset IF, LIF without decay_input).
"""

from __future__ import annotations

import torch
from spikingjelly.activation_based import functional, layer, neuron, surrogate
from torch import nn


def _conv_bn(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    return [layer.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), layer.BatchNorm2d(cout)]


class SEWBlock(nn.Module):
    """Spike-element-wise residual block, connect function ADD."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            *_conv_bn(channels, channels),
            neuron.IFNode(surrogate_function=surrogate.ATan(), detach_reset=True),
            *_conv_bn(channels, channels),
            neuron.IFNode(surrogate_function=surrogate.ATan(), detach_reset=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + x


class MSBlock(nn.Module):
    """Membrane-shortcut residual block: the neuron comes first and the shortcut carries membrane input."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.residual = nn.Sequential(
            neuron.LIFNode(tau=2.0, surrogate_function=surrogate.ATan(), detach_reset=True),
            *_conv_bn(channels, channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.residual(x)


class SEWMSNet(nn.Module):
    def __init__(self, in_channels: int = 1, num_classes: int = 10, channels: int = 8, step_mode: str = "m") -> None:
        super().__init__()
        c = channels
        self.stem = nn.Sequential(*_conv_bn(in_channels, c),
                                  neuron.ParametricLIFNode(init_tau=2.0, surrogate_function=surrogate.ATan(),
                                                           detach_reset=True))
        self.sew = SEWBlock(c)
        self.down = layer.SeqToANNContainer(nn.Conv2d(c, 2 * c, 3, stride=2, padding=1, bias=False),
                                            nn.BatchNorm2d(2 * c))
        self.ms = MSBlock(2 * c)
        self.head = nn.Sequential(
            neuron.LIFNode(tau=2.0, surrogate_function=surrogate.ATan(), detach_reset=True),
            layer.AdaptiveAvgPool2d((1, 1)),
            layer.Flatten(),
            layer.Linear(2 * c, num_classes),
        )
        functional.set_step_mode(self, step_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.sew(self.stem(x))
        return self.head(self.ms(self.down(x)))


def sew_ms_net(in_channels: int = 1, num_classes: int = 10, channels: int = 8) -> SEWMSNet:
    return SEWMSNet(in_channels, num_classes, channels, "m")


class SingleStepNet(nn.Module):
    """Single-step mode: a chain of layer.* modules called once per timestep with [B, C, H, W]."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, channels: int = 8) -> None:
        super().__init__()
        c = channels
        self.features = nn.Sequential(
            *_conv_bn(in_channels, c), neuron.LIFNode(tau=2.0, surrogate_function=surrogate.ATan()),
            *_conv_bn(c, 2 * c, stride=2), neuron.IFNode(surrogate_function=surrogate.ATan()),
            layer.AdaptiveAvgPool2d((1, 1)), layer.Flatten(), layer.Linear(2 * c, num_classes),
        )
        functional.set_step_mode(self, "s")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def single_step_net(in_channels: int = 1, num_classes: int = 10, channels: int = 8) -> SingleStepNet:
    return SingleStepNet(in_channels, num_classes, channels)


def sequential_chain(in_channels: int = 1, num_classes: int = 10, channels: int = 4) -> nn.Sequential:
    """An nn.Sequential chain in multi-step mode (SpikingJelly's tutorial shape): conv-BN-LIF twice, then a
    Linear readout through an IFNode."""
    net = nn.Sequential(
        *_conv_bn(in_channels, channels), neuron.LIFNode(tau=2.0, surrogate_function=surrogate.ATan()),
        *_conv_bn(channels, channels, stride=2), neuron.LIFNode(tau=2.0, v_reset=None, surrogate_function=surrogate.ATan()),
        layer.Flatten(), layer.Linear(channels * 64, num_classes), neuron.IFNode(surrogate_function=surrogate.ATan()),
    )
    functional.set_step_mode(net, "m")
    return net


def nir_chain(in_channels: int = 1, num_classes: int = 10, channels: int = 4, step_mode: str = "m") -> nn.Sequential:
    """An nn.Sequential holding every neuron setting ttsnn writes as NIR: a LIFNode (hard reset to 0), a
    ParametricLIFNode resetting to -0.5, a soft-reset IFNode, a LIFNode without decay_input and a lower
    threshold, and an IFNode readout."""
    c = channels
    net = nn.Sequential(
        *_conv_bn(in_channels, c), neuron.LIFNode(tau=2.0, surrogate_function=surrogate.ATan()),
        *_conv_bn(c, c, stride=2),
        neuron.ParametricLIFNode(init_tau=3.0, v_reset=-0.5, surrogate_function=surrogate.ATan()),
        layer.Conv2d(c, c, 3, padding=1), neuron.IFNode(v_reset=None, surrogate_function=surrogate.ATan()),
        layer.Conv2d(c, c, 3, padding=1), neuron.LIFNode(tau=1.5, decay_input=False, v_threshold=0.7,
                                                         surrogate_function=surrogate.ATan()),
        layer.Flatten(), layer.Linear(c * 64, num_classes), neuron.IFNode(surrogate_function=surrogate.ATan()),
    )
    functional.set_step_mode(net, step_mode)
    return net
