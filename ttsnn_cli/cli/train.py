"""`ttsnn train` (dense training) and `ttsnn finetune` (TT fine-tuning): one engine, same options."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ttsnn_cli.cli.app import app
from ttsnn_cli.cli.common import STYLE_HELP, THREADS_HELP, TRUST_ARCH_HELP, err_console, guarded, print_json, trust_scope
from ttsnn_cli.data import SPEC_HELP
from ttsnn_cli.storage.trust import parse_arch_kwargs
from ttsnn_cli.train.engine import TrainConfig
from ttsnn_cli.train.job import TrainJob, default_optimizer, run_train_job
from ttsnn_cli.train.threads import check_threads

DATA_HELP = f"dataset: {SPEC_HELP}"


class ProgressView:
    """Renders the engine's progress events on stderr: a bar per epoch (with the whole run's ETA) and one
    line per finished epoch; warnings and hints as one line each."""

    def __init__(self, quiet: bool, bar: bool = True) -> None:
        self.console = err_console()
        self.quiet = quiet
        self.stage = ""  # `ttsnn run`: the stage the bar belongs to
        self.bar = Progress(
            TextColumn("{task.fields[stage]}epoch {task.fields[epoch]}/{task.fields[epochs]}"),
            BarColumn(),
            TextColumn("loss {task.fields[loss]:.4f}  acc {task.fields[acc]:.1f} %  {task.fields[rate]:.0f} samples/s"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[eta]}"),
            console=self.console,
            transient=True,
            disable=not (bar and self.console.is_terminal),  # logs, pipes and --json get the per-epoch lines only
        )
        self.task = None
        self.epoch_seconds: list[float] = []  # finished epochs (training and evaluation), for the run's ETA
        self.started = time.perf_counter()  # the current epoch's start

    def _run_eta(self, epoch: int, epochs: int) -> str:
        """The run's time left at the start of `epoch` (this epoch included), from the finished epochs' mean
        duration (training and evaluation): the bar's own ETA covers only the epoch's batches."""
        if not self.epoch_seconds:
            return ""
        left = (epochs - epoch + 1) * sum(self.epoch_seconds) / len(self.epoch_seconds)
        minutes, seconds = divmod(int(left), 60)
        hours, minutes = divmod(minutes, 60)
        return f"run left ~{hours}:{minutes:02d}:{seconds:02d}"

    def finish(self) -> None:
        """The stage is over: drop its bar and forget its epochs' durations (the next stage has its own)."""
        if self.task is not None:
            self.bar.remove_task(self.task)
            self.task = None
        self.epoch_seconds = []

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
            self.task = self.bar.add_task("", total=event["batches"], epoch=event["epoch"], epochs=event["epochs"],
                                          loss=0.0, acc=0.0, rate=0.0, eta=self._run_eta(event["epoch"], event["epochs"]),
                                          stage=f"{self.stage} " if self.stage else "")
            self.started = time.perf_counter()
        elif kind == "batch" and self.task is not None:
            self.bar.update(self.task, completed=event["batch"], loss=event["loss"], acc=event["accuracy"], rate=event["samples_per_s"])
        elif kind == "warning":
            self.bar.console.print(f"[yellow]warning:[/] {escape(event['message'])}", markup=True, highlight=False)
        elif kind == "hint":
            self.bar.console.print(f"[cyan]hint:[/] {escape(event['message'])}", markup=True, highlight=False)
        elif kind == "epoch_end":
            self.epoch_seconds.append(time.perf_counter() - self.started)
        if kind == "epoch_end" and not self.quiet:
            self.bar.console.print(
                f"epoch {event['epoch']}/{event['epochs']}: train loss {event['train_loss']:.4f}, "
                f"train acc {event['train_accuracy']:.2f} %, test acc {event['test_accuracy']:.2f} % "
                f"({event['seconds']:.1f} s, {event['samples_per_s']:.0f} samples/s)",
                highlight=False,
            )


def _config(epochs, batch_size, lr, optimizer, momentum, weight_decay, seed, device, train, loss, encoding, schedule,
            recompute_tt=False, distill_weight=0.5, distill_temperature=4.0, precision="fp32",
            threads=None, tt_kernel="auto", compile_step=False, data_on_device="auto") -> TrainConfig:
    return TrainConfig(
        epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer.lower(), momentum=momentum,
        weight_decay=weight_decay, seed=seed, device=device, train=train, loss=loss, encoding=encoding,
        schedule=schedule, recompute_tt=recompute_tt, distill_weight=distill_weight,
        distill_temperature=distill_temperature, precision=precision, threads=check_threads(threads),
        tt_kernel=tt_kernel, compile=compile_step, data_on_device=data_on_device,
    )


def _run(job: TrainJob, json_out: bool) -> None:
    main_process = int(os.environ.get("RANK", "0")) == 0  # under torchrun only rank 0 reports
    with ProgressView(quiet=False, bar=not json_out) as view:
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
LR = typer.Option(None, "--lr", help="initial learning rate, cosine-annealed to 0 (default: 0.1 with sgd, 0.001 "
                  "with adam)")
OPTIMIZER = typer.Option(None, "--optimizer", help="sgd or adam (default: sgd for zoo:NAME, adam for your own "
                         "MODULE:FACTORY; see docs/training.md)")
MOMENTUM = typer.Option(0.9, "--momentum", help="SGD momentum (Adam beta1)")
WD = typer.Option(1e-4, "--weight-decay", help="weight decay")
SEED = typer.Option(0, "--seed", help="random seed (init, shuffling, augmentation)")
DEVICE = typer.Option("auto", "--device", help="auto (cuda if available, else cpu), cpu, cuda, cuda:N")
TRAIN = typer.Option("all", "--train", help="all: every parameter; cores: only the TT cores")
LOSS = typer.Option("ce", "--loss", help="ce (cross-entropy of the time-averaged output, the paper's), ce_rate (at "
                    "every step), ce_count, mse_count (spike counts); see docs/training.md")
READOUT = typer.Option(None, "--readout", help="which record of a model returning several (snntorch tutorials: "
                       "(spk_rec, mem_rec)) the loss and accuracy read: spikes (the first, default), membrane (the "
                       "second: trains the tutorial networks best) or an index; recorded in the bundle")
LOG_DIR = typer.Option(None, "--log-dir", help="write DIR/metrics.csv and a TensorBoard event file every epoch "
                       "(view with `tensorboard --logdir DIR`)")
THREADS = typer.Option(None, "--threads", help=THREADS_HELP)
ENCODING = typer.Option("direct", "--encoding", help="static images: direct (repeat each step) or rate (Poisson spikes)")
SCHEDULE = typer.Option("cosine", "--schedule", help="cosine or constant learning rate")
RESUME = typer.Option(False, "--resume", help="continue an interrupted run from OUT's last saved epoch")
FORCE = typer.Option(False, "--force", help="overwrite OUT (and the --log-dir files) if it exists")
JSON = typer.Option(False, "--json", help="print one JSON document on stdout")
ARCH_KWARGS = typer.Option(None, "--arch-kwargs", help="JSON object of factory keyword arguments")
RECOMPUTE = typer.Option(False, "--recompute-tt", help="the memory-saving mode: TT layers recompute their cores in "
                         "backward and MS-ResNet blocks keep the spikes their convs read as one byte: less memory "
                         "(MS-ResNet18 batch 32: 0.58x a TT step's exact saved bytes, 0.97x its RSS peak) for about "
                         "1.02-1.07x the step time (benchmarks/bench_training.py)")
STYLE = typer.Option(None, "--style", help=STYLE_HELP)
PRECISION = typer.Option("fp32", "--precision", help="fp32; bf16 or fp16: autocast (weights stay fp32; fp16 with a "
                         "loss scaler); bf16 runs on CPU too. See docs/performance.md")
TT_KERNEL = typer.Option("auto", "--tt-kernel", help="how TT layers run: auto (on CUDA each layer is timed both "
                         "ways on a first batch and keeps the faster; on CPU factored), factored (the cores), "
                         "rebuilt (one conv of the kernel rebuilt from the cores every step). Same results; "
                         "see docs/performance.md")
COMPILE = typer.Option(False, "--compile", help="run the training step through torch.compile (on CUDA as a CUDA "
                       "graph: less host overhead); the first steps compile. Same results to float tolerance; "
                       "see docs/performance.md")
DATA_ON_DEVICE = typer.Option("auto", "--data-on-device", help="auto: keep a split that fits on the device and "
                              "make its batches there (augmentation included); off: batches through a DataLoader "
                              "on the CPU. The same batches either way; see docs/performance.md")
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
    precision: str = PRECISION, readout: str = READOUT, log_dir: Path = LOG_DIR, threads: int = THREADS,
    compile_step: bool = COMPILE, data_on_device: str = DATA_ON_DEVICE,
) -> None:
    """Train a dense SNN from scratch and write a dense bundle (what `compress` starts from)."""
    optimizer, lr = default_optimizer("train", arch, optimizer, lr)
    config = _config(epochs, batch_size, lr, optimizer, momentum, weight_decay, seed, device, train, loss, encoding, schedule,
                     precision=precision, threads=threads, compile_step=compile_step, data_on_device=data_on_device)
    job = TrainJob("train", output, config, data=data, arch=arch, arch_kwargs=parse_arch_kwargs(arch_kwargs),
                   timesteps=timesteps, resume=resume, force=force, style=style, readout=readout, log_dir=log_dir)
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
    lr: float = typer.Option(None, "--lr", help="initial learning rate, cosine-annealed to 0 (default: 0.01 with "
                             "sgd, 0.001 with adam)"),
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
    readout: str = typer.Option(None, "--readout", help="spikes, membrane or an output index (default: the "
                                "bundle's, else spikes); see train --help"),
    log_dir: Path = LOG_DIR, threads: int = THREADS, tt_kernel: str = TT_KERNEL, compile_step: bool = COMPILE,
    data_on_device: str = DATA_ON_DEVICE,
) -> None:
    """Fine-tune a (TT) model with surrogate-gradient BPTT (optionally distilling a --teacher) and write the tuned bundle."""
    optimizer, lr = default_optimizer("finetune", arch, optimizer or "sgd", lr)
    config = _config(epochs, batch_size, lr, optimizer, momentum, weight_decay, seed, device, train, loss, encoding, schedule,
                     recompute_tt, distill_weight, distill_temperature, precision, threads, tt_kernel, compile_step,
                     data_on_device)
    job = TrainJob("finetune", output, config, data=data, arch=arch,
                   arch_kwargs=parse_arch_kwargs(arch_kwargs) if arch_kwargs else None, checkpoint=model,
                   timesteps=timesteps, resume=resume, force=force, trust_pickle=trust_pickle, teacher=teacher,
                   teacher_arch=teacher_arch, style=style, readout=readout, log_dir=log_dir,
                   teacher_arch_kwargs=parse_arch_kwargs(teacher_arch_kwargs) if teacher_arch_kwargs else None)
    with trust_scope(trust_arch, arch, teacher_arch):
        _run(job, json_out)
