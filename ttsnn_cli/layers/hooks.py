"""Whether anything watches a module run, and watching modules run for a while.

The training fast paths (the rank-bottleneck BatchNorm, sums done in place, the stem run once for
identical frames) stand in for plain module calls or reuse a module's output buffer. Counting and
profiling hooks must see the plain calls, and a hook may keep the output it was given, so those
paths step aside whenever a hook is registered on the modules involved or globally.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from torch import nn

Hook = Callable[..., Any]


def has_hooks(*modules: nn.Module) -> bool:
    """True when anything watches these modules run (counting, profiling): they must then run."""
    if nn.modules.module._global_forward_hooks or nn.modules.module._global_forward_pre_hooks:
        return True
    return any(m._forward_hooks or m._forward_pre_hooks for m in modules)


@contextlib.contextmanager
def watching(after: Iterable[tuple[nn.Module, Hook]] = (), before: Iterable[tuple[nn.Module, Hook]] = ()
             ) -> Iterator[None]:
    """Forward hooks (`after`) and forward pre-hooks (`before`) on these modules for the block, and
    removed after it however it ends: a counting run must leave no hook behind, or the fast paths
    (`has_hooks`) would stay off for the rest of the process."""
    handles = [module.register_forward_hook(hook) for module, hook in after]
    try:
        handles += [module.register_forward_pre_hook(hook) for module, hook in before]
        yield
    finally:
        for handle in handles:
            handle.remove()
