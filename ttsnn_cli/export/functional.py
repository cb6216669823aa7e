"""An export copy of a model whose spiking state is explicit, so exporters see a pure function.

snntorch neurons keep their membrane in buffers and HTT layers count their calls: both are hidden
state that a graph exporter cannot carry between timesteps. `prepare_export_copy` deep-copies the
model and swaps, in the copy only:
- every snntorch neuron (Leaky, Lapicque, Synaptic, Alpha, RLeaky, RSynaptic) and every
  `neurons.MultiStepLIF` for a `neuron_slot.NeuronSlot`, which reads and writes its state tuple in a
  shared `StepContext` (a plain dict, filled by the wrappers below); the equations are in
  `neuron_slot` and reproduce snntorch bit for bit in torch;
- every HTT `TTConv2d` for an `HTTStep` choosing its path from the timestep (a python int while
  unrolling: the branch is baked into the graph; a 0-d tensor `t` in step mode: both paths are
  computed and `torch.where` selects one, so one graph serves every step);
- with `reconstruct_dense`, every `TTConv2d` for a `DenseFolded` dense conv: STT folded into
  `effective_kernel()`, PTT into its cross kernel, HTT into the cross kernel for t < ceil(T/2) and a
  1x1 conv of `reduced_kernel()` (centre tap, stride) after; exact up to float rounding. A
  `TTConv1d` folds the same way into Conv1d layers (`DenseFolded1d`), a `TTLinear` into the
  nn.Linear of its reconstructed weight; an HTT `TTConv1d` without folding becomes an `HTTStep`
  too (its full path is the chain core3(core2(A)), its reduced path core3(A) at the centre tap).
Layers are swapped before neurons, so a recurrent neuron's own (TT) conv is swapped too. Any other
neuron or time-aware module is refused with its name and the reason (exit 3).

The wrappers: `Unrolled` maps x[T, B, ...] -> y[T, B, ...] (T baked in, batch dynamic); `Stepper` maps
(x[B, ...], [t], *states) -> (y, *next states) for one timestep.
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
from ttsnn_cli.export.neuron_slot import NeuronSlot
from ttsnn_cli.layers.conv2d import TTConv2d
from ttsnn_cli.layers.conv1d import TTConv1d
from ttsnn_cli.layers.linear import TTLinear
from ttsnn_cli.spiking.neurons import MultiStepLIF
from ttsnn_cli.spiking.runner import execution_style, first_output
from ttsnn_cli.spiking.state import TimeAware, is_neuron, reset_states


@dataclass
class StepContext:
    """Runtime state shared by the slots of one export copy: membranes by neuron name, the timestep.

    `record` collects each Heaviside the slots compute, in call order (the verifier's reference).
    """

    mems: dict[str, tuple[torch.Tensor, ...] | None] = field(default_factory=dict)  # each neuron's state tuple
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


LeakySlot = NeuronSlot  # the name of the Leaky-only slot this generalises (kept for callers)


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
    # layers first (a recurrent neuron's own conv may be an HTT layer), then the neurons around them
    for name, module in list(work.named_modules()):
        if not name:
            if isinstance(module, (MultiStepLIF, TTConv2d, TTConv1d, TTLinear)) or is_neuron(module):
                raise BadInputError("the model is a single neuron or layer; export a network")
            continue
        if _inside_swapped(name, folded):
            continue
        replacement: nn.Module | None = None
        if isinstance(module, (TTConv2d, TTConv1d)):
            htt = htt or module.mode == "htt"
            if reconstruct_dense:
                fold = DenseFolded1d if isinstance(module, TTConv1d) else DenseFolded
                replacement = fold(name, module, context)  # type: ignore[arg-type]
            elif module.mode == "htt":
                replacement = HTTStep(name, module, context)
        elif isinstance(module, TTLinear) and reconstruct_dense:
            replacement = dense_linear(module)
        elif isinstance(module, TimeAware) and not isinstance(module, MultiStepLIF):
            raise BadInputError(f"layer {name} ({type(module).__name__}) depends on the timestep in a way export does not know")
        if replacement is not None:
            work.set_submodule(name, replacement)
            folded.append(name)
    for name, module in list(work.named_modules()):
        if not name or _inside_swapped(name, neurons):
            continue
        if isinstance(module, MultiStepLIF):
            work.set_submodule(name, NeuronSlot(name, module.lif, context, multistep=True))
            neurons.append(name)
        elif is_neuron(module):
            work.set_submodule(name, NeuronSlot(name, module, context))
            neurons.append(name)
    if not neurons:
        raise BadInputError("the model has no snntorch neuron: nothing spiking to export (is it an SNN?)")
    return ExportCopy(work, context, style, neurons, htt, folded)


def _inside_swapped(name: str, swapped: list[str]) -> bool:
    return any(name.startswith(prefix + ".") for prefix in swapped)


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
    """One timestep: (x [B, ...], [t], *states) -> (y, *next states), neurons in `neurons` order and
    each neuron's states in `neuron_slot.STATES` order (`state_names`).

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
        self.counts = [len(self.net.get_submodule(n).states) for n in self.neurons]

    def state_names(self) -> list[tuple[str, str]]:
        """(neuron, state) pairs in input/output order."""
        return [(n, s) for n in self.neurons for s in self.net.get_submodule(n).states]

    def forward(self, x: torch.Tensor, *extra: torch.Tensor) -> tuple[torch.Tensor, ...]:
        self.context.clear()
        if self.takes_step:  # (called without `t` only to probe the state shapes: step 0)
            self.context.step, extra = (extra[0], extra[1:]) if extra else (torch.tensor(0), ())
        offset = 0
        for name, count in zip(self.neurons, self.counts):
            given = extra[offset: offset + count]
            self.context.mems[name] = tuple(given) if len(given) == count else None
            offset += count
        y = _one_step(self.net, self.style, x)
        return (y, *(state for name in self.neurons for state in self.context.mems[name]))  # type: ignore[union-attr]
