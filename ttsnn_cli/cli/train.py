"""`ttsnn train` (dense training) and `ttsnn finetune` (TT fine-tuning): one engine, same options."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from ttsnn_cli.cli.app import app
from ttsnn_cli.cli.common import STYLE_HELP, TRUST_ARCH_HELP, err_console, guarded, print_json, trust_scope
from ttsnn_cli.storage.trust import parse_arch_kwargs
from ttsnn_cli.train.engine import TrainConfig
from ttsnn_cli.train.job import TrainJob, run_train_job

DATA_HELP = "dataset: digits, cifar10:DIR, cifar100:DIR, ncaltech101:DIR"


class ProgressView:
    """Renders the engine's progress events on stderr: a bar per epoch and one line per finished epoch."""

    def __init__(self, quiet: bool) -> None:
        self.console = err_console()
        self.quiet = quiet
        self.bar = Progress(
            TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"),
            BarColumn(),
            TextColumn("loss {task.fields[loss]:.4f}  acc {task.fields[acc]:.1f} %  {task.fields[rate]:.0f} samples/s"),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
            disable=not self.console.is_terminal,  # logs and pipes get the per-epoch lines only
        )
        self.task = None

    def __enter__(self) -> ProgressView:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.__exit__(*exc)

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event["kind"]
        if kind == "epoch_start":
            if self.task is not None:
                self.bar.remove_task(self.task)
            self.task = self.bar.add_task("", total=event["batches"], epoch=event["epoch"], epochs=event["epochs"], loss=0.0, acc=0.0, rate=0.0)
        elif kind == "batch" and self.task is not None:
            self.bar.update(self.task, completed=event["batch"], loss=event["loss"], acc=event["accuracy"], rate=event["samples_per_s"])
        elif kind == "warning":
            self.bar.console.print(f"[yellow]warning:[/] {event['message']}", markup=True, highlight=False)
        elif kind == "epoch_end" and not self.quiet:
            self.bar.console.print(
                f"epoch {event['epoch']}/{event['epochs']}: train loss {event['train_loss']:.4f}, "
                f"train acc {event['train_accuracy']:.2f} %, test acc {event['test_accuracy']:.2f} % "
                f"({event['seconds']:.1f} s, {event['samples_per_s']:.0f} samples/s)",
                highlight=False,
            )


def _config(epochs, batch_size, lr, optimizer, momentum, weight_decay, seed, device, train, loss, encoding, schedule,
            recompute_tt=False, distill_weight=0.5, distill_temperature=4.0, precision="fp32") -> TrainConfig:
    return TrainConfig(
        epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer.lower(), momentum=momentum,
        weight_decay=weight_decay, seed=seed, device=device, train=train, loss=loss, encoding=encoding,
        schedule=schedule, recompute_tt=recompute_tt, distill_weight=distill_weight,
        distill_temperature=distill_temperature, precision=precision,
    )


def _run(job: TrainJob, json_out: bool) -> None:
    main_process = int(os.environ.get("RANK", "0")) == 0  # under torchrun only rank 0 reports
    with ProgressView(quiet=False) as view:
        _, result = run_train_job(job, progress=view if main_process else None)
    if not main_process:
        return
    if json_out:
        print_json(result)
    else:
        err_console().print(
            f"{job.stage}: test accuracy {result['test_accuracy']:.2f} % after {result['epochs']} epochs "
            f"({result['seconds']:.1f} s) -> {result['output']}",
            highlight=False,
        )


EPOCHS = typer.Option(10, "--epochs", help="epochs to train")
BATCH = typer.Option(64, "--batch-size", help="batch size (per process under torchrun)")
TIMESTEPS = typer.Option(None, "--timesteps", help="timesteps T (default: the model's, else 4)")
LR = typer.Option(0.1, "--lr", help="initial learning rate (cosine-annealed to 0)")
OPTIMIZER = typer.Option("sgd", "--optimizer", help="sgd or adam")
MOMENTUM = typer.Option(0.9, "--momentum", help="SGD momentum (Adam beta1)")
WD = typer.Option(1e-4, "--weight-decay", help="weight decay")
SEED = typer.Option(0, "--seed", help="random seed (init, shuffling, augmentation)")
DEVICE = typer.Option("auto", "--device", help="auto (cuda if available, else cpu), cpu, cuda, cuda:N")
TRAIN = typer.Option("all", "--train", help="all: every parameter; cores: only the TT cores")
LOSS = typer.Option("ce", "--loss", help="ce (on the time-averaged output, the paper's), ce_rate, ce_count, mse_count")
ENCODING = typer.Option("direct", "--encoding", help="static images: direct (repeat each step) or rate (Poisson spikes)")
SCHEDULE = typer.Option("cosine", "--schedule", help="cosine or constant learning rate")
RESUME = typer.Option(False, "--resume", help="continue an interrupted run from OUT's last saved epoch")
FORCE = typer.Option(False, "--force", help="overwrite OUT if it exists")
JSON = typer.Option(False, "--json", help="print one JSON document on stdout")
ARCH_KWARGS = typer.Option(None, "--arch-kwargs", help="JSON object of factory keyword arguments")
RECOMPUTE = typer.Option(False, "--recompute-tt", help="the memory-saving mode: TT layers recompute their cores in "
                         "backward and MS-ResNet blocks keep the spikes their convs read as one byte: less memory "
                         "(MS-ResNet18 batch 32: 0.58x a TT step's exact saved bytes, 0.97x its RSS peak) for about "
                         "1.02-1.07x the step time (benchmarks/bench_training.py)")
STYLE = typer.Option(None, "--style", help=STYLE_HELP)
PRECISION = typer.Option("fp32", "--precision", help="fp32; bf16 or fp16: autocast (weights stay fp32; fp16 with a "
                         "loss scaler); bf16 runs on CPU too. See docs/performance.md")
TRUST = typer.Option(False, "--trust-pickle", help="accept a pickled nn.Module (runs code from the file)")
TRUST_ARCH = typer.Option(False, "--trust-arch", help=TRUST_ARCH_HELP)


@app.command("train")
@guarded
def train_command(
    arch: str = typer.Option(..., "--arch", help="zoo:NAME or MODULE:FACTORY"),
    data: str = typer.Option(..., "--data", help=DATA_HELP),
    output: Path = typer.Option(..., "-o", "--output", help="bundle to write (dense)"),
    arch_kwargs: str = ARCH_KWARGS,
    epochs: int = EPOCHS, batch_size: int = BATCH, timesteps: int = TIMESTEPS, lr: float = LR,
    optimizer: str = OPTIMIZER, momentum: float = MOMENTUM, weight_decay: float = WD, seed: int = SEED,
    device: str = DEVICE, train: str = TRAIN, loss: str = LOSS, encoding: str = ENCODING, schedule: str = SCHEDULE,
    resume: bool = RESUME, force: bool = FORCE, json_out: bool = JSON, style: str = STYLE,
    precision: str = PRECISION,
) -> None:
    """Train a dense SNN from scratch and write a dense bundle (what `compress` starts from)."""
    config = _config(epochs, batch_size, lr, optimizer, momentum, weight_decay, seed, device, train, loss, encoding, schedule,
                     precision=precision)
    job = TrainJob("train", output, config, data=data, arch=arch, arch_kwargs=parse_arch_kwargs(arch_kwargs),
                   timesteps=timesteps, resume=resume, force=force, style=style)
    _run(job, json_out)


@app.command("finetune")
@guarded
def finetune_command(
    model: Path = typer.Argument(..., help="bundle (TT or dense), or a state_dict with --arch"),
    output: Path = typer.Option(..., "-o", "--output", help="bundle to write"),
    data: str = typer.Option(None, "--data", help=DATA_HELP + " (default: the bundle's)"),
    arch: str = typer.Option(None, "--arch", help="architecture of a plain state_dict"),
    arch_kwargs: str = ARCH_KWARGS,
    epochs: int = EPOCHS, batch_size: int = BATCH, timesteps: int = TIMESTEPS,
    lr: float = typer.Option(0.01, "--lr", help="initial learning rate (cosine-annealed to 0)"),
    optimizer: str = OPTIMIZER, momentum: float = MOMENTUM, weight_decay: float = WD, seed: int = SEED,
    device: str = DEVICE, train: str = TRAIN, loss: str = LOSS, encoding: str = ENCODING, schedule: str = SCHEDULE,
    resume: bool = RESUME, force: bool = FORCE, trust_pickle: bool = TRUST, recompute_tt: bool = RECOMPUTE,
    teacher: Path = typer.Option(None, "--teacher", help="distil from this model: a bundle, or a state_dict (its "
                                 "architecture: --teacher-arch, default the student's dense one)"),
    teacher_arch: str = typer.Option(None, "--teacher-arch", help="architecture of a state_dict --teacher"),
    teacher_arch_kwargs: str = typer.Option(None, "--teacher-arch-kwargs", help="JSON kwargs of --teacher-arch"),
    distill_weight: float = typer.Option(0.5, "--distill-weight", help="a in (1-a)*task + a*t^2*KL (with --teacher)"),
    distill_temperature: float = typer.Option(4.0, "--distill-temperature", help="t: softmax temperature (with --teacher)"),
    trust_arch: bool = TRUST_ARCH, json_out: bool = JSON, style: str = STYLE, precision: str = PRECISION,
) -> None:
    """Fine-tune a (TT) model with surrogate-gradient BPTT (optionally distilling a --teacher) and write the tuned bundle."""
    config = _config(epochs, batch_size, lr, optimizer, momentum, weight_decay, seed, device, train, loss, encoding, schedule,
                     recompute_tt, distill_weight, distill_temperature, precision)
    job = TrainJob("finetune", output, config, data=data, arch=arch,
                   arch_kwargs=parse_arch_kwargs(arch_kwargs) if arch_kwargs else None, checkpoint=model,
                   timesteps=timesteps, resume=resume, force=force, trust_pickle=trust_pickle, teacher=teacher,
                   teacher_arch=teacher_arch, style=style,
                   teacher_arch_kwargs=parse_arch_kwargs(teacher_arch_kwargs) if teacher_arch_kwargs else None)
    with trust_scope(trust_arch, arch, teacher_arch):
        _run(job, json_out)
