"""Folders only the current user can touch, created by ttsnn itself.

Why: `TMPDIR` may point into a folder another user controls (a shared scratch space, a careless
`TMPDIR=/shared/tmp`). A build folder there can be renamed away and replaced between the compiler's
write and the loader's read (a foreign shared library then runs in our process), and a predictable
log folder there can hold a planted symlink that turns our write into an overwrite of the file it
names. So a base folder is used only when nobody but its owner (us or root) can change its entries,
and every file is opened without following links.

A base is *safe* when the base and each folder above it (after resolving links once) is owned by
root or by us and is not writable by others, unless it is sticky (like /tmp: others may create
entries there but not rename or remove ours).
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _owned_and_guarded(info: os.stat_result) -> bool:
    if info.st_uid not in (0, os.geteuid()):
        return False
    if not stat.S_ISDIR(info.st_mode):
        return False
    others_write = info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    return not others_write or bool(info.st_mode & stat.S_ISVTX)


def is_safe_base(folder: str | os.PathLike[str]) -> bool:
    """True when nobody but its owner (us or root) can rename or replace entries of `folder` or of
    any folder above it (see the module doc)."""
    try:
        path = Path(os.path.realpath(folder))
        for part in (path, *path.parents):
            if not _owned_and_guarded(os.lstat(part)):
                return False
    except OSError:
        return False
    return True


def _bases() -> Iterator[Path]:
    """Where private folders may go, most conventional first: the temporary folder, then the
    user's cache folder (created, 0700, when absent)."""
    yield Path(os.path.realpath(tempfile.gettempdir()))
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    yield Path(os.path.realpath(cache))


def safe_bases() -> Iterator[Path]:
    """The safe base folders (see `_bases`), in order; a missing cache folder is created 0700."""
    for base in _bases():
        if not base.exists():
            try:
                base.mkdir(mode=0o700, parents=True)
            except OSError:
                continue
        if is_safe_base(base):
            yield base


def is_private(folder: str | os.PathLike[str]) -> bool:
    """True when `folder` is a real folder (not a link) of ours that nobody else can read or write."""
    try:
        info = os.lstat(folder)
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid() and not info.st_mode & 0o077


def make_private_temporary(prefix: str) -> Path:
    """A new private folder (0700, random name) in a safe base, for work that is removed after it
    is done (the neuron kernel's build). OSError when the machine offers no safe base."""
    for base in safe_bases():
        return Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    raise OSError(f"no temporary folder only this user can change (checked {', '.join(map(str, _bases()))})")


def private_folder(name: str) -> Path:
    """The per-user folder `name-<uid>` in the first safe base where it is, or can be made, a
    private folder of ours (created 0700; one that is a planted link or was made by someone else is
    passed over, never used). OSError when there is none."""
    for base in safe_bases():
        folder = base / f"{name}-{os.geteuid()}"
        try:
            os.mkdir(folder, 0o700)
        except FileExistsError:
            pass
        except OSError:
            continue
        if is_private(folder):
            return folder
    raise OSError(f"no private folder for {name} (checked {', '.join(map(str, _bases()))})")


def write_private_file(folder: Path, name: str, text: str) -> Path:
    """Write a new file `name` in `folder` (readable by us only), never following a link and never
    replacing anything already there."""
    path = folder / name
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    descriptor = os.open(path, flags, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)
    return path
