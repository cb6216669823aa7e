"""Calling code ttsnn does not own (a user's module, factory, or a trusted pickle) as bad input.

Whatever such code raises, even SystemExit from a stray `sys.exit()` or a bare BaseException, is the
user's input failing, not a ttsnn bug: it becomes one BadInputError naming what was called. Only an
interruption (Ctrl-C, SIGTERM) passes through, so the process still stops when asked.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from ttsnn_cli.errors import Interrupted, TtsnnError, UserCodeError, first_line

T = TypeVar("T")


def call_user_code(function: Callable[[], T], what: str) -> T:
    """`function()`; anything it raises but an interruption becomes `UserCodeError("<what>: <error>")`
    (a BadInputError: exit 3). A model's forward is guarded by `spiking.runner`, which sits below."""
    try:
        return function()
    except (KeyboardInterrupt, Interrupted, TtsnnError):
        raise
    except SystemExit as error:
        raise UserCodeError(f"{what}: it called sys.exit({first_line(error) if error.code is not None else ''})", error) from None
    except RecursionError as error:
        raise UserCodeError(f"{what}: RecursionError (nesting too deep)", error) from None
    except BaseException as error:  # noqa: BLE001 - user code failing is bad input, by design
        raise UserCodeError(f"{what}: {type(error).__name__}: {first_line(error)}", error) from None
