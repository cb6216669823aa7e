"""The ttsnn bundle: one self-describing file holding a model and how to rebuild it.

A plain dict of strings, numbers, lists and tensors, so `torch.load(weights_only=True)` reads it:
  format, format_version, ttsnn_version
  arch: {spec, kwargs}            the dense architecture (zoo:NAME or module:factory) and its kwargs
  tt: null | {mode, layers: {module name: TT layer config() + its `type` (conv2d, conv1d, linear)}}
  io: {input_shape, timesteps, data, style, readout}   what the model eats (and how it runs), as far as known
  state_dict, state_sha256        weights, and a checksum that catches a corrupted file
  source: null | {path, sha256}   the checkpoint the bundle was made from
  history: [{stage, ...}]         what ttsnn did to it, oldest first
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ttsnn_cli._version import __version__
from ttsnn_cli.kinds import KINDS, is_tt_layer, tt_layer_config
from ttsnn_cli.storage.outputs import atomic_torch_save

FORMAT = "ttsnn.bundle"
FORMAT_VERSION = 1


@dataclass
class ModelIO:
    """What the model consumes: per-step input shape (C, H, W), timesteps T, and its data spec."""

    input_shape: tuple[int, ...] | None = None
    timesteps: int | None = None
    data: str | None = None
    style: str | None = None  # execution style asked with --style (runner.STYLES); None: detected
    readout: str | None = None  # --readout: which record of a tuple output is the network's output; None: the first

    def to_dict(self) -> dict[str, Any]:
        value = {
            "input_shape": list(self.input_shape) if self.input_shape else None,
            "timesteps": self.timesteps,
            "data": self.data,
        }
        if self.style:  # only when asked for: detected styles are not recorded
            value["style"] = self.style
        if self.readout:  # only when asked for: the first record (spikes) is the default
            value["readout"] = self.readout
        return value

    @classmethod
    def from_dict(cls, value: Mapping[str, Any] | None) -> ModelIO:
        value = value or {}
        shape = value.get("input_shape")
        return cls(tuple(int(s) for s in shape) if shape else None, value.get("timesteps"), value.get("data"),
                   value.get("style"), value.get("readout"))

    def merged(self, other: ModelIO) -> ModelIO:
        """`other`'s known fields over ours (command-line options over what a bundle carries)."""
        return ModelIO(
            other.input_shape or self.input_shape,
            other.timesteps or self.timesteps,
            other.data or self.data,
            other.style or self.style,
            other.readout or self.readout,
        )


@dataclass
class ModelMeta:
    """What ttsnn knows of a model beyond its weights; kept on the module as `ttsnn_meta`."""

    arch: str | None = None
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    io: ModelIO = field(default_factory=ModelIO)
    history: list[dict[str, Any]] = field(default_factory=list)
    source: dict[str, Any] | None = None


def get_meta(model: nn.Module) -> ModelMeta:
    meta = getattr(model, "ttsnn_meta", None)
    if not isinstance(meta, ModelMeta):
        meta = ModelMeta()
        model.ttsnn_meta = meta  # type: ignore[assignment]
    return meta


def tt_config(model: nn.Module) -> dict[str, Any] | None:
    """The TT layers of `model` by module name, or None for a dense model."""
    layers = {name: tt_layer_config(m) for name, m in model.named_modules() if is_tt_layer(m)}
    if not layers:
        return None
    # a TT-matrix Linear has no spatial cores and runs the same chain in every mode: the convs say
    modes = {cfg["mode"] for cfg in layers.values() if KINDS[cfg["type"]].mode_applies} or {"stt"}
    return {"mode": modes.pop() if len(modes) == 1 else "mixed", "layers": layers}


def check_storage_backed(name: str, tensor: torch.Tensor) -> None:
    """Refuse a tensor that claims more values than its storage holds (ValueError naming it).

    A stride-0 (`expand`ed) or otherwise overlapping view costs a few bytes in a file but its full
    size once made contiguous: a 22 KB bundle could claim a 3 GB weight and take that much memory in
    the checksum alone. ttsnn writes clones (never views), so a real bundle never holds one."""
    if tensor.layout != torch.strided:
        return  # sparse / quantized tensors fail their own checks later
    needed = tensor.numel() * tensor.element_size()
    held = tensor.untyped_storage().nbytes() - tensor.storage_offset() * tensor.element_size()
    if needed > held:
        raise ValueError(f"{name} claims {list(tensor.shape)} ({needed} bytes) over only {max(held, 0)} bytes of "
                         "storage (an expanded or overlapping view, which a bundle never holds)")


def state_checksum(state_dict: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over names, shapes, dtypes and values. Views over too little storage are refused first
    (`check_storage_backed`), so hashing never materialises more than the file holds."""
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        tensor = state_dict[key]
        digest.update(key.encode())
        if isinstance(tensor, torch.Tensor):
            check_storage_backed(key, tensor)
            digest.update(str(tuple(tensor.shape)).encode())
            digest.update(str(tensor.dtype).encode())
            digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def file_checksum(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def make_bundle(model: nn.Module, meta: ModelMeta | None = None) -> dict[str, Any]:
    """The bundle dict for `model` (weights on CPU), from its `ttsnn_meta` unless `meta` is given."""
    meta = meta or get_meta(model)
    if not meta.arch:
        raise ValueError("the model's architecture is unknown; pass arch= (zoo:NAME or module:factory)")
    state = OrderedDict((k, v.detach().cpu().clone()) for k, v in model.state_dict().items())
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "ttsnn_version": __version__,
        "arch": {"spec": meta.arch, "kwargs": dict(meta.arch_kwargs)},
        "tt": tt_config(model),
        "io": meta.io.to_dict(),
        "state_dict": state,
        "state_sha256": state_checksum(state),
        "source": meta.source,
        "history": list(meta.history),
    }


def save_bundle(path: str | Path, model: nn.Module, meta: ModelMeta | None = None) -> Path:
    """Write `model` as a bundle, atomically. Callers validate the path first (`check_output_path`)."""
    return atomic_torch_save(path, make_bundle(model, meta))


def is_bundle(obj: Any) -> bool:
    return isinstance(obj, Mapping) and obj.get("format") == FORMAT
