"""Which way each TT layer trains fastest on this device: its factored cores, or one convolution of
its kernel rebuilt from the cores (`TTConv2d.kernel_path`).

Why a measurement: both compute the same function from the same trainable cores, but their cost
depends on the device. On a CPU the factored cores win (at the paper's ranks the whole TT step is
about 2.5x faster than dense, docs/benchmarks.md). On a GPU the thin 1x1 / kx1 core convolutions run
far below cuDNN's dense-conv efficiency and a factored layer launches four times the kernels, so a
rebuilt kernel (a few small matrix products, then one dense-speed conv) can be the faster way to
train some layers and not others. No rule of thumb decides that across GPUs, shapes and ranks, so
`measure_plan` times both, per layer, forward and backward, on the very input shape each layer sees
in training, and `choose` keeps the faster one.

`--tt-kernel auto` (the default) measures on CUDA and keeps the factored cores on the CPU, where they
are measured faster and where runs must stay bitwise reproducible; `factored` and `rebuilt` force
one path for every layer. The choice is a runtime switch (`kernel_paths`): nothing is persisted, and
a saved bundle is the same whichever path trained it.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import ContextManager

import torch
from torch import nn

from ttsnn_cli.errors import BadInputError
from ttsnn_cli.kinds import kind_of

KERNEL_CHOICES = ("auto", "factored", "rebuilt")
PATHS = ("factored", "rebuilt")


def check_kernel_choice(choice: str) -> None:
    if choice not in KERNEL_CHOICES:
        raise BadInputError(f"--tt-kernel must be one of {', '.join(KERNEL_CHOICES)}, got {choice!r}")


def rebuildable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The TT layers of `model` that can run their rebuilt kernel (their kind says so)."""
    found = {}
    for name, module in model.named_modules():
        kind = kind_of(module)
        if kind is not None and kind.rebuilds and kind.owns_tt(module):
            found[name] = module
    return found


@contextlib.contextmanager
def kernel_paths(model: nn.Module, plan: dict[str, str], layers: dict[str, nn.Module] | None = None
                 ) -> Iterator[None]:
    """Within the block, each layer named in `plan` runs the path it names; afterwards each runs what
    it ran before (the switch is a runtime flag, like `train.memory.recomputing_tt`'s). `layers`:
    `rebuildable_layers(model)`, when the caller enters the block every step."""
    layers = rebuildable_layers(model) if layers is None else layers
    before = {name: layers[name].__dict__.get("kernel_path") for name in plan if name in layers}
    for name in before:
        layers[name].kernel_path = plan[name]
    try:
        yield
    finally:
        for name, previous in before.items():
            if previous is None:
                layers[name].__dict__.pop("kernel_path", None)
            else:
                layers[name].kernel_path = previous


def uniform_plan(model: nn.Module, path: str) -> dict[str, str]:
    """Every rebuildable layer on `path`."""
    return {name: path for name in rebuildable_layers(model)}


@dataclass(frozen=True)
class LayerTiming:
    """Median milliseconds of one forward + backward of a layer alone, each way."""

    factored_ms: float
    rebuilt_ms: float

    @property
    def faster(self) -> str:
        return "rebuilt" if self.rebuilt_ms < self.factored_ms else "factored"


def _inputs_seen(model: nn.Module, layers: dict[str, nn.Module], run: Callable[[], object]
                 ) -> dict[str, torch.Tensor]:
    """One input of each layer as `run()` (one forward of the model) feeds it: its shape, dtype,
    device and memory format are what the timing must reproduce. The forward runs in training mode,
    as training will, and the running statistics it moves are put back: probing trains nothing."""
    kept = {name: buffer.clone() for name, buffer in model.named_buffers()}
    seen: dict[str, torch.Tensor] = {}
    handles = []
    for name, layer in layers.items():
        def hook(_module: nn.Module, args: tuple, name: str = name) -> None:
            if name not in seen and args and isinstance(args[0], torch.Tensor):
                seen[name] = args[0].detach()
        handles.append(layer.register_forward_pre_hook(hook))
    was_training = model.training
    try:
        with torch.no_grad():
            run()
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
        with torch.no_grad():
            for name, buffer in model.named_buffers():
                if name in kept and buffer.shape == kept[name].shape:
                    buffer.copy_(kept[name])
    return seen


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


Unit = tuple[Callable[[torch.Tensor], torch.Tensor], list[nn.Module]]
"""How a TT layer runs in training, when more than the layer (`plan_units`), and the modules it uses."""


def plan_units(model: nn.Module) -> dict[str, Unit]:
    """What to time for each layer: the model's own `plan_units()` where it has one (a model that
    runs a TT layer with what follows it differently on each path: `zoo.msresnet` folds BatchNorm
    into a factored layer's last core, and runs it as a module after a rebuilt one), else nothing:
    the layer alone."""
    units = getattr(model, "plan_units", None)
    return units() if callable(units) else {}


def _time_unit(unit: Unit, x: torch.Tensor, repeats: int, context: Callable[[], ContextManager]) -> float:
    """Median ms of `repeats` forward + backward passes after one warm-up (cuDNN's autotuning, the
    allocator's first blocks). The modules' gradients and buffers (a BatchNorm's running statistics)
    are restored afterwards: timing trains nothing."""
    run, modules = unit
    grads = [(p, p.grad) for module in modules for p in module.parameters()]
    buffers = [(b, b.clone()) for module in modules for b in module.buffers()]
    times = []
    try:
        for index in range(repeats + 1):
            _sync(x.device)
            start = time.perf_counter()
            with context():
                y = run(x)
            y.backward(torch.ones_like(y))
            _sync(x.device)
            if index:
                times.append(1000 * (time.perf_counter() - start))
    finally:
        for parameter, grad in grads:
            parameter.grad = grad
        with torch.no_grad():
            for buffer, saved in buffers:
                buffer.copy_(saved)
    return statistics.median(times)


def measure_plan(model: nn.Module, run: Callable[[], object], repeats: int = 5,
                 context: Callable[[], ContextManager] = contextlib.nullcontext) -> dict[str, LayerTiming]:
    """Each rebuildable layer timed both ways on the input `run()` (one forward of `model` on a
    training batch) feeds it, under `context` (autocast, when training runs under it), with what the
    model runs it with (`plan_units`). The input is made of random 0/1 spikes of that shape: the
    cost does not depend on the values."""
    layers = rebuildable_layers(model)
    if not layers:
        return {}
    units = plan_units(model)
    seen = _inputs_seen(model, layers, run)
    timings: dict[str, LayerTiming] = {}
    for name, layer in layers.items():
        if name not in seen:
            continue  # not reached by this forward (an unused branch): keep it factored
        sample = seen[name]
        x = torch.rand_like(sample, dtype=torch.float32).lt(0.2).to(sample.dtype)
        if sample.is_contiguous(memory_format=torch.channels_last) and not sample.is_contiguous():
            x = x.contiguous(memory_format=torch.channels_last)
        measured = {}
        for path in PATHS:
            with kernel_paths(model, {name: path}):
                measured[path] = _time_unit(units.get(name, (layer, [layer])), x, repeats, context)
        timings[name] = LayerTiming(measured["factored"], measured["rebuilt"])
    return timings


def choose(timings: dict[str, LayerTiming]) -> dict[str, str]:
    """The faster path of each measured layer."""
    return {name: timing.faster for name, timing in timings.items()}


def plan_summary(plan: dict[str, str], timings: dict[str, LayerTiming] | None = None) -> dict[str, object]:
    """What a command's JSON reports: how many layers run each way, and the timings when measured."""
    summary: dict[str, object] = {path: sum(1 for p in plan.values() if p == path) for path in PATHS}
    if timings:
        summary["layers"] = {name: {"path": plan.get(name, "factored"), "factored_ms": round(t.factored_ms, 4),
                                    "rebuilt_ms": round(t.rebuilt_ms, 4)} for name, t in timings.items()}
    return summary
