"""Training speed and memory of MS-ResNet18 on CIFAR-shaped data: TT (PTT, the paper's CIFAR10 ranks)
against dense, and the folded multistep engine against per-step execution of the same TT model.

Side by side in one run (the machines are shared and noisy): the three configurations are timed
interleaved, step by step, on the same random batches [T, B, 3, 32, 32] (T = 4), and the median step
time is reported with its extrapolation to one CIFAR epoch (50,000 samples). Peak memory of one
training step is measured in fresh subprocesses (the kernel's peak RSS mark, reset just before the step,
minus the RSS at that moment), because torch's CPU allocator is invisible to tracemalloc; and counted exactly, allocator-independent:
the tensors autograd saves for backward plus the gradients and optimiser state the step creates. `--profile` prints where the time goes.

    PYTHONPATH=. python benchmarks/bench_training.py [--batch 16] [--steps 4] [--profile]

Goals (issue 3): TT >= 2.0x faster than dense; multistep >= 1.3x faster than per-step; TT peak
step memory <= 0.8x dense.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from ttsnn_cli.arch import build_arch
from ttsnn_cli.decompose import CompressConfig, compress_model
from ttsnn_cli.engine.memory import recomputing_tt
from ttsnn_cli.ranks import RankSpec
from ttsnn_cli.runner import run_timesteps
from ttsnn_cli.state import reset_states

PAPER_RANKS_R18_CIFAR10 = [24, 27, 25, 29, 37, 45, 43, 41, 65, 74, 70, 63, 104, 153, 186, 145]  # paper.md
EPOCH = 50_000


def build(kind: str, timesteps: int) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_arch("zoo:ms_resnet18", {"in_channels": 3, "num_classes": 10})
    if kind == "dense":
        return model
    names = [n for n, m in model.named_modules()
             if isinstance(m, torch.nn.Conv2d) and n.startswith("layer") and n.rsplit(".", 1)[-1] in ("conv1", "conv2")]
    overrides = {f"^{n}$".replace(".", r"\."): r for n, r in zip(names, PAPER_RANKS_R18_CIFAR10)}
    config = CompressConfig(RankSpec("fixed", None), mode="ptt", include=[f"^{n}$".replace(".", r"\.") for n in names],
                            overrides=overrides, timesteps=timesteps, svd="randomized_svd")
    model, _ = compress_model(model, config)
    return model


def forward(model: torch.nn.Module, x: torch.Tensor, per_step: bool) -> torch.Tensor:
    if not per_step:
        return run_timesteps(model, x, fold=True)
    reset_states(model)
    return torch.stack([model.forward_step(x[t]) for t in range(x.shape[0])])


def train_step(model, optimizer, x, y, per_step: bool) -> None:
    out = forward(model, x, per_step)
    loss = F.cross_entropy(out.mean(0), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) of this process (Linux >= 4.0); False if not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _peak_bytes() -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def memory_probe(kind: str, batch: int, timesteps: int) -> None:
    """Runs in a subprocess: peak memory of one training step, printed as JSON."""
    model = build(kind, timesteps).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    x = torch.rand(timesteps, batch, 3, 32, 32)
    y = torch.randint(0, 10, (batch,))
    before = _rss_bytes()
    reset = _reset_peak()  # building the TT model (TT-SVD) may have peaked higher than the step will
    train_step(model, optimizer, x, y, per_step=kind == "tt-per-step")
    peak = _peak_bytes() if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"kind": kind, "before": before, "peak": peak, "step_peak": max(peak - before, 0),
                      "params": sum(p.numel() for p in model.parameters())}))


def measure_memory(kind: str, batch: int, timesteps: int) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.dirname(os.path.dirname(os.path.abspath(__file__))), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--memory-probe", kind, "--batch", str(batch),
                           "--timesteps", str(timesteps)], capture_output=True, text=True, env=env, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def autograd_memory(model, x, y, per_step: bool = False) -> dict:
    """Bytes one training step must hold at its peak, counted exactly (allocator-independent): every
    tensor autograd saves for backward (deduplicated by storage, parameters excluded), plus the
    parameter gradients and the optimiser state (SGD momentum) the step creates."""
    params = list(model.parameters())
    param_ptrs = {p.untyped_storage().data_ptr() for p in params}
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in param_ptrs:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    optimizer = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-4)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = forward(model, x, per_step)
        loss = F.cross_entropy(out.mean(0), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    grads = sum(p.grad.numel() * p.grad.element_size() for p in params if p.grad is not None)
    state = sum(v.numel() * v.element_size() for st in optimizer.state.values() for v in st.values() if torch.is_tensor(v))
    return {"activations": sum(saved.values()), "grads_and_state": grads + state,
            "total": sum(saved.values()) + grads + state}


def profile(model, optimizer, x, y, per_step: bool, label: str) -> None:
    from torch.profiler import ProfilerActivity, profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        train_step(model, optimizer, x, y, per_step)
    print(f"\n-- profile: {label} (one training step, top ops by self CPU time)")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10, max_name_column_width=40))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per configuration (after one warm-up)")
    parser.add_argument("--timesteps", type=int, default=4)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--memory-probe", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_probe:
        memory_probe(args.memory_probe, args.batch, args.timesteps)
        return

    kinds = {"dense": ("dense", False), "tt": ("tt", False), "tt-recompute": ("tt", False), "tt-per-step": ("tt", True)}
    models = {"dense": build("dense", args.timesteps), "tt": build("tt", args.timesteps)}
    optimizers = {k: torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4) for k, m in models.items()}
    torch.manual_seed(1)
    batches = [(torch.rand(args.timesteps, args.batch, 3, 32, 32), torch.randint(0, 10, (args.batch,)))
               for _ in range(args.steps + 1)]
    times: dict[str, list[float]] = {k: [] for k in kinds}
    for index, (x, y) in enumerate(batches):
        for kind, (model_key, per_step) in kinds.items():
            start = time.perf_counter()
            with recomputing_tt(models[model_key], enabled=kind == "tt-recompute"):
                train_step(models[model_key], optimizers[model_key], x, y, per_step)
            if index > 0:  # the first step is warm-up
                times[kind].append(time.perf_counter() - start)
    median = {k: statistics.median(v) for k, v in times.items()}
    params = {k: sum(p.numel() for p in m.parameters()) for k, m in models.items()}

    print(f"MS-ResNet18, CIFAR-shaped random data, T={args.timesteps}, batch {args.batch}, "
          f"{args.steps} timed steps each (interleaved), torch threads {torch.get_num_threads()}")
    print(f"params: dense {params['dense']:,}, TT (PTT, paper CIFAR10 ranks) {params['tt']:,} "
          f"({params['dense'] / params['tt']:.2f}x fewer)")
    print(f"{'configuration':<26}{'median s/step':>14}{'samples/s':>11}{'epoch (50k) h':>15}")
    for kind in kinds:
        per_sample = median[kind] / args.batch
        print(f"{kind:<26}{median[kind]:>14.3f}{1 / per_sample:>11.1f}{per_sample * EPOCH / 3600:>15.2f}")
    rows = [
        ("TT vs dense, speed-up", median["dense"] / median["tt"], ">= 2.0x"),
        ("multistep vs per-step (TT), speed-up", median["tt-per-step"] / median["tt"], ">= 1.3x"),
    ]
    x, y = batches[0]
    exact = {k: autograd_memory(models[k], x, y) for k in ("dense", "tt")}
    with recomputing_tt(models["tt"]):
        exact["tt-recompute"] = autograd_memory(models["tt"], x, y)
    print(f"{'memory one step holds':<26}{'activations MB':>15}{'grads+momentum MB':>19}{'total MB':>10}")
    for kind, m in exact.items():
        print(f"{kind:<26}{m['activations'] / 2**20:>15.1f}{m['grads_and_state'] / 2**20:>19.1f}{m['total'] / 2**20:>10.1f}")
    rows.append(("TT / dense, step memory (exact count)", exact["tt"]["total"] / exact["dense"]["total"], "<= 0.8x"))
    rows.append(("TT recompute / dense, same count", exact["tt-recompute"]["total"] / exact["dense"]["total"], "<= 0.8x"))
    rows.insert(1, ("TT recompute vs dense, speed-up", median["dense"] / median["tt-recompute"], ">= 2.0x"))
    if not args.no_memory:
        memory = {k: measure_memory(k, args.batch, args.timesteps) for k in ("dense", "tt")}
        print(f"{'peak memory of one step':<26}{'step peak MB':>14}{'peak RSS MB':>13}")
        for kind, m in memory.items():
            print(f"{kind:<26}{m['step_peak'] / 2**20:>14.1f}{m['peak'] / 2**20:>13.1f}")
        rows.append(("TT / dense, step peak RSS increase", memory["tt"]["step_peak"] / memory["dense"]["step_peak"], "<= 0.8x"))
        rows.append(("TT / dense, peak RSS during the step", memory["tt"]["peak"] / memory["dense"]["peak"], "(info)"))
    print(f"\n{'ratio':<40}{'measured':>10}{'goal':>10}")
    for name, value, goal in rows:
        print(f"{name:<40}{value:>9.2f}x{goal:>10}")
    if args.profile:
        x, y = batches[0]
        profile(models["dense"], optimizers["dense"], x, y, False, "dense, folded")
        profile(models["tt"], optimizers["tt"], x, y, False, "TT PTT, folded")
        profile(models["tt"], optimizers["tt"], x, y, True, "TT PTT, per step")


if __name__ == "__main__":
    main()
