"""`cifar10:DIR` / `cifar100:DIR`: the standard "python version" pickle batches read from disk.

DIR is laid out as torchvision does (`DIR/cifar-10-batches-py/data_batch_1..5, test_batch`;
`DIR/cifar-100-python/train, test`) or is the batches folder itself. Each file is a pickled dict with
`data` (uint8 N x 3072, row-major R, G, B planes of 32x32) and `labels` (CIFAR-10) or `fine_labels`
(CIFAR-100). The pickles are read with an unpickler that admits only numpy arrays and builtins, so a
doctored file cannot run code, and their contents are type-checked before any conversion, so shared
nested lists (a few kilobytes of pickle, billions of items) cannot make numpy allocate gigabytes.

Frames are normalised per channel; training frames get the paper's augmentation, random crop 32 with
4 pixels of zero padding plus horizontal flip, done in torch with the global torch RNG (reproducible
with the engine's seed, restored on resume).
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ttsnn_cli.data import DataBundle, ResidentSplit, register_dataset
from ttsnn_cli.errors import BadInputError, first_line
from ttsnn_cli.storage.read import read_bytes

MEAN = {"cifar10": (0.4914, 0.4822, 0.4465), "cifar100": (0.5071, 0.4865, 0.4409)}
STD = {"cifar10": (0.2470, 0.2435, 0.2616), "cifar100": (0.2673, 0.2564, 0.2762)}
LAYOUT = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "labels", 10),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "fine_labels", 100),
}
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):  # type: ignore[override]
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def read_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N, 3, 32, 32], labels int64 [N]) of one pickle batch; BadInputError if malformed."""
    content = read_bytes(path, "CIFAR batch")
    try:
        raw = _SafeUnpickler(io.BytesIO(content), encoding="bytes").load()
        batch = {(k.decode() if isinstance(k, bytes) else k): v for k, v in raw.items()}
        data, labels = batch["data"], batch[label_key]
    except Exception as error:  # noqa: BLE001 - whatever a doctored pickle raises, the file is bad
        raise BadInputError(f"{path}: not a CIFAR python batch ({type(error).__name__}: {first_line(error, 120)})") from None
    data, labels = _checked_arrays(path, data, labels, label_key)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) == 0:
        raise BadInputError(f"{path}: data must be N x 3072 pixels with N >= 1, got shape {list(data.shape)}")
    if data.dtype.kind not in "ui" or data.min() < 0 or data.max() > 255:
        raise BadInputError(f"{path}: pixels must be whole numbers 0..255 (dtype {data.dtype}, "
                            f"range {data.min()}..{data.max()})" if data.dtype.kind in "uif" else
                            f"{path}: pixels must be whole numbers 0..255, got dtype {data.dtype}")
    if labels.ndim != 1 or labels.dtype.kind not in "ui":
        raise BadInputError(f"{path}: {label_key} must be a list of whole numbers, got dtype {labels.dtype}")
    if len(data) != len(labels):
        raise BadInputError(f"{path}: {len(data)} images but {len(labels)} labels")
    return data.astype(np.uint8).reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _checked_arrays(path: Path, data: object, labels: object, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """`data` and `labels` as arrays, their types checked before any conversion.

    A pickle may share one list many times over (its memo), so a few kilobytes can describe a nested
    list of billions of items; `np.asarray` of it would build them all before any shape check. So
    `data` must already be a numeric ndarray (as every real batch holds it: its bytes are the file's),
    and `labels` a flat list of ints or a 1-D ndarray, checked item by item (each item is in the file)."""
    if not isinstance(data, np.ndarray) or data.dtype.kind not in "uif":
        got = f"an ndarray of dtype {data.dtype}" if isinstance(data, np.ndarray) else f"a {type(data).__name__}"
        raise BadInputError(f"{path}: data must be a numpy array of pixels N x 3072, got {got}")
    if isinstance(labels, list):
        bad = next((i for i, v in enumerate(labels) if type(v) is not int), None)
        if bad is not None:
            raise BadInputError(f"{path}: {label_key} must be a list of whole numbers, item {bad} is a "
                                f"{type(labels[bad]).__name__}")
        if labels and max(abs(v) for v in labels) >= 1 << 62:
            raise BadInputError(f"{path}: {label_key} holds a number too large for a class index")
        labels = np.asarray(labels, dtype=np.int64)
    elif not isinstance(labels, np.ndarray):
        raise BadInputError(f"{path}: {label_key} must be a list of whole numbers, got a {type(labels).__name__}")
    return data, labels


def find_batches(root: Path, name: str) -> Path:
    folder_name, train_files, _, _, _ = LAYOUT[name]
    for candidate in (root / folder_name, root):
        if (candidate / train_files[0]).is_file():
            return candidate
    raise BadInputError(f"no {name} batches under {root} (looked for {folder_name}/{train_files[0]} and {train_files[0]})")


class CifarDataset(Dataset):
    """Normalised frames [3, 32, 32] and labels; `augment` adds crop-with-padding and flip.

    The pixels are kept as the file's bytes (a quarter of float32's memory) with a per-channel table
    of what each byte normalises to; the float frames are made once, when an item is first read one
    by one (a DataLoader). A trainer that makes batches on its device reads the bytes, the table and
    the augmentation instead (`resident_split`) and never builds them."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, name: str, augment: bool) -> None:
        mean = torch.tensor(MEAN[name]).view(3, 1)
        std = torch.tensor(STD[name]).view(3, 1)
        self.codes = torch.from_numpy(np.ascontiguousarray(images, dtype=np.uint8))
        # the same float operations per value as normalising every pixel, so table[c, v] is exactly that pixel's value
        self.table = (torch.arange(256).float() / 255.0 - mean) / std
        self.labels = torch.from_numpy(labels)
        self.augment = augment
        self._frames: torch.Tensor | None = None

    @property
    def images(self) -> torch.Tensor:
        """Every normalised frame [N, 3, 32, 32] float32, made at first use."""
        if self._frames is None:
            channel = torch.arange(3, dtype=torch.int32).view(1, 3, 1, 1) * 256
            table = self.table.view(-1)
            self._frames = torch.cat([table.index_select(0, (part.to(torch.int32) + channel).view(-1)).view(part.shape)
                                      for part in self.codes.split(4096)])  # in parts: no index the size of the split
        return self._frames

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.images[index]
        if self.augment:
            image = random_crop_flip(image)
        return image, self.labels[index]

    def resident_split(self) -> ResidentSplit:
        """The bytes, their table and the augmentation (`data.ResidentSplit`)."""
        return ResidentSplit(self.codes, self.labels, self.table, 4 if self.augment else None)


def random_crop_flip(image: torch.Tensor, padding: int = 4) -> torch.Tensor:
    """The paper's augmentation on one [C, H, W] frame: random crop with zero padding, random h-flip.

    Its draws (two integers, then one uniform float, from the global torch RNG) are part of the
    contract `data.ResidentSplit.crop_flip` states: batches made on a device draw the same numbers."""
    _, height, width = image.shape
    padded = F.pad(image, (padding, padding, padding, padding))
    top, left = (int(v) for v in torch.randint(0, 2 * padding + 1, (2,)))
    image = padded[:, top : top + height, left : left + width]
    if bool(torch.rand(()) < 0.5):
        image = image.flip(-1)
    return image


def _load(name: str, argument: str | None, augment: bool) -> DataBundle:
    root = Path(argument or ".").expanduser()
    if not root.is_dir():
        raise BadInputError(f"{name} folder not found: {root}")
    folder = find_batches(root, name)
    _, train_files, test_files, label_key, classes = LAYOUT[name]
    parts = {}
    for split, files in (("train", train_files), ("test", test_files)):
        missing = [f for f in files if not (folder / f).is_file()]
        if missing:
            raise BadInputError(f"{name} under {folder} lacks {', '.join(missing)}")
        loaded = [read_batch(folder / f, label_key) for f in files]
        parts[split] = (np.concatenate([a for a, _ in loaded]), np.concatenate([b for _, b in loaded]))
    for split, (_, labels) in parts.items():
        if len(labels) and (labels.min() < 0 or labels.max() >= classes):
            raise BadInputError(f"{name} {split} labels outside 0..{classes - 1} under {folder}")
    return DataBundle(
        name,
        CifarDataset(*parts["train"], name, augment),
        CifarDataset(*parts["test"], name, False),
        (3, 32, 32),
        classes,
    )


@register_dataset("cifar10", needs_dir=True)
def load_cifar10(argument: str | None, timesteps: int, augment: bool) -> DataBundle:
    return _load("cifar10", argument, augment)


@register_dataset("cifar100", needs_dir=True)
def load_cifar100(argument: str | None, timesteps: int, augment: bool) -> DataBundle:
    return _load("cifar100", argument, augment)
