"""`ttsnn sweep`: the accuracy-compression front of one dense model, method by method.

For every rank method and target X: compress the dense model (`budget:X`, `uniform:X`,
`sensitivity:X`; `vbmf` has no target and gives one point), evaluate it, fine-tune it with the same
options (and the same teacher, when distilling), evaluate again. Each point records the method,
target, ratios against dense (all params, conv + linear weights, MACs per timestep), accuracy before
and after fine-tuning and the seconds it took.

Resumable: `DIR/sweep.json` is rewritten (atomically) after every finished point, with the settings
that produced it; a rerun with the same settings keeps the finished points and skips them (a point
cut off mid-way is redone). Other settings in an existing `DIR/sweep.json` are refused unless
`force`, which starts afresh. Sensitivity curves are measured once for all targets and kept in
`DIR/sensitivity.json`. Each point's fine-tuned bundle is `DIR/<method>-<target>.tt`.
The library never prints: progress goes to the `progress` callback.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Subset

from ttsnn_cli.compress.decompose import CompressConfig, compress_model, free_layers, plan_layers
from ttsnn_cli.compress.sensitivity import (
    DEFAULT_CALIB_SAMPLES,
    calibration_set,
    candidate_factors,
    curves_document,
    measure_sensitivity,
    sensitivity_ranks,
)
from ttsnn_cli.data import DataBundle, load_data
from ttsnn_cli.data.compat import check_compatible
from ttsnn_cli.errors import BadInputError
from ttsnn_cli.layers.conv2d import MODES
from ttsnn_cli.maths.ranks import RankSpec
from ttsnn_cli.report.counting import count_model
from ttsnn_cli.spiking.runner import check_style
from ttsnn_cli.storage.bundle import ModelIO, file_checksum, get_meta, save_bundle
from ttsnn_cli.storage.load import load_checkpoint
from ttsnn_cli.storage.outputs import atomic_write_text, check_output_path
from ttsnn_cli.storage.trust import zoo_io
from ttsnn_cli.train.engine import Progress, TrainConfig, evaluate, fit, resolve_device

METHODS = ("budget", "uniform", "sensitivity", "vbmf")
TARGETLESS = ("vbmf",)
RESULTS = "sweep.json"
CURVES = "sensitivity.json"


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
    problems += [f"target {t:g} must be >= 1 (a shrink factor)" for t in job.targets if not t >= 1]
    if job.mode not in MODES:
        problems.append(f"unknown mode {job.mode!r}; choose one of {', '.join(MODES)}")
    if job.train_samples is not None and job.train_samples < 1:
        problems.append(f"--train-samples must be >= 1, got {job.train_samples}")
    if job.calib_samples < 1:
        problems.append(f"--calib-samples must be >= 1, got {job.calib_samples}")
    if job.max_acc_drop is not None and not job.max_acc_drop >= 0:
        problems.append(f"--max-acc-drop must be >= 0, got {job.max_acc_drop}")
    if problems:
        raise BadInputError("; ".join(problems))
    check_style(job.style)
    job.finetune.validate()
    if job.out_dir.exists() and not job.out_dir.is_dir():
        raise BadInputError(f"output {job.out_dir} is a file; sweep writes a folder")
    if not job.out_dir.parent.exists():
        raise BadInputError(f"output folder {job.out_dir.parent} does not exist")
    inputs = [job.model, job.teacher]
    for path in inputs:
        if path is not None and job.out_dir.resolve() in Path(path).resolve().parents:
            raise BadInputError(f"input {path} lies inside the sweep folder {job.out_dir}; choose another -o")
    if job.plot is not None:
        check_output_path(job.plot, inputs, job.force, replace_input=False)


def settings(job: SweepJob, model_checksum: str, teacher_checksum: str | None) -> dict[str, Any]:
    """What a finished point depends on: a resumed sweep must share all of it."""
    config = asdict(job.finetune)
    config.pop("device")
    return {"model_sha256": model_checksum, "data": job.data, "mode": job.mode, "include": job.include,
            "exclude": job.exclude, "calib_samples": job.calib_samples, "seed": job.seed, "finetune": config,
            "teacher_sha256": teacher_checksum, "timesteps": job.timesteps,
            "train_samples": job.train_samples} | ({"style": job.style} if job.style else {})


def _previous(job: SweepJob, current: dict[str, Any]) -> dict[str, Any]:
    """The document of an earlier run with the same settings (empty with `force`, or none)."""
    path = job.out_dir / RESULTS
    if job.force or not path.is_file():
        return {}
    try:
        earlier = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise BadInputError(f"{path} is not a sweep result ({error}); pass --force to start afresh") from None
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
        job.finetune.timesteps = self.steps
        self.train_data = _subset(load_data(job.data, timesteps=self.steps, augment=True), job.train_samples, job.seed)
        self.eval_data = load_data(job.data, timesteps=self.steps, augment=False)
        check_compatible(self.dense, self.eval_data, self.steps, job.data)
        meta.io = ModelIO(tuple(self.eval_data.input_shape), self.steps, job.data, meta.io.style)
        self.shape = tuple(self.eval_data.input_shape)
        self.teacher = None
        if job.teacher is not None:
            self.teacher = load_checkpoint(job.teacher, meta.arch, meta.arch_kwargs, job.trust_pickle).eval()
            check_compatible(self.teacher, self.eval_data, self.steps, job.data)
        self.device = resolve_device(job.finetune.device)
        self.dense_counts = count_model(self.dense, self.shape, self.steps)
        self.config = CompressConfig(RankSpec("fixed", (1, 1, 1)), mode=job.mode,  # type: ignore[arg-type]
                                     include=list(job.include), exclude=list(job.exclude), timesteps=self.steps)

    def accuracy(self, model: nn.Module) -> float:
        return float(evaluate(model, self.eval_data, self.job.finetune, self.device))

    def curves(self) -> dict[str, Any]:
        """Sensitivity curves for every target at once, measured once and kept in the folder."""
        path = self.job.out_dir / CURVES
        factors = candidate_factors(self.job.targets, spread=2.0)  # neighbouring targets cover each other
        if path.is_file():  # curves measured on a grid at least as wide serve these targets too
            stored = json.loads(path.read_text())
            covers = bool(stored.get("factors")) and min(stored["factors"]) <= min(factors) + 1e-9 \
                and max(stored["factors"]) >= max(factors) - 1e-9
            if covers and stored.get("mode") == self.job.mode and stored.get("model_sha256") == \
                    file_checksum(self.job.model) and stored.get("calib_samples_requested") == self.job.calib_samples \
                    and stored.get("seed") == self.job.seed:
                return stored
        layers = free_layers(plan_layers(self.dense, self.config)[0], self.config)
        calibration = calibration_set(self.eval_data, self.job.calib_samples, self.steps, self.job.seed)
        base, curves = measure_sensitivity(self.dense, layers, calibration, factors, self.job.mode,  # type: ignore[arg-type]
                                           self.steps, progress=self.progress)
        document = curves_document(base, curves, calibration, self.job.seed) | {
            "factors": factors, "mode": self.job.mode, "model_sha256": file_checksum(self.job.model),
            "calib_samples_requested": self.job.calib_samples}
        atomic_write_text(path, json.dumps(document, indent=1) + "\n")
        return document

    def point(self, method: str, target: float | None) -> dict[str, Any]:
        started = time.perf_counter()
        model = copy.deepcopy(self.dense)
        config = copy.deepcopy(self.config)
        config.ranks = RankSpec(method, value=target)  # type: ignore[arg-type]
        if method == "sensitivity":
            layers = free_layers(plan_layers(model, config)[0], config)
            config.chosen_ranks, _ = sensitivity_ranks(model, layers, float(target or 1), self.eval_data,
                                                       self.job.calib_samples, self.steps, self.job.seed,
                                                       self.job.mode, measured=self.curves())  # type: ignore[arg-type]
        model, result = compress_model(model, config)
        ratios = _ratios(self.dense_counts, model, self.shape, self.steps)
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


def gates(document: dict[str, Any], max_acc_drop: float | None) -> list[dict[str, Any]]:
    """`--max-acc-drop`: one gate per point, dense minus fine-tuned accuracy at most the limit."""
    if max_acc_drop is None:
        return []
    return [{"name": "max_acc_drop", "point": point_key(p["method"], p["target"]),
             "value": document["dense_accuracy"] - p["accuracy_after"], "limit": max_acc_drop,
             "passed": bool(document["dense_accuracy"] - p["accuracy_after"] <= max_acc_drop)}
            for p in document["points"]]


def run_sweep(job: SweepJob, progress: Progress | None = None) -> dict[str, Any]:
    """Run (or resume) the sweep; return the JSON document also written to `DIR/sweep.json`."""
    report = progress or (lambda event: None)
    validate(job)
    sweep = _Sweep(job, report)
    teacher_sum = file_checksum(job.teacher) if job.teacher is not None else None
    current = settings(job, file_checksum(job.model), teacher_sum)
    previous = _previous(job, current)
    earlier = {point_key(p["method"], p["target"]): p for p in previous.get("points", [])}
    job.out_dir.mkdir(exist_ok=True)
    dense_accuracy = previous.get("dense_accuracy")
    if not isinstance(dense_accuracy, (int, float)):
        dense_accuracy = sweep.accuracy(sweep.dense)
    plan = planned_points(job)
    document: dict[str, Any] = {"dense_accuracy": dense_accuracy, "points": [], "output": str(job.out_dir),
                                "json": str(job.out_dir / RESULTS), "settings": current,
                                "dense": {"params": sweep.dense_counts["params"],
                                          "macs_per_timestep": sweep.dense_counts["macs_per_timestep"]},
                                "timesteps": sweep.steps, "arch": get_meta(sweep.dense).arch}
    for index, (method, target) in enumerate(plan):
        key = point_key(method, target)
        report({"kind": "sweep", "done": index, "total": len(plan), "detail": key})
        point = earlier.get(key)
        skipped = point is not None
        if point is None:
            point = sweep.point(method, target)
        document["points"].append(point)
        atomic_write_text(job.out_dir / RESULTS, json.dumps(document, indent=2) + "\n")
        report({"kind": "point", "point": point, "skipped": skipped, "done": index + 1, "total": len(plan)})
    report({"kind": "sweep", "done": len(plan), "total": len(plan), "detail": "done"})
    document["gates"] = gates(document, job.max_acc_drop)
    document["plot"] = None
    if job.plot is not None:
        from ttsnn_cli.report.plot import plot_sweep

        document["plot"] = str(plot_sweep(document, job.plot))
    atomic_write_text(job.out_dir / RESULTS, json.dumps(document, indent=2) + "\n")
    return document
