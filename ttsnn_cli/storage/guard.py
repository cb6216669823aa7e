"""Calling code ttsnn does not own (a user's module, factory, or a trusted pickle) as bad input.

Whatever such code raises, even SystemExit from a stray `sys.exit()` or a bare BaseException, is the
user's input failing, not a ttsnn bug: it becomes one BadInputError naming what was called. Only an
interruption (Ctrl-C, SIGTERM) passes through, so the process still stops when asked.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from ttsnn_cli.errors import BadInputError, Interrupted, TtsnnError, first_line

T = TypeVar("T")


def call_user_code(function: Callable[[], T], what: str) -> T:
    """`function()`; anything it raises but an interruption becomes `BadInputError("<what>: <error>")`."""
    try:
        return function()
    except (KeyboardInterrupt, Interrupted, TtsnnError):
        raise
    except SystemExit as error:
        raise BadInputError(f"{what}: it called sys.exit({first_line(error) if error.code is not None else ''})") from None
    except RecursionError:
        raise BadInputError(f"{what}: RecursionError (nesting too deep)") from None
    except BaseException as error:  # noqa: BLE001 - user code failing is bad input, by design
        raise BadInputError(f"{what}: {type(error).__name__}: {first_line(error)}") from None
