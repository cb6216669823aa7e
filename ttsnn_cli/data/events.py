"""What the event-camera and spike readers share: bounded reads, binning events into T frames, a cache.

An event recording is four arrays of equal length: x, y (pixel), p (polarity 0/1) and t (time, any
unit, not necessarily sorted). `bin_events` turns one into T frames of event counts per polarity,
[T, 2, H, W], slicing the recording either into T slices of equal event count (`by="count"`, as
spikingjelly's `split_by="number"`, used for N-MNIST, DVS128 Gesture and CIFAR10-DVS) or into T
slices of equal duration over the recording's span (`by="time"`, used for SHD spikes).

Memory is bounded before anything is allocated: a recording file larger than `MAX_EVENT_FILE_BYTES`
is refused unread, and so is a frame stack above `MAX_FRAME_ELEMENTS` values (a huge --timesteps on a
large sensor). Decoded frames are kept in a `FrameCache` bounded in bytes (`TTSNN_DATA_CACHE_MB`,
default 1024), so an epoch over 70,000 N-MNIST recordings does not keep them all.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ttsnn_cli.errors import BadInputError
from ttsnn_cli.host.memory import megabytes_from_env
from ttsnn_cli.storage.read import open_regular_file, read_bytes

#: largest single recording file read (bytes): the biggest DVS128 Gesture trial is far below it
MAX_EVENT_FILE_BYTES = 1 << 30
#: most values in one sample's frame stack T x C x H x W (2**28 float32 values = 1 GiB)
MAX_FRAME_ELEMENTS = 1 << 28
CACHE_ENV = "TTSNN_DATA_CACHE_MB"
DEFAULT_CACHE_MB = 1024


def read_recording(path: Path, what: str) -> bytes:
    """The bytes of one recording, refusing a file over MAX_EVENT_FILE_BYTES before reading it."""
    path = open_regular_file(path, what)
    size = path.stat().st_size
    if size > MAX_EVENT_FILE_BYTES:
        raise BadInputError(f"{what} {path} is {size} bytes, over the {MAX_EVENT_FILE_BYTES} bytes one recording may have")
    return read_bytes(path, what)


def check_frame_size(timesteps: int, channels: int, height: int, width: int, what: str) -> None:
    """Refuse a frame stack too large to allocate (before allocating it)."""
    if timesteps < 1:
        raise BadInputError(f"{what}: timesteps must be >= 1, got {timesteps}")
    if timesteps * channels * height * width > MAX_FRAME_ELEMENTS:
        raise BadInputError(f"{what}: {timesteps} frames of {channels}x{height}x{width} exceed "
                            f"{MAX_FRAME_ELEMENTS} values per sample; use fewer timesteps")


def check_in_sensor(x: np.ndarray, y: np.ndarray, height: int, width: int, where: str) -> None:
    """BadInputError naming the first event outside the sensor."""
    outside = (x < 0) | (x >= width) | (y < 0) | (y >= height)
    if outside.any():
        i = int(np.argmax(outside))
        raise BadInputError(f"{where}: event {i} at x={int(x[i])}, y={int(y[i])} lies outside the {width}x{height} sensor")


def slice_index(t: np.ndarray, timesteps: int, by: str) -> tuple[np.ndarray, np.ndarray]:
    """(order, slice of each event in that order): events sorted by time (stable), then cut into
    `timesteps` slices of equal count (`count`) or of equal duration over [min t, max t] (`time`)."""
    count = len(t)
    order = np.argsort(t, kind="stable")
    if by == "count":
        return order, (np.arange(count, dtype=np.int64) * timesteps) // max(count, 1)
    ts = t[order].astype(np.float64)
    start, span = ts[0], ts[-1] - ts[0]
    if span <= 0:
        return order, np.zeros(count, dtype=np.int64)
    return order, np.minimum(((ts - start) / span * timesteps).astype(np.int64), timesteps - 1)


def bin_events(x: np.ndarray, y: np.ndarray, p: np.ndarray, t: np.ndarray, timesteps: int,
               sensor: tuple[int, int], by: str = "count") -> np.ndarray:
    """[T, 2, H, W] float32 event counts per polarity; coordinates must lie on the sensor (H, W)."""
    height, width = sensor
    check_frame_size(timesteps, 2, height, width, "event frames")
    if not len(t):
        return np.zeros((timesteps, 2, height, width), dtype=np.float32)
    check_in_sensor(x, y, height, width, "event frames")  # the readers check first, naming the file
    if ((p != 0) & (p != 1)).any():
        raise BadInputError("event frames: polarity must be 0 or 1")
    order, step = slice_index(t, timesteps, by)
    flat = ((step * 2 + p[order].astype(np.int64)) * height + y[order].astype(np.int64)) * width + x[order].astype(np.int64)
    counts = np.bincount(flat, minlength=timesteps * 2 * height * width)
    return counts.astype(np.float32).reshape(timesteps, 2, height, width)


def cache_bytes() -> int:
    """The frame cache's bound in bytes (TTSNN_DATA_CACHE_MB, default 1024; 0 turns it off)."""
    chosen = megabytes_from_env(CACHE_ENV)
    return DEFAULT_CACHE_MB << 20 if chosen is None else chosen


class FrameCache:
    """Least-recently-used tensors, at most `limit` bytes in all (a tensor above the limit is not kept)."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit = cache_bytes() if limit is None else limit
        self._items: OrderedDict[object, torch.Tensor] = OrderedDict()
        self._bytes = 0

    def get(self, key: object, make: Callable[[], torch.Tensor]) -> torch.Tensor:
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        value = make()
        self.put(key, value)
        return value

    def put(self, key: object, value: torch.Tensor) -> None:
        size = value.element_size() * value.nelement()
        if size > self.limit or key in self._items:
            return
        while self._items and self._bytes + size > self.limit:
            _, old = self._items.popitem(last=False)
            self._bytes -= old.element_size() * old.nelement()
        self._items[key] = value
        self._bytes += size

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)


def find_folder(root: Path, candidates: list[Path], accept: Callable[[Path], bool], what: str, expected: str) -> Path:
    """The first of `candidates` that is a folder `accept`s; a one-line BadInputError naming `expected`."""
    if not root.is_dir():
        raise BadInputError(f"{what} folder not found: {root}")
    for candidate in candidates:
        if candidate.is_dir() and accept(candidate):
            return candidate
    raise BadInputError(f"no {what} data under {root} (expected {expected})")
