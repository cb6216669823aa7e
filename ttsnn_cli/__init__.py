"""ttsnn: tensor-train compression of spiking neural networks (TT-SNN, DATE 2024).

Public API (stable): everything a user needs to write their own training loop around a compressed
model: `load_model`, `save_model` (+ `ModelIO`, what a bundle records of the model's input),
`compress_model` (+ `CompressConfig`), the TT layers `TTConv2d`, `TTConv1d`, `TTLinear`, and time:
`reset_states` (before each sequence), `run_timesteps` (a model over [T, B, ...] whatever its
execution style), `encode` (a static batch as a [T, B, ...] sequence).
Importing ttsnn changes no global state (tensorly's backend is switched only inside
`tl.backend_context` while decomposing), and imports nothing heavy: the names below load their
modules on first use, so the `ttsnn` command can answer Ctrl-C cleanly from its first instant.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ttsnn_cli._version import __version__

if TYPE_CHECKING:
    from torch import nn

    from ttsnn_cli.compress.decompose import CompressConfig, compress_model
    from ttsnn_cli.data import encode
    from ttsnn_cli.layers.conv1d import TTConv1d
    from ttsnn_cli.layers.conv2d import TTConv2d
    from ttsnn_cli.layers.linear import TTLinear
    from ttsnn_cli.spiking.runner import run_timesteps
    from ttsnn_cli.spiking.state import reset_states
    from ttsnn_cli.storage.bundle import ModelIO
    from ttsnn_cli.storage.load import load_model

__all__ = ["__version__", "load_model", "save_model", "ModelIO", "compress_model", "CompressConfig", "TTConv2d",
           "TTConv1d", "TTLinear", "reset_states", "run_timesteps", "encode"]

_LAZY = {
    "load_model": "ttsnn_cli.storage.load",
    "compress_model": "ttsnn_cli.compress.decompose",
    "CompressConfig": "ttsnn_cli.compress.decompose",
    "TTConv2d": "ttsnn_cli.layers.conv2d",
    "TTConv1d": "ttsnn_cli.layers.conv1d",
    "TTLinear": "ttsnn_cli.layers.linear",
    "reset_states": "ttsnn_cli.spiking.state",
    "run_timesteps": "ttsnn_cli.spiking.runner",
    "encode": "ttsnn_cli.data",
    "ModelIO": "ttsnn_cli.storage.bundle",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ttsnn_cli' has no attribute {name!r}")


def save_model(
    model: nn.Module,
    path: str | Path,
    arch: str | None = None,
    arch_kwargs: dict[str, Any] | None = None,
    io: ModelIO | None = None,
    force: bool = False,
) -> Path:
    """Write `model` as a ttsnn bundle (atomically). `arch` is needed unless the model came from
    `load_model` (which records it)."""
    from ttsnn_cli.storage.bundle import get_meta, save_bundle
    from ttsnn_cli.storage.outputs import check_output_path

    meta = get_meta(model)
    if arch is not None:
        meta.arch, meta.arch_kwargs = arch, dict(arch_kwargs or {})
    if io is not None:
        meta.io = meta.io.merged(io)
    return save_bundle(check_output_path(path, force=force), model, meta)
