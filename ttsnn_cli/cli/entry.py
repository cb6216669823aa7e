"""The `ttsnn` console script: signals first, then the (heavy) command line.

SIGINT and SIGTERM raise `Interrupted` from the first instant, even while torch is being imported:
the process answers with one line and exit 130 (143 for SIGTERM), no traceback, and every temporary
file being written is removed on the way out (`storage.outputs`). A BaseException, so click's own Ctrl-C
handling ("Aborted!", exit 1) and user code catching Exception do not swallow it.
"""

from __future__ import annotations

import os
import signal
import sys
from types import SimpleNamespace

from ttsnn_cli.errors import Interrupted, interruption, record_interruption
from ttsnn_cli.host.imports import current_folder_last
from ttsnn_cli.train.allocator import keep_freed_memory
from ttsnn_cli.train.threads import early_threads

_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


def _raise_interrupted(signum: int, frame: object) -> None:
    stop = Interrupted(signal.Signals(signum).name, _CODES.get(signum, 130))
    record_interruption(stop)
    raise stop


def install_signal_handlers() -> None:
    for signum in _CODES:
        signal.signal(signum, _raise_interrupted)


class _NeverRaised(Exception):
    """Stands in for an exception class the installed typer/click does not have."""


def _click_exceptions() -> SimpleNamespace:
    """The click exceptions `main` handles, from whichever click the installed typer uses. typer >= 0.20
    vendors click as `typer._click`, whose exceptions module has no `Abort` (typer's own is `typer.Abort`);
    an `except` naming a missing attribute would itself raise while another exception unwinds, so every
    class is looked up here, once, with a stand-in for what is missing."""
    import typer

    try:
        from typer._click import exceptions
    except ImportError:  # pragma: no cover - older typer
        from click import exceptions  # type: ignore[no-redef]
    aborts = {typer.Abort, getattr(exceptions, "Abort", typer.Abort)}
    return SimpleNamespace(
        NoArgsIsHelpError=getattr(exceptions, "NoArgsIsHelpError", _NeverRaised),
        UsageError=getattr(exceptions, "UsageError", _NeverRaised),
        ClickException=getattr(exceptions, "ClickException", _NeverRaised),
        Abort=tuple(aborts),
    )


def _one_line_error(message: str, code: int) -> None:
    from ttsnn_cli.errors import abbreviate

    sys.stderr.write(f"error: {abbreviate(message, 1000)}\n")
    sys.stderr.flush()
    sys.exit(code)


def _ignore_signals() -> None:
    """From here on SIGINT/SIGTERM change nothing: the exit code is decided. (Python restores the
    default handlers while it shuts down; a signal then would kill the process, exit -2/-15.)"""
    for signum in _CODES:
        signal.signal(signum, signal.SIG_IGN)


#: negations earlier versions printed beside these flags (`--force / --no-force`); every one restated
#: the default, so the flags are now single (`--force`), and scripts that spelled the default still run
_RETIRED_NEGATIONS = ("--no-force", "--no-verify", "--no-trust-pickle", "--no-reconstruct-dense", "--no-allow-growth")


def accept_retired_negations(argv: list[str]) -> list[str]:
    """`argv` without the retired `--no-X` spellings, each cancelling an earlier `--X` as it did
    (the last of the two won); arguments after `--` are left alone."""
    out: list[str] = []
    for index, token in enumerate(argv):
        if token == "--":
            return out + argv[index:]
        if token in _RETIRED_NEGATIONS:
            flag = "--" + token[len("--no-"):]
            out = [t for t in out if t != flag]
            continue
        out.append(token)
    return out


def _leave_now(code: int) -> None:
    """End an interrupted command at once. The error is printed and every output's temporary file
    was removed while the interruption unwound; what remains is the interpreter tearing down what
    the command built (a traced export graph takes seconds), which a user who pressed Ctrl-C or a
    supervisor that sent SIGTERM must not wait for."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def main() -> None:
    """Run the command line; usage errors are one line too (exit 2), interruptions exit 130/143."""
    install_signal_handlers()
    current_folder_last()  # `python -m ttsnn_cli` put it first: it must not hide installed packages
    keep_freed_memory()  # before torch allocates anything (ttsnn_cli.train.allocator says why)
    sys.argv[1:] = accept_retired_negations(sys.argv[1:])
    early_threads(sys.argv[1:])  # --threads N sizes OpenMP's pool before torch starts it (train.threads)
    try:
        from ttsnn_cli.cli.commands import app

        exceptions = _click_exceptions()
        try:
            code = app(standalone_mode=False)
        except exceptions.NoArgsIsHelpError as error:
            error.show()
            sys.exit(error.exit_code)
        except exceptions.UsageError as error:
            command = error.ctx.command_path if error.ctx is not None else "ttsnn"
            _one_line_error(f"{error.format_message()} (see {command} --help)", error.exit_code)
        except exceptions.ClickException as error:
            _one_line_error(error.format_message(), error.exit_code)
        except exceptions.Abort:
            _one_line_error("aborted", 1)
        sys.exit(code if isinstance(code, int) else 0)
    except SystemExit as done:
        _ignore_signals()  # the command is over: a signal during interpreter shutdown must not kill it
        if done.code in _CODES.values():
            _leave_now(done.code)
        raise
    except BaseException as error:  # noqa: BLE001 - an interruption however third-party code wrapped it
        stop = error if isinstance(error, (Interrupted, KeyboardInterrupt)) else interruption()
        if stop is None:
            raise
        _ignore_signals()  # a second Ctrl-C while unwinding must not print a traceback
        name = getattr(stop, "signal_name", "SIGINT")
        sys.stderr.write(f"error: interrupted ({name})\n")
        _leave_now(getattr(stop, "exit_code", 130))
