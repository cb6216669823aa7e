"""`ttsnn run RECIPE`: the stages a recipe names, in order, each handing its bundle to the next.

Stages register themselves here (one place to add a stage); a stage is a function taking the
recipe, its folder and the run's context, returning its JSON-ready result and updating the context
(the current model file). Stages whose section is absent from the recipe are skipped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ttsnn_cli.recipe import Recipe, resolve_path


@dataclass
class RunContext:
    """What flows between stages: the run folder, the newest model file, and each stage's result."""

    out_dir: Path
    base_dir: Path
    force: bool = False
    model_path: Path | None = None
    dense_path: Path | None = None
    results: dict[str, Any] = field(default_factory=dict)
    on_event: Callable[[str, dict[str, Any]], None] | None = None

    def input_model(self, recipe: Recipe) -> Path | None:
        """The model a stage starts from: the previous stage's output, else the recipe's checkpoint."""
        return self.model_path or resolve_path(self.base_dir, recipe.model.checkpoint)

    def emit(self, kind: str, **fields: Any) -> None:
        if self.on_event is not None:
            self.on_event(kind, fields)


StageFunction = Callable[[Recipe, RunContext], dict[str, Any]]


@dataclass(frozen=True)
class Stage:
    name: str
    order: int
    run: StageFunction


_STAGES: dict[str, Stage] = {}
STAGE_ORDER = ("train", "compress", "finetune", "report", "export", "sweep")


def register_stage(name: str) -> Callable[[StageFunction], StageFunction]:
    def decorate(function: StageFunction) -> StageFunction:
        _STAGES[name] = Stage(name, STAGE_ORDER.index(name), function)
        return function

    return decorate


def _load_stage_modules() -> None:
    """Import the modules whose `@register_stage` fill the registry (not at import: no cycles)."""
    import importlib

    for module in ("ttsnn_cli.stages", "ttsnn_cli.engine.stages", "ttsnn_cli.report.stage", "ttsnn_cli.export.stage",
                   "ttsnn_cli.sweep_stage"):
        importlib.import_module(module)


def planned_stages(recipe: Recipe) -> list[Stage]:
    _load_stage_modules()
    present = [name for name in STAGE_ORDER if getattr(recipe, name, None) is not None]
    return [_STAGES[name] for name in present if name in _STAGES]


def run_recipe(recipe: Recipe, context: RunContext) -> dict[str, Any]:
    """Run every stage the recipe has, in order; the result maps stage name -> that stage's dict."""
    for stage in planned_stages(recipe):
        context.emit("stage_start", stage=stage.name)
        context.results[stage.name] = stage.run(recipe, context)
        context.emit("stage_end", stage=stage.name, result=context.results[stage.name])
    return context.results
