"""Property-based fuzzing of the dataset readers added for own data: "a result or a typed error".

Readers: IDX (MNIST / Fashion-MNIST, plain and gzipped), N-MNIST `.bin`, AEDAT 3.1 (DVS128 Gesture)
and 2.0 (CIFAR10-DVS), gesture label CSVs, SHD HDF5 contents, and what a `--data module:factory` may
return. The byte-level readers get mutated genuine files and random bytes. SHD is fuzzed at the level
of its contents (shapes, types, values written with h5py), not of HDF5 bytes: the HDF5 library's own
parser is outside ttsnn, and a corrupt HDF5 file is tested as one case (test_data_readers.py).

Same budget as tests/storage/test_fuzz_readers.py: a few examples per reader by default, FUZZ_EXAMPLES
each under `pytest -m fuzz`.
"""

from __future__ import annotations

import gzip
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fabricated_data import aedat2_bytes, aedat31_bytes, idx_bytes, nmnist_bytes
from hypothesis import strategies as st

from ttsnn_cli.data import DataBundle
from ttsnn_cli.data.aedat import decode_aedat2, decode_aedat31
from ttsnn_cli.data.dvsgesture import SENSOR as DVS_SENSOR
from ttsnn_cli.data.dvsgesture import read_labels
from ttsnn_cli.data.events import bin_events, check_in_sensor
from ttsnn_cli.data.idx import read_idx
from ttsnn_cli.data.nmnist import SENSOR as NMNIST_SENSOR
from ttsnn_cli.data.nmnist import decode_bin
from ttsnn_cli.errors import TtsnnError
from tests.fuzzing import mutated, property_tests

SMALL = 15
DELETE = 8  # the longest deletion a mutation makes (these genuine files are a few dozen bytes)
_FOLDER = Path(tempfile.mkdtemp(prefix="ttsnn-fuzz-data-"))


def _file(name: str, content: bytes) -> Path:
    path = _FOLDER / name
    path.write_bytes(content)
    return path


_IDX = idx_bytes(np.arange(2 * 3 * 4).reshape(2, 3, 4))
_EVENTS = [(k % 34, (3 * k) % 34, k % 2, 50 * k) for k in range(12)]
_DVS_EVENTS = [(k * 9 % 128, k * 5 % 128, k % 2, 100 * k) for k in range(12)]


def _check_frames(x: np.ndarray, y: np.ndarray, p: np.ndarray, t: np.ndarray, sensor: tuple[int, int]) -> None:
    assert len(x) == len(y) == len(p) == len(t)
    try:
        check_in_sensor(x, y, *sensor, "fuzz")
    except TtsnnError:
        return
    frames = bin_events(x, y, p, t, 3, sensor)
    assert frames.shape == (3, 2, *sensor) and np.isfinite(frames).all() and frames.sum() == len(t)


def prop_idx(content: bytes) -> None:
    for data in (content, gzip.compress(content)):
        try:
            array = read_idx(_file("f.idx", data))
        except TtsnnError:
            continue
        assert array.dtype == np.uint8 and 1 <= array.ndim <= 3


def prop_nmnist(content: bytes) -> None:
    try:
        events = decode_bin(content, "fuzz")
    except TtsnnError:
        return
    _check_frames(*events, NMNIST_SENSOR)


def prop_aedat31(content: bytes) -> None:
    try:
        events = decode_aedat31(content, "fuzz")
    except TtsnnError:
        return
    _check_frames(*events, DVS_SENSOR)


def prop_aedat2(content: bytes) -> None:
    try:
        events = decode_aedat2(content, "fuzz")
    except TtsnnError:
        return
    _check_frames(*events, DVS_SENSOR)


def prop_labels(text: str) -> None:
    try:
        rows = read_labels(_file("labels.csv", text.encode("utf-8", "surrogatepass")))
    except TtsnnError:
        return
    assert rows and all(0 <= label < 11 and start <= end for label, start, end in rows)


def prop_shd(sample: tuple[Any, Any, Any]) -> None:
    import h5py

    from ttsnn_cli.data.shd import open_shd, read_sample, shd_frames

    times, units, labels = sample
    path = _FOLDER / "shd.h5"
    try:
        with h5py.File(path, "w") as handle:
            n = len(times)
            t = handle.create_dataset("spikes/times", (n,), dtype=h5py.vlen_dtype(np.float64))
            u = handle.create_dataset("spikes/units", (n,), dtype=h5py.vlen_dtype(np.int64))
            for i in range(n):
                t[i], u[i] = np.asarray(times[i], dtype=np.float64), np.asarray(units[i], dtype=np.int64)
            handle.create_dataset("labels", data=np.asarray(labels, dtype=np.int64))
    except (ValueError, TypeError, OverflowError):
        return  # hypothesis drew something h5py cannot even write
    try:
        found = open_shd(path)
    except TtsnnError:
        return
    assert len(found) == len(times)
    for i in range(len(found)):
        try:
            frames = shd_frames(*read_sample(path, i), 4)
        except TtsnnError:
            continue
        assert frames.shape == (4, 1, 1, 700) and torch.isfinite(frames).all()


_odd = (st.none() | st.integers(-3, 3) | st.floats() | st.text(max_size=4) | st.booleans()
        | st.builds(lambda s: torch.zeros(s), st.lists(st.integers(0, 3), max_size=5))
        | st.builds(lambda s: np.zeros(s), st.lists(st.integers(0, 3), max_size=5)))
_items = st.lists(st.tuples(_odd, _odd) | _odd, max_size=4)


def prop_user_returns(returned: Any) -> None:
    """Whatever a factory returns, the checked splits give float frames and labels, or one typed error."""
    from ttsnn_cli.data import user

    original = user._import_factory
    user._import_factory = lambda spec, option: (lambda: returned)
    try:
        try:
            data = user.load_user_data("fuzz:factory", 2, False)
        except TtsnnError:
            return
        assert isinstance(data, DataBundle) and data.num_classes >= 1
        for split in (data.train, data.test):
            for i in range(len(split)):
                try:
                    x, y = split[i]
                except TtsnnError:
                    continue
                assert x.dtype == torch.float32 and tuple(x.shape[-3:]) == data.input_shape
                assert 0 <= int(y) < data.num_classes
    finally:
        user._import_factory = original


PROPERTIES: dict[str, tuple[Callable[[Any], None], st.SearchStrategy[Any]]] = {
    "idx": (prop_idx, mutated(_IDX, DELETE) | st.binary(max_size=64)),
    "nmnist-bin": (prop_nmnist, mutated(nmnist_bytes(_EVENTS), DELETE) | st.binary(max_size=60)),
    "aedat31": (prop_aedat31, mutated(aedat31_bytes(_DVS_EVENTS, per_packet=5), DELETE) | st.binary(max_size=80)),
    "aedat2": (prop_aedat2, mutated(aedat2_bytes(_DVS_EVENTS), DELETE) | st.binary(max_size=80)),
    "gesture-labels": (prop_labels, st.text(max_size=80) | st.builds(
        lambda rows: "class,startTime_usec,endTime_usec\n" + "\n".join(",".join(map(str, r)) for r in rows),
        st.lists(st.tuples(st.integers(-2, 14), st.integers(-5, 2**70), st.integers(-5, 2**70)), max_size=4))),
    "shd-contents": (prop_shd, st.integers(0, 3).flatmap(lambda n: st.tuples(
        st.lists(st.lists(st.floats(-1, 3) | st.just(float("nan")), max_size=6), min_size=n, max_size=n),
        st.lists(st.lists(st.integers(-2, 720), max_size=6), min_size=n, max_size=n),
        st.lists(st.integers(-1, 22), min_size=n, max_size=n + 1)))),
    "user-factory": (prop_user_returns, st.tuples(_items, _items) | st.tuples(_items, _items, _odd)
                     | st.fixed_dictionaries({"train": _items, "test": _items}) | _odd),
}


globals().update(property_tests(PROPERTIES, SMALL, "data_"))
