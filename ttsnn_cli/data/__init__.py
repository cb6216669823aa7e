"""Datasets named on the command line by a SPEC.

Built in: `digits`, `cifar10:DIR`, `cifar100:DIR`, `ncaltech101:DIR`, `mnist:DIR`, `fashion-mnist:DIR`
(IDX files), `nmnist:DIR`, `dvsgesture:DIR`, `cifar10dvs:DIR` (event recordings binned into T frames),
`shd:DIR` (spikes binned into T frames); and `MODULE:FACTORY`, the user's own datasets from a callable
(`user`), trusted like `--arch MODULE:FACTORY`. A name registered here wins over a module of the same
name: name such a module by its package path. docs/data.md describes each.

Adding a dataset touches one place: decorate a loader with `@register_dataset(name)` in a module of this
package (listed in `_MODULES`). A loader takes (argument after the colon or None, timesteps, train
augmentation on/off) and returns a `DataBundle`: train and test datasets yielding (x, label), where x
is either a static frame [C, H, W] (the engine encodes it over T: `encode`) or already a sequence
[T, C, H, W] (`temporal=True`, event data). Nothing is downloaded; a missing or malformed dataset
raises `BadInputError` with one line saying what was looked for.
May import: `errors`, `storage` (guarded reads, the trust boundary), `spiking` (`compat` runs one
sample through a model). Never compress, training or anything above.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch.utils.data import Dataset

from ttsnn_cli.errors import BadInputError

Encoding = Literal["direct", "rate"]
ENCODINGS: tuple[str, ...] = ("direct", "rate")
_MODULES = ("ttsnn_cli.data.digits", "ttsnn_cli.data.cifar", "ttsnn_cli.data.ncaltech", "ttsnn_cli.data.idx",
            "ttsnn_cli.data.nmnist", "ttsnn_cli.data.dvsgesture", "ttsnn_cli.data.shd")
_DOTTED = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"
_USER_SPEC = re.compile(rf"^{_DOTTED}:{_DOTTED}$")
#: what --data accepts, for help texts and messages
SPEC_HELP = ("digits, mnist:DIR, fashion-mnist:DIR, cifar10:DIR, cifar100:DIR, ncaltech101:DIR, nmnist:DIR, "
             "dvsgesture:DIR, cifar10dvs:DIR, shd:DIR or MODULE:FACTORY")


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


@dataclass(frozen=True)
class ResidentSplit:
    """A split as whole tensors, so a trainer can keep it on its device and make every batch there.

    Iterating a dataset sample by sample (a DataLoader) costs a Python call, a few small tensor
    operations and a collate per sample on the CPU, then a host-to-device copy per batch: on a GPU
    that is a large share of an epoch. A dataset able to say what its items are, as arrays indexed
    by sample, returns this (`resident_split`); the trainer (`train.batches`) then gathers a batch by
    index, decodes and augments it on its device, giving exactly the items the dataset would have
    given, drawn from the same random numbers.

    `frames` [N, ...] holds the samples as stored: either the frames themselves (any dtype; an item
    is `frames[i]`), or, with `table`, one byte per value (uint8 [N, C, H, W]: a quarter of float32's
    size), an item being `table[c, frames[i, c]]` per channel (the table holds what the dataset
    computes from each byte, so the decoding reproduces its frames exactly on any device).
    `crop_flip` (training split only): the dataset augments each item as `cifar.random_crop_flip`
    does with this padding: random crop with zero padding, then a random horizontal flip, drawing per
    sample from the global torch RNG two integers in 0..2*padding (top, left), then one uniform float
    (flip when below 0.5)."""

    frames: torch.Tensor
    labels: torch.Tensor
    table: torch.Tensor | None = None
    crop_flip: int | None = None

    @property
    def nbytes(self) -> int:
        """What keeping the split resident costs."""
        tensors = [self.frames, self.labels] + ([self.table] if self.table is not None else [])
        return sum(t.numel() * t.element_size() for t in tensors)


def resident_split(dataset: Dataset) -> ResidentSplit | None:
    """The dataset as whole tensors (`ResidentSplit`) when it can say so exactly, else None.

    Known: a dataset with a `resident_split()` method (the built-in readers that can), a plain
    `TensorDataset` of (frames, labels), and a `Subset` of either (its samples gathered once).
    Anything else (subclasses that may override `__getitem__`, the user's own datasets, event data
    binned on the fly) is None: its items come only from its own `__getitem__`."""
    from torch.utils.data import Subset, TensorDataset

    if type(dataset) is Subset:
        base = resident_split(dataset.dataset)
        if base is None:
            return None
        index = torch.as_tensor(list(dataset.indices), dtype=torch.long)
        if len(index) and (int(index.min()) < -len(base.labels) or int(index.max()) >= len(base.labels)):
            return None  # an index the dataset itself would refuse: let it say so
        return ResidentSplit(base.frames[index], base.labels[index], base.table, base.crop_flip)
    if type(dataset) is TensorDataset:
        tensors = dataset.tensors
        if len(tensors) == 2 and tensors[0].dim() >= 1 and tensors[1].dim() >= 1:
            return ResidentSplit(tensors[0], tensors[1])
        return None
    method = getattr(dataset, "resident_split", None)
    return method() if callable(method) else None


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


def is_user_spec(spec: str) -> bool:
    """Does `spec` name the user's code (`module:factory`) rather than a built-in dataset?"""
    dataset_names()
    return spec.partition(":")[0] not in _REGISTRY and bool(_USER_SPEC.match(spec))


def check_data_spec(spec: str, where: str = "--data") -> str:
    """`spec` if it is well formed (a known dataset with or without its folder as it needs, or
    `module:factory`), without reading or importing anything; a one-line BadInputError otherwise."""
    if not isinstance(spec, str) or not spec:
        raise BadInputError(f"{where} must be a data spec ({SPEC_HELP}), got {spec!r}")
    names = dataset_names()
    name, _, argument = spec.partition(":")
    if name in _REGISTRY:
        needs_dir = _REGISTRY[name][1]
        if needs_dir and not argument:
            raise BadInputError(f"dataset {name!r} needs a folder: {where} {name}:DIR")
        if not needs_dir and argument:
            raise BadInputError(f"dataset {name!r} takes no folder, got {where} {spec!r}")
        return spec
    if _USER_SPEC.match(spec):
        return spec
    raise BadInputError(f"unknown dataset {name!r} in {where} {spec!r}; known: {', '.join(names)}, "
                        "or MODULE:FACTORY for your own (e.g. cifar10:DIR, mypkg.data:build)")


def chosen_data(given: str | None, recorded: str | None, source: str = "the model") -> str | None:
    """The data spec a job uses: the one the user gave, else the one `source` records. A recorded
    `module:factory` is code: it is used only if trusted (the same spec named, `--trust-arch` or
    TTSNN_TRUSTED_ARCH, as for a recorded architecture: `storage.trust.is_trusted`)."""
    if given:
        return given
    if recorded and is_user_spec(recorded):
        from ttsnn_cli.storage.trust import TRUST_ENV, is_trusted

        if not is_trusted(recorded):
            raise BadInputError(f"{source} records data {recorded}, which is code: ttsnn imports it only if you trust it. "
                                f"Pass --data {recorded} (or --trust-arch), or add it to {TRUST_ENV}")
    return recorded


def load_data(spec: str, timesteps: int = 4, augment: bool = True) -> DataBundle:
    """Resolve a data SPEC (see the module docstring) into its train/test splits.

    A `module:factory` spec is imported and called: the caller passes only a spec the user named
    (or one `chosen_data` let through)."""
    check_data_spec(spec)
    name, _, argument = spec.partition(":")
    if name not in _REGISTRY:
        # imported by name, as the loaders are: `user` imports this module (DataBundle)
        return importlib.import_module("ttsnn_cli.data.user").load_user_data(spec, timesteps, augment)
    loader, _ = _REGISTRY[name]
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
