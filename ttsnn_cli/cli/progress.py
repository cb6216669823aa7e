"""A progress bar on stderr for library jobs that report `{"done": i, "total": n, ...}` events
(sensitivity measurement, sweep points), with elapsed time and ETA. Off a terminal and under `--json`
it stays silent; the job's own summary lines still go to stderr."""

from __future__ import annotations

from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ttsnn_cli.cli.common import err_console


class StepBar:
    """Context manager and progress callback: one bar per `kind` of event carrying done/total."""

    def __init__(self, labels: dict[str, str], bar: bool = True) -> None:
        self.labels = labels
        console = err_console()
        self.bar = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=True,
            disable=not (bar and console.is_terminal),
        )
        self.tasks: dict[str, Any] = {}

    def __enter__(self) -> StepBar:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.__exit__(*exc)

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event.get("kind", "")
        if kind not in self.labels or "total" not in event:
            return
        if kind not in self.tasks:
            self.tasks[kind] = self.bar.add_task(self.labels[kind], total=event["total"], detail="")
        self.bar.update(self.tasks[kind], completed=event.get("done", 0), total=event["total"],
                        detail=str(event.get("layer", event.get("detail", ""))))
