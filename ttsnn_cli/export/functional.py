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
  Each TT layer's replacement is its kind's (`LayerKind.export_replacement`; the classes live in
  `ttsnn_cli.kinds`, re-exported here); a grouped TT conv folds into one grouped conv.
Layers are swapped before neurons, so a recurrent neuron's own (TT) conv is swapped too. Any other
neuron or time-aware module is refused with its name and the reason (exit 3).

The wrappers: `Unrolled` maps x[T, B, ...] -> y[T, B, ...] (T baked in, batch dynamic); `Stepper` maps
(x[B, ...], [t], *states) -> (y, *next states) for one timestep.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from ttsnn_cli.errors import BadInputError
from ttsnn_cli.export.neuron_slot import NeuronSlot
from ttsnn_cli.kinds import is_tt_layer, kind_of
from ttsnn_cli.spiking.neurons import MultiStepLIF
from ttsnn_cli.spiking.runner import call_model, execution_style
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
            if isinstance(module, MultiStepLIF) or is_tt_layer(module) or is_neuron(module):
                raise BadInputError("the model is a single neuron or layer; export a network")
            continue
        if _inside_swapped(name, folded):
            continue
        replacement: nn.Module | None = None
        kind = kind_of(module)
        if kind is not None and kind.owns_tt(module):
            htt = htt or getattr(module, "mode", None) == "htt"
            replacement = kind.export_replacement(name, module, context, reconstruct_dense)
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
            source = x[0] if self.static_input else x
            y = call_model(self.net, lambda: self.net(source), x.shape[1], 0 if self.batch_first else 1)
            return y.transpose(0, 1) if self.batch_first else y
        outputs = []
        for t in range(self.timesteps):
            self.context.step = t
            outputs.append(_one_step(self.net, self.style, x[t]))
        return torch.stack(outputs)


def _one_step(net: nn.Module, style: str, x: torch.Tensor) -> torch.Tensor:
    """One timestep of `net` (a user's forward is guarded and checked as the runner does, also while traced)."""
    if style == "multistep":
        return call_model(net, lambda: net(x.unsqueeze(0)), x.shape[0], 1)[0]
    return call_model(net, lambda: net(x), x.shape[0], 0)


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
