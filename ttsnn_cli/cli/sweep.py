"""`ttsnn sweep`: compress, fine-tune and evaluate a dense model at several targets with several rank
methods; the accuracy-compression front as JSON (and a Pareto plot), gated for CI."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from ttsnn_cli.cli.app import app
from ttsnn_cli.cli.common import (
    STYLE_HELP,
    THREADS_HELP,
    TRUST_ARCH_HELP,
    check_options,
    err_console,
    guarded,
    print_json,
    trust_scope,
)
from ttsnn_cli.cli.progress import StepBar
from ttsnn_cli.cli.train import PRECISION, TT_KERNEL
from ttsnn_cli.compress.sensitivity import DEFAULT_CALIB_SAMPLES
from ttsnn_cli.errors import BadInputError, GateFailedError
from ttsnn_cli.pipeline.sweep import METHODS, SweepJob, run_sweep
from ttsnn_cli.storage.trust import parse_arch_kwargs
from ttsnn_cli.train.engine import TrainConfig
from ttsnn_cli.train.threads import check_threads, limited_threads


def parse_targets(text: str) -> list[float]:
    try:
        return [float(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise BadInputError(f"--targets takes shrink factors separated by commas (e.g. 4,8,16), got {text!r}") from None


class SweepView(StepBar):
    """The bars, plus one line per finished point."""

    def __call__(self, event: dict[str, Any]) -> None:
        super().__call__(event)
        if event.get("kind") == "point":
            p = event["point"]
            target = "-" if p["target"] is None else f"{p['target']:g}x"
            how = "kept from the earlier run" if event["skipped"] else f"{p['seconds']:.0f} s"
            self.bar.console.print(
                f"{p['method']:>11} {target:>5}: weights {p['weight_ratio']:.2f}x, MACs {p['mac_ratio']:.2f}x fewer; "
                f"accuracy {p['accuracy_before']:.2f} % -> {p['accuracy_after']:.2f} % after fine-tuning "
                f"({how})", highlight=False)


@app.command()
@guarded
def sweep(
    model: Path = typer.Argument(..., help="The trained dense model: a bundle, or a state_dict with --arch."),
    data: str = typer.Option(..., help="Data SPEC: fine-tuning, evaluation and sensitivity / fisher calibration."),
    output: Path = typer.Option(..., "-o", "--output", help="Folder for the sweep (sweep.json, one bundle per point)."),
    targets: str = typer.Option("4,8,16,32", help="Shrink factors X of the decomposed weights, comma-separated."),
    methods: str = typer.Option("budget,sensitivity,vbmf", help=f"Rank methods, comma-separated: {', '.join(METHODS)}."),
    teacher: Optional[str] = typer.Option(None, help="Distil every fine-tune from this model ('source': MODEL itself)."),
    finetune_epochs: int = typer.Option(1, help="Fine-tuning epochs per point."),
    batch_size: int = typer.Option(64, help="Fine-tuning batch size."),
    lr: float = typer.Option(0.01, help="Fine-tuning learning rate (cosine-annealed)."),
    distill_weight: float = typer.Option(0.5, help="a in (1-a)*task + a*t^2*KL (with --teacher)."),
    distill_temperature: float = typer.Option(4.0, help="t, the distillation temperature (with --teacher)."),
    mode: str = typer.Option("stt", help="TT mode: stt, ptt or htt."),
    include: list[str] = typer.Option([], help="Regex over module names to decompose (repeatable)."),
    exclude: list[str] = typer.Option([], help="Regex over module names to keep dense (repeatable)."),
    layer_types: Optional[str] = typer.Option(None, help="Which layers every point decomposes: comma list of conv2d, conv1d, linear, conv2d_grouped (default conv2d,conv1d). The global methods allocate Conv2d, Conv1d and Linear layers together."),
    linear_cores: int = typer.Option(3, min=1, max=8, help="Cores d of a TT-matrix Linear."),
    budget_on: str = typer.Option("weights", "--budget-on", help="What the targets of budget, uniform, sensitivity and fisher count: weights (default), macs (per timestep) or time (forward + backward per layer, measured on --device)."),
    calib_samples: int = typer.Option(DEFAULT_CALIB_SAMPLES, help="Training samples for sensitivity / fisher calibration."),
    train_samples: Optional[int] = typer.Option(None, help="Fine-tune on this many training samples (seeded subset; default all)."),
    timesteps: Optional[int] = typer.Option(None, help="Timesteps T (default: the model's)."),
    seed: int = typer.Option(0, help="Seed of fine-tuning and of the calibration subset."),
    device: str = typer.Option("auto", help="auto (cuda if available), cpu, cuda, cuda:N."),
    arch: Optional[str] = typer.Option(None, help="Architecture of a state_dict MODEL."),
    arch_kwargs: Optional[str] = typer.Option(None, help="JSON kwargs of --arch."),
    plot: Optional[Path] = typer.Option(None, help="Write the Pareto plot (accuracy vs weight reduction) here."),
    max_acc_drop: Optional[float] = typer.Option(None, help="Gate: every point within PTS points of dense (exit 4); with --search, the limit the search keeps to."),
    search: bool = typer.Option(False, "--search", help="Search each method's targets (doubling from the smallest --targets, then bisection on the log scale) for the most compressed point within --max-acc-drop of dense; reuses finished points."),
    search_points: int = typer.Option(8, help="With --search: the most points one method's search tries (reused ones included)."),
    force: bool = typer.Option(False, "--force", help="Start afresh over an earlier sweep in OUTPUT; overwrite --plot."),
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help="Allow a pickled whole module (runs code from the file!)."),
    trust_arch: bool = typer.Option(False, "--trust-arch", help=TRUST_ARCH_HELP),
    json_output: bool = typer.Option(False, "--json", help="Print the result as one JSON document on stdout."),
    style: Optional[str] = typer.Option(None, help=STYLE_HELP),
    precision: str = PRECISION,
    tt_kernel: str = TT_KERNEL,
    threads: Optional[int] = typer.Option(None, "--threads", help=THREADS_HELP),
    compile_step: bool = typer.Option(False, "--compile", help="every fine-tune's step through torch.compile (as finetune --compile)."),
) -> None:
    """For each method and target: compress MODEL, fine-tune it, evaluate it (resumable)."""
    check_options(("--timesteps", timesteps, 1, None), ("--finetune-epochs", finetune_epochs, 1, None),
                  ("--batch-size", batch_size, 1, None), ("--calib-samples", calib_samples, 1, None),
                  ("--train-samples", train_samples, 1, None), ("--max-acc-drop", max_acc_drop, 0, None),
                  ("--search-points", search_points, 1, None))
    config = TrainConfig(epochs=finetune_epochs, batch_size=batch_size, lr=lr, seed=seed, device=device,
                         distill_weight=distill_weight, distill_temperature=distill_temperature,
                         precision=precision, tt_kernel=tt_kernel, threads=check_threads(threads),
                         compile=compile_step)
    job = SweepJob(model=model, data=data, out_dir=output, targets=parse_targets(targets),
                   methods=[m.strip() for m in methods.split(",") if m.strip()], finetune=config,
                   teacher=model if teacher == "source" else (Path(teacher) if teacher else None), mode=mode,
                   include=list(include), exclude=list(exclude), calib_samples=calib_samples, seed=seed,
                   arch=arch, arch_kwargs=parse_arch_kwargs(arch_kwargs) if arch_kwargs else None,
                   timesteps=timesteps, max_acc_drop=max_acc_drop, train_samples=train_samples, plot=plot, force=force, trust_pickle=trust_pickle,
                   style=style, search=search, search_points=search_points, layer_types=layer_types,
                   linear_cores=linear_cores, budget_on=budget_on)
    with trust_scope(trust_arch, arch), limited_threads(threads), SweepView({"sweep": "sweep points", "sensitivity": "sensitivity"},
                                                                             bar=not json_output) as view:
        document = run_sweep(job, progress=view)
    if json_output:
        print_json(document)
    else:
        err_console().print(f"sweep: dense accuracy {document['dense_accuracy']:.2f} %, {len(document['points'])} points "
                            f"-> {document['json']}" + (f", plot {document['plot']}" if document["plot"] else ""))
    if "chosen" in document:
        chosen = document["chosen"]
        err_console().print(f"sweep: chose {chosen['point']}: {chosen['reason']}" if chosen else
                            f"sweep: no compressed point within {max_acc_drop:g} pts of dense", highlight=False)
    failure = gate_failure(document)
    if failure:
        raise GateFailedError(failure)


def gate_failure(document: dict[str, Any]) -> str | None:
    """The one-line message of a failed sweep gate (every point's, or the search's), else None."""
    bad = [g for g in document["gates"] if not g["passed"]]
    if not bad:
        return None
    if "chosen" in document:
        g = bad[0]
        closest = f" (closest: {g['point']} drops {g['value']:.2f} pts)" if g["point"] else ""
        return f"sweep search found no compressed point within {g['limit']:g} pts of dense{closest}"
    return "sweep gate failed: " + "; ".join(f"{g['point']} drops {g['value']:.2f} pts (limit {g['limit']:g})" for g in bad)
