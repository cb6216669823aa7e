"""`dvsgesture:DIR` and `cifar10dvs:DIR`: DVS128 recordings binned into T frames [T, 2, 128, 128].

`dvsgesture:DIR`: IBM's DVS128 Gesture as distributed (`DvsGesture.tar.gz` extracted): DIR (or
`DIR/DvsGesture`) holds `userNN_<lighting>.aedat` (AEDAT 3.1, `aedat.py`), beside each its
`userNN_<lighting>_labels.csv` (header `class,startTime_usec,endTime_usec`, then one row per gesture,
class 1..11), and `trials_to_train.txt` / `trials_to_test.txt` naming the recordings of each split.
Every labelled row is one sample: the events with start <= t < end, label class - 1 (11 classes).
A recording is decoded once for all its gestures; the frames are cached (bounded, `events.FrameCache`).

`cifar10dvs:DIR`: CIFAR10-DVS (Li et al. 2017): DIR (or `DIR/CIFAR10DVS`) holds one folder per class
(`airplane`, ..., `truck`, sorted names give the labels) of AEDAT 2.0 recordings `*.aedat`. Split as
N-Caltech101's: per class, files in sorted order, the first 90 % train and the rest test.

Frames: T slices of equal event count in time order, counts per polarity, 128 x 128, no resizing. An
event off the 128 x 128 sensor makes the file bad input.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ttsnn_cli.data import DataBundle, register_dataset
from ttsnn_cli.data.aedat import decode_aedat2, decode_aedat31
from ttsnn_cli.data.events import FrameCache, bin_events, check_frame_size, check_in_sensor, find_folder, read_recording
from ttsnn_cli.data.nmnist import EventFiles
from ttsnn_cli.errors import BadInputError
from ttsnn_cli.storage.read import read_bytes

SENSOR = (128, 128)
GESTURES = 11
MAX_LABEL_ROWS = 10_000
TRAIN_FRACTION = 0.9


def read_labels(path: Path) -> list[tuple[int, int, int]]:
    """(label 0..10, start, end) per row of a gesture labels CSV."""
    try:
        text = read_bytes(path, "gesture labels").decode("utf-8")
    except UnicodeDecodeError:
        raise BadInputError(f"{path}: not a text file") from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines or lines[0].replace(" ", "").lower() != "class,starttime_usec,endtime_usec":
        raise BadInputError(f"{path}: the first line must be class,startTime_usec,endTime_usec")
    if len(lines) > MAX_LABEL_ROWS:
        raise BadInputError(f"{path}: more than {MAX_LABEL_ROWS} gestures")
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        cells = [c.strip() for c in line.split(",")]
        if len(cells) != 3 or not all(c.isdigit() and len(c) < 19 for c in cells):
            raise BadInputError(f"{path} line {number}: expected three whole numbers, got {line[:60]!r}")
        label, start, end = (int(c) for c in cells)
        if not 1 <= label <= GESTURES:
            raise BadInputError(f"{path} line {number}: class {label} outside 1..{GESTURES}")
        if end < start:
            raise BadInputError(f"{path} line {number}: ends ({end}) before it starts ({start})")
        rows.append((label - 1, start, end))
    if not rows:
        raise BadInputError(f"{path}: no gestures listed")
    return rows


def read_gesture_events(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    x, y, p, t = decode_aedat31(read_recording(path, "DVS128 Gesture recording"), str(path))
    check_in_sensor(x, y, *SENSOR, str(path))
    return x, y, p, t


class GestureSegments(Dataset):
    """Items ([T, 2, 128, 128], label): (recording, row of its labels CSV) pairs."""

    def __init__(self, samples: list[tuple[Path, int, int, int, int]], timesteps: int, cache: FrameCache) -> None:
        self.samples = samples  # (aedat, row, label, start, end)
        self.timesteps = timesteps
        self.cache = cache
        self.by_file: dict[Path, list[tuple[Path, int, int, int, int]]] = {}
        for sample in samples:
            self.by_file.setdefault(sample[0], []).append(sample)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        path, row, label, _, _ = self.samples[index]
        key = (str(path), row, self.timesteps)
        frames = self.cache.get(key, lambda: self._decode(path)[row])
        return frames, torch.tensor(label)

    def _decode(self, path: Path) -> dict[int, torch.Tensor]:
        """Frames of every gesture of one recording (all into the cache; returned by row)."""
        x, y, p, t = read_gesture_events(path)
        out = {}
        for _, row, _, start, end in self.by_file[path]:
            keep = (t >= start) & (t < end)
            out[row] = torch.from_numpy(bin_events(x[keep], y[keep], p[keep], t[keep], self.timesteps, SENSOR))
            self.cache.put((str(path), row, self.timesteps), out[row])
        return out


def _trials(folder: Path, split: str) -> list[tuple[Path, int, int, int, int]]:
    listing = folder / f"trials_to_{split}.txt"
    try:
        names = [n.strip() for n in read_bytes(listing, "trial list").decode("utf-8").splitlines() if n.strip()]
    except UnicodeDecodeError:
        raise BadInputError(f"{listing}: not a text file") from None
    samples = []
    for name in names:
        if "/" in name or "\\" in name or not name.endswith(".aedat"):
            raise BadInputError(f"{listing}: {name[:60]!r} is not a recording name like user01_fluorescent.aedat")
        path = folder / name
        if not path.is_file():
            raise BadInputError(f"{listing} names {name}, which is not in {folder}")
        rows = read_labels(folder / (name[: -len(".aedat")] + "_labels.csv"))
        samples += [(path, row, label, start, end) for row, (label, start, end) in enumerate(rows)]
    if not samples:
        raise BadInputError(f"{listing} names no recordings")
    return samples


@register_dataset("dvsgesture", needs_dir=True)
def load_dvsgesture(argument: str | None, timesteps: int, augment: bool) -> DataBundle:
    root = Path(argument or ".").expanduser()
    folder = find_folder(root, [root, root / "DvsGesture", root / "DVSGesture"],
                         lambda f: (f / "trials_to_train.txt").is_file(), "dvsgesture",
                         "trials_to_train.txt, trials_to_test.txt and userNN_*.aedat with their _labels.csv")
    check_frame_size(timesteps, 2, *SENSOR, "dvsgesture")
    cache = FrameCache()
    return DataBundle("dvsgesture", GestureSegments(_trials(folder, "train"), timesteps, cache),
                      GestureSegments(_trials(folder, "test"), timesteps, cache), (2, *SENSOR), GESTURES,
                      temporal=True, timesteps=timesteps)


# ------------------------------------------------------------------------------------ CIFAR10-DVS
def cifar10dvs_frames(path: Path, timesteps: int) -> torch.Tensor:
    x, y, p, t = decode_aedat2(read_recording(path, "CIFAR10-DVS recording"), str(path))
    check_in_sensor(x, y, *SENSOR, str(path))
    return torch.from_numpy(bin_events(x, y, p, t, timesteps, SENSOR))


def _class_folders(folder: Path) -> list[Path]:
    return sorted(d for d in folder.iterdir() if d.is_dir() and any(d.glob("*.aedat")))


@register_dataset("cifar10dvs", needs_dir=True)
def load_cifar10dvs(argument: str | None, timesteps: int, augment: bool) -> DataBundle:
    root = Path(argument or ".").expanduser()
    folder = find_folder(root, [root, root / "CIFAR10DVS", root / "CIFAR10-DVS"], lambda f: bool(_class_folders(f)),
                         "cifar10dvs", "<class>/*.aedat")
    check_frame_size(timesteps, 2, *SENSOR, "cifar10dvs")
    classes = _class_folders(folder)
    train, test = [], []
    for label, class_folder in enumerate(classes):
        files = sorted(class_folder.glob("*.aedat"))
        cut = max(1, math.floor(TRAIN_FRACTION * len(files)))
        train += [(f, label) for f in files[:cut]]
        test += [(f, label) for f in files[cut:]]
    cache = FrameCache()
    return DataBundle("cifar10dvs", EventFiles(train, timesteps, cifar10dvs_frames, cache),
                      EventFiles(test, timesteps, cifar10dvs_frames, cache), (2, *SENSOR), len(classes),
                      temporal=True, timesteps=timesteps)
