"""`recovery:X`: each layer's loss at a candidate rank measured after a few steps of fine-tuning it.

Why: what decides a compressed network's accuracy is the loss after fine-tuning, not the loss the
decomposition causes before it (`sensitivity:X` measures that, and out of sample its ranks were
ones fine-tuning could not recover). Here every candidate TT layer, alone in the dense network, is
first trained for a few SGD steps (only its cores; everything else frozen, eval mode so BatchNorm
statistics stay as they are) on one half of the calibration set, then its loss is measured on the
other half (a candidate fitted and judged on the same samples would look better than it is). A
layer whose error the cores can absorb then costs little; one whose loss stays up does not. The
curve keeps the lower of the losses before and after the steps: near a trained optimum a few noisy
steps can raise the held-out loss, and a fine-tune would not keep such a step (measured on
digits_csnn: with momentum 0.9 the 8 steps raised a near-full-rank layer's loss from 0.022 to 1.9,
so the steps are plain SGD).

Cost: `RECOVERY_STEPS` forward and backward passes of the whole network per candidate, so this is
the most expensive rank method by far (MS-ResNet18 at T = 2 on a CPU: minutes). The allocation is
`sensitivity.minmax_ranks` (the worst layer's recovered loss increase as small as possible): a greedy
knapsack on per-layer losses drives single layers to rank 1, which is what failed out of sample.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

from ttsnn_cli.spiking.runner import run_timesteps
from ttsnn_cli.spiking.state import reset_states

RECOVERY_STEPS = 8
RECOVERY_LR = 0.02  # the fine-tuning learning rate sweeps and the docs use
RECOVERY_BATCH = 32


def recover(model: nn.Module, layer: nn.Module, inputs: torch.Tensor, labels: torch.Tensor,
            steps: int = RECOVERY_STEPS, lr: float = RECOVERY_LR, batch_size: int = RECOVERY_BATCH) -> None:
    """Train `layer` (already in `model`) for `steps` SGD steps on `inputs` [T, N, ...] / `labels`, in
    batches taken in order (deterministic); every other parameter keeps its values and its
    `requires_grad`, and the model its train/eval state (eval while training: BatchNorm statistics
    and dropout as at test time)."""
    params = [p for p in model.parameters()]
    wanted = [p.requires_grad for p in params]
    own = {id(p) for p in layer.parameters()}
    was_training = model.training
    device = next(layer.parameters()).device
    model.eval()
    try:
        for p in params:
            p.requires_grad_(id(p) in own)
        optimizer = torch.optim.SGD(layer.parameters(), lr=lr)
        starts = itertools.cycle(range(0, labels.shape[0], batch_size))
        for _ in range(steps):
            start = next(starts)
            x = inputs[:, start:start + batch_size].to(device)
            y = labels[start:start + batch_size].to(device)
            with torch.enable_grad():
                loss = F.cross_entropy(run_timesteps(model, x, fold=True).mean(0), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
            optimizer.step()
    finally:
        for p, flag in zip(params, wanted):
            p.requires_grad_(flag)
            if id(p) not in own:
                p.grad = None
        reset_states(model)  # a neuron keeping its state (init_hidden) would hold the last batch's graph
        model.train(was_training)
