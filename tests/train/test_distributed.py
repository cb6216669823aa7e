"""Two CPU processes under torchrun: DistributedDataParallel with gloo, only rank 0 writes and prints."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]


def test_torchrun_two_processes_train(tmp_path):
    out = tmp_path / "ddp.tt"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "ttsnn_cli", "train", "--arch", "zoo:digits_csnn", "--arch-kwargs", '{"width": 4}',
         "--data", "digits", "-o", str(out), "--epochs", "2", "--timesteps", "2", "--batch-size", "64", "--json"],
        capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(proc.stdout)  # exactly one JSON document: rank 1 printed nothing
    assert doc["world_size"] == 2 and doc["epochs"] == 2
    assert doc["history"][1]["train_loss"] < doc["history"][0]["train_loss"]
    bundle = torch.load(out, weights_only=True)
    assert bundle["history"][-1]["epochs"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp.tt", "ddp.tt.metrics.jsonl", "ddp.tt.resume.pt"]


def test_torchrun_two_processes_finetune_with_a_teacher(tmp_path):
    """Distillation under DDP: each process runs its own frozen teacher; only rank 0 writes."""
    from ttsnn_cli.compress.decompose import CompressConfig, compress_model
    from ttsnn_cli.maths.ranks import parse_rank_spec
    from ttsnn_cli.storage.bundle import get_meta, save_bundle
    from ttsnn_cli.zoo import zoo_entry

    torch.manual_seed(0)
    dense = zoo_entry("digits_csnn").factory(width=4)
    torch.save(dense.state_dict(), tmp_path / "dense.pt")
    student = zoo_entry("digits_csnn").factory(width=4)
    student.load_state_dict(dense.state_dict())
    student, _ = compress_model(student, CompressConfig(ranks=parse_rank_spec(2, None), exclude=[r"stem\.conv"]))
    meta = get_meta(student)
    meta.arch, meta.arch_kwargs = "zoo:digits_csnn", {"width": 4}
    save_bundle(tmp_path / "tt.tt", student, meta)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "ttsnn_cli", "finetune", str(tmp_path / "tt.tt"), "--teacher", str(tmp_path / "dense.pt"),
         "--data", "digits", "-o", str(tmp_path / "tuned.tt"), "--epochs", "1", "--timesteps", "2",
         "--batch-size", "64", "--distill-weight", "0.5", "--json"],
        capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(proc.stdout)
    assert doc["world_size"] == 2 and doc["distilled"] and doc["teacher"] == str(tmp_path / "dense.pt")
    bundle = torch.load(tmp_path / "tuned.tt", weights_only=True)
    assert bundle["history"][-1]["teacher"] == str(tmp_path / "dense.pt")
    assert torch.load(tmp_path / "dense.pt", weights_only=True).keys() == dense.state_dict().keys()
