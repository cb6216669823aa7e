"""mnist / fashion-mnist (IDX), nmnist, dvsgesture, cifar10dvs and shd on small fabricated files."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch
from fabricated_data import (
    aedat2_bytes,
    aedat31_bytes,
    idx_bytes,
    nmnist_bytes,
    polarity_packet,
    write_cifar10dvs,
    write_dvsgesture,
    write_idx_set,
    write_nmnist,
    write_shd,
    write_shd_set,
)

from ttsnn_cli.data import check_data_spec, load_data
from ttsnn_cli.data.aedat import decode_aedat2, decode_aedat31
from ttsnn_cli.data.events import FrameCache, bin_events, check_frame_size
from ttsnn_cli.data.idx import inflate, read_idx
from ttsnn_cli.data.nmnist import decode_bin
from ttsnn_cli.errors import BadInputError


# ----------------------------------------------------------------------------- IDX
@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_idx_sets(tmp_path, gz, name):
    write_idx_set(tmp_path, gz=gz)
    data = load_data(f"{name}:{tmp_path}")
    assert (len(data.train), len(data.test)) == (12, 6)
    assert data.input_shape == (1, 28, 28) and data.num_classes == 10 and not data.temporal
    x, y = data.train[3]
    raw = read_idx(tmp_path / ("train-images-idx3-ubyte" + (".gz" if gz else "")))
    assert x.dtype == torch.float32 and x.shape == (1, 28, 28)
    assert torch.allclose(x[0], torch.from_numpy(raw[3].copy()).float() / 255) and int(y) == 3


def test_idx_torchvision_layout_and_dotted_names(tmp_path):
    raw = write_idx_set(tmp_path / "FashionMNIST" / "raw")
    assert len(load_data(f"fashion-mnist:{tmp_path}").test) == 6
    for f in raw.iterdir():
        f.rename(f.with_name(f.name.replace("-idx", ".idx")))
    assert len(load_data(f"fashion-mnist:{tmp_path}").train) == 12
    write_idx_set(tmp_path / "m" / "MNIST" / "raw", side=8)
    assert load_data(f"mnist:{tmp_path / 'm'}").input_shape == (1, 8, 8)


@pytest.mark.parametrize("content,match", [
    (b"", "not an IDX"),
    (b"\x01\x00\x08\x01", "not an IDX"),
    (b"\x00\x00\x0d\x01\x00\x00\x00\x01abcd", "element type float"),
    (b"\x00\x00\x08\x05" + b"\x00" * 20, "5 dimensions"),
    (b"\x00\x00\x08\x03\x00\x00", "cut short"),
    (b"\x00\x00\x08\x01\xff\xff\xff\xff" + b"\x00" * 3, "promises 4294967295"),
    (b"\x00\x00\x08\x01\x00\x00\x00\x02\x00\x00\x00", "holds 3"),
    (gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x01\x05")[:-6], "truncated|gzip"),
    (b"\x1f\x8b\x08\x00garbage", "gzip"),
])
def test_idx_malformed(tmp_path, content, match):
    path = tmp_path / "f"
    path.write_bytes(content)
    with pytest.raises(BadInputError, match=match):
        read_idx(path)


def test_idx_gzip_bomb_is_refused_while_inflating(monkeypatch, tmp_path):
    monkeypatch.setattr("ttsnn_cli.data.idx.MAX_IDX_BYTES", 1000)
    path = tmp_path / "bomb"
    with pytest.raises(BadInputError, match="more than 1000 bytes"):
        inflate(gzip.compress(b"\x00" * 100_000), path)
    assert inflate(gzip.compress(b"ab") + gzip.compress(b"cd"), path) == b"abcd"  # several members


def test_idx_inconsistent_sets(tmp_path):
    write_idx_set(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(5)))
    with pytest.raises(BadInputError, match="6 images but t10k-labels-idx1-ubyte 5 labels"):
        load_data(f"mnist:{tmp_path}")
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.full(6, 10)))
    with pytest.raises(BadInputError, match="label 10 outside 0..9"):
        load_data(f"mnist:{tmp_path}")
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(BadInputError, match="lacks t10k-labels-idx1-ubyte"):
        load_data(f"mnist:{tmp_path}")
    write_idx_set(tmp_path / "other", side=10)
    (tmp_path / "other" / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros((6, 12, 12))))
    with pytest.raises(BadInputError, match="training images are 10x10, test images 12x12"):
        load_data(f"mnist:{tmp_path / 'other'}")
    with pytest.raises(BadInputError, match="no mnist IDX files"):
        load_data(f"mnist:{tmp_path / 'other' / '..' / '..'}")


# ----------------------------------------------------------------------------- events
def test_bin_events_by_count_and_time():
    x, y = np.array([0, 1, 2, 3]), np.array([0, 0, 1, 1])
    p, t = np.array([0, 1, 1, 0]), np.array([30, 0, 10, 1000])
    counts = bin_events(x, y, p, t, 2, (2, 4), by="count")  # time order: (1,0,1) (2,1,1) | (0,0,0) (3,1,0)
    assert counts[0, 1].sum() == 2 and counts[1, 0].sum() == 2 and counts[0, 1, 0, 1] == 1
    by_time = bin_events(x, y, p, t, 2, (2, 4), by="time")  # span 0..1000: three early, one late
    assert by_time[0].sum() == 3 and by_time[1, 0, 1, 3] == 1
    assert bin_events(x[:0], y[:0], p[:0], t[:0], 3, (2, 4)).sum() == 0
    with pytest.raises(BadInputError, match="exceed"):
        check_frame_size(10**6, 2, 128, 128, "x")


def test_frame_cache_is_bounded():
    cache = FrameCache(limit=3 * 400)
    for k in range(5):
        cache.get(k, lambda: torch.zeros(100))  # 400 bytes each
    assert len(cache) == 3 and 0 not in cache and 4 in cache
    calls = []
    cache.get(9, lambda: calls.append(1) or torch.zeros(1000))  # too large: returned, not kept
    assert calls and 9 not in cache and len(cache) == 3


def test_nmnist(tmp_path):
    write_nmnist(tmp_path / "NMNIST")
    data = load_data(f"nmnist:{tmp_path}", timesteps=3)
    assert (len(data.train), len(data.test), data.num_classes) == (6, 6, 10)
    assert data.temporal and data.timesteps == 3 and data.input_shape == (2, 34, 34)
    x, y = data.train[2]
    assert x.shape == (3, 2, 34, 34) and x.sum() == 30 and int(y) == 1
    assert data.train[2][0] is x  # cached


def test_nmnist_decoding_and_bad_files(tmp_path):
    x, y, p, t = decode_bin(nmnist_bytes([(1, 2, 1, 5), (0, 240, 0, 0), (3, 4, 0, 7)]), "f")
    assert x.tolist() == [1, 3] and y.tolist() == [2, 4] and p.tolist() == [1, 0] and t.tolist() == [5, 7 + 2**13]
    write_nmnist(tmp_path, per_digit=1, digits=1)
    bad = tmp_path / "Train" / "0" / "00000.bin"
    bad.write_bytes(nmnist_bytes([(40, 2, 1, 5)]))
    data = load_data(f"nmnist:{tmp_path}", timesteps=2)
    with pytest.raises(BadInputError, match="x=40, y=2 lies outside the 34x34 sensor"):
        data.train[0]
    bad.write_bytes(b"\x00" * 6)
    with pytest.raises(BadInputError, match="5-byte"):
        data.train[0]
    (tmp_path / "Test" / "x").mkdir()
    with pytest.raises(BadInputError, match="not a digit"):
        load_data(f"nmnist:{tmp_path}")
    with pytest.raises(BadInputError, match="no nmnist data"):
        load_data(f"nmnist:{tmp_path / 'Test'}")


def test_aedat31_decoding():
    events = [(127, 0, 1, 10), (0, 127, 0, 20), (5, 6, 1, 2**31 - 1)]
    x, y, p, t = decode_aedat31(aedat31_bytes(events, per_packet=2), "f")
    assert x.tolist() == [127, 0, 5] and y.tolist() == [0, 127, 6] and p.tolist() == [1, 0, 1]
    assert t.tolist() == [10, 20, 2**31 - 1]
    content = b"#!AER-DAT3.1\r\n#!END-HEADER\r\n" + polarity_packet([(1, 1, 0, 5)], overflow=2) + \
        polarity_packet([(2, 2, 1, 6)], valid=False)
    x, _, _, t = decode_aedat31(content, "f")
    assert x.tolist() == [1] and t.tolist() == [5 + (2 << 31)]  # overflow applied; invalid dropped


@pytest.mark.parametrize("content,match", [
    (b"hello", "not an AEDAT"),
    (b"#!AER-DAT2.0\r\n", "expected an AEDAT 3.1"),
    (b"#!AER-DAT3.1\r\n#!END-HEADER\r\n" + b"\x01" * 10, "cut short"),
    (b"#!AER-DAT3.1\r\n#!END-HEADER\r\n" + struct.pack("<hhiiiiii", 1, 1, 8, 4, 0, 10**6, 10, 10), "promises"),
    (b"#!AER-DAT3.1\r\n#!END-HEADER\r\n" + struct.pack("<hhiiiiii", 1, 1, 8, 4, 0, 1, 5, 1), "eventNumber 5"),
    (b"#!AER-DAT3.1\r\n#!END-HEADER\r\n" + struct.pack("<hhiiiiii", 1, 1, 6, 4, 0, 1, 1, 1) + b"\x00" * 6,
     "must be 8 bytes"),
    (b"#!AER-DAT3.1 no newline", "without an end"),
])
def test_aedat31_malformed(content, match):
    with pytest.raises(BadInputError, match=match):
        decode_aedat31(content, "f")


def test_aedat2_decoding():
    x, y, p, t = decode_aedat2(aedat2_bytes([(3, 120, 1, 7), (127, 0, 0, 9)]) + struct.pack(">II", 0x8000, 11), "f")
    assert x.tolist() == [3, 127] and y.tolist() == [120, 0] and p.tolist() == [1, 0] and t.tolist() == [7, 9]
    with pytest.raises(BadInputError, match="8-byte events"):
        decode_aedat2(aedat2_bytes([(1, 1, 1, 1)]) + b"\x00", "f")


def test_dvsgesture(tmp_path):
    folder = write_dvsgesture(tmp_path)
    data = load_data(f"dvsgesture:{tmp_path}", timesteps=4)
    assert (len(data.train), len(data.test), data.num_classes) == (6, 3, 11)
    assert data.input_shape == (2, 128, 128) and data.temporal and data.timesteps == 4
    x, y = data.test[1]
    assert x.shape == (4, 2, 128, 128) and x.sum() == 40 and int(y) == (2 * 3 + 1) % 11
    assert len(data.test.cache) == 3  # one recording decoded for its three gestures
    (folder / "user02_lab_labels.csv").write_text("class,startTime_usec,endTime_usec\n12,1,2\n")
    with pytest.raises(BadInputError, match="class 12 outside 1..11"):
        load_data(f"dvsgesture:{tmp_path}")
    (folder / "user02_lab_labels.csv").write_text("klass,start,end\n1,1,2\n")
    with pytest.raises(BadInputError, match="first line"):
        load_data(f"dvsgesture:{tmp_path}")
    (folder / "user02_lab_labels.csv").write_text("class,startTime_usec,endTime_usec\n1,1,2\n")
    (folder / "trials_to_test.txt").write_text("../../etc/passwd.aedat\n")
    with pytest.raises(BadInputError, match="not a recording name"):
        load_data(f"dvsgesture:{tmp_path}")


def test_cifar10dvs(tmp_path):
    write_cifar10dvs(tmp_path / "CIFAR10DVS")
    data = load_data(f"cifar10dvs:{tmp_path}", timesteps=5)
    assert (len(data.train), len(data.test), data.num_classes) == (18, 2, 2)
    x, y = data.test[1]
    assert x.shape == (5, 2, 128, 128) and x.sum() == 25 and int(y) == 1


def test_shd(tmp_path):
    write_shd_set(tmp_path / "SHD")
    data = load_data(f"shd:{tmp_path}", timesteps=6)
    assert (len(data.train), len(data.test), data.num_classes) == (6, 3, 20)
    assert data.input_shape == (1, 1, 700) and data.temporal
    x, y = data.train[4]
    assert x.shape == (6, 1, 1, 700) and int(y) == 4
    path = write_shd(tmp_path / "one.h5", [([0.0, 0.5, 1.0, 1.0], [3, 3, 699, 0], 7)])
    from ttsnn_cli.data.shd import read_sample, shd_frames

    frames = shd_frames(*read_sample(path, 0), 2)
    assert frames[0].sum() == 1 and frames[0, 0, 0, 3] == 1  # span 0..1 s: 0.5 s starts the second slice
    assert frames[1, 0, 0, 3] == frames[1, 0, 0, 699] == frames[1, 0, 0, 0] == 1 and frames.sum() == 4


def test_shd_bad_files(tmp_path):
    from ttsnn_cli.data.shd import open_shd, read_sample

    path = tmp_path / "shd_train.h5"
    path.write_bytes(b"not hdf5 at all")
    with pytest.raises(BadInputError, match="not a readable SHD HDF5 file"):
        open_shd(path)
    write_shd(path, [([0.1], [800], 1)])
    with pytest.raises(BadInputError, match="channel 800 outside 0..699"):
        read_sample(path, 0)
    write_shd(path, [([0.1], [8], 25)])
    with pytest.raises(BadInputError, match="label 25 outside 0..19"):
        open_shd(path)
    write_shd(path, [([float("nan")], [8], 2)])
    with pytest.raises(BadInputError, match="finite"):
        read_sample(path, 0)
    import h5py

    with h5py.File(path, "w") as handle:
        handle.create_dataset("labels", data=np.zeros(2, dtype=np.uint16))
    with pytest.raises(BadInputError, match="spikes/times"):
        open_shd(path)
    gz = tmp_path / "g"
    gz.mkdir()
    (gz / "shd_train.h5.gz").write_bytes(b"x")
    with pytest.raises(BadInputError, match="gunzip"):
        load_data(f"shd:{gz}")


@pytest.mark.parametrize("spec", ["mnist", "fashion-mnist", "nmnist", "dvsgesture", "cifar10dvs", "shd"])
def test_new_specs_need_a_folder(spec, tmp_path):
    with pytest.raises(BadInputError, match="needs a folder"):
        load_data(spec)
    with pytest.raises(BadInputError, match="not found"):
        load_data(f"{spec}:{tmp_path / 'missing'}")
    assert check_data_spec(f"{spec}:x") == f"{spec}:x"
