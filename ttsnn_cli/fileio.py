"""Writing files without ever losing one: temporary name in the same folder, fsync, rename.

Every output of ttsnn goes through here, so an interrupted command leaves either the old file or
the new one, never half of one, and never overwrites an input by accident.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from ttsnn_cli.errors import BadInputError


def check_output_path(output: str | Path, inputs: Iterable[str | Path | None] = (), force: bool = False) -> Path:
    """Validate an output path before any work is done (fail fast, lose nothing).

    Refuses: a folder that does not exist; an existing file unless `force`; one of the inputs
    unless `force` (the contract allows `--force` to name the input on purpose).
    """
    path = Path(output).expanduser()
    if path.is_dir():
        raise BadInputError(f"output {path} is a folder; give a file name")
    if not path.parent.exists():
        raise BadInputError(f"output folder {path.parent} does not exist")
    if not os.access(path.parent, os.W_OK):
        raise BadInputError(f"output folder {path.parent} is not writable")
    resolved = path.resolve()
    for candidate in inputs:
        if candidate is not None and Path(candidate).expanduser().resolve() == resolved and not force:
            raise BadInputError(f"output {path} is the input file; choose another name or pass --force")
    if path.exists() and not force:
        raise BadInputError(f"output {path} exists; pass --force to overwrite it")
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` atomically (same-folder temporary file, fsync, os.replace)."""
    path = Path(path)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_torch_save(path: str | Path, obj: Any) -> Path:
    """torch.save, atomically."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write_bytes(path, buffer.getvalue())
