"""Registry of built-in models, named on the command line as `--arch zoo:NAME`.

Adding a model touches one place: decorate its factory with `@register(...)` in a module of this
package and list that module in `_MODULES`. Each entry also declares what the model expects (input
shape, default timesteps, default dataset), so commands need fewer options for zoo models.
May import: `errors`, `maths`, `spiking`, `layers`. Never storage, kinds or anything above.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

_MODULES = ("ttsnn_cli.zoo.digits", "ttsnn_cli.zoo.msresnet")


@dataclass(frozen=True)
class ZooEntry:
    """A built-in model: its factory and the defaults a command fills in from it."""

    name: str
    factory: Callable[..., nn.Module]
    input_shape: Callable[[dict[str, Any]], tuple[int, ...]]
    timesteps: int
    data: str | None = None
    description: str = ""
    kwargs: dict[str, Any] = field(default_factory=dict)


_REGISTRY: dict[str, ZooEntry] = {}


def register(
    name: str,
    input_shape: Callable[[dict[str, Any]], tuple[int, ...]],
    timesteps: int,
    data: str | None = None,
    description: str = "",
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    def decorate(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _REGISTRY[name] = ZooEntry(name, factory, input_shape, timesteps, data, description)
        return factory

    return decorate


def _load_all() -> None:
    for module in _MODULES:
        importlib.import_module(module)


def zoo_names() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def zoo_entry(name: str) -> ZooEntry:
    """The entry for `name`; KeyError names the known models."""
    _load_all()
    if name not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise KeyError(f"unknown zoo model {name!r}; known: {known}")
    return _REGISTRY[name]
