"""Writing files without ever losing one: the one rule set for every output ttsnn writes.

Bundles, ONNX, NIR, plots, metrics and resume side files, run folders: all go through here.

- `check_output_path` runs before any work: never an input (unless `--force` names it on purpose),
  never an existing file without `force`, never a folder, device node, FIFO, socket or symbolic link
  (not even with `force`: publishing replaces the name, so a link such as /dev/stdout would be replaced
  by a regular file, not written through), the folder must exist and be writable, and the temporary
  name must fit the filesystem's NAME_MAX. `~` is expanded as a shell would: callers write to the
  path it returns, so the file checked is the file written.
- `atomic_output` writes to `.NAME.<pid>-<random>.tmp` beside the output, fsyncs, and publishes. An
  output checked without `force` is published with `os.link`, which fails if the name exists: of two
  writers racing for the same new file exactly one wins and the other gets BadInputError (exit 3).
  Later writes of the same output by the same process (a bundle saved every epoch) replace it.
- The temporary file is removed on any error and on SIGINT/SIGTERM (the CLI turns them into
  `Interrupted`, which unwinds through here); one left by a killed process (kill -9) is removed by
  the next run that writes that output. Full disk, read-only folder: BadInputError, nothing at the
  output path.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import math
import os
import re
import secrets
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch

from ttsnn_cli.errors import BadInputError

#: outputs checked without `force` and not yet published by this process: published exclusively
_EXCLUSIVE: set[str] = set()
#: pid digits (pid_max is at most 2**22) + random part + the dots and suffix of a temporary name
_TEMP_OVERHEAD = len(".") + len(".") + 7 + len("-") + 8 + len(".tmp")


def _name_max(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def _temp_pattern(name: str) -> re.Pattern[str]:
    return re.compile(rf"^\.{re.escape(name)}\.(?:(\d+)-)?[A-Za-z0-9_]+\.tmp$")


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name one file (through links, `..` or a second hard link); False on errors."""
    a, b = Path(a).expanduser(), Path(b).expanduser()
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop (Python < 3.13)
        return False


def _existing_kind(path: Path) -> os.stat_result | None:
    """`lstat` of an output (None if absent): the name itself, never what a link points to."""
    try:
        return path.lstat()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise BadInputError(f"cannot use output {path}: {error.strerror}") from None


def _refuse_non_regular(path: Path, info: os.stat_result) -> None:
    """Outputs are regular files: a folder, link, device, FIFO or socket is refused, even with force."""
    if stat.S_ISLNK(info.st_mode):
        raise BadInputError(f"output {path} is a symbolic link; name the file itself "
                            "(ttsnn replaces the name, it does not write through links)")
    if stat.S_ISDIR(info.st_mode):
        raise BadInputError(f"output {path} is a folder; give a file name")
    if not stat.S_ISREG(info.st_mode):
        raise BadInputError(f"output {path} exists and is not a regular file (a device, FIFO or socket); refusing to replace it")


def check_output_path(output: str | Path, inputs: Iterable[str | Path | None] = (), force: bool = False,
                      replace_input: bool | None = None) -> Path:
    """Validate an output path before any work is done (fail fast, lose nothing); see the module doc.

    `replace_input` (default: `force`) lets `--force` name an input on purpose (compress a bundle in
    place); outputs of another kind than their input (a plot of a model) pass False.
    """
    replace_input = force if replace_input is None else replace_input
    path = Path(output).expanduser()
    if not path.name or path.name in (".", ".."):
        raise BadInputError(f"output {path} names a folder; give a file name")
    info = _existing_kind(path)
    if info is not None:
        _refuse_non_regular(path, info)
    parent = path.parent
    if not parent.is_dir():
        raise BadInputError(f"output folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise BadInputError(f"output folder {parent} is not writable")
    limit = _name_max(parent)
    if len(path.name.encode()) + _TEMP_OVERHEAD > limit:
        raise BadInputError(f"output name {path.name[:40]}... is too long: {len(path.name.encode())} bytes, "
                            f"at most {limit - _TEMP_OVERHEAD} here (the temporary name needs {_TEMP_OVERHEAD} more)")
    for candidate in inputs:
        if candidate is not None and same_file(candidate, path) and not replace_input:
            hint = "choose another name" if force else "choose another name or pass --force"
            raise BadInputError(f"output {path} is the input file; {hint}")
    if info is not None and not force:
        raise BadInputError(f"output {path} exists; pass --force to overwrite it")
    key = str(path.resolve())
    if force:
        _EXCLUSIVE.discard(key)
    else:
        _EXCLUSIVE.add(key)
    return path


def check_output_folder(folder: str | Path, force: bool = False) -> Path:
    """A run folder: absent (created later), or an empty folder, or any folder with `force`.
    Never a file, device or FIFO; its parent must exist and be writable."""
    path = Path(folder).expanduser()
    if path.exists() or path.is_symlink():
        if not path.is_dir():
            raise BadInputError(f"output folder {path} exists and is not a folder")
        if not force and any(path.iterdir()):
            raise BadInputError(f"output folder {path} is not empty; pass --force to overwrite, or choose --out")
        if not os.access(path, os.W_OK | os.X_OK):
            raise BadInputError(f"output folder {path} is not writable")
        return path
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise BadInputError(f"cannot create output folder {path}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise BadInputError(f"cannot create output folder {path}: {parent} is not writable")
    return path


def make_output_folder(folder: str | Path) -> Path:
    """Create a checked run folder (and its parents); one-line errors."""
    path = Path(folder).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise BadInputError(f"cannot create output folder {path}: {error.strerror}") from None
    return path


def remove_stale_temporaries(path: Path) -> None:
    """Remove `.NAME.*.tmp` files beside `path` left by a process that no longer runs (kill -9)."""
    pattern = _temp_pattern(path.name)
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return
    for entry in entries:
        match = pattern.match(entry.name)
        if not match:
            continue
        pid = int(match.group(1)) if match.group(1) else None
        if pid is not None and pid != os.getpid() and _alive(pid):
            continue  # a concurrent writer's live file
        if pid == os.getpid():
            continue
        with contextlib.suppress(OSError):
            os.unlink(entry.path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _write_error(path: Path, error: OSError) -> BadInputError:
    reason = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
              errno.EROFS: "the folder is read-only", errno.EACCES: "permission denied"}.get(error.errno or 0)
    return BadInputError(f"cannot write {path}: {reason or error.strerror or error}; nothing was written there")


def _publish(temporary: Path, path: Path, exclusive: bool) -> None:
    try:
        info = path.lstat()
    except FileNotFoundError:
        info = None
    if info is not None and not stat.S_ISREG(info.st_mode):  # it became a link, folder, FIFO... after the check
        kind = "a symbolic link" if stat.S_ISLNK(info.st_mode) else "no longer a regular file"
        raise BadInputError(f"output {path} is {kind}; refusing to replace it (name the file itself)")
    if not exclusive:
        os.replace(temporary, path)
        return
    try:
        os.link(temporary, path)
    except FileExistsError:
        raise BadInputError(f"output {path} appeared while ttsnn was writing it (another run?); "
                            "it was not overwritten: pass --force to replace it") from None
    except OSError as error:
        if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.EXDEV):
            raise
        # no hard links here (some network or FAT filesystems): claim the name, then replace it
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except FileExistsError:
            raise BadInputError(f"output {path} appeared while ttsnn was writing it (another run?); "
                                "it was not overwritten: pass --force to replace it") from None
        os.replace(temporary, path)
        return
    os.unlink(temporary)


@contextlib.contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """A temporary path beside `path` for a writer that wants a file name (h5py, nir.write...);
    when the block succeeds it is fsynced, given the permissions a plain `open(path, "w")` would
    give, and published at `path` (see the module doc); on any failure or interruption it is removed."""
    path = Path(path)
    remove_stale_temporaries(path)
    key = str(path.resolve())
    temporary = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        os.close(os.open(temporary, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except OSError as error:
        raise _write_error(path, error) from None
    try:
        yield temporary
        with open(temporary, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o666 & ~_umask())
        _publish(temporary, path, key in _EXCLUSIVE)
        _EXCLUSIVE.discard(key)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise _write_error(path, error) from None
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


def json_ready(value: Any) -> Any:
    """`value` as plain JSON data: non-finite floats become null (standard JSON has no NaN or
    Infinity), paths strings, tuples lists, numpy/torch scalars Python numbers."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [json_ready(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "item") and callable(value.item):
        try:
            return json_ready(value.item())
        except (TypeError, ValueError, RuntimeError):
            pass
    if hasattr(value, "tolist") and callable(value.tolist):
        return json_ready(value.tolist())
    return str(value)


def standard_json(document: Any, indent: int | None = None) -> str:
    """One standard JSON text (never NaN or Infinity; see `json_ready`)."""
    return json.dumps(json_ready(document), indent=indent, allow_nan=False)
