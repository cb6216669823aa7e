"""`ttsnn compress`: a dense checkpoint (or a zoo model, for planning) -> a TT bundle."""

from __future__ import annotations

import math
from enum import Enum
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
    warn,
)
from ttsnn_cli.cli.progress import StepBar
from ttsnn_cli.cli.render import compress_table
from ttsnn_cli.compress.decompose import NothingToDecompose
from ttsnn_cli.compress.job import CompressJob, run_compress
from ttsnn_cli.compress.sensitivity import DEFAULT_CALIB_SAMPLES
from ttsnn_cli.errors import BadInputError, abbreviate
from ttsnn_cli.pipeline.recipe import load_recipe, resolve_data_spec, resolve_path
from ttsnn_cli.storage.bundle import ModelIO
from ttsnn_cli.storage.trust import parse_arch_kwargs
from ttsnn_cli.train.threads import check_threads, limited_threads


class ModeChoice(str, Enum):
    stt = "stt"
    ptt = "ptt"
    htt = "htt"


#: the most elements one sample's frame may have (a typo like 3,32000,32000 must not allocate 12 GB)
MAX_FRAME_ELEMENTS = 2**26

def parse_input_shape(text: str | None) -> tuple[int, ...] | None:
    """`--input-shape C,H,W` (or C,L / F): 1 to 4 positive whole sizes of one timestep's frame."""
    if text is None:
        return None
    try:
        shape = tuple(int(p) for p in text.split(","))
    except ValueError:
        raise BadInputError(f"--input-shape takes C,H,W as whole numbers, got {abbreviate(repr(text))}") from None
    if not 1 <= len(shape) <= 4:
        raise BadInputError(f"--input-shape takes 1 to 4 sizes (C,H,W for images), got {len(shape)}")
    if min(shape) < 1:
        raise BadInputError(f"--input-shape takes positive sizes, got {text!r}")
    if math.prod(shape) > MAX_FRAME_ELEMENTS:
        raise BadInputError(f"--input-shape {text} has {math.prod(shape):,} elements per frame, more than {MAX_FRAME_ELEMENTS:,}")
    return shape


@app.command()
@guarded
def compress(
    checkpoint: Optional[Path] = typer.Argument(None, help="Dense state_dict or ttsnn bundle (omit with --arch zoo:NAME to plan)."),
    output: Path = typer.Option(..., "-o", "--output", help="The TT bundle to write."),
    arch: Optional[str] = typer.Option(None, help="zoo:NAME or MODULE:FACTORY building the dense model."),
    arch_kwargs: Optional[str] = typer.Option(None, help="JSON kwargs for the factory."),
    ranks: Optional[str] = typer.Option(None, help="r (r1 = r2 = r3) or r1,r2,r3."),
    rank_method: Optional[str] = typer.Option(None, help="fixed (default), vbmf, energy:F, budget:X (global), uniform:X (per layer), sensitivity:X, fisher:X or recovery:X (these need --data)."),
    mode: Optional[ModeChoice] = typer.Option(None, help="stt (exact chain), ptt (parallel), htt (half)."),
    include: list[str] = typer.Option([], help="Regex over module names to decompose (repeatable)."),
    exclude: list[str] = typer.Option([], help="Regex over module names to keep dense (repeatable)."),
    recipe: Optional[Path] = typer.Option(None, help="Recipe whose model and compress sections fill unset options."),
    timesteps: Optional[int] = typer.Option(None, help="Timesteps T (needed by HTT when the model does not say)."),
    input_shape: Optional[str] = typer.Option(None, help="Per-step input shape C,H,W, recorded in the bundle."),
    layer_types: Optional[str] = typer.Option(None, help="Which layers become TT: comma list of conv2d, conv1d, linear (TT-matrix), conv2d_grouped (a grouped Conv2d, one TT chain per group, STT). Default conv2d,conv1d."),
    linear_cores: Optional[int] = typer.Option(None, min=1, max=8, help="Cores d of a TT-matrix Linear: in/out features split into d balanced factors (default 3)."),
    svd: str = typer.Option("qr_svd", help="SVD inside tensorly's TT-SVD: qr_svd (default), truncated_svd, symeig_svd, randomized_svd."),
    seed: int = typer.Option(0, help="Seed for initialising a zoo model without checkpoint, and for the calibration subset."),
    data: Optional[str] = typer.Option(None, help="Data SPEC for sensitivity:X / fisher:X calibration (default: the bundle's data)."),
    calib_samples: int = typer.Option(DEFAULT_CALIB_SAMPLES, help="Training samples sensitivity:X / fisher:X measure the loss on."),
    force: bool = typer.Option(False, "--force", help="Overwrite OUTPUT, even when it is the input."),
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help="Allow a pickled whole module (runs code from the file!)."),
    trust_arch: bool = typer.Option(False, "--trust-arch", help=TRUST_ARCH_HELP),
    json_output: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
    style: Optional[str] = typer.Option(None, help=STYLE_HELP),
    threads: Optional[int] = typer.Option(None, "--threads", help=THREADS_HELP),
    round_ranks: Optional[int] = typer.Option(None, "--round-ranks", help="Round every chosen rank to the nearest multiple of N (at least N, never above its cap): GPU tensor cores run channel counts that are multiples of 8 fastest. The reported counts follow the rounded ranks."),
    budget_on: Optional[str] = typer.Option(None, "--budget-on", help="What budget:X, uniform:X and sensitivity:X shrink X times: weights (default), macs (per timestep, at the input shape) or time (forward + backward, measured per layer on --device)."),
    device: Optional[str] = typer.Option(None, help="Where --budget-on time measures the layers: auto (cuda if available, the default), cpu, cuda, cuda:N."),
    allow_growth: bool = typer.Option(False, "--allow-growth", help="Decompose a layer (Conv2d, Conv1d or Linear) even when its TT cores hold more weights than it "
                                                  "(by default such a layer stays dense, with the reason)."),
) -> None:
    """Decompose every eligible Conv2d (four TT cores), Conv1d (three) and, with --layer-types, Linear (TT-matrix) by TT-SVD and write a TT bundle."""
    check_options(("--timesteps", timesteps, 1, None), ("--seed", seed, 0, 2**63 - 1))
    job = CompressJob(output=output, checkpoint=checkpoint, arch=arch, arch_kwargs=parse_arch_kwargs(arch_kwargs),
                      ranks=ranks, rank_method=rank_method, mode=mode.value if mode else "stt", include=list(include),
                      exclude=list(exclude), io=ModelIO(parse_input_shape(input_shape), timesteps, None, style), svd=svd,
                      seed=seed, force=force, trust_pickle=trust_pickle, layer_types=layer_types,
                      linear_cores=linear_cores or 3, data=data, calib_samples=calib_samples, allow_growth=allow_growth,
                      budget_on=budget_on or "weights", device=device, round_ranks=1 if round_ranks is None else round_ranks)
    if recipe is not None:
        _fill_from_recipe(job, recipe, mode is not None, arch_kwargs is not None, linear_cores is not None)
        job.budget_on = budget_on or job.budget_on
        job.round_ranks = job.round_ranks if round_ranks is None else round_ranks
    with trust_scope(trust_arch, job.arch), limited_threads(check_threads(threads)), \
            StepBar({"sensitivity": "sensitivity", "timing": "timing layers"}, bar=not json_output) as bar:
        try:
            _, document = run_compress(job, progress=bar)
        except NothingToDecompose as refusal:
            if json_output:  # the refusal still gives CI its document (each layer's reason), then exit 3
                print_json(refusal.document)
            raise
    for message in document["warnings"]:
        warn(message)
    if json_output:
        print_json(document)
    else:
        compress_table(document)
        warn_ratios(document)


def ratio_line(document: dict[str, Any]) -> str:
    """One line: what the decomposed layers shrank by, in every measure known (and the budget's)."""
    ratios = document.get("ratios") or {}
    parts = [f"{label} {ratios[key]:.2f}x" for key, label in (("weights", "weights"), ("macs", "MACs"), ("time", "time"))
             if ratios.get(key) is not None]
    line = "decomposed layers: " + ", ".join(parts) + " fewer"
    budget = document.get("budget")
    if budget and budget.get("reached") is not None:
        line += f"; budget {budget['target']:g}x in {budget['unit']}: reached {budget['reached']:.2f}x"
    return line


def warn_ratios(document: dict[str, Any]) -> None:
    err_console().print(ratio_line(document), highlight=False)


def _fill_from_recipe(job: CompressJob, recipe_path: Path, mode_given: bool, kwargs_given: bool, cores_given: bool) -> None:
    """Recipe values for every option the command line left unset (the command line wins)."""
    recipe, base = load_recipe(recipe_path)
    model, section = recipe.model, recipe.compress
    job.arch = job.arch or model.arch
    if not kwargs_given:
        job.arch_kwargs = dict(model.kwargs)
    job.checkpoint = job.checkpoint or resolve_path(base, model.checkpoint)
    job.io = ModelIO(tuple(model.input_shape) if model.input_shape else None, model.timesteps,
                     resolve_data_spec(base, recipe.data)).merged(job.io)
    if section is not None:
        if job.ranks is None and job.rank_method is None:
            job.ranks, job.rank_method = section.ranks, section.rank_method
        job.mode = job.mode if mode_given else section.mode
        job.include = job.include or list(section.include)
        job.exclude = job.exclude or list(section.exclude)
        job.overrides = dict(section.layers)
        job.svd = section.svd if job.svd == "qr_svd" else job.svd
        job.layer_types = job.layer_types if job.layer_types is not None else list(section.layer_types)
        job.linear_cores = job.linear_cores if cores_given else section.linear_cores
        if job.calib_samples == DEFAULT_CALIB_SAMPLES:
            job.calib_samples = section.calib_samples
        job.data = job.data or resolve_data_spec(base, section.data)
        job.budget_on = section.budget_on
        job.round_ranks = section.round_ranks
