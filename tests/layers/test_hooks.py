"""`layers.hooks`: what tells the fast paths someone watches, and the hooks a counting run leaves behind (none)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ttsnn_cli.layers.hooks import has_hooks, watching


def test_watching_sees_the_calls_and_removes_its_hooks_however_the_block_ends() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU())
    seen: list[str] = []
    after = [(model[0], lambda module, args, out: seen.append("after"))]
    before = [(model[1], lambda module, args: seen.append("before"))]
    with watching(after, before):
        assert has_hooks(model[0]) and has_hooks(model[1])
        model(torch.randn(2, 3))
    assert seen == ["after", "before"]
    assert not has_hooks(*model)
    with pytest.raises(RuntimeError), watching(after, before):
        raise RuntimeError("a counting run that fails")
    assert not has_hooks(*model), "a failed run leaves no hook switching the fast paths off"


def test_a_hook_that_cannot_be_registered_leaves_none_of_the_others() -> None:
    model = nn.Linear(3, 4)
    with pytest.raises(AttributeError), watching([(model, lambda *a: None)], [(object(), lambda *a: None)]):  # type: ignore[list-item]
        pass
    assert not has_hooks(model)
