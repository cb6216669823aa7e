"""What every command shares: stderr console, one-line errors with DESIGN.md's exit codes, JSON out.

The library raises typed errors (`ttsnn_cli.errors`); `guarded` maps them to one stderr line and
`typer.Exit(code)`. Anything else is a bug: exit 1 with a short message and the path of a log file
holding the traceback, never a traceback on the terminal.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import sys
import secrets
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from ttsnn_cli.errors import BadInputError, Interrupted, TtsnnError, abbreviate, interruption
from ttsnn_cli.host.private import private_folder, write_private_file
from ttsnn_cli.storage.outputs import standard_json
from ttsnn_cli.storage.trust import trusting

#: the longest error line: a message beyond it is abbreviated in the middle (DESIGN.md: one line)
MESSAGE_LIMIT = 1000

F = TypeVar("F", bound=Callable[..., Any])


def err_console() -> Console:
    """A fresh stderr console (fresh so CliRunner's swapped streams are honoured)."""
    # Off a terminal (CI logs, pipes) rich would squeeze tables into 80 columns: give them room.
    # soft_wrap: a printed line is never broken, whatever the width (errors and notes stay one line).
    # emoji off: messages quote specs and paths, and `mod:factory: ...` must not print as an emoji.
    return Console(stderr=True, highlight=False, emoji=False, soft_wrap=True, width=None if sys.stderr.isatty() else 160)


def one_line(message: str) -> str:
    """`message` folded onto one line and abbreviated to MESSAGE_LIMIT characters."""
    return abbreviate(message, MESSAGE_LIMIT)


def fail(message: str, code: int) -> typer.Exit:
    """Print `error: <message>` as exactly one stderr line; the typer.Exit for the caller to raise."""
    err_console().print(f"[bold red]error:[/] {escape(one_line(message))}", markup=True, highlight=False)
    return typer.Exit(code)


def _log_internal_error() -> Path:
    """Write the traceback where only this user can read it: `TTSNN_LOG_DIR` when set (the user's
    own choice), else a private per-user folder (`host.private`: a shared TMPDIR cannot plant a link
    there). The file is always new and never written through a link."""
    named = os.environ.get("TTSNN_LOG_DIR")
    folder = Path(named).expanduser() if named else private_folder("ttsnn-logs")
    if named:
        folder.mkdir(parents=True, exist_ok=True)
    stamp = f"error-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    try:
        return write_private_file(folder, f"{stamp}.log", traceback.format_exc())
    except FileExistsError:  # a second internal error in the same second
        return write_private_file(folder, f"{stamp}-{secrets.token_hex(3)}.log", traceback.format_exc())


#: the real stdout while a command runs (`_stdout_to_stderr`): only `print_json` / `print_stdout` write there
_STDOUT: list[TextIO] = []


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """While a command works, anything printed to stdout (a user's forward, a chatty library) goes to
    stderr: stdout carries only the command's own document (`--json`'s must parse as one). Python-level
    writes only: a C library writing to fd 1 is not caught. Nested commands keep the outermost stdout."""
    if _STDOUT:
        yield
        return
    _STDOUT.append(sys.stdout)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        _STDOUT.pop()


def guarded(func: F) -> F:
    """Run a command body; turn every error into one line and the contract's exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=UserWarning, append=False)
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=FutureWarning)
            try:
                with _stdout_to_stderr():
                    return func(*args, **kwargs)
            except (typer.Exit, typer.Abort, typer.BadParameter):
                raise
            except TtsnnError as error:
                raise fail(str(error), error.exit_code) from None
            except KeyboardInterrupt:
                raise fail("interrupted", 130) from None
            except Interrupted as stop:
                raise fail(f"interrupted ({stop.signal_name})", stop.exit_code) from None
            except RecursionError:
                raise fail("input nested too deeply (recursion limit reached)", 3) from None
            except Exception as error:  # noqa: BLE001 - the last line of defence, by design
                stop = interruption()
                if stop is not None:  # a signal that library code turned into another error
                    raise fail(f"interrupted ({stop.signal_name})", stop.exit_code) from None
                try:
                    where = f"traceback in {_log_internal_error()}"
                except OSError as log_error:
                    where = f"no log written ({log_error.strerror})"
                first_line = abbreviate((str(error).splitlines() or [""])[0], 300)
                raise fail(f"internal error ({type(error).__name__}: {first_line}); {where}", 1) from None

    return wrapper  # type: ignore[return-value]


TRUST_ARCH_HELP = ("import the module:factory architecture the input bundles record (runs its code: only for "
                   "files you trust; see also TTSNN_TRUSTED_ARCH)")
THREADS_HELP = ("CPU threads torch computes with (default: torch's, one per core); give each of several "
                "processes running at once its share, e.g. --threads 1 (see docs/performance.md)")
STYLE_HELP = ("Execution style when detection cannot tell: auto, multistep, sequential, stepped (called once per "
              "timestep) or own_loop (its own time loop); recorded in the bundle. See docs/networks.md.")


def library_reads_files(app: typer.Typer) -> typer.Typer:
    """Turn off the argument parser's own readability check on every path parameter of `app`'s
    commands (typer checks `os.access(R_OK)` by default). The commands read their files through the
    library, which says what is wrong with a file (missing, unreadable, a folder, a FIFO) as bad
    input: exit 3 and one line. The parser's check would make an unreadable file a usage error
    (exit 2) that only a user without root's capabilities ever sees."""
    import inspect

    from typer.models import ParameterInfo

    for command in app.registered_commands:
        if command.callback is None:
            continue
        for parameter in inspect.signature(command.callback).parameters.values():
            if isinstance(parameter.default, ParameterInfo):
                parameter.default.readable = False
    return app


def trust_scope(trust_arch: bool, *named: str | None) -> contextlib.AbstractContextManager[None]:
    """The architectures this command may import: every recorded one with --trust-arch, else the
    ones the user named (zoo names and TTSNN_TRUSTED_ARCH always)."""
    return trusting(True if trust_arch else [spec for spec in named if spec])


def check_options(*checks: tuple[str, Any, float | None, float | None]) -> None:
    """Refuse options out of range at the edge, as bad input (exit 3) rather than typer's usage error:
    each check is (option, value, minimum, maximum); None values are unset options; floats must be finite."""
    for option, value, low, high in checks:
        if value is None:
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise BadInputError(f"{option} must be a finite number, got {value}")
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f">= {low:g}" if high is None else f"in {low:g}..{high:g}" if low is not None else f"<= {high:g}"
            raise BadInputError(f"{option} must be {bounds}, got {value}")


def print_stdout(text: str) -> None:
    """`text` and a newline on the real stdout, even inside a command (whose stdout goes to stderr)."""
    out = _STDOUT[-1] if _STDOUT else sys.stdout
    out.write(text + "\n")
    out.flush()


def print_json(document: Any) -> None:
    """Exactly one standard JSON document on stdout (the CI contract: non-finite numbers are null)."""
    print_stdout(standard_json(document, indent=2))


def warn(message: str) -> None:
    """`warning: <message>` as exactly one stderr line."""
    err_console().print(f"[yellow]warning:[/] {escape(one_line(message))}", markup=True, highlight=False)
