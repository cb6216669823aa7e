"""`--data MODULE:FACTORY`: the user's own datasets, from a callable they name.

The factory is code, so it is trusted exactly like `--arch MODULE:FACTORY` (`storage.trust`): it is
imported only when the user named it (on the command line, in a recipe they run, in the Python API),
through `--trust-arch`, or `TTSNN_TRUSTED_ARCH`; a spec a bundle merely records is refused otherwise
(`data.chosen_data`). The same importer walks only through what the module itself defines, with the
current folder last on the import path.

The factory is called with the keyword arguments it accepts among `timesteps` (the run's T) and
`augment` (True for the training split's loader), and returns

- `(train, test)` or `(train, test, num_classes)`, or a dict with keys `train`, `test` and optionally
  `num_classes`, or a `DataBundle`;
- each split a map-style dataset (`__len__`, `__getitem__`) of `(x, y)`: x a tensor (or numpy array)
  `[C, H, W]` (a static frame, encoded over T like `digits`) or `[T, C, H, W]` (a sequence: event data),
  y a class number. Every item must have the first item's shape.

The number of classes is, in order: the one returned, the train split's `num_classes` attribute, the
length of its `classes` attribute (torchvision's convention), the largest of its `targets` plus one, or
else the largest label of both splits plus one (every item is read once: return `num_classes` to skip
that). Items are checked as they are read; whatever the user's code raises is bad input naming it.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ttsnn_cli.data import DataBundle
from ttsnn_cli.errors import BadInputError, abbreviate
from ttsnn_cli.storage.guard import call_user_code
from ttsnn_cli.storage.trust import _import_factory

MAX_CLASSES = 1 << 20


def _as_tensor(value: Any, what: str) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biuf":
            raise BadInputError(f"{what} is a numpy array of {value.dtype}, not numbers")
        value = torch.from_numpy(np.ascontiguousarray(value))
    if not isinstance(value, torch.Tensor):
        raise BadInputError(f"{what} is a {type(value).__name__}, not a tensor")
    if value.is_complex():
        raise BadInputError(f"{what} is complex, not real numbers")
    return value


def _as_label(value: Any, what: str) -> int:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1 or value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
            raise BadInputError(f"{what} must be one whole class number, got a {value.dtype} tensor of shape {list(value.shape)}")
        value = value.item()
    elif isinstance(value, np.ndarray):
        if value.size != 1 or value.dtype.kind not in "iu":
            raise BadInputError(f"{what} must be one whole class number, got a {value.dtype} array of shape {list(value.shape)}")
        value = value.item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise BadInputError(f"{what} must be a whole class number, got {abbreviate(repr(value), 60)}")
    return int(value)


class UserDataset(Dataset):
    """A user's split, each item checked: x float32 of the expected shape, y a class in range."""

    def __init__(self, inner: Any, spec: str, split: str, shape: tuple[int, ...], num_classes: int | None) -> None:
        self.inner, self.spec, self.split, self.shape, self.num_classes = inner, spec, split, shape, num_classes
        self.length = _length(inner, spec, split)

    def __len__(self) -> int:
        return self.length

    def raw(self, index: int) -> tuple[torch.Tensor, int]:
        where = f"--data {self.spec}: {self.split}[{index}]"
        item = call_user_code(lambda: self.inner[index], f"{where} failed")
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise BadInputError(f"{where} must be a pair (x, y), got {type(item).__name__}")
        x = _as_tensor(item[0], f"{where} x")
        if tuple(x.shape) != self.shape:
            raise BadInputError(f"{where} x has shape {list(x.shape)}, the first item {list(self.shape)}: "
                                "every item must have the same shape")
        if x.is_floating_point() and not bool(torch.isfinite(x).all()):
            raise BadInputError(f"{where} x holds NaN or infinite values")
        return x, _as_label(item[1], f"{where} y")

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.raw(index)
        if self.num_classes is not None and not 0 <= y < self.num_classes:
            raise BadInputError(f"--data {self.spec}: {self.split}[{index}] has label {y}, outside 0..{self.num_classes - 1}")
        return x.to(torch.float32), torch.tensor(y, dtype=torch.long)


def _length(inner: Any, spec: str, split: str) -> int:
    if not (hasattr(inner, "__getitem__") and hasattr(inner, "__len__")):
        raise BadInputError(f"--data {spec}: the {split} split is a {type(inner).__name__}, "
                            "not a dataset with __len__ and __getitem__")
    length = call_user_code(lambda: len(inner), f"--data {spec}: len({split}) failed")
    return int(length)


def _call_factory(factory: Any, spec: str, timesteps: int, augment: bool) -> Any:
    offered = {"timesteps": timesteps, "augment": augment}
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        parameters = {}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        kwargs = offered
    else:
        kwargs = {k: v for k, v in offered.items() if k in parameters}
    return call_user_code(lambda: factory(**kwargs), f"--data {spec} failed")


def _unpack(result: Any, spec: str) -> tuple[Any, Any, Any]:
    if isinstance(result, DataBundle):
        return result.train, result.test, result.num_classes
    if isinstance(result, Mapping):
        if "train" not in result or "test" not in result:
            raise BadInputError(f"--data {spec} returned a dict without 'train' and 'test'")
        return result["train"], result["test"], result.get("num_classes")
    if isinstance(result, (tuple, list)) and len(result) in (2, 3):
        return result[0], result[1], result[2] if len(result) == 3 else None
    raise BadInputError(f"--data {spec} returned {type(result).__name__}; it must return (train, test) "
                        "datasets, (train, test, num_classes) or a dict with train and test")


def _count_classes(train: Any, given: Any, spec: str, splits: list[UserDataset]) -> int:
    if given is None:
        given = getattr(train, "num_classes", None)
    if given is None and isinstance(getattr(train, "classes", None), (list, tuple)):
        given = len(train.classes)
    if given is None and getattr(train, "targets", None) is not None:
        try:
            targets = torch.as_tensor(np.asarray(train.targets))
            given = int(targets.max()) + 1 if targets.numel() and targets.dtype in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8) else None
        except (TypeError, ValueError, RuntimeError):
            given = None
    if given is None:
        given = max(split.raw(i)[1] for split in splits for i in range(len(split))) + 1
    if isinstance(given, bool) or not isinstance(given, (int, np.integer)) or not 1 <= int(given) <= MAX_CLASSES:
        raise BadInputError(f"--data {spec}: the number of classes must be a whole number 1..{MAX_CLASSES}, "
                            f"got {abbreviate(repr(given), 60)}")
    return int(given)


def load_user_data(spec: str, timesteps: int, augment: bool) -> DataBundle:
    """The bundle a trusted `module:factory` spec's factory returns, checked (see the module docstring)."""
    factory = _import_factory(spec, option="--data")
    train_raw, test_raw, given = _unpack(_call_factory(factory, spec, timesteps, augment), spec)
    for split, raw in (("train", train_raw), ("test", test_raw)):
        if _length(raw, spec, split) < 1:
            raise BadInputError(f"--data {spec}: the {split} split is empty")
    first = call_user_code(lambda: train_raw[0], f"--data {spec}: train[0] failed")
    if not isinstance(first, (tuple, list)) or len(first) != 2:
        raise BadInputError(f"--data {spec}: train[0] must be a pair (x, y), got {type(first).__name__}")
    shape = tuple(_as_tensor(first[0], f"--data {spec}: train[0] x").shape)
    if len(shape) not in (3, 4) or min(shape) < 1:
        raise BadInputError(f"--data {spec}: x must be [C, H, W] (a frame) or [T, C, H, W] (a sequence), "
                            f"got shape {list(shape)}")
    splits = [UserDataset(train_raw, spec, "train", shape, None), UserDataset(test_raw, spec, "test", shape, None)]
    num_classes = _count_classes(train_raw, given, spec, splits)
    for split in splits:
        split.num_classes = num_classes
    temporal = len(shape) == 4
    return DataBundle(spec, splits[0], splits[1], tuple(shape[-3:]), num_classes,  # type: ignore[arg-type]
                      temporal=temporal, timesteps=shape[0] if temporal else None)
