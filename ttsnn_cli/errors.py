"""Typed errors the library raises; the CLI maps each to one stderr line and an exit code.

The codes are part of the public contract (DESIGN.md): CI pipelines branch on them, so every error a
user can cause must be one of these classes and never a bare exception with a traceback.
"""

from __future__ import annotations


class TtsnnError(Exception):
    """Base of every error a user can cause; `exit_code` is the process exit status the CLI uses."""

    exit_code: int = 3


class BadInputError(TtsnnError):
    """A missing, unreadable, unsafe or inconsistent file or option (exit 3)."""

    exit_code = 3


class GateFailedError(TtsnnError):
    """A regression gate of `ttsnn report` failed (exit 4)."""

    exit_code = 4


class ExportVerificationError(TtsnnError):
    """An exported graph does not reproduce the torch model (exit 5)."""

    exit_code = 5
