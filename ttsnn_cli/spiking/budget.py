"""What a run over T timesteps will cost, estimated before it runs, and refused when it cannot fit.

Timesteps and input shapes come from places nobody vouches for: a bundle's `io` record, a recipe, an
option. A run allocates T x batch x (the input plus every activation of one step), and a training
step's backward keeps all of it, so a recorded `io.timesteps` of 1,000,000 or an input of 30000x30000
would hang or swap the machine long before any layer could complain. So the commands that run a model
at such sizes check them here first:

- `check_sizes` (no model run): T at most `MAX_TIMESTEPS`, and the input sequence itself fits in
  memory (`host.memory`);
- `check_run_fits`: one timestep of one sample through a meta-device copy of the model (shapes only,
  no arithmetic, no memory) measures the values every layer outputs (`StepCost.activations`) and the
  tensor operations it dispatches (`StepCost.ops`, what an unrolled export multiplies by T); then
  T x batch x (input + activations) float32 values must fit in the machine's memory.

The estimate is what one BPTT training step of that size holds (every activation of every step);
a no-grad run needs less, so a run refused here is one that could not be trained on this machine.
"""

from __future__ import annotations

import copy
import itertools
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from ttsnn_cli.errors import BadInputError
from ttsnn_cli.host.memory import check_fits
from ttsnn_cli.spiking.runner import prepare_run, run_timesteps
from ttsnn_cli.spiking.state import reset_states

#: most timesteps any command runs: far above what spiking datasets bin into (hundreds to a few
#: thousand), and small enough that a meta-device pass over T (counting, training FLOPs) stays minutes
MAX_TIMESTEPS = 10_000
#: bytes per value of the estimate (float32, what ttsnn computes in unless told otherwise)
VALUE_BYTES = 4


@dataclass(frozen=True)
class StepCost:
    """One timestep of one sample: values the layers output, and tensor operations dispatched."""

    activations: int
    ops: int


def check_timesteps(timesteps: int, what: str = "this run") -> None:
    """Refuse T above MAX_TIMESTEPS (from an option, a bundle's io.timesteps or a recipe)."""
    if timesteps > MAX_TIMESTEPS:
        raise BadInputError(f"{what}: {timesteps} timesteps is more than the {MAX_TIMESTEPS:,} ttsnn runs "
                            "(--timesteps, or the bundle's io.timesteps); use fewer")


def check_sizes(input_shape: tuple[int, ...], timesteps: int, batch: int = 1, what: str = "this run") -> None:
    """Refuse T above MAX_TIMESTEPS, or an input sequence [T, batch, *input_shape] that alone cannot
    fit in memory, before anything is allocated (not even the input)."""
    check_timesteps(timesteps, what)
    values = timesteps * batch * math.prod(int(s) for s in input_shape)
    check_fits(values * VALUE_BYTES, f"{what}: the input [T={timesteps}, B={batch}, "
               f"{', '.join(str(int(s)) for s in input_shape)}] alone",
               "use fewer timesteps, a smaller batch or a smaller input shape")


class _CountOps(TorchDispatchMode):
    """Counts the aten operations dispatched while active (what a traced graph is made of)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.count += 1
        return func(*args, **(kwargs or {}))


def _numel(value: Any) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel()
    if isinstance(value, (tuple, list)):
        return sum(_numel(v) for v in value)
    return 0


def meta_copy(model: nn.Module) -> nn.Module:
    """A copy of `model` (eval mode, neuron states cleared) whose parameters and buffers live on the meta
    device. They are never copied for real: deepcopy is handed their meta twins up front, so probing a
    large model (or one on a GPU) costs no second copy of its weights."""
    reset_states(model)
    memo: dict[int, Any] = {}
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        twin = torch.empty_like(tensor, device="meta")
        memo[id(tensor)] = nn.Parameter(twin, tensor.requires_grad) if isinstance(tensor, nn.Parameter) else twin
    return copy.deepcopy(model, memo).to("meta").eval()


def step_cost(model: nn.Module, input_shape: tuple[int, ...]) -> StepCost | None:
    """One timestep of one sample through a meta copy of `model`: its `StepCost`, or None when the
    model does not run on that shape (the caller's own checks then say why, in their words)."""
    try:
        meta = meta_copy(model)
    except Exception:  # noqa: BLE001 - a model that cannot be copied to meta: nothing to estimate from
        return None
    x = torch.empty(1, 1, *input_shape, device="meta")
    seen = [0]

    def hook(module: nn.Module, args: Any, out: Any) -> None:
        seen[0] += _numel(out)

    handles = [m.register_forward_hook(hook) for m in meta.modules() if not any(True for _ in m.children())]
    counter = _CountOps()
    try:
        with torch.no_grad():
            prepare_run(meta, x)  # an own-loop model's layout probe is not part of the step
            seen[0] = 0
            with counter:
                out = run_timesteps(meta, x)
    except Exception:  # noqa: BLE001 - the caller's checks report a model that cannot run; an
        return None  # interruption (a BaseException) passes
    finally:
        for handle in handles:
            handle.remove()
    steps = max(1, int(out.shape[0])) if isinstance(out, torch.Tensor) and out.dim() else 1
    # an own-loop model taking one frame ran its own steps: per step is the run over its step count
    return StepCost(seen[0] // steps, counter.count // steps)


def check_run_fits(model: nn.Module, input_shape: tuple[int, ...], timesteps: int, batch: int = 1,
                   what: str = "this run") -> StepCost | None:
    """`check_sizes`, then refuse a run whose T x batch x (input + activations) values cannot fit in
    memory. Returns the measured `StepCost` (None when the model does not run on `input_shape`)."""
    check_sizes(input_shape, timesteps, batch, what)
    cost = step_cost(model, tuple(int(s) for s in input_shape))
    if cost is not None:
        values = timesteps * batch * (math.prod(int(s) for s in input_shape) + cost.activations)
        check_fits(values * VALUE_BYTES,
                   f"{what} at T={timesteps}, batch {batch}, input {[int(s) for s in input_shape]} "
                   f"({cost.activations:,} activation values per step)",
                   "use fewer timesteps, a smaller batch or a smaller input shape")
    return cost
