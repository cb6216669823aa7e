"""`ttsnn sweep`: the accuracy-compression front of one dense model, method by method.

For every rank method and target X: compress the dense model (`budget:X`, `uniform:X`,
`sensitivity:X`; `vbmf` has no target and gives one point), evaluate it, fine-tune it with the same
options (and the same teacher, when distilling), evaluate again. Each point records the method,
target, ratios against dense (all params, conv + linear weights, MACs per timestep; and the decomposed
layers' weights and MACs, what a budget counts), accuracy before
and after fine-tuning and the seconds it took.

Resumable: `DIR/sweep.json` is rewritten (atomically) after every finished point, with the settings
that produced it; a rerun with the same settings keeps the finished points and skips them (a point
cut off mid-way is redone). Other settings in an existing `DIR/sweep.json` are refused unless
`force`, which starts afresh. Sensitivity (and Fisher) curves are measured once for all targets and kept in
`DIR/sensitivity.json` (`DIR/fisher.json`) (with a fingerprint of everything they depend on: other settings measure
them anew). Each point's fine-tuned bundle is `DIR/<method>-<target>.tt`.

Both JSON files are input on a rerun (anyone may edit them): they are validated on read, and a bad
one is one line of bad input naming the file and the field (with `force`, it is replaced). NaN and
Infinity never enter or leave them. Every refusal comes before the folder is created; a run holds
an exclusive lock on the folder (`DIR/.sweep.lock`), so of two sweeps writing one folder the second
is refused rather than both "succeeding" with one's points lost.

Accuracy-aware search (`search` with `max_acc_drop`): instead of the fixed `targets`, each
method with a target walks a grid of targets 2^(k/4) (quarter octaves, so 4, 8, 16, 32 lie on it and
points of an earlier grid sweep are reused): doubling from the smallest of `targets` while the
fine-tuned accuracy stays within `max_acc_drop` of dense, then bisecting on the log scale between the
last point that held and the first that did not, until neighbouring grid targets bracket the limit
or `search_points` points were tried (finished points, from this run or an earlier one with the same
settings, are reused, not redone). The document's `chosen` names the most compressed point (most
weights saved) within the limit, and why; `search` lists each method's walk. A search that finds
no compressed point within the limit fails its one gate (exit 4).
The library never prints: progress goes to the `progress` callback.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr
from torch import nn
from torch.utils.data import Subset

from ttsnn_cli.compress.costs import leaf_weights, result_ratios
from ttsnn_cli.compress.decompose import (
    CompressConfig,
    NothingToDecompose,
    compress_model,
    free_layers,
    plan_layers,
    prepare_costs,
)
from ttsnn_cli.compress.sensitivity import (
    CRITERIA,
    DEFAULT_CALIB_SAMPLES,
    calibration_set,
    candidate_factors,
    check_curves,
    check_finite_curves,
    curves_document,
    measure_sensitivity,
    sensitivity_ranks,
)
from ttsnn_cli.data import DataBundle, load_data
from ttsnn_cli.data.compat import check_compatible
from ttsnn_cli.errors import BadInputError
from ttsnn_cli.kinds import is_tt_layer, kind_of, parse_layer_types, tt_dims
from ttsnn_cli.layers.conv2d import MODES
from ttsnn_cli.maths.ranks import BUDGET_ON, DATA_METHODS, Costs, RankSpec
from ttsnn_cli.report.counting import count_model
from ttsnn_cli.spiking.budget import check_run_fits, check_timesteps
from ttsnn_cli.spiking.runner import check_style
from ttsnn_cli.storage.bundle import ModelIO, file_checksum, get_meta, save_bundle
from ttsnn_cli.storage.jsonfile import read_json_file
from ttsnn_cli.storage.load import load_checkpoint
from ttsnn_cli.storage.outputs import atomic_write_text, check_output_path, make_output_folder, standard_json
from ttsnn_cli.storage.schema import validated
from ttsnn_cli.storage.trust import zoo_io
from ttsnn_cli.train.engine import Progress, TrainConfig, evaluate, fit, resolve_device

METHODS = ("budget", "uniform", "sensitivity", "fisher", "recovery", "vbmf")
TARGETLESS = ("vbmf",)
RESULTS = "sweep.json"
#: where each data method's curves are kept, measured once for every target
CURVES = {"sensitivity": "sensitivity.json", "fisher": "fisher.json", "recovery": "recovery.json"}
LOCK = ".sweep.lock"
FORCE_HINT = "pass --force to start afresh"


@dataclass
class SweepJob:
    model: Path
    data: str
    out_dir: Path
    targets: list[float] = field(default_factory=lambda: [4.0, 8.0, 16.0, 32.0])
    methods: list[str] = field(default_factory=lambda: ["budget", "sensitivity", "vbmf"])
    finetune: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=1, lr=0.01))
    teacher: Path | None = None  # distil every fine-tune from this model (e.g. the dense input itself)
    mode: str = "stt"
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    calib_samples: int = DEFAULT_CALIB_SAMPLES
    seed: int = 0
    arch: str | None = None
    arch_kwargs: dict[str, Any] | None = None
    timesteps: int | None = None
    max_acc_drop: float | None = None
    train_samples: int | None = None  # fine-tune on a seeded subset of the training split (compute budget)
    plot: Path | None = None
    force: bool = False
    trust_pickle: bool = False
    style: str | None = None  # --style: how to run a user network detection cannot tell (runner.STYLES)
    search: bool = False  # search each method's targets for the most compressed point within max_acc_drop
    search_points: int = 8  # the most points one method's search tries (reused ones included)
    layer_types: str | list[str] | None = None  # --layer-types: what every point decomposes (None: compress's default)
    linear_cores: int = 3  # --linear-cores: cores of a TT-matrix Linear
    budget_on: str = "weights"  # --budget-on: what the targets of the global methods count (weights, macs, time)


Finite = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Percent = Annotated[Finite, Field(ge=0, le=100)]
Ratio = Annotated[Finite, Field(gt=0)]
Count = Annotated[StrictInt, Field(ge=0)]


class PointRecord(BaseModel):
    """A finished point as `sweep.json` keeps it: what a resumed sweep copies, gates and prints."""

    model_config = ConfigDict(extra="allow")

    method: Literal["budget", "uniform", "sensitivity", "fisher", "recovery", "vbmf"]
    target: Annotated[Finite, Field(ge=1)] | None
    param_ratio: Ratio
    weight_ratio: Ratio
    mac_ratio: Ratio
    params: Count
    weights: Count
    accuracy_before: Percent
    accuracy_after: Percent
    seconds: Annotated[Finite, Field(ge=0)]
    ranks: dict[StrictStr, list[StrictInt]]
    rank_method: StrictStr
    output: StrictStr


class SweepRecord(BaseModel):
    """The fields of `sweep.json` a rerun relies on (the file is input: anyone may edit it)."""

    model_config = ConfigDict(extra="allow")

    dense_accuracy: Percent
    points: list[PointRecord]
    settings: dict[StrictStr, Any]


def point_key(method: str, target: float | None) -> str:
    return method if target is None else f"{method}-{target:g}"


def planned_points(job: SweepJob) -> list[tuple[str, float | None]]:
    points: list[tuple[str, float | None]] = []
    for method in job.methods:
        if method in TARGETLESS:
            points.append((method, None))
        else:
            points += [(method, float(t)) for t in job.targets]
    return points


def validate(job: SweepJob) -> None:
    """Every option checked before any work (DESIGN.md: fail fast, lose nothing)."""
    problems = [f"unknown method {m!r} (choose from {', '.join(METHODS)})" for m in job.methods if m not in METHODS]
    if not job.methods:
        problems.append("--methods names no method")
    if len(set(job.methods)) != len(job.methods):
        problems.append("--methods repeats a method")
    if any(m not in TARGETLESS for m in job.methods) and not job.targets:
        problems.append("--targets names no target")
    problems += [f"target {t:g} must be a finite number >= 1 (a shrink factor)" for t in job.targets
                 if not (math.isfinite(t) and t >= 1)]
    keys = [f"{t:g}" for t in job.targets]
    problems += [f"--targets repeats {key} (targets are told apart by 6 significant digits)"
                 for key in sorted({k for k in keys if keys.count(k) > 1})]
    if job.mode not in MODES:
        problems.append(f"unknown mode {job.mode!r}; choose one of {', '.join(MODES)}")
    if job.train_samples is not None and job.train_samples < 1:
        problems.append(f"--train-samples must be >= 1, got {job.train_samples}")
    if "recovery" in job.methods and job.calib_samples < 2:
        problems.append("recovery trains on half the calibration samples and judges on the other half: "
                        f"give --calib-samples 2 or more (got {job.calib_samples})")
    elif job.calib_samples < 1:
        problems.append(f"--calib-samples must be >= 1, got {job.calib_samples}")
    if job.max_acc_drop is not None and not job.max_acc_drop >= 0:
        problems.append(f"--max-acc-drop must be >= 0, got {job.max_acc_drop}")
    if job.search and job.max_acc_drop is None:
        problems.append("--search looks for the most compressed point within --max-acc-drop PTS of dense: give --max-acc-drop")
    if job.search and all(m in TARGETLESS for m in job.methods):
        problems.append("--search walks the targets of a method with a target (budget, uniform, sensitivity, fisher, "
                        "recovery): name one in --methods")
    try:
        parse_layer_types(job.layer_types)
    except ValueError as error:
        problems.append(f"--layer-types: {error}")
    if job.budget_on not in BUDGET_ON:
        problems.append(f"--budget-on takes {', '.join(BUDGET_ON)}; got {job.budget_on!r}")
    elif job.budget_on != "weights" and any(m in TARGETLESS for m in job.methods):
        problems.append(f"--budget-on {job.budget_on} sets what the targets count; vbmf has no target: drop it from --methods")
    if not 1 <= job.linear_cores <= 8:
        problems.append(f"--linear-cores must be in 1..8, got {job.linear_cores}")
    if job.search_points < 1:
        problems.append(f"--search-points must be >= 1, got {job.search_points}")
    if problems:
        raise BadInputError("; ".join(problems))
    check_style(job.style)
    job.finetune.validate()
    job.out_dir = Path(job.out_dir).expanduser()  # `~` as a shell would, like every other output
    _check_folder(job)
    inputs = [job.model, job.teacher]
    for path in inputs:
        if path is not None and job.out_dir.resolve() in Path(path).resolve().parents:
            raise BadInputError(f"input {path} lies inside the sweep folder {job.out_dir}; choose another -o")
    if job.plot is not None and not _plot_waits_for_folder(job):
        job.plot = check_output_path(job.plot, inputs, job.force, replace_input=False)  # `~` expanded


def _check_folder(job: SweepJob) -> None:
    """The sweep folder: absent with a writable folder above it, or a writable folder whose files
    ttsnn writes are regular files (or absent). Checked before any work: nothing is created yet."""
    folder = job.out_dir
    if folder.is_symlink() and not folder.exists():
        raise BadInputError(f"output {folder} is a symbolic link to nothing; remove it or choose another -o")
    if not folder.exists():
        if not folder.parent.is_dir():
            raise BadInputError(f"output folder {folder.parent} does not exist")
        if not os.access(folder.parent, os.W_OK | os.X_OK):
            raise BadInputError(f"output folder {folder.parent} is not writable; choose another -o")
        return
    if not folder.is_dir():
        raise BadInputError(f"output {folder} is a file; sweep writes a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise BadInputError(f"sweep folder {folder} is not writable; choose another -o")
    for name in [RESULTS, *CURVES.values(), LOCK] + [f"{point_key(m, t)}.tt" for m, t in planned_points(job)]:
        path = folder / name
        if path.exists() and not path.is_file():
            raise BadInputError(f"{path} is not a regular file; remove it or choose another -o")


def _plot_waits_for_folder(job: SweepJob) -> bool:
    """A plot inside the sweep folder whose own folder is not made yet (the recipe's `pareto.png` on
    a first run) is checked once the sweep folder exists: its folder is not missing, just not made."""
    assert job.plot is not None
    parent = Path(job.plot).expanduser().parent
    folder = job.out_dir.resolve()
    return not parent.exists() and (parent.resolve() == folder or folder in parent.resolve().parents)


def settings(job: SweepJob, model_checksum: str, teacher_checksum: str | None) -> dict[str, Any]:
    """What a finished point depends on: a resumed sweep must share all of it."""
    config = asdict(job.finetune)
    config.pop("device")
    config.pop("threads", None)  # how many cores compute a point changes nothing a resumed sweep must share
    config.pop("compile", None)  # nor whether its steps ran compiled (the same function)
    if config["precision"] == "fp32":  # sweeps written before --precision existed were all fp32
        config.pop("precision")
    return {"model_sha256": model_checksum, "data": job.data, "mode": job.mode, "include": job.include,
            "exclude": job.exclude, "calib_samples": job.calib_samples, "seed": job.seed, "finetune": config,
            "teacher_sha256": teacher_checksum, "timesteps": job.timesteps,
            "train_samples": job.train_samples} | ({"style": job.style} if job.style else {}) | (
                {"layer_types": sorted(parse_layer_types(job.layer_types)), "linear_cores": job.linear_cores}
                if job.layer_types is not None else {}) | (  # sweeps before --layer-types had the default
                {"budget_on": job.budget_on} if job.budget_on != "weights" else {})


def _previous(job: SweepJob, current: dict[str, Any]) -> dict[str, Any]:
    """The document of an earlier run with the same settings (empty with `force`, or none).
    Validated: a resumed sweep copies, gates and prints its points."""
    path = job.out_dir / RESULTS
    if job.force or not path.exists():
        return {}
    try:
        earlier = read_json_file(path, "sweep result")
        if not isinstance(earlier, dict):
            raise BadInputError(f"sweep result {path} holds a JSON {type(earlier).__name__}, not an object")
        validated(SweepRecord, earlier, f"sweep result {path} has a bad field", first_only=True)
    except BadInputError as error:
        raise BadInputError(f"{error}; {FORCE_HINT}") from None
    if earlier.get("settings") != current:
        raise BadInputError(f"{path} was written with other settings (model, data or fine-tuning); "
                            "pass --force to start afresh, or choose another -o")
    return earlier


def _ratios(dense: dict[str, Any], model: nn.Module, shape: tuple[int, ...], steps: int) -> dict[str, float]:
    counts = count_model(model, shape, steps)
    return {
        "param_ratio": dense["params"]["total"] / counts["params"]["total"],
        "weight_ratio": dense["params"]["weights"] / counts["params"]["weights"],
        "mac_ratio": dense["macs_per_timestep"] / counts["macs_per_timestep"],
        "params": counts["params"]["total"],
        "weights": counts["params"]["weights"],
    }


def _subset(data: DataBundle, samples: int | None, seed: int) -> DataBundle:
    """`samples` training items chosen by `seed` (the same for every point), or all of them."""
    if samples is None or samples >= len(data.train):
        return data
    order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(seed))[:samples]
    return replace(data, train=Subset(data.train, sorted(order.tolist())))


class _Sweep:
    """One sweep's loaded inputs; `point` runs one (method, target)."""

    def __init__(self, job: SweepJob, progress: Progress) -> None:
        self.job = job
        self.progress = progress
        self.dense = load_checkpoint(job.model, job.arch, job.arch_kwargs, job.trust_pickle).eval()
        meta = get_meta(self.dense)
        meta.io = zoo_io(meta.arch, meta.arch_kwargs).merged(meta.io).merged(ModelIO(None, None, None, job.style))
        check_style(meta.io.style)
        self.steps = job.timesteps or meta.io.timesteps or 4
        check_timesteps(self.steps, "sweep")  # before any data is binned into T frames (spiking.budget)
        job.finetune.timesteps = self.steps
        self.train_data = _subset(load_data(job.data, timesteps=self.steps, augment=True), job.train_samples, job.seed)
        self.eval_data = load_data(job.data, timesteps=self.steps, augment=False)
        check_compatible(self.dense, self.eval_data, self.steps, job.data)
        meta.io = ModelIO(tuple(self.eval_data.input_shape), self.steps, job.data, meta.io.style, meta.io.readout)
        self.shape = tuple(self.eval_data.input_shape)
        check_run_fits(self.dense, self.shape, self.steps, job.finetune.batch_size, what="sweep")  # each fine-tune's step
        self.teacher = None
        if job.teacher is not None:
            self.teacher = load_checkpoint(job.teacher, meta.arch, meta.arch_kwargs, job.trust_pickle).eval()
            check_compatible(self.teacher, self.eval_data, self.steps, job.data)
        self.device = resolve_device(job.finetune.device)
        self.dense_counts = count_model(self.dense, self.shape, self.steps)
        self.dense_weights = leaf_weights(self.dense)
        self.config = CompressConfig(RankSpec("fixed", (1, 1, 1)), mode=job.mode,  # type: ignore[arg-type]
                                     include=list(job.include), exclude=list(job.exclude), timesteps=self.steps,
                                     layer_types=parse_layer_types(job.layer_types), linear_cores=job.linear_cores,
                                     budget_on=job.budget_on, input_shape=self.shape, device=job.finetune.device)
        self.model_sha256 = file_checksum(job.model)
        self.check_layers()
        # what --budget-on counts and the dense shape probe, measured once for every point
        prepared = replace(self.config, ranks=RankSpec("budget", value=1.0))
        prepare_costs(self.dense, prepared, progress)
        self.config.costs, self.config.probe, self.config.probe_error = prepared.costs, prepared.probe, prepared.probe_error

    def check_layers(self) -> None:
        """What every point decomposes, checked before the folder is made: a TT input, a bad regex,
        nothing left to decompose, a mode a layer refuses, or a target beyond reach are refusals
        that leave nothing behind."""
        if any(is_tt_layer(m) for m in self.dense.modules()):
            raise BadInputError(f"{self.job.model} is already TT-compressed; sweep starts from the dense model "
                                "(the input of compress)")
        chosen, reports = plan_layers(self.dense, self.config)
        if not chosen:
            raise NothingToDecompose(self.dense, self.config, reports)
        for name, module in chosen.items():
            kind = kind_of(module, exact=False)
            refusal = kind.mode_refusal(self.job.mode) if kind is not None else None
            if refusal is not None:
                raise BadInputError(f"layer {name}: {refusal}")
        # A target above the number of weights it shrinks cannot be met by any rank (and would
        # overflow the sensitivity grid): the bound is those weights, the model's own size.
        weights = sum(int(m.weight.numel()) for m in chosen.values())
        self.weights = weights  # no ranks shrink the decomposed layers further: a search's top target
        if any(m not in TARGETLESS for m in self.job.methods) and max(self.job.targets) > weights:
            raise BadInputError(f"target {max(self.job.targets):g} is more than the {weights} weights of the layers to "
                                f"decompose: no ranks shrink them that far; choose --targets up to {weights}")

    def accuracy(self, model: nn.Module) -> float:
        return float(evaluate(model, self.eval_data, self.job.finetune, self.device))

    def curves_fingerprint(self, layers: dict[str, nn.Module], criterion: str) -> dict[str, Any]:
        """Everything the measured curves depend on besides the grid: stored curves with another
        fingerprint are measured anew (the layer list stands for --include/--exclude/--layer-types)."""
        fingerprint = {"model_sha256": self.model_sha256, "data": self.job.data, "calib_samples": self.job.calib_samples,
                       "seed": self.job.seed, "mode": self.job.mode, "timesteps": self.steps, "style": self.job.style,
                       "svd": "qr_svd", "layers": {name: list(m.weight.shape) for name, m in layers.items()}}  # type: ignore[union-attr]
        if criterion != "measured" or any(not isinstance(m, nn.Conv2d) for m in layers.values()):
            fingerprint |= {"criterion": criterion, "linear_cores": self.job.linear_cores}
        if self.job.budget_on != "weights":  # the candidate grid is spaced in what the budget counts
            fingerprint |= {"budget_on": self.job.budget_on}
        return fingerprint

    def stored_curves(self, path: Path, fingerprint: dict[str, Any], factors: list[float],
                      layers: dict[str, nn.Module]) -> dict[str, Any] | None:
        """The curves kept in the folder when they serve this sweep: same fingerprint, a grid at least
        as wide. None when they must be measured (absent, other settings, narrower grid; a bad file
        with `force`); a bad file without `force` is one line of bad input."""
        if not path.exists():
            return None
        try:
            stored = read_json_file(path, "sensitivity curves")
            if not isinstance(stored, dict):
                raise BadInputError(f"sensitivity curves {path} hold a JSON {type(stored).__name__}, not an object")
            if stored.get("fingerprint") != fingerprint:
                return None
            check_curves(stored, str(path), tt_dims(layers, self.job.linear_cores))
        except BadInputError as error:
            if self.job.force:
                return None
            raise BadInputError(f"{error}; pass --force to measure them again") from None
        covers = min(stored["factors"]) <= min(factors) + 1e-9 and max(stored["factors"]) >= max(factors) - 1e-9
        return stored if covers else None

    def curves(self, method: str) -> dict[str, Any]:
        """A data method's curves for every target at once, measured once and kept in the folder."""
        path = self.job.out_dir / CURVES[method]
        criterion = CRITERIA[method]
        factors = candidate_factors(self.job.targets, spread=2.0)  # neighbouring targets cover each other
        layers = free_layers(plan_layers(self.dense, self.config)[0], self.config)
        fingerprint = self.curves_fingerprint(layers, criterion)
        stored = self.stored_curves(path, fingerprint, factors, layers)
        if stored is not None:
            return stored
        calibration = calibration_set(self.eval_data, self.job.calib_samples, self.steps, self.job.seed)
        base, curves = measure_sensitivity(self.dense, layers, calibration, factors, self.job.mode,  # type: ignore[arg-type]
                                           self.steps, progress=self.progress, costs=self.budget_costs(),
                                           linear_cores=self.job.linear_cores, criterion=criterion)
        check_finite_curves(base, curves)
        document = curves_document(base, curves, calibration, self.job.seed, criterion) | {
            "factors": factors, "mode": self.job.mode, "model_sha256": self.model_sha256,
            "calib_samples_requested": self.job.calib_samples, "fingerprint": fingerprint}
        atomic_write_text(path, standard_json(document, indent=1) + "\n")
        return document

    def budget_costs(self) -> Costs | None:
        """What the global methods count when it is not weights (measured once, shared by every point)."""
        return self.config.costs if self.job.budget_on != "weights" else None

    def point(self, method: str, target: float | None) -> dict[str, Any]:
        started = time.perf_counter()
        model = copy.deepcopy(self.dense)
        # a new config, sharing what is measured once (the shape probe, the budget's costs)
        config = replace(self.config, ranks=RankSpec(method, value=target), overrides=dict(self.config.overrides))  # type: ignore[arg-type]
        if method in DATA_METHODS:
            layers = free_layers(plan_layers(model, config)[0], config)
            config.chosen_ranks, _ = sensitivity_ranks(model, layers, float(target or 1), self.eval_data,
                                                       self.job.calib_samples, self.steps, self.job.seed,
                                                       self.job.mode, measured=self.curves(method),  # type: ignore[arg-type]
                                                       costs=self.budget_costs(), linear_cores=self.job.linear_cores,
                                                       method=method)
        model, result = compress_model(model, config)
        ratios = _ratios(self.dense_counts, model, self.shape, self.steps)
        decomposed = [layer.name for layer in result.layers if layer.skipped is None]
        scoped = result_ratios(model, decomposed, self.dense_weights, self.config.probe, self.shape, self.steps)
        ratios |= {"decomposed_weight_ratio": scoped["weights"], "decomposed_mac_ratio": scoped["macs"]}
        before = self.accuracy(model)
        output = self.job.out_dir / f"{point_key(method, target)}.tt"
        meta = get_meta(model)
        meta.history = list(meta.history) + [{"stage": "compress", "mode": self.job.mode,
                                               "rank_method": result.rank_method, "totals": result.totals}]
        tuned = fit(model, self.train_data, copy.deepcopy(self.job.finetune), output,
                    teacher=copy.deepcopy(self.teacher) if self.teacher is not None else None,
                    on_epoch=lambda m, history: save_bundle(output, m, meta))
        return {
            "method": method,
            "target": target,
            **ratios,
            "accuracy_before": before,
            "accuracy_after": tuned["test_accuracy"],
            "seconds": time.perf_counter() - started,
            "ranks": {layer.name: layer.ranks for layer in result.layers if layer.ranks},
            "rank_method": result.rank_method,
            "output": str(output),
        }


#: grid steps per doubling of the target in a search: 2^(1/4) apart, so powers of two lie on the grid
SEARCH_STEPS = 4


def grid_target(k: int, steps: int = SEARCH_STEPS) -> float:
    """The k-th target of the search grid, 2^(k/steps), rounded to the 6 digits a point key keeps
    (so a rerun reaches the same keys, and 4, 8, 16 are exact)."""
    return float(f"{2 ** (k / steps):.6g}")


@dataclass
class SearchWalk:
    """One method's search: every target tried in order with whether it held, the most compressed
    target that held (None: none did), the smallest above it that did not, and why it stopped."""

    tried: list[tuple[float, bool]]
    best: float | None
    failed_above: float | None
    stopped: str

    def to_dict(self) -> dict[str, Any]:
        return {"tried": [{"target": t, "within": ok} for t, ok in self.tried], "best": self.best,
                "first_failing": self.failed_above, "stopped": self.stopped}


def search_targets(start: float, limit: float, holds: Callable[[float], tuple[bool, Any]], max_points: int,
                   steps: int = SEARCH_STEPS) -> SearchWalk:
    """Doubling from `start`, then bisection on the log scale (see the module docstring).

    `holds(target)` says whether the point at `target` stays within the limit, and a signature of
    what it chose (its ranks): a target that chooses the same ranks as the one before it saturated
    (rank 1 everywhere), so doubling stops. Targets lie on the grid 2^(k/steps), at most `limit`
    (the grid point at or below it); the dense model (target 1) holds by definition."""
    top = max(1, math.floor(steps * math.log2(max(limit, 1.0)) + 1e-9))
    k = min(max(1, round(steps * math.log2(max(start, 1.0)))), top)
    low, high = 0, None  # grid indices: low held (0: dense), high did not
    tried: list[tuple[float, bool]] = []
    previous: Any = None
    stopped = "points"
    while len(tried) < max_points:
        ok, signature = holds(grid_target(k, steps))
        tried.append((grid_target(k, steps), ok))
        if not ok:
            high = k
            break
        saturated = previous is not None and signature == previous
        low, previous = k, signature
        if k >= top or saturated:
            stopped = "limit" if k >= top else "saturated: the same ranks as the target before"
            break
        k = min(k + steps, top)
    while high is not None and high - low > 1 and len(tried) < max_points:
        middle = (low + high) // 2
        ok, _ = holds(grid_target(middle, steps))
        tried.append((grid_target(middle, steps), ok))
        low, high = (middle, high) if ok else (low, middle)
    if high is not None and high - low <= 1:
        stopped = "resolution: neighbouring grid targets bracket the limit"
    return SearchWalk(tried, grid_target(low, steps) if low > 0 else None,
                      grid_target(high, steps) if high is not None else None, stopped)


def choose_point(document: dict[str, Any], max_acc_drop: float,
                 walks: dict[str, SearchWalk]) -> dict[str, Any] | None:
    """The most compressed point (highest weight ratio) whose fine-tuned accuracy is within
    `max_acc_drop` of dense, and why; None when no point is."""
    dense = document["dense_accuracy"]
    within = [p for p in document["points"] if dense - p["accuracy_after"] <= max_acc_drop]
    if not within:
        return None
    point = max(within, key=lambda p: (p["weight_ratio"], p["accuracy_after"]))
    key = point_key(point["method"], point["target"])
    reason = (f"most compressed within {max_acc_drop:g} pts of dense (dense {dense:.2f}, point "
              f"{point['accuracy_after']:.2f}, {point['weight_ratio']:.2f}x fewer weights)")
    walk = walks.get(point["method"])
    if walk is not None and walk.failed_above is not None:
        above = next((p for p in document["points"] if p["method"] == point["method"]
                      and p["target"] == walk.failed_above), None)
        if above is not None:
            reason += (f"; {point_key(point['method'], walk.failed_above)} dropped "
                       f"{dense - above['accuracy_after']:.2f}")
    elif walk is not None:
        reason += f"; the search stopped: {walk.stopped}"
    return {"point": key, "method": point["method"], "target": point["target"],
            "accuracy_after": point["accuracy_after"], "drop": dense - point["accuracy_after"],
            "weight_ratio": point["weight_ratio"], "mac_ratio": point["mac_ratio"], "reason": reason}


def json_signature(ranks: dict[str, Any]) -> str:
    """A point's ranks as one comparable value (two targets that chose the same ranks are one point)."""
    return standard_json(ranks)


def search_gates(document: dict[str, Any], max_acc_drop: float) -> list[dict[str, Any]]:
    """A search's one gate: some compressed point is within `max_acc_drop` of dense (the chosen one;
    without one, the point that came closest is named)."""
    chosen = document.get("chosen")
    if chosen is not None:
        return [{"name": "max_acc_drop_search", "point": chosen["point"], "value": chosen["drop"],
                 "limit": max_acc_drop, "passed": True}]
    dense = document["dense_accuracy"]
    closest = min(document["points"], key=lambda p: dense - p["accuracy_after"], default=None)
    return [{"name": "max_acc_drop_search", "point": point_key(closest["method"], closest["target"]) if closest else None,
             "value": dense - closest["accuracy_after"] if closest else None, "limit": max_acc_drop, "passed": False}]


def gates(document: dict[str, Any], max_acc_drop: float | None) -> list[dict[str, Any]]:
    """`--max-acc-drop`: one gate per point, dense minus fine-tuned accuracy at most the limit."""
    if max_acc_drop is None:
        return []
    return [{"name": "max_acc_drop", "point": point_key(p["method"], p["target"]),
             "value": document["dense_accuracy"] - p["accuracy_after"], "limit": max_acc_drop,
             "passed": bool(document["dense_accuracy"] - p["accuracy_after"] <= max_acc_drop)}
            for p in document["points"]]


def _make_folder(folder: Path) -> bool:
    """Create the sweep folder; True when this run created it (and so may remove it again)."""
    try:
        folder.mkdir()
        return True
    except FileExistsError:
        if folder.is_dir():
            return False
        raise BadInputError(f"output {folder} is a file; sweep writes a folder") from None
    except OSError as error:
        raise BadInputError(f"cannot create sweep folder {folder}: {error.strerror or error}") from None


def _lock(folder: Path) -> int:
    """An exclusive, non-blocking lock on `folder/.sweep.lock`: its descriptor (closing it unlocks).
    Why: two sweeps writing one folder would each rewrite sweep.json with only their own points."""
    path = folder / LOCK
    busy = f"another ttsnn sweep is writing {folder}; wait for it to finish or choose another -o"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as error:
        raise BadInputError(f"cannot lock sweep folder {folder} ({path}: {error.strerror or error})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.fstat(fd).st_ino != os.stat(path, follow_symlinks=False).st_ino:
            raise BlockingIOError  # the lock file was removed by a run giving the folder up: not ours
    except (BlockingIOError, FileNotFoundError):
        os.close(fd)
        raise BadInputError(busy) from None
    except OSError as error:
        os.close(fd)
        raise BadInputError(f"cannot lock sweep folder {folder} ({error.strerror or error})") from None
    return fd


def _remove_if_unused(folder: Path) -> None:
    """Remove a folder this run created when nothing but the lock file (and empty folders, a plot's)
    is in it; called while the lock is held, so no other sweep has started writing there."""
    for below, _, _ in os.walk(folder, topdown=False):
        if Path(below) != folder:
            with contextlib.suppress(OSError):
                os.rmdir(below)
    with contextlib.suppress(OSError):
        if set(os.listdir(folder)) <= {LOCK}:
            (folder / LOCK).unlink(missing_ok=True)
            folder.rmdir()


@contextlib.contextmanager
def _claimed_folder(folder: Path) -> Iterator[None]:
    """The sweep folder, created if needed and locked for this run. A run that created it and then
    fails before writing a result removes it again: a refused run leaves nothing behind."""
    created = _make_folder(folder)
    try:
        fd = _lock(folder)
    except BadInputError:
        if created:
            _remove_if_unused(folder)
        raise
    try:
        yield
    except BaseException:
        if created:
            _remove_if_unused(folder)
        raise
    finally:
        os.close(fd)


def run_sweep(job: SweepJob, progress: Progress | None = None) -> dict[str, Any]:
    """Run (or resume) the sweep; return the JSON document also written to `DIR/sweep.json`.

    Everything is checked (options, model, layers, an earlier sweep.json) before the folder is
    created; the folder is then locked, and the earlier result read again under the lock."""
    report = progress or (lambda event: None)
    validate(job)
    sweep = _Sweep(job, report)
    teacher_sum = file_checksum(job.teacher) if job.teacher is not None else None
    current = settings(job, sweep.model_sha256, teacher_sum)
    _previous(job, current)
    with _claimed_folder(job.out_dir):
        if job.plot is not None and _plot_waits_for_folder(job):
            make_output_folder(Path(job.plot).expanduser().parent)
            job.plot = check_output_path(job.plot, [job.model, job.teacher], job.force, replace_input=False)
        return _run_locked(job, sweep, current, report)


def _run_locked(job: SweepJob, sweep: _Sweep, current: dict[str, Any], report: Progress) -> dict[str, Any]:
    """The sweep proper, in the locked folder: keep the earlier points, run the others, gate, plot."""
    previous = _previous(job, current)
    earlier = {point_key(p["method"], p["target"]): p for p in previous.get("points", [])}
    dense_accuracy = previous.get("dense_accuracy")
    if dense_accuracy is None:
        dense_accuracy = sweep.accuracy(sweep.dense)
    plan = planned_points(job) if not job.search else [(m, None) for m in job.methods if m in TARGETLESS]
    document: dict[str, Any] = {"dense_accuracy": dense_accuracy, "points": [], "output": str(job.out_dir),
                                "json": str(job.out_dir / RESULTS), "settings": current,
                                "dense": {"params": sweep.dense_counts["params"],
                                          "macs_per_timestep": sweep.dense_counts["macs_per_timestep"]},
                                "timesteps": sweep.steps, "arch": get_meta(sweep.dense).arch}
    done: dict[str, dict[str, Any]] = {}

    def run_point(method: str, target: float | None, index: int, total: int) -> dict[str, Any]:
        key = point_key(method, target)
        if key in done:
            return done[key]
        report({"kind": "sweep", "done": index, "total": total, "detail": key})
        point = earlier.get(key)
        skipped = point is not None
        if point is None:
            point = sweep.point(method, target)
        done[key] = point
        document["points"].append(point)
        atomic_write_text(job.out_dir / RESULTS, standard_json(document, indent=2) + "\n")
        report({"kind": "point", "point": point, "skipped": skipped, "done": index + 1, "total": total})
        return point

    searched = [m for m in job.methods if m not in TARGETLESS] if job.search else []
    total = len(plan) + job.search_points * len(searched)
    for index, (method, target) in enumerate(plan):
        run_point(method, target, index, total)
    walks: dict[str, SearchWalk] = {}
    for method in searched:
        assert job.max_acc_drop is not None
        limit = float(sweep.weights)  # a target beyond the decomposed weights cannot be met

        def holds(target: float, method: str = method) -> tuple[bool, Any]:
            point = run_point(method, target, len(done), total)
            return (dense_accuracy - point["accuracy_after"] <= job.max_acc_drop,  # type: ignore[operator]
                    json_signature(point["ranks"]))

        walks[method] = search_targets(min(job.targets), limit, holds, job.search_points)
    report({"kind": "sweep", "done": total, "total": total, "detail": "done"})
    if job.search:
        kept = [p for key, p in earlier.items() if key not in done]  # finished points of other walks: not lost
        document["points"] += sorted(kept, key=lambda p: (p["method"], p["target"] or 0))
        assert job.max_acc_drop is not None
        document["search"] = {"max_acc_drop": job.max_acc_drop, "grid": f"2^(k/{SEARCH_STEPS})",
                              "points_per_method": job.search_points,
                              "methods": {m: walk.to_dict() for m, walk in walks.items()}}
        document["chosen"] = choose_point(document, job.max_acc_drop, walks)
        document["gates"] = search_gates(document, job.max_acc_drop)
    else:
        document["gates"] = gates(document, job.max_acc_drop)
    document["plot"] = None
    if job.plot is not None:
        from ttsnn_cli.report.plot import plot_sweep

        document["plot"] = str(plot_sweep(document, job.plot))
    atomic_write_text(job.out_dir / RESULTS, standard_json(document, indent=2) + "\n")
    return document
