"""SpikingJelly 2.0.0 neurons as NIR 1.0.8 nodes, and the single-step copy of a SpikingJelly network
that the NIR writer walks.

Why these parameters: NIR's LIF is tau dv/dt = (v_leak - v) + r I, which ttsnn (and SpikingJelly's
own NIR reader) step with Euler at dt = 1e-4: v <- (1 - dt / tau) v + (r dt / tau) I. SpikingJelly's
discrete updates, with q = 1 / tau (PLIF: q = sigmoid(w), taken at export time) and v_r = v_reset:
  LIFNode / PLIF, decay_input: h = v + (x - (v - v_r)) q   -> tau = dt / q, r = 1
  LIFNode / PLIF, no decay_input: h = v - (v - v_r) q + x  -> tau = dt / q, r = 1 / q
  IFNode: h = v + x                                        -> NIR IF (dv/dt = r I), r = 1 / dt
then s = [h >= v_threshold] and a hard reset v = v_r (a soft reset, v_reset None: v = h - s v_threshold).
The state starts at v_r. In w = v - v_r the same neuron leaks to 0, resets to 0, starts at 0 and fires
at w >= v_threshold - v_r, so each node is written with v_leak = v_reset = 0 and that threshold: the
spikes are the same, and a reader that starts every membrane at 0 (NIR says nothing else) gets them.
NIR fires at v > v_threshold; SpikingJelly at h >= v_threshold, so v_threshold is the float32 just
below: for every float32 membrane the two comparisons agree. ttsnn's reader (`storage.nir_graph`) moves
the input gain r dt / tau into the threshold: where it is 1 (IF, no decay_input) the reread neuron does
SpikingJelly's arithmetic; with decay_input its membrane is tau times SpikingJelly's, the same spikes
up to float32 rounding. The hard reset happens in the step of the spike (`reset_delay` False).

What has no exact node (refused, BadInputError, naming the neuron and the setting):
- a soft-reset LIFNode / PLIF: SpikingJelly subtracts the threshold before the next leak, so the leak
  scales what was subtracted; NIR resets to v_reset, and the subtract reset ttsnn reads from metadata
  (snntorch's) subtracts after the leak. Only the IFNode (no leak) is the same either way.
- v_threshold - v_reset <= 0: such a neuron fires at rest (ttsnn's reader refuses thresholds below 0);
- other SpikingJelly neurons (QIF, EIF, Izhikevich, ...), and neuron precision settings.
A soft-reset IFNode is written as an IF with the subtract reset in its metadata (`reset_mechanism`
subtract, `reset_delay` True: snntorch's u_t = u_{t-1} + x_t - thr s_{t-1}, SpikingJelly's update
exactly); NIR's own reset-to-0 differs, so the export's warning line names it.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
from torch import nn

from ttsnn_cli.errors import BadInputError
from ttsnn_cli.spiking import spikingjelly

DT = 1e-4
MAPPED = ("LIFNode", "IFNode", "ParametricLIFNode")
MAPPING = ("SpikingJelly: dt=1e-4; LIF/PLIF tau=dt*tau_sj, r=1 (decay_input) or tau_sj; IF r=1/dt; "
           "v_leak=v_reset=0, v_threshold=the float32 below v_threshold_sj - v_reset_sj")


def _rate(name: str, neuron: nn.Module) -> float:
    """q: the fraction of the way to v_reset a LIF / PLIF membrane moves per step (1 / tau)."""
    if type(neuron).__name__ == "ParametricLIFNode":
        w = neuron.w.detach().float()
        if w.numel() != 1:
            raise BadInputError(f"neuron {name} (ParametricLIFNode): a w of {w.numel()} values is not read; "
                                "NIR export takes one per layer")
        return float(w.sigmoid())
    tau = _scalar(name, "LIFNode", "tau", neuron.tau)
    if tau <= 1:
        raise BadInputError(f"neuron {name} (LIFNode): tau = {tau:g} has no discrete decay in (0, 1); keep tau > 1, "
                            "as SpikingJelly asks")
    return 1.0 / tau


def _scalar(name: str, kind: str, key: str, value: Any) -> float:
    """One finite number of a neuron's settings (SpikingJelly takes floats; a tensor of several is refused)."""
    try:
        number = float(value)
    except (TypeError, ValueError, RuntimeError):
        raise BadInputError(f"neuron {name} ({kind}): {key} is not one number; NIR export takes one per layer") from None
    if not math.isfinite(number):
        raise BadInputError(f"neuron {name} ({kind}): {key} is {number}; NIR export takes a finite number")
    return number


def _settings(name: str, neuron: nn.Module) -> tuple[str, float, float]:
    """(kind, v_threshold, v_reset as 0 for a soft reset) of a node NIR can hold; refuses the rest."""
    kind = type(neuron).__name__
    if kind not in MAPPED or not type(neuron).__module__.startswith("spikingjelly."):
        raise BadInputError(f"neuron {name}: SpikingJelly's {kind} has no NIR mapping (LIFNode, IFNode, "
                            "ParametricLIFNode map); export ONNX")
    if getattr(neuron, "_neuron_precision", None) is not None:
        raise BadInputError(f"neuron {name} ({kind}): a neuron precision setting has no NIR node; export ONNX")
    if neuron.v_reset is None and kind != "IFNode":
        raise BadInputError(f"neuron {name} ({kind}): a soft reset (v_reset=None) subtracts the threshold before the "
                            "leak, which no NIR node expresses; use a hard reset (v_reset a number) or export ONNX")
    threshold = _scalar(name, kind, "v_threshold", neuron.v_threshold)
    v_reset = 0.0 if neuron.v_reset is None else _scalar(name, kind, "v_reset", neuron.v_reset)
    if not threshold - v_reset > 0:
        raise BadInputError(f"neuron {name} ({kind}): v_threshold {threshold:g} is not above v_reset {v_reset:g}, so "
                            "it fires at rest; NIR export takes v_threshold > v_reset")
    return kind, threshold, v_reset


def _below(value: float, shape: tuple[int, ...]) -> np.ndarray:
    """The float32 just below `value`, as a per-neuron array: NIR's [v > it] is [v >= value]."""
    exact = np.float32(value)
    return np.full(shape, np.nextafter(exact, np.float32(-np.inf)), dtype=np.float32)


def _update(kind: str, decay_input: bool, soft: bool) -> str:
    """SpikingJelly's discrete update in w = v - v_reset_sj, as the node's metadata states it."""
    charge = ("h_t = w_{t-1} + x_t" if kind == "IFNode" else
              "h_t = w_{t-1} + (x_t - w_{t-1})/tau_sj" if decay_input else "h_t = w_{t-1} - w_{t-1}/tau_sj + x_t")
    reset = "w_t = h_t - thr*s_t" if soft else "w_t = (1 - s_t)*h_t"
    return f"{charge}; s_t = [h_t >= thr], thr = v_threshold_sj - v_reset_sj; {reset}"


def _metadata(name: str, kind: str, neuron: nn.Module, threshold: float, v_reset: float) -> dict[str, Any]:
    """What the node's numbers do not say: SpikingJelly's own settings and the reset ttsnn reads back."""
    soft = neuron.v_reset is None
    meta: dict[str, Any] = {
        "source": name, "spikingjelly": kind, "dt": DT, "v_threshold_sj": threshold,
        "v_reset_sj": "none (soft reset)" if soft else v_reset,
        "reset_mechanism": "subtract" if soft else "zero", "reset_delay": soft,
        "discrete_reset": _update(kind, bool(getattr(neuron, "decay_input", True)), soft),
    }
    if kind == "IFNode":
        meta["beta"] = 1.0
    else:
        q = _rate(name, neuron)
        meta.update({"beta": 1.0 - q, "tau_sj": 1.0 / q, "decay_input": bool(neuron.decay_input)})
    return meta


def neuron_node(name: str, neuron: nn.Module, shape: tuple[int, ...]) -> Any:
    """The NIR node of one SpikingJelly neuron (see the module docstring), or BadInputError."""
    import nir

    kind, threshold, v_reset = _settings(name, neuron)
    meta = _metadata(name, kind, neuron, threshold, v_reset)
    v_threshold = _below(threshold - v_reset, shape)
    zeros = np.zeros(shape, np.float32)
    if kind == "IFNode":
        return nir.IF(r=np.full(shape, 1.0 / DT, np.float32), v_threshold=v_threshold, v_reset=zeros, metadata=meta)
    q = _rate(name, neuron)
    tau = np.full(shape, DT / q, np.float32)
    r = np.ones(shape, np.float32) if neuron.decay_input else np.full(shape, 1.0 / q, np.float32)
    return nir.LIF(tau=tau, r=r, v_leak=zeros, v_threshold=v_threshold, v_reset=zeros, metadata=meta)


def differs_from_nir(meta: dict[str, Any]) -> bool:
    """Whether a SpikingJelly node's reset is not NIR's reset-to-v_reset (the soft-reset IF)."""
    return meta.get("reset_mechanism") != "zero"


def has_step_modes(model: nn.Module) -> bool:
    """Whether `model` holds SpikingJelly modules or TT layers keeping a step mode (`single_step_copy`)."""
    from ttsnn_cli.kinds.stepmode import StepModeTT

    return spikingjelly.uses_spikingjelly(model) or any(isinstance(m, StepModeTT) for m in model.modules())


def is_sj_node(node: Any) -> bool:
    """Whether a NIR node was written from a SpikingJelly neuron (its metadata says so)."""
    return "spikingjelly" in (getattr(node, "metadata", None) or {})


def single_step_copy(model: nn.Module) -> nn.Module:
    """A copy of a SpikingJelly network that the NIR writer can walk one step [B, ...] at a time.

    Every module with a step mode is set to "s" (in a chain, "m" over [T, B, ...] computes what T
    single steps compute), and each step wrapper (`layer.Conv2d`, a TT layer keeping a step mode) is
    turned into the torch or TT class it extends, which adds nothing in step mode "s": the writer then
    maps it as that class. `model` itself is left as it is."""
    from ttsnn_cli.kinds.stepmode import StepModeTT

    copied = copy.deepcopy(model)
    for module in copied.modules():
        if isinstance(module, StepModeTT):
            module.__class__ = next(b for b in type(module).__bases__ if b is not StepModeTT)
            continue
        base = spikingjelly.step_wrapper_base(module)
        if base is not None:
            module.__class__ = base
        elif spikingjelly.is_step_module(module) and "s" in module.supported_step_mode():
            module.step_mode = "s"
    return copied

