"""Training speed and memory of MS-ResNet18 on CIFAR-shaped data (3x32x32, T = 4, SGD): ttsnn's TT
(PTT, the paper's CIFAR10 ranks) and dense models against the TT-SNN paper's code's execution
pattern (`reference_pattern.py`: its dense and PTT variants), and the levers behind the difference.

Side by side in one run (the machines are shared and noisy): the configurations take one step each
in turn on the same batch (one image batch repeated over T, direct encoding), in this process, which
keeps freed memory as the `ttsnn` command does (`allocator.keep_freed_memory`); the median step time
is reported. With `--processes N` each configuration runs instead in its own worker process, N
rounds of fresh workers, as separate training runs would: one process then runs 10-15 % off another
of the same configuration at batch 8, so the in-process comparison is the finer one. A fresh worker
keeping its freed memory grows its heap over its first steps (at batch 32, TT workers timed 2.30x
against dense with `--steps 3 --processes 2`, 2.48x with `--steps 8 --processes 1`), so give
workers `--steps 8` at batch 32. Memory, per configuration:
- step peak: in a fresh subprocess, after one warm-up step, the rise of the kernel's peak-RSS mark
  (reset just before the step) over the RSS at that moment. glibc's malloc runs with a fixed mmap
  threshold there, so freed tensors go back to the OS and RSS follows the live tensors;
- resident (with `--processes`): the worker's own peak RSS above the built model, with the allocator
  keeping freed memory: what a training process really holds;
- exact count (allocator-independent): the bytes of every tensor autograd saves for backward
  (deduplicated by storage, parameters excluded) plus the gradients and SGD momentum.
`--levers` times each of ttsnn's speed and memory levers switched off one at a time (and
`--recompute-tt`, `torch.compile` switched on), against the defaults; `--profile` prints where the
time goes; `--layers` times one 3x3 layer per stage, TT against dense, in both memory formats;
`--fused-bn` times a TT layer's last core and BatchNorm per stage, fused (`lowrank_bn`) or not.

    PYTHONPATH=. python benchmarks/bench_training.py --batch 8 [--steps 5] [--processes 2] [--levers] [--profile] [--layers] [--fused-bn]
    PYTHONPATH=. python benchmarks/bench_training.py --batch 128 --exact-only fp32,bf16   (memory only, exact counts)

Targets: ttsnn PTT >= 2.5x faster than the paper code's PTT step and than ttsnn's dense
step; its step peak at batch 32 <= 0.45x the paper PTT's and below ttsnn dense's.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F

from ttsnn_cli.compress.decompose import CompressConfig, compress_model
from ttsnn_cli.layers import lowrank_bn
from ttsnn_cli.layers.conv2d import TTConv2d
from ttsnn_cli.maths.ranks import RankSpec
from ttsnn_cli.spiking import lif_kernel
from ttsnn_cli.spiking.neurons import MultiStepLIF
from ttsnn_cli.spiking.runner import run_timesteps
from ttsnn_cli.storage.trust import build_arch
from ttsnn_cli.train.allocator import keep_freed_memory
from ttsnn_cli.train.engine import TrainConfig
from ttsnn_cli.train.optimizers import make_optimizer
from ttsnn_cli.train.precision import autocast
from ttsnn_cli.train.layout import match_weights_to_activations, restore_weights
from ttsnn_cli.train.memory import recomputing_tt
from ttsnn_cli.zoo.msresnet import MSBlock, MSResNet

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference_pattern import ReferenceMSResNet18  # noqa: E402

PAPER_RANKS_R18_CIFAR10 = [24, 27, 25, 29, 37, 45, 43, 41, 65, 74, 70, 63, 104, 153, 186, 145]  # the TT-SNN paper, Table I
MAIN = ("paper dense", "paper PTT", "dense", "PTT", "PTT recompute")


def build(kind: str, timesteps: int, off: tuple[str, ...] = ()) -> torch.nn.Module:
    """`dense`/`tt`: ttsnn's MS-ResNet18, dense or PTT at the paper's ranks, its conv weights in the
    layout its activations run in, as `ttsnn` trains it (`train.layout`; with `channels_last` or
    `last_stage_channels_last` in `off`, as those levers run the activations); `paper-dense`/
    `paper-ptt`: the same network in the reference code's execution pattern."""
    torch.manual_seed(0)
    if kind.startswith("paper"):
        return ReferenceMSResNet18(PAPER_RANKS_R18_CIFAR10 if kind == "paper-ptt" else None, timesteps)
    model = build_arch("zoo:ms_resnet18", {"in_channels": 3, "num_classes": 10})
    if kind != "dense":
        names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d) and n.startswith("layer")
                 and n.rsplit(".", 1)[-1] in ("conv1", "conv2")]
        overrides = {f"^{n}$".replace(".", r"\."): r for n, r in zip(names, PAPER_RANKS_R18_CIFAR10)}
        config = CompressConfig(RankSpec("fixed", None), mode="ptt", overrides=overrides, timesteps=timesteps,
                                include=[f"^{n}$".replace(".", r"\.") for n in names], svd="randomized_svd")
        model, _ = compress_model(model, config)
    if "channels_last" not in off and "weights" not in off:
        match_weights_to_activations(model)
        if "last_stage_channels_last" in off:
            restore_weights([p for p in model.layer4.parameters() if not p.is_contiguous()])
    return model


@contextlib.contextmanager
def levers(model: torch.nn.Module, off: tuple[str, ...] = (), recompute: bool = False) -> Iterator[None]:
    """Switch ttsnn's levers off for the block (runtime flags only): `native` (the one-node LIF's
    compiled kernel, `lif_kernel`), `lif_omp` (that kernel split over torch's OpenMP threads: off, it
    runs on the calling thread), `one_node` (the LIF as one autograd node keeping one state byte
    per neuron), `channels_last` (everywhere) or `last_stage_channels_last` (layer4 only),
    `weights` (conv weights in the activations' layout: `build` sets it, per model, as a run does),
    `lowrank_bn` (BatchNorm after a TT layer through its rank bottleneck, `ttsnn_cli/layers/lowrank_bn.py`),
    `in_place` (PTT's branch sum and the blocks' residual sum into an existing output buffer),
    `sliced` (that BatchNorm's products over all pixels cut into one slice per thread),
    `static_stem` (the stem run once for the T identical frames of direct encoding); and
    variants that are not defaults on: `packed` (the convs reading spikes keep that byte rather than
    floats, part of `--recompute-tt`), and `recompute`, the whole of `--recompute-tt`."""
    flags = [(m, "one_node", False) for m in model.modules() if isinstance(m, MultiStepLIF) and "one_node" in off]
    flags += [(m, "native", False) for m in model.modules() if isinstance(m, MultiStepLIF) and "native" in off]
    flags += [(m, "pack_spikes", True) for m in model.modules() if isinstance(m, MSBlock) and "packed" in off]
    flags += [(m, "channels_last", False) for m in model.modules() if isinstance(m, MSResNet) and "channels_last" in off]
    flags += [(m, "stem_once", False) for m in model.modules() if isinstance(m, MSResNet) and "static_stem" in off]
    flags += [(m, "sum_in_place", False) for m in model.modules()
              if isinstance(m, (TTConv2d, MSBlock)) and "in_place" in off]
    for module, name, value in flags:
        setattr(module, name, value)
    hooks = []
    fused_from, kernel_threads, slice_from = lowrank_bn.MIN_ROWS, lif_kernel.THREADS, lowrank_bn.MIN_ROWS_PER_SLICE
    if "sliced" in off:
        lowrank_bn.MIN_ROWS_PER_SLICE = sys.maxsize
    if "lif_omp" in off:
        lif_kernel.THREADS = 1
    if "lowrank_bn" in off:
        lowrank_bn.MIN_ROWS = sys.maxsize  # the default path never pays; --recompute-tt still fuses
    if "last_stage_channels_last" in off:  # a variant, not a lever: the last stage in NCHW
        hooks.append(model.layer4.register_forward_pre_hook(lambda module, args: (args[0].contiguous(),)))
    try:
        with recomputing_tt(model, enabled=recompute):
            yield
    finally:
        for module, name, _ in flags:
            delattr(module, name)  # back to the class default
        for hook in hooks:
            hook.remove()
        lowrank_bn.MIN_ROWS, lif_kernel.THREADS, lowrank_bn.MIN_ROWS_PER_SLICE = fused_from, kernel_threads, slice_from


def loss_of(model: torch.nn.Module, image: torch.Tensor, y: torch.Tensor, timesteps: int) -> torch.Tensor:
    if isinstance(model, ReferenceMSResNet18):
        return F.cross_entropy(model(image), y)
    inputs = image.unsqueeze(0).expand(timesteps, *image.shape)  # direct encoding, as data.encode does
    return F.cross_entropy(run_timesteps(model, inputs, fold=True).mean(0), y)


def train_step(model, optimizer, image, y, timesteps: int) -> None:
    loss = loss_of(model, image, y, timesteps)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def sgd(model: torch.nn.Module) -> torch.optim.Optimizer:
    """The training commands' SGD (lr 0.1, momentum 0.9, weight decay 1e-4; fused on CUDA)."""
    return make_optimizer(list(model.parameters()), TrainConfig())


def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_peak() -> None:
    """Reset the kernel's peak-RSS mark (VmHWM) of this process (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def _peak_bytes() -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def memory_probe(kind: str, batch: int, timesteps: int, off: tuple[str, ...], recompute: bool) -> None:
    """Runs in a fresh subprocess: the peak RSS one training step adds after a warm-up step, as JSON."""
    torch.set_num_threads(2)
    model = build(kind, timesteps, off).train()
    optimizer = sgd(model)
    torch.manual_seed(1)
    image, y = torch.rand(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    with levers(model, off, recompute):
        train_step(model, optimizer, image, y, timesteps)  # warm-up: gradients, momentum, allocator
        gc.collect()
        before = _rss_bytes()
        _reset_peak()
        train_step(model, optimizer, image, y, timesteps)
        peak = _peak_bytes()
    print(json.dumps({"kind": kind, "before": before, "peak": peak, "step_peak": max(peak - before, 0)}))


def measure_memory(kind: str, batch: int, timesteps: int, off: tuple[str, ...] = (), recompute: bool = False) -> dict:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]),
           "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
    command = [sys.executable, os.path.abspath(__file__), "--memory-probe", kind, "--batch", str(batch),
               "--timesteps", str(timesteps), "--off", ",".join(off)] + (["--recompute-probe"] if recompute else [])
    proc = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def worker_main(kind: str, batch: int, timesteps: int, off: tuple[str, ...], recompute: bool, compiled: bool) -> None:
    """One configuration in its own process, as a user's training run has it (its own heap, the
    allocator setting the `ttsnn` command applies unless `allocator` is off): builds the model, runs
    a warm-up step, then one timed step per `step` line on stdin; `quit` prints the process's
    resident high-water mark above the built model, as JSON."""
    if "allocator" not in off:
        keep_freed_memory()
    torch.set_num_threads(2)
    model = build(kind, timesteps, off).train()
    optimizer = sgd(model)
    runner = torch.compile(model) if compiled else model
    torch.manual_seed(1)
    image, y = torch.rand(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    gc.collect()
    built = _rss_bytes()
    with levers(model, off, recompute):
        start = time.perf_counter()
        train_step(runner, optimizer, image, y, timesteps)
        print(f"{time.perf_counter() - start:.6f}", flush=True)
        for line in sys.stdin:
            if line.strip() != "step":
                break
            start = time.perf_counter()
            train_step(runner, optimizer, image, y, timesteps)
            print(f"{time.perf_counter() - start:.6f}", flush=True)
    print(json.dumps({"resident": _peak_bytes() - built}), flush=True)


Spec = tuple[str, tuple[str, ...], bool, bool]  # kind, levers off, recompute, torch.compile


def timed_in_workers(specs: dict[str, Spec], batch: int, timesteps: int, steps: int, processes: int = 1
                     ) -> dict[str, dict]:
    """Median seconds per step of each configuration over `processes` rounds of fresh workers (the
    same configuration runs 10-15 % faster or slower in one process than in another, whatever the
    machine does: a user's run lands anywhere in that spread), with each round's median, the first
    step's seconds and the largest resident high-water mark."""
    rounds = [_one_round(specs, batch, timesteps, steps) for _ in range(processes)]
    merged = {}
    for name in specs:
        times = [t for one in rounds for t in one[name]["times"]]
        merged[name] = {"median": statistics.median(times), "times": times,
                        "process_medians": [statistics.median(one[name]["times"]) for one in rounds],
                        "first": max(one[name]["first"] for one in rounds),
                        "resident": max(one[name]["resident"] for one in rounds)}
    return merged


def _one_round(specs: dict[str, Spec], batch: int, timesteps: int, steps: int) -> dict[str, dict]:
    """Each configuration in its own worker process, the steps interleaved across the workers (one
    step of each in turn, so drift on a shared machine hits all alike; in `round_order`)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    workers = {}
    results = {name: {"times": []} for name in specs}
    try:
        for name, (kind, off, recompute, compiled) in specs.items():  # one at a time: build and warm-up
            command = [sys.executable, os.path.abspath(__file__), "--worker", kind, "--batch", str(batch),
                       "--timesteps", str(timesteps), "--off", ",".join(off)]
            command += (["--recompute-probe"] if recompute else []) + (["--compile"] if compiled else [])
            workers[name] = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
            results[name]["first"] = float(_reply(name, workers[name]))
        for index in range(steps):
            for name, worker in round_order(workers, index):
                worker.stdin.write("step\n")
                worker.stdin.flush()  # a dead worker raises BrokenPipeError here
                results[name]["times"].append(float(_reply(name, worker)))
        for name, worker in workers.items():
            worker.stdin.write("quit\n")
            worker.stdin.flush()
            results[name].update(json.loads(_reply(name, worker)))
    finally:
        for worker in workers.values():
            with contextlib.suppress(BrokenPipeError):
                worker.stdin.close()
            worker.wait()
    return results


def _reply(name: str, worker: subprocess.Popen) -> str:
    line = worker.stdout.readline()
    if not line:
        raise RuntimeError(f"worker '{name}' stopped (exit code {worker.wait()}); every idle worker keeps its memory, "
                           "so many workers at a large batch can exhaust RAM")
    return line


def autograd_memory(model, image, y, timesteps: int) -> dict:
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

    optimizer = sgd(model)
    # innermost hooks win: record what the model's own hooks hand to autograd, by wrapping them
    real = torch.autograd.graph.saved_tensors_hooks.__init__

    def counting(self, pack_hook, unpack_hook):
        def both(tensor):
            packed = pack_hook(tensor)
            if isinstance(packed, torch.Tensor) or hasattr(packed, "bits"):  # not checkpoint's handles
                pack(getattr(packed, "bits", packed))
            return packed
        real(self, both, unpack_hook)

    torch.autograd.graph.saved_tensors_hooks.__init__ = counting
    try:
        with torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t):
            loss = loss_of(model, image, y, timesteps)
    finally:
        torch.autograd.graph.saved_tensors_hooks.__init__ = real
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    grads = sum(p.grad.numel() * p.grad.element_size() for p in params if p.grad is not None)
    state = sum(v.numel() * v.element_size() for st in optimizer.state.values() for v in st.values() if torch.is_tensor(v))
    model.zero_grad(set_to_none=True)
    return {"activations": sum(saved.values()), "grads_and_state": grads + state,
            "total": sum(saved.values()) + grads + state}


def round_order(configs: dict, index: int) -> list:
    """The configurations' (name, value) pairs for round `index`, in reverse every other round: a
    step runs slower after some configurations than after others (what the one before left in the
    caches and the heap), and a fixed order would hand that to the same configuration every round
    (it measured a 1-2 % effect as none, `--levers`)."""
    order = list(configs.items())
    return order if index % 2 == 0 else order[::-1]


def timed(configs: dict[str, tuple[Callable[[], None]]], steps: int) -> dict[str, float]:
    """Median seconds per step of each configuration, run interleaved after one warm-up round, in
    `round_order`."""
    times: dict[str, list[float]] = {k: [] for k in configs}
    for index in range(steps + 1):
        for name, (run,) in round_order(configs, index):
            start = time.perf_counter()
            run()
            if index:
                times[name].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def profile(run: Callable[[], None], label: str) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
    print(f"\n-- profile: {label} (one training step, top ops by self CPU time)")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=40))


LEVERS: dict[str, Spec] = {  # name: (model, levers off, recompute, compiled)
    "PTT (defaults)": ("tt", (), False, False),
    "PTT, allocator returns memory": ("tt", ("allocator",), False, False),
    "PTT, LIF kernel in PyTorch": ("tt", ("native",), False, False),
    "PTT, BatchNorm as its own module": ("tt", ("lowrank_bn",), False, False),
    "PTT, LIF op by op": ("tt", ("one_node",), False, False),
    "PTT, sums into new buffers": ("tt", ("in_place",), False, False),
    "PTT, pixel products unsliced": ("tt", ("sliced",), False, False),
    "PTT, stem on every copy": ("tt", ("static_stem",), False, False),
    "PTT, spikes kept packed (on)": ("tt", ("packed",), False, False),
    "PTT, LIF on one thread": ("tt", ("lif_omp",), False, False),
    "PTT, NCHW": ("tt", ("channels_last",), False, False),
    "PTT, conv weights NCHW": ("tt", ("weights",), False, False),
    "PTT, last stage NCHW": ("tt", ("last_stage_channels_last",), False, False),
    "PTT, none of the five": ("tt", ("allocator", "native", "one_node", "channels_last", "lowrank_bn"), False, False),
    "PTT, --recompute-tt": ("tt", (), True, False),
    "dense (defaults)": ("dense", (), False, False),
    "dense, allocator returns memory": ("dense", ("allocator",), False, False),
    "dense, LIF kernel in PyTorch": ("dense", ("native",), False, False),
    "dense, sums into new buffers": ("dense", ("in_place",), False, False),
    "dense, stem on every copy": ("dense", ("static_stem",), False, False),
    "dense, last stage NCHW": ("dense", ("last_stage_channels_last",), False, False),
    "dense, conv weights NCHW": ("dense", ("weights",), False, False),
    "dense, spikes kept packed (on)": ("dense", ("packed",), False, False),
    "dense, LIF on one thread": ("dense", ("lif_omp",), False, False),
    "dense, none of the four": ("dense", ("allocator", "native", "one_node", "channels_last"), False, False),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per configuration (after one warm-up)")
    parser.add_argument("--timesteps", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--processes", type=int, default=0,
                        help="time each configuration in its own worker process, N rounds of fresh workers "
                             "(steps pooled; also reports resident memory); 0: all in this process")
    parser.add_argument("--levers", action="store_true", help="time each lever switched off against the defaults")
    parser.add_argument("--only", default="",
                        help="with --levers: only the configurations whose name contains one of these "
                             "comma-separated words, beside the defaults (every idle worker keeps its memory: "
                             "at batch 32, all of them do not fit in 24 GB)")
    parser.add_argument("--compile", action="store_true", help="with --levers: also torch.compile (reports compile time)")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--layers", action="store_true",
                        help="one 3x3 layer per stage, TT (PTT) against dense, forward + backward, NCHW and channels-last")
    parser.add_argument("--fused-bn", action="store_true",
                        help="a TT layer's last core + BatchNorm per stage, through the rank bottleneck against the modules")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--exact-only", default="",
                        help="only the exact counts of what a step keeps, no timing, in these comma-separated "
                             "precisions (fp32, bf16: autocast as --precision runs it)")
    parser.add_argument("--memory-probe", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--off", default="", help=argparse.SUPPRESS)
    parser.add_argument("--recompute-probe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    off = tuple(filter(None, args.off.split(",")))
    if args.memory_probe:
        memory_probe(args.memory_probe, args.batch, args.timesteps, off, args.recompute_probe)
        return
    if args.worker:
        worker_main(args.worker, args.batch, args.timesteps, off, args.recompute_probe, args.compile)
        return
    keep_freed_memory()  # this process times configurations too: it allocates as the `ttsnn` command does
    torch.manual_seed(1)
    image, y = torch.rand(args.batch, 3, 32, 32), torch.randint(0, 10, (args.batch,))
    T = args.timesteps
    print(f"MS-ResNet18, CIFAR-shaped random data, T={T}, batch {args.batch}, {args.steps} timed steps each "
          f"(interleaved, median), torch threads {torch.get_num_threads()}")
    if args.levers:
        lever_table(args, image, y)
        return
    if args.layers:
        layer_table(args)
        return
    if args.fused_bn:
        fused_bn_table(args)
        return
    if args.exact_only:
        exact_table(args, image, y)
        return

    kinds = {"paper dense": "paper-dense", "paper PTT": "paper-ptt", "dense": "dense", "PTT": "tt"}
    models = {name: build(kind, T).train() for name, kind in kinds.items()}
    models["PTT recompute"] = models["PTT"]  # the same model with --recompute-tt
    kinds["PTT recompute"] = "tt"
    optimizers = {name: sgd(m) for name, m in models.items()}
    params = {k: sum(p.numel() for p in m.parameters()) for k, m in models.items()}
    if args.processes:
        workers = timed_in_workers({name: (kinds[name], (), name == "PTT recompute", False) for name in MAIN},
                                   args.batch, T, args.steps, args.processes)
        median = {name: workers[name]["median"] for name in MAIN}
    else:
        def step(name: str) -> None:
            with levers(models[name], recompute=name == "PTT recompute"):
                train_step(models[name], optimizers[name], image, y, T)

        median = timed({name: (lambda n=name: step(n),) for name in MAIN}, args.steps)
    exact = {}
    for name in MAIN:
        with levers(models[name], recompute=name == "PTT recompute"):
            exact[name] = autograd_memory(models[name], image, y, T)
    memory = {} if args.no_memory else {
        name: measure_memory(kinds[name], args.batch, T, recompute=name == "PTT recompute") for name in MAIN}
    print(f"{'configuration':<16}{'params':>12}{'s/step':>9}{'per process':>24}{'exact MB':>10}{'step peak MB':>14}"
          f"{'resident MB':>13}")
    for name in MAIN:
        peak = f"{memory[name]['step_peak'] / 2**20:>14.0f}" if memory else f"{'-':>14}"
        spread = "/".join(f"{m:.3f}" for m in workers[name]["process_medians"]) if args.processes else "-"
        resident = f"{workers[name]['resident'] / 2**20:>13.0f}" if args.processes else f"{'-':>13}"
        print(f"{name:<16}{params[name]:>12,}{median[name]:>9.3f}{spread:>24}{exact[name]['total'] / 2**20:>10.0f}{peak}"
              f"{resident}")
    rows = [
        ("PTT vs paper PTT, speed-up", median["paper PTT"] / median["PTT"], ">= 2.5x"),
        ("PTT vs ttsnn dense, speed-up", median["dense"] / median["PTT"], ">= 2.5x"),
        ("dense vs paper dense, speed-up", median["paper dense"] / median["dense"], "(info)"),
        ("PTT / paper PTT, exact count", exact["PTT"]["total"] / exact["paper PTT"]["total"], "(info)"),
        ("PTT / dense, exact count", exact["PTT"]["total"] / exact["dense"]["total"], "(info)"),
        ("PTT recompute vs paper PTT, speed-up", median["paper PTT"] / median["PTT recompute"], "(info)"),
        ("PTT recompute / PTT, time", median["PTT recompute"] / median["PTT"], "<= 1.2x"),
    ]
    if memory:
        rows += [
            ("PTT / paper PTT, step peak", memory["PTT"]["step_peak"] / memory["paper PTT"]["step_peak"], "<= 0.45x"),
            ("PTT / dense, step peak", memory["PTT"]["step_peak"] / memory["dense"]["step_peak"], "< 1x"),
            ("PTT recompute / paper PTT, step peak",
             memory["PTT recompute"]["step_peak"] / memory["paper PTT"]["step_peak"], "<= 0.45x"),
            ("PTT recompute / dense, step peak", memory["PTT recompute"]["step_peak"] / memory["dense"]["step_peak"], "< 1x"),
        ]
    print(f"\n{'ratio':<36}{'measured':>10}{'goal':>10}")
    for name, value, goal in rows:
        print(f"{name:<36}{value:>9.2f}x{goal:>10}")
    if args.profile:
        for name in MAIN:
            with levers(models[name], recompute=name == "PTT recompute"):
                profile(lambda n=name: train_step(models[n], optimizers[n], image, y, T), name)


def exact_table(args, image, y) -> None:
    """What one step keeps, counted exactly (`autograd_memory`), per precision: device-independent
    but for what a device adds (cuDNN workspaces, the allocator's rounding). Under CPU autocast the
    default path takes the rank-bottleneck BatchNorm only with --recompute-tt (`lowrank_bn.pays`),
    where CUDA takes it by its thresholds: a half precision gets a second column counted CUDA's way
    (`lowrank_bn.FUSE_UNDER_CPU_AUTOCAST`)."""
    models = {"paper dense": build("paper-dense", args.timesteps), "paper PTT": build("paper-ptt", args.timesteps),
              "dense": build("dense", args.timesteps), "PTT": build("tt", args.timesteps)}
    models["PTT recompute"] = models["PTT"]
    columns = [(p, False) for p in args.exact_only.split(",")]
    columns += [(p, True) for p in args.exact_only.split(",") if p != "fp32"]
    counts: dict[str, list[int]] = {name: [] for name in MAIN}
    for precision, as_cuda in columns:
        lowrank_bn.FUSE_UNDER_CPU_AUTOCAST = as_cuda
        try:
            for name in MAIN:
                with levers(models[name], recompute=name == "PTT recompute"), autocast(precision, image.device):
                    counts[name].append(autograd_memory(models[name].train(), image, y, args.timesteps)["total"])
        finally:
            lowrank_bn.FUSE_UNDER_CPU_AUTOCAST = False
    print(f"{'configuration':<16}" + "".join(f"{p + (' as CUDA' if c else '') + ' MB':>18}{'vs dense':>9}"
                                            for p, c in columns))
    for name in MAIN:
        print(f"{name:<16}" + "".join(f"{n / 2**20:>18.0f}{n / d:>8.2f}x" for n, d in zip(counts[name], counts["dense"])))


STAGES = [(64, 32, 2), (128, 16, 6), (256, 8, 10), (512, 4, 14)]  # channels, size, a stride-1 conv's rank index


def layer_table(args) -> None:
    """Where the TT step loses against the MAC ratio: one stride-1 3x3 layer per stage on 20 % spikes,
    forward + backward (input gradient too), TT at the paper's rank against the dense conv; in
    channels-last with the weights channels-last too, as training runs them."""
    print(f"{'stage':<22}{'MAC ratio':>10}{'format':>8}{'dense ms':>10}{'PTT ms':>9}{'speed-up':>10}")
    for channels, size, index in STAGES:
        rank = PAPER_RANKS_R18_CIFAR10[index]
        dense = torch.nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        tt = TTConv2d.from_conv(dense, (rank, rank, rank), mode="ptt", svd="randomized_svd")
        spikes = (torch.rand(args.batch * args.timesteps, channels, size, size) < 0.2).float()
        grad = torch.randn(spikes.shape)
        configs = {}
        for fmt, memory_format in (("NCHW", torch.contiguous_format), ("NHWC", torch.channels_last)):
            x, g = spikes.contiguous(memory_format=memory_format), grad.contiguous(memory_format=memory_format)
            for name, layer in (("dense", dense), ("PTT", tt)):
                if fmt == "NHWC":  # weights laid out as a channels-last run lays them out (train.layout)
                    layer = copy.deepcopy(layer)
                    layer.runs_channels_last = True
                    match_weights_to_activations(layer)
                configs[(fmt, name)] = (lambda x=x, g=g, layer=layer: layer(x.detach().requires_grad_()).backward(g),)
        median = timed(configs, max(args.steps, 7))
        macs = channels * channels * 9 / (2 * channels * rank + 6 * rank * rank)  # core1 + core4, core2 + core3
        for fmt in ("NCHW", "NHWC"):
            d, t = median[(fmt, "dense")], median[(fmt, "PTT")]
            print(f"{f'{channels} ch {size}x{size} r={rank}':<22}{macs:>9.2f}x{fmt:>8}{d * 1e3:>10.2f}{t * 1e3:>9.2f}{d / t:>9.2f}x")


NARROW = [(16, 8), (16, 16), (16, 24), (32, 8), (32, 16), (64, 8)]  # channels, rank: smaller nets' layers at 16x16


def fused_bn_table(args) -> None:
    """Where BatchNorm through the rank bottleneck pays (`lowrank_bn.pays`): a TT layer's last core
    and its BatchNorm, forward + backward, fused against the two modules, per stage at the paper's
    rank (PTT's halving included: the modules scale the activations, the fused form W); then narrow
    layers (16-64 channels at 16x16, as in smaller networks than MS-ResNet18)."""
    print(f"{'layer':<22}{'pixels':>8}{'/ r^2':>8}{'modules ms':>12}{'fused ms':>10}{'speed-up':>10}{'default':>9}")
    shapes = [(channels, size, PAPER_RANKS_R18_CIFAR10[index]) for channels, size, index in STAGES]
    shapes += [(channels, 16, rank) for channels, rank in NARROW]
    for channels, size, rank in shapes:
        conv, bn = torch.nn.Conv2d(rank, channels, 1), torch.nn.BatchNorm2d(channels)
        m = torch.randn(args.batch * args.timesteps, rank, size, size).contiguous(memory_format=torch.channels_last)
        grad = torch.randn(m.shape[0], channels, size, size).contiguous(memory_format=torch.channels_last)

        def run(fused: bool, m=m, grad=grad, conv=conv, bn=bn) -> None:
            x = m.detach().requires_grad_()
            out = lowrank_bn.conv1x1_bn(x, conv, bn, always=True, input_scale=0.5) if fused else bn(conv(x * 0.5))
            out.backward(grad)

        median = timed({False: (lambda: run(False),), True: (lambda: run(True),)}, max(args.steps, 15))
        pixels = m.shape[0] * size * size
        print(f"{f'{channels} ch {size}x{size} r={rank}':<22}{pixels:>8}{pixels / rank ** 2:>8.2f}"
              f"{median[False] * 1e3:>12.2f}{median[True] * 1e3:>10.2f}{median[False] / median[True]:>9.2f}x"
              f"{'fused' if lowrank_bn.pays(m, channels) else 'modules':>9}")


LAYOUT_LEVERS = ("channels_last", "last_stage_channels_last", "weights")


def model_key(kind: str, off: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    """Configurations differing in a layout lever need their own model: `build` lays its weights out."""
    return kind, tuple(o for o in off if o in LAYOUT_LEVERS)


def lever_table(args, image, y) -> None:
    """Runtime levers are timed interleaved in this one process (switched per step: the finest
    comparison); the process-wide ones, the allocator and torch.compile, in worker processes against
    a worker with the defaults (`--processes` rounds)."""
    T = args.timesteps
    words = [w.strip() for w in args.only.split(",") if w.strip()]
    specs: dict[str, Spec] = {name: spec for name, spec in LEVERS.items()
                              if not words or "(defaults)" in name or any(w in name for w in words)}
    if args.compile:
        specs["PTT, torch.compile"] = ("tt", (), False, True)
    process_wide = {name for name, (_, off, _, compiled) in specs.items() if compiled or "allocator" in off}
    # the weights' layout is set once per model (as a run sets it), not per step: one model per layout
    models = {model_key(kind, off): None for kind, off, _, _ in specs.values()}
    models = {key: build(key[0], T, key[1]).train() for key in models}
    optimizers = {k: sgd(m) for k, m in models.items()}

    def run(name: str) -> None:
        kind, off, recompute, _ = specs[name]
        model = models[model_key(kind, off)]
        with levers(model, off, recompute):
            train_step(model, optimizers[model_key(kind, off)], image, y, T)

    median = timed({name: (lambda n=name: run(n),) for name in specs if name not in process_wide}, args.steps)
    worker_specs = {name: specs[name] for name in process_wide}
    if process_wide:
        worker_specs |= {f"{name}, own process": specs[name] for name in ("PTT (defaults)", "dense (defaults)")}
        workers = timed_in_workers(worker_specs, args.batch, T, args.steps, max(args.processes, 1))
        median |= {name: result["median"] for name, result in workers.items()}
    exact = {}
    for name, (kind, off, recompute, compiled) in specs.items():
        if not compiled:
            with levers(models[model_key(kind, off)], off, recompute):
                exact[name] = autograd_memory(models[model_key(kind, off)], image, y, T)
    memory = {} if args.no_memory else {
        name: measure_memory(kind, args.batch, T, off, recompute) for name, (kind, off, recompute, compiled) in specs.items()
        if name not in process_wide}  # the probe runs its own allocator setting
    print(f"{'configuration':<36}{'s/step':>9}{'vs defaults':>12}{'exact MB':>10}{'step peak MB':>14}{'timed':>11}")
    for name in median:
        base_name = "dense (defaults)" if name.startswith("dense") else "PTT (defaults)"
        own = name in process_wide or name.endswith("own process")
        base = median[f"{base_name}, own process" if own else base_name]
        mb = f"{exact[name]['total'] / 2**20:>10.0f}" if name in exact else f"{'-':>10}"
        peak = f"{memory[name]['step_peak'] / 2**20:>14.0f}" if name in memory else f"{'-':>14}"
        print(f"{name:<36}{median[name]:>9.3f}{median[name] / base:>11.2f}x{mb}{peak}{'workers' if own else 'here':>11}")
    if args.compile:
        print(f"torch.compile: first step (compilation) {workers['PTT, torch.compile']['first']:.1f} s")


if __name__ == "__main__":
    main()
