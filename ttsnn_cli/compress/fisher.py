"""`fisher:X`: each layer's loss increase at a candidate rank, estimated from the diagonal Fisher.

Why: `sensitivity:X` measures what each layer alone costs in loss before any fine-tuning, and that
measurement is dominated by a few layers whose outputs the spiking thresholds amplify: out of sample
it chose ranks that fine-tuning could not recover. `budget:X` balances reconstruction error and
knows nothing of the loss. This estimate sits between them: the second-order change of the loss
when a layer's weights move by dW, with the expected Hessian replaced by the diagonal empirical
Fisher information F (mean squared gradient, as Optimal Brain Damage and Fisher pruning do),

    loss increase ~ 1/2 * sum_i F_i * dW_i^2,  dW = W - TT(W) at the candidate ranks.

So it is the reconstruction error, weighted by how much the loss cares about each weight. F comes
from one backward pass per mini-batch of the calibration set (eval mode: BatchNorm statistics and
dropout as at test time; surrogate gradients through the spikes); every candidate then costs a
TT-SVD and a weighted sum, no forward pass. The allocation is `sensitivity.choose_ranks`, the same
greedy knapsack on these curves.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ttsnn_cli.spiking.runner import run_timesteps

#: samples per backward pass: the Fisher is the mean of squared mini-batch gradients, so batches must
#: be small enough that their gradients still vary (one batch of the whole set would be its square mean)
FISHER_BATCH = 8


def fisher_information(model: nn.Module, layers: dict[str, nn.Module], inputs: torch.Tensor, labels: torch.Tensor,
                       batch_size: int = FISHER_BATCH) -> dict[str, torch.Tensor]:
    """Mean squared gradient of the calibration loss (cross-entropy of the time-averaged output) with
    respect to each layer's weight, float64 on the CPU. `inputs` [T, N, ...], `labels` [N].
    The model's parameters keep their `requires_grad` and gradients; its train/eval state is restored."""
    device = next(model.parameters()).device
    weights = {name: layer.weight for name, layer in layers.items()}  # type: ignore[misc]
    wanted = {name: w.requires_grad for name, w in weights.items()}
    sums = {name: torch.zeros(w.shape, dtype=torch.float64) for name, w in weights.items()}
    was_training = model.training
    model.eval()
    batches = 0
    try:
        for w in weights.values():
            w.requires_grad_(True)
        for start in range(0, labels.shape[0], batch_size):
            x = inputs[:, start:start + batch_size].to(device)
            y = labels[start:start + batch_size].to(device)
            with torch.enable_grad():
                loss = F.cross_entropy(run_timesteps(model, x, fold=True).mean(0), y)
                grads = torch.autograd.grad(loss, list(weights.values()), allow_unused=True)
            for name, grad in zip(weights, grads):
                if grad is not None:
                    sums[name] += grad.detach().to(torch.float64).cpu() ** 2
            batches += 1
    finally:
        for name, w in weights.items():
            w.requires_grad_(wanted[name])
        model.train(was_training)
    return {name: total / max(batches, 1) for name, total in sums.items()}


def fisher_increase(fisher: torch.Tensor, dense: torch.Tensor, approx: torch.Tensor) -> float:
    """1/2 sum F (W - W~)^2: the loss increase a weight change is estimated to cause."""
    delta = dense.detach().to(torch.float64).cpu() - approx.detach().to(torch.float64).cpu()
    return 0.5 * float((fisher * delta.reshape(fisher.shape) ** 2).sum())
