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

from ttsnn_cli.storage.bundle import tt_config
from ttsnn_cli.errors import BadInputError
from ttsnn_cli.export.nir_neurons import DT, neuron_node, one_to_one_node, recurrent_module, reset_notes
from ttsnn_cli.storage.outputs import atomic_output
from ttsnn_cli.layers.conv2d import TTConv2d
from ttsnn_cli.layers.conv1d import TTConv1d, conv1d_padding
from ttsnn_cli.spiking.neurons import MultiStepLIF
from ttsnn_cli.spiking.runner import execution_style
from ttsnn_cli.spiking.state import is_neuron
from ttsnn_cli.maths.tt import centre_tap
from ttsnn_cli.layers.linear import TTLinear

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


def _np(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().to(torch.float32).numpy()


def _bn_affine(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval BatchNorm as y = scale * x + shift (float64)."""
    var = bn.running_var.double() if bn.running_var is not None else torch.ones(bn.num_features, dtype=torch.float64)
    mean = bn.running_mean.double() if bn.running_mean is not None else torch.zeros(bn.num_features, dtype=torch.float64)
    weight = bn.weight.double() if bn.weight is not None else torch.ones_like(var)
    bias = bn.bias.double() if bn.bias is not None else torch.zeros_like(var)
    scale = weight / torch.sqrt(var + bn.eps)
    return scale, bias - mean * scale


def _symmetric_padding(name: str, pads: tuple[int, int, int, int], padding_mode: str) -> tuple[int, int]:
    left, right, top, bottom = pads
    if padding_mode != "zeros":
        raise BadInputError(f"layer {name}: padding_mode {padding_mode!r} has no NIR equivalent (zeros only)")
    if left != right or top != bottom:
        raise BadInputError(f"layer {name}: asymmetric padding {pads} has no NIR equivalent (Conv2d takes one symmetric padding)")
    return (top, left)


def _conv_node(name: str, weight: torch.Tensor, bias: torch.Tensor | None, stride: Any, padding: Any, dilation: Any, groups: int,
               hw: tuple[int, int], metadata: dict[str, Any] | None = None) -> Any:
    import nir

    bias_np = _np(bias) if bias is not None else np.zeros(weight.shape[0], dtype=np.float32)
    padding, dilation = list(padding), tuple(dilation)
    kh, kw = weight.shape[2], weight.shape[3]
    if kh != kw:  # NIR infers shapes from kh alone: embed the kernel in a square one (exact)
        if (kh - kw) % 2:
            raise BadInputError(f"layer {name}: a {kh}x{kw} kernel cannot be embedded in a square kernel symmetrically "
                                "(NIR's Conv2d shape inference assumes square kernels)")
        axis, extra = (3, (kh - kw) // 2) if kh > kw else (2, (kw - kh) // 2)
        pad = (extra, extra, 0, 0) if axis == 3 else (0, 0, extra, extra)
        weight = torch.nn.functional.pad(weight, pad)
        padding[axis - 2] += extra * dilation[axis - 2]  # the zero taps shift the origin by extra dilated taps
    node = nir.Conv2d(input_shape=tuple(hw), weight=_np(weight), stride=tuple(stride), padding=tuple(padding),
                      dilation=dilation, groups=groups, bias=bias_np, metadata=metadata or {})
    return node


def _fold(weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.Module | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    if bn is None:
        return weight, bias
    scale, shift = _bn_affine(bn)  # type: ignore[arg-type]
    base = bias.double() if bias is not None else torch.zeros_like(shift)
    return weight.double() * scale.reshape(-1, *[1] * (weight.dim() - 1)), base * scale + shift


def _conv1d_node(name: str, weight: torch.Tensor, bias: torch.Tensor | None, stride: int, padding: int, dilation: int,
                 length: int, metadata: dict[str, Any] | None = None) -> Any:
    import nir

    bias_np = _np(bias) if bias is not None else np.zeros(weight.shape[0], dtype=np.float32)
    return nir.Conv1d(input_shape=length, weight=_np(weight), stride=stride, padding=padding, dilation=dilation,
                      groups=1, bias=bias_np, metadata=metadata or {})


def _conv1d_nodes(name: str, module: nn.Module, bn: nn.Module | None, x: torch.Tensor) -> tuple[list[tuple[str, Any]], torch.Tensor]:
    """A Conv1d (one node) or a TTConv1d (three nodes); zero, symmetric padding only."""
    length = int(x.shape[-1])
    y = module(x)
    y = bn(y) if bn is not None else y
    if isinstance(module, TTConv1d):
        if module.mode != "stt":
            raise BadInputError(f"layer {name}: HTT switches path at t = ceil(T/2) and a NIR graph is time-invariant; "
                                "export ONNX, or re-compress in stt for NIR")
        left, right = module.padding
        if module.padding_mode != "zeros" or left != right:
            raise BadInputError(f"layer {name}: padding {module.padding} ({module.padding_mode}) has no NIR Conv1d equivalent "
                                "(zeros, symmetric only)")
        meta = {"tt_layer": name, "tt_mode": module.mode, "tt_ranks": list(module.ranks)}
        a = module.core1(x)
        weight, bias = _fold(module.core3.weight.detach(), module.core3.bias, bn)
        return [(f"{name}.core1", _conv1d_node(name, module.core1.weight.detach(), None, 1, 0, 1, length, {**meta, "tt_core": "G1"})),
                (f"{name}.core2", _conv1d_node(name, module.core2.weight.detach(), None, module.stride, left, module.dilation,
                                               length, {**meta, "tt_core": "G2"})),
                (f"{name}.core3", _conv1d_node(name, weight, bias, 1, 0, 1, int(module._chain(a).shape[-1]),
                                               {**meta, "tt_core": "G3"}))], y
    left, right = conv1d_padding(module)  # type: ignore[arg-type]
    if module.padding_mode != "zeros" or left != right or module.groups != 1:
        raise BadInputError(f"layer {name}: Conv1d with padding {(left, right)} ({module.padding_mode}) or groups "
                            f"{module.groups} has no NIR equivalent here (zeros, symmetric, groups 1)")
    weight, bias = _fold(module.weight.detach(), module.bias, bn)
    return [(name, _conv1d_node(name, weight, bias, module.stride[0], left, module.dilation[0], length))], y


def tt_middle_kernel(layer: TTConv2d) -> torch.Tensor:
    """The merged middle cores (r3, r1, kh, kw), float64: STT chain or PTT cross (module docstring)."""
    w2 = layer.core2.weight.detach().double()[:, :, :, 0]  # (r2, r1, kh)
    w3 = layer.core3.weight.detach().double()[:, :, 0, :]  # (r3, r2, kw)
    kh, kw = layer.kernel_size
    if layer.mode == "stt":
        return torch.einsum("cbj,bai->caij", w3, w2)
    kernel = torch.zeros(w3.shape[0], w2.shape[1], kh, kw, dtype=torch.float64)
    kernel[:, :, :, centre_tap(kw)] += w2.permute(0, 1, 2) / 2
    kernel[:, :, centre_tap(kh), :] += w3 / 2
    return kernel


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
            consumed = 2 if bn is not None and isinstance(module, (nn.Conv2d, TTConv2d, nn.Conv1d, TTConv1d)) else 1
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
    if isinstance(module, TTConv2d):
        if module.mode == "htt":
            raise BadInputError(f"layer {name}: HTT switches path at t = ceil(T/2) and a NIR graph is time-invariant; "
                                "export ONNX, or re-compress in stt/ptt for NIR")
        padding = _symmetric_padding(name, module.padding, module.padding_mode)
        meta = {"tt_layer": name, "tt_mode": module.mode, "tt_ranks": list(module.ranks)}
        first = _conv_node(name, module.core1.weight.detach(), None, (1, 1), (0, 0), (1, 1), 1, hw, {**meta, "tt_core": "G1"})
        a = module.core1(x)
        middle_kernel = tt_middle_kernel(module)
        middle = _conv_node(name, middle_kernel, None, module.stride, padding, module.dilation, 1, hw, {**meta, "tt_core": "G2G3"})
        a = torch.nn.functional.conv2d(a.double(), middle_kernel, None, module.stride, padding, module.dilation).float()
        weight, bias = _fold(module.core4.weight.detach(), module.core4.bias, bn)
        last = _conv_node(name, weight, bias, (1, 1), (0, 0), (1, 1), 1, (int(a.shape[2]), int(a.shape[3])), {**meta, "tt_core": "G4"})
        y = module(x)
        y = bn(y) if bn is not None else y
        return [(f"{name}.core1", first), (f"{name}.core23", middle), (f"{name}.core4", last)], y
    if isinstance(module, (nn.Conv1d, TTConv1d)):
        return _conv1d_nodes(name, module, bn, x)
    if isinstance(module, TTLinear):
        weight = module.effective_weight()
        meta = {"tt_layer": name, "tt_matrix": "reconstructed Affine: NIR has no tensor-contraction node, so the "
                "TT-matrix cores are multiplied out", "in_factors": list(module.in_factors),
                "out_factors": list(module.out_factors), "tt_ranks": list(module.ranks)}
        node = (nir.Affine(weight=_np(weight), bias=_np(module.bias), metadata=meta) if module.bias is not None
                else nir.Linear(weight=_np(weight), metadata=meta))
        return [(name, node)], module(x)
    if isinstance(module, nn.Conv2d):
        if isinstance(module.padding, str):
            raise BadInputError(f"layer {name}: string padding {module.padding!r} is not exported; give explicit padding")
        padding = _symmetric_padding(name, (module.padding[1], module.padding[1], module.padding[0], module.padding[0]),
                                     module.padding_mode)
        weight, bias = _fold(module.weight.detach(), module.bias, bn)
        node = _conv_node(name, weight, bias, module.stride, padding, module.dilation, module.groups, hw)
        y = module(x)
        return [(name, node)], (bn(y) if bn is not None else y)
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
    if isinstance(module, nn.Linear):
        node = (nir.Affine(weight=_np(module.weight), bias=_np(module.bias)) if module.bias is not None
                else nir.Linear(weight=_np(module.weight)))
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
