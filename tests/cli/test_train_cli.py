"""`ttsnn train` / `ttsnn finetune` through CliRunner, and once as a real subprocess."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from ttsnn_cli.cli.commands import app
from ttsnn_cli.compress.decompose import CompressConfig, compress_model
from ttsnn_cli.layers.conv2d import TTConv2d
from ttsnn_cli.maths.ranks import parse_rank_spec
from ttsnn_cli.storage.bundle import get_meta, save_bundle
from ttsnn_cli.storage.load import load_checkpoint

ROOT = Path(__file__).resolve().parents[2]
FAST = ["--epochs", "1", "--timesteps", "2", "--batch-size", "128", "--arch-kwargs", '{"width": 4}']


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    out = tmp_path_factory.mktemp("train") / "dense.tt"
    result = invoke("train", "--arch", "zoo:digits_csnn", "--data", "digits", "-o", out, *FAST, "--json")
    assert result.exit_code == 0, result.stderr
    return out, json.loads(result.stdout)


def test_train_writes_a_dense_bundle(dense):
    out, doc = dense
    for key in ("epochs", "train_loss", "test_accuracy", "output"):
        assert key in doc
    assert doc["epochs"] == 1 and doc["output"] == str(out) and 0 <= doc["test_accuracy"] <= 100
    model = load_checkpoint(out)
    meta = get_meta(model)
    assert meta.arch == "zoo:digits_csnn" and meta.arch_kwargs == {"width": 4}
    assert meta.io.to_dict() == {"input_shape": [1, 16, 16], "timesteps": 2, "data": "digits"}
    assert meta.history[-1]["stage"] == "train"
    assert out.with_name("dense.tt.metrics.jsonl").is_file()


def test_finetune_a_tt_bundle(dense, tmp_path):
    out, _ = dense
    model = load_checkpoint(out)
    model, _ = compress_model(model, CompressConfig(ranks=parse_rank_spec(2, None), mode="htt",
                                                    exclude=[r"stem\.conv"], timesteps=2))
    compressed = tmp_path / "tt.tt"
    save_bundle(compressed, model, get_meta(model))
    tuned = tmp_path / "tuned.tt"
    result = invoke("finetune", compressed, "-o", tuned, "--epochs", "1", "--lr", "0.01", "--train", "cores", "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["data"] == "digits" and doc["timesteps"] == 2  # from the bundle
    loaded = load_checkpoint(tuned)
    assert any(isinstance(m, TTConv2d) and m.mode == "htt" for m in loaded.modules())
    assert [h["stage"] for h in get_meta(loaded).history] == ["train", "finetune"]


def test_human_output_goes_to_stderr(dense, tmp_path):
    out, _ = dense
    result = invoke("finetune", out, "-o", tmp_path / "x.tt", "--epochs", "1", "--batch-size", "256")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "" and "test acc" in result.stderr


@pytest.mark.parametrize("args,match", [
    (["--data", "cifar10:/nope"], "not found"),
    (["--data", "digits", "--epochs", "0"], "--epochs"),
    (["--data", "digits", "--optimizer", "lbfgs"], "--optimizer"),
    (["--data", "digits", "--arch-kwargs", '{"num_classes": 3, "width": 4}'], "3 outputs"),
    (["--data", "digits", "--arch-kwargs", '{"in_channels": 3, "width": 4}'], "cannot consume"),
    (["--data", "digits", "--resume"], "no resume state"),
])
def test_bad_input_exits_3(tmp_path, args, match):
    result = invoke("train", "--arch", "zoo:digits_csnn", "-o", tmp_path / "o.tt", "--timesteps", "2", *args)
    assert result.exit_code == 3, (result.stdout, result.stderr)
    assert match in result.stderr and "Traceback" not in result.stderr


def test_existing_output_needs_force(dense):
    out, _ = dense
    result = invoke("finetune", out, "-o", out)
    assert result.exit_code == 3 and "input" in result.stderr


def test_subprocess_json_is_the_only_stdout(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = tmp_path / "s.tt"
    proc = subprocess.run(
        [sys.executable, "-m", "ttsnn_cli", "train", "--arch", "zoo:digits_csnn", "--data", "digits", "-o", str(out),
         *FAST, "--json"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["output"] == str(out) and out.is_file()
    assert torch.load(out, weights_only=True)["io"]["data"] == "digits"


def test_run_recipe_train_compress_finetune(tmp_path):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(
        "name: tiny\ndata: digits\nmodel:\n  arch: zoo:digits_csnn\n  kwargs: {width: 4}\n  timesteps: 2\n"
        "train: {epochs: 1, batch_size: 128}\n"
        "compress: {ranks: 2, mode: ptt, exclude: ['stem\\.conv']}\n"
        "finetune: {epochs: 1, batch_size: 128, train: cores}\n"
    )
    result = invoke("run", recipe, "--out", tmp_path / "run", "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert {"train", "compress", "finetune"} <= set(doc)
    for stage in ("train", "finetune"):
        assert {"epochs", "train_loss", "test_accuracy", "output"} <= set(doc[stage])
    assert doc["finetune"]["output"].endswith("finetuned.tt")
    tuned = load_checkpoint(doc["finetune"]["output"])
    assert [h["stage"] for h in get_meta(tuned).history] == ["train", "compress", "finetune"]
    assert get_meta(tuned).io.timesteps == 2


def test_recipe_training_sections_are_validated(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("data: digits\nmodel: {arch: zoo:digits_csnn}\ntrain: {epochs: 0, optimiser: sgd}\n")
    result = invoke("run", recipe, "--out", tmp_path / "r")
    assert result.exit_code == 3
    assert "train.epochs" in result.stderr and "train.optimiser" in result.stderr and "unknown key" in result.stderr


@pytest.mark.slow  # ~25 s: three training subprocesses
def test_kill_9_then_resume_matches_uninterrupted(tmp_path):
    """A training process killed with SIGKILL after an epoch resumes to the uninterrupted weights."""
    import signal
    import time

    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    args = ["--arch", "zoo:digits_csnn", "--data", "digits", "--epochs", "4", "--timesteps", "2",
            "--batch-size", "64", "--arch-kwargs", '{"width": 4}', "--seed", "5"]
    command = [sys.executable, "-m", "ttsnn_cli", "train", *args]
    straight = subprocess.run([*command, "-o", str(tmp_path / "a.tt")], capture_output=True, env=env, timeout=300)
    assert straight.returncode == 0, straight.stderr
    killed_out = tmp_path / "b.tt"
    state = tmp_path / "b.tt.resume.pt"
    proc = subprocess.Popen([*command, "-o", str(killed_out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 240
    while not state.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved_epoch = torch.load(state, weights_only=True)["epoch"]
    resumed = subprocess.run([*command, "-o", str(killed_out), "--resume", "--json"], capture_output=True, text=True,
                             env=env, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["resumed_from_epoch"] == saved_epoch
    a = torch.load(tmp_path / "a.tt", weights_only=True)["state_dict"]
    b = torch.load(killed_out, weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
