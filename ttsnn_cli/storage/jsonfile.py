"""Reading a JSON side file ttsnn wrote earlier (a sweep's results, cached sensitivity curves).

Why: such a file sits in a folder anyone may edit, so it is input like any other. Truncated text,
NaN or Infinity (which Python's json reads and standard JSON forbids), numbers too large for a
float (`1e400` reads as inf) and nesting deep enough to exhaust the stack are all one-line bad
input naming the file, never a traceback. The caller then validates the shape (pydantic).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ttsnn_cli.errors import BadInputError
from ttsnn_cli.storage.read import read_bytes
from ttsnn_cli.storage.trust import check_plain_json


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a standard JSON number")


def read_json_file(path: str | Path, what: str) -> Any:
    """The plain JSON value `path` holds (finite numbers only); BadInputError naming `what` and `path`."""
    data = read_bytes(path, what)
    try:
        value = json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
    except json.JSONDecodeError as error:
        raise BadInputError(f"{what} {path} is not valid JSON ({error.msg} at line {error.lineno})") from None
    except UnicodeDecodeError:
        raise BadInputError(f"{what} {path} is not UTF-8 text") from None
    except ValueError as error:
        raise BadInputError(f"{what} {path}: {error}") from None
    except RecursionError:
        raise BadInputError(f"{what} {path} is nested too deeply") from None
    return check_plain_json(value, f"{what} {path}")
