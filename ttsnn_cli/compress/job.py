"""The compress stage end to end: load a checkpoint (or build a zoo model), decompose, save a bundle.

Shared by `ttsnn compress` and the recipe pipeline, so both behave the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ttsnn_cli.compress.costs import TIME_BATCH, TimeCosts, leaf_weights, result_ratios
from ttsnn_cli.compress.decompose import CompressConfig, compress_model, free_layers, plan_layers, prepare_costs
from ttsnn_cli.compress.sensitivity import DEFAULT_CALIB_SAMPLES, Progress, sensitivity_ranks
from ttsnn_cli.errors import BadInputError
from ttsnn_cli.kinds import parse_layer_types, tt_dims
from ttsnn_cli.maths.ranks import DATA_METHODS, GLOBAL_METHODS, Costs, RankSpecError, WeightCosts, parse_rank_spec
from ttsnn_cli.spiking.budget import check_run_fits, check_sizes, check_timesteps
from ttsnn_cli.spiking.runner import check_style, resolve_timesteps
from ttsnn_cli.storage.bundle import ModelIO, get_meta, save_bundle
from ttsnn_cli.storage.load import load_checkpoint
from ttsnn_cli.storage.outputs import check_output_path
from ttsnn_cli.storage.trust import build_arch, zoo_io


@dataclass
class CompressJob:
    output: Path
    checkpoint: Path | None = None
    arch: str | None = None
    arch_kwargs: dict[str, Any] | None = None
    ranks: Any = None
    rank_method: str | None = None
    mode: str = "stt"
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    overrides: dict[str, Any] = field(default_factory=dict)
    io: ModelIO = field(default_factory=ModelIO)
    svd: str = "qr_svd"
    layer_types: Any = None  # comma text or a list; None = the default (conv2d, conv1d)
    linear_cores: int = 3
    seed: int = 0
    force: bool = False
    trust_pickle: bool = False
    data: str | None = None  # sensitivity:X calibration data (default: the bundle's recorded data)
    calib_samples: int = DEFAULT_CALIB_SAMPLES
    allow_growth: bool = False  # decompose a layer even when its cores outgrow the dense weight
    budget_on: str = "weights"  # what budget:X / uniform:X / sensitivity:X count: weights, macs or time
    device: str | None = None  # where --budget-on time measures the layers (auto: cuda if available)
    round_ranks: int = 1  # --round-ranks N: every rank to a multiple of N (tensor-core friendly); 1: as chosen
    #: the data the checkpoint itself records (set by `load_source`): sensitivity's default, never a zoo entry's
    recorded_data: str | None = field(default=None, init=False, repr=False)


def load_source(job: CompressJob) -> nn.Module:
    """The dense model to compress: the checkpoint, or a freshly initialised zoo model (planning)."""
    if job.checkpoint is not None:
        model = load_checkpoint(job.checkpoint, job.arch, job.arch_kwargs, job.trust_pickle)
        job.recorded_data = get_meta(model).io.data  # before the zoo entry's defaults fill in below
    elif job.arch and job.arch.startswith("zoo:"):
        torch.manual_seed(job.seed)
        model = build_arch(job.arch, job.arch_kwargs)
        meta = get_meta(model)
        meta.arch, meta.arch_kwargs = job.arch, dict(job.arch_kwargs or {})
        meta.history.append({"stage": "init", "note": f"freshly initialised (seed {job.seed}): planning, no trained weights"})
    else:
        raise BadInputError("compress needs a CHECKPOINT, or --arch zoo:NAME to plan on a freshly initialised model")
    meta = get_meta(model)
    meta.io = zoo_io(meta.arch, meta.arch_kwargs).merged(meta.io).merged(job.io)
    check_style(meta.io.style)
    # sizes from the bundle or options, checked before the own-loop probe below allocates its input
    if meta.io.input_shape:
        check_sizes(tuple(meta.io.input_shape), job.io.timesteps or meta.io.timesteps or 1, what="compress")
    # an own-loop model taking one frame runs its own T (HTT's first half depends on it): learn it
    meta.io.timesteps = resolve_timesteps(model, meta.io.input_shape, job.io.timesteps, meta.io.timesteps)
    return model


#: a zoo entry's default data is not calibration data: the loss of a model on data it never saw
#: (or of a freshly initialised one) would choose ranks from noise
_NO_DATA = ("{method}:X measures the loss on data the model was trained on, and the model records none: "
            "give --data SPEC (digits, cifar10:DIR, ...)")


def _sensitivity(job: CompressJob, model: nn.Module, config: CompressConfig, factor: float,
                 progress: Progress | None) -> dict[str, Any]:
    """`sensitivity:X` / `fisher:X`: measure on calibration data, put the chosen ranks into `config`."""
    from ttsnn_cli.data import chosen_data, load_data
    from ttsnn_cli.data.compat import check_compatible

    meta = get_meta(model)
    spec = chosen_data(job.data, job.recorded_data, str(job.checkpoint or "the model"))  # a recorded module:factory only if trusted
    method = config.ranks.method
    if not spec:
        raise BadInputError(_NO_DATA.format(method=method))
    if job.calib_samples < 1:
        raise BadInputError(f"--calib-samples must be >= 1, got {job.calib_samples}")
    timesteps = meta.io.timesteps or 4
    check_timesteps(timesteps, "compress")  # before any data is binned into T frames (spiking.budget)
    data = load_data(spec, timesteps=timesteps, augment=False)
    check_run_fits(model, tuple(data.input_shape), timesteps, job.calib_samples, what=f"{method} calibration")
    check_compatible(model, data, timesteps, spec)
    layers = free_layers(plan_layers(model, config)[0], config)
    costs = config.costs if config.budget_on != "weights" else None
    config.chosen_ranks, measured = sensitivity_ranks(model, layers, factor, data, job.calib_samples, timesteps, job.seed,
                                                      config.mode, config.svd, progress, costs=costs,
                                                      linear_cores=config.linear_cores, method=method)
    return measured | {"data": spec}


def budget_document(config: CompressConfig, target: float | None, costs: Costs, allocated: list[str],
                    layers: list[Any]) -> dict[str, Any] | None:
    """What the budget counted and what it reached, for the global methods (None for the others).

    `reached` is over the layers the budget allocated (`allocated`: the Conv2d layers without a
    per-layer override, that were decomposed); `ratios` holds the same measures over every
    decomposed layer."""
    if config.ranks.method not in GLOBAL_METHODS:
        return None
    ranks = {layer.name: tuple(layer.ranks) for layer in layers if layer.skipped is None and layer.ranks}
    names = [n for n in allocated if n in ranks]
    document: dict[str, Any] = {"on": config.budget_on, "target": target, "unit": costs.unit, "layers": len(names),
                                "dense": None, "after": None, "reached": None, "met": None}
    if names:
        dense = sum(costs.dense(n) for n in names)
        after = sum(costs.at(n, ranks[n]) for n in names)  # type: ignore[arg-type]
        reached = dense / max(after, 1e-300)
        document.update(dense=dense, after=after, reached=reached,
                        met=bool(target is not None and reached >= target * (1 - 1e-9)))
    if isinstance(costs, TimeCosts):
        document["timing"] = {"device": str(costs.device), "batch": TIME_BATCH, "layers": costs.measured,
                              "note": "forward + backward seconds of a probe batch per layer; other ranks "
                                      "interpolated over MACs between the timed ranks"}
    return document


def run_compress(job: CompressJob, progress: Progress | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Validate everything first, then decompose and write the bundle; returns the contract's dict.

    `progress` receives the sensitivity measurement's events (`sensitivity:X` only)."""
    job.output = check_output_path(job.output, [job.checkpoint], job.force)  # write where it was checked (`~`)
    try:
        spec = parse_rank_spec(job.ranks, job.rank_method, per_layer=bool(job.overrides))
        layer_types = parse_layer_types(job.layer_types)
    except RankSpecError as error:
        raise BadInputError(str(error)) from None
    except ValueError as error:
        raise BadInputError(f"--layer-types: {error}") from None
    if not (isinstance(job.round_ranks, int) and 1 <= job.round_ranks <= 64):
        raise BadInputError(f"--round-ranks takes a whole number in 1..64 (8 suits tensor cores), got {job.round_ranks!r}")
    if spec.method == "recovery" and job.calib_samples < 2:
        raise BadInputError("recovery:X trains on half the calibration samples and judges on the other half: "
                            f"give --calib-samples 2 or more (got {job.calib_samples})")
    if spec.method in DATA_METHODS and not job.data and job.checkpoint is None:
        raise BadInputError(_NO_DATA.format(method=spec.method))  # a freshly initialised model records no data: refused before any work
    model = load_source(job)
    meta = get_meta(model)
    config = CompressConfig(
        ranks=spec,
        mode=job.mode,  # type: ignore[arg-type]
        include=list(job.include),
        exclude=list(job.exclude),
        overrides=dict(job.overrides),
        timesteps=meta.io.timesteps,
        svd=job.svd,
        allow_growth=job.allow_growth,
        layer_types=layer_types,
        linear_cores=job.linear_cores,
        budget_on=job.budget_on or "weights",
        input_shape=tuple(meta.io.input_shape) if meta.io.input_shape else None,
        device=job.device,
        round_ranks=job.round_ranks,
    )
    prepare_costs(model, config, progress)  # the dense shape probe (MAC ratios) and what --budget-on counts
    dense_weights = leaf_weights(model)
    allocated = free_layers(plan_layers(model, config)[0], config)
    budget_costs = config.costs or WeightCosts(tt_dims(allocated, config.linear_cores))
    measured = _sensitivity(job, model, config, spec.value, progress) if spec.method in DATA_METHODS else None
    model, result = compress_model(model, config)
    meta.history.append({"stage": "compress", "mode": job.mode, "rank_method": result.rank_method,
                         "totals": result.totals}
                        | ({"budget_on": config.budget_on} if config.budget_on != "weights" else {}))
    save_bundle(job.output, model, meta)
    document = result.to_dict()
    document["output"] = str(job.output)
    decomposed = [layer.name for layer in result.layers if layer.skipped is None]
    time_costs = config.costs if isinstance(config.costs, TimeCosts) else None
    document["ratios"] = result_ratios(model, decomposed, dense_weights, config.probe, config.input_shape,
                                       config.timesteps, time_costs, config.timer)
    if config.probe_error:
        document["warnings"].append(config.probe_error)
    document["budget"] = budget_document(config, spec.value, budget_costs, list(allocated), result.layers)
    if measured is not None:
        curves = {c["name"]: c["points"] for c in measured.pop("layers")}
        document["sensitivity"] = measured
        for layer in document["layers"]:
            layer["sensitivity"] = curves.get(layer["name"])
    return model, document
