"""Small files in the genuine formats of the datasets ttsnn reads (written from the format specs)."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

AEDAT31_HEADER = b"#!AER-DAT3.1\r\n#Format: RAW\r\n#Source 1: DVS128\r\n#Start-Time: 2017-01-01\r\n#!END-HEADER\r\n"
AEDAT2_HEADER = b"#!AER-DAT2.0\r\n# This is a raw AE data file - do not edit\r\n# Data format is int32 address, int32 timestamp\r\n"


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of an unsigned-byte array (magic 0 0 0x08 ndim, big-endian dims, values)."""
    array = np.asarray(array, dtype=np.uint8)
    return bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape) + array.tobytes()


def write_idx_set(folder: Path, n_train: int = 12, n_test: int = 6, gz: bool = False, side: int = 28,
                  seed: int = 0) -> Path:
    """The four MNIST files (labels cycle 0..9, images random) in `folder`."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, side, side), dtype=np.uint8)
        labels = np.arange(n, dtype=np.uint8) % 10
        for kind, array, dims in (("images", images, 3), ("labels", labels, 1)):
            name = f"{prefix}-{kind}-idx{dims}-ubyte"
            content = idx_bytes(array)
            if gz:
                (folder / (name + ".gz")).write_bytes(gzip.compress(content))
            else:
                (folder / name).write_bytes(content)
    return folder


def nmnist_bytes(events: list[tuple[int, int, int, int]]) -> bytes:
    """(x, y, p, t) tuples in the 5-byte N-MNIST format (y == 240: an overflow marker)."""
    out = bytearray()
    for x, y, p, t in events:
        out += bytes([x, y, (p << 7) | ((t >> 16) & 0x7F), (t >> 8) & 0xFF, t & 0xFF])
    return bytes(out)


def write_nmnist(root: Path, per_digit: int = 2, digits: int = 3) -> Path:
    for split in ("Train", "Test"):
        for d in range(digits):
            folder = root / split / str(d)
            folder.mkdir(parents=True)
            for i in range(per_digit):
                events = [((d * 7 + k) % 34, (i * 5 + k) % 34, k % 2, 100 * k) for k in range(30)]
                (folder / f"{i:05d}.bin").write_bytes(nmnist_bytes(events))
    return root


def polarity_packet(events: list[tuple[int, int, int, int]], overflow: int = 0, valid: bool = True) -> bytes:
    """An AEDAT 3.1 polarity packet of (x, y, p, t) events."""
    body = b"".join(struct.pack("<Ii", (x << 17) | (y << 2) | (p << 1) | int(valid), t) for x, y, p, t in events)
    return struct.pack("<hhiiiiii", 1, 1, 8, 4, overflow, len(events), len(events), len(events)) + body


def special_packet(count: int = 2) -> bytes:
    """An AEDAT 3.1 packet of special events (type 0), which readers skip."""
    body = b"".join(struct.pack("<Ii", 1 << 1, 5 * k) for k in range(count))
    return struct.pack("<hhiiiiii", 0, 1, 8, 4, 0, count, count, count) + body


def aedat31_bytes(events: list[tuple[int, int, int, int]], per_packet: int = 16) -> bytes:
    packets = [polarity_packet(events[i : i + per_packet]) for i in range(0, len(events), per_packet)]
    return AEDAT31_HEADER + special_packet() + b"".join(packets)


def write_dvsgesture(root: Path) -> Path:
    """Three recordings (two train, one test), each with three gestures of 40 events."""
    folder = root / "DvsGesture"
    folder.mkdir(parents=True)
    names = ["user01_fluorescent", "user02_lab", "user24_led"]
    for n, name in enumerate(names):
        events, rows = [], ["class,startTime_usec,endTime_usec"]
        for g in range(3):
            start = 1_000_000 * (g + 1)
            events += [((7 * k + n) % 128, (3 * k + g) % 128, k % 2, start + 1000 * k) for k in range(40)]
            rows.append(f"{(n * 3 + g) % 11 + 1},{start},{start + 40_000}")
        (folder / f"{name}.aedat").write_bytes(aedat31_bytes(events))
        (folder / f"{name}_labels.csv").write_text("\n".join(rows) + "\n")
    (folder / "trials_to_train.txt").write_text("user01_fluorescent.aedat\nuser02_lab.aedat\n")
    (folder / "trials_to_test.txt").write_text("user24_led.aedat\n")
    return folder


def aedat2_bytes(events: list[tuple[int, int, int, int]]) -> bytes:
    """AEDAT 2.0 DVS128 events: big-endian address (p bit 0, x bits 1..7, y bits 8..14), timestamp."""
    return AEDAT2_HEADER + b"".join(struct.pack(">II", (y << 8) | (x << 1) | p, t) for x, y, p, t in events)


def write_cifar10dvs(root: Path, classes: int = 2, per_class: int = 10) -> Path:
    for c in range(classes):
        folder = root / f"class{c}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            events = [((c * 11 + k) % 128, (i + k) % 128, k % 2, 10 * k) for k in range(25)]
            (folder / f"cifar10_class{c}_{i}.aedat").write_bytes(aedat2_bytes(events))
    return root


def write_shd(path: Path, samples: list[tuple[list[float], list[int], int]]) -> Path:
    """An SHD HDF5 file: spikes/times (vlen float), spikes/units (vlen uint16), labels (uint16)."""
    import h5py

    with h5py.File(path, "w") as handle:
        spikes = handle.create_group("spikes")
        times = spikes.create_dataset("times", (len(samples),), dtype=h5py.vlen_dtype(np.float32))
        units = spikes.create_dataset("units", (len(samples),), dtype=h5py.vlen_dtype(np.uint16))
        for i, (t, u, _) in enumerate(samples):
            times[i] = np.asarray(t, dtype=np.float32)
            units[i] = np.asarray(u, dtype=np.uint16)
        handle.create_dataset("labels", data=np.asarray([s[2] for s in samples], dtype=np.uint16))
    return path


def shd_samples(n: int, seed: int = 0) -> list[tuple[list[float], list[int], int]]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        count = int(rng.integers(5, 40))
        out.append((sorted(rng.uniform(0, 1.2, count).tolist()), rng.integers(0, 700, count).tolist(), i % 20))
    return out


def write_shd_set(root: Path, n_train: int = 6, n_test: int = 3) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    write_shd(root / "shd_train.h5", shd_samples(n_train, 0))
    write_shd(root / "shd_test.h5", shd_samples(n_test, 1))
    return root
