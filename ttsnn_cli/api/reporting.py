"""`report` as a library call: `ttsnn report` without a shell (the job is `report.job`).

Failed gates are data here: they are in the document's `gates` (each with `passed`), and the
caller decides; the CLI turns them into exit 4. `gates_failed(document)` lists them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ttsnn_cli.api.common import Call, ModelLike, apply_options, check_ranges, input_shape as shape_of
from ttsnn_cli.report.gates import GateLimits, failed
from ttsnn_cli.report.job import ReportJob, run_report
from ttsnn_cli.train.threads import check_threads, limited_threads

#: ReportJob fields the API sets from its own arguments
_OWN = ("model", "baseline", "gates", "hw", "accel", "input_shape")


def report(model: ModelLike, *, baseline: ModelLike | None = None, data: str | None = None, hw: bool = False,
           accel: str | None = None, plot: str | Path | None = None, timesteps: int | None = None,
           input_shape: Any = None, data_samples: int = 32, min_param_reduction: float | None = None,
           min_mac_reduction: float | None = None, max_energy_ratio: float | None = None,
           max_acc_drop: float | None = None, trust_pickle: bool = False, trust_arch: bool = False,
           force: bool = False, style: str | None = None, threads: int | None = None,
           **options: Any) -> dict[str, Any]:
    """Params, MACs per timestep, training FLOPs and SynOps of `model` against its dense baseline
    (and the accelerator model with `hw=True` or `accel=`): `ttsnn report`.

    `model` and `baseline` are modules or paths; a TT model knows its dense architecture, so the
    baseline is rebuilt unless given. Gates: `min_param_reduction`, `min_mac_reduction`,
    `max_energy_ratio`, `max_acc_drop` (with `data=`).

    Returns `ttsnn report --json`'s document (`params`, `macs_per_timestep`, `baseline`, `ratios`,
    `hw`, `gates`, ...); a failed gate is `passed: False` there, not an exception."""
    with Call(trust_arch) as call:  # every refusal, these too, worded with argument names
        check_ranges(("timesteps", timesteps, 1, None), ("data_samples", data_samples, 1, None),
                     ("min_param_reduction", min_param_reduction, 0, None), ("min_mac_reduction", min_mac_reduction, 0, None),
                     ("max_energy_ratio", max_energy_ratio, 0, None), ("max_acc_drop", max_acc_drop, 0, None))
        job = ReportJob(model=call.model_path(model, "model", required=True), baseline=call.model_path(baseline, "baseline"),
                        data=data, hw=hw or accel is not None, accel=accel or "sata",
                        plot=Path(plot) if plot is not None else None, timesteps=timesteps,
                        input_shape=shape_of(input_shape), data_samples=data_samples, trust_pickle=trust_pickle,
                        force=force, style=style,
                        gates=GateLimits(min_param_reduction, min_mac_reduction, max_energy_ratio, max_acc_drop))
        apply_options("report", [job], options, skip=_OWN)
        with call.trust(), limited_threads(check_threads(threads)):
            document = run_report(job)
        return call.document(document)


def gates_failed(document: dict[str, Any]) -> list[dict[str, Any]]:
    """The gates of a `report` (or `sweep`) document that failed: what makes `ttsnn report` exit 4."""
    return failed(document.get("gates") or [])
