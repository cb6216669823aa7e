"""Typed errors the library raises; the CLI maps each to one stderr line and an exit code.

The codes are part of the public contract (DESIGN.md): CI pipelines branch on them, so every error a
user can cause must be one of these classes and never a bare exception with a traceback.
"""

from __future__ import annotations

from typing import Any

#: longest value quoted in a message; longer ones are abbreviated (an error is one readable line)
VALUE_LIMIT = 120


class TtsnnError(Exception):
    """Base of every error a user can cause; `exit_code` is the process exit status the CLI uses."""

    exit_code: int = 3


class BadInputError(TtsnnError):
    """A missing, unreadable, unsafe or inconsistent file or option (exit 3)."""

    exit_code = 3


class UserCodeError(BadInputError):
    """Code the user named (a model's forward, a factory, a module imported for `--arch`) failed or
    returned something unusable: bad input (exit 3) naming that code, never a ttsnn bug. `cause` is
    what it raised (None when it returned a wrong value), so a caller can tell a shape mismatch apart."""

    def __init__(self, message: str, cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.cause = cause


class GateFailedError(TtsnnError):
    """A regression gate of `ttsnn report` failed (exit 4)."""

    exit_code = 4


class ExportVerificationError(TtsnnError):
    """An exported graph does not reproduce the torch model (exit 5)."""

    exit_code = 5


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived (the CLI's handlers raise it). A BaseException, so neither click's
    KeyboardInterrupt handling nor an `except Exception` in user code swallows it; `finally` blocks
    and `except BaseException` clean-ups (temporary files) still run."""

    def __init__(self, signal_name: str = "SIGINT", exit_code: int = 130) -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name
        self.exit_code = exit_code


_RECEIVED: list[Interrupted] = []


def record_interruption(stop: Interrupted) -> None:
    """Remember a signal (the CLI's handler calls this before raising): third-party code interrupted
    mid-import can swallow or transform the exception, and whatever then escapes is still the
    interruption, not a bug."""
    _RECEIVED.append(stop)


def interruption() -> Interrupted | None:
    """The signal received in this process, if any (see `record_interruption`)."""
    return _RECEIVED[-1] if _RECEIVED else None


def abbreviate(value: object, limit: int = VALUE_LIMIT) -> str:
    """`value` as one short line: newlines folded, the middle cut when longer than `limit`."""
    text = " ".join(str(value).split())
    if len(text) <= limit:
        return text
    keep = max(limit - 5, 2)
    return f"{text[: keep // 2]} ... {text[-(keep - keep // 2):]}"


def describe_validation(error: Any, first_only: bool = False) -> str:
    """A pydantic ValidationError as `field.path: message` parts, one line: every error joined by
    "; ", or with `first_only` the first and how many more (a bundle's fields can number thousands)."""
    items = error.errors()
    parts = []
    for item in items[:1] if first_only else items:
        path = ".".join(str(p) for p in item["loc"]) or "(top level)"
        message = "unknown key" if item["type"] == "extra_forbidden" else item["msg"].removeprefix("Value error, ")
        parts.append(f"{path}: {abbreviate(message)}")
    extra = f" (and {len(items) - 1} more)" if first_only and len(items) > 1 else ""
    return "; ".join(parts) + extra


def first_line(error: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (its type name when empty), abbreviated."""
    lines = str(error).strip().splitlines()
    return abbreviate(lines[0] if lines else type(error).__name__, limit)


def what_it_raised(error: BaseException) -> str:
    """What user code did, for one line: `raised KeyError: 'x'`, `called sys.exit(4)`, ... (a SystemExit
    or bare BaseException from user code is its failure too, not a request to end ttsnn)."""
    if isinstance(error, SystemExit):
        return f"called sys.exit({first_line(error) if error.code is not None else ''})"
    if isinstance(error, RecursionError):
        return "raised RecursionError (nesting too deep)"
    return f"raised {type(error).__name__}: {first_line(error)}"
