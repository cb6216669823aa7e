"""Whether anything watches a module run.

The training fast paths (the rank-bottleneck BatchNorm, sums done in place, the stem run once for
identical frames) stand in for plain module calls or reuse a module's output buffer. Counting and
profiling hooks must see the plain calls, and a hook may keep the output it was given, so those
paths step aside whenever a hook is registered on the modules involved or globally.
"""

from __future__ import annotations

from torch import nn


def has_hooks(*modules: nn.Module) -> bool:
    """True when anything watches these modules run (counting, profiling): they must then run."""
    if nn.modules.module._global_forward_hooks or nn.modules.module._global_forward_pre_hooks:
        return True
    return any(m._forward_hooks or m._forward_pre_hooks for m in modules)
