"""SpikingJelly (2.0.0) networks as ttsnn sees them: which modules are its neurons and step wrappers,
which step mode a network runs in, and how its state is reset.

Why a module of its own: SpikingJelly is an optional extra (its wheel asks for torchvision and
torchaudio, which would pull other torch builds; it is installed with `--no-deps`), so nothing here
imports it. Every test reads `sys.modules`: a model holding SpikingJelly modules was built by code
that imported SpikingJelly already, and a process that never imported it has no such model, so
ttsnn pays nothing for the extra when it is absent and never imports code the user did not name.

SpikingJelly's facts this relies on (read from its source, not copied):
- stateful modules subclass `activation_based.base.MemoryModule`; their state lives in a private
  `_memories` dict (not buffers), restored by `reset()` to the values registered at construction;
- spiking neurons subclass `activation_based.neuron.BaseNode` (LIFNode, IFNode, ParametricLIFNode, ...);
- `step_mode` is "s" (called once per step with [B, ...]) or "m" (called once with [T, B, ...]);
  `functional.set_step_mode(net, "m")` sets it on every module that has the attribute;
- `layer.Conv2d` / `layer.Conv1d` / `layer.Linear` extend the torch classes by `step_mode` only: in
  "m" a conv folds [T, B] into the batch and unfolds the result; a Linear runs as nn.Linear does;
- `functional.reset_net` caches the modules it resets on first use per network, so after modules are
  swapped (compression) it can miss new ones: ttsnn walks `model.modules()` itself (`reset_memory`).
"""

from __future__ import annotations

import sys
from typing import Literal

from torch import nn

_BASE = "spikingjelly.activation_based.base"
_NEURON = "spikingjelly.activation_based.neuron"
_LAYER = "spikingjelly.activation_based.layer"

#: SpikingJelly's stateless step wrappers whose forward adds nothing but the step mode, by class name:
#: the torch class each extends (matched by name and module so no import is needed)
STEP_WRAPPERS: dict[str, type[nn.Module]] = {"Conv2d": nn.Conv2d, "Conv1d": nn.Conv1d, "Linear": nn.Linear}


def loaded() -> bool:
    """Whether SpikingJelly's activation-based package has been imported in this process."""
    return _BASE in sys.modules


def _base_class(name: str) -> type | None:
    module = sys.modules.get(_BASE)
    return getattr(module, name, None) if module is not None else None


def is_memory_module(module: nn.Module) -> bool:
    """A SpikingJelly stateful module (neurons, synapse filters, recurrent containers)."""
    cls = _base_class("MemoryModule")
    return cls is not None and isinstance(module, cls)


def is_step_module(module: object) -> bool:
    """A module that follows SpikingJelly's step-mode contract (`step_mode` "s" or "m")."""
    cls = _base_class("StepModule")
    return cls is not None and isinstance(module, cls)


def is_node(module: nn.Module) -> bool:
    """A SpikingJelly spiking neuron (a `neuron.BaseNode`: LIFNode, IFNode, ParametricLIFNode, ...)."""
    neuron = sys.modules.get(_NEURON)
    cls = getattr(neuron, "BaseNode", None) if neuron is not None else None
    return cls is not None and isinstance(module, cls)


def step_wrapper_base(module: nn.Module) -> type[nn.Module] | None:
    """The torch class a SpikingJelly `layer.Conv2d` / `layer.Conv1d` / `layer.Linear` extends, when
    `module` is exactly one of those (a user's subclass of them may do more: None), else None.

    Why: compress decomposes only layers of exactly a covered class, since a subclass's forward may do
    more than the class it extends. These wrappers are known to add only the step mode, which the TT
    layer that replaces one keeps (`kinds.stepmode`)."""
    cls = type(module)
    if not loaded() or not cls.__module__.startswith(_LAYER) or cls.__name__ not in STEP_WRAPPERS:
        return None
    base = STEP_WRAPPERS[cls.__name__]
    return base if base in cls.__bases__ and is_step_module(module) else None


def uses_spikingjelly(model: nn.Module) -> bool:
    """Whether `model` holds any SpikingJelly module (a neuron, a step wrapper or container)."""
    return loaded() and any(is_step_module(m) or is_memory_module(m) for m in model.modules())


def step_mode(model: nn.Module) -> Literal["s", "m"] | None:
    """How a SpikingJelly network runs over time: "m" when its neurons run in multi-step mode (one call
    with [T, B, ...]), "s" when they run in single-step mode (one call per step), None when `model`
    has no SpikingJelly neuron. Neurons decide: containers such as `SeqToANNContainer` are multi-step
    whatever the network's mode, and layers follow the neurons in every network SpikingJelly's
    `set_step_mode` configures."""
    if not loaded():
        return None
    modes = {getattr(m, "step_mode", None) for m in model.modules() if is_node(m)}
    if not modes:
        return None
    return "m" if "m" in modes else "s"


def reset_memory(module: nn.Module) -> None:
    """Reset one SpikingJelly stateful module to its initial state (its own `reset()`: every memory
    back to its registered value, so the next call re-creates state of the next input's shape)."""
    reset = getattr(module, "reset", None)
    if callable(reset):
        reset()


def threshold(module: nn.Module) -> float | None:
    """A SpikingJelly neuron's firing threshold (`v_threshold`), for descriptions."""
    value = getattr(module, "v_threshold", None)
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _number(value: object) -> float | str:
    """A setting as a float where it is one number, else as written (a description never fails)."""
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, RuntimeError):
        return str(value)


def _time_constant(module: nn.Module) -> float | None:
    """tau of a SpikingJelly neuron: its `tau`, or 1 / sigmoid(w) for a ParametricLIFNode (learned)."""
    w = getattr(module, "w", None)
    if type(module).__name__ == "ParametricLIFNode" and w is not None and w.numel() == 1:
        return 1.0 / float(w.detach().float().sigmoid())
    value = getattr(module, "tau", None)
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def describe_node(module: nn.Module) -> str:
    """A SpikingJelly neuron's constants for `ttsnn inspect`: tau (where it leaks), threshold and reset.

    Why its own: SpikingJelly names them tau / v_threshold / v_reset (None: the soft reset that
    subtracts the threshold), not snntorch's beta / threshold, and a PLIF's tau is 1 / sigmoid(w)."""
    parts = []
    tau = _time_constant(module)
    if tau is not None:
        parts.append(f"tau {tau}")
    value = threshold(module)
    parts.append(f"threshold {value if value is not None else '-'}")
    v_reset = getattr(module, "v_reset", None)
    parts.append("reset soft (subtract threshold)" if v_reset is None else f"reset to {_number(v_reset)}")
    if tau is not None and getattr(module, "decay_input", True) is False:
        parts.append("input not decayed")
    return ", ".join(parts)
