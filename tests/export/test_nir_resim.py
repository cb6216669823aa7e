"""NIR verified outside our own code: graphs ttsnn writes are read back with snntorch's importer
(`snntorch.import_nir.import_from_nir`, through nirtorch) and re-simulated; their spikes must match
the original model's. The importer follows NIR's reset-to-v_reset; as docs/export.md says, an importer
rebuilds each neuron's discrete reset from the node metadata (`reset_mechanism`, `reset_delay`, and
beta = 1 for an IF node) - `_apply_metadata` does exactly that and nothing else."""

from __future__ import annotations

import contextlib
import io

import pytest
import snntorch as snn
import torch
import user_nets

from ttsnn_cli.errors import BadInputError
from ttsnn_cli.export.nir import export_nir
from ttsnn_cli.spiking.runner import run_timesteps
from tests.export.snntorch_runs import run_unbatched

nir = pytest.importorskip("nir")
pytest.importorskip("nirtorch")
SHAPE = (1, 16, 16)
T = 6


def _apply_metadata(net: torch.nn.Module, graph) -> None:
    """What docs/export.md asks of an importer: rebuild each neuron with the recorded discrete reset."""
    for name, node in graph.nodes.items():
        meta = getattr(node, "metadata", None) or {}
        if "reset_mechanism" not in meta:
            continue
        old = net.get_submodule(name)
        common = dict(threshold=float(old.threshold), reset_mechanism=meta["reset_mechanism"],
                      reset_delay=meta["reset_delay"], init_hidden=True)
        beta = 1.0 if isinstance(node, nir.IF) else old.beta
        whole = meta["discrete_reset"].startswith("u_t = (1 - s_{t-1})*(")  # the whole new membrane is zeroed
        if type(old).__name__ == "Leaky" and not whole:
            new = snn.Leaky(beta=beta, **common)
        else:  # a Synaptic with alpha = 0 is that update exactly: i_t = x_t
            new = snn.Synaptic(alpha=0.0 if whole else old.alpha, beta=beta, **common)
        setattr(net, name, new)


def _import(graph) -> torch.nn.Module:
    """snntorch's importer; for a graph with recurrent cycles, nirtorch's interpreter with snntorch's
    node converter on the flat graph (snntorch 1.0's wrapping of cycles into sub-graphs does not run on
    nirtorch 2.x), which sums a neuron's inputs, W s_{t-1} included, exactly as RLeaky/RSynaptic do."""
    import nirtorch
    from snntorch.import_nir import _nir_to_snntorch_module, import_from_nir

    with contextlib.redirect_stdout(io.StringIO()):  # the importer prints progress
        if any((b, a) in graph.edges for a, b in graph.edges):
            node_map = {kind: (lambda n: _nir_to_snntorch_module(n, init_hidden=True))
                        for kind in (nir.Affine, nir.Linear, nir.Conv2d, nir.Flatten, nir.AvgPool2d, nir.IF, nir.LIF,
                                     nir.CubaLIF)}
            return nirtorch.nir_to_torch(graph, node_map)
        return import_from_nir(graph)


def _resimulate(path, x: torch.Tensor) -> torch.Tensor:
    """Read the file with nir, import, run each sample unbatched (NIR shapes exclude the batch)."""
    graph = nir.read(str(path))
    net = _import(graph)
    _apply_metadata(net, graph)
    return run_unbatched(net, x)


def _agreement(model: torch.nn.Module, path, seed: int = 0) -> float:
    x = torch.rand(T, 4, *SHAPE, generator=torch.Generator().manual_seed(seed)) * 2
    with torch.no_grad():
        want = run_timesteps(model.eval(), x)
    got = _resimulate(path, x)
    assert got.shape == want.shape
    assert want.sum() > 0  # the output spiked: the comparison is not vacuous
    return float((got == want).float().mean())


CASES = [("leaky", "zero"), ("leaky", "subtract"), ("leaky", "none"), ("synaptic", "zero"), ("synaptic", "subtract"),
         ("synaptic", "none"), ("lapicque", "zero"), ("lapicque", "subtract"), ("rleaky", "zero"),
         ("rleaky", "subtract"), ("rsynaptic", "zero"), ("rsynaptic", "subtract")]


@pytest.mark.parametrize("kind,reset", CASES)
def test_mlp_resimulated_by_snntorch_importer(tmp_path, kind, reset):
    torch.manual_seed(0)
    model = user_nets.neuron_mlp(kind, reset=reset)
    with torch.no_grad():  # enough drive that every layer spikes
        gain = 12.0 if kind == "lapicque" else 3.0
        model[1].weight.mul_(gain)
        model[3].weight.mul_(gain)
    path = tmp_path / "m.nir"
    export_nir(model, path, T, SHAPE)
    assert _agreement(model, path) >= 0.99


def test_conv_net_with_avgpool_resimulated(tmp_path):
    torch.manual_seed(0)
    model = user_nets.neuron_seq("leaky", reset="subtract")
    with torch.no_grad():
        for index in (0, 3, 7):
            model[index].weight.mul_(3)
    path = tmp_path / "c.nir"
    warnings: list[str] = []
    export_nir(model, path, T, SHAPE, warnings)
    assert len(warnings) == 1 and "metadata" in warnings[0]
    assert _agreement(model, path) >= 0.99


def test_learned_beta_above_one_is_an_if_neuron(tmp_path):
    torch.manual_seed(0)
    model = user_nets.neuron_mlp("leaky", reset="zero")
    model[2] = snn.Leaky(beta=0.8, learn_beta=True, init_hidden=True, reset_mechanism="zero")
    with torch.no_grad():
        model[2].beta.fill_(1.2)  # drifted above 1 while training: snntorch clamps it to 1
        model[1].weight.mul_(3)
    path = tmp_path / "if.nir"
    export_nir(model, path, T, SHAPE)
    assert isinstance(nir.read(str(path)).nodes["2"], nir.IF)
    assert _agreement(model, path) >= 0.99


@pytest.mark.parametrize("build,match", [
    (lambda: user_nets.neuron_seq("leaky", pool="max"), "MaxPool2d.*use nn.AvgPool2d"),
    (lambda: user_nets.neuron_seq("alpha"), "Alpha neuron.*use snn.Synaptic"),
    (lambda: user_nets.tutorial_net(), "own time loop.*nn.Sequential"),
])
def test_refusals_name_what_to_change(tmp_path, build, match):
    with pytest.raises(BadInputError, match=match):
        export_nir(build(), tmp_path / "x.nir", T, SHAPE)
    assert not (tmp_path / "x.nir").exists()
