"""Drive any supported model over T timesteps: the one place that knows the three model styles.

- multistep: a model (the zoo's) whose forward takes the whole sequence [T, B, ...] and returns
  [T, B, ...]; it folds time into the batch itself. Marked by `model.multistep = True`.
- sequential: an nn.Sequential of stateless layers and snntorch neurons with `init_hidden=True`,
  written to be called once per step (user style B). We run it fast: each stateless layer once over
  all T steps with time folded into the batch (time-major), and only the neurons loop over time.
  `fold=False` calls it step by step instead (the reference for tests and benchmarks).
- own_loop: anything else, a class with its own `for step in range(num_steps)` loop (user style A).
  It is called as it is, once; it gets the static input [B, ...] when every step of the sequence is
  the same (direct encoding) and the sequence [T, B, ...] otherwise, and must return [T, B, ...]
  (or a tuple whose first element is that).
In every style the neurons are reset first, and the result is the network's first output over T.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from ttsnn_cli.state import is_neuron, reset_states, time_folded

Style = Literal["multistep", "sequential", "own_loop"]


def execution_style(model: nn.Module) -> Style:
    if getattr(model, "multistep", False):
        return "multistep"
    if isinstance(model, nn.Sequential) and _foldable(model):
        return "sequential"
    return "own_loop"


def _foldable(seq: nn.Sequential) -> bool:
    for child in seq:
        if isinstance(child, nn.Sequential):
            if not _foldable(child):
                return False
        elif is_neuron(child):
            if not getattr(child, "init_hidden", False):
                return False
        elif any(is_neuron(m) for m in child.modules()):
            return False  # a compound child hiding neurons: we cannot know how it uses time
    return True


def first_output(result: torch.Tensor | tuple | list) -> torch.Tensor:
    return result[0] if isinstance(result, (tuple, list)) else result


def run_timesteps(model: nn.Module, inputs: torch.Tensor, fold: bool = True, reset: bool = True) -> torch.Tensor:
    """The network's first output over time, [T, B, ...], for an input sequence [T, B, ...]."""
    if reset:
        reset_states(model)
    style = execution_style(model)
    steps = inputs.shape[0]
    if style == "multistep":
        with time_folded(model, steps):
            return first_output(model(inputs))
    if style == "sequential":
        if fold:
            return _run_folded(model, inputs)
        return torch.stack([first_output(model(inputs[t])) for t in range(steps)])
    static = steps == 1 or bool(torch.equal(inputs[0], inputs[-1]) and torch.equal(inputs[0], inputs[steps // 2]))
    return first_output(model(inputs[0] if static else inputs))


def _run_folded(seq: nn.Sequential, inputs: torch.Tensor) -> torch.Tensor:
    """[T, B, ...] through a foldable Sequential: stateless layers folded, neurons stepped."""
    steps, batch = inputs.shape[:2]
    x = inputs
    for child in seq:
        if isinstance(child, nn.Sequential):
            x = _run_folded(child, x)
        elif is_neuron(child):
            x = torch.stack([first_output(child(x[t])) for t in range(steps)])
        else:
            with time_folded(child, steps):
                y = child(x.flatten(0, 1))
            x = y.unflatten(0, (steps, batch))
    return x
