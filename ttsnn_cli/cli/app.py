"""The `ttsnn` Typer application and its root options; each command module adds itself to it."""

from __future__ import annotations

import typer

from ttsnn_cli._version import __version__

app = typer.Typer(
    name="ttsnn",
    help="Tensor-train compression of spiking neural networks (TT-SNN): compress, fine-tune, report, export.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ttsnn {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """ttsnn: TT-SNN compression for snntorch models."""
