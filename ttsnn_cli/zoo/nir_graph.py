"""`nir_graph`: the nn.Sequential a NIR graph describes, rebuilt from a plain-JSON layer list.

Why a zoo model: a network read from a `.nir` file has no python factory of its own, yet compress,
finetune and every later command must rebuild it from a bundle without importing user code. Its
structure (layer types, sizes, reset rules) is plain JSON kwargs, recorded in the bundle like any zoo
model's; its numbers (weights, time constants, thresholds) live in the state_dict. The `.nir` reader
(`storage.nir_graph`) writes both; a crafted bundle is bounded here (sizes, layer count, elements).

Layer entries (`op` and its fields):
    conv2d / conv1d  in, out, kernel, stride, padding, dilation (lists), groups, bias
    linear           in, out, bias
    flatten          start, end (torch dims, the batch dim included)
    avgpool2d        kernel, stride, padding (lists), sum (true: NIR's SumPool2d, a sum not a mean)
    leaky            shape, reset (zero|subtract|none), delay: snntorch Leaky (NIR LIF / IF)
    synaptic         shape, reset, delay: snntorch Synaptic (NIR CubaLIF)
    rleaky / rsynaptic  shape, reset, delay, recurrent (1 to 3 conv / linear entries): snntorch RLeaky /
                     RSynaptic with that recurrent chain (a NIR LIF / CubaLIF on a cycle)
    li               shape: a leaky integrator, membrane out (NIR LI)
    threshold        shape: a Heaviside spike with no state (NIR Threshold)
    scale            shape: an elementwise gain (NIR Scale)
`shape` is the shape of the node's parameters: [] when they are uniform, else the per-sample shape.
"""

from __future__ import annotations

import math
from typing import Any

import snntorch as snn
import torch
from torch import nn

from ttsnn_cli.errors import BadInputError
from ttsnn_cli.zoo import register

#: bounds on what a recorded layer list may ask for (a crafted bundle must not allocate gigabytes)
MAX_LAYERS = 512
MAX_SIZE = 1 << 16
MAX_KERNEL = 64
MAX_ELEMENTS = 1 << 26
MAX_TOTAL = 1 << 27
RESETS = ("zero", "subtract", "none")
DEFAULT_TIMESTEPS = 8


def _zero_now(neuron: snn.Leaky | snn.Synaptic) -> bool:
    """Zero reset applied in the step of the spike. With a threshold >= 0 (the `.nir` reader refuses
    negative ones) the membrane after such a reset is 0, not above threshold, so the "previous step's
    reset" snntorch computes is always 0 and the update below is snntorch's exactly."""
    return not neuron.reset_delay and neuron.reset_mechanism == "zero" and neuron.init_hidden


class _ZeroNow:
    """The step of the neurons below when `_zero_now` holds: integrate, fire, and zero the membrane of
    each neuron that fired, in one pass without a data-dependent python branch (snntorch's own
    reset_delay=False path compares a buffer in python, which cannot run on the meta device that
    `report` counts FLOPs on). Otherwise, or when called with explicit state, snntorch's own step."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.zero_now = _zero_now(self)

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        if not self.zero_now or args or kwargs:
            return super().forward(x, *args, **kwargs)  # type: ignore[misc]
        if self.mem.shape != x.shape:
            self._zero_state(x)
        mem = self._integrate(x)
        spk = self.fire(mem)
        self.mem = mem - spk / self.graded_spikes_factor * mem
        self._remember(spk)
        return spk

    def _zero_state(self, x: torch.Tensor) -> None:
        self.mem = torch.zeros_like(x)

    def _integrate(self, x: torch.Tensor) -> torch.Tensor:
        return self.beta.clamp(0, 1) * self.mem + x

    def _remember(self, spk: torch.Tensor) -> None:
        """Keep what the next step reads besides the membrane (nothing, for most neurons)."""


class Leaky(_ZeroNow, snn.Leaky):
    """snntorch's Leaky (same name, so every exporter maps it as one), stepping NIR's immediate zero
    reset (`_ZeroNow`). The update is snntorch's, spike for spike: u = beta u + x; s = [u > thr];
    u = u (1 - s)."""


class Synaptic(_ZeroNow, snn.Synaptic):
    """snntorch's Synaptic, as `Leaky` above: i = alpha i + x; u = beta u + i; s = [u > thr]; u = u (1 - s)."""

    def _zero_state(self, x: torch.Tensor) -> None:
        self.syn, self.mem = torch.zeros_like(x), torch.zeros_like(x)

    def _integrate(self, x: torch.Tensor) -> torch.Tensor:
        self.syn = self.alpha.clamp(0, 1) * self.syn + x
        return self.beta.clamp(0, 1) * self.mem + self.syn


class RLeaky(_ZeroNow, snn.RLeaky):
    """snntorch's RLeaky, as `Leaky` above: u = beta u + x + W s_{t-1}; s = [u > thr]; u = u (1 - s)."""

    def _zero_state(self, x: torch.Tensor) -> None:
        self.spk, self.mem = torch.zeros_like(x), torch.zeros_like(x)

    def _integrate(self, x: torch.Tensor) -> torch.Tensor:
        return self.beta.clamp(0, 1) * self.mem + x + self.recurrent(self.spk)

    def _remember(self, spk: torch.Tensor) -> None:
        self.spk = spk


class LeakyIntegrator(snn.Leaky):
    """NIR's LI: u_t = beta u_{t-1} + gain x_t, and the membrane is the output (no spike, no reset).

    A snntorch Leaky underneath so that ttsnn's state handling (reset between batches, runner
    stepping) treats it as the neuron it is; `gain` is a buffer so a graph's r dt / tau survives."""

    def __init__(self, beta: torch.Tensor, gain: torch.Tensor) -> None:
        super().__init__(beta=beta, threshold=1.0, init_hidden=True, reset_mechanism="none")
        self.register_buffer("gain", gain)

    def forward(self, x: torch.Tensor, *_: Any, **__: Any) -> torch.Tensor:  # type: ignore[override]
        if self.mem.shape != x.shape:
            self.mem = torch.zeros_like(x)
        self.mem = self.beta.clamp(0, 1) * self.mem + self.gain * x
        return self.mem


class Heaviside(nn.Module):
    """NIR's Threshold: s = [x > threshold], stateless. Trains through an arctan surrogate (only
    while autograd records, so exported graphs hold the bare comparison)."""

    def __init__(self, threshold: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("threshold", threshold)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spikes = (x - self.threshold > 0).to(x.dtype)
        if torch.is_grad_enabled() and x.requires_grad:
            smooth = torch.atan(math.pi * (x - self.threshold)) / math.pi
            return spikes.detach() + smooth - smooth.detach()
        return spikes


class Scale(nn.Module):
    """NIR's Scale: y = scale * x, elementwise."""

    def __init__(self, scale: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("scale", scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * x


def _int(entry: dict[str, Any], key: str, low: int = 1, high: int = MAX_SIZE) -> int:
    value = entry.get(key)
    if type(value) is not int or not low <= value <= high:
        raise BadInputError(f"nir_graph layer {entry.get('op')!r}: {key} must be a whole number from {low} to {high}, "
                            f"got {value!r}")
    return value


def _ints(entry: dict[str, Any], key: str, length: int, low: int, high: int) -> tuple[int, ...]:
    value = entry.get(key)
    if not isinstance(value, list) or len(value) != length or any(type(v) is not int or not low <= v <= high for v in value):
        raise BadInputError(f"nir_graph layer {entry.get('op')!r}: {key} must be {length} whole number(s) from {low} to "
                            f"{high}, got {value!r}")
    return tuple(value)


def _shape(entry: dict[str, Any]) -> tuple[int, ...]:
    value = entry.get("shape")
    if not isinstance(value, list) or len(value) > 4 or any(type(v) is not int or not 1 <= v <= MAX_SIZE for v in value):
        raise BadInputError(f"nir_graph layer {entry.get('op')!r}: shape must be up to 4 sizes, got {value!r}")
    if math.prod(value) > MAX_ELEMENTS:
        raise BadInputError(f"nir_graph layer {entry.get('op')!r}: shape {value} is too large")
    return tuple(value)


def _reset(entry: dict[str, Any]) -> tuple[str, bool]:
    reset, delay = entry.get("reset"), entry.get("delay")
    if reset not in RESETS or not isinstance(delay, bool):
        raise BadInputError(f"nir_graph layer {entry.get('op')!r}: reset must be one of {', '.join(RESETS)} and delay a "
                            f"boolean, got {reset!r}, {delay!r}")
    return reset, delay


def _conv(entry: dict[str, Any], dims: int) -> nn.Module:
    cin, cout, groups = _int(entry, "in"), _int(entry, "out"), _int(entry, "groups")
    kernel = _ints(entry, "kernel", dims, 1, MAX_KERNEL)
    if cin % groups or cout % groups:
        raise BadInputError(f"nir_graph layer {entry['op']}: groups {groups} does not divide {cin} -> {cout} channels")
    if cin // groups * cout * math.prod(kernel) > MAX_ELEMENTS:
        raise BadInputError(f"nir_graph layer {entry['op']}: a {cin} -> {cout} kernel of {list(kernel)} is too large")
    layer = nn.Conv2d if dims == 2 else nn.Conv1d
    return layer(cin, cout, kernel, _ints(entry, "stride", dims, 1, MAX_KERNEL), _ints(entry, "padding", dims, 0, MAX_KERNEL),
                 _ints(entry, "dilation", dims, 1, MAX_KERNEL), groups, bias=entry.get("bias") is True)


def build_layer(entry: Any) -> nn.Module:
    """One nn.Module of the list (see the module docstring), its numbers placeholders."""
    if not isinstance(entry, dict) or not isinstance(entry.get("op"), str):
        raise BadInputError(f"nir_graph layers must be objects with an 'op', got {str(entry)[:80]}")
    op = entry["op"]
    if op in ("conv2d", "conv1d"):
        return _conv(entry, 2 if op == "conv2d" else 1)
    if op == "linear":
        cin, cout = _int(entry, "in"), _int(entry, "out")
        if cin * cout > MAX_ELEMENTS:
            raise BadInputError(f"nir_graph layer linear: {cin} x {cout} is too large")
        return nn.Linear(cin, cout, bias=entry.get("bias") is True)
    if op == "flatten":
        return nn.Flatten(_int(entry, "start", -5, 5), _int(entry, "end", -5, 5))
    if op == "avgpool2d":
        kernel = _ints(entry, "kernel", 2, 1, MAX_KERNEL)
        return nn.AvgPool2d(kernel, _ints(entry, "stride", 2, 1, MAX_KERNEL), _ints(entry, "padding", 2, 0, MAX_KERNEL),
                            divisor_override=1 if entry.get("sum") is True else None)
    shape = _shape(entry) if op in ("leaky", "synaptic", "rleaky", "rsynaptic", "li", "threshold", "scale") else ()
    if op == "leaky":
        reset, delay = _reset(entry)
        return Leaky(beta=torch.full(shape, 0.5), threshold=torch.ones(shape), init_hidden=True,
                     reset_mechanism=reset, reset_delay=delay)
    if op == "synaptic":
        reset, delay = _reset(entry)
        return Synaptic(alpha=torch.full(shape, 0.5), beta=torch.full(shape, 0.5), threshold=torch.ones(shape),
                        init_hidden=True, reset_mechanism=reset, reset_delay=delay)
    if op in ("rleaky", "rsynaptic"):
        return _recurrent_neuron(entry, shape)
    if op == "li":
        return LeakyIntegrator(torch.full(shape, 0.5), torch.ones(shape))
    if op == "threshold":
        return Heaviside(torch.zeros(shape))
    if op == "scale":
        return Scale(torch.ones(shape))
    raise BadInputError(f"nir_graph layer op {op!r} is unknown")


def _recurrent_neuron(entry: dict[str, Any], shape: tuple[int, ...]) -> nn.Module:
    """snntorch's RLeaky / RSynaptic whose recurrent layer is the graph's own (a chain of 1 to 3 Conv or
    Affine layers, as a NIR cycle neuron -> layers -> neuron holds it): v = beta u + x + W s_{t-1}."""
    reset, delay = _reset(entry)
    layers = entry.get("recurrent")
    if not isinstance(layers, list) or not 1 <= len(layers) <= 3 or any(
            not isinstance(e, dict) or e.get("op") not in ("conv2d", "conv1d", "linear") for e in layers):
        raise BadInputError(f"nir_graph layer {entry['op']}: recurrent must be 1 to 3 conv2d, conv1d or linear layers")
    common = dict(threshold=torch.ones(shape), init_hidden=True, reset_mechanism=reset, reset_delay=delay,
                  linear_features=1)
    neuron = (RLeaky(beta=torch.full(shape, 0.5), **common) if entry["op"] == "rleaky"
              else snn.RSynaptic(alpha=torch.full(shape, 0.5), beta=torch.full(shape, 0.5), **common))
    neuron.recurrent = nn.Sequential(*(build_layer(e) for e in layers))
    return neuron


def _input_shape(kwargs: dict[str, Any]) -> tuple[int, ...]:
    return tuple(kwargs.get("input_shape") or ())


@register("nir_graph", input_shape=_input_shape, timesteps=DEFAULT_TIMESTEPS,
          description="the network of a NIR graph (written by `ttsnn ... model.nir`; kwargs list its layers)")
def nir_graph(input_shape: list, layers: list) -> nn.Sequential:  # noqa: D103 - see the module docstring
    if not isinstance(input_shape, list) or not 1 <= len(input_shape) <= 4 or any(
            type(v) is not int or not 1 <= v <= MAX_SIZE for v in input_shape):
        raise BadInputError(f"nir_graph input_shape must be 1 to 4 sizes, got {input_shape!r}")
    if not isinstance(layers, list) or not 1 <= len(layers) <= MAX_LAYERS:
        raise BadInputError(f"nir_graph layers must be a list of 1 to {MAX_LAYERS} layers")
    if sum(_elements(entry) for entry in layers) > MAX_TOTAL:  # each layer is bounded; so is their sum
        raise BadInputError(f"nir_graph layers hold more than {MAX_TOTAL} numbers together")
    return nn.Sequential(*(build_layer(entry) for entry in layers))


def _elements(entry: Any) -> int:
    """About how many numbers a (not yet checked) entry would allocate; 0 where it says nothing usable."""
    if not isinstance(entry, dict):
        return 0
    sizes = [v for key in ("in", "out") if type(v := entry.get(key)) is int and v > 0]
    kernel = entry.get("kernel") if isinstance(entry.get("kernel"), list) else []
    shape = entry.get("shape") if isinstance(entry.get("shape"), list) else []
    numbers = [v for v in kernel + shape if type(v) is int and v > 0]
    inner = entry.get("recurrent") if isinstance(entry.get("recurrent"), list) else []
    own = math.prod(sizes) * math.prod(numbers) if sizes or numbers else 0
    return own + sum(_elements(e) for e in inner[:3])
