"""How many CPU threads torch computes with (`--threads N`, a recipe's `threads`, `TrainConfig.threads`).

Why an option: torch's default is one OpenMP thread per core, per process. Several ttsnn processes on
one machine (a sweep by hand, CI jobs side by side) then run cores x processes threads, which spin,
preempt each other and finish later together than one after another (4 trainings on 2 cores: 2.2x).
`--threads 1` per process (or `OMP_NUM_THREADS=1`) avoids that; see docs/performance.md.

Two moments matter: the OpenMP pool sizes itself when torch first computes in parallel, so the console
script also exports `OMP_NUM_THREADS` before torch is imported (`early_threads`, from the command
line); and `torch.set_num_threads` changes the intra-op pool afterwards (`limited_threads`), which is
what the library and a recipe's `threads` use. The default (None) leaves torch's own choice untouched.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence

from ttsnn_cli.errors import BadInputError

MAX_THREADS = 1024


def check_threads(threads: int | None, option: str = "--threads") -> int | None:
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= MAX_THREADS:
        raise BadInputError(f"{option} must be a whole number in 1..{MAX_THREADS}, got {threads!r}")
    return threads


@contextlib.contextmanager
def limited_threads(threads: int | None) -> Iterator[None]:
    """torch computes with `threads` intra-op threads inside; the previous count is restored after."""
    if check_threads(threads) is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)  # type: ignore[arg-type]
    try:
        yield
    finally:
        torch.set_num_threads(before)


def early_threads(argv: Sequence[str]) -> None:
    """Export OMP_NUM_THREADS / MKL_NUM_THREADS for a `--threads N` (or `--threads=N`) in `argv`, before
    torch is imported, so the OpenMP pool starts at that size. Malformed values are left for the option
    parser to refuse; an environment variable the user set already wins over nothing, not over the flag."""
    value = None
    for index, arg in enumerate(argv):
        if arg == "--":
            break
        if arg == "--threads" and index + 1 < len(argv):
            value = argv[index + 1]
        elif arg.startswith("--threads="):
            value = arg.split("=", 1)[1]
    if value is not None and value.isdigit() and 1 <= int(value) <= MAX_THREADS:
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[name] = str(int(value))
