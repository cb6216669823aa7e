"""Batches made on the device from a resident split (`train.batches`) against the DataLoader path:
the same batches bit for bit (augmentation included), the same random numbers consumed, the same
training and resume; and when a split stays off the device."""

import numpy as np
import pytest
import torch
from torch.utils.data import Subset, TensorDataset

from ttsnn_cli.data import DataBundle, ResidentSplit, load_data, resident_split
from ttsnn_cli.data.cifar import CifarDataset
from ttsnn_cli.errors import BadInputError
from ttsnn_cli.train import batches
from ttsnn_cli.train.batches import (
    ENV,
    ResidentData,
    _crop_flip_draws,
    fits,
    loader_batches,
    resident_data,
)
from ttsnn_cli.train.engine import TrainConfig, evaluate, fit, side_paths
from ttsnn_cli.zoo import zoo_entry

CPU = torch.device("cpu")


def cifar_like(count: int, augment: bool, seed: int = 0) -> CifarDataset:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (count, 3, 32, 32), dtype=np.uint8)
    return CifarDataset(images, rng.integers(0, 10, count).astype(np.int64), "cifar10", augment)


def both_ways(dataset, indices: list[int], batch_size: int, seed: int, decode_once: bool | None = None):
    """(DataLoader batches, resident batches, RNG state after each), each from the same seed.
    `decode_once=False` makes the batches as on a GPU: decoded from the bytes batch by batch."""
    torch.manual_seed(seed)
    loaded = [(x.clone(), y.clone()) for x, y in loader_batches(dataset, indices, batch_size)]
    after_loader = torch.get_rng_state()
    torch.manual_seed(seed)
    assert resident_data(dataset, CPU) is not None
    resident = ResidentData(resident_split(dataset), CPU, decode_once)
    made = [(x.clone(), y.clone()) for x, y in resident.batches(indices, batch_size)]
    return loaded, made, after_loader, torch.get_rng_state()


def assert_same_batches(loaded, made) -> None:
    assert len(loaded) == len(made)
    for (x1, y1), (x2, y2) in zip(loaded, made):
        assert x1.dtype == x2.dtype and y1.dtype == y2.dtype
        assert torch.equal(x1, x2) and torch.equal(y1, y2)


# ------------------------------------------------------------------------------ the batches
def test_cifar_frames_are_the_normalised_pixels_bit_for_bit() -> None:
    from ttsnn_cli.data.cifar import MEAN, STD

    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (5000, 3, 32, 32), dtype=np.uint8)
    images[0, :, :8, :] = np.arange(256).reshape(8, 32)  # every byte value in every channel
    dataset = CifarDataset(images, np.zeros(5000, dtype=np.int64), "cifar10", False)
    mean, std = torch.tensor(MEAN["cifar10"]).view(3, 1, 1), torch.tensor(STD["cifar10"]).view(3, 1, 1)
    assert torch.equal(dataset.images, (torch.from_numpy(images).float() / 255.0 - mean) / std)  # as the reader computed them
    assert torch.equal(dataset[4999][0], dataset.images[4999])


def test_crop_flip_draws_are_the_per_sample_draws() -> None:
    torch.manual_seed(11)
    expected = []
    for _ in range(37):
        top, left = (int(v) for v in torch.randint(0, 9, (2,)))
        expected.append((top, left, int(bool(torch.rand(()) < 0.5))))
    state = torch.get_rng_state()
    torch.manual_seed(11)
    drawn = _crop_flip_draws(37, 4)
    assert [tuple(column) for column in drawn.t().tolist()] == expected
    assert torch.equal(torch.get_rng_state(), state)  # the RNG left where the per-sample draws leave it


@pytest.mark.parametrize("decode_once", [True, False])
@pytest.mark.parametrize("augment", [False, True])
def test_cifar_batches_are_the_loaders_bit_for_bit(augment: bool, decode_once: bool, monkeypatch) -> None:
    if not decode_once:  # as on a GPU: each batch made whole, decoded from its bytes
        monkeypatch.setattr(batches, "SERIAL_VALUES", 10**9)
    dataset = cifar_like(45, augment)
    order = torch.randperm(45, generator=torch.Generator().manual_seed(2)).tolist()
    loaded, made, rng_loader, rng_made = both_ways(dataset, order, 16, seed=5, decode_once=decode_once)
    assert [len(y) for _, y in made] == [16, 16, 13]
    assert_same_batches(loaded, made)
    assert torch.equal(rng_loader, rng_made)


def test_tensor_datasets_and_subsets_are_the_loaders_bit_for_bit() -> None:
    digits = load_data("digits")
    subset = Subset(digits.train, range(3, 700, 3))
    order = torch.randperm(len(subset), generator=torch.Generator().manual_seed(0)).tolist()
    loaded, made, rng_loader, rng_made = both_ways(subset, order, 32, seed=1)
    assert_same_batches(loaded, made)
    assert torch.equal(rng_loader, rng_made)
    subset_of_cifar = Subset(cifar_like(20, True), [4, 0, 19, 7, 7])
    assert_same_batches(*both_ways(subset_of_cifar, [4, 3, 2, 1, 0], 2, seed=9, decode_once=False)[:2])


def test_augmented_batches_crop_and_flip_as_the_paper_does() -> None:
    # a frame whose every pixel says where it came from: the output shows each sample's crop and flip
    count = 400
    codes = torch.arange(32).repeat(3, 32, 1).to(torch.uint8).expand(count, 3, 32, 32).contiguous()
    split = ResidentSplit(codes, torch.zeros(count, dtype=torch.long), torch.arange(256.0).repeat(3, 1) + 1, 4)
    resident = ResidentData(split, CPU, decode_once=False)
    torch.manual_seed(0)
    first = resident.batch(torch.arange(count))[0]
    torch.manual_seed(0)
    assert torch.equal(first, resident.batch(torch.arange(count))[0])  # a fixed seed: the same batch
    assert first.shape == (count, 3, 32, 32) and first.dtype == torch.float32
    row = first[:, 0, 16]  # a middle row: columns shifted by left - 4, padding reads 0
    kept = row[row > 0]
    assert kept.min() == 1 and kept.max() == 32
    flipped = row[:, 16] < row[:, 15]  # mirrored: columns fall left to right
    shares = [(row[:, 0] == 0).float().mean(), flipped.float().mean()]
    assert 0.3 < float(shares[0]) < 0.65 and 0.4 < float(shares[1]) < 0.6  # column 0 is padding for 4 of the 9 shifts either way; flips ~ 0.5
    offsets = {int(v) for v in (row[~flipped, 16] - 17)}
    assert offsets == set(range(-4, 5))  # every shift of the 9 appears
    torch.manual_seed(1)
    assert not torch.equal(first, resident.batch(torch.arange(count))[0])


def test_resident_form_only_for_what_is_known() -> None:
    class Own(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return torch.zeros(1), 0

    class Changed(TensorDataset):
        def __getitem__(self, i):
            return self.tensors[0][i] * 2, self.tensors[1][i]

    x, y = torch.rand(4, 1, 2, 2), torch.arange(4)
    assert resident_split(Own()) is None
    assert resident_split(Changed(x, y)) is None
    assert resident_split(TensorDataset(x, y, y)) is None
    assert resident_split(Subset(Own(), [0])) is None
    assert resident_split(TensorDataset(x, y)).frames is x  # no copy
    assert resident_split(cifar_like(3, False)).table.shape == (3, 256)
    assert resident_split(cifar_like(3, True)).crop_flip == 4


def test_the_switch_and_the_memory_budget(monkeypatch) -> None:
    dataset = TensorDataset(torch.rand(4, 1, 2, 2), torch.arange(4))
    assert resident_data(dataset, CPU, "auto") is not None
    assert resident_data(dataset, CPU, "off") is None
    monkeypatch.setenv(ENV, "off")
    assert resident_data(dataset, CPU, "auto") is None
    monkeypatch.setenv(ENV, "0")
    assert resident_data(dataset, CPU, "auto") is None
    monkeypatch.delenv(ENV)
    # on CUDA a split takes at most a quarter of the free memory
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (4000, 8000))
    assert fits(1000, torch.device("cuda")) and not fits(1001, torch.device("cuda"))
    with pytest.raises(BadInputError, match="--data-on-device must be one of auto, off"):
        TrainConfig(data_on_device="always").validate()


# ------------------------------------------------------------------------------ training
def tiny_model(seed: int = 0, in_channels: int = 1):
    torch.manual_seed(seed)
    return zoo_entry("digits_csnn").factory(in_channels=in_channels, width=4)


@pytest.fixture(scope="module")
def small_digits() -> DataBundle:
    full = load_data("digits")
    return DataBundle("digits", Subset(full.train, range(0, 1400, 7)), Subset(full.test, range(0, 360, 5)), (1, 16, 16), 10)


@pytest.fixture(scope="module")
def small_cifar() -> DataBundle:
    return DataBundle("cifar10", cifar_like(96, True, seed=1), cifar_like(40, False, seed=2), (3, 32, 32), 10)


def run(tmp_path, data: DataBundle, name: str, **options):
    base = dict(epochs=2, batch_size=32, timesteps=2, lr=0.1, seed=3)
    base.update(options)
    model = tiny_model(in_channels=data.input_shape[0])
    result = fit(model, data, TrainConfig(**base), tmp_path / name)
    return model, result


@pytest.mark.parametrize("data_name", ["small_digits", "small_cifar"])
@pytest.mark.parametrize("encoding", ["direct", "rate"])
def test_training_is_the_same_on_either_path(tmp_path, request, monkeypatch, data_name: str, encoding: str) -> None:
    data = request.getfixturevalue(data_name)
    made = []
    import ttsnn_cli.train.engine as engine

    original = engine.make_batches
    monkeypatch.setattr(engine, "make_batches", lambda *a: made.append(a[1] is not None) or original(*a))
    resident, on_device = run(tmp_path, data, "a.tt", encoding=encoding)
    assert made and all(made)  # every pass, training and test, made its batches from the resident split
    made.clear()
    loaded, through_loader = run(tmp_path, data, "b.tt", encoding=encoding, data_on_device="off")
    assert made and not any(made)
    for key in ("train_loss", "train_accuracy", "test_accuracy"):
        assert [r[key] for r in on_device["history"]] == [r[key] for r in through_loader["history"]]
    for (name, a), (_, b) in zip(resident.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name


class Killed(Exception):
    pass


@pytest.mark.parametrize("resumed_with", ["auto", "off"])
def test_resume_continues_identically(tmp_path, small_cifar, resumed_with: str) -> None:
    straight, _ = run(tmp_path, small_cifar, "a.tt", epochs=3)

    def stop_after_two(model, history):
        if len(history) == 2:
            raise Killed

    config = TrainConfig(epochs=3, batch_size=32, timesteps=2, lr=0.1, seed=3)
    with pytest.raises(Killed):
        fit(tiny_model(in_channels=3), small_cifar, config, tmp_path / "c.tt", on_epoch=stop_after_two)
    assert torch.load(side_paths(tmp_path / "c.tt")[1], weights_only=True)["epoch"] == 1
    resumed = tiny_model(seed=99, in_channels=3)
    config.data_on_device = resumed_with  # where the batches are made is no option a resume must share
    fit(resumed, small_cifar, config, tmp_path / "c.tt", resume=True)
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name


def test_evaluate_is_the_same_on_either_path(small_cifar) -> None:
    model = tiny_model(in_channels=3)
    config = TrainConfig(timesteps=2, batch_size=8)
    on_device = evaluate(model, small_cifar, config, CPU)
    config.data_on_device = "off"
    assert evaluate(model, small_cifar, config, CPU) == on_device


# ------------------------------------------------------------------------------ on CUDA
@pytest.mark.cuda
@pytest.mark.parametrize("augment", [False, True])
def test_batches_made_on_the_gpu_are_the_cpu_loaders(augment: bool) -> None:
    dataset = cifar_like(300, augment)
    order = torch.randperm(300, generator=torch.Generator().manual_seed(2)).tolist()
    torch.manual_seed(5)
    loaded = list(loader_batches(dataset, order, 64))
    torch.manual_seed(5)
    resident = resident_data(dataset, torch.device("cuda"))
    assert resident is not None and resident.frames.dtype == torch.uint8 and resident.frames.is_cuda
    made = [(x.cpu(), y.cpu()) for x, y in resident.batches(order, 64)]
    assert_same_batches(loaded, made)



@pytest.mark.cuda
def test_cpu_tensors_reach_cuda_through_pinned_memory_with_their_values() -> None:
    from ttsnn_cli.train.batches import to_device

    values = torch.randint(0, 9, (3, 64))
    moved = to_device(values, torch.device("cuda"))
    assert moved.is_cuda and torch.equal(moved.cpu(), values)
    assert torch.equal(to_device(values, torch.device("cpu")), values)
    assert to_device(moved, torch.device("cuda")) is moved  # a batch made on the device stays as it is
    batch = torch.rand(128, 3, 32, 32)  # a DataLoader's batch, then the step's first kernel reading it
    torch.testing.assert_close(to_device(batch, torch.device("cuda")).sum().cpu(), batch.sum())
