"""An export copy of a model whose spiking state is explicit, so exporters see a pure function.

snntorch neurons keep their membrane in buffers and HTT layers count their calls: both are hidden
state that a graph exporter cannot carry between timesteps. `prepare_export_copy` deep-copies the
model and swaps, in the copy only:
- every `snn.Leaky` and every `neurons.MultiStepLIF` for a `LeakySlot`, which reads and writes its
  membrane in a shared `StepContext` (a plain dict, filled by the wrappers below);
- every HTT `TTConv2d` for an `HTTStep` choosing its path from the timestep (a python int while
  unrolling: the branch is baked into the graph; a 0-d tensor `t` in step mode: both paths are
  computed and `torch.where` selects one, so one graph serves every step);
- with `reconstruct_dense`, every `TTConv2d` for a `DenseFolded` dense conv: STT folded into
  `effective_kernel()`, PTT into its cross kernel, HTT into the cross kernel for t < ceil(T/2) and a
  1x1 conv of `reduced_kernel()` (centre tap, stride) after; exact up to float rounding. A
  `TTConv1d` folds the same way into Conv1d layers (`DenseFolded1d`), a `TTLinear` into the
  nn.Linear of its reconstructed weight; an HTT `TTConv1d` without folding becomes an `HTTStep`
  too (its full path is the chain core3(core2(A)), its reduced path core3(A) at the centre tap).
Any other neuron or time-aware module is refused with its name and the reason (exit 3).

LIF step (snntorch 1.0.0 `Leaky`, `reset_delay=True`), with h = [u - thr > 0] the Heaviside:
  zero:      u_t = beta * ((1 - h(u_{t-1})) * u_{t-1}) + x_t
  subtract:  u_t = beta * u_{t-1} + x_t - h(u_{t-1}) * thr
  none:      u_t = beta * u_{t-1} + x_t
  s_t = h(u_t) * graded_spikes_factor
(`reset_delay=False` also resets u_t in the same step, as snntorch does.) The operations run in the
same order as snntorch's, so the copy reproduces the original bit for bit in torch.

The wrappers: `Unrolled` maps x[T, B, ...] -> y[T, B, ...] (T baked in, batch dynamic); `Stepper` maps
(x[B, ...], [t], *membranes) -> (y, *next membranes) for one timestep.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ttsnn_cli.errors import BadInputError
from ttsnn_cli.layers import TTConv2d
from ttsnn_cli.layers_conv1d import TTConv1d
from ttsnn_cli.tt_linear import TTLinear
from ttsnn_cli.neurons import MultiStepLIF
from ttsnn_cli.runner import execution_style, first_output
from ttsnn_cli.state import TimeAware, is_neuron, reset_states

try:
    from snntorch import Leaky
except ImportError:  # pragma: no cover
    Leaky = ()  # type: ignore[assignment,misc]

_RESETS = {"subtract": 0, "zero": 1, "none": 2}


@dataclass
class StepContext:
    """Runtime state shared by the slots of one export copy: membranes by neuron name, the timestep.

    `record` collects each Heaviside the slots compute, in call order (the verifier's reference).
    """

    mems: dict[str, torch.Tensor | None] = field(default_factory=dict)
    heavisides: dict[str, torch.Tensor | None] = field(default_factory=dict)
    step: int | torch.Tensor = 0
    calls: dict[str, int] = field(default_factory=dict)
    last_out: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = field(default_factory=dict)
    record: list[torch.Tensor] | None = None

    def clear(self) -> None:
        self.mems = {k: None for k in self.mems}
        self.heavisides = {k: None for k in self.heavisides}
        self.calls = {}
        self.last_out = {}
        self.step = 0


def _scalar_or_tensor(value: Any) -> torch.Tensor:
    return value.detach().clone() if isinstance(value, torch.Tensor) else torch.tensor(float(value))


class LeakySlot(nn.Module):
    """A snntorch Leaky (or MultiStepLIF) whose membrane lives in a `StepContext`.

    Call conventions kept: `init_hidden=True` returns spk (or (spk, mem) with `output=True`);
    otherwise `forward(x, mem)` returns (spk, mem), the membrane given explicitly (own-loop models).
    A MultiStepLIF slot is called once per step and returns spikes.
    """

    def __init__(self, name: str, neuron: nn.Module, context: StepContext, multistep: bool = False) -> None:
        super().__init__()
        self.slot_name, self.context, self.multistep = name, context, multistep
        if getattr(neuron, "inhibition", False):
            raise BadInputError(f"neuron {name}: inhibition (winner-take-all over a batch row) has no export path")
        if getattr(neuron, "state_quant", False):
            raise BadInputError(f"neuron {name}: state quantisation is not supported by export")
        self.register_buffer("beta", _scalar_or_tensor(neuron.beta).clamp(0, 1))
        self.register_buffer("threshold", _scalar_or_tensor(neuron.threshold))
        self.register_buffer("graded", _scalar_or_tensor(getattr(neuron, "graded_spikes_factor", 1.0)))
        self.reset_mechanism = _RESETS[neuron.reset_mechanism if hasattr(neuron, "reset_mechanism") else "subtract"]
        self.reset_delay = bool(getattr(neuron, "reset_delay", True))
        self.init_hidden = bool(getattr(neuron, "init_hidden", False)) or multistep
        self.output = bool(getattr(neuron, "output", False)) and not multistep
        self.graded_is_one = bool(torch.all(self.graded == 1))
        self.positive_threshold = bool(torch.all(self.threshold > 0))
        context.mems.setdefault(name, None)
        context.heavisides.setdefault(name, None)

    def init_leaky(self) -> torch.Tensor:
        """snntorch's empty initial membrane (the next call makes zeros of the input's shape)."""
        return torch.zeros(0)

    reset_mem = init_leaky

    # The Heaviside snntorch's default surrogates compute in the forward pass: [mem - thr > 0].
    def _heaviside(self, mem: torch.Tensor) -> torch.Tensor:
        h = (mem - self.threshold > 0).to(mem.dtype)
        if self.context.record is not None:
            self.context.record.append(h)
        return h

    def step(self, x: torch.Tensor, mem: torch.Tensor | None,
             reset: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """One LIF update -> (spikes, membrane, H(membrane) when it is the next step's reset, else None)."""
        if mem is None and self.positive_threshold:
            new = x  # from a zero membrane every reset mechanism gives exactly x (0 * beta + x)
        else:
            if mem is None:
                mem = torch.zeros_like(x)
            if reset is None:
                reset = self._heaviside(mem)
            if self.reset_mechanism == 1:
                new = self.beta * ((1 - reset) * mem) + x
            elif self.reset_mechanism == 0:
                new = self.beta * mem + x - reset * self.threshold
            else:
                new = self.beta * mem + x
        h = self._heaviside(new)
        spk = h if self.graded_is_one else h * self.graded
        if not self.reset_delay:
            previous = reset if reset is not None else torch.zeros_like(h)
            do_reset = h - previous
            if self.reset_mechanism == 0:
                new = new - do_reset * self.threshold
            elif self.reset_mechanism == 1:
                new = new - do_reset * new
            return spk, new, None  # the next step computes H of the reset membrane if it needs it
        return spk, new, h

    def forward(self, x: torch.Tensor, mem: torch.Tensor | None = None, *_: Any, **__: Any) -> Any:
        if self.init_hidden:
            stored = self.context.mems.get(self.slot_name)
            if stored is not None and stored.shape != x.shape:
                stored = None
            reset = self.context.heavisides.get(self.slot_name) if stored is not None else None
            spk, new, h = self.step(x, stored, reset)
            self.context.mems[self.slot_name] = new
            self.context.heavisides[self.slot_name] = h  # the next reset (None: computed then, if needed)
            return (spk, new) if self.output else spk
        if mem is not None and mem.shape != x.shape:
            mem = None  # snntorch's init_leaky() gives an empty membrane: zeros of the input's shape
        # The membrane handed back is usually the one we returned last step: reuse its Heaviside as
        # the reset rather than computing the same comparison twice.
        last = self.context.last_out.get(self.slot_name)
        reset = last[1] if last is not None and mem is not None and last[0] is mem else None
        spk, new, h = self.step(x, mem, reset)
        self.context.last_out[self.slot_name] = (new, h)
        return spk, new


class HTTStep(nn.Module):
    """An HTT TTConv2d whose path follows the context's timestep (see the module docstring)."""

    def __init__(self, name: str, layer: TTConv2d | TTConv1d, context: StepContext) -> None:
        super().__init__()
        self.slot_name, self.layer, self.context = name, layer, context
        assert layer.timesteps is not None
        self.full_steps = math.ceil(layer.timesteps / 2)
        self.conv1d = isinstance(layer, TTConv1d)

    def _a(self, x: torch.Tensor) -> torch.Tensor:
        a = self.layer.core1(x)
        return a if self.layer._mode_pad is None else F.pad(a, self.layer._mode_pad, mode=self.layer.padding_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self._a(x)
        step = _timestep(self.context, self.slot_name)
        layer = self.layer
        path, last = (layer._chain, layer.core3) if self.conv1d else (layer._parallel, layer.core4)  # type: ignore[union-attr]
        if isinstance(step, torch.Tensor):
            return torch.where(step < self.full_steps, last(path(a)), last(layer._reduced(a)))
        if step < self.full_steps:
            return last(path(a))
        return last(layer._reduced(a))


def _timestep(context: StepContext, name: str) -> int | torch.Tensor:
    """The step tensor in step mode, else this layer's own call count (as TTConv2d counts calls)."""
    if isinstance(context.step, torch.Tensor):
        return context.step
    count = context.calls.get(name, 0)
    context.calls[name] = count + 1
    return count


class DenseFolded(nn.Module):
    """A TTConv2d folded back into dense convs (`--reconstruct-dense`); exact up to float rounding."""

    def __init__(self, name: str, layer: TTConv2d, context: StepContext) -> None:
        super().__init__()
        self.slot_name, self.context, self.mode = name, context, layer.mode
        self.stride, self.dilation = layer.stride, layer.dilation
        self.mode_pad, self.padding_mode = layer._mode_pad, layer.padding_mode
        left, right, top, bottom = (0, 0, 0, 0) if layer._mode_pad is not None else layer.padding
        symmetric = left == right and top == bottom
        self.pads = None if symmetric else (left, right, top, bottom)
        padding = (top, left) if symmetric else (0, 0)
        weight = layer.effective_kernel().to(layer.core1.weight.dtype)
        bias = layer.core4.bias
        self.full = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, padding,
                              layer.dilation, bias=bias is not None)
        with torch.no_grad():
            self.full.weight.copy_(weight)
            if bias is not None:
                self.full.bias.copy_(bias)
        self.reduced: nn.Conv2d | None = None
        if layer.mode == "htt":
            assert layer.timesteps is not None
            self.full_steps = math.ceil(layer.timesteps / 2)
            self.pad_reduced = layer._pad_reduced
            self.reduced = nn.Conv2d(layer.in_channels, layer.out_channels, 1, bias=bias is not None)
            with torch.no_grad():
                self.reduced.weight.copy_(layer.reduced_kernel().to(weight.dtype)[:, :, None, None])
                if bias is not None:
                    self.reduced.bias.copy_(bias)

    def _full(self, x: torch.Tensor) -> torch.Tensor:
        return self.full(x if self.pads is None else F.pad(x, self.pads))

    def _reduced(self, x: torch.Tensor) -> torch.Tensor:
        assert self.reduced is not None
        sh, sw = self.stride
        return self.reduced(F.pad(x, self.pad_reduced)[..., ::sh, ::sw])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode_pad is not None:
            x = F.pad(x, self.mode_pad, mode=self.padding_mode)
        if self.reduced is None:
            return self._full(x)
        step = _timestep(self.context, self.slot_name)
        if isinstance(step, torch.Tensor):
            return torch.where(step < self.full_steps, self._full(x), self._reduced(x))
        return self._full(x) if step < self.full_steps else self._reduced(x)


class DenseFolded1d(nn.Module):
    """A TTConv1d folded back into dense Conv1d layers (`--reconstruct-dense`), as DenseFolded."""

    def __init__(self, name: str, layer: TTConv1d, context: StepContext) -> None:
        super().__init__()
        self.slot_name, self.context, self.stride = name, context, layer.stride
        self.mode_pad, self.padding_mode = layer._mode_pad, layer.padding_mode
        left, right = (0, 0) if layer._mode_pad is not None else layer.padding
        self.pads = None if left == right else (left, right)
        bias = layer.core3.bias
        self.full = nn.Conv1d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                              left if left == right else 0, layer.dilation, bias=bias is not None)
        dtype = layer.core1.weight.dtype
        self.reduced: nn.Conv1d | None = None
        if layer.mode == "htt":
            assert layer.timesteps is not None
            self.full_steps, self.pad_reduced = math.ceil(layer.timesteps / 2), layer._pad_reduced
            self.reduced = nn.Conv1d(layer.in_channels, layer.out_channels, 1, bias=bias is not None)
        with torch.no_grad():
            self.full.weight.copy_(layer.effective_kernel().to(dtype))
            if self.reduced is not None:
                self.reduced.weight.copy_(layer.reduced_kernel().to(dtype)[:, :, None])
            for conv in (self.full, self.reduced):
                if conv is not None and bias is not None:
                    conv.bias.copy_(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode_pad is not None:
            x = F.pad(x, self.mode_pad, mode=self.padding_mode)
        full = self.full(x if self.pads is None else F.pad(x, self.pads))
        if self.reduced is None:
            return full
        reduced = self.reduced(F.pad(x, self.pad_reduced)[..., :: self.stride])
        step = _timestep(self.context, self.slot_name)
        if isinstance(step, torch.Tensor):
            return torch.where(step < self.full_steps, full, reduced)
        return full if step < self.full_steps else reduced


def dense_linear(layer: TTLinear) -> nn.Linear:
    """The nn.Linear of a TT-matrix's reconstructed weight (`--reconstruct-dense`, NIR)."""
    linear = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None)
    with torch.no_grad():
        linear.weight.copy_(layer.effective_weight().to(linear.weight.dtype))
        if layer.bias is not None:
            linear.bias.copy_(layer.bias)
    return linear.to(layer.cores[0].dtype)


@dataclass
class ExportCopy:
    """The rewritten copy, its context, its style, and what was swapped (for reports)."""

    model: nn.Module
    context: StepContext
    style: str
    neurons: list[str]
    htt: bool
    folded: list[str]
    batch_first: bool = False  # an own-loop model returning [B, T, ...] (set by the exporter's probe)


def prepare_export_copy(model: nn.Module, reconstruct_dense: bool = False) -> ExportCopy:
    """Deep-copy `model` (eval) and swap its stateful modules as the module docstring describes."""
    style = execution_style(model)
    reset_states(model)
    work = copy.deepcopy(model).eval()
    context = StepContext()
    neurons: list[str] = []
    folded: list[str] = []
    htt = False
    for name, module in list(work.named_modules()):
        if not name:
            if isinstance(module, (MultiStepLIF, TTConv2d, TTConv1d, TTLinear)) or is_neuron(module):
                raise BadInputError("the model is a single neuron or layer; export a network")
            continue
        if _inside_swapped(name, neurons + folded):
            continue
        replacement: nn.Module | None = None
        if isinstance(module, MultiStepLIF):
            _check_leaky(name, module.lif)
            replacement = LeakySlot(name, module.lif, context, multistep=True)
            neurons.append(name)
        elif is_neuron(module):
            _check_leaky(name, module)
            replacement = LeakySlot(name, module, context)
            neurons.append(name)
        elif isinstance(module, (TTConv2d, TTConv1d)):
            htt = htt or module.mode == "htt"
            if reconstruct_dense:
                fold = DenseFolded1d if isinstance(module, TTConv1d) else DenseFolded
                replacement = fold(name, module, context)  # type: ignore[arg-type]
                folded.append(name)
            elif module.mode == "htt":
                replacement = HTTStep(name, module, context)
                folded.append(name)
        elif isinstance(module, TTLinear) and reconstruct_dense:
            replacement = dense_linear(module)
            folded.append(name)
        elif isinstance(module, TimeAware):
            raise BadInputError(f"layer {name} ({type(module).__name__}) depends on the timestep in a way export does not know")
        if replacement is not None:
            work.set_submodule(name, replacement)
    if not neurons:
        raise BadInputError("the model has no snntorch Leaky neuron: nothing spiking to export (is it an SNN?)")
    return ExportCopy(work, context, style, neurons, htt, folded)


def _inside_swapped(name: str, swapped: list[str]) -> bool:
    return any(name.startswith(prefix + ".") for prefix in swapped)


def _check_leaky(name: str, neuron: nn.Module) -> None:
    if not isinstance(neuron, Leaky) or type(neuron).__name__ not in ("Leaky",):
        raise BadInputError(
            f"neuron {name} is a {type(neuron).__name__}: export supports snntorch Leaky neurons only "
            "(other neuron models carry extra state, e.g. synaptic current, that is not mapped)"
        )


class Unrolled(nn.Module):
    """x [T, B, ...] -> the network's first output over T, [T, B, ...]; T is baked into the graph."""

    def __init__(self, copy_: ExportCopy, timesteps: int, static_input: bool = False) -> None:
        super().__init__()
        self.net, self.context, self.style = copy_.model, copy_.context, copy_.style
        self.timesteps, self.static_input, self.batch_first = timesteps, static_input, copy_.batch_first

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.context.clear()
        if self.style == "own_loop":
            y = first_output(self.net(x[0] if self.static_input else x))
            return y.transpose(0, 1) if self.batch_first else y
        outputs = []
        for t in range(self.timesteps):
            self.context.step = t
            outputs.append(_one_step(self.net, self.style, x[t]))
        return torch.stack(outputs)


def _one_step(net: nn.Module, style: str, x: torch.Tensor) -> torch.Tensor:
    if style == "multistep":
        return first_output(net(x.unsqueeze(0)))[0]
    return first_output(net(x))


class Stepper(nn.Module):
    """One timestep: (x [B, ...], [t], *membranes) -> (y, *next membranes), in `neurons` order.

    `t` (int64, 0-d) is an input only when the model has HTT layers.
    """

    def __init__(self, copy_: ExportCopy) -> None:
        super().__init__()
        if copy_.style == "own_loop":
            raise BadInputError(
                f"--mode step needs a model called once per timestep; {type(copy_.model).__name__} runs its own "
                "time loop inside forward, so no single step can be cut out of it: use --mode unrolled"
            )
        self.net, self.context, self.style = copy_.model, copy_.context, copy_.style
        self.neurons, self.takes_step = list(copy_.neurons), copy_.htt

    def forward(self, x: torch.Tensor, *extra: torch.Tensor) -> tuple[torch.Tensor, ...]:
        self.context.clear()
        if self.takes_step:  # (called without `t` only to probe the state shapes: step 0)
            self.context.step, extra = (extra[0], extra[1:]) if extra else (torch.tensor(0), ())
        for name, mem in zip(self.neurons, extra):
            self.context.mems[name] = mem
        y = _one_step(self.net, self.style, x)
        return (y, *(self.context.mems[name] for name in self.neurons))
