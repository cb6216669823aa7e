"""Datasets named on the command line by a SPEC: `digits`, `cifar10:DIR`, `cifar100:DIR`, `ncaltech101:DIR`.

Adding a dataset touches one place: decorate a loader with `@register_dataset(name)` in a module of this
package (listed in `_MODULES`). A loader takes (argument after the colon or None, timesteps, train
augmentation on/off) and returns a `DataBundle`: train and test datasets yielding (x, label), where x
is either a static frame [C, H, W] (the engine encodes it over T: `encode`) or already a sequence
[T, C, H, W] (`temporal=True`, event data). Nothing is downloaded; a missing or malformed dataset
raises `BadInputError` with one line saying what was looked for.
May import: `errors`, `storage` (guarded reads), `spiking` (`compat` runs one sample through a model).
Never compress, training or anything above.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch.utils.data import Dataset

from ttsnn_cli.errors import BadInputError

Encoding = Literal["direct", "rate"]
ENCODINGS: tuple[str, ...] = ("direct", "rate")
_MODULES = ("ttsnn_cli.data.digits", "ttsnn_cli.data.cifar", "ttsnn_cli.data.ncaltech")


@dataclass
class DataBundle:
    """A dataset's splits and what a model needs to know about them."""

    name: str
    train: Dataset
    test: Dataset
    input_shape: tuple[int, int, int]  # C, H, W of one timestep
    num_classes: int
    temporal: bool = False  # items are already [T, C, H, W]
    timesteps: int | None = None  # the T baked into temporal items


Loader = Callable[[str | None, int, bool], DataBundle]
_REGISTRY: dict[str, tuple[Loader, bool]] = {}


def register_dataset(name: str, needs_dir: bool) -> Callable[[Loader], Loader]:
    def decorate(loader: Loader) -> Loader:
        _REGISTRY[name] = (loader, needs_dir)
        return loader

    return decorate


def dataset_names() -> list[str]:
    for module in _MODULES:
        importlib.import_module(module)
    return sorted(_REGISTRY)


def load_data(spec: str, timesteps: int = 4, augment: bool = True) -> DataBundle:
    """Resolve a data SPEC (see the module docstring) into its train/test splits."""
    names = dataset_names()
    name, _, argument = spec.partition(":")
    if name not in _REGISTRY:
        raise BadInputError(f"unknown dataset {name!r} in --data {spec!r}; known: {', '.join(names)} (e.g. cifar10:DIR)")
    loader, needs_dir = _REGISTRY[name]
    if needs_dir and not argument:
        raise BadInputError(f"dataset {name!r} needs a folder: --data {name}:DIR")
    if not needs_dir and argument:
        raise BadInputError(f"dataset {name!r} takes no folder, got --data {spec!r}")
    return loader(argument or None, timesteps, augment)


def encode(x: torch.Tensor, timesteps: int, encoding: Encoding = "direct", temporal: bool = False) -> torch.Tensor:
    """A batch from a DataLoader as the model's input sequence [T, B, C, H, W].

    Temporal batches [B, T, C, H, W] are transposed; static batches [B, C, H, W] are repeated at each
    step (direct encoding, the paper's) or turned into Bernoulli spikes with probability equal to the
    pixel value clamped to [0, 1] (`snntorch.spikegen.rate`, rate encoding).
    """
    if temporal:
        return x.transpose(0, 1).contiguous()
    if encoding == "direct":
        return x.unsqueeze(0).expand(timesteps, *x.shape).contiguous()
    if encoding == "rate":
        from snntorch import spikegen

        return spikegen.rate(x.clamp(0, 1), num_steps=timesteps)
    raise BadInputError(f"unknown encoding {encoding!r}; choose one of {', '.join(ENCODINGS)}")
