"""MS-ResNet18 executed the way the TT-SNN paper's released code executes it, for side-by-side timing.

Written here from the description of that code's execution pattern (the TT-SNN paper; the code itself is
not copied), so the comparison needs neither its dependencies nor its defects' side effects:

- every layer loops over the T timesteps in Python and writes each step into a zero-filled output
  buffer [T, B, C, H, W] (`_StepLoop`), so autograd records one copy per step and layer;
- BatchNorm is a BatchNorm3d over [B, C, T, H, W], reached with transposes and contiguous copies on
  the way in and out (`_TimeBN`);
- the neuron is its hard-reset LIF, u_t = 0.25 * u_{t-1} * (1 - s_{t-1}) + x_t, s_t = [u_t > 0.5],
  stepped in Python with the membrane cloned every step; its surrogate keeps the float membrane for
  backward and passes gradient where |u - 0.5| < 0.5 (`_PaperLIF`, `_Fire`);
- PTT layers run all four cores per timestep at the input resolution (stride 1, the kh x 1 core with
  'same' padding) and max-pool by 2 after the fourth core when Cin != Cout (the strided blocks);
- dense layers are one strided conv per timestep; shortcuts are 1x1 strided convs per timestep.
Parameters are those of our MS-ResNet18 with the same ranks, so only the execution differs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

CHANNELS = (64, 128, 256, 512)
STRIDES = (1, 2, 2, 2)
THRESHOLD, DECAY, WIDTH = 0.5, 0.25, 0.5


class _Fire(torch.autograd.Function):
    """Heaviside at the threshold; saves the float membrane, gradient 1 where |u - thr| < 0.5."""

    @staticmethod
    def forward(ctx, mem: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(mem)
        return (mem > THRESHOLD).float()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (mem,) = ctx.saved_tensors
        return grad.clone() * ((mem - THRESHOLD).abs() < WIDTH).float() / (2 * WIDTH)


class _PaperLIF(nn.Module):
    """[T, B, ...] -> spikes [T, B, ...], one Python step per timestep into a zero-filled buffer."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(x)
        spike = torch.zeros_like(x[0])
        previous = None
        for t in range(x.shape[0]):
            mem = x[t] if previous is None else previous * DECAY * (1 - spike.detach()) + x[t]
            spike = _Fire.apply(mem)
            previous = mem.clone()
            out[t] = spike
        return out


class _TimeBN(nn.Module):
    """BatchNorm3d over [B, C, T, H, W]: statistics over batch, time and space (as ours), with copies."""

    def __init__(self, channels: int, gamma: float) -> None:
        super().__init__()
        self.bn = nn.BatchNorm3d(channels)
        nn.init.constant_(self.bn.weight, gamma)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.transpose(0, 2).contiguous().transpose(0, 1).contiguous()
        y = self.bn(y)
        return y.contiguous().transpose(0, 1).contiguous().transpose(0, 2)


class _StepLoop(nn.Module):
    """Runs `step` on every timestep of [T, B, C, H, W] into a zero-filled output buffer."""

    def __init__(self, step: nn.Module, out_channels: int, downsample: int = 1) -> None:
        super().__init__()
        self.step, self.out_channels, self.downsample = step, out_channels, downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = self.step(x[0])
        out = torch.zeros(x.shape[0], x.shape[1], *first.shape[1:], device=x.device, dtype=first.dtype)
        out[0] = first
        for t in range(1, x.shape[0]):
            out[t] = self.step(x[t])
        return out


class _PTTStep(nn.Module):
    """One timestep of the reference PTT layer: cores at input resolution, max-pool when Cin != Cout."""

    def __init__(self, cin: int, cout: int, rank: int) -> None:
        super().__init__()
        self.first = nn.Conv2d(cin, rank, 1, bias=False)
        self.vertical = nn.Conv2d(rank, rank, (3, 1), padding="same", bias=False)
        self.horizontal = nn.Conv2d(rank, rank, (1, 3), padding=(0, 1), bias=False)
        self.last = nn.Conv2d(rank, cout, 1, bias=False)
        self.pool = nn.MaxPool2d(2, 2) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.first(x)
        y = self.last((self.vertical(a) + self.horizontal(a)) / 2)
        return self.pool(y) if self.pool is not None else y


def _conv(cin: int, cout: int, kernel: int, stride: int, rank: int | None) -> nn.Module:
    if rank is None:
        return _StepLoop(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), cout)
    return _StepLoop(_PTTStep(cin, cout, rank), cout)


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, ranks: tuple[int, int] | None) -> None:
        super().__init__()
        r1, r2 = ranks if ranks is not None else (None, None)
        self.residual = nn.Sequential(
            _PaperLIF(), _conv(cin, cout, 3, stride, r1), _TimeBN(cout, 0.5),
            _PaperLIF(), _conv(cout, cout, 3, 1, r2), _TimeBN(cout, 0.1),
        )
        self.shortcut = (
            nn.Sequential(_conv(cin, cout, 1, stride, None), _TimeBN(cout, 0.5))
            if stride != 1 or cin != cout else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.residual(x) + self.shortcut(x)


class ReferenceMSResNet18(nn.Module):
    """MS-ResNet18 in the reference code's execution pattern; `ranks` (16) makes it the PTT variant.

    forward: an image batch [B, 3, H, W], repeated over T steps into a buffer (direct encoding), ->
    logits [B, classes] of the time-averaged pooled spikes.
    """

    def __init__(self, ranks: list[int] | None = None, timesteps: int = 4, num_classes: int = 10) -> None:
        super().__init__()
        self.timesteps = timesteps
        self.stem = nn.Sequential(_conv(3, 64, 3, 1, None), _TimeBN(64, 0.5))
        blocks, cin, index = [], 64, 0
        for cout, stride in zip(CHANNELS, STRIDES):
            for b in range(2):
                pair = (ranks[index], ranks[index + 1]) if ranks is not None else None
                blocks.append(_Block(cin, cout, stride if b == 0 else 1, pair))
                cin, index = cout, index + 2
        self.blocks = nn.Sequential(*blocks)
        self.lif = _PaperLIF()
        self.fc = nn.Linear(512, num_classes)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = torch.zeros(self.timesteps, *image.shape, device=image.device, dtype=image.dtype)
        for t in range(self.timesteps):
            x[t] = image
        y = self.lif(self.blocks(self.stem(x)))
        y = F.adaptive_avg_pool3d(y, (None, 1, 1)).flatten(2)
        return self.fc(y.sum(0) / y.shape[0])
