"""`ttsnn run RECIPE`: run the pipeline a recipe describes; `ttsnn schema`: its JSON Schema."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional

import typer

from ttsnn_cli.cli.app import app
from rich.markup import escape

from ttsnn_cli.cli.common import THREADS_HELP, guarded, print_json, print_stdout, trust_scope
from ttsnn_cli.cli.train import ProgressView
from ttsnn_cli.errors import BadInputError
from ttsnn_cli.pipeline.context import RunContext
from ttsnn_cli.pipeline.outputs import check_run_outputs
from ttsnn_cli.pipeline.recipe import Recipe, check_recipe_inputs, load_recipe, resolve_data_spec, schema_json
from ttsnn_cli.pipeline.run import planned_stages, run_recipe
from ttsnn_cli.storage.outputs import check_output_folder, make_output_folder
from ttsnn_cli.train.threads import check_threads, limited_threads


@app.command()
@guarded
def run(
    recipe: Path = typer.Argument(..., help="The recipe (YAML)."),
    out: Optional[Path] = typer.Option(None, help="Folder for every output (default: runs/<recipe name>)."),
    force: bool = typer.Option(False, "--force", help="Overwrite outputs of an earlier run in the same folder."),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON object per stage on stdout."),
    data: Optional[str] = typer.Option(None, help="Data SPEC for every stage, over the recipe's (a DIR is relative "
                                                  "to the current folder, not the recipe's)."),
    threads: Optional[int] = typer.Option(None, "--threads", help=THREADS_HELP + "; over the recipe's `threads`"),
) -> None:
    """Run the stages of RECIPE in order: train, compress, finetune, report, export."""
    parsed, base = load_recipe(recipe)
    if data is not None:
        parsed = _with_data(parsed, resolve_data_spec(Path.cwd(), data))
    stages = planned_stages(parsed)
    if not stages:
        raise BadInputError(f"recipe {recipe} names no stage that can run (add a compress, train, ... section)")
    check_recipe_inputs(parsed, base)
    name = parsed.name or recipe.stem
    out_dir = check_output_folder(out or Path("runs") / re.sub(r"[^A-Za-z0-9_.-]+", "-", name), force)
    check_run_outputs(parsed, base, out_dir.resolve(), force, recipe)  # inside the run folder, no input: before work
    created = not out_dir.exists()
    make_output_folder(out_dir)
    threads = check_threads(threads if threads is not None else parsed.threads)
    # the train and finetune stages' epoch bars (with ETA) on a terminal; quiet under --json and off a TTY
    view = ProgressView(quiet=True, bar=not json_output)
    console = view.bar.console
    console.print(f"[bold]ttsnn run[/] {recipe}: stages {', '.join(s.name for s in stages)} -> {out_dir}")

    def on_event(kind: str, fields: dict[str, Any]) -> None:
        if kind == "stage_start":
            view.stage = fields["stage"]
            console.print(f"[bold cyan]== {fields['stage']}[/]")
        elif kind == "stage_end":
            view.finish()
            console.print(f"   {fields['stage']} done: {escape(_summary(fields['result']))}")
        elif kind == "progress" and fields["event"].get("kind") in ("epoch_start", "batch", "epoch_end"):
            view(fields["event"])
        elif kind == "message":
            console.print(f"   {escape(str(fields.get('text', '')))}")

    context = RunContext(out_dir=out_dir.resolve(), base_dir=base, force=force, on_event=on_event)
    try:
        # the recipe the user runs names its architecture
        with trust_scope(False, parsed.model.arch), limited_threads(threads), view:
            results = run_recipe(parsed, context)
    except BaseException:
        if created and not any(out_dir.iterdir()):  # a run that wrote nothing leaves no empty folder
            out_dir.rmdir()
        raise
    if json_output:
        print_json(results)


def _with_data(recipe: Recipe, spec: str | None) -> Recipe:
    """The recipe with `spec` as its data, and no stage keeping a data spec of its own."""
    sections = {name: getattr(recipe, name) for name in ("train", "finetune")}
    update: dict[str, Any] = {"data": spec}
    for name, section in sections.items():
        if section is not None and isinstance(getattr(section, "data", None), str):
            update[name] = section.model_copy(update={"data": None})
    return recipe.model_copy(update=update)


def _summary(result: dict[str, Any]) -> str:
    """One line per stage: the figures a person looks for first."""
    parts = []
    if "test_accuracy" in result:
        parts.append(f"test accuracy {result['test_accuracy']:.2f} %")
    totals = result.get("totals")
    if isinstance(totals, dict) and "param_ratio" in totals:
        parts.append(f"params {totals['params_before']:,} -> {totals['params_after']:,} ({totals['param_ratio']:.2f}x)")
    ratios = result.get("ratios")
    if isinstance(ratios, dict):
        scope = ratios.get("scope")  # compress's ratios cover its decomposed layers; report's the whole model
        parts.append(", ".join(f"{key} {value:.2f}x" for key, value in ratios.items()
                               if key in ("weights", "macs") and isinstance(value, (int, float)))
                     + (f" fewer in the {scope}" if isinstance(scope, str) else " fewer than dense"))
    gates = result.get("gates")
    if gates:
        parts.append(f"gates passed {sum(g['passed'] for g in gates)}/{len(gates)}")
    if "verified" in result:  # max_abs_diff is None when export.verify is false
        diff = result.get("max_abs_diff")
        parts.append(f"verified {result['verified']}" + (f" (max abs diff {diff:.2g})" if isinstance(diff, (int, float)) else ""))
    if "output" in result:
        parts.append(f"-> {result['output']}")
    elif "onnx" in result or "nir" in result:  # the export stage: every file it wrote
        written = [str(result[key]) for key in ("onnx", "nir") if result.get(key)]
        parts.append(f"-> {', '.join(written) or 'nothing written'}")
    return "; ".join(parts)


@app.command()
@guarded
def schema() -> None:
    """Print the recipe JSON Schema (generated from the validator) on stdout."""
    print_stdout(schema_json())
