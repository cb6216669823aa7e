"""The training step reads no tensor value on the host, and an epoch reads a fixed number, however
many batches it has: on CUDA each read (`float(t)`, `bool(t)`, `t.item()`, `t.tolist()`) waits for
every queued kernel, so the host could not queue one step while the GPU ran the one before
(`train.tally`, `neurons.MultiStepLIF._plain_factor`). Counted on the CPU, on the path CUDA takes
(the compiled C neuron, which reads beta and the threshold as C floats, switched off)."""

from __future__ import annotations

import collections
import traceback
from pathlib import Path

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils.data import Subset

from ttsnn_cli.compress.decompose import CompressConfig, compress_model
from ttsnn_cli.data import DataBundle, load_data
from ttsnn_cli.errors import BadInputError
from ttsnn_cli.maths.ranks import RankSpec
from ttsnn_cli.spiking.runner import run_timesteps
from ttsnn_cli.train import tally
from ttsnn_cli.train.engine import TrainConfig, fit, side_paths
from ttsnn_cli.train.optimizers import make_optimizer
from ttsnn_cli.train.precision import autocast, grad_scaler
from ttsnn_cli.zoo import zoo_entry
from ttsnn_cli.zoo.msresnet import MSResNet

pytestmark = pytest.mark.usefixtures("one_thread")

READS = {"__bool__", "item", "__float__", "__int__", "tolist", "__index__", "nonzero", "equal", "allclose"}


class HostReads(TorchFunctionMode):
    """Counts reads of tensor values on the host, by where in ttsnn they happen."""

    def __init__(self) -> None:
        super().__init__()
        self.where: collections.Counter[str] = collections.Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        if getattr(func, "__name__", "") in READS:
            frames = [f for f in traceback.extract_stack()[:-1] if "ttsnn_cli" in f.filename]
            self.where[f"{frames[-1].filename.rsplit('/', 2)[-1]}:{frames[-1].lineno}" if frames else "?"] += 1
        return func(*args, **(kwargs or {}))


@pytest.fixture
def cuda_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TTSNN_NATIVE", "0")


@pytest.mark.usefixtures("cuda_path")
@pytest.mark.parametrize("mode", ["dense", "stt", "ptt", "htt"])
def test_a_training_step_reads_nothing_on_the_host(mode: str) -> None:
    torch.manual_seed(0)
    model = MSResNet((1, 1, 1, 1), in_channels=1, num_classes=5, channels=(8, 8, 16, 16))
    if mode != "dense":
        model, _ = compress_model(model, CompressConfig(RankSpec("fixed", (3, 3, 3)), mode=mode, timesteps=2))  # type: ignore[arg-type]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(4, 1, 12, 12).unsqueeze(0).expand(2, 4, 1, 12, 12)  # direct encoding: the stem runs once

    def step() -> None:
        loss = run_timesteps(model, x, fold=True).mean(0).square().sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()  # the first step may read once what it then remembers
    reads = HostReads()
    with reads:
        step()
        step()
    assert not reads.where, dict(reads.where)


@pytest.mark.usefixtures("cuda_path")
@pytest.mark.parametrize("optimizer_name", ["sgd", "adam"])
def test_an_fp16_step_with_its_loss_scaler_reads_nothing_on_the_host(optimizer_name: str) -> None:
    """The scaler hands its overflow flag to the fused update, which runs on CUDA (`optimizers.fusable`)
    and is forced here; unfused, torch's scaler reads the flag on the host every step."""
    torch.manual_seed(0)
    model, _ = compress_model(MSResNet((1, 1, 1, 1), in_channels=1, num_classes=5, channels=(8, 8, 16, 16)),
                              CompressConfig(RankSpec("fixed", (3, 3, 3)), mode="ptt"))
    config = TrainConfig(optimizer=optimizer_name, precision="fp16")  # type: ignore[arg-type]
    optimizer = make_optimizer(list(model.parameters()), config, fused=True)
    scaler = grad_scaler("fp16", torch.device("cpu"))
    x = torch.randn(4, 1, 12, 12).unsqueeze(0).expand(2, 4, 1, 12, 12)

    def step() -> None:
        with autocast("fp16", torch.device("cpu")):
            loss = run_timesteps(model, x, fold=True).float().mean(0).square().sum()
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    step()
    reads = HostReads()
    with reads:
        step()
        step()
    assert not reads.where, dict(reads.where)
    assert scaler.get_scale() > 0 and all(torch.isfinite(p).all() for p in model.parameters())


@pytest.fixture(scope="module")
def digits() -> DataBundle:
    full = load_data("digits")
    return DataBundle("digits", Subset(full.train, range(0, 1400, 7)), Subset(full.test, range(0, 360, 30)), (1, 16, 16), 10)


def _epoch_reads(tmp_path: Path, data: DataBundle, batch_size: int) -> collections.Counter[str]:
    """One epoch of an MS-ResNet (its stem runs once for the repeated frames of direct encoding)."""
    torch.manual_seed(0)
    model = MSResNet((1, 1, 1, 1), in_channels=1, num_classes=10, channels=(8, 8, 16, 16))
    reads = HostReads()
    with reads:
        fit(model, data, TrainConfig(epochs=1, batch_size=batch_size, timesteps=2, lr=0.1, seed=3),
            tmp_path / f"b{batch_size}.tt", progress=lambda event: None)
    return reads.where


@pytest.mark.usefixtures("cuda_path")
def test_an_epoch_reads_the_same_number_of_times_whatever_its_batches(tmp_path: Path, digits: DataBundle,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tally, "READ_EVERY_S", float("inf"))  # only the first and last batches are shown
    few, many = _epoch_reads(tmp_path, digits, 100), _epoch_reads(tmp_path, digits, 25)  # 2 and 8 batches
    assert few == many, f"reads that grow with the batches: {dict(many - few)}"


def test_a_diverging_run_names_the_batch_and_writes_nothing(tmp_path: Path, digits: DataBundle) -> None:
    torch.manual_seed(0)
    model = zoo_entry("digits_csnn").factory(width=8)
    with torch.no_grad():  # a readout weight that makes the first loss NaN
        [p for p in model.parameters() if p.dim() > 1][-1][0, 0] = float("nan")
    out = tmp_path / "m.tt"
    with pytest.raises(BadInputError, match=r"training diverged: the loss became nan at epoch 1, batch 1;"):
        fit(model, digits, TrainConfig(epochs=2, batch_size=50, timesteps=2, lr=0.1, seed=3), out)
    assert not out.exists() and not any(p.exists() for p in side_paths(out))
