"""Dataset readers on small files fabricated in the genuine formats (ecosystem.md)."""

import pickle

import numpy as np
import pytest
import torch

from ttsnn_cli.data import encode, load_data
from ttsnn_cli.data.cifar import random_crop_flip
from ttsnn_cli.data.ncaltech import bin_events, events_to_frames, read_events
from ttsnn_cli.errors import BadInputError


def test_digits_split_is_fixed_and_stratified():
    a, b = load_data("digits"), load_data("digits")
    assert (len(a.train), len(a.test)) == (1437, 360)
    assert torch.equal(a.test.tensors[0], b.test.tensors[0])
    x, _ = a.train[0]
    assert x.shape == (1, 16, 16) and 0 <= float(x.min()) and float(x.max()) <= 1
    counts = torch.bincount(a.test.tensors[1], minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37
    assert a.input_shape == (1, 16, 16) and a.num_classes == 10


def test_encodings():
    x = torch.rand(5, 1, 4, 4)
    direct = encode(x, 3)
    assert direct.shape == (3, 5, 1, 4, 4) and torch.equal(direct[2], x)
    torch.manual_seed(0)
    rate = encode(x, 50, "rate")
    assert set(rate.unique().tolist()) <= {0.0, 1.0}
    assert torch.allclose(rate.mean(0), x, atol=0.25)
    seq = torch.rand(5, 3, 2, 4, 4)  # [B, T, C, H, W]
    assert torch.equal(encode(seq, 3, temporal=True)[1], seq[:, 1])
    with pytest.raises(BadInputError):
        encode(x, 2, "latency")


def write_cifar(folder, name="cifar10", n=6):
    rng = np.random.default_rng(0)
    if name == "cifar10":
        sub = folder / "cifar-10-batches-py"
        sub.mkdir(parents=True)
        files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
        key, classes = b"labels", 10
    else:
        sub = folder / "cifar-100-python"
        sub.mkdir(parents=True)
        files = ["train", "test"]
        key, classes = b"fine_labels", 100
    for f in files:
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, classes, size=n)]
        with open(sub / f, "wb") as handle:
            pickle.dump({b"batch_label": f.encode(), b"labels" if key == b"labels" else key: labels, b"data": data}, handle)
    return sub


def test_cifar10_reader(tmp_path):
    sub = write_cifar(tmp_path)
    data = load_data(f"cifar10:{tmp_path}")
    assert (len(data.train), len(data.test), data.num_classes) == (30, 6, 10)
    # the pixel layout: row-major R, G, B planes of 32x32
    raw = pickle.load(open(sub / "test_batch", "rb"), encoding="bytes")
    x, y = data.test[2]
    red = torch.tensor(raw[b"data"][2][:1024].reshape(32, 32), dtype=torch.float32) / 255
    assert torch.allclose(x[0] * 0.2470 + 0.4914, red, atol=1e-5)
    assert int(y) == raw[b"labels"][2]
    assert len(load_data(f"cifar10:{sub}").train) == 30  # the batches folder itself


def test_cifar100_reader(tmp_path):
    write_cifar(tmp_path, "cifar100")
    data = load_data(f"cifar100:{tmp_path}")
    assert (len(data.train), data.num_classes, data.input_shape) == (6, 100, (3, 32, 32))


def test_cifar_refuses_code_in_pickle(tmp_path):
    sub = write_cifar(tmp_path)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(sub / "test_batch", "wb") as handle:
        pickle.dump({b"data": Evil(), b"labels": [0]}, handle)
    with pytest.raises(BadInputError, match="not a CIFAR python batch"):
        load_data(f"cifar10:{tmp_path}")


def test_augmentation_crops_and_flips():
    torch.manual_seed(0)
    image = torch.arange(2 * 6 * 6, dtype=torch.float32).view(2, 6, 6) + 1
    outs = [random_crop_flip(image, padding=2) for _ in range(400)]
    assert all(o.shape == image.shape for o in outs)
    assert any((o == 0).any() for o in outs)  # zero padding showed up
    assert any(torch.equal(o, image) for o in outs) and any(torch.equal(o, image.flip(-1)) for o in outs)


def encode_events(events):
    """(x, y, p, t) tuples -> the 5-byte format; y == 240 rows are overflow markers."""
    out = bytearray()
    for x, y, p, t in events:
        out += bytes([x, y, (p << 7) | ((t >> 16) & 0x7F), (t >> 8) & 0xFF, t & 0xFF])
    return bytes(out)


def test_read_events_decodes_and_handles_overflow(tmp_path):
    path = tmp_path / "a.bin"
    path.write_bytes(encode_events([(3, 4, 1, 100), (5, 6, 0, 8000), (0, 240, 0, 0), (7, 8, 1, 50)]))
    ev = read_events(path)
    assert ev["x"].tolist() == [3, 5, 7] and ev["y"].tolist() == [4, 6, 8]
    assert ev["p"].tolist() == [1, 0, 1]
    assert ev["t"].tolist() == [100, 8000, 50 + 2**13]
    path.write_bytes(b"\x00" * 7)
    with pytest.raises(BadInputError, match="5-byte"):
        read_events(path)


def test_events_to_frames_bins_by_count():
    ev = {"x": np.array([0, 239, 10, 10]), "y": np.array([0, 179, 5, 5]), "p": np.array([0, 1, 1, 1]), "t": np.array([1, 2, 3, 4])}
    counts = bin_events(ev, timesteps=2)
    assert counts.shape == (2, 2, 180, 240)
    assert counts.sum((2, 3)).tolist() == [[1.0, 1.0], [0.0, 2.0]]
    assert counts[0, 1, 179, 239] == 1 and counts[1, 1, 5, 10] == 2
    frames = events_to_frames(ev, timesteps=2, size=48)
    assert frames.shape == (2, 2, 48, 48) and frames[1, 1].sum() > 0 and frames[1, 0].sum() == 0


def write_ncaltech(root, per_class=(10, 3)):
    for c, n in enumerate(per_class):
        folder = root / "Caltech101" / f"class_{c}"
        folder.mkdir(parents=True)
        for i in range(n):
            (folder / f"image_{i:04d}.bin").write_bytes(encode_events([(i, c, i % 2, 10 * k) for k in range(20)]))


def test_ncaltech_split_and_items(tmp_path):
    write_ncaltech(tmp_path / "NCALTECH101")
    for spec_root in (tmp_path, tmp_path / "NCALTECH101"):
        data = load_data(f"ncaltech101:{spec_root}", timesteps=3)
        assert (len(data.train), len(data.test)) == (9 + 2, 1 + 1)
    assert data.temporal and data.timesteps == 3 and data.num_classes == 2
    x, y = data.test[0]
    assert x.shape == (3, 2, 48, 48) and int(y) == 0
    assert data.test.samples[0][0].name == "image_0009.bin"  # sorted order: the last 10 % test


@pytest.mark.parametrize("spec,match", [
    ("imagenet", "unknown dataset"),
    ("cifar10", "needs a folder"),
    ("digits:/x", "takes no folder"),
    ("cifar10:/nonexistent/dir", "not found"),
    ("ncaltech101:/nonexistent/dir", "not found"),
])
def test_bad_specs(spec, match):
    with pytest.raises(BadInputError, match=match):
        load_data(spec)


def test_empty_dirs_are_bad_input(tmp_path):
    with pytest.raises(BadInputError, match="no cifar10 batches"):
        load_data(f"cifar10:{tmp_path}")
    with pytest.raises(BadInputError, match="no N-Caltech101 events"):
        load_data(f"ncaltech101:{tmp_path}")
