"""The report document: a model against its dense baseline (DESIGN.md, report JSON keys).

`run_report(job)` loads the model (and baseline), counts params and MACs per layer, training
FLOPs, SynOps, optionally runs the accelerator model and evaluates accuracy, applies the gates and
returns one JSON-ready dict. It never prints or exits; failed gates are in ``gates`` and the
caller decides (the CLI exits 4).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ttsnn_cli.errors import BadInputError, UserCodeError
from ttsnn_cli.report.counting import (
    Profile,
    count_model,
    counted_run,
    needs_all_steps,
    profile_model,
    spike_profile,
)
from ttsnn_cli.report.flops import training_flops
from ttsnn_cli.report.gates import MODE_SCHEDULE, GateLimits, evaluate_gates
from ttsnn_cli.report.synops import DEFAULT_SPIKE_RATE, spike_flags_by_layer, synops
from ttsnn_cli.spiking.budget import check_run_fits, check_sizes
from ttsnn_cli.spiking.runner import apply_style, forced_style, resolve_timesteps
from ttsnn_cli.storage.bundle import get_meta, tt_config
from ttsnn_cli.storage.load import load_checkpoint
from ttsnn_cli.storage.outputs import check_output_path
from ttsnn_cli.storage.trust import build_arch, zoo_io

#: what the paper's -17.7 % time / -28.3 % energy most plausibly compare (docs/hw.md)
PAPER_NOTES = {
    "ptt_parallel vs stt": "closest to the paper's -17.7 % time / -28.3 % energy: a TT variant with "
                           "concurrent middle cores vs sequential TT (docs/hw.md)",
    "ptt_parallel vs ptt_sequential": "isolates the concurrency of the tailored array (time only; "
                                      "same ops, so the same dynamic energy)",
    "htt vs stt": "TT variant comparison (HTT skips the middle cores in the second half of T)",
    "stt vs dense": "NOT the paper's -17.7 % / -28.3 %: TT vs dense differs far more (about 0.17x "
                    "the cycles of dense on a SATA array, docs/hw.md)",
    "ptt_parallel vs dense": "NOT the paper's figures: TT vs dense (docs/hw.md)",
    "htt vs dense": "NOT the paper's figures: TT vs dense (docs/hw.md)",
}

#: why ptt_sequential can equal stt exactly (`hw_notes`, shown on the plot): hw's PTT view changes a TT
#: layer's core shapes only where the layer is strided or its kh x 1 core changes the map size
PTT_SEQUENTIAL_IS_STT = ("ptt_sequential = stt here: no TT layer is strided (each keeps its map size), so PTT's "
                         "middle cores, both reading the first core's output, have the very shapes of STT's chain "
                         "and still run one after another: same cycles, same energy. Only ptt_parallel's "
                         "concurrency (or a strided TT layer) tells PTT apart")


@dataclass
class ReportJob:
    model: Path
    baseline: Path | None = None
    data: str | None = None
    hw: bool = False
    accel: str = "sata"
    plot: Path | None = None
    timesteps: int | None = None
    input_shape: tuple[int, ...] | None = None
    gates: GateLimits = field(default_factory=GateLimits)
    data_samples: int = 32
    spike_rate: float = DEFAULT_SPIKE_RATE
    trust_pickle: bool = False
    force: bool = False  # the plot may replace an existing file (never a non-regular one)
    style: str | None = None  # --style (runner.STYLES)


def _mode(model: nn.Module) -> str:
    config = tt_config(model)
    return config["mode"] if config else "dense"


def _ratio(dense: float, tt: float) -> float | None:
    return dense / tt if tt else None


def _load_baseline(job: ReportJob, model: nn.Module) -> tuple[nn.Module | None, str | None]:
    meta = get_meta(model)
    if job.baseline is not None:
        try:
            base = load_checkpoint(job.baseline, trust_pickle=job.trust_pickle)
        except BadInputError as error:
            if "plain state_dict" not in str(error) or not meta.arch:
                raise
            base = load_checkpoint(job.baseline, meta.arch, meta.arch_kwargs, job.trust_pickle)
        return base.eval(), str(job.baseline)
    if _mode(model) != "dense" and meta.arch:
        torch.manual_seed(0)
        return build_arch(meta.arch, meta.arch_kwargs).eval(), f"{meta.arch} rebuilt dense"
    return None, None


def _accuracy_baseline(job: ReportJob, model: nn.Module, baseline: nn.Module | None) -> nn.Module:
    """A trained dense model to compare accuracy with: --baseline, else the bundle's source file."""
    if job.baseline is not None and baseline is not None:
        return baseline
    source = (get_meta(model).source or {}).get("path")
    if source and Path(source).is_file():
        meta = get_meta(model)
        return load_checkpoint(source, meta.arch, meta.arch_kwargs).eval()
    raise BadInputError("--max-acc-drop needs a trained dense model: pass --baseline DENSE "
                        "(the bundle records no readable source checkpoint)")


def resolve_io(job: ReportJob, model: nn.Module) -> tuple[tuple[int, ...], int]:
    meta = get_meta(model)
    io = zoo_io(meta.arch, meta.arch_kwargs).merged(meta.io)
    shape = job.input_shape or io.input_shape
    if shape:  # before resolve_timesteps, whose own-loop probe allocates the input sequence
        check_sizes(tuple(int(s) for s in shape), job.timesteps or io.timesteps or 1, what=f"report of {job.model}")
    steps = resolve_timesteps(model, tuple(int(s) for s in shape) if shape else None, job.timesteps, io.timesteps)
    if not shape or not steps:
        raise BadInputError(f"{job.model} does not record its input: pass --input-shape C,H,W and --timesteps T")
    return tuple(int(s) for s in shape), int(steps)


def _data_inputs(spec: str, steps: int, samples: int) -> tuple[Any, torch.Tensor]:
    from ttsnn_cli.data import encode, load_data

    data = load_data(spec, steps, False)
    count = min(samples, len(data.test))
    if count == 0:
        raise BadInputError(f"--data {spec}: the test split is empty")
    xs = torch.stack([data.test[i][0] for i in range(count)])
    return data, encode(xs, steps, "direct", data.temporal)


def _check_consumes(model: nn.Module, shape: tuple[int, ...], steps: int) -> None:
    """One step of the given input shape through the model on the meta device: a shape the model
    cannot eat is bad input (found here, before any counting), not an internal error."""
    try:
        _meta_profile(model, shape, 1)
    except (RuntimeError, ValueError, IndexError, UserCodeError) as error:
        cause = error.cause if isinstance(error, UserCodeError) else error
        if not isinstance(cause, (RuntimeError, ValueError, IndexError)):
            raise  # not a shape mismatch: the runner's message names the user's code and what it did
        first = (str(cause).strip().splitlines() or [type(cause).__name__])[0][:200]
        raise BadInputError(f"the model cannot consume input shape {list(shape)} (--input-shape / the bundle's io): {first}") from None


def _meta_profile(model: nn.Module, shape: tuple[int, ...], steps: int) -> Profile:
    run_steps = steps if needs_all_steps(model) else 1
    return counted_run(model, shape, run_steps, profile_model)


def _measure(model: nn.Module, inputs: torch.Tensor) -> Profile:
    was_training = model.training
    model.eval()
    try:
        return profile_model(model, inputs, exact_acs=True)
    finally:
        model.train(was_training)


def _side(model: nn.Module, shape: tuple[int, ...], steps: int, profile_shapes: Profile,
          syn: dict[str, Any]) -> dict[str, Any]:
    counts = count_model(model, shape, steps, profile=profile_shapes)
    return {
        "params": counts["params"],
        "macs_per_timestep": counts["macs_per_timestep"],
        "macs_per_timestep_paper": counts["macs_paper_per_timestep"],
        "training_flops": training_flops(model, shape, steps),
        "synops_per_timestep": {k: syn[k] for k in ("acs", "macs", "total", "spike_rate", "source")},
        "_layers": counts["layers"],
        "_synops_layers": syn["layers"],
    }


def _merge_layers(side: dict[str, Any], base: dict[str, Any] | None) -> list[dict[str, Any]]:
    by_name = {row["name"]: row for row in base["_layers"]} if base else {}
    syn_by_layer: dict[str, dict[str, float]] = {}
    for row in side["_synops_layers"]:
        entry = syn_by_layer.setdefault(row["layer"], {"acs": 0.0, "macs": 0.0, "spike_input": row["spike_input"]})
        entry["acs"] += row["acs"]
        entry["macs"] += row["macs"]
    rows = []
    for row in side["_layers"]:
        out = {k: v for k, v in row.items()}
        syn = syn_by_layer.get(row["name"]) or {}
        out["spike_input"] = bool(syn.get("spike_input", False))
        out["synops_per_timestep"] = {"acs": syn.get("acs", 0.0), "macs": syn.get("macs", 0.0)}
        dense = by_name.get(row["name"])
        out["baseline"] = None if dense is None else {
            "params": dense["params"], "weights": dense["weights"], "macs_per_timestep": dense["macs_per_timestep"]}
        rows.append(out)
    return rows


def run_hw(job: ReportJob, model: nn.Module, profile: Profile, baseline: nn.Module | None,
           base_profile: Profile | None, steps: int, sp_s: float | None, sp_source: str) -> dict[str, Any]:
    import hw
    from hw.workload import ptt_view
    from ttsnn_cli.report.workloads import model_workloads, with_spike_flags

    try:
        accel = hw.load_accelerator(job.accel)
    except hw.AcceleratorConfigError as error:
        raise BadInputError(str(error)) from None
    layers = model_workloads(model, profile)
    dense_layers = None
    if baseline is not None and base_profile is not None:
        dense_layers = with_spike_flags(model_workloads(baseline, base_profile), spike_flags_by_layer(model, profile))
    if not any(layer.branch != "dense" for layer in layers) and dense_layers is None:
        dense_layers = layers
    results = hw.simulate_schedules(layers, accel, steps, dense_layers=dense_layers, sp_s=sp_s)
    notes = {}
    if "stt" in results and "ptt_sequential" in results and ptt_view(layers) == layers:
        notes["ptt_sequential"] = PTT_SEQUENTIAL_IS_STT
    comparisons = hw.compare_schedules(results)
    for item in comparisons:
        item["paper"] = PAPER_NOTES.get(item["name"], "")
    sparsity = {"sp_s": accel.sparsity.sp_s if sp_s is None else sp_s, "sp_du": accel.sparsity.sp_du,
                "source": sp_source}
    return {"schedules": results, "comparisons": comparisons, "sparsity": sparsity, "notes": notes,
            "accelerator": {"name": accel.name, "description": accel.description,
                            "array": f"{accel.array.rows}x{accel.array.cols}", "clock_hz": accel.clock_hz,
                            "energy_preset": accel.energy.preset},
            "workload": [layer.__dict__ | {"ho": layer.ho, "wo": layer.wo} for layer in layers]}


def _evaluate(model: nn.Module, data: Any, steps: int) -> float:
    from ttsnn_cli.train.engine import TrainConfig, evaluate

    return float(evaluate(model, data, TrainConfig(timesteps=steps, batch_size=64), torch.device("cpu")))


def _plot_accuracy(job: ReportJob, model: nn.Module, baseline: nn.Module | None, data: Any, steps: int,
                   mode: str) -> dict[str, Any]:
    """The model's test accuracy, and the trained dense baseline's when one is known (else None)."""
    accuracy = _evaluate(model, data, steps)
    dense_accuracy = None
    if mode != "dense":
        try:
            dense_accuracy = _evaluate(_accuracy_baseline(job, model, baseline), data, steps)
        except BadInputError:
            dense_accuracy = None  # no trained dense model to compare with: the plot shows the model's only
    drop = None if dense_accuracy is None else dense_accuracy - accuracy
    return {"model": accuracy, "baseline": dense_accuracy, "drop": drop}


def build_report(job: ReportJob, model: nn.Module) -> dict[str, Any]:
    """The report dict for an already loaded ``model`` (see the module docstring)."""
    model.eval()
    apply_style(model, job.style)
    shape, steps = resolve_io(job, model)
    # every size the report runs at is checked against the machine before anything is allocated
    check_run_fits(model, shape, steps, batch=job.data_samples if job.data else 1, what=f"report of {job.model}")
    baseline, baseline_source = _load_baseline(job, model)
    if baseline is not None:
        apply_style(baseline, forced_style(model))
    data = None
    _check_consumes(model, shape, steps)
    if job.data:
        data, inputs = _data_inputs(job.data, steps, job.data_samples)
        profile = _measure(model, inputs)
        syn = synops(model, profile, measured=True, source=f"measured on {job.data} ({inputs.shape[1]} samples)")
    else:
        profile = spike_profile(model, shape, steps)
        syn = synops(model, profile, measured=False, rate=job.spike_rate)
    side = _side(model, shape, steps, _meta_profile(model, shape, steps), syn)
    base = base_profile = None
    if baseline is not None:
        base_profile = _meta_profile(baseline, shape, steps)
        if data is not None:
            base_syn = synops(baseline, _measure(baseline, inputs), measured=True,
                              source=f"measured on {job.data} ({inputs.shape[1]} samples)")
        else:
            flags = spike_flags_by_layer(model, profile)
            base_syn = synops(baseline, base_profile, measured=False, rate=job.spike_rate, spike_flags=flags)
        base = _side(baseline, shape, steps, base_profile, base_syn)
    mode = _mode(model)
    report: dict[str, Any] = {
        "model": str(job.model),
        "arch": get_meta(model).arch,
        "mode": mode,
        "input_shape": list(shape),
        "timesteps": steps,
        "params": side["params"],
        "macs_per_timestep": side["macs_per_timestep"],
        "macs_per_timestep_paper": side["macs_per_timestep_paper"],
        "conventions": {
            "weights": "conv + linear weights only (the paper's convention); params.total counts every parameter",
            "macs_per_timestep": "conv + linear MACs as our layers compute them (STT: exact strided chain; "
                                 "PTT: both middle cores at the full stride; HTT: average over T)",
            "macs_per_timestep_paper": "the paper's convention: every TT core counted at the layer's output resolution",
            "training_flops": "FlopCounterMode, forward + backward over T, one sample (2 FLOPs per MAC)",
            "synops_per_timestep": "ACs for spike inputs, MACs for real-valued inputs",
        },
        "training_flops": side["training_flops"],
        "synops_per_timestep": side["synops_per_timestep"],
        "layers": _merge_layers(side, base),
        "baseline": None,
        "ratios": None,
    }
    if base is not None:
        report["baseline"] = {"source": baseline_source, **{k: v for k, v in base.items() if not k.startswith("_")}}
        report["ratios"] = {
            "params": _ratio(base["params"]["total"], side["params"]["total"]),
            "weights": _ratio(base["params"]["weights"], side["params"]["weights"]),
            "macs": _ratio(base["macs_per_timestep"], side["macs_per_timestep"]),
            "macs_paper": _ratio(base["macs_per_timestep"], side["macs_per_timestep_paper"]),
            "training_flops": _ratio(base["training_flops"]["total"], side["training_flops"]["total"]),
            "synops": _ratio(base["synops_per_timestep"]["total"], side["synops_per_timestep"]["total"]),
        }
    if job.hw or job.gates.max_energy_ratio is not None:
        sp_s = 1.0 - syn["spike_rate"] if data is not None else None
        source = syn["source"] if data is not None else "accelerator defaults (no --data)"
        result = run_hw(job, model, profile, baseline, base_profile, steps, sp_s, source)
        report["hw"] = result["schedules"]
        report["hw_comparisons"] = result["comparisons"]
        report["hw_sparsity"] = result["sparsity"]
        report["hw_notes"] = result["notes"]
        report["hw_accelerator"] = result["accelerator"]
        report["hw_schedule_of_model"] = MODE_SCHEDULE.get(mode, "stt")
    if job.gates.max_acc_drop is not None:
        if data is None:
            raise BadInputError("--max-acc-drop needs --data (both models are evaluated on its test split)")
        dense = _accuracy_baseline(job, model, baseline)
        acc_tt, acc_dense = _evaluate(model, data, steps), _evaluate(dense, data, steps)
        report["accuracy"] = {"model": acc_tt, "baseline": acc_dense, "drop": acc_dense - acc_tt}
    elif data is not None and job.plot is not None:  # the plot shows the accuracy when there is data
        report["accuracy"] = _plot_accuracy(job, model, baseline, data, steps, mode)
    report["gates"] = evaluate_gates(report, job.gates)
    report["plot"] = None
    if job.plot is not None:
        from ttsnn_cli.report.plot import plot_report

        report["plot"] = str(plot_report(report, job.plot))
    return report


def run_report(job: ReportJob) -> dict[str, Any]:
    """Load ``job.model`` and build its report."""
    if job.gates.max_acc_drop is not None and not job.data:
        raise BadInputError("--max-acc-drop needs --data (both models are evaluated on its test split)")
    if job.plot is not None:
        job.plot = check_output_path(job.plot, [job.model, job.baseline], job.force, replace_input=False)
    model = load_checkpoint(job.model, trust_pickle=job.trust_pickle)
    return build_report(job, model)
