"""Rich tables for humans (stderr); the JSON documents are the data, these only show them."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from ttsnn_cli.cli.common import err_console


def _ranks(value: list[int] | None) -> str:
    return "-" if not value else ",".join(map(str, value))


def compress_table(document: dict[str, Any]) -> None:
    table = Table(title=f"TT compression ({document['mode'].upper()}, ranks: {document['rank_method']})", title_justify="left")
    for column, justify in (("layer", "left"), ("kernel", "center"), ("channels", "right"), ("ranks", "right"),
                            ("params", "right"), ("TT params", "right"), ("ratio", "right"), ("rel. error", "right"),
                            ("skipped / note", "left")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for layer in document["layers"]:
        kernel = "x".join(map(str, layer["kernel"])) if layer["kernel"] else "-"
        ratio = layer["params_before"] / layer["params_after"] if layer["params_after"] else 0
        error = "-" if layer["rel_error"] is None else f"{layer['rel_error']:.2e}"
        note = layer["skipped"] or layer.get("note") or ""
        style = "dim" if layer["skipped"] else None
        table.add_row(layer["name"], kernel, f"{layer['in_channels']}->{layer['out_channels']}", _ranks(layer["ranks"]),
                      f"{layer['params_before']:,}", f"{layer['params_after']:,}", f"{ratio:.2f}x", error, note, style=style)
    totals = document["totals"]
    table.add_section()
    table.add_row("decomposed layers", "", "", str(totals["decomposed_layers"]), f"{totals['decomposed_params_before']:,}",
                  f"{totals['decomposed_params_after']:,}", f"{totals['decomposed_param_ratio']:.2f}x", "", "", style="bold")
    table.add_row("whole model", "", "", "", f"{totals['params_before']:,}", f"{totals['params_after']:,}",
                  f"{totals['param_ratio']:.2f}x", "", "", style="bold")
    console = err_console()
    console.print(table)
    console.print(f"wrote {document['output']}")
