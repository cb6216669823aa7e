"""The recipe's export stage: ONNX (and NIR) of the pipeline's current model, in the run folder."""

from __future__ import annotations

from typing import Any

from ttsnn_cli.errors import BadInputError
from ttsnn_cli.export.job import ExportJob, run_export
from ttsnn_cli.pipeline.context import RunContext
from ttsnn_cli.pipeline.outputs import stage_output
from ttsnn_cli.pipeline.recipe import Recipe
from ttsnn_cli.storage.bundle import ModelIO


def export_stage(recipe: Recipe, context: RunContext) -> dict[str, Any]:
    section = recipe.export
    assert section is not None
    model_path = context.input_model(recipe)
    if model_path is None:
        raise BadInputError("export stage: no model to export (no earlier stage wrote one and model.checkpoint is unset)")
    shape = tuple(recipe.model.input_shape) if recipe.model.input_shape else None
    job = ExportJob(
        model=model_path,
        onnx=stage_output(context.out_dir, section.onnx, "export.onnx"),
        mode=section.mode,
        io=ModelIO(shape, recipe.model.timesteps, None),
        batch=section.batch,
        reconstruct_dense=section.reconstruct_dense,
        verify=section.verify,
        nir=stage_output(context.out_dir, section.nir, "export.nir") if section.nir else None,
        arch=None if context.model_path else recipe.model.arch,
        arch_kwargs=dict(recipe.model.kwargs),
        force=context.force,
    )
    return run_export(job)
