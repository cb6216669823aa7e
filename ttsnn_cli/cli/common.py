"""What every command shares: stderr console, one-line errors with DESIGN.md's exit codes, JSON out.

The library raises typed errors (`ttsnn_cli.errors`); `guarded` maps them to one stderr line and
`typer.Exit(code)`. Anything else is a bug: exit 1 with a short message and the path of a log file
holding the traceback, never a traceback on the terminal.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console

from ttsnn_cli.errors import TtsnnError

F = TypeVar("F", bound=Callable[..., Any])


def err_console() -> Console:
    """A fresh stderr console (fresh so CliRunner's swapped streams are honoured)."""
    # Off a terminal (CI logs, pipes) rich would squeeze tables into 80 columns: give them room.
    return Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 160)


def fail(message: str, code: int) -> typer.Exit:
    err_console().print(f"[bold red]error:[/] {message}", markup=True, highlight=False)
    return typer.Exit(code)


def _log_internal_error() -> Path:
    folder = Path(os.environ.get("TTSNN_LOG_DIR", Path(tempfile.gettempdir()) / "ttsnn-logs"))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"error-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    path.write_text(traceback.format_exc())
    return path


def guarded(func: F) -> F:
    """Run a command body; turn every error into one line and the contract's exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=UserWarning, append=False)
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=FutureWarning)
            try:
                return func(*args, **kwargs)
            except (typer.Exit, typer.Abort, typer.BadParameter):
                raise
            except TtsnnError as error:
                raise fail(str(error), error.exit_code) from None
            except KeyboardInterrupt:
                raise fail("interrupted", 130) from None
            except Exception as error:  # noqa: BLE001 - the last line of defence, by design
                log = _log_internal_error()
                first_line = (str(error).splitlines() or [""])[0][:300]
                raise fail(f"internal error ({type(error).__name__}: {first_line}); traceback in {log}", 1) from None

    return wrapper  # type: ignore[return-value]


def print_json(document: Any) -> None:
    """Exactly one JSON document on stdout (the CI contract)."""
    sys.stdout.write(json.dumps(document, indent=2, default=_json_default) + "\n")
    sys.stdout.flush()


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def warn(message: str) -> None:
    err_console().print(f"[yellow]warning:[/] {message}", markup=True, highlight=False)
