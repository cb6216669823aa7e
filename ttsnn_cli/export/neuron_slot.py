"""Every snntorch neuron as a pure step function whose state lives in the export copy's context.

Exporters cannot carry a neuron's hidden buffers between timesteps, so `NeuronSlot` replaces each
neuron in the export copy: it reads and writes its state tuple in a shared `StepContext`, and keeps
snntorch's call conventions (init_hidden: `forward(x)` -> spk, or (spk, *states) with `output=True`;
explicit state: `forward(x, *states)` -> (spk, *states)). The equations follow snntorch 1.0.0, in the
same order of operations, so the copy reproduces the original in torch bit for bit. With
h(u) = [u - thr > 0] the Heaviside, r = h(u_{t-1}) the (detached) reset of the previous step, and
every decay clamped to [0, 1] as snntorch clamps it (a learned beta above 1 acts as 1):

  Leaky      zero: u = beta * ((1 - r) * u) + x;  subtract: u = beta * u + x - r * thr;  none: beta * u + x
  Lapicque   v = x * R * (1 / (R C)) * dt + (1 - dt / (R C)) * u;  subtract: v - r * thr;  zero: v - r * v
  Synaptic   i = alpha * i + x;  v = beta * u + i;  subtract: v - r * thr;  zero: v - r * v (i kept)
  Alpha      e = alpha * e + x;  n = beta * n - x;  v = tau * (e + n), tau = ln(alpha) / (ln(beta) - ln(alpha)) + 1
             subtract: e - thr * r, n - (beta * n_old - x) * r, v + n_old * r;  zero: each minus itself * r
  RLeaky     v = beta * u + x + W s_{t-1};  subtract: v - r * thr;  zero: v - r * v
  RSynaptic  i = alpha * i + x + W s_{t-1};  v = beta * u + i;  subtract / zero as Synaptic
  spike s = h(v) * graded_spikes_factor. W is the neuron's recurrent Linear / Conv2d (a TT layer once
  compressed) or its one-to-one V. `reset_delay=False` (Leaky, Synaptic, RLeaky) also resets v in the
  same step, as snntorch does.
States per neuron (`STATES`, also the step graph's extra inputs/outputs, in this order): Leaky and
Lapicque (mem); Synaptic (syn, mem); Alpha (syn_exc, syn_inh, mem); RLeaky (spk, mem); RSynaptic
(spk, syn, mem).

SpikingJelly 2.0.0's LIFNode, IFNode and ParametricLIFNode (`SJ_STATES`: one state, `v`) follow its CPU
forward in the same order of operations, with v_r = v_reset (0 for a soft reset) and s = [h >= thr]:
  LIFNode    decay_input: h = v + (x - (v - v_r)) / tau;  else h = v - (v - v_r) / tau + x
  PLIF       the same with * sigmoid(w) for / tau (sigmoid(w) taken once, as SpikingJelly takes it per call)
  IFNode     h = v + x
  reset      hard (v_reset a float): v = s * v_r + (1 - s) * h;  soft (v_reset None): v = h - s * thr
The state starts at v_r (0 when soft). [h >= thr] is written [h > thr'], thr' the float32 just below thr:
the same for every float32 h, and the Greater + Cast the verifier pairs with torch's record. In step
mode "m" the slot takes [T', B, ...] and loops over T' (the exporter calls it with T' = 1 per step).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ttsnn_cli.errors import BadInputError
from ttsnn_cli.spiking import spikingjelly

STATES: dict[str, tuple[str, ...]] = {
    "Leaky": ("mem",),
    "Lapicque": ("mem",),
    "Synaptic": ("syn", "mem"),
    "Alpha": ("syn_exc", "syn_inh", "mem"),
    "RLeaky": ("spk", "mem"),
    "RSynaptic": ("spk", "syn", "mem"),
}
#: SpikingJelly neurons with an export mapping, by class name, and their states
SJ_STATES: dict[str, tuple[str, ...]] = {"LIFNode": ("v",), "IFNode": ("v",), "ParametricLIFNode": ("v",)}
_RESETS = {"subtract": 0, "zero": 1, "none": 2}
_INIT_NAMES = ("init_leaky", "init_lapicque", "init_synaptic", "init_alpha", "init_rleaky", "init_rsynaptic", "reset_mem")


def neuron_kind(neuron: nn.Module) -> str:
    """snntorch's class name of a supported neuron, else BadInputError naming what to change."""
    kind = type(neuron).__name__
    if kind not in STATES:
        raise BadInputError(f"neuron of type {kind} has no export mapping; supported: {', '.join(STATES)}")
    return kind


def _tensor(value: Any) -> torch.Tensor:
    return value.detach().clone() if isinstance(value, torch.Tensor) else torch.tensor(float(value))


class NeuronSlot(nn.Module):
    """One snntorch neuron (or a MultiStepLIF's Leaky, `multistep=True`) with its state in `context`."""

    def __init__(self, name: str, neuron: nn.Module, context: Any, multistep: bool = False) -> None:
        super().__init__()
        self.slot_name, self.context, self.multistep = name, context, multistep
        self.sj: str | None = None
        if spikingjelly.is_node(neuron):
            self._init_spikingjelly(name, neuron, context)
            return
        self.kind = neuron_kind(neuron)
        self.states = STATES[self.kind]
        if getattr(neuron, "inhibition", False):
            raise BadInputError(f"neuron {name}: inhibition (winner-take-all over a batch row) has no export path")
        if getattr(neuron, "state_quant", False):
            raise BadInputError(f"neuron {name}: state quantisation is not supported by export")
        self.register_buffer("beta", _tensor(neuron.beta).clamp(0, 1))
        self.register_buffer("threshold", _tensor(neuron.threshold))
        self.register_buffer("graded", _tensor(getattr(neuron, "graded_spikes_factor", 1.0)))
        if self.kind in ("Synaptic", "Alpha", "RSynaptic"):
            self.register_buffer("alpha", _tensor(neuron.alpha).clamp(0, 1))
        if self.kind == "Lapicque":
            for key in ("R", "C", "time_step"):
                self.register_buffer(key, _tensor(getattr(neuron, key)))
        self.recurrent = neuron.recurrent if self.kind in ("RLeaky", "RSynaptic") else None
        self.reset_mechanism = _RESETS[getattr(neuron, "reset_mechanism", "subtract")]
        self.reset_delay = bool(getattr(neuron, "reset_delay", True))
        if not self.reset_delay and self.kind == "RSynaptic":
            raise BadInputError(f"neuron {name}: RSynaptic with reset_delay=False has no export path (use reset_delay=True)")
        self.init_hidden = bool(getattr(neuron, "init_hidden", False)) or multistep
        self.output = bool(getattr(neuron, "output", False)) and not multistep
        self.graded_is_one = bool(torch.all(self.graded == 1))
        self.positive_threshold = bool(torch.all(self.threshold > 0))  # decided here: no data-dependent trace
        context.mems.setdefault(name, None)
        context.heavisides.setdefault(name, None)

    def _init_spikingjelly(self, name: str, neuron: nn.Module, context: Any) -> None:
        """A SpikingJelly node: its constants as float32 buffers, its step mode, one state `v`."""
        kind = type(neuron).__name__
        if kind not in SJ_STATES or not type(neuron).__module__.startswith("spikingjelly."):
            raise BadInputError(f"neuron {name}: SpikingJelly's {kind} has no export mapping; supported: {', '.join(SJ_STATES)}")
        if getattr(neuron, "_neuron_precision", None) is not None:
            raise BadInputError(f"neuron {name}: a SpikingJelly neuron precision setting has no export path")
        self.sj, self.kind, self.states = kind, kind, SJ_STATES[kind]
        self.sj_multistep = getattr(neuron, "step_mode", "s") == "m"
        self.decay_input = bool(getattr(neuron, "decay_input", True))
        v_reset = neuron.v_reset
        self.hard_reset = v_reset is not None
        self.v_init = float(v_reset) if v_reset is not None else 0.0
        threshold = torch.tensor(float(neuron.v_threshold), dtype=torch.float32)
        self.register_buffer("threshold", threshold)
        self.register_buffer("below", torch.nextafter(threshold, torch.tensor(float("-inf"))))
        self.register_buffer("v_reset", torch.tensor(self.v_init, dtype=torch.float32))
        if kind == "LIFNode":
            self.register_buffer("tau", torch.tensor(float(neuron.tau), dtype=torch.float32))
        if kind == "ParametricLIFNode":
            self.register_buffer("q", neuron.w.detach().float().sigmoid().clone())
        self.init_hidden, self.output, self.reset_delay = True, False, True
        context.mems.setdefault(name, None)
        context.heavisides.setdefault(name, None)

    def _sj_step(self, x: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One SpikingJelly update -> (spike, next v), as the module docstring writes it."""
        if self.sj == "IFNode":
            h = v + x
        else:
            if self.sj == "LIFNode":
                h = v + (x - (v - self.v_reset)) / self.tau if self.decay_input else v - (v - self.v_reset) / self.tau + x
            else:
                h = v + (x - (v - self.v_reset)) * self.q if self.decay_input else v - (v - self.v_reset) * self.q + x
        spike = (h > self.below).to(h.dtype)
        if self.context.record is not None:
            self.context.record.append(spike)
        v = spike * self.v_reset + (1 - spike) * h if self.hard_reset else h - spike * self.threshold
        return spike, v

    def _sj_forward(self, x: torch.Tensor) -> torch.Tensor:
        steps = x if self.sj_multistep else x.unsqueeze(0)
        stored = self.context.mems.get(self.slot_name)
        v = stored[0] if stored is not None and stored[0].shape == steps.shape[1:] else None
        spikes = []
        for current in steps.float().unbind(0):
            if v is None:
                v = torch.full_like(current, self.v_init)
            spike, v = self._sj_step(current, v)
            spikes.append(spike.to(x.dtype))
        self.context.mems[self.slot_name] = (v,)  # type: ignore[assignment]
        return torch.stack(spikes) if self.sj_multistep else spikes[0]

    # snntorch's initialisers give empty states; the next call makes zeros of the input's shape
    def _empty(self) -> Any:
        empties = tuple(torch.zeros(0) for _ in self.states)
        return empties[0] if len(empties) == 1 else empties

    def __getattr__(self, name: str) -> Any:
        if name in _INIT_NAMES:
            return self._empty
        return super().__getattr__(name)

    def _heaviside(self, mem: torch.Tensor) -> torch.Tensor:
        h = (mem - self.threshold > 0).to(mem.dtype)
        if self.context.record is not None:
            self.context.record.append(h)
        return h

    def step(self, x: torch.Tensor, states: tuple[torch.Tensor, ...] | None,
             reset: torch.Tensor | None) -> tuple[torch.Tensor, tuple[torch.Tensor, ...], torch.Tensor | None]:
        """One update -> (spikes, new states, h(new mem) when it is the next step's reset, else None)."""
        if states is None and self.kind == "Leaky" and self.positive_threshold:
            new_states: tuple[torch.Tensor, ...] = (x,)  # from zero, every reset gives exactly x (0 * beta + x)
        else:
            if states is None:
                states = tuple(torch.zeros_like(x) for _ in self.states)
            mem = states[-1]
            if reset is None:  # (a no-reset neuron still needs it for reset_delay=False's bookkeeping only)
                reset = self._heaviside(mem) if self.reset_mechanism != 2 or not self.reset_delay else torch.zeros_like(mem)
            new_states = getattr(self, f"_{self.kind.lower()}")(x, states, reset)
        mem = new_states[-1]
        h = self._heaviside(mem)
        spk = h if self.graded_is_one else h * self.graded
        if not self.reset_delay:
            do_reset = h - (reset if reset is not None else torch.zeros_like(h))
            if self.reset_mechanism == 0:
                mem = mem - do_reset * self.threshold
            elif self.reset_mechanism == 1:
                mem = mem - do_reset * mem
            new_states = (*new_states[:-1], mem)
            h = None  # the next step computes h of the reset membrane
        if "spk" in self.states:
            new_states = (spk, *new_states[1:])
        return spk, new_states, h

    def _reset_new(self, v: torch.Tensor, reset: torch.Tensor) -> torch.Tensor:
        """The reset snntorch applies to the freshly integrated membrane (all but Leaky)."""
        if self.reset_mechanism == 0:
            return v - reset * self.threshold
        if self.reset_mechanism == 1:
            return v - reset * v
        return v

    def _leaky(self, x, states, reset):
        (mem,) = states
        if self.reset_mechanism == 1:
            return (self.beta * ((1 - reset) * mem) + x,)
        if self.reset_mechanism == 0:
            return (self.beta * mem + x - reset * self.threshold,)
        return (self.beta * mem + x,)

    def _lapicque(self, x, states, reset):
        (mem,) = states
        rc = self.R * self.C
        v = x * self.R * (1 / rc) * self.time_step + (1 - (self.time_step / rc)) * mem
        return (self._reset_new(v, reset),)

    def _synaptic(self, x, states, reset):
        syn, mem = states
        syn = self.alpha * syn + x
        return syn, self._reset_new(self.beta * mem + syn, reset)

    def _alpha(self, x, states, reset):
        exc, inh, _ = states
        new_exc, new_inh = self.alpha * exc + x, self.beta * inh - x
        tau = torch.log(self.alpha) / (torch.log(self.beta) - torch.log(self.alpha)) + 1
        mem = tau * (new_exc + new_inh)
        if self.reset_mechanism == 0:
            return (new_exc - self.threshold * reset, new_inh - (self.beta * inh - x) * reset, mem - (-inh) * reset)
        if self.reset_mechanism == 1:
            return new_exc - new_exc * reset, new_inh - new_inh * reset, mem - mem * reset
        return new_exc, new_inh, mem

    def _rleaky(self, x, states, reset):
        spk, mem = states
        assert self.recurrent is not None
        return spk, self._reset_new(self.beta * mem + x + self.recurrent(spk), reset)

    def _rsynaptic(self, x, states, reset):
        spk, syn, mem = states
        assert self.recurrent is not None
        syn = self.alpha * syn + x + self.recurrent(spk)
        return spk, syn, self._reset_new(self.beta * mem + syn, reset)

    def _returned(self, spk: torch.Tensor, states: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """snntorch's return: spk, then every state but the spike state."""
        return (spk, *(s for n, s in zip(self.states, states) if n != "spk"))

    def forward(self, x: torch.Tensor, *given: torch.Tensor, **__: Any) -> Any:
        if self.sj is not None:
            return self._sj_forward(x)
        if self.init_hidden:
            stored = self.context.mems.get(self.slot_name)
            if stored is not None and stored[-1].shape != x.shape:
                stored = None
            reset = self.context.heavisides.get(self.slot_name) if stored is not None else None
            spk, new, h = self.step(x, stored, reset)
            self.context.mems[self.slot_name] = new
            self.context.heavisides[self.slot_name] = h
            return self._returned(spk, new) if self.output else spk
        states: tuple[torch.Tensor, ...] | None = tuple(given[: len(self.states)])
        if len(states) != len(self.states) or any(s.shape != x.shape for s in states):
            states = None  # snntorch's init_*() give empty states: zeros of the input's shape
        # The membrane handed back is usually the one we returned last step: reuse its Heaviside as
        # the reset rather than computing the same comparison twice.
        last = self.context.last_out.get(self.slot_name)
        reset = last[1] if last is not None and states is not None and last[0] is states[-1] else None
        spk, new, h = self.step(x, states, reset)
        self.context.last_out[self.slot_name] = (new[-1], h)
        return self._returned(spk, new)
