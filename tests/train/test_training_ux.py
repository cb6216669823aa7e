"""Training that works on tutorial networks and tells the user what it does: --readout, the defaults that
train a user's network, the stalled-loss hint, --log-dir (CSV + TensorBoard events), --threads, and the
small things of `inspect` and the command line."""

from __future__ import annotations

import csv
import os
import struct

import pytest
import snntorch as snn
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Subset
from typer.testing import CliRunner

from ttsnn_cli.cli.commands import app
from ttsnn_cli.cli.inspect import history_line, readable_numbers
from ttsnn_cli.data import DataBundle, load_data
from ttsnn_cli.errors import BadInputError
from ttsnn_cli.spiking.runner import check_readout, readout_index, run_timesteps
from ttsnn_cli.storage.bundle import ModelIO, get_meta
from ttsnn_cli.storage.schema import IORecord
from ttsnn_cli.train.engine import TrainConfig, _loss_fell, fit
from ttsnn_cli.train.job import default_optimizer
from ttsnn_cli.train.logs import EVENTS_NAME, EpochLogs, crc32c, csv_text, event_file, read_event_file
from ttsnn_cli.train.threads import check_threads, early_threads, limited_threads

runner = CliRunner()
ARCH = "test_training_ux:tutorial_net"


class TutorialNet(nn.Module):
    """snntorch tutorial 6 in miniature: conv + max-pool + linear, `init_leaky()` states, its own loop
    over num_steps, returning (spk_rec, mem_rec). Input one 1x16x16 digits frame."""

    def __init__(self, num_steps: int = 3, beta: float = 0.9) -> None:
        super().__init__()
        self.num_steps = num_steps
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.lif1 = snn.Leaky(beta=beta)
        self.fc1 = nn.Linear(4 * 8 * 8, 10)
        self.lif2 = snn.Leaky(beta=beta)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mem1, mem2 = self.lif1.init_leaky(), self.lif2.init_leaky()
        spk_rec, mem_rec = [], []
        for _ in range(self.num_steps):
            spk1, mem1 = self.lif1(F.max_pool2d(self.conv1(x), 2), mem1)
            spk2, mem2 = self.lif2(self.fc1(spk1.flatten(1)), mem2)
            spk_rec.append(spk2)
            mem_rec.append(mem2)
        return torch.stack(spk_rec), torch.stack(mem_rec)


def tutorial_net(num_steps: int = 3, beta: float = 0.9) -> TutorialNet:
    return TutorialNet(num_steps, beta)


def single_output_net() -> nn.Sequential:
    return nn.Sequential(nn.Flatten(), nn.Linear(256, 10), snn.Leaky(beta=0.9, init_hidden=True))


@pytest.fixture(autouse=True)
def _trust_this_module(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TTSNN_TRUSTED_ARCH", "test_training_ux,user_nets")


@pytest.fixture(scope="module")
def small_digits() -> DataBundle:
    full = load_data("digits", timesteps=3)
    return DataBundle("digits", Subset(full.train, range(0, 1400, 7)), Subset(full.test, range(0, 360, 5)),
                      (1, 16, 16), 10)


# ------------------------------------------------------------------------------------------- readout
def frames(steps: int = 3, batch: int = 2) -> torch.Tensor:
    """One static frame per sample repeated over time (direct encoding), as an own-loop model eats it."""
    return (torch.rand(1, batch, 1, 16, 16) * 4).expand(steps, batch, 1, 16, 16).contiguous()


def test_readout_picks_the_record_every_consumer_reads():
    model = TutorialNet()
    x = frames()
    spikes = run_timesteps(model, x)
    model.ttsnn_readout = "membrane"
    membrane = run_timesteps(model, x)
    want_spk, want_mem = model(x[0])
    assert torch.equal(spikes, want_spk) and torch.equal(membrane, want_mem)
    assert not torch.equal(spikes, membrane)
    model.ttsnn_readout = None
    get_meta(model).io = ModelIO(readout="membrane")  # what a bundle records
    assert torch.equal(run_timesteps(model, x), want_mem)


def test_membrane_readout_of_a_sequential_reads_the_output_neurons_membrane():
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Flatten(), nn.Linear(16, 5), snn.Leaky(beta=0.9, init_hidden=True, output=True))
    x = torch.rand(4, 2, 1, 4, 4) * 3
    seq.ttsnn_readout = "membrane"
    folded = run_timesteps(seq, x, fold=True)
    stepped = run_timesteps(seq, x, fold=False)
    assert torch.allclose(folded, stepped)
    assert not torch.equal(folded, folded.round())  # membrane potentials, not 0/1 spikes


def test_readout_of_a_record_the_model_does_not_return_is_one_clear_error():
    model = single_output_net()
    model.ttsnn_readout = "membrane"
    with pytest.raises(BadInputError, match="--readout membrane reads record 1 .* or use --readout spikes"):
        run_timesteps(model, torch.rand(2, 3, 1, 16, 16))
    loop = TutorialNet()
    loop.ttsnn_readout = "5"
    with pytest.raises(BadInputError, match="record 5"):
        run_timesteps(loop, frames())


@pytest.mark.parametrize("value, index", [(None, 0), ("spikes", 0), ("membrane", 1), ("2", 2), (1, 1)])
def test_readout_names(value, index):
    assert readout_index(value) == index


@pytest.mark.parametrize("value", ["mem", "-1", "100", "1.0", ""])
def test_bad_readout_is_refused(value):
    with pytest.raises(BadInputError, match="--readout"):
        check_readout(value)


def test_bundle_records_the_readout_and_validates_it():
    io = ModelIO((1, 16, 16), 3, "digits", None, "membrane")
    assert io.to_dict()["readout"] == "membrane"
    assert ModelIO.from_dict(io.to_dict()).readout == "membrane"
    assert "readout" not in ModelIO((1, 16, 16), 3, "digits").to_dict()  # older readers see nothing new
    assert ModelIO(readout="membrane").merged(ModelIO()).readout == "membrane"
    assert ModelIO(readout="membrane").merged(ModelIO(readout="spikes")).readout == "spikes"
    assert IORecord(readout="membrane").model_io().readout == "membrane"
    with pytest.raises(Exception):
        IORecord(readout="__import__('os')")


# ------------------------------------------------------------------------------ defaults and hints
@pytest.mark.parametrize("stage, arch, optimizer, lr, want", [
    ("train", "zoo:digits_csnn", None, None, ("sgd", 0.1)),
    ("train", "mynets:build", None, None, ("adam", 1e-3)),  # a user's network: what trains tutorial nets
    ("train", "mynets:build", "sgd", None, ("sgd", 0.1)),
    ("train", "zoo:digits_csnn", "adam", None, ("adam", 1e-3)),
    ("train", "mynets:build", None, 0.05, ("adam", 0.05)),
    ("finetune", None, None, None, ("sgd", 0.01)),
    ("finetune", "mynets:build", "ADAM", None, ("adam", 1e-3)),
])
def test_default_optimizer(stage, arch, optimizer, lr, want):
    assert default_optimizer(stage, arch, optimizer, lr) == want


def test_loss_fell():
    assert not _loss_fell([2.30, 2.30, 2.301, 2.299, 2.30, 2.30, 2.29, 2.295])
    assert _loss_fell([2.3, 2.2, 2.0, 1.8, 1.5, 1.2, 1.0, 0.9])
    assert _loss_fell([2.3, 2.3])  # too few batches to tell: no hint


def test_a_stalled_first_epoch_gives_one_hint(tmp_path, small_digits, one_thread):
    events: list[dict] = []
    config = TrainConfig(epochs=1, batch_size=16, timesteps=3, lr=1e-9, optimizer="sgd", seed=0)
    torch.manual_seed(0)
    model = TutorialNet()
    with torch.no_grad():  # strong enough weights that the output spikes: a network that spikes but does not learn
        model.conv1.weight.mul_(6)
        model.fc1.weight.mul_(6)
    fit(model, small_digits, config, tmp_path / "m.tt", progress=events.append)
    assert not [e for e in events if e["kind"] == "warning"]
    hints = [e for e in events if e["kind"] == "hint"]
    assert len(hints) == 1 and hints[0]["epoch"] == 1
    assert "--optimizer adam" in hints[0]["message"] and "--readout membrane" in hints[0]["message"]
    assert "\n" not in hints[0]["message"]


# ------------------------------------------------------------------------------------------- logs
def test_crc32c_known_answer():
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value (RFC 3720)


def test_event_file_round_trip_and_csv():
    history = [{"epoch": 1, "train_loss": 2.0, "train_accuracy": 40.0, "test_accuracy": 50.0, "lr": 0.1,
                "seconds": 3.0, "samples_per_s": 100.0, "wall_time": 1_700_000_000.5},
               {"epoch": 2, "train_loss": 1.0, "train_accuracy": 80.0, "test_accuracy": 90.0, "lr": 0.0,
                "seconds": 3.0, "samples_per_s": 110.0, "wall_time": 1_700_000_004.0}]
    data = event_file(history)
    scalars = read_event_file(data)
    assert [step for step, _ in scalars] == [1, 2]
    assert scalars[1][1]["accuracy/test"] == pytest.approx(90.0)
    assert scalars[0][1]["loss/train"] == pytest.approx(2.0)
    assert set(scalars[0][1]) == {"loss/train", "accuracy/train", "accuracy/test", "lr", "samples_per_s",
                                  "epoch_seconds"}
    (length,) = struct.unpack("<Q", data[:8])
    assert b"brain.Event:2" in data[12:12 + length]  # the version record TensorBoard reads first
    damaged = bytearray(data)
    damaged[-6] ^= 0xFF
    with pytest.raises(BadInputError, match="checksum"):
        read_event_file(bytes(damaged))
    rows = list(csv.DictReader(csv_text(history).splitlines()))
    assert rows[1]["test_accuracy"] == "90.0" and "wall_time" not in rows[0]


def test_event_file_is_read_by_tensorboard_when_installed(tmp_path):
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    (tmp_path / EVENTS_NAME).write_bytes(event_file([{"epoch": 1, "test_accuracy": 55.0, "train_loss": 1.5}]))
    loaded = accumulator.EventAccumulator(str(tmp_path))
    loaded.Reload()
    assert [(e.step, e.value) for e in loaded.Scalars("accuracy/test")] == [(1, 55.0)]


def test_log_dir_follows_the_output_rules(tmp_path):
    folder = tmp_path / "logs"
    EpochLogs(folder).write([{"epoch": 1, "train_loss": 1.0}])
    assert sorted(p.name for p in folder.iterdir()) == ["events.out.tfevents.ttsnn", "metrics.csv"]
    with pytest.raises(BadInputError, match="exists; pass --force"):
        EpochLogs(folder)
    EpochLogs(folder, force=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(BadInputError):
        EpochLogs(tmp_path / "file")
    with pytest.raises(BadInputError):
        EpochLogs(tmp_path / "file" / "logs")  # below a file: no folder can be made there


# ------------------------------------------------------------------------------------------ threads
def test_limited_threads_sets_and_restores():
    before = torch.get_num_threads()
    with limited_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with limited_threads(None):
        assert torch.get_num_threads() == before


@pytest.mark.parametrize("value", [0, -1, 5000, True, 1.5])
def test_bad_threads_refused(value):
    with pytest.raises(BadInputError, match="--threads"):
        check_threads(value)


def test_early_threads_exports_the_pool_size(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    early_threads(["train", "--threads", "3"])
    assert os.environ["OMP_NUM_THREADS"] == "3" and os.environ["MKL_NUM_THREADS"] == "3"
    early_threads(["train", "--threads=2"])
    assert os.environ["OMP_NUM_THREADS"] == "2"
    early_threads(["train", "--threads", "zero"])  # left for the option parser to refuse
    assert os.environ["OMP_NUM_THREADS"] == "2"


# ------------------------------------------------------------------------------------------ the CLI
def test_train_readout_membrane_log_dir_threads_end_to_end(tmp_path, one_thread):
    out, logs = tmp_path / "m.tt", tmp_path / "tb"
    result = runner.invoke(app, ["train", "--arch", ARCH, "--data", "digits", "-o", str(out), "--epochs", "2",
                                 "--batch-size", "128", "--readout", "membrane", "--log-dir", str(logs),
                                 "--threads", "1", "--json"])
    assert result.exit_code == 0, result.stderr
    import json

    document = json.loads(result.stdout)
    assert document["readout"] == "membrane" and document["log_dir"] == str(logs)
    assert document["config"]["optimizer"] == "adam" and document["config"]["lr"] == 1e-3  # a user's network
    assert [step for step, _ in read_event_file((logs / EVENTS_NAME).read_bytes())] == [1, 2]
    assert len((logs / "metrics.csv").read_text().splitlines()) == 3
    shown = runner.invoke(app, ["inspect", str(out)])
    assert shown.exit_code == 0, shown.stderr
    assert "readout membrane" in shown.stderr and "beta 0.9," in shown.stderr
    assert "1. train on digits, 2/2 epochs, test accuracy" in shown.stderr and "{'stage'" not in shown.stderr
    again = runner.invoke(app, ["train", "--arch", ARCH, "--data", "digits", "-o", str(tmp_path / "n.tt"),
                                "--epochs", "1", "--log-dir", str(logs)])
    assert again.exit_code == 3 and "exists; pass --force" in again.stderr


@pytest.mark.parametrize("args, message", [
    (["--threads", "0"], "--threads must be"),
    (["--readout", "mem"], "--readout 'mem'"),
])
def test_bad_training_options_are_one_line_exit_3(tmp_path, args, message):
    result = runner.invoke(app, ["train", "--arch", ARCH, "--data", "digits", "-o", str(tmp_path / "x.tt"), *args])
    assert result.exit_code == 3 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_membrane_readout_of_a_single_output_model_is_bad_input(tmp_path):
    result = runner.invoke(app, ["train", "--arch", "test_training_ux:single_output_net", "--data", "digits",
                                 "-o", str(tmp_path / "x.tt"), "--readout", "membrane", "--epochs", "1"])
    assert result.exit_code == 3 and "--readout membrane" in result.stderr


@pytest.mark.parametrize("command", ["train", "finetune", "compress", "report", "export", "inspect", "sweep", "run"])
def test_help_shows_usage_in_capitals_and_one_flag_style(command):
    text = runner.invoke(app, [command, "--help"]).stdout
    usage = text.splitlines()[0]
    assert "{" not in usage and usage == usage.replace("model", "MODEL")
    assert "--no-" not in text  # flags are `--force`, never `--force / --no-force`
    if command not in ("inspect",):
        assert "--threads" in text


def test_shell_completion_is_available():
    assert "--install-completion" in runner.invoke(app, ["--help"]).stdout


def test_history_line_reads_like_a_sentence():
    line = history_line({"stage": "finetune", "data": "digits", "epochs": 3, "of_epochs": 3, "test_accuracy": 98.888,
                         "train_loss": 0.05, "options": {"optimizer": "sgd", "lr": 0.01, "batch_size": 64,
                                                         "timesteps": 4, "loss": "ce", "precision": "fp32"}})
    assert line == "finetune on digits, 3/3 epochs, test accuracy 98.89 %, train loss 0.0500 (sgd, lr 0.01, batch 64, T 4, loss ce)"
    line = history_line({"stage": "compress", "mode": "ptt", "rank_method": "fixed",
                         "totals": {"params_before": 131178, "params_after": 13418, "param_ratio": 9.776}})
    assert line == "compress ptt, ranks fixed, params 131,178 -> 13,418 (9.78x fewer)"
    assert history_line({"stage": "init", "note": "fresh"}) == "init: note fresh"


def test_run_summary_names_every_exported_file():
    from ttsnn_cli.cli.run import _summary

    line = _summary({"onnx": "m.onnx", "nir": "m.nir", "verified": True, "max_abs_diff": 0.0})
    assert line.endswith("-> m.onnx, m.nir")
    assert _summary({"onnx": None, "nir": "m.nir", "verified": False}).endswith("-> m.nir")


def test_recipes_take_readout_logs_and_threads():
    from ttsnn_cli.pipeline.recipe import parse_recipe
    from ttsnn_cli.pipeline.stages.train import train_config

    recipe = parse_recipe({"model": {"arch": ARCH}, "threads": 1,
                           "train": {"readout": "membrane", "logs": True, "epochs": 1},
                           "finetune": {"readout": "spikes"}})
    assert recipe.threads == 1 and recipe.train.readout == "membrane" and recipe.train.logs
    config = train_config(recipe.train, recipe.threads, recipe.model.arch)
    assert (config.optimizer, config.lr, config.threads) == ("adam", 1e-3, 1)  # a user's network, defaults
    assert (train_config(recipe.finetune).optimizer, train_config(recipe.finetune).lr) == ("sgd", 0.01)
    zoo = parse_recipe({"model": {"arch": "zoo:digits_csnn"}, "train": {}})
    assert (train_config(zoo.train, None, zoo.model.arch).optimizer, train_config(zoo.train, None, zoo.model.arch).lr) \
        == ("sgd", 0.1)
    for bad in ({"train": {"readout": "mem"}}, {"threads": 0}, {"train": {"logs": "yes"}}):
        with pytest.raises(BadInputError):
            parse_recipe({"model": {"arch": ARCH}, **bad})


def test_progress_view_prints_hints_and_warnings_as_one_line(capsys):
    from ttsnn_cli.cli.train import ProgressView

    with ProgressView(quiet=False) as view:
        view({"kind": "epoch_start", "epoch": 1, "epochs": 2, "batches": 3})
        view({"kind": "batch", "epoch": 1, "batch": 1, "batches": 3, "loss": 2.3, "accuracy": 10.0, "samples_per_s": 5.0})
        view({"kind": "hint", "epoch": 1, "message": "epoch 1: the loss has not fallen [x]"})
        view({"kind": "epoch_end", "epoch": 1, "epochs": 2, "train_loss": 2.3, "train_accuracy": 10.0,
              "test_accuracy": 10.0, "seconds": 1.0, "samples_per_s": 5.0})
        assert view._run_eta(2, 2).startswith("run left ~0:00:")
    err = capsys.readouterr().err
    assert "hint: epoch 1: the loss has not fallen [x]" in err  # markup in a message is printed as text
    assert "epoch 1/2: train loss 2.3000" in err


def test_inspect_table_shows_float32_constants_as_written():
    assert readable_numbers("beta 0.8999999761581421, threshold 1.0") == "beta 0.9, threshold 1.0"
    assert readable_numbers("beta 0.800000011920929, threshold 0.5") == "beta 0.8, threshold 0.5"
    assert readable_numbers("1->12, 5x5, stride (1, 1), groups 1") == "1->12, 5x5, stride (1, 1), groups 1"


def test_compress_refuses_bad_threads(tmp_path):
    result = runner.invoke(app, ["compress", "--arch", "zoo:digits_csnn", "--ranks", "4", "-o", str(tmp_path / "c.tt"),
                                 "--threads", "0"])
    assert result.exit_code == 3 and "--threads must be" in result.stderr


def test_run_writes_stage_logs_and_prints_hints_and_epochs(tmp_path, one_thread):
    import yaml

    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"name": "tiny", "data": "digits", "threads": 1,
                                      "model": {"arch": "zoo:digits_csnn", "kwargs": {"width": 8}},
                                      "train": {"epochs": 1, "batch_size": 128, "logs": True}}))
    result = runner.invoke(app, ["run", str(recipe), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.stderr
    assert "train epoch 1/1: loss" in result.stderr and "train done: test accuracy" in result.stderr
    logs = tmp_path / "out" / "logs" / "train"
    assert sorted(p.name for p in logs.iterdir()) == ["events.out.tfevents.ttsnn", "metrics.csv"]
    assert [step for step, _ in read_event_file((logs / EVENTS_NAME).read_bytes())] == [1]
