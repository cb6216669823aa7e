"""`shd:DIR`: the Spiking Heidelberg Digits (Cramer et al. 2020) binned into T frames [T, 1, 1, 700].

DIR (or `DIR/SHD`) holds `shd_train.h5` and `shd_test.h5`, gunzipped as downloaded. Each HDF5 file
(read with h5py, a base dependency) has `spikes/times` (one variable-length float array per sample:
spike times in seconds), `spikes/units` (one variable-length integer array per sample: the cochlear
channel 0..699 of each spike) and `labels` (one integer 0..19 per sample: 10 digits in English and
German). A sample's spikes are cut into T slices of equal duration over its span (first to last
spike) and counted per channel: the 700 channels lie along the width, so an item is [T, 1, 1, 700]
(a Linear network flattens it; a Conv2d with kernel (1, k) convolves along the cochlea).

Files are checked when the dataset is opened (structure, types, sample counts, labels) and each
sample when read (equal lengths, finite non-negative times, channels in range); anything else is one
BadInputError. Samples are read lazily and their frames cached (bounded, `events.FrameCache`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ttsnn_cli.data import DataBundle, register_dataset
from ttsnn_cli.data.events import FrameCache, check_frame_size, find_folder, slice_index
from ttsnn_cli.errors import BadInputError, first_line
from ttsnn_cli.storage.read import open_regular_file

CHANNELS = 700
CLASSES = 20
#: most spikes one sample may hold (SHD's longest has about 15,000)
MAX_SPIKES = 1 << 24
_H5_ERRORS = (OSError, KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError)


def _h5py() -> Any:
    try:
        import h5py
    except ImportError:  # pragma: no cover - a base dependency
        raise BadInputError("shd:DIR needs the h5py package: pip install h5py") from None
    return h5py


def _is_vlen(h5py: Any, dataset: Any) -> bool:
    return isinstance(dataset, h5py.Dataset) and dataset.ndim == 1 and h5py.check_vlen_dtype(dataset.dtype) is not None


def open_shd(path: Path) -> np.ndarray:
    """The labels of one SHD file after checking its structure; BadInputError naming what is wrong."""
    h5py = _h5py()
    path = open_regular_file(path, "SHD file")
    try:
        with h5py.File(path, "r") as handle:
            labels, times, units = handle.get("labels"), handle.get("spikes/times"), handle.get("spikes/units")
            if not isinstance(labels, h5py.Dataset) or labels.ndim != 1 or labels.dtype.kind not in "ui":
                raise BadInputError(f"{path}: needs a one-dimensional integer dataset 'labels'")
            for name, dataset in (("spikes/times", times), ("spikes/units", units)):
                if not _is_vlen(h5py, dataset):
                    raise BadInputError(f"{path}: needs '{name}', one variable-length array per sample")
                if len(dataset) != len(labels):
                    raise BadInputError(f"{path}: {len(labels)} labels but {len(dataset)} entries in '{name}'")
            values = np.asarray(labels[()], dtype=np.int64)
    except BadInputError:
        raise
    except _H5_ERRORS as error:
        raise BadInputError(f"{path}: not a readable SHD HDF5 file ({type(error).__name__}: {first_line(error, 120)})") from None
    if len(values) == 0:
        raise BadInputError(f"{path}: holds no samples")
    if values.min() < 0 or values.max() >= CLASSES:
        raise BadInputError(f"{path}: label {int(values.max() if values.max() >= CLASSES else values.min())} "
                            f"outside 0..{CLASSES - 1}")
    return values


def read_sample(path: Path, index: int) -> tuple[np.ndarray, np.ndarray]:
    """(times in seconds, channels) of sample `index`, checked."""
    h5py = _h5py()
    try:
        with h5py.File(path, "r") as handle:
            times, units = handle["spikes/times"][index], handle["spikes/units"][index]
            times, units = np.asarray(times), np.asarray(units)
    except _H5_ERRORS as error:
        raise BadInputError(f"{path}: cannot read sample {index} ({type(error).__name__}: {first_line(error, 120)})") from None
    where = f"{path} sample {index}"
    if times.ndim != 1 or units.ndim != 1 or len(times) != len(units):
        raise BadInputError(f"{where}: {times.size} spike times but {units.size} channels")
    if len(times) > MAX_SPIKES:
        raise BadInputError(f"{where}: {len(times)} spikes, over the {MAX_SPIKES} a sample may have")
    if times.dtype.kind not in "uif" or units.dtype.kind not in "ui":
        raise BadInputError(f"{where}: times must be numbers and channels whole numbers")
    times = times.astype(np.float64)
    if not np.isfinite(times).all() or (times < 0).any():
        raise BadInputError(f"{where}: spike times must be finite and >= 0")
    units = units.astype(np.int64)
    if len(units) and (units.min() < 0 or units.max() >= CHANNELS):
        raise BadInputError(f"{where}: channel {int(units.max() if units.max() >= CHANNELS else units.min())} "
                            f"outside 0..{CHANNELS - 1}")
    return times, units


def shd_frames(times: np.ndarray, units: np.ndarray, timesteps: int) -> torch.Tensor:
    """[T, 1, 1, 700] spike counts: T slices of equal duration over the sample's span."""
    check_frame_size(timesteps, 1, 1, CHANNELS, "shd")
    frames = np.zeros((timesteps, 1, 1, CHANNELS), dtype=np.float32)
    if len(times):
        order, step = slice_index(times, timesteps, "time")
        np.add.at(frames, (step, 0, 0, units[order]), 1.0)
    return torch.from_numpy(frames)


class SpikeSamples(Dataset):
    def __init__(self, path: Path, labels: np.ndarray, timesteps: int, cache: FrameCache) -> None:
        self.path, self.labels, self.timesteps, self.cache = path, labels, timesteps, cache

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        frames = self.cache.get((str(self.path), index, self.timesteps),
                                lambda: shd_frames(*read_sample(self.path, index), self.timesteps))
        return frames, torch.tensor(int(self.labels[index]))


def _has_files(folder: Path) -> bool:
    return (folder / "shd_train.h5").is_file() or (folder / "shd_train.h5.gz").is_file()


@register_dataset("shd", needs_dir=True)
def load_shd(argument: str | None, timesteps: int, augment: bool) -> DataBundle:
    root = Path(argument or ".").expanduser()
    folder = find_folder(root, [root, root / "SHD", root / "shd"], _has_files, "shd", "shd_train.h5 and shd_test.h5")
    check_frame_size(timesteps, 1, 1, CHANNELS, "shd")
    cache = FrameCache()
    splits = []
    for split in ("train", "test"):
        path = folder / f"shd_{split}.h5"
        if not path.is_file():
            hint = f" (gunzip {path.name}.gz first)" if (folder / f"{path.name}.gz").is_file() else ""
            raise BadInputError(f"shd under {folder} lacks {path.name}{hint}")
        splits.append(SpikeSamples(path, open_shd(path), timesteps, cache))
    return DataBundle("shd", splits[0], splits[1], (1, 1, CHANNELS), CLASSES, temporal=True, timesteps=timesteps)
