"""`ttsnn inspect`: what a checkpoint or bundle holds: layers, ranks, shapes, provenance."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional

import typer
from rich.markup import escape
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
    runs = "".join(f", {key} {io[key]}" for key in ("style", "readout") if io.get(key))
    console.print(f"input shape {io['input_shape']}, timesteps {io['timesteps']}, data {io['data']}{runs}; "
                  f"TT mode {document['tt_mode'] or 'none (dense)'}")
    table = Table(title_justify="left")
    for column in ("layer", "type", "shape", "ranks", "params"):
        table.add_column(column, justify="right" if column == "params" else "left")
    for layer in document["layers"]:
        table.add_row(layer["name"], layer["type"], readable_numbers(layer["shape"]), ",".join(map(str, layer["ranks"])) if layer["ranks"] else "",
                      f"{layer['params']:,}")
    console.print(table)
    console.print(f"parameters: {document['params']:,}")
    if document["history"]:
        console.print("history:")
    for number, entry in enumerate(document["history"], 1):
        console.print(f"  {number}. {escape(history_line(entry))}")


def readable_numbers(text: str) -> str:
    """`text` with every long decimal shortened to six significant digits: a neuron's beta is stored in
    float32, so 0.9 reads back as 0.8999999761581421. Short numbers (1.0, 0.25) stay as they are, and
    `--json` keeps the full values (CI compares them with earlier releases)."""
    return _LONG_DECIMAL.sub(lambda match: f"{float(match.group()):.6g}", text)


_LONG_DECIMAL = re.compile(r"(?<![\w.])\d+\.\d{7,}(?:e[-+]?\d+)?")


#: the training options a history line names (the rest stay in --json)
_OPTIONS = (("optimizer", "{}"), ("lr", "lr {:g}"), ("batch_size", "batch {}"), ("timesteps", "T {}"),
            ("loss", "loss {}"), ("precision", "{}"))


def history_line(entry: Any) -> str:
    """One readable line per step of a bundle's history (`--json` keeps the full records)."""
    if not isinstance(entry, dict):
        return str(entry)
    stage = str(entry.get("stage", "?"))
    if stage in ("train", "finetune"):
        parts = [f"{stage} on {entry.get('data')}", f"{entry.get('epochs')}/{entry.get('of_epochs')} epochs"]
        if isinstance(entry.get("test_accuracy"), (int, float)):
            parts.append(f"test accuracy {entry['test_accuracy']:.2f} %")
        if isinstance(entry.get("train_loss"), (int, float)):
            parts.append(f"train loss {entry['train_loss']:.4f}")
        options = entry.get("options") if isinstance(entry.get("options"), dict) else {}
        shown = [form.format(options[key]) for key, form in _OPTIONS
                 if key in options and options[key] is not None and not (key == "precision" and options[key] == "fp32")]
        if entry.get("teacher"):
            shown.append(f"teacher {entry['teacher']}")
        return ", ".join(parts) + (f" ({', '.join(shown)})" if shown else "")
    if stage == "compress":
        totals = entry.get("totals") if isinstance(entry.get("totals"), dict) else {}
        parts = [f"compress {entry.get('mode')}", f"ranks {entry.get('rank_method')}"]
        if all(isinstance(totals.get(k), (int, float)) for k in ("params_before", "params_after", "param_ratio")):
            parts.append(f"params {totals['params_before']:,} -> {totals['params_after']:,} "
                         f"({totals['param_ratio']:.2f}x fewer)")
        return ", ".join(parts)
    rest = ", ".join(f"{key} {value}" for key, value in entry.items() if key != "stage")
    return f"{stage}: {rest}" if rest else stage
