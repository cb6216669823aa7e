"""Layer kinds: one `LayerKind` per TT layer type, owning everything type-specific, and their registry.

Owns: which dense layers a type covers and why one is skipped (growth included), its ranks and rank
caps, decomposition and relative error, report fields, parameter counts, MACs and spike accumulates,
hw workloads, the `inspect` row, the ONNX export replacement and the NIR mapping (`base.LayerKind`
documents each hook). Kinds: `conv2d` (TTConv2d), `conv1d` (TTConv1d), `linear` (TT-matrix TTLinear),
`conv2d_grouped` (a grouped Conv2d, one TT chain per group). Everything above asks `kind_of(module)`
instead of naming layer classes; adding a layer type is one kind module and one line in `KINDS`.
Bundles record each TT layer's config with its `type` (absent in bundles written before Conv1d /
Linear: those are conv2d).
May import: errors, maths, spiking, layers, zoo, hw, third-party (torch, nir, tensorly). Never storage,
compress or anything above.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ttsnn_cli.kinds.base import LayerKind
from ttsnn_cli.kinds.conv1d import Conv1dKind
from ttsnn_cli.kinds.conv2d import Conv2dKind
from ttsnn_cli.kinds.conv2d_grouped import Conv2dGroupedKind
from ttsnn_cli.kinds.linear import LinearKind

#: the registry, by `--layer-types` name (= a bundle's `type`), in the order help texts list them
KINDS: dict[str, LayerKind] = {kind.name: kind for kind in (
    Conv2dKind(), Conv1dKind(), LinearKind(),
    Conv2dGroupedKind(),
)}
LAYER_TYPES: tuple[str, ...] = tuple(KINDS)
DEFAULT_LAYER_TYPES: tuple[str, ...] = ("conv2d", "conv1d")

__all__ = ["DEFAULT_LAYER_TYPES", "KINDS", "LAYER_TYPES", "LayerKind", "is_tt_layer", "kind_of", "layer_type", "tt_dims",
           "leaf_kind", "parse_layer_types", "tt_layer_config", "tt_layer_from_config"]


def kind_of(module: nn.Module, exact: bool = True) -> LayerKind | None:
    """The kind of a TT layer, or of a dense layer of a covered type (None for anything else).

    `exact` (what compress may decompose) takes a dense layer of exactly the kind's class; without it
    (counting, export, inspect) subclasses count as the class they extend."""
    for kind in KINDS.values():
        if kind.owns_tt(module):
            return kind
    for kind in KINDS.values():
        if kind.owns_dense(module, exact):
            return kind
    return None


def tt_dims(layers: dict[str, nn.Module], linear_cores: int) -> dict[str, tuple[int, ...]]:
    """Each dense layer's TT tensor dims (`LayerKind.tt_tensor`): what `maths.ranks.WeightCosts`
    counts and a stored sensitivity curve is checked against."""
    dims = {}
    for name, module in layers.items():
        kind = kind_of(module, exact=False)
        assert kind is not None, name
        dims[name] = tuple(kind.tt_tensor(module, linear_cores).shape)
    return dims


def is_tt_layer(module: nn.Module) -> bool:
    kind = kind_of(module)
    return kind is not None and kind.owns_tt(module)


def needs_all_steps(model: nn.Module) -> bool:
    """Whether per-step costs vary over time (HTT layers): then count over all T steps."""
    return any(is_tt_layer(m) and getattr(m, "mode", "stt") == "htt" for m in model.modules())


def leaf_kind(module: nn.Module) -> LayerKind | None:
    """The kind that measures `module` with forward hooks: dense layers (subclasses too) and TT layers
    without core children (a TT-matrix); None for TT layers made of cores and everything else."""
    kind = kind_of(module, exact=False)
    return kind if kind is not None and kind.is_leaf(module) else None


def layer_type(module: nn.Module) -> str | None:
    """The `--layer-types` name of a dense (exact class) or TT layer (None for anything else)."""
    kind = kind_of(module)
    return kind.name if kind is not None else None


def parse_layer_types(text: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """`conv2d,linear` -> ("conv2d", "linear"); None -> the default. ValueError names what is allowed."""
    if text is None:
        return DEFAULT_LAYER_TYPES
    items = text.split(",") if isinstance(text, str) else list(text)
    names = tuple(dict.fromkeys(str(i).strip().lower() for i in items if str(i).strip()))
    unknown = [n for n in names if n not in KINDS]
    if unknown or not names:
        raise ValueError(f"layer types are a comma list of {', '.join(KINDS)}; got {text!r}")
    return names


def tt_layer_config(layer: nn.Module) -> dict[str, Any]:
    """A TT layer's config with its `type`, as a bundle records it."""
    kind = kind_of(layer)
    if kind is None or not kind.owns_tt(layer):
        raise ValueError(f"{type(layer).__name__} is not a TT layer")
    return kind.tt_config(layer)


def tt_layer_from_config(config: dict[str, Any]) -> nn.Module:
    """An empty TT layer of the recorded type, ready for its state_dict (KeyError/ValueError if bad)."""
    name = config.get("type", "conv2d")
    if name not in KINDS:
        raise ValueError(f"unknown TT layer type {name!r}")
    return KINDS[name].from_config(config)
