"""NIR 1.0.8 export: the network as a chain of NIR nodes (Input -> ... -> Output), written atomically.

Which networks: those whose layer order is a chain we can read off the model: an nn.Sequential
(user style B, nested Sequentials flattened) and the zoo's `digits_csnn`. Refused with the reason
(exit 3): own-loop classes (their order lives in python code), MS-ResNets (the membrane shortcut adds
real-valued membranes across blocks; this exporter writes chains only), HTT layers (their path
changes at t = ceil(T/2); a NIR graph is time-invariant), max pooling (use AvgPool2d), Alpha neurons,
non-zero padding modes and
asymmetric padding (NIR's Conv2d takes one symmetric padding), anything else not listed below.

Mapping:
- Conv2d (+ a following BatchNorm2d folded into weight and bias, eval statistics) -> Conv2d.
- TTConv2d (STT/PTT) -> three Conv2d nodes `<name>.core1` (1x1, Cin -> r1), `<name>.core23`
  (kh x kw, r1 -> r3, the layer's stride, padding and dilation) and `<name>.core4` (1x1, r3 -> Cout,
  bias and any following BatchNorm folded in). The middle node merges the two middle cores, which
  is exact: STT's kh x 1 then 1 x kw chain is the kh x kw kernel W[c, a, i, j] = sum_b G3[c, b, j]
  G2[b, a, i]; PTT's cross is the kernel with G2/2 in the centre column and G3/2 in the centre row.
  Merging also sidesteps NIR's shape inference, which takes the kernel height for both dimensions
  (a kh x 1 / 1 x kw pair would get wrong shapes). Every Conv2d's input_shape is set from torch's
  shapes (nir 1.0.8's writer cannot store an unset one, and its reader type-checks the graph). Any
  other non-square kh x kw kernel is zero-embedded in a square max(kh, kw) kernel with the padding
  widened to match, which is exact when |kh - kw| is even (else exit 3).
- neurons (`nir_neurons`): Leaky / MultiStepLIF -> LIF (beta at 1 -> IF), Lapicque -> LIF,
  Synaptic -> CubaLIF, RLeaky / RSynaptic -> LIF / CubaLIF with their recurrent layer as a cycle;
  every reset mechanism, the discrete reset recorded in each node's metadata (NIR's LIF only resets
  to v_reset; `nir_warnings` says which neurons need it). Alpha is refused.
- Conv1d (+ a following BatchNorm1d folded in) -> Conv1d; TTConv1d (STT) -> three Conv1d nodes
  `<name>.core1` (1, Cin -> r1), `<name>.core2` (k, r1 -> r2, the layer's stride, padding and
  dilation), `<name>.core3` (1, r2 -> Cout, bias); symmetric zero padding only, as for Conv2d.
- TTLinear (a TT-matrix) -> one Affine of its reconstructed weight (NIR has no tensor contraction
  node); the node's metadata says so and records the factors and ranks.
- a grouped TT conv (`conv2d_grouped`) -> three Conv2d nodes, core1, the merged middle cores per
  group and core4, each as its block-diagonal dense kernel (nir 1.0.8 mistypes grouped convs).
  Each layer type's mapping above is its kind's (`LayerKind.nir_nodes`, in `ttsnn_cli.kinds`).
- Linear -> Affine (Linear when bias-free); AvgPool2d -> AvgPool2d; Flatten -> Flatten (dims
  without the batch); digits_csnn's global average pool -> AvgPool2d over the whole map + Flatten.
Graph metadata: the TT mode and each layer's ranks, T, and the LIF mapping.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ttsnn_cli.errors import BadInputError
from ttsnn_cli.export.nir_neurons import DT, neuron_node, one_to_one_node, recurrent_module, reset_notes
from ttsnn_cli.kinds import kind_of
from ttsnn_cli.spiking.neurons import MultiStepLIF
from ttsnn_cli.spiking.runner import execution_style
from ttsnn_cli.spiking.state import is_neuron
from ttsnn_cli.storage.bundle import tt_config
from ttsnn_cli.storage.outputs import atomic_output

_SKIP = (nn.Identity, nn.Dropout)


class GlobalAvgPool(nn.Module):
    """Marker for `x.mean((2, 3))` in a layer chain."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3))


def layer_chain(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model's layers in execution order, or BadInputError saying why there is no such chain."""
    name = type(model).__name__
    if isinstance(model, nn.Sequential):
        return _flatten_sequential(model, "")
    if name == "DigitsCSNN":
        names = ["stem.conv", "stem.bn", "stem.lif", "conv1", "bn1", "lif1", "pool1", "conv2", "bn2", "lif2", "pool2",
                 "conv3", "bn3", "lif3"]
        return [(n, model.get_submodule(n)) for n in names] + [("gap", GlobalAvgPool()), ("fc", model.fc)]
    if name == "MSResNet":
        raise BadInputError(
            "NIR export of MS-ResNet: its membrane shortcut adds real-valued membranes across blocks and this exporter "
            "writes layer chains only; export ONNX instead"
        )
    if execution_style(model) == "own_loop":
        raise BadInputError(
            f"NIR export of {name}: it runs its own time loop, so its layer order lives in python code ttsnn cannot "
            "read; write it as an nn.Sequential with init_hidden=True neurons, or export ONNX"
        )
    raise BadInputError(f"NIR export of {name}: its layer order lives in its forward, which ttsnn cannot read "
                        "(supported: nn.Sequential, digits_csnn); write it as an nn.Sequential, or export ONNX")


def _flatten_sequential(seq: nn.Sequential, prefix: str) -> list[tuple[str, nn.Module]]:
    chain: list[tuple[str, nn.Module]] = []
    for child_name, child in seq.named_children():
        full = f"{prefix}{child_name}"
        chain += _flatten_sequential(child, full + ".") if isinstance(child, nn.Sequential) else [(full, child)]
    return chain


def build_nir_graph(model: nn.Module, timesteps: int, input_shape: tuple[int, ...]) -> Any:
    """The NIR graph of `model` (a chain); see the module docstring for the mapping."""
    import nir

    chain = layer_chain(model)
    nodes: dict[str, Any] = {"input": nir.Input(input_type={"input": np.array(input_shape)})}
    order = ["input"]
    cycles: list[tuple[str, str]] = []  # recurrent neurons: neuron -> its recurrent layer(s) -> neuron
    x = torch.zeros(1, *input_shape)
    index = 0
    with torch.no_grad():
        while index < len(chain):
            name, module = chain[index]
            if isinstance(module, MultiStepLIF) or is_neuron(module):
                neuron = module.lif if isinstance(module, MultiStepLIF) else module
                nodes[name] = neuron_node(name, neuron, tuple(x.shape[1:]))
                order.append(name)
                cycles += _recurrence(name, neuron, x, nodes)
                index += 1
                continue
            following = chain[index + 1][1] if index + 1 < len(chain) else None
            bn = following if isinstance(following, (nn.BatchNorm2d, nn.BatchNorm1d)) else None
            kind = kind_of(module, exact=False)
            consumed = 2 if bn is not None and kind is not None and kind.folds_batchnorm else 1
            new_nodes, x = _convert(name, module, bn if consumed == 2 else None, x)
            for node_name, node in new_nodes:
                nodes[node_name] = node
                order.append(node_name)
            index += consumed
    nodes["output"] = nir.Output(output_type={"output": np.array(x.shape[1:])})
    order.append("output")
    edges = cycles + list(zip(order[:-1], order[1:]))
    config = tt_config(model)
    metadata = {
        "producer": "ttsnn",
        "timesteps": int(timesteps),
        "lif_mapping": "snntorch: dt=1e-4, tau=dt/(1-beta), r=tau/dt, v_leak=0, v_reset=0",
        "discrete_reset": "each neuron node's metadata: reset_mechanism, reset_delay, discrete_reset (see README)",
        "tt_mode": config["mode"] if config else "dense",
        "tt_ranks": json.dumps({k: v["ranks"] for k, v in config["layers"].items()}) if config else "{}",
    }
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata, type_check=False)


def _recurrence(name: str, neuron: nn.Module, x: torch.Tensor, nodes: dict[str, Any]) -> list[tuple[str, str]]:
    """Nodes of a recurrent neuron's own layer (added to `nodes`) and the cycle's edges."""
    recurrent = recurrent_module(neuron)
    if recurrent is None:
        return []
    if type(recurrent).__name__ == "RecurrentOneToOne":
        if x.dim() != 2:
            raise BadInputError(f"neuron {name}: a one-to-one recurrence over feature maps has no compact NIR node; "
                                "use all_to_all=True (a recurrent conv)")
        new_nodes = [(f"{name}.recurrent", one_to_one_node(recurrent, int(x.shape[1])))]
    else:
        new_nodes, _ = _convert(f"{name}.recurrent", recurrent, None, x)
        new_nodes[-1] = (new_nodes[-1][0], _move_bias(new_nodes[-1][1], nodes, name))
    for node_name, node in new_nodes:
        nodes[node_name] = node
    path = [name] + [n for n, _ in new_nodes] + [name]
    return list(zip(path[:-1], path[1:]))


def _move_bias(last: Any, nodes: dict[str, Any], neuron: str) -> Any:
    """The recurrent layer's bias is a constant input of the neuron at every step, s_{-1} = 0 included;
    an importer that feeds a cycle nothing before its first output would lose it at t = 0. So it moves
    into the node feeding the neuron (the last one added before it), when that node has a bias."""
    import nir

    bias = getattr(last, "bias", None)
    feeder = list(nodes.values())[list(nodes).index(neuron) - 1]
    if bias is None or not np.any(bias) or not isinstance(feeder, (nir.Affine, nir.Conv2d)):
        return last
    if feeder.bias.shape != bias.shape:
        return last
    feeder.bias = (feeder.bias + bias).astype(np.float32)
    if isinstance(last, nir.Affine):
        return nir.Linear(weight=last.weight, metadata=getattr(last, "metadata", {}))
    last.bias = np.zeros_like(bias)
    return last


def nir_warnings(graph: Any) -> list[str]:
    """One line for the user when some neuron's discrete reset is only in the node metadata."""
    notes = reset_notes(graph.nodes)
    if not notes:
        return []
    return [f"NIR: {len(notes)} neuron(s) reset differently from NIR's reset-to-v_reset ({', '.join(notes)}); "
            "the exact discrete reset is in each node's metadata (reset_mechanism, reset_delay): see the README"]


def _convert(name: str, module: nn.Module, bn: nn.BatchNorm2d | None, x: torch.Tensor) -> tuple[list[tuple[str, Any]], torch.Tensor]:
    import nir

    hw = (int(x.shape[2]), int(x.shape[3])) if x.dim() == 4 else (0, 0)
    kind = kind_of(module, exact=False)
    if kind is not None:  # conv, linear and their TT layers: the kind's mapping
        return kind.nir_nodes(name, module, bn, x)
    if isinstance(module, nn.AvgPool2d):
        if module.ceil_mode or not module.count_include_pad and module.padding:
            raise BadInputError(f"layer {name}: AvgPool2d with ceil_mode or count_include_pad=False is not exported")
        pair = lambda v: np.array(v if isinstance(v, (tuple, list)) else (v, v))  # noqa: E731
        node = nir.AvgPool2d(kernel_size=pair(module.kernel_size), stride=pair(module.stride or module.kernel_size),
                             padding=pair(module.padding))
        return [(name, node)], module(x)
    if isinstance(module, GlobalAvgPool):
        h, w = hw
        pool = nir.AvgPool2d(kernel_size=np.array([h, w]), stride=np.array([h, w]), padding=np.array([0, 0]))
        flat = nir.Flatten(input_type={"input": np.array([x.shape[1], 1, 1])}, start_dim=0, end_dim=-1)
        return [(f"{name}.pool", pool), (f"{name}.flatten", flat)], module(x)
    if isinstance(module, nn.Flatten):
        start = module.start_dim - 1 if module.start_dim > 0 else module.start_dim
        end = module.end_dim - 1 if module.end_dim > 0 else module.end_dim
        node = nir.Flatten(input_type={"input": np.array(x.shape[1:])}, start_dim=start, end_dim=end)
        return [(name, node)], module(x)
    if isinstance(module, _SKIP):
        return [], module(x)
    if isinstance(module, nn.BatchNorm2d):
        raise BadInputError(f"layer {name}: a BatchNorm2d not directly after a conv cannot be folded into NIR weights")
    if isinstance(module, (nn.MaxPool2d, nn.AdaptiveMaxPool2d)):
        raise BadInputError(f"layer {name} ({type(module).__name__}): NIR has no max pooling node; use nn.AvgPool2d "
                            "for NIR, or export ONNX")
    if any(True for _ in module.children()):
        raise BadInputError(f"layer {name} ({type(module).__name__}) is a block whose forward ttsnn cannot read: put its "
                            "layers directly into the nn.Sequential for NIR, or export ONNX")
    raise BadInputError(f"layer {name} ({type(module).__name__}) has no NIR mapping in ttsnn")


def export_nir(model: nn.Module, path: str | Path, timesteps: int, input_shape: tuple[int, ...],
               warnings: list[str] | None = None) -> int:
    """Write the NIR graph of `model` to `path` atomically; returns the number of nodes (and appends
    the user's warning lines to `warnings`)."""
    import nir

    graph = build_nir_graph(model.eval(), timesteps, input_shape)
    if warnings is not None:
        warnings += nir_warnings(graph)
    path = Path(path)
    with atomic_output(path) as temporary:
        nir.write(temporary, graph)
    return len(graph.nodes)


def run_nir_chain(graph: Any, x: torch.Tensor) -> torch.Tensor:
    """Simulate a chain NIR graph in discrete time (dt = 1e-4), x [T, B, ...] -> [T, B, ...].

    LIF: beta = 1 - dt / tau, u_t = beta * ((1 - h(u_{t-1})) * u_{t-1}) + r (dt / tau) x_t, s = h(u_t),
    i.e. snntorch's zero-reset Leaky with its delayed reset. For tests: the stored weights alone
    reproduce the model.
    """
    import nir

    order, node = [], "input"
    successors = dict(graph.edges)
    while node in successors:
        node = successors[node]
        if node != "output":
            order.append(node)
    mems: dict[str, torch.Tensor | None] = {n: None for n in order}
    outputs = []
    for t in range(x.shape[0]):
        y = x[t]
        for name in order:
            n = graph.nodes[name]
            if isinstance(n, nir.Conv1d):
                y = torch.nn.functional.conv1d(y, torch.from_numpy(n.weight), torch.from_numpy(n.bias), n.stride,
                                               n.padding, n.dilation, n.groups)
            elif isinstance(n, nir.Conv2d):
                y = torch.nn.functional.conv2d(y, torch.from_numpy(n.weight), torch.from_numpy(n.bias), tuple(n.stride),
                                               tuple(n.padding), tuple(n.dilation), n.groups)
            elif isinstance(n, nir.LIF):
                tau, r = torch.from_numpy(n.tau), torch.from_numpy(n.r)
                beta, gain = 1 - DT / tau, r * DT / tau
                thr = torch.from_numpy(n.v_threshold)
                u = mems[name]
                u = gain * y if u is None else beta * ((1 - (u - thr > 0).float()) * u) + gain * y
                mems[name] = u
                y = (u - thr > 0).float()
            elif isinstance(n, nir.AvgPool2d):
                y = torch.nn.functional.avg_pool2d(y, tuple(int(k) for k in n.kernel_size), tuple(int(s) for s in n.stride),
                                                   tuple(int(p) for p in n.padding))
            elif isinstance(n, nir.Flatten):
                y = y.flatten(n.start_dim + 1, n.end_dim if n.end_dim < 0 else n.end_dim + 1)
            elif isinstance(n, nir.Affine):
                y = y @ torch.from_numpy(n.weight).T + torch.from_numpy(n.bias)
            elif isinstance(n, nir.Linear):
                y = y @ torch.from_numpy(n.weight).T
            else:
                raise TypeError(f"run_nir_chain does not simulate {type(n).__name__}")
        outputs.append(y)
    return torch.stack(outputs)
