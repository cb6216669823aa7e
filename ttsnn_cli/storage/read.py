"""File -> Python object, safely: the only place ttsnn unpickles a checkpoint.

Every file is read with `torch.load(weights_only=True)`. Whatever that unpickler raises for a file it
cannot read (IndexError for a text file holding `t`, RuntimeError for a truncated zip, ...) means the
file is bad input, never a bug. Only a well-formed pickle that names Python globals (a pickled module,
or code) gets the `--trust-pickle` advice: random bytes are not a pickle, and steering a user toward
running code for them would be wrong. With `trust_pickle` such a file is unpickled in full; whatever
its code raises (even SystemExit) is bad input too.
"""

from __future__ import annotations

import io
import os
import pickletools
import stat
import zipfile
from pathlib import Path
from typing import Any

import torch

from ttsnn_cli.errors import BadInputError, first_line
from ttsnn_cli.storage.guard import call_user_code

#: opcodes that make an unpickler import and call something
_CODE_OPCODES = frozenset({"GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "REDUCE", "NEWOBJ", "NEWOBJ_EX"})
#: a legacy (non-zip) torch file is a few pickles in a row; more than this is not one
_MAX_PICKLES = 8


def open_regular_file(path: str | Path, what: str) -> Path:
    """`path` if it is an existing, readable, regular file; a one-line BadInputError otherwise.

    A FIFO or a device node would block or never end, a folder cannot be read: all refused before
    any read.
    """
    path = Path(path).expanduser()
    try:
        info = path.stat()
    except FileNotFoundError:
        raise BadInputError(f"{what} {path} does not exist") from None
    except OSError as error:
        raise BadInputError(f"cannot read {what} {path}: {error.strerror or first_line(error)}") from None
    if stat.S_ISDIR(info.st_mode):
        raise BadInputError(f"{what} {path} is a folder, not a file")
    if not stat.S_ISREG(info.st_mode):
        raise BadInputError(f"{what} {path} is not a regular file (a device, FIFO or socket)")
    if not os.access(path, os.R_OK):
        raise BadInputError(f"cannot read {what} {path}: permission denied")
    return path


def read_bytes(path: str | Path, what: str) -> bytes:
    """The content of a regular file, with one-line errors (see `open_regular_file`)."""
    path = open_regular_file(path, what)
    try:
        return path.read_bytes()
    except OSError as error:
        raise BadInputError(f"cannot read {what} {path}: {error.strerror or first_line(error)}") from None


def _pickle_streams(data: bytes) -> list[bytes]:
    """The pickles a torch file holds: `*/data.pkl` of a zip archive, else the file itself."""
    if data[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                names = [n for n in archive.namelist() if n.endswith("data.pkl")]
                return [archive.read(n) for n in names[:1]]
        except Exception:  # noqa: BLE001 - a broken archive holds no readable pickle
            return []
    return [data]


def holds_code(data: bytes) -> bool:
    """True only for a well-formed pickle (or torch file) whose opcodes import or call globals."""
    for stream in _pickle_streams(data):
        handle = io.BytesIO(stream)
        found = False
        try:
            for _ in range(_MAX_PICKLES):
                if handle.tell() >= len(stream):
                    break
                ended = False
                for opcode, _, _ in pickletools.genops(handle):
                    found = found or opcode.name in _CODE_OPCODES
                    ended = opcode.name == "STOP"
                if not ended:
                    return False
        except Exception:  # noqa: BLE001 - not a pickle at all
            return False
        if found:
            return True
        if handle.tell() < len(stream):  # trailing bytes: raw tensor storage of a legacy file; fine
            return False
    return False


def read_checkpoint(path: str | Path, trust_pickle: bool = False) -> Any:
    """The raw object in a checkpoint file, with a one-line BadInputError for every way it can be bad."""
    data = read_bytes(path, "checkpoint")
    path = Path(path).expanduser()
    if not data:
        raise BadInputError(f"checkpoint {path} is empty")
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except MemoryError:
        raise BadInputError(f"checkpoint {path} does not fit in memory") from None
    except Exception:  # noqa: BLE001 - whatever the weights-only unpickler raises, the file is bad
        pass
    if not holds_code(data):
        raise BadInputError(f"{path} is not a readable PyTorch checkpoint (not a torch file, truncated or corrupt)")
    if not trust_pickle:
        raise BadInputError(
            f"{path} holds pickled objects beyond tensors (a whole module, or code); refusing to unpickle it. "
            "Save a state_dict instead, or pass --trust-pickle if you trust the file's author"
        )
    return call_user_code(lambda: torch.load(io.BytesIO(data), map_location="cpu", weights_only=False),
                          f"unpickling {path} failed")
