"""A JSON-ready description of a model's layers, for `ttsnn inspect`."""

from __future__ import annotations

from typing import Any

from torch import nn

from ttsnn_cli.kinds import is_tt_layer, kind_of
from ttsnn_cli.spiking import spikingjelly
from ttsnn_cli.spiking.state import is_neuron
from ttsnn_cli.storage.bundle import get_meta, tt_config


def _shape(module: nn.Module) -> str:
    kind = kind_of(module, exact=False)
    if kind is not None:
        return kind.describe(module)
    if spikingjelly.is_node(module):
        return spikingjelly.describe_node(module)
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
        if kind_of(module, exact=False) is not None or is_neuron(module):
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
