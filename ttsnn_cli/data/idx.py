"""`mnist:DIR` and `fashion-mnist:DIR`: the standard IDX files, gzipped or not.

DIR holds `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte` and
`t10k-labels-idx1-ubyte` (each may end in `.gz`; the `train-images.idx3-ubyte` spelling is accepted
too), directly or where torchvision keeps them (`DIR/MNIST/raw`, `DIR/FashionMNIST/raw`, `DIR/raw`).

IDX format (LeCun's MNIST page): a 4-byte magic number, two zero bytes then the element type (0x08:
unsigned byte) then the number of dimensions; one big-endian uint32 per dimension; then the values,
row-major. Images are N x H x W unsigned bytes, labels N unsigned bytes 0..9. A file whose header
promises more (or fewer) values than it holds is refused before anything is allocated, and a gzip
file is inflated only up to `MAX_IDX_BYTES`.

Items: static frames [1, H, W] (28 x 28 for both sets), pixel values scaled to [0, 1] (as `digits`:
direct or rate encoding), and labels 0..9; the official 60,000 / 10,000 split. No augmentation.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ttsnn_cli.data import DataBundle, register_dataset
from ttsnn_cli.errors import BadInputError
from ttsnn_cli.storage.read import open_regular_file, read_bytes

#: largest IDX file accepted, inflated (MNIST's training images are 47 MB)
MAX_IDX_BYTES = 1 << 30
MAX_SIDE = 4096
CLASSES = 10
_TYPES = {0x08: "unsigned byte", 0x09: "signed byte", 0x0B: "short", 0x0C: "int", 0x0D: "float", 0x0E: "double"}
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
FOLDERS = {"mnist": ("MNIST/raw", "raw"), "fashion-mnist": ("FashionMNIST/raw", "fashion-mnist", "raw")}


def inflate(content: bytes, path: Path) -> bytes:
    """A gzip file's content (every member), refused past MAX_IDX_BYTES before it is all inflated."""
    out = bytearray()
    rest = content
    while rest:
        engine = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            out += engine.decompress(rest, MAX_IDX_BYTES + 1 - len(out))
            while engine.unconsumed_tail and len(out) <= MAX_IDX_BYTES:
                out += engine.decompress(engine.unconsumed_tail, MAX_IDX_BYTES + 1 - len(out))
        except zlib.error as error:
            raise BadInputError(f"{path}: not a valid gzip file ({error})") from None
        if len(out) > MAX_IDX_BYTES:
            raise BadInputError(f"{path}: inflates to more than {MAX_IDX_BYTES} bytes, too large for an IDX file")
        if not engine.eof:
            raise BadInputError(f"{path}: the gzip stream is truncated")
        rest = engine.unused_data
    return bytes(out)


def read_idx(path: Path) -> np.ndarray:
    """The array an IDX file holds (unsigned bytes only, as MNIST's files); BadInputError if malformed."""
    path = open_regular_file(path, "IDX file")
    if path.stat().st_size > MAX_IDX_BYTES:
        raise BadInputError(f"{path}: {path.stat().st_size} bytes, over the {MAX_IDX_BYTES} an IDX file may have")
    content = read_bytes(path, "IDX file")
    if content[:2] == b"\x1f\x8b":
        content = inflate(content, path)
    if len(content) < 4 or content[:2] != b"\x00\x00":
        raise BadInputError(f"{path}: not an IDX file (the magic number must start with two zero bytes)")
    kind, ndim = content[2], content[3]
    if kind != 0x08:
        raise BadInputError(f"{path}: IDX element type {_TYPES.get(kind, hex(kind))}, expected unsigned byte (0x08)")
    if not 1 <= ndim <= 3:
        raise BadInputError(f"{path}: IDX with {ndim} dimensions; MNIST files have 1 (labels) or 3 (images)")
    header = 4 + 4 * ndim
    if len(content) < header:
        raise BadInputError(f"{path}: IDX header cut short ({len(content)} bytes)")
    dims = [int.from_bytes(content[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = int(np.prod(dims, dtype=object))
    if expected != len(content) - header:
        raise BadInputError(f"{path}: the header promises {'x'.join(map(str, dims))} = {expected} values "
                            f"but the file holds {len(content) - header}")
    return np.frombuffer(content, dtype=np.uint8, offset=header).reshape(dims)


def _find_file(folder: Path, stem: str) -> Path | None:
    dotted = stem.replace("-idx", ".idx")
    for name in (stem, stem + ".gz", dotted, dotted + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def find_folder(root: Path, name: str) -> Path:
    for candidate in [root] + [root / sub for sub in FOLDERS[name]]:
        if _find_file(candidate, FILES["train"][0]) is not None:
            return candidate
    raise BadInputError(f"no {name} IDX files under {root} (looked for {FILES['train'][0]}[.gz] there and in "
                        f"{', '.join(FOLDERS[name])})")


def read_split(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N, H, W], labels int64 [N]) of one split, checked against each other."""
    paths = []
    for stem in FILES[split]:
        path = _find_file(folder, stem)
        if path is None:
            raise BadInputError(f"{folder} lacks {stem} (or {stem}.gz)")
        paths.append(path)
    images, labels = read_idx(paths[0]), read_idx(paths[1])
    if images.ndim != 3 or images.shape[0] < 1 or not (1 <= images.shape[1] <= MAX_SIDE and 1 <= images.shape[2] <= MAX_SIDE):
        raise BadInputError(f"{paths[0]}: images must be N x H x W with N >= 1 and sides 1..{MAX_SIDE}, "
                            f"got {list(images.shape)}")
    if labels.ndim != 1:
        raise BadInputError(f"{paths[1]}: labels must be one dimension, got {list(labels.shape)}")
    if len(labels) != len(images):
        raise BadInputError(f"{paths[0].name} holds {len(images)} images but {paths[1].name} {len(labels)} labels")
    if labels.max() >= CLASSES:
        raise BadInputError(f"{paths[1]}: label {int(labels.max())} outside 0..{CLASSES - 1}")
    return images, labels.astype(np.int64)


class IdxImages(Dataset):
    """Frames [1, H, W] in [0, 1] (kept as bytes, scaled per item) and labels."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.images = torch.from_numpy(images.copy())
        self.labels = torch.from_numpy(labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index].unsqueeze(0).float() / 255.0, self.labels[index]


def _load(name: str, argument: str | None) -> DataBundle:
    root = Path(argument or ".").expanduser()
    if not root.is_dir():
        raise BadInputError(f"{name} folder not found: {root}")
    folder = find_folder(root, name)
    train, test = read_split(folder, "train"), read_split(folder, "test")
    if train[0].shape[1:] != test[0].shape[1:]:
        raise BadInputError(f"{name} under {folder}: training images are {'x'.join(map(str, train[0].shape[1:]))}, "
                            f"test images {'x'.join(map(str, test[0].shape[1:]))}")
    height, width = train[0].shape[1:]
    return DataBundle(name, IdxImages(*train), IdxImages(*test), (1, int(height), int(width)), CLASSES)


@register_dataset("mnist", needs_dir=True)
def load_mnist(argument: str | None, timesteps: int, augment: bool) -> DataBundle:
    return _load("mnist", argument)


@register_dataset("fashion-mnist", needs_dir=True)
def load_fashion_mnist(argument: str | None, timesteps: int, augment: bool) -> DataBundle:
    return _load("fashion-mnist", argument)
