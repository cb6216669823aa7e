"""How much memory this machine gives ttsnn, and refusing work that cannot fit in it.

A bundle, a recipe or an option can ask for sizes (timesteps, input shapes, event counts) whose
tensors would not fit in any machine. Allocating them first and failing after is the wrong order: the
allocation itself swaps the machine to a halt, or the kernel kills the process (no message at all),
or torch raises deep inside a layer (an internal error). So every place that turns such sizes into
tensors estimates the bytes first and calls `check_fits`, which refuses with one line.

The bound is what the machine *has*, not what is free this instant (a busy machine would refuse valid
work at random): the physical memory, lowered by a cgroup (container) limit or an address-space
rlimit when one is set. `TTSNN_MEMORY_LIMIT_MB` lowers it further, for shared machines and tests.
"""

from __future__ import annotations

import os
import resource
from pathlib import Path

from ttsnn_cli.errors import BadInputError

LIMIT_ENV = "TTSNN_MEMORY_LIMIT_MB"
#: cgroup files that hold a container's memory limit (v2, then v1); "max" or a huge number: none
_CGROUP_LIMITS = (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"))


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not every platform names these
        return None


def _cgroup_limit() -> int | None:
    for path in _CGROUP_LIMITS:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            return int(text)
    return None


def _rlimit() -> int | None:
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    except (ValueError, OSError):
        return None
    return None if soft == resource.RLIM_INFINITY else soft


def megabytes_from_env(name: str, minimum: int = 0) -> int | None:
    """The byte count an environment variable gives in whole megabytes (None when unset); anything
    else, or fewer than `minimum`, is bad input naming the variable."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise BadInputError(f"{name} must be a whole number of megabytes, got {raw[:40]!r}") from None
    if value < minimum:
        raise BadInputError(f"{name} must be at least {minimum} (megabytes), got {value}")
    return value << 20


def _env_limit() -> int | None:
    return megabytes_from_env(LIMIT_ENV, minimum=1)


def machine_memory() -> int:
    """Bytes this process may use at most: physical memory, lowered by a cgroup limit, an
    address-space rlimit and `TTSNN_MEMORY_LIMIT_MB` (each when set). 16 GiB when nothing is known."""
    known = [v for v in (_physical_memory(), _cgroup_limit(), _rlimit(), _env_limit()) if v]
    return min(known) if known else 16 << 30


def human_bytes(count: float) -> str:
    """`count` bytes for a message: 3.2 GB, 640 MB, 12 KB (decimal units, two significant figures)."""
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if count >= size:
            value = count / size
            return f"{value:.1f} {unit}" if value < 10 else f"{value:,.0f} {unit}"
    return f"{int(count)} bytes"


def check_fits(needed: float, what: str, advice: str = "") -> None:
    """Refuse (BadInputError, one line) work whose estimated `needed` bytes exceed `machine_memory()`.

    `what` says which work and which sizes ("report at T=1000000 on input [1, 16, 16]"); `advice`
    what to change instead."""
    have = machine_memory()
    if needed > have:
        tail = f"; {advice}" if advice else ""
        raise BadInputError(f"{what} would need about {human_bytes(needed)}, more than the {human_bytes(have)} "
                            f"of memory this machine has{tail}")
