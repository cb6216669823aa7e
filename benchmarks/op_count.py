"""The ATen ops that do work in a call, by name: the host's share of a training step on any device.

On a GPU each such op is at least one kernel launch, and a step that launches thousands of small
kernels is bound by the host; on the CPU this count is the one way to see that share without a GPU
(torch.profiler counts the CUDA kernels themselves where there is one). Views and allocations are
left out: they launch nothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from torch.utils._python_dispatch import TorchDispatchMode

NO_WORK = frozenset({
    "view", "_unsafe_view", "permute", "unsqueeze", "squeeze", "t", "transpose", "expand", "select", "slice",
    "detach", "alias", "as_strided", "unflatten", "flatten", "reshape", "_reshape_alias", "lift_fresh",
    "empty", "empty_like", "new_empty", "new_empty_strided", "empty_strided",
    "squeeze_", "unsqueeze_", "t_", "transpose_", "as_strided_", "detach_",
})


class _Seen(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name not in NO_WORK:
            self.ops[name] += 1
        return func(*args, **(kwargs or {}))


def work_ops(call: Callable[[], object]) -> Counter[str]:
    """Each working ATen op `call` dispatches, with how many times (eager code only: a compiled
    graph runs its own kernels, not these ops)."""
    with _Seen() as seen:
        call()
    return seen.ops
