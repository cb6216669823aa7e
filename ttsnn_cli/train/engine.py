"""One training engine for `train` (dense) and `finetune` (TT): surrogate-gradient BPTT over T steps.

`fit(model, data, config, output)` trains `model` in place and returns a JSON-ready result. Per epoch:
shuffle (seeded by seed + epoch), forward every batch through `runner.run_timesteps` (stateless layers
folded over T*B, neurons looped over time; models with their own time loop driven as they are), loss
on the output sequence, backward, optimiser step, cosine schedule step; then evaluate on the test
split, append one JSON line to `<output>.metrics.jsonl`, write the resume state
`<output>.resume.pt` (model, optimiser, scheduler, epoch, every RNG, history) atomically, and call
`config`'s `on_epoch` so the caller can save its bundle. `resume=True` continues from the resume
state (`train.resume`: what it records, and the checks it passes first) and ends with exactly the
weights an uninterrupted run with the same seed would have.

Batches (`train.batches`): a split that can be described as whole tensors (the CIFAR readers, a
TensorDataset such as digits, a Subset of either) is moved to the device once, as stored, and every
batch is gathered, decoded and augmented there; other datasets, `config.data_on_device="off"` or
`TTSNN_DATA_ON_DEVICE=off` go through a DataLoader sample by sample. Both give the same batches from
the same random numbers, so a run's results do not depend on which one ran.

The output is the model's readout record (`spiking.runner`: `--readout spikes|membrane|N`, recorded in
the bundle), so training and evaluation read the same. After the first epoch a silent output is a
`warning` event and a loss that has not fallen a `hint` event (one line each, saying what to try);
`logs` (`train.logs`, `--log-dir`) get the history after every epoch; `config.threads` bounds torch's
CPU threads for the run (`train.threads`).

Losses (on the output sequence [T, B, classes]):
  ce        cross-entropy of the time-averaged output (the paper's)
  ce_rate   snntorch.functional.ce_rate_loss (cross-entropy at every step)
  ce_count  snntorch.functional.ce_count_loss
  mse_count snntorch.functional.mse_count_loss(correct_rate=0.8, incorrect_rate=0.2)

Distillation (`train.distill`): with a `teacher`, the loss becomes
(1 - a) * task + a * t^2 * KL(teacher/t || student/t) on the time-averaged outputs
(`distill_weight` a, `distill_temperature` t); the teacher runs frozen in eval mode.

Distributed: under torchrun (WORLD_SIZE > 1) the process group is initialised with gloo on CPU and
nccl on CUDA, the model is wrapped in DistributedDataParallel, each rank reads its shard of every
epoch's permutation, metrics are all-reduced, and only rank 0 writes files or reports progress.
The library never prints: progress goes to the `progress` callback.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ttsnn_cli.data import DataBundle, Encoding, encode
from ttsnn_cli.errors import BadInputError
from ttsnn_cli.kinds import is_tt_layer
from ttsnn_cli.spiking.lif_sequence import fused_kernel
from ttsnn_cli.spiking.runner import model_readout, run_timesteps
from ttsnn_cli.spiking.state import fixed_structure
from ttsnn_cli.storage.outputs import atomic_torch_save, atomic_write_text, standard_json
from ttsnn_cli.train.batches import (
    Batches,
    ResidentData,
    check_data_on_device,
    make_batches,
    resident_data,
    to_device,
)
from ttsnn_cli.train.distill import Distiller
from ttsnn_cli.train.kernel_plan import (
    PATHS,
    check_kernel_choice,
    choose,
    kernel_paths,
    measure_plan,
    plan_summary,
    rebuildable_layers,
    uniform_plan,
)
from ttsnn_cli.train.layout import weights_in_activation_format
from ttsnn_cli.train.logs import EpochLogs
from ttsnn_cli.train.memory import recomputing_tt
from ttsnn_cli.train.optimizers import make_optimizer, make_scheduler
from ttsnn_cli.train.precision import autocast, check_precision, grad_scaler
from ttsnn_cli.train.resume import config_key, model_fingerprint, republish, restore, rng_state
from ttsnn_cli.train.tally import EpochTally
from ttsnn_cli.train.compiled import compile_step
from ttsnn_cli.train.threads import limited_threads
from ttsnn_cli.zoo.static_stem import repeated_frames

OPTIMIZERS = ("sgd", "adam")
LOSSES = ("ce", "ce_rate", "ce_count", "mse_count")
TRAINABLE = ("all", "cores")
SCHEDULES = ("cosine", "constant")


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 64
    timesteps: int = 4
    lr: float = 0.1
    optimizer: Literal["sgd", "adam"] = "sgd"
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: Literal["cosine", "constant"] = "cosine"
    seed: int = 0
    device: str = "auto"
    train: Literal["all", "cores"] = "all"
    loss: str = "ce"
    encoding: Encoding = "direct"
    recompute_tt: bool = False  # TT layers recompute their cores in backward: less memory, more time
    precision: str = "fp32"  # fp32, bf16 or fp16 autocast (train.precision)
    distill_weight: float = 0.5  # a: share of the distillation term (only with a teacher)
    distill_temperature: float = 4.0  # t: softmax temperature of the distillation term
    threads: int | None = None  # CPU threads torch may use while this runs (train.threads); None: torch's default
    tt_kernel: str = "auto"  # how TT layers run: factored cores, rebuilt kernel, or measured per layer (train.kernel_plan)
    data_on_device: str = "auto"  # keep the splits on the device and make batches there where they fit, or "off" (train.batches)
    compile: bool = False  # the step through torch.compile (train.compiled)

    def validate(self) -> None:
        problems = []
        if self.epochs < 1:
            problems.append(f"--epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            problems.append(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.timesteps < 1:
            problems.append(f"--timesteps must be >= 1, got {self.timesteps}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            problems.append(f"--lr must be a finite number > 0, got {self.lr}")
        if not (math.isfinite(self.momentum) and 0 <= self.momentum < 1):
            problems.append(f"--momentum (SGD momentum, Adam beta1) must be in [0, 1), got {self.momentum}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            problems.append(f"--weight-decay must be a finite number >= 0, got {self.weight_decay}")
        if self.threads is not None and not (isinstance(self.threads, int) and 1 <= self.threads <= 1024):
            problems.append(f"--threads must be in 1..1024, got {self.threads}")
        if not 0 <= self.seed <= MAX_SEED:
            problems.append(f"--seed must be in 0..{MAX_SEED}, got {self.seed}")
        try:
            check_device(self.device)
        except BadInputError as error:
            problems.append(str(error))
        try:
            check_precision(self.precision)
        except ValueError as error:
            problems.append(str(error))
        try:
            check_kernel_choice(self.tt_kernel)
        except BadInputError as error:
            problems.append(str(error))
        try:
            check_data_on_device(self.data_on_device)
        except BadInputError as error:
            problems.append(str(error))
        if not 0 <= self.distill_weight <= 1:
            problems.append(f"--distill-weight must be in [0, 1], got {self.distill_weight}")
        if not (self.distill_temperature > 0 and math.isfinite(self.distill_temperature)):
            problems.append(f"--distill-temperature must be > 0, got {self.distill_temperature}")
        for option, value, allowed in (
            ("--optimizer", self.optimizer, OPTIMIZERS),
            ("--loss", self.loss, LOSSES),
            ("--train", self.train, TRAINABLE),
            ("--schedule", self.schedule, SCHEDULES),
        ):
            if value not in allowed:
                problems.append(f"{option} {value!r} is not one of {', '.join(allowed)}")
        if problems:
            raise BadInputError("; ".join(problems))


MAX_SEED = 2**63 - 1


def check_device(name: str) -> None:
    """Refuse a device name torch would reject later, or one that cannot train (meta holds no data)."""
    if name == "auto":
        return
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise BadInputError(f"--device {name!r} is not a torch device (auto, cpu, cuda, cuda:N)") from None
    if device.type not in ("cpu", "cuda"):
        raise BadInputError(f"--device {name!r}: ttsnn trains on auto, cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise BadInputError("--device cuda asked for, but no CUDA device is available")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise BadInputError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here")


@dataclass
class Distributed:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


Progress = Callable[[dict[str, Any]], None]


# --------------------------------------------------------------------------------------- helpers
def resolve_device(name: str, dist_info: Distributed | None = None) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", dist_info.local_rank if dist_info else 0)
        return torch.device("cpu")
    check_device(name)
    return torch.device(name)


def init_distributed() -> Distributed:
    """Join the torchrun process group when launched by torchrun (WORLD_SIZE > 1), else one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed()
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    return Distributed(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def trainable_parameters(model: nn.Module, which: str) -> list[nn.Parameter]:
    """`all`: every parameter; `cores`: only the TT cores (everything else frozen)."""
    if which == "all":
        for p in model.parameters():
            p.requires_grad_(True)
        return list(model.parameters())
    core_ids = {id(p) for m in model.modules() if is_tt_layer(m) for p in m.parameters()}
    if not core_ids:
        raise BadInputError("--train cores: the model has no TT layers (compress it first, or use --train all)")
    chosen = []
    for p in model.parameters():
        p.requires_grad_(id(p) in core_ids)
        if id(p) in core_ids:
            chosen.append(p)
    return chosen


def loss_function(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if name == "ce":
        return lambda out, y: F.cross_entropy(out.mean(0), y)
    import snntorch.functional as SF

    factory = {
        "ce_rate": SF.ce_rate_loss,
        "ce_count": SF.ce_count_loss,
        "mse_count": lambda: SF.mse_count_loss(correct_rate=0.8, incorrect_rate=0.2),
    }[name]
    return factory()


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def side_paths(output: str | Path) -> tuple[Path, Path]:
    """(metrics log, resume state) written beside `output`."""
    output = Path(output)
    return output.with_name(output.name + ".metrics.jsonl"), output.with_name(output.name + ".resume.pt")


class _Sequence(nn.Module):
    """Adapter giving every model style one forward [T, B, ...] -> [T, B, ...], so DDP can wrap it."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return run_timesteps(self.model, inputs, fold=True)


def _epoch_order(size: int, seed: int, epoch: int) -> list[int]:
    generator = torch.Generator().manual_seed((seed * 1_000_003 + epoch) % 2**63)
    return torch.randperm(size, generator=generator).tolist()


def _batches(dataset, order: list[int], batch_size: int, dist_info: Distributed,
             resident: ResidentData | None = None) -> Batches:
    """This rank's batches of the epoch's `order`: made on the device from `resident` when the split is
    kept there, else through a DataLoader; the same batches either way (`train.batches`)."""
    # every rank takes the same number of samples (DDP needs matching step counts): drop the tail
    per_rank = len(order) // dist_info.world
    shard = order[dist_info.rank * per_rank : (dist_info.rank + 1) * per_rank] if dist_info.world > 1 else order
    return make_batches(dataset, resident, shard, batch_size)


def _all_sum(values: list[float], dist_info: Distributed, device: torch.device) -> list[float]:
    if dist_info.world == 1:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


@torch.no_grad()
def evaluate(model: nn.Module, data: DataBundle, config: TrainConfig, device: torch.device,
             dist_info: Distributed | None = None, resident: ResidentData | None = None) -> float:
    """Test accuracy in percent: argmax of the time-averaged output. The test split's batches are made
    on the device when it can stay there (`train.batches`; `resident`: the split already there, as
    `fit` keeps it for every epoch)."""
    dist_info = dist_info or Distributed()
    was_training = model.training
    model.eval()
    indices = list(range(len(data.test)))[dist_info.rank :: dist_info.world]
    if resident is None:
        resident = resident_data(data.test, device, config.data_on_device)
    hits = torch.zeros((), dtype=torch.int64, device=device)  # read once at the end (train.tally says why)
    total = 0
    with fixed_structure(model):
        for x, y in make_batches(data.test, resident, indices, max(config.batch_size, 64)):
            inputs = encode(to_device(x, device), config.timesteps, config.encoding, data.temporal)
            with autocast(config.precision, device), repeated_frames(config.encoding == "direct" and not data.temporal):
                out = run_timesteps(model, inputs, fold=True)
            hits += (out.mean(0).argmax(-1) == to_device(y, device)).sum()
            total += len(y)
    model.train(was_training)
    correct, total = _all_sum([float(hits), total], dist_info, device)
    return 100.0 * correct / max(total, 1)


# --------------------------------------------------------------------------------------- fit
def fit(
    model: nn.Module,
    data: DataBundle,
    config: TrainConfig,
    output: str | Path,
    resume: bool = False,
    progress: Progress | None = None,
    on_epoch: Callable[[nn.Module, list[dict[str, Any]]], None] | None = None,
    teacher: nn.Module | None = None,
    logs: EpochLogs | None = None,
) -> dict[str, Any]:
    """Train `model` in place; see the module docstring. Returns `epochs`, `train_loss`,
    `test_accuracy` (percent, last epoch), `best_test_accuracy`, `history`, `output`, ...
    With `teacher`, the loss mixes in its soft targets (`train.distill`). While it runs, the conv
    weights are held in the activations' memory format (`train.layout`), and torch computes with
    `config.threads` threads when set. `logs` (`--log-dir`) are rewritten after every epoch."""
    with weights_in_activation_format(model, teacher), limited_threads(config.threads):
        return _fit(model, data, config, output, resume, progress, on_epoch, teacher, logs)


def _fit(
    model: nn.Module,
    data: DataBundle,
    config: TrainConfig,
    output: str | Path,
    resume: bool,
    progress: Progress | None,
    on_epoch: Callable[[nn.Module, list[dict[str, Any]]], None] | None,
    teacher: nn.Module | None,
    logs: EpochLogs | None = None,
) -> dict[str, Any]:
    config.validate()
    if data.temporal and data.timesteps != config.timesteps:
        raise BadInputError(f"the event frames were binned for T={data.timesteps}, the run asks T={config.timesteps}")
    dist_info = init_distributed()
    device = resolve_device(config.device, dist_info)
    report = progress if (progress is not None and dist_info.main) else (lambda event: None)
    metrics_path, state_path = side_paths(output)

    set_seed(config.seed)
    model.to(device)
    params = trainable_parameters(model, config.train)
    per_rank = len(data.train) // dist_info.world
    batches_per_epoch = math.ceil(per_rank / config.batch_size)
    if batches_per_epoch == 0:
        raise BadInputError(f"the training split has {len(data.train)} samples: too few for {dist_info.world} processes")
    optimizer = make_optimizer(params, config)
    scheduler = make_scheduler(optimizer, config, config.epochs * batches_per_epoch)
    loss_fn = loss_function(config.loss)
    scaler = grad_scaler(config.precision, device)
    distiller = None
    if teacher is not None:
        distiller = Distiller(teacher, config.distill_weight, config.distill_temperature)
        distiller.prepare(device)
    history: list[dict[str, Any]] = []
    start_epoch = 0

    if resume:
        if not state_path.is_file():
            raise BadInputError(f"--resume: no resume state {state_path} (was the run started with -o {output}?)")
        history, start_epoch = restore(state_path, config, model, optimizer, scheduler, scaler)
        if start_epoch == config.epochs and dist_info.main:
            republish(metrics_path, model, history, on_epoch)
            if logs is not None:
                logs.write(history)

    # the splits on the device once for the whole run where they fit: batches made there (train.batches)
    train_resident = resident_data(data.train, device, config.data_on_device)
    test_resident = resident_data(data.test, device, config.data_on_device)
    plan, kernels = _kernel_plan(model, data, config, device, train_resident)
    planned = rebuildable_layers(model)
    runner: nn.Module = _Sequence(model)
    if config.compile:
        runner = compile_step(runner, model, device)
    if dist_info.world > 1:
        runner = nn.parallel.DistributedDataParallel(
            runner, device_ids=[device.index] if device.type == "cuda" else None
        )

    started = time.perf_counter()
    for epoch in range(start_epoch, config.epochs):
        model.train()
        order = _epoch_order(len(data.train), config.seed, epoch)
        loader = _batches(data.train, order, config.batch_size, dist_info, train_resident)
        report({"kind": "epoch_start", "epoch": epoch + 1, "epochs": config.epochs, "batches": len(loader)})
        repeats = config.encoding == "direct" and not data.temporal  # every step sees the same image
        tally = EpochTally(device, len(loader))  # read on the host only when shown (train.tally)
        epoch_start = time.perf_counter()
        with fixed_structure(model, *([distiller.teacher] if distiller is not None else [])):  # walked once
            for index, (x, y) in enumerate(loader):
                x, y = to_device(x, device), to_device(y, device)  # from a DataLoader: through pinned memory
                inputs = encode(x, config.timesteps, config.encoding, data.temporal)
                with recomputing_tt(model, config.recompute_tt), kernel_paths(model, plan, planned):
                    with autocast(config.precision, device), repeated_frames(repeats):
                        out = runner(inputs)
                    out = out.float()  # the loss (and the distillation term) in float32 whatever the precision
                    loss = loss_fn(out, y)
                    if distiller is not None:
                        with autocast(config.precision, device), repeated_frames(repeats):
                            loss = distiller.loss(loss, out, inputs)
                    optimizer.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                scaler.step(optimizer)  # skips the step when fp16 gradients overflowed (the scale then drops)
                scaler.update()
                scheduler.step()
                tally.add(loss, out, y)
                if tally.due(last=index + 1 == len(loader)):
                    figures = tally.read()
                    if figures.diverged_at is not None:
                        raise BadInputError(_diverged(figures.diverged_loss, epoch, figures.diverged_at, config))
                    elapsed = time.perf_counter() - epoch_start
                    report({"kind": "batch", "epoch": epoch + 1, "batch": index + 1, "batches": len(loader),
                            "loss": figures.loss_sum / tally.seen, "accuracy": 100.0 * figures.correct / tally.seen,
                            "samples_per_s": tally.seen * dist_info.world / max(elapsed, 1e-9)})
        figures = tally.read()
        batch_losses = tally.losses() if epoch == 0 else []  # the first epoch's "has the loss fallen" hint
        loss_sum, correct, seen, spiked_any = _all_sum(
            [figures.loss_sum, figures.correct, float(tally.seen), float(figures.spiked)], dist_info, device)
        if not spiked_any:
            report({"kind": "warning", "epoch": epoch + 1, "message": (
                f"epoch {epoch + 1}: the output never spiked (loss stays at ln(classes)); check the input scale and "
                "encoding, the output neurons' threshold and beta, and the learning rate; a model returning "
                "(spikes, membrane) can train on its membrane with --readout membrane")})
        elif epoch == 0 and not _loss_fell(batch_losses):
            report({"kind": "hint", "epoch": 1, "message": _stalled_hint(batch_losses, config, model)})
        seconds = time.perf_counter() - epoch_start
        accuracy = evaluate(model, data, config, device, dist_info, test_resident)
        record = {
            "epoch": epoch + 1,
            "train_loss": loss_sum / max(seen, 1),
            "train_accuracy": 100.0 * correct / max(seen, 1),
            "test_accuracy": accuracy,
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": seconds,
            "samples_per_s": seen / max(seconds, 1e-9),
            "wall_time": time.time(),
        }
        history.append(record)
        if not all(torch.isfinite(p.detach()).all() for p in model.parameters()):
            raise BadInputError(_diverged(None, epoch, None, config))
        if dist_info.main:
            atomic_write_text(metrics_path, "".join(standard_json(r) + "\n" for r in history))
            if logs is not None:
                logs.write(history)
            if on_epoch is not None:
                on_epoch(model, history)
            atomic_torch_save(state_path, {
                "epoch": epoch + 1,
                "config": config_key(config),
                "fingerprint": model_fingerprint(model),
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "rng": rng_state(),
                "history": history,
            })
        report({"kind": "epoch_end", **record, "epochs": config.epochs})
    if dist_info.world > 1:
        dist.barrier()
    last = history[-1] if history else {}
    return {
        "epochs": config.epochs,
        "train_loss": last.get("train_loss"),
        "train_accuracy": last.get("train_accuracy"),
        "test_accuracy": last.get("test_accuracy"),
        "best_test_accuracy": max((r["test_accuracy"] for r in history), default=None),
        "history": history,
        "seconds": time.perf_counter() - started,
        "device": str(device),
        "world_size": dist_info.world,
        "resumed_from_epoch": start_epoch if resume else None,
        "distilled": teacher is not None,
        "config": asdict(config),
        "output": str(output),
        "metrics_log": str(metrics_path),
        "resume_state": str(state_path),
        "log_dir": str(logs.folder) if logs is not None else None,
        "tt_kernels": kernels,
        "neuron_kernel": fused_kernel(device),
    }


def _kernel_plan(model: nn.Module, data: DataBundle, config: TrainConfig, device: torch.device,
                 resident: ResidentData | None = None) -> tuple[dict[str, str], dict[str, Any]]:
    """How each TT layer runs in this fit (`--tt-kernel`, train.kernel_plan) and what the result
    reports of it. `auto` keeps the factored cores on the CPU (measured faster there, and bitwise
    reproducible) and elsewhere times both ways per layer on a first training batch."""
    if config.tt_kernel in PATHS:
        plan = uniform_plan(model, config.tt_kernel)
        return plan, plan_summary(plan)
    if device.type == "cpu" or not rebuildable_layers(model):
        plan = uniform_plan(model, "factored")
        return plan, plan_summary(plan)
    count = min(config.batch_size, len(data.train))
    if resident is not None:  # the same frames (and random numbers) as the items below, made on the device
        x = resident.batch(torch.arange(count, device=device))[0]
    else:
        x = torch.stack([torch.as_tensor(data.train[i][0]) for i in range(count)]).to(device)
    inputs = encode(x, config.timesteps, config.encoding, data.temporal)
    was_training = model.training
    model.train()
    try:
        with recomputing_tt(model, config.recompute_tt):  # timed as the layers will train
            timings = measure_plan(model, lambda: run_timesteps(model, inputs, fold=True),
                                   context=lambda: autocast(config.precision, device))
    finally:
        model.train(was_training)
    plan = choose(timings)
    return plan, plan_summary(plan, timings)


def _loss_fell(losses: list[float]) -> bool:
    """Whether the loss of the first epoch's last quarter of batches is at least 2 % below its first
    batches' (too few batches to tell: assume it fell)."""
    if len(losses) < 4:
        return True
    quarter = max(1, len(losses) // 4)
    start, end = sum(losses[:quarter]) / quarter, sum(losses[-quarter:]) / quarter
    return end < 0.98 * start


def _stalled_hint(losses: list[float], config: TrainConfig, model: nn.Module) -> str:
    """One line saying the loss has not fallen and what usually makes such a network learn: measured on
    a snntorch tutorial CSNN returning (spk_rec, mem_rec) (docs/training.md)."""
    quarter = max(1, len(losses) // 4)
    start, end = sum(losses[:quarter]) / quarter, sum(losses[-quarter:]) / quarter
    advice = ["--optimizer adam --lr 0.001" if config.optimizer == "sgd" else f"a lower --lr than {config.lr:g}"]
    if model_readout(model) in (None, "spikes", "0"):
        advice.append("--readout membrane if the model returns (spikes, membrane)")
    return (f"epoch 1: the loss has not fallen ({start:.4f} -> {end:.4f}); try " + ", or ".join(advice)
            + " (see docs/training.md)")


def _diverged(loss: float | None, epoch: int, batch: int | None, config: TrainConfig) -> str:
    where = f"epoch {epoch + 1}" + (f", batch {batch + 1}" if batch is not None else "")
    what = f"the loss became {loss}" if loss is not None else "the weights became non-finite"
    return (f"training diverged: {what} at {where}; lower the learning rate (--lr {config.lr:g} is too high?). "
            "Nothing of this epoch was written")
