"""snntorch neurons as NIR 1.0.8 nodes, with what NIR cannot say recorded in each node's metadata
(SpikingJelly's neurons: `nir_sj`).

Mapping (snntorch's own convention: dt = 1e-4, every decay d becomes tau = dt / (1 - d), v_leak = 0):
- Leaky -> LIF(tau, r = tau / dt, v_threshold, v_reset = 0); with beta at 1 (a learned beta above 1
  is clamped to 1, as snntorch clamps it) -> IF(r = 1, v_threshold, v_reset = 0).
- Lapicque -> LIF with tau = R C dt / time_step and r = R: the same discrete update
  v = (1 - time_step / (R C)) u + R time_step / (R C) x.
- Synaptic -> CubaLIF(tau_syn from alpha, tau_mem from beta, r = tau_mem / dt, w_in = tau_syn / dt).
- RLeaky / RSynaptic -> LIF / CubaLIF plus their recurrent layer as a cycle in the graph (the
  neuron's output feeds the recurrent node, whose output is summed into the neuron's input next step):
  Linear -> Affine, one-to-one V -> Linear(diag V), Conv2d -> Conv2d (a TT conv -> its cores).
- LeakyIntegrator (NIR's LI read back from a graph) -> LI(tau, r = gain tau / dt, v_leak = 0).
- Alpha has no NIR node (its two opposing synaptic currents are not a CubaLIF): refused.
NIR neurons reset to v_reset when they fire; snntorch's discrete resets differ. Every neuron node's
metadata records them: `reset_mechanism` (zero | subtract | none), `reset_delay` (True: the reset of
step t is applied at t + 1, snntorch's default), `beta`, `alpha`, and `discrete_reset`, the exact
update. An importer reproduces ttsnn's spikes by building the snntorch neuron from these fields
(`reset_mechanism`, `reset_delay`, and beta = 1 for IF) rather than NIR's continuous reset-to-v_reset;
where `discrete_reset` zeroes the whole new membrane (Lapicque, RLeaky, Synaptic, RSynaptic with the
zero reset), the input of the step after a spike is dropped too. Every reset but a Leaky's zero reset
and a Synaptic's zero reset in the step of the spike differs from NIR's: `reset_notes` lists those
neurons (one warning line for the user).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ttsnn_cli.errors import BadInputError
from ttsnn_cli.export.nir_sj import differs_from_nir as sj_differs_from_nir
from ttsnn_cli.export.nir_sj import neuron_node as sj_neuron_node
from ttsnn_cli.spiking import spikingjelly

DT = 1e-4

_DISCRETE = {  # (family, reset) -> the exact update; Lapicque and RLeaky zero the whole new membrane
    ("Leaky", "zero"): "u_t = beta*(1 - s_{t-1})*u_{t-1} + x_t",
    ("Leaky", "subtract"): "u_t = beta*u_{t-1} + x_t - thr*s_{t-1}",
    ("Leaky", "none"): "u_t = beta*u_{t-1} + x_t",
    ("LeakyWhole", "zero"): "u_t = (1 - s_{t-1})*(beta*u_{t-1} + x_t)",
    ("Synaptic", "zero"): "i_t = alpha*i_{t-1} + x_t; u_t = (1 - s_{t-1})*(beta*u_{t-1} + i_t)",
    ("Synaptic", "subtract"): "i_t = alpha*i_{t-1} + x_t; u_t = beta*u_{t-1} + i_t - thr*s_{t-1}",
    ("Synaptic", "none"): "i_t = alpha*i_{t-1} + x_t; u_t = beta*u_{t-1} + i_t",
}
_FAMILY = {"Leaky": "Leaky", "Lapicque": "LeakyWhole", "RLeaky": "LeakyWhole", "Synaptic": "Synaptic",
           "RSynaptic": "Synaptic"}


def _array(value: Any, shape: tuple[int, ...]) -> np.ndarray:
    tensor = torch.as_tensor(value, dtype=torch.float64).detach()
    return (np.ones(shape, dtype=np.float64) * tensor.cpu().numpy()).astype(np.float32)


def _decay(value: Any) -> torch.Tensor:
    return torch.as_tensor(value, dtype=torch.float64).detach().clamp(0, 1)


def _tau(name: str, decay: torch.Tensor, what: str) -> np.ndarray:
    if bool(torch.any(decay >= 1)):
        raise BadInputError(f"neuron {name}: {what} = 1 (no decay) has no finite NIR time constant; keep {what} < 1")
    return (DT / (1 - decay)).numpy()


def _metadata(name: str, kind: str, neuron: nn.Module, beta: torch.Tensor) -> dict[str, Any]:
    mechanism = getattr(neuron, "reset_mechanism", "subtract")
    family = _FAMILY[kind]
    update = _DISCRETE.get((family, mechanism)) or _DISCRETE[("Leaky", mechanism)]
    if kind.startswith("R"):
        update = update.replace("x_t", "x_t + W s_{t-1}", 1)
    meta = {"source": name, "snntorch": kind, "reset_mechanism": mechanism,
            "reset_delay": bool(getattr(neuron, "reset_delay", True)), "dt": DT,
            "beta": float(beta.flatten()[0]), "discrete_reset": update + "; s_t = [u_t > thr]"}
    if hasattr(neuron, "alpha"):
        meta["alpha"] = float(_decay(neuron.alpha).flatten()[0])
    return meta


def differs_from_nir(meta: dict[str, Any]) -> bool:
    """Whether a node's discrete reset is not what NIR's reset-to-v_reset gives."""
    if meta["reset_mechanism"] != "zero":
        return True
    # a Leaky's zero reset, delayed or not, gives NIR's spikes (the membrane after a spike is 0 either way
    # before the next input); a Synaptic's only in the same step (delayed, it also drops the next input)
    return not (meta["snntorch"] == "Leaky" or (meta["snntorch"] == "Synaptic" and not meta["reset_delay"]))


def neuron_node(name: str, neuron: nn.Module, shape: tuple[int, ...]) -> Any:
    """The NIR node of one snntorch neuron (see the module docstring), or of a SpikingJelly one (`nir_sj`)."""
    import nir

    if spikingjelly.is_node(neuron):
        return sj_neuron_node(name, neuron, shape)
    kind = type(neuron).__name__
    if kind == "LeakyIntegrator":  # NIR's own LI, read from a graph (zoo.nir_graph): membrane out, no reset
        tau = _array(_tau(name, _decay(neuron.beta), "beta"), shape)
        gain = _array(neuron.gain, shape)
        return nir.LI(tau=tau, r=gain * tau / np.float32(DT), v_leak=np.zeros(shape, np.float32),
                      metadata={"source": name, "dt": DT, "beta": float(_decay(neuron.beta).flatten()[0])})
    if kind == "Alpha":
        raise BadInputError(f"neuron {name} is an Alpha neuron: NIR has no node for its two synaptic currents; "
                            "use snn.Synaptic (NIR's CubaLIF) or export ONNX")
    if kind not in ("Leaky", "Lapicque", "Synaptic", "RLeaky", "RSynaptic"):
        raise BadInputError(f"neuron {name} is a {type(neuron).__name__}: no NIR mapping (Leaky, Lapicque, Synaptic, "
                            "RLeaky, RSynaptic map); export ONNX")
    if getattr(neuron, "graded_spikes_factor", torch.tensor(1.0)).ne(1).any():
        raise BadInputError(f"neuron {name}: graded spikes (graded_spikes_factor != 1) have no NIR equivalent")
    beta = _decay(neuron.beta)
    threshold = _array(neuron.threshold, shape)
    zeros = np.zeros(shape, np.float32)
    meta = _metadata(name, kind, neuron, beta)
    if kind == "Lapicque":
        rc = torch.as_tensor(neuron.R * neuron.C, dtype=torch.float64)
        tau = _array(rc * DT / torch.as_tensor(neuron.time_step, dtype=torch.float64), shape)
        return nir.LIF(tau=tau, r=_array(neuron.R, shape), v_leak=zeros, v_threshold=threshold, v_reset=zeros,
                       metadata=meta)
    if kind in ("Leaky", "RLeaky"):
        if kind == "Leaky" and bool(torch.all(beta >= 1)):
            meta["beta"] = 1.0
            return nir.IF(r=np.ones(shape, np.float32), v_threshold=threshold, v_reset=zeros, metadata=meta)
        tau = _array(_tau(name, beta, "beta"), shape)
        return nir.LIF(tau=tau, r=tau / np.float32(DT), v_leak=zeros, v_threshold=threshold, v_reset=zeros,
                       metadata=meta)
    tau_syn = _array(_tau(name, _decay(neuron.alpha), "alpha"), shape)
    tau_mem = _array(_tau(name, beta, "beta"), shape)
    return nir.CubaLIF(tau_syn=tau_syn, tau_mem=tau_mem, r=tau_mem / np.float32(DT), v_leak=zeros,
                       v_threshold=threshold, v_reset=zeros, w_in=tau_syn / np.float32(DT), metadata=meta)


def recurrent_module(neuron: nn.Module) -> nn.Module | None:
    """The recurrent layer of an RLeaky / RSynaptic (None for the others)."""
    return getattr(neuron, "recurrent", None) if type(neuron).__name__ in ("RLeaky", "RSynaptic") else None


def one_to_one_node(recurrent: nn.Module, features: int) -> Any:
    """snntorch's one-to-one recurrence (spk * V) as a diagonal Linear."""
    import nir

    v = torch.as_tensor(recurrent.V, dtype=torch.float32).detach().flatten()
    weight = np.diag(np.broadcast_to(v.numpy(), (features,)).astype(np.float32))
    return nir.Linear(weight=weight)


def reset_notes(nodes: dict[str, Any]) -> list[str]:
    """Names of the neurons whose discrete reset NIR's reset-to-v_reset does not express."""
    notes = []
    for name, node in nodes.items():
        meta = getattr(node, "metadata", None) or {}
        if "reset_mechanism" not in meta:
            continue
        if "snntorch" in meta and differs_from_nir(meta):
            notes.append(f"{name} ({meta['snntorch']}, {meta['reset_mechanism']} reset)")
        elif "spikingjelly" in meta and sj_differs_from_nir(meta):
            notes.append(f"{name} ({meta['spikingjelly']}, {meta['reset_mechanism']} reset)")
    return notes
