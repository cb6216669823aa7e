"""What flows between a recipe's stages: the run folder, the newest model file, each stage's result."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ttsnn_cli.pipeline.recipe import Recipe, resolve_path


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
