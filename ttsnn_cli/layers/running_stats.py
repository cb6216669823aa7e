"""BatchNorm's running statistics, updated as `nn.BatchNorm2d` updates them in training.

The fast paths that compute a BatchNorm's batch statistics themselves (`lowrank_bn`, through a TT
layer's rank bottleneck; `static_stem`, over one copy of T identical frames) must leave the module
exactly as the plain call would: one more batch tracked, momentum None meaning a cumulative
average, and the unbiased variance, for the number of samples the plain call would have counted, in
the running estimate.
"""

from __future__ import annotations

import torch
from torch import nn


def next_momentum(bn: nn.BatchNorm2d) -> float:
    """Counts one more batch and returns the averaging factor the plain call would use for it."""
    bn.num_batches_tracked.add_(1)
    return 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum


@torch.no_grad()
def update(running_mean: torch.Tensor, running_var: torch.Tensor, mean: torch.Tensor, biased_var: torch.Tensor,
           count: int, momentum: float) -> None:
    """Moves the running estimates towards this batch's mean and unbiased variance of `count` samples."""
    running_mean.lerp_(mean, momentum)  # one launch each, not two
    running_var.lerp_(biased_var * (count / max(count - 1, 1)), momentum)
