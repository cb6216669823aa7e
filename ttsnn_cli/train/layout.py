"""Conv weights in the memory format the model's activations run in, for the length of a run.

oneDNN runs a convolution in its input's memory format and re-lays-out a weight held in another
format on every call: forward and both halves of backward. The MS-ResNets run their activations
channels-last (`zoo.msresnet.MSResNet.runs_channels_last`), while their conv weights are created NCHW,
so every training step copied each 3x3 weight into channels-last several times over: a dense
MS-ResNet18 step at batch 8 took 1.03-1.05x as long with its weights NCHW, a PTT one 1.00-1.01x
(`python benchmarks/bench_training.py --levers --only weights --steps 15`). Holding the weights
channels-last while the model trains removes those copies. A memory format is a layout, not a
value: results are the same up to the summation order oneDNN picks (tests compare them).

Only convs that read at least 16 channels convert, as only those run channels-last (the caveat on
`MSResNet.channels_last`). The weights go back to their own format when the run ends, so
everything after training (decomposition, export, saving) sees the layout it always saw; the
Parameter objects stay the same, so an optimiser built before or during the run keeps them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

MIN_CHANNELS = 16


def runs_channels_last(model: nn.Module) -> bool:
    """The model declares that its activations run channels-last (`MSResNet.runs_channels_last`)."""
    return bool(getattr(model, "runs_channels_last", False))


def match_weights_to_activations(*models: nn.Module | None) -> list[nn.Parameter]:
    """Hold the 2-D conv weights of every model that runs channels-last in that format; returns
    the weights converted, for `restore_weights`."""
    changed = []
    for model in models:
        if model is None or not runs_channels_last(model):
            continue
        for conv in model.modules():
            if not isinstance(conv, nn.Conv2d) or conv.in_channels < MIN_CHANNELS:
                continue
            weight = conv.weight
            if weight.is_contiguous() and not weight.is_contiguous(memory_format=torch.channels_last):
                weight.data = weight.data.contiguous(memory_format=torch.channels_last)
                changed.append(weight)
    return changed


def restore_weights(changed: list[nn.Parameter]) -> None:
    """Back to the contiguous (NCHW) layout the weights had before `match_weights_to_activations`."""
    for weight in changed:
        weight.data = weight.data.contiguous()


@contextlib.contextmanager
def weights_in_activation_format(*models: nn.Module | None) -> Iterator[None]:
    """Within the block, `match_weights_to_activations(*models)`; restored on leaving it."""
    changed = match_weights_to_activations(*models)
    try:
        yield
    finally:
        restore_weights(changed)
