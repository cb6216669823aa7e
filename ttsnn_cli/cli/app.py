"""The `ttsnn` Typer application and its root options; each command module adds itself to it."""

from __future__ import annotations

import typer

from ttsnn_cli._version import __version__


def _usage_name(argument: object) -> str:
    """An argument as the usage line shows it: `MODEL`, `[CHECKPOINT]`, `FILES...` (the convention of
    docs/cli.md and of every other tool), where typer 0.29 would print a required one as `{model}`."""
    name = str(getattr(argument, "metavar", None) or getattr(argument, "name", "") or "").upper()
    name = name if getattr(argument, "required", False) else f"[{name}]"
    return name + ("..." if getattr(argument, "nargs", 1) != 1 else "")


try:  # the hook exists in the typer versions that print `{model}`; older ones print MODEL already
    from typer.core import TyperArgument

    if hasattr(TyperArgument, "_usage_display_name"):
        TyperArgument._usage_display_name = _usage_name  # type: ignore[method-assign]
except ImportError:  # pragma: no cover - typer without core.TyperArgument
    pass

app = typer.Typer(
    name="ttsnn",
    help="Tensor-train compression of spiking neural networks (TT-SNN): compress, fine-tune, report, export.",
    no_args_is_help=True,
    add_completion=True,  # `ttsnn --install-completion` / `--show-completion` (bash, zsh, fish, PowerShell)
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
