"""`fisher:X`: ranks that balance each layer's Fisher-weighted reconstruction error, min-max.

Why: `sensitivity:X` measures what each layer alone costs in loss before any fine-tuning and spends the
budget greedily on it; out of sample that chose ranks fine-tuning could not recover (one layer
driven to rank 1 because its loss, alone, hardly moved). `budget:X` balances every layer's relative
reconstruction error, min-max, and knows nothing of the data. This method keeps budget's balance and
changes what is balanced: each layer's error is weighted by the diagonal empirical Fisher information
F (mean squared gradient of the calibration loss, as Optimal Brain Damage and Fisher pruning weight
a weight change),

    e(r) = sum F (W - TT_r(W))^2 / sum F W^2,

the share of the layer's Fisher-weighted energy the ranks lose: errors in the directions the loss
is sensitive to count, the others barely. Relative, so no layer is free (a layer whose Fisher is all
zero, e.g. one no spike reaches on the calibration set, falls back to the plain relative error).
The knapsack on the absolute second-order estimate 1/2 sum F dW^2 was measured and dropped: it drove
the last conv of digits_csnn to rank 1 and fine-tuned to 24.7 % at 32x, where budget:X reached 81.4 %.

F comes from one backward pass per mini-batch of the calibration set (eval mode: BatchNorm statistics
and dropout as at test time; surrogate gradients through the spikes); every candidate then costs a
TT-SVD and a weighted sum, no forward pass. The allocation is `sensitivity.minmax_ranks`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ttsnn_cli.spiking.runner import run_timesteps
from ttsnn_cli.spiking.state import reset_states

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
        reset_states(model)  # a neuron keeping its state (init_hidden) would hold the last batch's graph
        model.train(was_training)
    return {name: total / max(batches, 1) for name, total in sums.items()}


def fisher_error(fisher: torch.Tensor, dense: torch.Tensor, approx: torch.Tensor) -> float:
    """sum F (W - W~)^2 / sum F W^2: the share of the layer's Fisher-weighted energy a weight change
    loses; the plain relative error sum (W - W~)^2 / sum W^2 where F is zero on the whole layer."""
    w = dense.detach().to(torch.float64).cpu().reshape(fisher.shape)
    delta = w - approx.detach().to(torch.float64).cpu().reshape(fisher.shape)
    weights = fisher if float((fisher * w ** 2).sum()) > 0 else torch.ones_like(fisher)
    return float((weights * delta ** 2).sum() / max(float((weights * w ** 2).sum()), 1e-300))
