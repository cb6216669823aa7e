"""The paper's MS-ResNets ("membrane shortcut"), `ms_resnet18` and `ms_resnet34` (the TT-SNN paper, Architecture).

- Channels 64, 64, 128, 256, 512. Stem `stem.conv` 3x3 stride 1, Cin -> 64, + `stem.bn`; no max-pool.
- Stages `layer1..layer4`, strides 1, 2, 2, 2; blocks [2,2,2,2] (18) or [3,4,6,3] (34).
- BasicBlock: out = residual(x) + shortcut(x),
      residual = lif1 -> conv1 (3x3, stride s) -> bn1 -> lif2 -> conv2 (3x3) -> bn2,
      shortcut = identity, or `shortcut.conv` 1x1 (stride s) + `shortcut.bn` on the real-valued x.
  No activation after the addition: the next block starts with its LIF (the membrane shortcut).
  conv1/conv2 are plain nn.Conv2d attributes: the decomposer swaps them by name.
- Head: lif -> global average pool -> fc Linear(512, classes). The paper takes the mean over T before
  the Linear; the Linear commutes with the mean, so we return per-step logits [T, B, classes] whose
  mean over T is exactly the paper's output (and the per-step logits stay available to rate losses).
- BatchNorm over B*T samples (time folded into the batch; the stem's, when all T frames are one
  image, over the B images with the same statistics, `static_stem`); gamma initialised to 0.5
  (stem, shortcut, first BN of a block) and 0.1 (second BN of a block).
- LIF: decay 0.25, threshold 0.5, hard reset, rectangular surrogate (`neurons.paper_lif`).

forward: [T, B, C, H, W] -> [T, B, classes]; `forward_step` runs one timestep [B, C, H, W] -> [B,
classes] with membranes kept between calls (per-step execution; reset with `state.reset_states`).
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import nn

from ttsnn_cli.layers.conv2d import TTConv2d
from ttsnn_cli.layers.hooks import has_hooks
from ttsnn_cli.layers.lowrank_bn import conv1x1_bn
from ttsnn_cli.spiking.neurons import MultiStepLIF
from ttsnn_cli.spiking.saved import PacksSpikes, packed_spikes
from ttsnn_cli.spiking.state import time_folded
from ttsnn_cli.zoo import register, static_stem

CHANNELS = (64, 128, 256, 512)
STRIDES = (1, 2, 2, 2)
DEPTHS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}


def _bn(channels: int, gamma: float) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(channels)
    nn.init.constant_(bn.weight, gamma)
    return bn


class MSBlock(PacksSpikes, nn.Module):
    """Membrane-shortcut basic block; input and output are real-valued membranes [N, C, H, W].
    With `pack_spikes` (off by default, on under --recompute-tt) conv1/conv2 keep the spikes they
    read as the neuron's state byte for backward instead of floats."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.lif1 = MultiStepLIF()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = _bn(out_channels, 0.5)
        self.lif2 = MultiStepLIF()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = _bn(out_channels, 0.1)
        if stride != 1 or in_channels != out_channels:
            self.shortcut: nn.Module = nn.Sequential(
                OrderedDict(conv=nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), bn=_bn(out_channels, 0.5))
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self._spiking_conv_bn(self.lif1, self.conv1, self.bn1, x)
        residual = self._spiking_conv_bn(self.lif2, self.conv2, self.bn2, y)
        if self._residual_is_own_buffer():
            return residual.add_(self.shortcut(x))  # into BatchNorm's fresh output: no new buffer to fill
        return residual + self.shortcut(x)

    def _residual_is_own_buffer(self) -> bool:
        """The residual path ends in a plain BatchNorm (no forward of its own) whose output nothing
        else keeps (BatchNorm's backward needs its input, not its output), so the shortcut can be
        added into it in place: the same sum, one fewer activation-sized buffer to write (with PTT's
        branch sum in place, about 1 % of a PTT step at batch 8, `benchmarks/bench_training.py
        --levers`). Not when a hook may hold that output."""
        bn = self.bn2
        return (self.sum_in_place and isinstance(bn, nn.BatchNorm2d) and type(bn).forward is nn.BatchNorm2d.forward
                and not has_hooks(bn))

    sum_in_place: bool = True
    """Runtime switch (not persisted): the shortcut is added into the residual path's output; off,
    into a new buffer (the reference `benchmarks/bench_training.py --levers` times it against)."""

    def _spiking_conv_bn(self, lif: nn.Module, conv: nn.Module, bn: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
        """bn(conv(lif(x))). After a TT layer, BatchNorm runs through the layer's rank bottleneck
        (`lowrank_bn.conv1x1_bn`: the layer's last core and BatchNorm as one step that never keeps
        the Cout-channel output), where that pays, and always in the memory-saving mode
        (--recompute-tt), which also keeps the spikes, when they are exactly 0/1, as the very byte
        the neuron keeps when it runs as one node, else as bool (`saved.packed_spikes`)."""
        pack = (self.pack_spikes and torch.is_grad_enabled()
                and isinstance(lif, MultiStepLIF) and lif.binary_output())  # export swaps the neurons
        spikes, state = lif(x, with_state=True) if pack else (lif(x), None)
        with packed_spikes(spikes, enabled=pack, state=state):
            return conv_bn(conv, bn, spikes)

    def plan_units(self, prefix: str = "") -> dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], list[nn.Module]]]:
        """Each TT conv with the BatchNorm it trains with (`conv_bn`), by the conv's name: what
        `train.kernel_plan` times, since the factored path folds BatchNorm into its last core where
        the rebuilt one runs it as a module."""
        return {f"{prefix}{name}": (functools.partial(conv_bn, conv, bn), [conv, bn])
                for name, conv, bn in (("conv1", self.conv1, self.bn1), ("conv2", self.conv2, self.bn2))
                if isinstance(conv, TTConv2d)}


def conv_bn(conv: nn.Module, bn: nn.BatchNorm2d, spikes: torch.Tensor) -> torch.Tensor:
    """bn(conv(spikes)); after a factored TT layer, through its rank bottleneck where that applies
    and pays (`lowrank_bn.conv1x1_bn`, always under --recompute-tt)."""
    if isinstance(conv, TTConv2d) and torch.is_grad_enabled() and not has_hooks(conv) and not conv.rebuilds():
        m, scale = conv.core4_input_unscaled(spikes)
        return conv1x1_bn(m, conv.core4, bn, always=conv.recompute, input_scale=scale)
    return bn(conv(spikes))


class MSResNet(nn.Module):
    """See the module docstring."""

    multistep = True
    channels_last: bool = True
    """Runtime switch (not persisted): run every layer in channels-last memory format (measured faster
    for the TT cores on CPU, benchmarks/bench_training.py --levers); values are unchanged up to float
    summation order. Only for stages at least 16 channels wide: oneDNN's weight gradient of a strided
    1x1 conv reading fewer than 16 channels-last channels corrupts the heap (torch 2.13, AVX-512 CPU)."""

    def __init__(self, depths: tuple[int, ...], in_channels: int = 3, num_classes: int = 10,
                 channels: tuple[int, ...] = CHANNELS) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            OrderedDict(conv=nn.Conv2d(in_channels, channels[0], 3, 1, 1, bias=False), bn=_bn(channels[0], 0.5))
        )
        cin = channels[0]
        for index, (cout, stride, depth) in enumerate(zip(channels, STRIDES, depths), start=1):
            blocks = []
            for b in range(depth):
                blocks.append(MSBlock(cin, cout, stride if b == 0 else 1))
                cin = cout
            self.add_module(f"layer{index}", nn.Sequential(*blocks))
        self.lif = MultiStepLIF()
        self.fc = nn.Linear(channels[-1], num_classes)

    @property
    def runs_channels_last(self) -> bool:
        """Whether the activations run channels-last now (`channels_last`, and a stem at least 16
        wide); `train.layout` lays the weights out to match while the model trains."""
        return self.channels_last and self.stem.conv.out_channels >= 16

    stem_once: bool = True
    """Runtime switch (not persisted): when all T frames are the same image (direct encoding), the
    stem runs on one copy and its output is repeated (`static_stem`; same values and running
    statistics up to float rounding); off, it runs on all T copies."""

    def _body(self, x: torch.Tensor, repeats: int = 1) -> torch.Tensor:
        """The network on folded input, or with `repeats` > 1 on one frame that every one of
        `repeats` timesteps sees (the stem runs once, `static_stem.stem_once`)."""
        if self.runs_channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = self.stem(x) if repeats == 1 else static_stem.stem_once(self.stem, x, repeats)
        y = self.layer4(self.layer3(self.layer2(self.layer1(y))))
        return self.fc(self.lif(y).mean((2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        steps, batch = x.shape[:2]
        with time_folded(self, steps):
            if self.stem_once and static_stem.applies(self.stem, x):
                y = self._body(x[0], repeats=steps)
            else:
                y = self._body(x.flatten(0, 1))
        return y.unflatten(0, (steps, batch))

    def forward_step(self, x: torch.Tensor) -> torch.Tensor:
        with time_folded(self, None):  # type: ignore[arg-type]
            return self._body(x)

    def plan_units(self) -> dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], list[nn.Module]]]:
        """Every block's `MSBlock.plan_units`, by the TT convs' full names (`train.kernel_plan`)."""
        units = {}
        for name, module in self.named_modules():
            if isinstance(module, MSBlock):
                units.update(module.plan_units(f"{name}."))
        return units


def _shape(kw: dict) -> tuple[int, int, int]:
    cin = kw.get("in_channels", 3)
    return (cin, 48, 48) if cin == 2 else (cin, 32, 32)


@register("ms_resnet18", input_shape=_shape, timesteps=4, data=None,
          description="MS-ResNet18 (paper's ResNet19-type, CIFAR): kwargs in_channels, num_classes")
def ms_resnet18(in_channels: int = 3, num_classes: int = 10) -> MSResNet:
    return MSResNet(DEPTHS[18], in_channels, num_classes)


@register("ms_resnet34", input_shape=_shape, timesteps=6, data=None,
          description="MS-ResNet34 (paper's N-Caltech101 model): kwargs in_channels, num_classes")
def ms_resnet34(in_channels: int = 3, num_classes: int = 10) -> MSResNet:
    return MSResNet(DEPTHS[34], in_channels, num_classes)
