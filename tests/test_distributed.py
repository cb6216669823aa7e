"""Two CPU processes under torchrun: DistributedDataParallel with gloo, only rank 0 writes and prints."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


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
