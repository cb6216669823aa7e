"""`ncaltech101:DIR`: N-Caltech101 event recordings, 5-byte `.bin` events binned into frames.

DIR holds `Caltech101/<class>/*.bin` (or is a folder above one named `NCALTECH101` holding that).
Event format (ecosystem.md): byte0 = x, byte1 = y, byte2 bit 7 = polarity, timestamp bits 22..0 =
(byte2 & 0x7F) << 16 | byte3 << 8 | byte4 (microseconds). An event with y == 240 is a timestamp
overflow marker: 2**13 is added to every later timestamp, and the marker itself is dropped.

Frames (the TT-SNN paper): each recording's events are split into T slices of equal event count (as
spikingjelly's `split_by="number"`), counted per polarity on the 240x180 sensor, and resized to 48x48
(area interpolation): items [T, 2, 48, 48]. Split: per class, files in sorted order, the first 90 %
train and the rest test (reproducible, unlike the reference code's directory order). Frames are
decoded lazily and cached in memory. A recording of more than MAX_EVENTS events is refused from its
size before it is read, and decoding works in chunks of compact types.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ttsnn_cli.data import DataBundle, register_dataset
from ttsnn_cli.data.events import check_frame_size
from ttsnn_cli.errors import BadInputError
from ttsnn_cli.storage.read import open_regular_file, read_bytes

SENSOR = (180, 240)  # H, W (x < 240, y < 180)
SIZE = 48
TRAIN_FRACTION = 0.9
OVERFLOW_Y = 240
#: most events one recording may hold (40 MiB of file): N-Caltech101's recordings, 300 ms each, hold a
#: few hundred thousand; a file claiming more is refused before it is read
MAX_EVENTS = 1 << 23
#: events decoded at a time (the 5-byte records widen to int64 only chunk by chunk)
CHUNK_EVENTS = 1 << 20


def read_events(path: Path) -> dict[str, np.ndarray]:
    """Events of one `.bin` file: x, y, polarity (0/1), t (microseconds, overflow-corrected).

    Memory is bounded by MAX_EVENTS, checked from the file's size before it is read, and the decode
    runs in chunks of CHUNK_EVENTS with compact types (x, y, p uint8; t int64), so decoding costs
    about 11 bytes per event beside the file's 5 rather than six int64 columns of it."""
    path = open_regular_file(path, "event file")
    size = path.stat().st_size
    if size > MAX_EVENTS * 5:
        raise BadInputError(f"event file {path} holds {size // 5:,} events ({size:,} bytes), more than the "
                            f"{MAX_EVENTS:,} one N-Caltech101 recording may have")
    raw = np.frombuffer(read_bytes(path, "event file"), dtype=np.uint8)
    if raw.size % 5:
        raise BadInputError(f"{path}: {raw.size} bytes is not a whole number of 5-byte events")
    ev = raw.reshape(-1, 5)
    count = len(ev)
    x, y, polarity = ev[:, 0].copy(), ev[:, 1].copy(), ev[:, 2] >> 7
    t = np.empty(count, dtype=np.int64)
    for start in range(0, count, CHUNK_EVENTS):
        chunk = ev[start:start + CHUNK_EVENTS].astype(np.int64)
        t[start:start + len(chunk)] = ((chunk[:, 2] & 0x7F) << 16) | (chunk[:, 3] << 8) | chunk[:, 4]
    overflow = y == OVERFLOW_Y
    t += np.cumsum(overflow, dtype=np.int64) << 13
    keep = ~overflow
    return {"x": x[keep], "y": y[keep], "p": polarity[keep], "t": t[keep]}


def bin_events(events: dict[str, np.ndarray], timesteps: int) -> np.ndarray:
    """[T, 2, 180, 240] event counts: T slices of equal event count (time order), per polarity.
    A stack too large to allocate (a huge T) is refused first (`events.check_frame_size`)."""
    height, width = SENSOR
    check_frame_size(timesteps, 2, height, width, "N-Caltech101 frames")
    frames = np.zeros((timesteps, 2, height, width), dtype=np.float32)
    count = len(events["t"])
    if count:
        order = np.argsort(events["t"], kind="stable")
        x = np.clip(events["x"][order], 0, width - 1).astype(np.int64)
        y = np.clip(events["y"][order], 0, height - 1).astype(np.int64)
        p = events["p"][order].astype(np.int64)
        step = (np.arange(count) * timesteps) // count
        np.add.at(frames, (step, p, y, x), 1.0)
    return frames


def events_to_frames(events: dict[str, np.ndarray], timesteps: int, size: int = SIZE) -> torch.Tensor:
    """[T, 2, size, size]: `bin_events` resized by area averaging."""
    return F.interpolate(torch.from_numpy(bin_events(events, timesteps)), size=(size, size), mode="area")


class EventFrames(Dataset):
    """Items ([T, 2, 48, 48] float, label) from a list of (.bin path, label)."""

    def __init__(self, samples: list[tuple[Path, int]], timesteps: int) -> None:
        self.samples = samples
        self.timesteps = timesteps
        self._cache: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if index not in self._cache:
            self._cache[index] = events_to_frames(read_events(self.samples[index][0]), self.timesteps)
        return self._cache[index], torch.tensor(self.samples[index][1])


def find_root(root: Path) -> Path:
    for candidate in (root / "Caltech101", root / "NCALTECH101" / "Caltech101", root):
        if candidate.is_dir() and any(child.is_dir() and any(child.glob("*.bin")) for child in candidate.iterdir()):
            return candidate
    raise BadInputError(f"no N-Caltech101 events under {root} (expected Caltech101/<class>/*.bin)")


def split_files(classes_root: Path) -> tuple[list[tuple[Path, int]], list[tuple[Path, int]], list[str]]:
    """Sorted classes; per class sorted files, first 90 % (at least one) train, the rest test."""
    classes = sorted(d.name for d in classes_root.iterdir() if d.is_dir() and any(d.glob("*.bin")))
    train, test = [], []
    for label, name in enumerate(classes):
        files = sorted((classes_root / name).glob("*.bin"))
        cut = max(1, math.floor(TRAIN_FRACTION * len(files)))
        train += [(f, label) for f in files[:cut]]
        test += [(f, label) for f in files[cut:]]
    return train, test, classes


@register_dataset("ncaltech101", needs_dir=True)
def load_ncaltech101(argument: str | None, timesteps: int, augment: bool) -> DataBundle:
    root = Path(argument or ".").expanduser()
    if not root.is_dir():
        raise BadInputError(f"ncaltech101 folder not found: {root}")
    train, test, classes = split_files(find_root(root))
    return DataBundle(
        "ncaltech101",
        EventFrames(train, timesteps),
        EventFrames(test, timesteps),
        (2, SIZE, SIZE),
        len(classes),
        temporal=True,
        timesteps=timesteps,
    )
