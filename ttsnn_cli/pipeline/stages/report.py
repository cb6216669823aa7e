"""The recipe's `report` stage: report the pipeline's current model against its dense baseline.

Writes ``report.json`` (and the plot, when asked) in the run folder. A failed gate fails the run
with exit 4 (GateFailedError) after the result is recorded and written.
"""

from __future__ import annotations

from typing import Any

from ttsnn_cli.errors import BadInputError, GateFailedError
from ttsnn_cli.pipeline.context import RunContext
from ttsnn_cli.pipeline.outputs import STAGE_FILES, stage_output
from ttsnn_cli.pipeline.recipe import Recipe, resolve_data_spec, resolve_path
from ttsnn_cli.report.gates import GateLimits, failed
from ttsnn_cli.report.job import ReportJob, run_report
from ttsnn_cli.storage.outputs import atomic_write_text, check_output_path, standard_json


def job_from_recipe(recipe: Recipe, context: RunContext) -> ReportJob:
    section = recipe.report
    assert section is not None
    if context.model_path is None:
        raise BadInputError("the report stage needs a model: add a compress (or train) section before it")
    baseline = resolve_path(context.base_dir, section.baseline)
    if baseline is None and context.dense_path is not None and context.dense_path.is_file():
        baseline = context.dense_path
    data = resolve_data_spec(context.base_dir, recipe.data) if section.data else None
    if section.data and data is None:
        raise BadInputError("report.data is true but the recipe names no data")
    accel = section.accel
    accel_path = resolve_path(context.base_dir, accel)
    if accel_path is not None and accel_path.suffix in (".yaml", ".yml"):
        accel = str(accel_path)
    gates = section.gates
    return ReportJob(
        model=context.model_path, baseline=baseline, data=data, hw=section.hw, accel=accel,
        plot=stage_output(context.out_dir, section.plot, "report.plot") if section.plot else None,
        timesteps=recipe.model.timesteps,
        input_shape=tuple(recipe.model.input_shape) if recipe.model.input_shape else None,
        gates=GateLimits(gates.min_param_reduction, gates.min_mac_reduction, gates.max_energy_ratio, gates.max_acc_drop),
        force=context.force,
    )


def report_stage(recipe: Recipe, context: RunContext) -> dict[str, Any]:
    output = check_output_path(context.out_dir / STAGE_FILES["report"], [], context.force)
    document = run_report(job_from_recipe(recipe, context))
    atomic_write_text(output, standard_json(document, indent=2) + "\n")
    bad = failed(document["gates"])
    if bad:
        context.results["report"] = document
        raise GateFailedError("report gate failed: " + "; ".join(
            f"{g['name']} = {g['value']:.4g} (limit {g['limit']:g})" for g in bad))
    return document
