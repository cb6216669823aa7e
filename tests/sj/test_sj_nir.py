"""NIR out of SpikingJelly networks: each LIFNode / IFNode / ParametricLIFNode becomes a NIR LIF or IF
whose numbers, read back by ttsnn's own NIR reader, give SpikingJelly's spikes (every neuron, every
step, dense and after TT compression, in both step modes); what NIR cannot hold exactly is refused in
one line; `ttsnn inspect` lists SpikingJelly's constants.

Skipped where SpikingJelly is not installed (see test_spikingjelly_nets.py)."""

from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

HERE = Path(__file__).parent
T = 6

pytest.importorskip("spikingjelly")
nir = pytest.importorskip("nir")

from spikingjelly.activation_based import functional, layer, neuron  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

import sj_nets  # noqa: E402
from ttsnn_cli.cli.commands import app  # noqa: E402
from ttsnn_cli.compress.decompose import CompressConfig, compress_model  # noqa: E402
from ttsnn_cli.errors import BadInputError  # noqa: E402
from ttsnn_cli.export.nir import build_nir_graph, export_nir  # noqa: E402
from ttsnn_cli.report.inspection import describe_model  # noqa: E402
from ttsnn_cli.spiking.state import is_neuron, reset_states  # noqa: E402
from ttsnn_cli.storage.nir_graph import load_nir  # noqa: E402
from tests.sj.neuron_calls import neuron_calls  # noqa: E402

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("one_thread")
NEURONS = ["2", "5", "7", "9", "12"]  # nir_chain's neurons, in order


@pytest.fixture(autouse=True)
def _trust_sj_nets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TTSNN_TRUSTED_ARCH", os.environ.get("TTSNN_TRUSTED_ARCH", "") + ",sj_nets")
    monkeypatch.setenv("PYTHONPATH", str(HERE))


@torch.no_grad()
def _firing(net: nn.Module, seed: int = 0) -> nn.Module:
    """Weights under which every neuron of nir_chain fires now and then (a fresh one barely does)."""
    generator = torch.Generator().manual_seed(seed)
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.copy_(torch.rand(module.num_features, generator=generator) * 0.4 - 0.2)
            module.bias.fill_(1.2)
        elif isinstance(module, (nn.Conv2d, nn.Linear)):
            high = 0.4 if isinstance(module, nn.Conv2d) else 0.3
            module.weight.copy_(torch.rand(module.weight.shape, generator=generator) * (high + 0.3) - 0.3)
            if module.bias is not None:
                module.bias.fill_(0.3)
    return net.eval()


def _input(batch: int = 5, seed: int = 1) -> torch.Tensor:
    return torch.rand(T, batch, 1, 16, 16, generator=torch.Generator().manual_seed(seed)) * 3


def _run(net: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The output and each neuron's spikes [T, B, ...], in the network's order, whatever order it steps in."""
    names = [n for n, m in net.named_modules() if is_neuron(m)]
    reset_states(net)
    y, record = neuron_calls(net, x)
    by_name = [[out for called, out in record if called == name] for name in names]
    spikes = [calls[0] if len(calls) == 1 else torch.stack(calls) for calls in by_name]
    return y, spikes


def _round_trip(net: nn.Module, path: Path) -> None:
    """Write `net` as NIR, read it back with ttsnn; every neuron's spikes and the output must be SpikingJelly's."""
    export_nir(net, path, T, (1, 16, 16))
    x = _input()
    want, want_spikes = _run(net, x)
    got, got_spikes = _run(load_nir(path), x)
    assert len(want_spikes) == len(got_spikes) == 5
    for name, a, b in zip(NEURONS, want_spikes, got_spikes):
        assert a.shape == b.shape, name
        assert 0 < float(a.mean()) < 1, f"neuron {name} never or always fires: the comparison would mean little"
        assert torch.equal(a, b), f"neuron {name}: {int((a != b).sum())} spikes differ"
    assert torch.allclose(want, got, atol=1e-6, rtol=0)


@pytest.mark.parametrize("mode", ["m", "s"])
def test_dense_chain_round_trips_spike_for_spike(tmp_path: Path, mode: str) -> None:
    _round_trip(_firing(sj_nets.nir_chain(step_mode=mode)), tmp_path / "dense.nir")


@pytest.mark.parametrize("ranks", [2, 4096])
def test_compressed_chain_round_trips_spike_for_spike(tmp_path: Path, ranks: int) -> None:
    """The TT layers (StepModeTTConv2d in step mode "m") are written as their core chains."""
    dense = _firing(sj_nets.nir_chain())
    compressed, result = compress_model(copy.deepcopy(dense), CompressConfig(ranks=ranks, allow_growth=ranks > 100))
    assert {r.name for r in result.layers if r.skipped is None} >= {"0", "3", "6", "8"}
    _round_trip(compressed.eval(), tmp_path / "tt.nir")
    graph = nir.read(tmp_path / "tt.nir")
    assert {"0.core1", "0.core23", "0.core4"} <= set(graph.nodes)
    assert compressed[0].step_mode == "m"  # the exporter walks a copy: the model keeps its step mode


def test_nodes_hold_spikingjelly_constants_and_load_with_nir_read(tmp_path: Path) -> None:
    net = _firing(sj_nets.nir_chain())
    warnings: list[str] = []
    export_nir(net, tmp_path / "n.nir", T, (1, 16, 16), warnings)
    graph = nir.read(tmp_path / "n.nir")
    nodes = graph.nodes
    assert [type(nodes[n]).__name__ for n in NEURONS] == ["LIF", "LIF", "IF", "LIF", "IF"]
    below = lambda v: np.nextafter(np.float32(v), np.float32(-np.inf))  # noqa: E731 - NIR fires at v > thr
    lif = nodes["2"]  # tau 2, decay_input: tau = 2 dt, r = 1, threshold 1
    assert np.allclose(lif.tau, 2e-4) and np.all(lif.r == 1) and np.all(lif.v_threshold == below(1.0))
    assert np.all(lif.v_leak == 0) and np.all(lif.v_reset == 0)
    plif = nodes["5"]  # tau = 1 / sigmoid(w) = 3, resets to -0.5: fires 1.5 above its reset, leaks to it
    assert np.allclose(plif.tau, 3e-4) and np.all(plif.v_threshold == below(1.5))
    assert plif.metadata["v_reset_sj"] == -0.5 and plif.metadata["reset_mechanism"] == "zero"
    soft_if = nodes["7"]
    assert np.allclose(soft_if.r, 1e4) and soft_if.metadata["reset_mechanism"] == "subtract"
    no_decay = nodes["9"]  # decay_input False: the input is not divided by tau, r = tau
    assert np.allclose(no_decay.tau, 1.5e-4) and np.allclose(no_decay.r, 1.5)
    assert np.all(no_decay.v_threshold == below(0.7))
    assert graph.metadata["sj_mapping"].startswith("SpikingJelly: dt=1e-4")
    assert len(warnings) == 1 and "7 (IFNode, subtract reset)" in warnings[0]


def test_spikingjelly_reads_the_graph_back_to_the_same_spikes(tmp_path: Path) -> None:
    """An independent reader: SpikingJelly's own `import_from_nir` (NIR's equations at dt = 1e-4) runs the
    graph ttsnn wrote and fires as the original, v_reset -0.5 included (the soft-reset IF, whose reset NIR
    cannot say, is made a hard one here)."""
    from spikingjelly.activation_based.nir_exchange import import_from_nir

    net = sj_nets.nir_chain()
    net[7] = neuron.IFNode(step_mode="m")
    _firing(net)
    export_nir(net, tmp_path / "n.nir", T, (1, 16, 16))
    x = _input()
    want, spikes = _run(net, x)
    assert all(0 < float(s.mean()) < 1 for s in spikes)
    back, state, steps = import_from_nir(nir.read(str(tmp_path / "n.nir"))), None, []
    with torch.no_grad():
        for t in range(T):
            y, state = back(x[t], state)
            steps.append(y)
    assert torch.equal(torch.stack(steps), want)


@pytest.mark.parametrize(("make", "message"), [
    (lambda: neuron.LIFNode(v_reset=None), "neuron 1 (LIFNode): a soft reset (v_reset=None) subtracts the threshold"),
    (lambda: neuron.ParametricLIFNode(v_reset=None), "neuron 1 (ParametricLIFNode): a soft reset"),
    (lambda: neuron.IFNode(v_threshold=0.5, v_reset=0.5), "v_threshold 0.5 is not above v_reset 0.5"),
    (lambda: neuron.QIFNode(), "neuron 1: SpikingJelly's QIFNode has no NIR mapping"),
])
def test_what_nir_cannot_hold_is_refused_in_one_line(make, message: str) -> None:
    net = nn.Sequential(layer.Conv2d(1, 2, 3, padding=1), make())
    functional.set_step_mode(net, "m")
    with pytest.raises(BadInputError, match=re.escape(message)) as refused:
        build_nir_graph(net.eval(), T, (1, 8, 8))
    assert "\n" not in str(refused.value)


def _invoke(args: list[str]) -> dict:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, (result.stderr or result.stdout)[-2000:]
    return json.loads(result.stdout)


def test_cli_exports_dense_and_compressed_and_inspect_shows_constants(tmp_path: Path) -> None:
    """state_dict + --arch -> export --nir (dense), compress -> export --nir; inspect names tau, threshold, reset."""
    checkpoint = tmp_path / "chain.pt"
    torch.save(_firing(sj_nets.nir_chain()).state_dict(), checkpoint)
    common = ["--arch", "sj_nets:nir_chain", "--input-shape", "1,16,16", "--timesteps", str(T)]
    done = _invoke(["export", str(checkpoint), *common, "--nir", str(tmp_path / "d.nir")])
    assert done["nir_nodes"] == len(nir.read(tmp_path / "d.nir").nodes)
    compressed = tmp_path / "c.ttsnn"
    _invoke(["compress", str(checkpoint), "--arch", "sj_nets:nir_chain", "--ranks", "2", "-o", str(compressed)])
    _invoke(["export", str(compressed), "--nir", str(tmp_path / "c.nir"), *common[2:]])
    assert "0.core23" in nir.read(tmp_path / "c.nir").nodes
    shown = {layer["name"]: layer["shape"] for layer in _invoke(["inspect", str(compressed)])["layers"]}
    assert shown["2"] == "tau 2.0, threshold 1.0, reset to 0.0"
    tau, rest = shown["5"].split(", ", 1)  # a PLIF's tau is 1 / sigmoid(w), w in float32
    assert float(tau.removeprefix("tau ")) == pytest.approx(3.0) and rest == "threshold 1.0, reset to -0.5"
    assert shown["7"] == "threshold 1.0, reset soft (subtract threshold)"
    assert shown["9"] == "tau 1.5, threshold 0.7, reset to 0.0, input not decayed"
    text = runner.invoke(app, ["inspect", str(compressed)])
    printed = text.stderr + text.stdout
    assert text.exit_code == 0 and "beta -" not in printed and "tau 3," in printed


def test_describe_model_names_spikingjelly_constants() -> None:
    shown = {entry["name"]: entry["shape"] for entry in describe_model(sj_nets.sequential_chain())["layers"]}
    assert shown["5"] == "tau 2.0, threshold 1.0, reset soft (subtract threshold)"
    assert shown["8"] == "threshold 1.0, reset to 0.0"
