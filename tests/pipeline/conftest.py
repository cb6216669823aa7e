"""Shared by the sweep tests: a small dense digits bundle (untrained: a sweep's mechanics do not
depend on accuracy)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ttsnn_cli.storage.bundle import ModelIO, get_meta, save_bundle
from ttsnn_cli.zoo import zoo_entry


@pytest.fixture(scope="module")
def dense_bundle(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = zoo_entry("digits_csnn").factory(width=4)
    meta = get_meta(model)
    meta.arch, meta.arch_kwargs, meta.io = "zoo:digits_csnn", {"width": 4}, ModelIO((1, 16, 16), 2, "digits")
    path = tmp_path_factory.mktemp("dense") / "dense.tt"
    save_bundle(path, model, meta)
    return path
