"""ttsnn: tensor-train compression of spiking neural networks (TT-SNN, DATE 2024).

Public API (stable): `load_model`, `save_model`, `compress_model` (+ `CompressConfig`, the TT layers
`TTConv2d`, `TTConv1d`, `TTLinear`).
Importing ttsnn changes no global state (tensorly's backend is switched only inside
`tl.backend_context` while decomposing).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from ttsnn_cli._version import __version__
from ttsnn_cli.bundle import ModelIO, get_meta, save_bundle
from ttsnn_cli.checkpoint import load_model
from ttsnn_cli.decompose import CompressConfig, compress_model
from ttsnn_cli.fileio import check_output_path
from ttsnn_cli.layers import TTConv2d
from ttsnn_cli.layers_conv1d import TTConv1d
from ttsnn_cli.state import reset_states
from ttsnn_cli.tt_linear import TTLinear

__all__ = ["__version__", "load_model", "save_model", "compress_model", "CompressConfig", "TTConv2d", "TTConv1d", "TTLinear",
           "reset_states"]


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
    meta = get_meta(model)
    if arch is not None:
        meta.arch, meta.arch_kwargs = arch, dict(arch_kwargs or {})
    if io is not None:
        meta.io = meta.io.merged(io)
    return save_bundle(check_output_path(path, force=force), model, meta)
