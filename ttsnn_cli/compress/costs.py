"""What a global rank budget counts (`--budget-on weights|macs|time`), and the ratios compress reports.

Why: a user who compresses to run or train faster pays MACs or seconds, not weights. At 21.5x fewer
weights MS-ResNet18 computed only 5.7x fewer MACs, because a weight budget leaves the early
high-resolution layers their ranks. The allocators in `maths.ranks` (and `sensitivity.choose_ranks`)
take any `Costs`; this module measures the two that need the model:

- `MacCosts`: MACs per timestep of each layer, dense and as a TT layer at given ranks, counted the
  way `ttsnn report` counts them (forward hooks on the leaf convs, `kinds.leaf_call`): the dense
  layer's from a probe run of the model at its input shape, the TT layer's from a shape-only TT layer
  of the same geometry on the meta device (no decomposition, no arithmetic), so a STT core at the
  input resolution, PTT's two strided branches and HTT's average over T are all as computed.
- `TimeCosts`: measured forward + backward seconds of each layer at its real input shape (a probe
  batch of `TIME_BATCH` samples over T, folded), on the device the command runs on: the dense layer,
  and TT layers at a few equal ranks (`time_ranks`); a TT layer at other ranks costs the time
  interpolated over its MACs between the measured ranks (made non-decreasing: a larger layer never
  counts as faster). Bounded: (1 + ranks) x layers timings of `TIME_REPEATS` runs each (the fastest
  kept), after one warm-up. Step time is noisy; the allocation is deterministic given the timings (the clock is
  injectable, and the tests use a fake one).

The probe runs on a meta-device copy of the model (shapes only); a model whose forward needs values
runs on a CPU copy instead, as `report` does. Nothing here prints.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ttsnn_cli.errors import BadInputError
from ttsnn_cli.kinds import kind_of, leaf_kind, needs_all_steps
from ttsnn_cli.layers.conv2d import TTConv2d, conv_padding
from ttsnn_cli.layers.hooks import watching
from ttsnn_cli.maths.ranks import BUDGET_ON, GLOBAL_METHODS, Costs, Ranks
from ttsnn_cli.maths.tt import max_tt_ranks
from ttsnn_cli.spiking.runner import needs_values, prepare_run, run_timesteps
from ttsnn_cli.spiking.state import reset_states

#: samples of the probe batch a layer is timed on (times T timesteps, folded into the batch)
TIME_BATCH = 8
#: timed runs per measurement (the fastest is kept: on a shared machine, noise only ever adds time), after one warm-up run
TIME_REPEATS = 3
#: equal ranks timed per layer besides the dense layer
TIME_RANKS = 4

Timer = Callable[[Callable[[], None]], float]


def check_budget_on(value: str | None, method: str) -> str:
    """`--budget-on`: one of BUDGET_ON, and other than weights only for a method that spends a budget."""
    value = (value or "weights").strip()
    if value not in BUDGET_ON:
        raise BadInputError(f"--budget-on takes {', '.join(BUDGET_ON)}; got {value!r}")
    if value != "weights" and method not in GLOBAL_METHODS:
        raise BadInputError(f"--budget-on {value} sets what the global methods (budget:X, uniform:X, sensitivity:X, fisher:X, recovery:X) count; "
                            f"rank method {method} spends no budget")
    return value


@dataclass
class Probe:
    """One shape run of a model: MACs per timestep of every leaf (a conv, a linear, a TT core or a
    TT-matrix), and the per-item input shape of the watched layers."""

    macs: dict[str, float]
    inputs: dict[str, tuple[int, ...]]

    def total(self) -> float:
        return float(sum(self.macs.values()))

    def under(self, names: list[str]) -> float:
        """MACs of the leaves that are, or lie inside, the named layers."""
        return float(sum(v for leaf, v in self.macs.items()
                         if any(leaf == n or leaf.startswith(n + ".") for n in names)))


def probe(model: nn.Module, input_shape: tuple[int, ...], timesteps: int, watch: Iterable[str] = ()) -> Probe:
    """MACs per timestep of every leaf of `model` for one sample, and the input shape each watched
    layer sees. On a meta copy first (no arithmetic); on a CPU copy when the forward needs values."""
    steps = timesteps if needs_all_steps(model) else 1
    reset_states(model)
    try:
        copied = copy.deepcopy(model).to("meta").eval()
        inputs = torch.empty(steps, 1, *input_shape, device="meta")
        return _probe_run(copied, inputs, watch)
    except Exception as error:  # noqa: BLE001 - only the meta device's refusal is retried
        if not needs_values(error):
            raise
    copied = copy.deepcopy(model).to("cpu").eval()
    reset_states(copied)
    frame = torch.randn(1, *input_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return _probe_run(copied, frame.unsqueeze(0).expand(steps, *frame.shape).contiguous(), watch)


def _probe_run(model: nn.Module, inputs: torch.Tensor, watch: Iterable[str]) -> Probe:
    macs: dict[str, int] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    watched = set(watch)

    def leaf_hook(name: str, kind: Any) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...], out: torch.Tensor) -> None:
            macs[name] = macs.get(name, 0) + kind.leaf_call(module, args[0], out).macs
        return hook

    def shape_hook(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
            shapes.setdefault(name, tuple(int(s) for s in args[0].shape[1:]))
        return hook

    prepare_run(model, inputs)
    kinds = {name: (module, leaf_kind(module)) for name, module in model.named_modules()}
    after = [(module, leaf_hook(name, kind)) for name, (module, kind) in kinds.items() if kind is not None]
    before = [(module, shape_hook(name)) for name, (module, _) in kinds.items() if name in watched]
    with watching(after, before), torch.no_grad():
        out = run_timesteps(model, inputs)
    items = int(out.shape[0]) * int(inputs.shape[1])
    return Probe({name: value / items for name, value in macs.items()}, shapes)


def tt_skeleton(conv: nn.Conv2d, ranks: Ranks, mode: str, timesteps: int | None,
                device: str | torch.device = "meta") -> nn.Module:
    """A TT layer with the geometry `conv` would decompose into at `ranks`, its cores left at their
    initial values (what a MAC count or a timing needs: not the decomposition, which costs an SVD)."""
    kind = kind_of(conv)
    if kind is None or not kind.allocates("macs"):
        raise ValueError(f"{type(conv).__name__} is not a layer the global budget allocates")
    with torch.device(device):
        return TTConv2d(conv.in_channels, conv.out_channels, conv.kernel_size, ranks, mode,  # type: ignore[arg-type]
                        conv.stride, conv_padding(conv), conv.dilation, conv.bias is not None,  # type: ignore[arg-type]
                        conv.padding_mode, timesteps)


def _layer_macs(layer: nn.Module, item_shape: tuple[int, ...], timesteps: int | None) -> float:
    """MACs per timestep of one sample through `layer` (its leaves' hooks, on the meta device); a
    time-aware layer (HTT) is run over T folded steps and averaged, as `report` counts it."""
    steps = timesteps if getattr(layer, "mode", "stt") == "htt" and timesteps else 1
    total = 0

    def hook(kind: Any) -> Callable[..., None]:
        def count(module: nn.Module, args: tuple[Any, ...], out: torch.Tensor) -> None:
            nonlocal total
            total += kind.leaf_call(module, args[0], out).macs
        return count

    kinds = [(module, leaf_kind(module)) for module in layer.modules()]
    previous = getattr(layer, "folded_timesteps", None)
    try:
        if steps > 1:
            layer.folded_timesteps = steps  # type: ignore[assignment]
        with watching([(module, hook(kind)) for module, kind in kinds if kind is not None]), torch.no_grad():
            layer(torch.empty(steps, *item_shape, device="meta"))
    finally:
        if steps > 1:
            layer.folded_timesteps = previous  # type: ignore[assignment]
    return total / steps


class MacCosts:
    """MACs per timestep (one sample) of each layer the budget allocates: dense from the model's
    probe, TT at given ranks from a meta-device skeleton (cached per ranks)."""

    unit = "MACs"

    def __init__(self, layers: dict[str, nn.Module], dense_probe: Probe, mode: str, timesteps: int | None) -> None:
        missing = sorted(set(layers) - set(dense_probe.inputs))
        if missing:
            raise BadInputError(f"--budget-on macs: layer(s) {', '.join(missing)} never ran in a forward pass of the "
                                "model at its input shape, so their MACs are unknown; --exclude them")
        self.layers, self.mode, self.timesteps = layers, mode, timesteps
        self.inputs = {name: dense_probe.inputs[name] for name in layers}
        self._dense = {name: dense_probe.under([name]) for name in layers}
        self._cache: dict[tuple[str, Ranks], float] = {}

    def dense(self, name: str) -> float:
        return self._dense[name]

    def at(self, name: str, ranks: Ranks) -> float:
        key = (name, tuple(int(r) for r in ranks))
        if key not in self._cache:
            layer = tt_skeleton(self.layers[name], key[1], self.mode, self.timesteps)  # type: ignore[arg-type]
            self._cache[key] = _layer_macs(layer, self.inputs[name], self.timesteps)
        return self._cache[key]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def wall_timer(device: torch.device) -> Timer:
    """Seconds of one call of `step`: one warm-up, then the fastest of TIME_REPEATS timed calls
    (other work on the machine only ever adds time, so the minimum is the least noisy estimate)."""
    def measure(step: Callable[[], None]) -> float:
        step()
        _sync(device)
        runs = []
        for _ in range(TIME_REPEATS):
            started = time.perf_counter()
            step()
            _sync(device)
            runs.append(time.perf_counter() - started)
        return float(min(runs))
    return measure


def step_time(layer: nn.Module, item_shape: tuple[int, ...], timesteps: int, device: torch.device, timer: Timer,
              seed: int = 0) -> float:
    """Forward + backward seconds of `layer` (a copy, on `device`) on a probe batch of TIME_BATCH
    samples over T steps, folded: what one training step spends in it."""
    layer = copy.deepcopy(layer).to(device).train()
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(TIME_BATCH * timesteps, *item_shape, generator=generator).to(device).requires_grad_(True)
    previous = getattr(layer, "folded_timesteps", None)
    if hasattr(layer, "folded_timesteps"):
        layer.folded_timesteps = timesteps  # type: ignore[assignment]

    def step() -> None:
        layer.zero_grad(set_to_none=True)
        inputs.grad = None
        layer(inputs).sum().backward()

    try:
        return timer(step)
    finally:
        if hasattr(layer, "folded_timesteps"):
            layer.folded_timesteps = previous  # type: ignore[assignment]


def time_ranks(shape: tuple[int, ...], count: int = TIME_RANKS) -> list[int]:
    """Equal ranks to time: rank 1, the largest equal rank, and geometric steps between."""
    limit = min(max_tt_ranks(shape))
    ranks = {1, limit}
    for k in range(1, count - 1):
        ranks.add(max(1, min(limit, round(limit ** (k / (count - 1))))))
    return sorted(ranks)


class TimeCosts:
    """Measured forward + backward seconds of each layer the budget allocates (see the module docstring)."""

    unit = "seconds"

    def __init__(self, layers: dict[str, nn.Module], macs: MacCosts, timesteps: int, device: torch.device,
                 timer: Timer | None = None, progress: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.macs, self.device = macs, device
        self.timesteps = timesteps
        self.timer = timer or wall_timer(device)
        report = progress or (lambda event: None)
        self.measured: dict[str, dict[str, Any]] = {}
        total = sum(1 + len(time_ranks(tuple(c.weight.shape))) for c in layers.values())  # type: ignore[union-attr]
        done = 0
        for name, conv in layers.items():
            shape = macs.inputs[name]
            dense = step_time(conv, shape, timesteps, device, self.timer)
            done += 1
            report({"kind": "timing", "done": done, "total": total, "layer": name})
            points = []
            for r in time_ranks(tuple(conv.weight.shape)):  # type: ignore[union-attr]
                skeleton = tt_skeleton(conv, (r, r, r), macs.mode, macs.timesteps or timesteps, device="cpu")  # type: ignore[arg-type]
                seconds = step_time(skeleton, shape, timesteps, device, self.timer)
                points.append((macs.at(name, (r, r, r)), seconds, r))
                done += 1
                report({"kind": "timing", "done": done, "total": total, "layer": name})
            points.sort()
            envelope = np.maximum.accumulate([p[1] for p in points])
            self.measured[name] = {"dense_seconds": dense, "ranks": [p[2] for p in points],
                                   "macs": [p[0] for p in points], "seconds": [float(s) for s in envelope]}

    def dense(self, name: str) -> float:
        return float(self.measured[name]["dense_seconds"])

    def at(self, name: str, ranks: Ranks) -> float:
        """The layer's seconds at `ranks`: interpolated over MACs between the timed ranks (beyond the
        largest, extended along the last segment's slope)."""
        table = self.measured[name]
        xs, ys = table["macs"], table["seconds"]
        m = self.macs.at(name, ranks)
        if len(xs) > 1 and m > xs[-1]:
            slope = max(0.0, (ys[-1] - ys[-2]) / max(xs[-1] - xs[-2], 1e-12))
            return float(ys[-1] + slope * (m - xs[-1]))
        return float(np.interp(m, xs, ys))


def resolve_device(text: str | None) -> torch.device:
    """`--device`: auto (cuda when available), cpu, cuda, cuda:N."""
    text = (text or "auto").strip()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except RuntimeError:
        raise BadInputError(f"--device takes auto, cpu, cuda or cuda:N; got {text!r}") from None
    if device.type not in ("cpu", "cuda"):
        raise BadInputError(f"--device takes auto, cpu, cuda or cuda:N; got {text!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BadInputError(f"--device {text}: no CUDA device is available here")
    return device


def budget_costs(budget_on: str, layers: dict[str, nn.Module], dense_probe: Probe | None, mode: str,
                 timesteps: int | None, device: str | None = None, timer: Timer | None = None,
                 progress: Callable[[dict[str, Any]], None] | None = None) -> Costs:
    """The `Costs` the global methods spend for `--budget-on macs|time` (a weight budget is the
    allocators' default, `WeightCosts`)."""
    if dense_probe is None:
        raise BadInputError(f"--budget-on {budget_on} needs the input shape the model sees: give --input-shape C,H,W")
    macs = MacCosts(layers, dense_probe, mode, timesteps)
    if budget_on == "macs":
        return macs
    return TimeCosts(layers, macs, timesteps or 1, resolve_device(device), timer, progress)


def leaf_weights(model: nn.Module) -> dict[str, int]:
    """Conv + linear weights of every leaf by name (the paper's convention, as `report` counts)."""
    return {name: kind.leaf_weights(m) for name, m in model.named_modules() if (kind := leaf_kind(m)) is not None}


def _under(values: dict[str, float] | dict[str, int], names: list[str]) -> float:
    return float(sum(v for leaf, v in values.items() if any(leaf == n or leaf.startswith(n + ".") for n in names)))


def result_ratios(compressed: nn.Module, names: list[str], dense_weights: dict[str, int], dense_probe: Probe | None,
                  input_shape: tuple[int, ...] | None, timesteps: int | None, time_costs: TimeCosts | None = None,
                  timer: Timer | None = None) -> dict[str, Any]:
    """compress's `ratios`: dense over TT for the decomposed layers (`weights`, `macs`, `time`: null
    where not measured), and for the whole model (`model_weights`, `model_macs`). `dense_weights` is
    `leaf_weights` of the model before it was compressed. MACs are counted on the compressed model
    itself, as `report` counts them; time is measured on the chosen TT layers (only with
    `--budget-on time`, which timed the dense layers)."""
    after_weights = leaf_weights(compressed)
    before_w, after_w = _under(dense_weights, names), _under(after_weights, names)
    ratios: dict[str, Any] = {
        "scope": "decomposed layers", "weights": before_w / max(after_w, 1.0), "macs": None, "time": None,
        "model_weights": sum(dense_weights.values()) / max(sum(after_weights.values()), 1),
        "model_macs": None, "weights_before": int(before_w), "weights_after": int(after_w),
        "macs_before": None, "macs_after": None, "seconds_before": None, "seconds_after": None,
    }
    if dense_probe is not None and input_shape is not None:
        after = probe(compressed, input_shape, timesteps or 1)
        before_m, after_m = dense_probe.under(names), after.under(names)
        ratios.update(macs=before_m / max(after_m, 1e-12), macs_before=before_m, macs_after=after_m,
                      model_macs=dense_probe.total() / max(after.total(), 1e-12))
    if time_costs is not None:
        timed = [n for n in names if n in time_costs.measured]
        before_s = sum(time_costs.dense(n) for n in timed)
        after_s = sum(step_time(compressed.get_submodule(n), time_costs.macs.inputs[n], time_costs.timesteps,
                                time_costs.device, timer or time_costs.timer) for n in timed)
        ratios.update(time=before_s / max(after_s, 1e-12), seconds_before=before_s, seconds_after=after_s,
                      time_device=str(time_costs.device), time_batch=TIME_BATCH)
    return ratios
