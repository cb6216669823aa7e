"""Every snntorch neuron type through reset, training, SynOps counting and ONNX export (unrolled and
step, every state variable in and out), against snntorch itself as the oracle."""

from __future__ import annotations

import pytest
import torch
import user_nets

from ttsnn_cli.export.functional import Stepper, Unrolled, prepare_export_copy
from ttsnn_cli.export.onnx import export_onnx
from ttsnn_cli.export.verify import verify_onnx
from ttsnn_cli.report.counting import profile_model
from ttsnn_cli.report.synops import synops
from ttsnn_cli.spiking.runner import run_timesteps
from ttsnn_cli.spiking.state import neuron_state_names, reset_states

KINDS = user_nets._KINDS
RESETS = ("subtract", "zero", "none")
SHAPE = (1, 16, 16)
SLOW = pytest.mark.slow


def _inputs(steps: int = 4, batch: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.rand(steps, batch, *SHAPE, generator=torch.Generator().manual_seed(seed)) * 3


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("reset", RESETS)
def test_export_copy_reproduces_snntorch_bitwise(kind, reset):
    """The functional copy (the graph the exporters trace) gives exactly snntorch's spikes and states."""
    model = user_nets.neuron_seq(kind, reset=reset).eval()
    x = _inputs()
    with torch.no_grad():
        want = run_timesteps(model, x)
        copy_ = prepare_export_copy(model)
        assert torch.equal(Unrolled(copy_, 4)(x), want)
        # step by step, every state fed back explicitly, against snntorch's own buffers
        stepper = Stepper(copy_)
        reset_states(model)
        states: list[torch.Tensor] = []
        for t in range(4):
            out = stepper(x[t], *states)
            states = list(out[1:])
            assert torch.equal(out[0], model(x[t])[0])
        last = model[-1]
        assert torch.equal(states[-1], last.mem)
        assert len(states) == sum(len(copy_.model.get_submodule(n).states) for n in copy_.neurons)


@pytest.mark.parametrize("kind", KINDS)
def test_every_neuron_resets_and_trains(kind):
    """Two training steps in a row (Alpha used to fail the second: stale syn_exc/syn_inh graphs), the
    loss moves, and reset_states leaves every state empty."""
    model = user_nets.neuron_seq(kind)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.5)
    x, y = _inputs(), torch.tensor([0, 1, 2])
    losses = []
    for _ in range(3):
        out = run_timesteps(model, x)
        loss = torch.nn.functional.cross_entropy(out.mean(0) + model[-1].mem.mean(0), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    assert losses[0] != losses[-1]
    reset_states(model)
    for module in model.modules():
        for name in neuron_state_names(module) if hasattr(module, "_non_persistent_buffers_set") else ():
            assert getattr(module, name).numel() == 0, (type(module).__name__, name)


@pytest.mark.parametrize("kind", ["rleaky", "rsynaptic"])
def test_recurrent_connections_are_counted_as_synops(kind):
    """The recurrent conv/linear inside an RLeaky/RSynaptic is a layer like any other: it takes the
    neuron's own spikes, so it costs ACs."""
    model = user_nets.neuron_seq(kind).eval()
    profile = profile_model(model, _inputs(), exact_acs=True)
    result = synops(model, profile, measured=True)
    rows = {row["name"]: row for row in result["layers"]}
    recurrent = [name for name in rows if name.endswith("recurrent")]
    assert recurrent == ["1.recurrent", "4.recurrent", "8.recurrent"]
    assert all(rows[name]["spike_input"] for name in recurrent)


FAST_EXPORTS = {("leaky", "subtract", "unrolled"), ("synaptic", "zero", "step"), ("alpha", "subtract", "step"),
                ("rsynaptic", "zero", "unrolled")}


EXPORT_CASES = [pytest.param(k, r, m, marks=() if (k, r, m) in FAST_EXPORTS else SLOW)
                for k in KINDS for r in RESETS for m in ("unrolled", "step")]


@pytest.mark.parametrize("kind,reset,mode", EXPORT_CASES)
def test_onnx_export_verifies_in_onnxruntime(tmp_path, kind, reset, mode, one_thread):
    model = user_nets.neuron_seq(kind, reset=reset).eval()
    info = export_onnx(model, tmp_path / "n.onnx", 4, SHAPE, mode)
    result = verify_onnx(model, info)
    assert result.verified and result.max_abs_diff <= 1e-4
    if mode == "step":
        states = [n.partition(".")[0] for n in info.state_names]
        want = {"leaky": ["mem"], "lapicque": ["mem"], "synaptic": ["syn", "mem"], "alpha": ["syn_exc", "syn_inh", "mem"],
                "rleaky": ["spk", "mem"], "rsynaptic": ["spk", "syn", "mem"]}[kind]
        assert states == want * 3
        assert info.input_names[1:] == [f"{s}_in.{n}" for s, _, n in (x.partition(".") for x in info.state_names)]


def test_learned_beta_threshold_and_graded_spikes_export(tmp_path, one_thread):
    model = user_nets.neuron_seq("leaky", learn_beta=True, learn_threshold=True, graded_spikes_factor=0.5)
    with torch.no_grad():
        model[1].beta.fill_(1.3)  # drifted above 1: snntorch clamps it to 1, so must the export
        model[4].threshold.fill_(0.7)
    model.eval()
    info = export_onnx(model, tmp_path / "g.onnx", 4, SHAPE, "step")
    assert verify_onnx(model, info).verified
