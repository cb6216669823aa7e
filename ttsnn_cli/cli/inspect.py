"""`ttsnn inspect`: what a checkpoint or bundle holds: layers, ranks, shapes, provenance."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from ttsnn_cli.cli.app import app
from ttsnn_cli.cli.common import TRUST_ARCH_HELP, err_console, guarded, print_json, trust_scope
from ttsnn_cli.report.inspection import describe_model
from ttsnn_cli.storage.load import load_checkpoint
from ttsnn_cli.storage.trust import parse_arch_kwargs


@app.command()
@guarded
def inspect(
    model: Path = typer.Argument(..., help="A ttsnn bundle, or a state_dict with --arch."),
    arch: Optional[str] = typer.Option(None, help="zoo:NAME or MODULE:FACTORY (for a plain state_dict)."),
    arch_kwargs: Optional[str] = typer.Option(None, help="JSON kwargs for the factory."),
    trust_arch: bool = typer.Option(False, "--trust-arch", help=TRUST_ARCH_HELP),
    json_output: bool = typer.Option(False, "--json", help="Print the description as JSON on stdout."),
) -> None:
    """Print the layers (TT ranks, shapes, parameters) and what the bundle records."""
    with trust_scope(trust_arch, arch):
        loaded = load_checkpoint(model, arch, parse_arch_kwargs(arch_kwargs))
    document = describe_model(loaded)
    document["path"] = str(model)
    if json_output:
        print_json(document)
        return
    _render(document)


def _render(document: dict[str, Any]) -> None:
    console = err_console()
    io = document["io"]
    console.print(f"[bold]{document['path']}[/]: arch {document['arch']} {document['arch_kwargs'] or ''}")
    console.print(f"input shape {io['input_shape']}, timesteps {io['timesteps']}, data {io['data']}; "
                  f"TT mode {document['tt_mode'] or 'none (dense)'}")
    table = Table(title_justify="left")
    for column in ("layer", "type", "shape", "ranks", "params"):
        table.add_column(column, justify="right" if column == "params" else "left")
    for layer in document["layers"]:
        table.add_row(layer["name"], layer["type"], layer["shape"], ",".join(map(str, layer["ranks"])) if layer["ranks"] else "",
                      f"{layer['params']:,}")
    console.print(table)
    console.print(f"parameters: {document['params']:,}")
    for entry in document["history"]:
        console.print(f"history: {entry}")
