"""The update and its learning-rate schedule, as the training commands build them.

On CUDA the update is torch's fused kernel (`fusable` says why), with one guard: torch's fused SGD
allocates its momentum buffers uninitialised on its first step and fills them only if the step
runs, so a first step the fp16 loss scaler skips (an overflow, routine while the scale settles)
leaves garbage that the next step multiplies into the weights. `_momentum_from_zero` gives every
parameter a zero buffer before its first step instead, which computes the same first momentum
(momentum * 0 + gradient is the gradient exactly) and keeps a skipped step skipped.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import nn

FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


class UpdateSettings(Protocol):
    """What the update reads of the run's settings (`engine.TrainConfig`)."""

    optimizer: str
    lr: float
    momentum: float
    weight_decay: float
    schedule: str


def make_optimizer(params: list[nn.Parameter], config: UpdateSettings, fused: bool | None = None
                   ) -> torch.optim.Optimizer:
    """SGD (momentum) or Adam (beta1 = momentum); `fused`: torch's fused kernel (default: `fusable`)."""
    fused = fusable(params) if fused is None else fused
    if config.optimizer == "sgd":
        optimizer: torch.optim.Optimizer = torch.optim.SGD(
            params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay, fused=fused or None)
        if fused and config.momentum:
            optimizer.register_step_pre_hook(_momentum_from_zero)
        return optimizer
    return torch.optim.Adam(params, lr=config.lr, betas=(config.momentum, 0.999), weight_decay=config.weight_decay,
                            fused=fused or None)


def fusable(params: list[nn.Parameter]) -> bool:
    """Whether the update runs as torch's fused kernel: where every parameter is floating point on
    CUDA. There a TT model's update, four small tensors per layer, would launch kernels per tensor
    group and op, and under fp16 torch's loss scaler would read its overflow flag on the host every
    step, waiting for the GPU; fused, the update is a few multi-tensor kernels and the scaler hands
    the flag to them. On the CPU the fused update is faster too (MS-ResNet18 PTT, SGD: 1.1 ms a step
    against 1.8 ms), but that is under 1 % of a step, and it rounds differently from the unfused
    one, which would change the results of CPU runs: the CPU keeps the unfused update."""
    return bool(params) and all(p.device.type == "cuda" and p.dtype in FLOATS for p in params)


def _momentum_from_zero(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    """Before a fused SGD step: a zero momentum buffer for every parameter about to be updated that
    has none (module docstring). Also after a resume whose state lacks some buffers: torch's fused
    step takes all of them or none."""
    for group in optimizer.param_groups:
        if group["momentum"]:
            for param in group["params"]:
                if param.grad is not None and "momentum_buffer" not in optimizer.state[param]:
                    optimizer.state[param]["momentum_buffer"] = torch.zeros_like(param)


def make_scheduler(optimizer: torch.optim.Optimizer, config: UpdateSettings, steps: int) -> Any:
    """Cosine annealing over the run's `steps`, or a constant rate."""
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, steps))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
