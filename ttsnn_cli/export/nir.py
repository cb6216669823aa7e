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
- SpikingJelly (`nir_sj`): LIFNode / ParametricLIFNode -> LIF, IFNode -> IF, with SpikingJelly's own
  update exactly (a soft-reset LIF / PLIF is refused). Its network is walked as a single-step copy: a
  chain in step mode "m" computes what T single steps do, and its step wrappers (`layer.Conv2d`, TT
  layers keeping a step mode) are mapped as the torch or TT class they extend.
- Conv1d (+ a following BatchNorm1d folded in) -> Conv1d; TTConv1d (STT) -> three Conv1d nodes
  `<name>.core1` (1, Cin -> r1), `<name>.core2` (k, r1 -> r2, the layer's stride, padding and
  dilation), `<name>.core3` (1, r2 -> Cout, bias); symmetric zero padding only, as for Conv2d.
- TTLinear (a TT-matrix) -> one Affine of its reconstructed weight (NIR has no tensor contraction
  node); the node's metadata says so and records the factors and ranks.
- a grouped TT conv (`conv2d_grouped`) -> three Conv2d nodes, core1, the merged middle cores per
  group and core4, each as its block-diagonal dense kernel (nir 1.0.8 mistypes grouped convs).
  Each layer type's mapping above is its kind's (`LayerKind.nir_nodes`, in `ttsnn_cli.kinds`).
- Linear -> Affine (Linear when bias-free); AvgPool2d -> AvgPool2d (divisor_override=1 -> SumPool2d);
  AdaptiveAvgPool2d -> AvgPool2d with kernel = stride = input / output size when that divides (known
  input shape), else refused; Flatten -> Flatten (dims without the batch); digits_csnn's global
  average pool -> AvgPool2d over the whole map + Flatten.
- NIR's own LI / Threshold / Scale read from a graph (`zoo.nir_graph`) -> LI / Threshold / Scale.
- a user's block inside the nn.Sequential (a module with its own forward, e.g. conv + BN + neuron):
  its forward is run once on a copy with hooks on its layers, and its layers are exported in the
  order it calls them when each takes the previous one's output (`_trace_block`); a residual or any
  computation between layers is refused naming the block.
Graph metadata: the TT mode and each layer's ranks, T, and the LIF mapping.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ttsnn_cli.errors import BadInputError
from ttsnn_cli.export.nir_neurons import DT, neuron_node, one_to_one_node, recurrent_module, reset_notes
from ttsnn_cli.export.nir_sj import MAPPING as SJ_MAPPING, has_step_modes, is_sj_node, single_step_copy
from ttsnn_cli.kinds import kind_of
from ttsnn_cli.spiking.neurons import MultiStepLIF
from ttsnn_cli.spiking.runner import execution_style
from ttsnn_cli.spiking.state import is_neuron
from ttsnn_cli.storage.bundle import tt_config
from ttsnn_cli.storage.outputs import atomic_output
from ttsnn_cli.zoo.nir_graph import Heaviside, Scale

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

    chain = list(layer_chain(single_step_copy(model) if has_step_modes(model) else model))
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
            if _is_block(module):  # a user's block (conv + BN + neuron...): its leaves, in the order it calls them
                chain[index:index + 1] = _trace_block(name, module, x)
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
        **({"sj_mapping": SJ_MAPPING} if any(is_sj_node(n) for n in nodes.values()) else {}),
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
    else:  # one layer, or a chain of them (a recurrent layer read back from a NIR cycle)
        parts = (list(_flatten_sequential(recurrent, f"{name}.recurrent.")) if isinstance(recurrent, nn.Sequential)
                 else [(f"{name}.recurrent", recurrent)])
        new_nodes, y = [], x
        for part_name, part in parts:
            converted, y = _convert(part_name, part, None, y)
            new_nodes += converted
        if not new_nodes or tuple(y.shape) != tuple(x.shape):
            raise BadInputError(f"neuron {name}: its recurrent layer does not map its spikes back to their shape")
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


def _adaptive_pool(name: str, module: nn.AdaptiveAvgPool2d, x: torch.Tensor) -> tuple[list[tuple[str, Any]], torch.Tensor]:
    """AdaptiveAvgPool2d at the input size ttsnn knows: a plain AvgPool2d when each output size divides
    the input size (then every window has the same size and stride); refused otherwise, as the
    windows of an uneven adaptive pool overlap by varying amounts, which no NIR pool node says."""
    import nir

    if x.dim() != 4:
        raise BadInputError(f"layer {name} (AdaptiveAvgPool2d) gets input of shape {list(x.shape[1:])}, not C,H,W")
    size = module.output_size if isinstance(module.output_size, (tuple, list)) else (module.output_size,) * 2
    sizes = tuple(int(x.shape[2 + i]) if s is None else int(s) for i, s in enumerate(size))
    h, w = int(x.shape[2]), int(x.shape[3])
    if h % sizes[0] or w % sizes[1]:
        raise BadInputError(f"layer {name}: AdaptiveAvgPool2d to {sizes[0]}x{sizes[1]} from a {h}x{w} map has uneven "
                            "windows, which no NIR pool expresses; pick an output size dividing the map, or use AvgPool2d")
    kernel = np.array([h // sizes[0], w // sizes[1]])
    node = nir.AvgPool2d(kernel_size=kernel, stride=kernel.copy(), padding=np.array([0, 0]))
    return [(name, node)], module(x)


def _is_leaf(module: nn.Module) -> bool:
    """A module the exporter maps itself (never looked into)."""
    return (not any(True for _ in module.children()) or is_neuron(module) or isinstance(module, MultiStepLIF)
            or kind_of(module, exact=False) is not None)


def _is_block(module: nn.Module) -> bool:
    return not isinstance(module, (nn.Sequential, GlobalAvgPool)) and not _is_leaf(module)


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, (tuple, list)) and value else value


def _trace_block(name: str, block: nn.Module, x: torch.Tensor) -> list[tuple[str, nn.Module]]:
    """The leaves of a user's block in the order its forward calls them, when that forward is a
    chain: each leaf takes the previous one's output (the very tensor) and the block returns the
    last one's. Found by running a copy once on the current input (its neurons' state is the copy's),
    so whatever python the forward holds is read as it runs. Anything else (a residual sum, a
    function between layers, a layer called twice) is refused naming the block."""
    from ttsnn_cli.spiking.state import reset_states

    probe = copy.deepcopy(block).eval()
    leaves = {n: m for n, m in probe.named_modules() if n and _is_leaf(m)}
    inner = {n for n in leaves for other in leaves if n != other and n.startswith(other + ".")}
    calls: list[tuple[str, tuple[Any, ...], Any]] = []
    hooks = [m.register_forward_hook(lambda mod, args, out, n=n: calls.append((n, args, out)) and None)
             for n, m in leaves.items() if n not in inner]
    refuse = f"layer {name} ({type(block).__name__}) is a block whose forward is not a chain of its layers"
    given_input = x.clone()
    try:
        with torch.no_grad():
            out = probe(given_input)
    except Exception as error:  # noqa: BLE001 - the user's forward on a probe input
        raise BadInputError(f"{refuse}: it fails on a probe input ({type(error).__name__})") from None
    finally:
        for hook in hooks:
            hook.remove()
        reset_states(probe)
    if not calls:
        raise BadInputError(f"{refuse}: it calls none of them; export ONNX")
    previous: Any = None
    for position, (leaf, args, result) in enumerate(calls):
        given = args[0] if args else None
        if len(args) != 1 or (position == 0 and given is not given_input) or (position and given is not previous):
            after = calls[position - 1][0] if position else "its input"
            raise BadInputError(f"{refuse} ({leaf} does not take {after}'s output alone): NIR export reads blocks "
                                "that only chain their layers; export ONNX")
        if [c[0] for c in calls].count(leaf) > 1:
            raise BadInputError(f"{refuse} ({leaf} is called twice): export ONNX")
        previous = _first(result)
    if _first(out) is not previous:
        raise BadInputError(f"{refuse} (it returns something other than {calls[-1][0]}'s output): export ONNX")
    return [(f"{name}.{leaf}", block.get_submodule(leaf)) for leaf, _, _ in calls]


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
    if isinstance(module, nn.AvgPool2d) and module.divisor_override is not None:
        if module.divisor_override != 1 or module.ceil_mode:
            raise BadInputError(f"layer {name}: AvgPool2d with divisor_override={module.divisor_override} or ceil_mode "
                                "has no NIR node (divisor_override=1 is NIR's SumPool2d)")
        pair = lambda v: np.array(v if isinstance(v, (tuple, list)) else (v, v))  # noqa: E731
        node = nir.SumPool2d(kernel_size=pair(module.kernel_size), stride=pair(module.stride or module.kernel_size),
                             padding=pair(module.padding))
        return [(name, node)], module(x)
    if isinstance(module, nn.AdaptiveAvgPool2d):
        return _adaptive_pool(name, module, x)
    if isinstance(module, Heaviside):
        threshold = np.broadcast_to(module.threshold.detach().cpu().numpy(), tuple(x.shape[1:])).astype(np.float32)
        return [(name, nir.Threshold(threshold=threshold))], module(x)
    if isinstance(module, Scale):
        scale = np.broadcast_to(module.scale.detach().cpu().numpy(), tuple(x.shape[1:])).astype(np.float32)
        return [(name, nir.Scale(scale=scale))], module(x)
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
    raise BadInputError(f"layer {name} ({type(module).__name__}) has no NIR mapping in ttsnn")


def export_nir(model: nn.Module, path: str | Path, timesteps: int, input_shape: tuple[int, ...],
               warnings: list[str] | None = None, graph: Any = None) -> int:
    """Write the NIR graph of `model` to `path` atomically; returns the number of nodes (and appends
    the user's warning lines to `warnings`). `graph`: one `build_nir_graph` made already (the export
    job builds it before writing anything, so a network NIR cannot express is refused first)."""
    import nir

    if graph is None:
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
