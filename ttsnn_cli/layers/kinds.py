"""The registry of TT layer types: one place that knows every dense layer ttsnn can decompose.

`LAYER_TYPES` maps the `--layer-types` names to (dense class, TT class); bundles record each TT
layer's config with its `type` (absent in bundles written before Conv1d/Linear: those are conv2d).
Everything downstream (loading, counting, export) asks `is_tt_layer` instead of naming classes.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ttsnn_cli.layers.conv2d import TTConv2d
from ttsnn_cli.layers.conv1d import TTConv1d
from ttsnn_cli.layers.linear import TTLinear

LAYER_TYPES: dict[str, tuple[type[nn.Module], type[nn.Module]]] = {
    "conv2d": (nn.Conv2d, TTConv2d),
    "conv1d": (nn.Conv1d, TTConv1d),
    "linear": (nn.Linear, TTLinear),
}
DEFAULT_LAYER_TYPES: tuple[str, ...] = ("conv2d", "conv1d")
TT_LAYERS: tuple[type[nn.Module], ...] = tuple(tt for _, tt in LAYER_TYPES.values())


def is_tt_layer(module: nn.Module) -> bool:
    return isinstance(module, TT_LAYERS)


def layer_type(module: nn.Module) -> str | None:
    """The `--layer-types` name of a dense or TT layer (None for anything else)."""
    for name, (dense, tt) in LAYER_TYPES.items():
        if type(module) is dense or isinstance(module, tt):
            return name
    return None


def parse_layer_types(text: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """`conv2d,linear` -> ("conv2d", "linear"); None -> the default. ValueError names what is allowed."""
    if text is None:
        return DEFAULT_LAYER_TYPES
    items = text.split(",") if isinstance(text, str) else list(text)
    names = tuple(dict.fromkeys(str(i).strip().lower() for i in items if str(i).strip()))
    unknown = [n for n in names if n not in LAYER_TYPES]
    if unknown or not names:
        raise ValueError(f"layer types are a comma list of {', '.join(LAYER_TYPES)}; got {text!r}")
    return names


def tt_layer_config(layer: nn.Module) -> dict[str, Any]:
    """A TT layer's config with its `type`, as a bundle records it."""
    return {**layer.config(), "type": layer_type(layer)}  # type: ignore[operator]


def tt_layer_from_config(config: dict[str, Any]) -> nn.Module:
    """An empty TT layer of the recorded type, ready for its state_dict (KeyError/ValueError if bad)."""
    kind = config.get("type", "conv2d")
    if kind not in LAYER_TYPES:
        raise ValueError(f"unknown TT layer type {kind!r}")
    return LAYER_TYPES[kind][1].from_config(config)  # type: ignore[attr-defined]
