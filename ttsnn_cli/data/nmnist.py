"""`nmnist:DIR`: N-MNIST event recordings (Orchard et al. 2015) binned into T frames [T, 2, 34, 34].

DIR holds the two extracted archives, `Train/<digit>/*.bin` and `Test/<digit>/*.bin` (or a folder
above them named `NMNIST` or `N-MNIST`, as tonic keeps them); the folder name is the label 0..9.

Event format (the dataset's own description; the same as N-Caltech101's): 5 bytes per event, byte0 =
x, byte1 = y, byte2 bit 7 = polarity, timestamp bits 22..0 = (byte2 & 0x7F) << 16 | byte3 << 8 |
byte4 microseconds. An event with y == 240 is a timestamp overflow marker: 2**13 is added to every
later timestamp and the marker is dropped. The sensor is 34 x 34 (the digits were saccaded across
it); an event outside it makes the file bad input.

Frames: T slices of equal event count in time order, counts per polarity, no resizing. Decoded
frames are cached (bounded: `events.FrameCache`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ttsnn_cli.data import DataBundle, register_dataset
from ttsnn_cli.data.events import FrameCache, bin_events, check_frame_size, check_in_sensor, find_folder, read_recording
from ttsnn_cli.errors import BadInputError

SENSOR = (34, 34)  # H, W
OVERFLOW_Y = 240
CLASSES = 10


def decode_bin(content: bytes, where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x, y, p, t) of a 5-byte-per-event recording, overflow markers applied and dropped."""
    if len(content) % 5:
        raise BadInputError(f"{where}: {len(content)} bytes is not a whole number of 5-byte events")
    raw = np.frombuffer(content, dtype=np.uint8).reshape(-1, 5)
    x, y = raw[:, 0].astype(np.int64), raw[:, 1].astype(np.int64)
    p = (raw[:, 2] >> 7).astype(np.int64)
    t = ((raw[:, 2].astype(np.int64) & 0x7F) << 16) | (raw[:, 3].astype(np.int64) << 8) | raw[:, 4]
    overflow = y == OVERFLOW_Y
    t = t + np.cumsum(overflow) * (1 << 13)
    keep = ~overflow
    return x[keep], y[keep], p[keep], t[keep]


def read_nmnist(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The events of one N-MNIST `.bin` file, checked to lie on the 34 x 34 sensor."""
    x, y, p, t = decode_bin(read_recording(path, "N-MNIST recording"), str(path))
    check_in_sensor(x, y, *SENSOR, str(path))
    return x, y, p, t


def nmnist_frames(path: Path, timesteps: int) -> torch.Tensor:
    return torch.from_numpy(bin_events(*read_nmnist(path), timesteps, SENSOR, by="count"))


class EventFiles(Dataset):
    """Items ([T, 2, H, W] float, label) from (file, label) pairs, decoded by `frames(path, T)`."""

    def __init__(self, samples: list[tuple[Path, int]], timesteps: int, frames, cache: FrameCache | None = None) -> None:
        self.samples = samples
        self.timesteps = timesteps
        self.frames = frames
        self.cache = cache if cache is not None else FrameCache()

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        path, label = self.samples[index]
        return self.cache.get((str(path), self.timesteps), lambda: self.frames(path, self.timesteps)), torch.tensor(label)


def _has_digits(folder: Path) -> bool:
    train = next((folder / n for n in ("Train", "train") if (folder / n).is_dir()), None)
    return train is not None and any(d.is_dir() and d.name.isdigit() for d in train.iterdir())


def split_samples(root: Path, split: str) -> list[tuple[Path, int]]:
    folder = next((root / n for n in (split, split.lower()) if (root / n).is_dir()), None)
    if folder is None:
        raise BadInputError(f"N-MNIST under {root} lacks its {split} folder")
    samples = []
    for digit in sorted(d for d in folder.iterdir() if d.is_dir()):
        if not (digit.name.isdigit() and int(digit.name) < CLASSES):
            raise BadInputError(f"N-MNIST folder {digit} is not a digit 0..9")
        samples += [(f, int(digit.name)) for f in sorted(digit.glob("*.bin"))]
    if not samples:
        raise BadInputError(f"no N-MNIST recordings (*.bin) under {folder}")
    return samples


@register_dataset("nmnist", needs_dir=True)
def load_nmnist(argument: str | None, timesteps: int, augment: bool) -> DataBundle:
    root = Path(argument or ".").expanduser()
    root = find_folder(root, [root, root / "NMNIST", root / "N-MNIST"], _has_digits, "nmnist", "Train/<digit>/*.bin and Test/<digit>/*.bin")
    check_frame_size(timesteps, 2, *SENSOR, "nmnist")
    train, test = split_samples(root, "Train"), split_samples(root, "Test")
    cache = FrameCache()  # one bound for both splits
    return DataBundle("nmnist", EventFiles(train, timesteps, nmnist_frames, cache),
                      EventFiles(test, timesteps, nmnist_frames, cache),
                      (2, *SENSOR), CLASSES, temporal=True, timesteps=timesteps)
