"""The `ttsnn` command line: a thin layer that parses options, calls the library and renders.

Each command lives in its own module and registers itself on `app`; this module only assembles
them. Library code never prints or exits: that happens here.
"""

from __future__ import annotations

import importlib

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


# Command modules register themselves on `app` when imported.
for _name in ("compress", "inspect", "train", "report", "export", "run", "sweep"):
    importlib.import_module(f"ttsnn_cli.cli.{_name}")


def main() -> None:
    """The console script (kept for installs made before `ttsnn_cli.entry:main`)."""
    from ttsnn_cli.entry import main as entry_main

    entry_main()
