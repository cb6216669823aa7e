"""Registry of built-in models, named on the command line as `--arch zoo:NAME`.

Adding a model touches one place: decorate its factory with `@register(...)` in a module of this
package and list that module in `_MODULES`. Each entry also declares what the model expects (input
shape, default timesteps, default dataset), so commands need fewer options for zoo models.
Kwargs come from bundles too, so the size of the model they would build is counted before it is
built (`check_zoo_size`, at most MAX_ZOO_VALUES parameter and buffer values).
May import: `errors`, `maths`, `spiking`, `layers`. Never storage, kinds or anything above.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ttsnn_cli.errors import BadInputError

_MODULES = ("ttsnn_cli.zoo.digits", "ttsnn_cli.zoo.msresnet", "ttsnn_cli.zoo.nir_graph")


#: most values (parameters and buffers) a zoo model may hold, 128 MiB as float32: every zoo model at
#: its defaults holds far less (ms_resnet34, the largest, about 21 million), so only kwargs a bundle or
#: an option chose can reach it, and a bundle of a few kilobytes must not make ttsnn allocate gigabytes
MAX_ZOO_VALUES = 1 << 25


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


#: tensor factories a module's constructor makes its weights with (nn.Conv2d: torch.empty, BN: ones...)
_FACTORIES = frozenset({torch.empty, torch.zeros, torch.ones, torch.full, torch.rand, torch.randn,
                        torch.empty_strided})
#: a tensor with at most this many values is made for real (a neuron's threshold, read with .item())
_SMALL = 1024


class _LargeOnMeta(TorchFunctionMode):
    """Makes every tensor factory's result larger than _SMALL values on the meta device (shape only).

    Not `with torch.device("meta")`: snntorch's neurons read their scalar settings back with
    `.item()` while they are built, which a meta tensor cannot answer; scalars stay real here."""

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func not in _FACTORIES or kwargs.get("device") is not None:
            return func(*args, **kwargs)
        probe = func(*args, **{**kwargs, "device": "meta"})
        return probe if probe.numel() > _SMALL else func(*args, **kwargs)


def zoo_values(name: str, kwargs: dict[str, Any]) -> int | None:
    """The values (parameters + buffers) `zoo:name` holds when built with `kwargs`, counted on a copy
    whose large tensors live on the meta device (sizes only, nothing allocated: `_LargeOnMeta`); None
    when it cannot be built so (the real build then says what is wrong with the kwargs)."""
    factory = zoo_entry(name).factory
    try:
        with _LargeOnMeta():
            probe = factory(**kwargs)
    except Exception:  # noqa: BLE001 - bad kwargs: the real build reports them in its own words
        return None
    if not isinstance(probe, nn.Module):
        return None
    return sum(p.numel() for p in probe.parameters()) + sum(b.numel() for b in probe.buffers())


def check_zoo_size(name: str, kwargs: dict[str, Any]) -> None:
    """Refuse kwargs that would build `zoo:name` larger than MAX_ZOO_VALUES, before building it.

    Capping each size kwarg alone is not enough: the weights grow with products of them (a conv's
    in x out channels), so a digits_csnn of width 2048 holds 1.5 GB of weights. The count comes from
    the factory itself (`zoo_values`), so every zoo model is bounded the same way."""
    count = zoo_values(name, kwargs)
    if count is not None and count > MAX_ZOO_VALUES:
        raise BadInputError(f"zoo:{name} with kwargs {json.dumps(kwargs)[:200]} would hold {count:,} parameter and "
                            f"buffer values, more than the {MAX_ZOO_VALUES:,} a zoo model may have; use smaller sizes")
