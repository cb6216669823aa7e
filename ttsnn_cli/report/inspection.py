"""A JSON-ready description of a model's layers, for `ttsnn inspect`."""

from __future__ import annotations

from typing import Any

from torch import nn

from ttsnn_cli.storage.bundle import get_meta, tt_config
from ttsnn_cli.layers.conv2d import TTConv2d
from ttsnn_cli.layers.conv1d import TTConv1d
from ttsnn_cli.layers.kinds import is_tt_layer
from ttsnn_cli.layers.linear import TTLinear
from ttsnn_cli.spiking.state import is_neuron


def _shape(module: nn.Module) -> str:
    if isinstance(module, TTConv2d):
        kh, kw = module.kernel_size
        return f"{module.in_channels}->{module.out_channels}, {kh}x{kw}, stride {module.stride}, {module.mode}"
    if isinstance(module, TTConv1d):
        return f"{module.in_channels}->{module.out_channels}, k {module.kernel_size}, stride {module.stride}, {module.mode}"
    if isinstance(module, TTLinear):
        return (f"{module.in_features}->{module.out_features}, TT-matrix "
                f"{'x'.join(map(str, module.in_factors))} -> {'x'.join(map(str, module.out_factors))}")
    if isinstance(module, nn.Conv1d):
        return f"{module.in_channels}->{module.out_channels}, k {module.kernel_size[0]}, stride {module.stride[0]}, groups {module.groups}"
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return f"{module.in_channels}->{module.out_channels}, {kh}x{kw}, stride {module.stride}, groups {module.groups}"
    if isinstance(module, nn.Linear):
        return f"{module.in_features}->{module.out_features}"
    if is_neuron(module):
        beta = getattr(module, "beta", None)
        threshold = getattr(module, "threshold", None)
        return f"beta {float(beta.flatten()[0]) if beta is not None else '-'}, threshold {float(threshold.flatten()[0]) if threshold is not None else '-'}"
    return ""


def describe_model(model: nn.Module) -> dict[str, Any]:
    meta = get_meta(model)
    layers = []
    tt_names = [name for name, m in model.named_modules() if is_tt_layer(m)]
    for name, module in model.named_modules():
        if any(name.startswith(t + ".") for t in tt_names):
            continue
        if is_tt_layer(module) or isinstance(module, (nn.Conv2d, nn.Conv1d, nn.Linear)) or is_neuron(module):
            layers.append({
                "name": name,
                "type": type(module).__name__,
                "shape": _shape(module),
                "ranks": list(module.ranks) if is_tt_layer(module) else None,
                "params": sum(p.numel() for p in module.parameters()),
            })
    tt = tt_config(model)
    return {
        "arch": meta.arch,
        "arch_kwargs": meta.arch_kwargs,
        "io": meta.io.to_dict(),
        "tt_mode": tt["mode"] if tt else None,
        "layers": layers,
        "params": sum(p.numel() for p in model.parameters()),
        "history": meta.history,
        "source": meta.source,
    }
