"""Writing files without ever losing one: temporary name in the same folder, fsync, rename.

Every output of ttsnn goes through here, so an interrupted command leaves either the old file or
the new one, never half of one, and never overwrites an input by accident.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from collections.abc import Iterable, Iterator
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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """A temporary path beside `path` for a writer that wants a file name (h5py, nir.write...);
    when the block succeeds it is fsynced, given the permissions a plain `open(path, "w")` would
    give (mkstemp's are owner-only), and renamed over `path`; on failure it is removed."""
    path = Path(path)
    descriptor, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(descriptor)
    temporary = Path(name)
    try:
        yield temporary
        with open(temporary, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` atomically (see `atomic_output`)."""
    with atomic_output(path) as temporary:
        temporary.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_torch_save(path: str | Path, obj: Any) -> Path:
    """torch.save, atomically."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write_bytes(path, buffer.getvalue())
