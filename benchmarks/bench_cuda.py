"""Training step speed, step memory and kernels per step on a CUDA device: MS-ResNet18 at CIFAR shapes
(3x32x32), T = 4, the paper's CIFAR10 ranks, PTT, SGD, side by side in one process.

Configurations (the same models and step as `bench_training.py`): the TT-SNN paper's code's execution
pattern (`reference_pattern.py`: dense and PTT), ttsnn dense and PTT, PTT with `--recompute-tt`,
ttsnn dense and PTT under bf16 (and fp16) autocast as `--precision` runs them, and the same steps
compiled as `--compile` runs them (torch.compile; CUDA graphs on CUDA; two warm-up rounds compile). For every batch size:
- step time: every configuration takes one step in turn on the same batch, `--steps` rounds after
  two warm-up rounds, synchronised before and after; the median is reported, with each row's speed
  relative to ttsnn's dense fp32 step;
- step peak memory: `torch.cuda.max_memory_allocated` over one step minus what was allocated before
  it (weights, gradients and optimiser state are already there);
- kernels per step: the CUDA kernels torch.profiler records over one step; ops per step: the ATen
  ops that do work dispatched in one eager step (`op_count`), on any device: on the CPU the one view
  of what the host will launch on a GPU;
- one neuron layer alone, forward and backward: the fused kernel (Triton on CUDA) against its
  PyTorch loop (`dense LIF loop` and `PTT LIF loop` are the whole steps with the loop).
`--epoch N` also times one epoch through the command line on N CIFAR-format images written to a
temporary folder (`ttsnn train` dense, `ttsnn finetune` PTT; samples/s from their JSON), the whole
epoch against the bare step, with batches made on the device and (", DataLoader") read sample by sample.

    PYTHONPATH=. python benchmarks/bench_cuda.py [--device cuda] [--batches 32,128,512] [--steps 12] [--epoch 10000]
        [--json results.json]

On a machine without a GPU, `--device cpu --batches 4 --steps 1` runs every code path (the test suite
does) with no figures worth reading. Figures and the command: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_training import build, levers, loss_of, sgd  # noqa: E402
from op_count import work_ops  # noqa: E402

from ttsnn_cli.spiking import lif_kernel, lif_triton  # noqa: E402
from ttsnn_cli.spiking.lif_sequence import _LIFSequence  # noqa: E402
from ttsnn_cli.spiking.neurons import freeze_for_compile  # noqa: E402
from ttsnn_cli.spiking.runner import run_timesteps  # noqa: E402
from ttsnn_cli.train.kernel_plan import choose, kernel_paths, measure_plan, uniform_plan  # noqa: E402
from ttsnn_cli.train.precision import autocast, grad_scaler  # noqa: E402

class Config(NamedTuple):
    """One row: the model (`bench_training.build` kind), and how the step runs it."""

    kind: str
    recompute: bool = False  # --recompute-tt
    precision: str = "fp32"  # --precision
    kernel: str = "factored"  # --tt-kernel
    compiled: bool = False  # --compile (train.compiled): torch.compile, on CUDA as CUDA graphs
    off: tuple[str, ...] = ()  # levers switched off (`bench_training.levers`), e.g. the fused LIF kernel


CONFIGS = {
    "paper dense": Config("paper-dense"),
    "paper PTT": Config("paper-ptt"),
    "dense": Config("dense"),
    "PTT": Config("tt"),
    # the neurons on their PyTorch loop, not the fused kernel (Triton on CUDA, C on the CPU)
    "dense LIF loop": Config("dense", off=("native",)),
    "PTT LIF loop": Config("tt", off=("native",)),
    # BatchNorm after the TT layers as its own module, never through the rank bottleneck (more kernels
    # launched there, less memory traffic): which pays on this GPU, and at which batch
    "PTT BN modules": Config("tt", off=("lowrank_bn",)),
    "PTT rebuilt": Config("tt", kernel="rebuilt"),
    "PTT auto": Config("tt", kernel="auto"),
    "PTT recompute": Config("tt", recompute=True),
    "dense bf16": Config("dense", precision="bf16"),
    "PTT bf16": Config("tt", precision="bf16"),
    "PTT bf16 BN modules": Config("tt", precision="bf16", off=("lowrank_bn",)),
    "PTT bf16 auto": Config("tt", precision="bf16", kernel="auto"),
    "dense fp16": Config("dense", precision="fp16"),
    "PTT fp16": Config("tt", precision="fp16"),
    "dense compiled": Config("dense", compiled=True),
    "PTT compiled": Config("tt", compiled=True),
    "PTT rebuilt compiled": Config("tt", kernel="rebuilt", compiled=True),
    "dense bf16 compiled": Config("dense", precision="bf16", compiled=True),
    "PTT bf16 compiled": Config("tt", precision="bf16", compiled=True),
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Step:
    """One configuration's training step, as the engine takes it (autocast forward, float32 loss,
    scaled backward for fp16), each TT layer on the path `--tt-kernel` gives it (`auto`: measured
    per layer on this batch, as `ttsnn finetune` does)."""

    def __init__(self, name: str, models: dict[str, torch.nn.Module], device: torch.device, timesteps: int,
                 image: torch.Tensor) -> None:
        config = CONFIGS[name]
        kind, kernel, self.recompute, self.precision, self.off = (config.kind, config.kernel, config.recompute,
                                                                  config.precision, config.off)
        self.model = models[kind]
        self.compiled = config.compiled
        self.loss: Callable[..., torch.Tensor] = loss_of
        if config.compiled:  # the step as `--compile` runs it (compiled on its first call)
            freeze_for_compile(self.model)
            self.loss = torch.compile(loss_of, mode="reduce-overhead" if device.type == "cuda" else None, dynamic=False)
        self.optimizer = sgd(self.model)
        self.scaler = grad_scaler(self.precision, device)
        self.device, self.timesteps = device, timesteps
        self.plan: dict[str, str] = {}
        if kind == "tt" and kernel == "auto":
            inputs = image.unsqueeze(0).expand(timesteps, *image.shape)
            self.plan = choose(measure_plan(self.model, lambda: run_timesteps(self.model, inputs),
                                            context=lambda: autocast(self.precision, device)))
        elif kind == "tt":
            self.plan = uniform_plan(self.model, kernel)

    def __call__(self, image: torch.Tensor, y: torch.Tensor) -> None:
        with levers(self.model, self.off, self.recompute), kernel_paths(self.model, self.plan):
            with autocast(self.precision, self.device):
                loss = self.loss(self.model, image, y, self.timesteps)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss.float()).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()


def time_steps(steps: dict[str, Step], image: torch.Tensor, y: torch.Tensor, rounds: int) -> dict[str, float]:
    """Median seconds per step, the configurations interleaved round by round."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    device = image.device
    for round_ in range(rounds + 2):
        for name, step in steps.items():
            _sync(device)
            start = time.perf_counter()
            step(image, y)
            _sync(device)
            if round_ >= 2:  # two warm-up rounds: cuDNN's autotuning, the allocator's first blocks
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def step_peak(step: Step, image: torch.Tensor, y: torch.Tensor) -> float | None:
    """MB the step adds at its peak over what was allocated before it (CUDA only)."""
    if image.device.type != "cuda":
        return None
    gc.collect()
    _sync(image.device)
    before = torch.cuda.memory_allocated(image.device)
    torch.cuda.reset_peak_memory_stats(image.device)
    step(image, y)
    _sync(image.device)
    return (torch.cuda.max_memory_allocated(image.device) - before) / 2**20


def kernels_per_step(step: Step, image: torch.Tensor, y: torch.Tensor) -> int | None:
    """The device kernels torch.profiler sees in one step (CUDA only)."""
    if image.device.type != "cuda":
        return None
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        step(image, y)
        _sync(image.device)
    return sum(1 for event in prof.events() if event.device_type == torch.autograd.DeviceType.CUDA)


def ops_per_step(step: Step, image: torch.Tensor, y: torch.Tensor) -> int | None:
    """The ATen ops that do work in one eager step (`op_count`); None for a compiled step."""
    return None if step.compiled else sum(work_ops(lambda: step(image, y)).values())


def _write_cifar(folder: Path, images: int) -> Path:
    """CIFAR-10 "python version" batches of random images (the speed does not depend on content)."""
    root = folder / "cifar-10-batches-py"
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    per = -(-images // 5)
    for index in range(1, 6):
        batch = {b"data": rng.integers(0, 256, (per, 3072), dtype=np.uint8),
                 b"labels": rng.integers(0, 10, per).tolist()}
        (root / f"data_batch_{index}").write_bytes(pickle.dumps(batch))
    test = {b"data": rng.integers(0, 256, (1000, 3072), dtype=np.uint8), b"labels": rng.integers(0, 10, 1000).tolist()}
    (root / "test_batch").write_bytes(pickle.dumps(test))
    return folder


def epoch_through_cli(images: int, batch: int, device: str) -> dict[str, float]:
    """Samples/s of one epoch of `ttsnn train` (dense) and `ttsnn finetune` (PTT at the paper's ranks),
    each with its batches made on the device (the default, `train.batches`) and through a DataLoader
    (`TTSNN_DATA_ON_DEVICE=off`, the rows ending ", DataLoader")."""
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as folder:
        data = f"cifar10:{_write_cifar(Path(folder) / 'data', images)}"
        dense, tt = Path(folder) / "dense.tt", Path(folder) / "ptt.tt"
        common = ["--epochs", "1", "--batch-size", str(batch), "--device", device, "--json", "--timesteps", "4"]
        runs = {
            "ttsnn train (dense)": ["train", "--arch", "zoo:ms_resnet18", "--arch-kwargs",
                                    '{"in_channels": 3, "num_classes": 10}', "--data", data, "-o", str(dense)],
            "ttsnn finetune (PTT)": ["finetune", str(tt), "--data", data, "-o", str(Path(folder) / "tuned.tt")],
        }
        for name, args in runs.items():
            if name.startswith("ttsnn finetune"):  # PTT at the paper's per-layer ranks, as its recipe names them
                recipe = Path(__file__).resolve().parent.parent / "recipes" / "cifar10-resnet18-ptt.yaml"
                subprocess.run([sys.executable, "-m", "ttsnn_cli", "compress", str(dense), "-o", str(tt), "--recipe",
                                str(recipe)], check=True, capture_output=True)
            for way, switch in (("", None), (", DataLoader", "off")):
                env = {k: v for k, v in os.environ.items() if k != "TTSNN_DATA_ON_DEVICE"}
                if switch:
                    env["TTSNN_DATA_ON_DEVICE"] = switch
                done = subprocess.run([sys.executable, "-m", "ttsnn_cli", *args, *common, "--force"], check=True,
                                      capture_output=True, text=True, env=env)
                history = json.loads(done.stdout)["history"]
                out[name + way] = history[-1]["samples_per_s"]
    return out


def time_lif(device: torch.device, batch: int, timesteps: int, rounds: int) -> dict[str, float]:
    """Forward and backward of one neuron layer on the first stage's shape [T, batch, 64, 32, 32], ms
    (median over `rounds`, interleaved): the fused kernel (`native`) against the PyTorch loop."""
    seq = torch.randn(timesteps, batch, 64, 32, 32, device=device) * 0.6 + 0.2
    grad = torch.randn_like(seq)
    beta, threshold = torch.tensor(0.25, device=device), torch.tensor(0.5, device=device)
    times: dict[str, list[float]] = {"fused": [], "loop": []}
    for round_ in range(rounds + 2):
        for name in times:
            x = seq.clone().requires_grad_()
            _sync(device)
            start = time.perf_counter()
            spikes, _ = _LIFSequence.apply(x, beta, threshold, 1, name == "fused")
            spikes.backward(grad)
            _sync(device)
            if round_ >= 2:
                times[name].append(time.perf_counter() - start)
    return {name: 1000 * statistics.median(values) for name, values in times.items()}


def run(device: torch.device, batches: list[int], rounds: int, timesteps: int, names: list[str],
        report: Callable[[str], None]) -> dict:
    kinds = {CONFIGS[name].kind for name in names}
    models = {kind: build(kind, timesteps).to(device).train() for kind in kinds}
    results: dict = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                     "torch": torch.__version__, "timesteps": timesteps, "batches": {}}
    for batch in batches:
        torch.manual_seed(1)
        image = torch.rand(batch, 3, 32, 32, device=device)
        y = torch.randint(0, 10, (batch,), device=device)
        steps = {name: Step(name, models, device, timesteps, image) for name in names}
        for name, step in steps.items():
            if CONFIGS[name].kernel == "auto":
                report(f"{name}: {sum(p == 'rebuilt' for p in step.plan.values())} of {len(step.plan)} TT layers "
                       "measured faster rebuilt")
        seconds = time_steps(steps, image, y, rounds)
        rows = {name: {"ms": 1000 * seconds[name], "peak_mb": step_peak(steps[name], image, y),
                       "kernels": kernels_per_step(steps[name], image, y),
                       "ops": ops_per_step(steps[name], image, y)} for name in names}
        dense = seconds.get("dense")
        for name, row in rows.items():
            row["speed_vs_dense"] = dense / seconds[name] if dense else None
        results["batches"][batch] = rows
        report(f"\nbatch {batch}: {'configuration':<21} {'step ms':>9} {'vs dense':>9} {'peak MB':>9} {'kernels':>8} {'ops':>6}")
        for name, row in rows.items():
            peak = f"{row['peak_mb']:.0f}" if row["peak_mb"] is not None else "-"
            kernels = str(row["kernels"]) if row["kernels"] is not None else "-"
            ops = str(row["ops"]) if row["ops"] is not None else "-"
            speed = f"{row['speed_vs_dense']:.2f}x" if row["speed_vs_dense"] else "-"
            report(f"{'':9}{name:<21} {row['ms']:>9.1f} {speed:>9} {peak:>9} {kernels:>8} {ops:>6}")
        del steps
        gc.collect()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batches", default="32,128,512")
    parser.add_argument("--steps", type=int, default=12, help="timed rounds (after two warm-up rounds)")
    parser.add_argument("--timesteps", type=int, default=4)
    parser.add_argument("--only", default="", help="comma-separated configuration names (default: all)")
    parser.add_argument("--epoch", type=int, default=0, help="also time one CLI epoch on this many CIFAR-format images")
    parser.add_argument("--json", default=None, help="write the figures to this file")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device here (use --device cpu for a dry run)")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(CONFIGS)
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        parser.error(f"unknown configuration(s) {unknown}; choose from {list(CONFIGS)}")
    print(f"MS-ResNet18, CIFAR shapes, T={args.timesteps}, SGD, {args.steps} interleaved rounds (median), "
          f"{device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}), torch {torch.__version__}")
    print(f"fused LIF kernel: Triton {lif_triton.status()}; C {lif_kernel.build_status()}")
    batches = [int(b) for b in args.batches.split(",")]
    results = run(device, batches, args.steps, args.timesteps, names, print)
    results["lif_ms"] = {}
    for batch in batches:
        lif = results["lif_ms"][batch] = time_lif(device, batch, args.timesteps, args.steps)
        print(f"one LIF layer [{args.timesteps}, {batch}, 64, 32, 32], forward + backward: fused {lif['fused']:.2f} ms, "
              f"PyTorch loop {lif['loop']:.2f} ms ({lif['loop'] / lif['fused']:.2f}x)")
    if args.epoch:
        batch = 128
        epoch = epoch_through_cli(args.epoch, batch, args.device)
        bare = {"ttsnn train (dense)": results["batches"].get(batch, {}).get("dense"),
                "ttsnn finetune (PTT)": results["batches"].get(batch, {}).get("PTT")}
        print(f"\none epoch of {args.epoch} CIFAR-format images through the CLI, batch {batch}:")
        for name, rate in epoch.items():
            step = bare[name.split(",")[0]]
            share = f", {rate / (batch / (step['ms'] / 1000)):.0%} of the bare step's" if step else ""
            print(f"  {name:<22} {rate:8.0f} samples/s{share}")
        results["epoch"] = epoch
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
