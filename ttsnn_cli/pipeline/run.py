"""`ttsnn run RECIPE`: the stages a recipe names, in order, each handing its bundle to the next.

A stage is a function taking the recipe and the run's context, returning its JSON-ready result and
updating the context (the current model file); `pipeline.stages` maps each stage name to its
function. Stages whose section is absent from the recipe are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ttsnn_cli.pipeline.context import RunContext, StageFunction
from ttsnn_cli.pipeline.recipe import Recipe
from ttsnn_cli.pipeline.stages import STAGES


@dataclass(frozen=True)
class Stage:
    name: str
    order: int
    run: StageFunction


STAGE_ORDER = tuple(STAGES)


def planned_stages(recipe: Recipe) -> list[Stage]:
    return [Stage(name, order, STAGES[name]) for order, name in enumerate(STAGE_ORDER)
            if getattr(recipe, name, None) is not None]


def run_recipe(recipe: Recipe, context: RunContext) -> dict[str, Any]:
    """Run every stage the recipe has, in order; the result maps stage name -> that stage's dict."""
    for stage in planned_stages(recipe):
        context.emit("stage_start", stage=stage.name)
        context.results[stage.name] = stage.run(recipe, context)
        context.emit("stage_end", stage=stage.name, result=context.results[stage.name])
    return context.results
