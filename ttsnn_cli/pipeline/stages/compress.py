"""The recipe stages owned by the foundation: compress."""

from __future__ import annotations

from typing import Any

from ttsnn_cli.compress.job import CompressJob, run_compress
from ttsnn_cli.pipeline.context import RunContext
from ttsnn_cli.pipeline.outputs import STAGE_FILES
from ttsnn_cli.pipeline.recipe import Recipe, resolve_data_spec
from ttsnn_cli.storage.bundle import ModelIO


def compress_stage(recipe: Recipe, context: RunContext) -> dict[str, Any]:
    section = recipe.compress
    assert section is not None
    checkpoint = context.input_model(recipe)
    output = context.out_dir / STAGE_FILES["compress"]
    job = CompressJob(
        output=output,
        checkpoint=checkpoint,
        arch=recipe.model.arch,
        arch_kwargs=recipe.model.kwargs,
        ranks=section.ranks,
        rank_method=section.rank_method,
        mode=section.mode,
        include=section.include,
        exclude=section.exclude,
        overrides=section.layers,
        io=ModelIO(tuple(recipe.model.input_shape) if recipe.model.input_shape else None, recipe.model.timesteps,
                   resolve_data_spec(context.base_dir, recipe.data)),
        svd=section.svd,
        layer_types=section.layer_types,
        linear_cores=section.linear_cores,
        force=context.force,
        seed=section.seed,
        data=resolve_data_spec(context.base_dir, section.data or recipe.data),
        calib_samples=section.calib_samples,
        budget_on=section.budget_on,
        round_ranks=section.round_ranks,
    )
    _, result = run_compress(job)
    context.dense_path = context.dense_path or checkpoint
    context.model_path = output
    return result
