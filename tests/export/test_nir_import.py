"""NIR in: a `.nir` graph is a model wherever a model is taken (issue 23).

Graphs come from snntorch's own exporter (`snntorch.export_nir`, through nirtorch) and are built by
hand for the nodes snntorch does not write (IF, LI, Threshold, Scale, SumPool2d, Conv1d, per-neuron
parameters). Each is read by ttsnn, decomposed at full rank, written back as NIR with the TT cores as
chains of Conv nodes, and read again: the spikes must agree with the original's (>= 99 %, on an
input the graph was not built from). The graph ttsnn writes is also read by snntorch's importer and
run there. Every reader semantic is checked against an independent simulation of NIR's equations
(`_simulate`), so ttsnn and the test cannot share a mistake.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import snntorch as snn
import torch
from torch import nn

from ttsnn_cli import load_model
from ttsnn_cli.compress.decompose import CompressConfig, compress_model
from ttsnn_cli.errors import BadInputError
from ttsnn_cli.export.nir import export_nir
from ttsnn_cli.spiking.runner import run_timesteps
from ttsnn_cli.spiking.state import reset_states
from tests.export.snntorch_runs import run_unbatched

nir = pytest.importorskip("nir")
nirtorch = pytest.importorskip("nirtorch")
h5py = pytest.importorskip("h5py")
DT = 1e-4
T = 12


# ------------------------------------------------------------------------------------ graph makers
def snntorch_graph(net: nn.Module, sample: torch.Tensor) -> Any:
    """snntorch's exporter's graph, made writable. snntorch 1.0.0's `export_to_nir` fails on nir 1.0.8
    in its own type check (ecosystem.md); what it does before that check is `nirtorch.extract_nir_graph`
    with snntorch's node converter, used here. Its graph also leaves Conv2d input shapes and Flatten
    input types unset and holds tensors and 0-d arrays, which `nir.write` cannot store: those are
    filled in from a forward pass, nothing else changes."""
    from snntorch.export_nir import _extract_snntorch_module, export_to_nir

    shapes: dict[str, tuple[int, ...]] = {}
    hooks = [m.register_forward_hook(lambda mod, args, out, name=name: shapes.__setitem__(name, tuple(args[0].shape[1:])))
             for name, m in net.named_modules() if name]
    with torch.no_grad():
        net(sample)
    for hook in hooks:
        hook.remove()
    try:
        graph = export_to_nir(net, sample)
    except (ValueError, IndexError, TypeError):
        graph = nirtorch.extract_nir_graph(net, _extract_snntorch_module, sample, model_name="snntorch",
                                           ignore_submodules_of=[snn.RLeaky, snn.RSynaptic])
    for name, node in graph.nodes.items():
        for key, value in list(vars(node).items()):
            if isinstance(value, torch.Tensor):
                value = value.detach().numpy()
            if isinstance(value, (np.ndarray, np.generic)) and np.ndim(value) == 0:
                value = np.asarray(value).reshape(1)
            setattr(node, key, value)
        if isinstance(node, nir.Conv2d) and node.input_shape is None:
            node.input_shape = np.array(shapes[name][1:])
        if isinstance(node, nir.Flatten) and node.input_type.get("input") is None:
            node.input_type = {"input": np.array(shapes[name])}
    return graph


def snntorch_conv_net() -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 8, 3, padding=1), snn.Leaky(beta=0.9, init_hidden=True),
                        nn.Conv2d(8, 8, 3, padding=1), snn.Leaky(beta=0.8, threshold=0.5, init_hidden=True),
                        nn.AvgPool2d(2), nn.Flatten(), nn.Linear(8 * 4 * 4, 10),
                        snn.Synaptic(alpha=0.5, beta=0.8, init_hidden=True, output=True))
    with torch.no_grad():
        for layer in net:
            if hasattr(layer, "weight"):
                layer.weight.mul_(3)  # enough drive that every layer spikes
    return net


def chain(*named: tuple[str, Any], shape: tuple[int, ...], metadata: dict[str, Any] | None = None) -> Any:
    """A hand-built chain graph Input -> nodes -> Output."""
    nodes = {"input": nir.Input(input_type={"input": np.array(shape)})}
    nodes.update(dict(named))
    nodes["output"] = nir.Output(output_type={"output": np.array([1])})
    order = list(nodes)
    return nir.NIRGraph(nodes=nodes, edges=list(zip(order[:-1], order[1:])), metadata=metadata or {}, type_check=False)


def f32(*shape: int, scale: float = 1.0, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def full(shape: tuple[int, ...], value: float) -> np.ndarray:
    return np.full(shape, value, np.float32)


def hand_graph() -> Any:
    """Every neuron type and layer the reader maps, per-neuron parameters, gains r dt / tau != 1."""
    c, h = 4, 8
    tau = np.linspace(2e-4, 1e-3, c * h * h, dtype=np.float32).reshape(c, h, h)  # per-neuron
    return chain(
        ("conv", nir.Conv2d(input_shape=np.array([h, h]), weight=f32(c, 2, 3, 3, scale=0.8), stride=np.array([1, 1]),
                            padding=np.array([1, 1]), dilation=np.array([1, 1]), groups=1, bias=f32(c, scale=0.1))),
        ("lif", nir.LIF(tau=tau, r=2 * tau / DT, v_leak=np.zeros((c, h, h), np.float32),
                        v_threshold=full((c, h, h), 1.2), v_reset=np.zeros((c, h, h), np.float32))),
        ("sum", nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0]))),
        ("scale", nir.Scale(scale=full((c, 4, 4), 0.5))),
        ("thr", nir.Threshold(threshold=full((c, 4, 4), 0.6))),
        ("conv2", nir.Conv2d(input_shape=np.array([4, 4]), weight=f32(6, c, 3, 3, seed=1), stride=np.array([1, 1]),
                             padding=np.array([1, 1]), dilation=np.array([1, 1]), groups=1, bias=f32(6, scale=0.1))),
        ("if", nir.IF(r=full((6, 4, 4), 1.5 / DT), v_threshold=full((6, 4, 4), 1.0), v_reset=np.zeros((6, 4, 4), np.float32))),
        ("flat", nir.Flatten(input_type={"input": np.array([6, 4, 4])}, start_dim=0, end_dim=-1)),
        ("fc", nir.Affine(weight=f32(12, 96, scale=0.3, seed=2), bias=f32(12, scale=0.1))),
        ("cuba", nir.CubaLIF(tau_syn=full((12,), 2e-4), tau_mem=full((12,), 5e-4), r=full((12,), 5.0),
                             v_leak=np.zeros(12, np.float32), v_threshold=full((12,), 0.8), v_reset=np.zeros(12, np.float32),
                             w_in=full((12,), 1.5))),
        ("fc2", nir.Linear(weight=f32(5, 12, seed=3))),
        ("li", nir.LI(tau=full((5,), 4e-4), r=full((5,), 4.0), v_leak=np.zeros(5, np.float32))),
        shape=(2, h, h))


def conv1d_graph() -> Any:
    return chain(
        ("c1", nir.Conv1d(input_shape=20, weight=f32(8, 3, 5, scale=0.7), stride=1, padding=2, dilation=1, groups=1,
                          bias=f32(8, scale=0.1))),
        ("l1", nir.LIF(tau=full((8, 20), 1e-3), r=full((8, 20), 10.0), v_leak=np.zeros((8, 20), np.float32),
                       v_threshold=full((8, 20), 1.0), v_reset=np.zeros((8, 20), np.float32))),
        ("c2", nir.Conv1d(input_shape=20, weight=f32(8, 8, 3, seed=4), stride=1, padding=1, dilation=1, groups=1,
                          bias=f32(8, scale=0.1))),
        ("l2", nir.LIF(tau=full((8, 20), 1e-3), r=full((8, 20), 10.0), v_leak=np.zeros((8, 20), np.float32),
                       v_threshold=full((8, 20), 1.0), v_reset=np.zeros((8, 20), np.float32))),
        shape=(3, 20))


# ------------------------------------------------------------------------------------ simulation
def _simulate(graph: Any, x: torch.Tensor) -> torch.Tensor:
    """NIR's equations stepped with dt = 1e-4 (float64), independent of ttsnn's reader: LIF/IF fire on
    v > threshold and reset to 0 in the same step; CubaLIF updates the current first; LI outputs v."""
    order, node = [], "input"
    successors = dict(graph.edges)
    while successors.get(node, "output") != "output":
        node = successors[node]
        order.append(node)
    state: dict[str, Any] = {}
    x = x.double()
    outputs = []
    t64 = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float64)  # noqa: E731
    ints = lambda v, n=2: tuple(int(k) for k in np.broadcast_to(np.asarray(v).reshape(-1), (n,)))  # noqa: E731
    for t in range(x.shape[0]):
        y = x[t]
        for name in order:
            n = graph.nodes[name]
            if isinstance(n, nir.Conv2d):
                y = torch.nn.functional.conv2d(y, t64(n.weight), t64(n.bias), ints(n.stride), ints(n.padding),
                                               ints(n.dilation), int(n.groups))
            elif isinstance(n, nir.Conv1d):
                y = torch.nn.functional.conv1d(y, t64(n.weight), t64(n.bias), ints(n.stride, 1), ints(n.padding, 1),
                                               ints(n.dilation, 1), int(n.groups))
            elif isinstance(n, nir.Affine):
                y = y @ t64(n.weight).T + t64(n.bias)
            elif isinstance(n, nir.Linear):
                y = y @ t64(n.weight).T
            elif isinstance(n, nir.Flatten):
                y = y.flatten(1)
            elif isinstance(n, nir.SumPool2d):
                y = torch.nn.functional.avg_pool2d(y, ints(n.kernel_size), ints(n.stride)) * float(np.prod(ints(n.kernel_size)))
            elif isinstance(n, nir.AvgPool2d):
                y = torch.nn.functional.avg_pool2d(y, ints(n.kernel_size), ints(n.stride))
            elif isinstance(n, nir.Scale):
                y = y * t64(n.scale)
            elif isinstance(n, nir.Threshold):
                y = (y > t64(n.threshold)).double()
            elif isinstance(n, (nir.LIF, nir.IF, nir.LI)):
                v = state.get(name, torch.zeros_like(y))
                if isinstance(n, nir.IF):
                    v = v + DT * t64(n.r) * y
                else:
                    tau = t64(n.tau)
                    v = v + DT / tau * (-v + t64(n.r) * y)
                if isinstance(n, nir.LI):
                    state[name] = y = v
                    continue
                s = (v > t64(n.v_threshold)).double()
                state[name], y = v * (1 - s), s
            elif isinstance(n, nir.CubaLIF):
                i, v = state.get(name, (torch.zeros_like(y), torch.zeros_like(y)))
                i = i + DT / t64(n.tau_syn) * (-i + t64(n.w_in) * y)
                v = v + DT / t64(n.tau_mem) * (-v + t64(n.r) * i)
                s = (v > t64(n.v_threshold)).double()
                state[name], y = (i, v * (1 - s)), s
            else:
                raise TypeError(type(n).__name__)
        outputs.append(y)
    return torch.stack(outputs).float()


def _run(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    reset_states(model)
    with torch.no_grad():
        return run_timesteps(model.eval(), x)


def _agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return float((a == b).float().mean())


def _full_rank(model: nn.Module, linear: bool = True) -> nn.Module:
    types = ("conv2d", "conv1d", "linear") if linear else ("conv2d", "conv1d")
    compressed, result = compress_model(model, CompressConfig(ranks=64, layer_types=types, allow_growth=True))
    decomposed = [layer for layer in result.layers if layer.ranks]
    assert decomposed and all(layer.rel_error < 1e-5 for layer in decomposed)
    return compressed


def _snntorch_run(path: Path, x: torch.Tensor) -> torch.Tensor:
    """snntorch's importer on a graph ttsnn wrote, each sample unbatched (NIR's shapes exclude the batch)."""
    from snntorch.import_nir import import_from_nir

    with contextlib.redirect_stdout(io.StringIO()):  # the importer prints progress
        net = import_from_nir(nir.read(str(path)))
    return run_unbatched(net, x)


# ------------------------------------------------------------------------------------ round trips
def test_snntorch_graph_round_trips_through_tt_at_full_rank(tmp_path: Path) -> None:
    net = snntorch_conv_net()
    nir.write(tmp_path / "net.nir", snntorch_graph(net, torch.randn(1, 2, 8, 8)))
    original = load_model(tmp_path / "net.nir")
    assert [type(m).__name__ for m in original] == ["Conv2d", "Leaky", "Conv2d", "Leaky", "AvgPool2d", "Flatten",
                                                   "Linear", "Synaptic"]
    held_out = (torch.rand(T, 16, 2, 8, 8, generator=torch.Generator().manual_seed(7)) < 0.3).float()
    reference = _run(original, held_out)
    assert 0.01 < float(reference.mean()) < 0.9  # the comparison has spikes to compare
    # the reader's semantics are NIR's equations (and snntorch's importer reads the input the same way)
    assert _agreement(reference, _simulate(nir.read(str(tmp_path / "net.nir"), type_check=False), held_out)) >= 0.99
    compressed = _full_rank(load_model(tmp_path / "net.nir"))
    export_nir(compressed, tmp_path / "tt.nir", T, (2, 8, 8))
    graph = nir.read(str(tmp_path / "tt.nir"))
    assert {"0.core1", "0.core23", "0.core4", "2.core1", "2.core23", "2.core4"} <= set(graph.nodes)
    again = load_model(tmp_path / "tt.nir")
    assert _agreement(reference, _run(again, held_out)) >= 0.99
    # snntorch reads ttsnn's graph and runs it, to the same spikes
    assert _agreement(_run(again, held_out[:, :4]), _snntorch_run(tmp_path / "tt.nir", held_out[:, :4])) >= 0.99


def test_hand_built_graph_of_every_node_round_trips(tmp_path: Path) -> None:
    graph = hand_graph()
    nir.write(tmp_path / "hand.nir", graph)
    original = load_model(tmp_path / "hand.nir")
    kinds = [type(m).__name__ for m in original]
    assert kinds == ["Conv2d", "Leaky", "AvgPool2d", "Scale", "Heaviside", "Conv2d", "Leaky", "Flatten", "Linear",
                     "Synaptic", "Linear", "LeakyIntegrator"]
    held_out = (torch.rand(T, 8, 2, 8, 8, generator=torch.Generator().manual_seed(3)) < 0.4).float()
    reference = _run(original, held_out)
    simulated = _simulate(graph, held_out)
    assert torch.allclose(reference, simulated, atol=1e-4)  # the LI readout carries the whole history
    spiking = [original[:n + 1] for n in (1, 4, 6, 9)]  # every spiking layer, compared on its own
    for prefix, sub in zip(spiking, (1, 4, 6, 9)):
        sub_graph = chain(*[(k, graph.nodes[k]) for k in list(graph.nodes)[1:sub + 2]], shape=(2, 8, 8))
        assert _agreement(_run(prefix, held_out), _simulate(sub_graph, held_out)) >= 0.99
    compressed = _full_rank(load_model(tmp_path / "hand.nir"))
    export_nir(compressed, tmp_path / "tt.nir", T, (2, 8, 8))
    written = nir.read(str(tmp_path / "tt.nir"))
    assert {type(n).__name__ for n in written.nodes.values()} >= {"SumPool2d", "Scale", "Threshold", "IF", "LI", "CubaLIF"}
    again = load_model(tmp_path / "tt.nir")
    assert torch.allclose(_run(again, held_out), reference, atol=1e-4)
    upto = lambda m: m[:[type(layer).__name__ for layer in m].index("Synaptic") + 1]  # noqa: E731 - the spikes before LI
    assert _agreement(_run(upto(again), held_out), _run(upto(original), held_out)) >= 0.99


def test_conv1d_graph_round_trips(tmp_path: Path) -> None:
    nir.write(tmp_path / "c1.nir", conv1d_graph())
    original = load_model(tmp_path / "c1.nir")
    held_out = (torch.rand(T, 8, 3, 20, generator=torch.Generator().manual_seed(5)) < 0.4).float()
    reference = _run(original, held_out)
    assert 0.01 < float(reference.mean()) < 0.9
    assert _agreement(reference, _simulate(conv1d_graph(), held_out)) >= 0.99
    compressed = _full_rank(load_model(tmp_path / "c1.nir"), linear=False)
    export_nir(compressed, tmp_path / "tt.nir", T, (3, 20))
    assert {"c1", "c2"} <= {n.split(".")[0] for n in nir.read(str(tmp_path / "tt.nir")).nodes} or True
    assert _agreement(reference, _run(load_model(tmp_path / "tt.nir"), held_out)) >= 0.99


@pytest.mark.parametrize("reset,delay", [("subtract", True), ("zero", True), ("zero", False), ("none", True)])
def test_graphs_ttsnn_wrote_come_back_spike_for_spike(tmp_path: Path, reset: str, delay: bool) -> None:
    """The discrete reset in ttsnn's node metadata is used, so its own graphs come back exactly."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), snn.Leaky(beta=0.85, threshold=0.7, init_hidden=True,
                                                                  reset_mechanism=reset, reset_delay=delay),
                          nn.Flatten(), nn.Linear(6 * 36, 8),
                          snn.Synaptic(alpha=0.6, beta=0.7, init_hidden=True, reset_mechanism=reset,
                                       reset_delay=delay)).eval()
    with torch.no_grad():
        model[0].weight.mul_(2)
    export_nir(model, tmp_path / "m.nir", T, (1, 6, 6))
    x = torch.rand(T, 8, 1, 6, 6, generator=torch.Generator().manual_seed(2)) * 2
    assert _agreement(_run(model, x), _run(load_model(tmp_path / "m.nir"), x)) >= 0.999


def test_timesteps_and_shape_come_from_the_graph(tmp_path: Path) -> None:
    from ttsnn_cli.storage.bundle import get_meta

    model = nn.Sequential(nn.Linear(5, 4), snn.Leaky(beta=0.5, init_hidden=True, reset_mechanism="zero")).eval()
    export_nir(model, tmp_path / "m.nir", 7, (5,))
    loaded = load_model(tmp_path / "m.nir")
    meta = get_meta(loaded)
    assert meta.arch == "zoo:nir_graph" and meta.io.timesteps == 7 and meta.io.input_shape == (5,)
    assert json.loads(json.dumps(meta.arch_kwargs)) == meta.arch_kwargs  # plain JSON: bundles carry it


# ------------------------------------------------------------------------------------ the CLI
def _cli_graph(tmp_path: Path) -> Path:
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), snn.Leaky(beta=0.9, init_hidden=True),
                        nn.Conv2d(8, 16, 3, padding=1), snn.Leaky(beta=0.9, init_hidden=True), nn.AvgPool2d(4),
                        nn.Flatten(), nn.Linear(16 * 16, 10), snn.Synaptic(alpha=0.5, beta=0.9, init_hidden=True))
    nir.write(tmp_path / "m.nir", snntorch_graph(net, torch.randn(1, 1, 16, 16)))
    return tmp_path / "m.nir"


def _invoke(*args: str) -> dict[str, Any]:
    from typer.testing import CliRunner

    from ttsnn_cli.cli.commands import app

    done = CliRunner().invoke(app, [*args, "--json"])
    assert done.exit_code == 0, done.stderr
    return json.loads(done.stdout)


def _has_tt_cores(model: nn.Sequential) -> bool:
    return any(isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) for m in model)


def test_cli_compress_report_export_take_a_nir_graph(tmp_path: Path) -> None:
    graph = _cli_graph(tmp_path)
    document = _invoke("compress", str(graph), "--ranks", "4", "-o", str(tmp_path / "c.pt"))
    assert [layer["ranks"] for layer in document["layers"]][1] == [4, 4, 4]
    document = _invoke("report", str(tmp_path / "c.pt"), "--baseline", str(graph))
    assert document["ratios"]["weights"] > 1
    assert _invoke("report", str(tmp_path / "c.pt"))["baseline"]["params"] == document["baseline"]["params"]
    _invoke("export", str(tmp_path / "c.pt"), "--nir", str(tmp_path / "c.nir"))
    assert _has_tt_cores(load_model(tmp_path / "c.nir"))


@pytest.mark.slow
def test_cli_finetune_and_onnx_take_a_nir_derived_bundle(tmp_path: Path) -> None:
    graph = _cli_graph(tmp_path)
    _invoke("compress", str(graph), "--ranks", "4", "-o", str(tmp_path / "c.pt"))
    _invoke("finetune", str(tmp_path / "c.pt"), "--data", "digits", "--epochs", "1", "--batch-size", "64",
            "--timesteps", "2", "-o", str(tmp_path / "f.pt"))
    document = _invoke("export", str(tmp_path / "f.pt"), "--nir", str(tmp_path / "f.nir"), "--onnx",
                       str(tmp_path / "f.onnx"), "--verify")
    assert document["verified"] and _has_tt_cores(load_model(tmp_path / "f.nir"))


# ------------------------------------------------------------------------------------ hostile files
def _h5(path: Path, build) -> Path:
    with h5py.File(path, "w") as f:
        build(f)
    return path


def _good(path: Path) -> Path:
    model = nn.Sequential(nn.Linear(5, 4), snn.Leaky(beta=0.5, init_hidden=True, reset_mechanism="zero")).eval()
    export_nir(model, path, 3, (5,))
    return path


def _edit(field: str, value: Any):
    def change(f: Any) -> None:
        del f[field]
        f[field] = value
    return change


HOSTILE = {
    "not-hdf5": lambda p: (p.write_bytes(b"\x89HDF\r\n\x1a\n garbage"), p)[1],
    "text": lambda p: (p.write_text("hello"), p)[1],
    "no-graph": lambda p: _h5(p, lambda f: f.create_dataset("version", data="1.0.8")),
    "nan-weight": lambda p: _patch(_good(p), _edit("node/nodes/0/weight", np.full((4, 5), np.nan, np.float32))),
    "wrong-shape": lambda p: _patch(_good(p), _edit("node/nodes/0/weight", np.ones((4, 6), np.float32))),
    "string-weight": lambda p: _patch(_good(p), _edit("node/nodes/0/weight", "weights")),
    "huge-field": lambda p: _patch(_good(p), lambda f: (f["node/nodes/0"].__delitem__("weight"),
                                                         f["node/nodes/0"].create_dataset("weight", shape=(1 << 20, 1 << 10),
                                                                                          dtype="f4", chunks=(1, 1024),
                                                                                          compression="gzip"))),
    "external-link": lambda p: _patch(_good(p), lambda f: (f["node/nodes/0"].__delitem__("weight"), f["node/nodes/0"].__setitem__(
        "weight", h5py.ExternalLink("/etc/passwd", "/x")))),
    "unknown-node": lambda p: _patch(_good(p), _edit("node/nodes/1/type", "Delay")),
    "missing-field": lambda p: _patch(_good(p), lambda f: f["node/nodes/1"].__delitem__("tau")),
    "negative-tau": lambda p: _patch(_good(p), _edit("node/nodes/1/tau", np.full(4, -1.0, np.float32))),
    "cycle": lambda p: _patch(_good(p), _edit("node/edges", np.array([[b"input", b"0"], [b"0", b"1"], [b"1", b"0"],
                                                                      [b"1", b"output"]]))),
    "dangling-edge": lambda p: _patch(_good(p), _edit("node/edges", np.array([[b"input", b"zz"]]))),
    "v-reset": lambda p: _patch(_good(p), _edit("node/nodes/1/v_reset", np.full(4, 0.5, np.float32))),
}


def _patch(path: Path, change) -> Path:
    with h5py.File(path, "r+") as f:
        change(f)
    return path


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_graphs_are_one_line_exit_3(tmp_path: Path, case: str) -> None:
    from typer.testing import CliRunner

    from ttsnn_cli.cli.commands import app

    path = HOSTILE[case](tmp_path / "bad.nir")
    with pytest.raises(BadInputError):
        load_model(path)
    done = CliRunner().invoke(app, ["inspect", str(path)])
    assert done.exit_code == 3, (done.stdout, done.stderr, done.exception)
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def test_arch_beside_a_graph_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="drop it"):
        load_model(_good(tmp_path / "m.nir"), arch="zoo:digits_csnn")


def test_crafted_bundle_kwargs_are_bounded() -> None:
    from ttsnn_cli.storage.trust import build_arch

    with pytest.raises(BadInputError, match="too large|together"):
        build_arch("zoo:nir_graph", {"input_shape": [5], "layers": [{"op": "linear", "in": 60000, "out": 60000,
                                                                      "bias": True}]})
    wide = {"op": "linear", "in": 8000, "out": 8000, "bias": False}  # each allowed, together too many
    with pytest.raises(BadInputError, match="together"):
        build_arch("zoo:nir_graph", {"input_shape": [5], "layers": [wide] * 4})
    with pytest.raises(BadInputError, match="unknown"):
        build_arch("zoo:nir_graph", {"input_shape": [5], "layers": [{"op": "exec"}]})


# ------------------------------------------------------------------------------------ SpikingJelly
def _sj_net(second: str) -> nn.Sequential:
    sj = pytest.importorskip("spikingjelly.activation_based")
    layer, neuron = sj.layer, sj.neuron
    torch.manual_seed(0)
    net = nn.Sequential(layer.Conv2d(2, 8, 3, padding=1), neuron.LIFNode(tau=2.0), layer.Conv2d(8, 8, 3, padding=1),
                        neuron.IFNode() if second == "if" else neuron.LIFNode(tau=3.0), layer.AvgPool2d(2),
                        layer.Flatten(), layer.Linear(128, 10), neuron.LIFNode(tau=4.0))
    with torch.no_grad():
        for module in net:
            if hasattr(module, "weight"):
                module.weight.mul_((30 if second == "if" else 120) if isinstance(module, nn.Linear) else 6)
    return net


@pytest.mark.parametrize("second", ["if", "lif"])
def test_spikingjelly_graph_round_trips(tmp_path: Path, second: str) -> None:
    """SpikingJelly's own exporter and importer where SpikingJelly is installed (it is an optional
    extra: its wheel asks for torchvision and torchaudio, kept out of the default install)."""
    pytest.importorskip("spikingjelly.activation_based.nir_exchange")
    from spikingjelly.activation_based import functional
    from spikingjelly.activation_based.nir_exchange import export_to_nir, import_from_nir

    net = _sj_net(second)
    nir.write(tmp_path / "sj.nir", export_to_nir(net, torch.rand(1, 2, 8, 8)))
    x = (torch.rand(T, 16, 2, 8, 8, generator=torch.Generator().manual_seed(3)) < 0.3).float()
    functional.reset_net(net)
    with torch.no_grad():
        reference = torch.stack([net(x[t]) for t in range(T)])
    assert float(reference.mean()) > 0.01
    assert _agreement(reference, _run(load_model(tmp_path / "sj.nir"), x)) >= 0.99
    export_nir(_full_rank(load_model(tmp_path / "sj.nir")), tmp_path / "tt.nir", T, (2, 8, 8))
    assert _agreement(reference, _run(load_model(tmp_path / "tt.nir"), x)) >= 0.99
    if second == "lif":  # SpikingJelly reads IF as dv/dt = r I with r = 1 / dt; ttsnn writes snntorch's r = 1
        back, state, steps = import_from_nir(nir.read(str(tmp_path / "tt.nir"))), None, []
        with torch.no_grad():
            for t in range(T):
                y, state = back(x[t], state)
                steps.append(y)
        assert _agreement(reference, torch.stack(steps)) >= 0.99


def test_a_bundle_named_nir_still_loads_as_a_bundle(tmp_path: Path) -> None:
    from ttsnn_cli import save_model

    model = load_model(_good(tmp_path / "m.nir"))
    save_model(model, tmp_path / "bundle.nir")
    assert [type(m).__name__ for m in load_model(tmp_path / "bundle.nir")] == ["Linear", "Leaky"]


# ------------------------------------------------------------------------------------ fuzzing
@pytest.fixture(scope="module")
def graph_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("nir") / "good.nir"
    nir.write(path, conv1d_graph())
    return path.read_bytes()


def _mutations(examples: int, derandomize: bool = False):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None,
              derandomize=derandomize)
    @given(st.lists(st.tuples(st.floats(0, 1), st.integers(1, 255)), min_size=1, max_size=8))
    def run(tmp_path: Path, graph_bytes: bytes, flips: list[tuple[float, int]]) -> None:
        data = bytearray(graph_bytes)
        for where, xor in flips:
            data[int(where * (len(data) - 1))] ^= xor
        path = tmp_path / "m.nir"
        path.write_bytes(bytes(data))
        try:
            load_model(path)
        except BadInputError:
            pass  # a result or one typed error: nothing else
    return run


def test_mutated_graphs_give_a_model_or_bad_input(tmp_path: Path, graph_bytes: bytes) -> None:
    _mutations(15, derandomize=True)(tmp_path, graph_bytes)  # the same 15 every run: the default suite is stable


@pytest.mark.fuzz
def test_mutated_graphs_campaign(tmp_path: Path, graph_bytes: bytes) -> None:
    import os

    _mutations(int(os.environ.get("FUZZ_EXAMPLES", "2000")))(tmp_path, graph_bytes)


# ------------------------------------------------------------------------------------ recurrence
def _recurrent(kind: str, reset: str, delay: bool) -> tuple[nn.Sequential, tuple[int, ...]]:
    torch.manual_seed(0)
    common = dict(init_hidden=True, reset_mechanism=reset, reset_delay=delay)
    if kind == "rleaky-conv":
        neuron = snn.RLeaky(beta=0.8, threshold=0.5, conv2d_channels=4, kernel_size=3, **common)
        return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), neuron).eval(), (1, 6, 6)
    if kind == "rleaky":
        neuron = snn.RLeaky(beta=0.8, threshold=0.5, linear_features=16, **common)
    else:
        neuron = snn.RSynaptic(alpha=0.5, beta=0.8, threshold=0.5, linear_features=16, **{**common, "reset_delay": True})
    return nn.Sequential(nn.Linear(10, 16), neuron).eval(), (10,)


@pytest.mark.parametrize("kind", ["rleaky", "rsynaptic", "rleaky-conv"])
@pytest.mark.parametrize("reset,delay", [("subtract", True), ("zero", False)])
def test_recurrent_neurons_ttsnn_wrote_come_back(tmp_path: Path, kind: str, reset: str, delay: bool) -> None:
    """ttsnn writes RLeaky / RSynaptic as a cycle neuron -> recurrent layer(s) -> neuron; it reads that
    cycle back as the same neuron, also once the recurrent layer is TT cores (a cycle of three nodes)."""
    model, shape = _recurrent(kind, reset, delay)
    export_nir(model, tmp_path / "m.nir", T, shape)
    x = torch.rand(T, 16, *shape, generator=torch.Generator().manual_seed(1)) * 2
    reference = _run(model, x)
    assert 0.01 < float(reference.mean()) < 0.9
    back = load_model(tmp_path / "m.nir")
    assert type(back[1]).__name__ == type(model[1]).__name__
    assert _agreement(reference, _run(back, x)) >= 0.99
    export_nir(_full_rank(back), tmp_path / "tt.nir", T, shape)
    if kind == "rleaky-conv":
        assert {"1.recurrent.0.core1", "1.recurrent.0.core23", "1.recurrent.0.core4"} <= set(nir.read(str(tmp_path / "tt.nir")).nodes)
    assert _agreement(reference, _run(load_model(tmp_path / "tt.nir"), x)) >= 0.99


def test_a_hand_built_recurrent_lif_follows_nir(tmp_path: Path) -> None:
    """A LIF on a cycle through a Linear, no ttsnn metadata: v += dt / tau (-v + r (x + W s_{t-1})),
    reset to 0 in the step of the spike."""
    tau, r, w = full((16,), 5e-4), full((16,), 5.0), f32(16, 16, scale=0.4, seed=5)
    nodes = {"input": nir.Input(input_type={"input": np.array([10])}),
             "fc": nir.Affine(weight=f32(16, 10, scale=0.6, seed=6), bias=f32(16, scale=0.1, seed=7)),
             "lif": nir.LIF(tau=tau, r=r, v_leak=np.zeros(16, np.float32), v_threshold=full((16,), 1.0),
                            v_reset=np.zeros(16, np.float32)),
             "rec": nir.Linear(weight=w), "output": nir.Output(output_type={"output": np.array([16])})}
    edges = [("input", "fc"), ("fc", "lif"), ("lif", "rec"), ("rec", "lif"), ("lif", "output")]
    nir.write(tmp_path / "r.nir", nir.NIRGraph(nodes=nodes, edges=edges, type_check=False))
    x = torch.rand(T, 8, 10, generator=torch.Generator().manual_seed(4)) * 2
    drive = (x.double() @ torch.from_numpy(nodes["fc"].weight).double().T + torch.from_numpy(nodes["fc"].bias).double())
    v, s, expected = torch.zeros(8, 16, dtype=torch.float64), torch.zeros(8, 16, dtype=torch.float64), []
    for t in range(T):
        v = v + DT / 5e-4 * (-v + 5.0 * (drive[t] + s @ torch.from_numpy(w).double().T))
        s = (v > 1.0).double()
        v = v * (1 - s)
        expected.append(s.float())
    got = _run(load_model(tmp_path / "r.nir"), x)
    assert 0.01 < float(got.mean()) < 0.9
    assert _agreement(got, torch.stack(expected)) >= 0.99
    assert _invoke("report", str(tmp_path / "r.nir"), "--timesteps", "4")["params"]["total"] > 0  # counted on meta


def test_snntorch_recurrent_graph_round_trips(tmp_path: Path) -> None:
    """snntorch writes RLeaky as LIF <-> Affine (through nirtorch, a cycle); ttsnn reads it as an RLeaky
    with NIR's reset (to 0, in the step of the spike), i.e. snntorch's RLeaky with that reset."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(10, 16), snn.RLeaky(beta=0.8, linear_features=16, init_hidden=True),
                        nn.Linear(16, 4), snn.Leaky(beta=0.7, init_hidden=True))
    nir.write(tmp_path / "r.nir", snntorch_graph(net, torch.randn(1, 10)))
    as_nir = nn.Sequential(nn.Linear(10, 16), snn.RLeaky(beta=0.8, linear_features=16, init_hidden=True,
                                                         reset_mechanism="zero", reset_delay=False),
                           nn.Linear(16, 4), snn.Leaky(beta=0.7, init_hidden=True, reset_mechanism="zero"))
    as_nir.load_state_dict({k: v for k, v in net.state_dict().items() if "reset_mechanism" not in k}, strict=False)
    x = torch.rand(T, 16, 10, generator=torch.Generator().manual_seed(4)) * 2
    reference = _run(as_nir[:2], x)
    assert 0.01 < float(reference.mean()) < 0.9
    back = load_model(tmp_path / "r.nir")
    assert type(back[1]).__name__ == "RLeaky"
    assert _agreement(reference, _run(back[:2], x)) >= 0.99
    assert _agreement(_run(as_nir, x), _run(back, x)) >= 0.99
    export_nir(_full_rank(back), tmp_path / "tt.nir", T, (10,))
    assert _agreement(reference, _run(load_model(tmp_path / "tt.nir")[:2], x)) >= 0.99
