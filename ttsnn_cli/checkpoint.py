"""Load any accepted checkpoint into an nn.Module, safely (DESIGN.md, "Checkpoints").

Accepted: a ttsnn bundle; a state_dict (bare, or under `state_dict` / `model_state_dict` /
`model`) with an architecture spec; a pickled whole module only with `trust_pickle=True`.
Everything is read with `torch.load(weights_only=True)` first; a file that needs more than that is
refused unless the user says they trust it, because unpickling runs arbitrary code.
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ttsnn_cli.arch import build_arch
from ttsnn_cli.bundle import FORMAT_VERSION, ModelIO, ModelMeta, file_checksum, get_meta, is_bundle, state_checksum
from ttsnn_cli.errors import BadInputError
from ttsnn_cli.tt_layers import tt_layer_from_config

_STATE_KEYS = ("state_dict", "model_state_dict", "model")


def read_checkpoint(path: str | Path, trust_pickle: bool = False) -> Any:
    """The raw object in a checkpoint file, with one-line errors for every way a file can be bad."""
    path = Path(path).expanduser()
    if not path.exists():
        raise BadInputError(f"checkpoint {path} does not exist")
    if path.is_dir():
        raise BadInputError(f"checkpoint {path} is a folder, not a file")
    if path.stat().st_size == 0:
        raise BadInputError(f"checkpoint {path} is empty")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "Weights only load failed" not in str(error):
            raise BadInputError(f"{path} is not a PyTorch checkpoint ({_first_line(error)})") from None
        if not trust_pickle:
            raise BadInputError(
                f"{path} holds pickled objects beyond tensors (a whole module, or code); refusing to unpickle it. "
                "Save a state_dict instead, or pass --trust-pickle if you trust the file's author"
            ) from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, KeyError, AttributeError) as error:
        raise BadInputError(f"{path} is not a readable PyTorch checkpoint (truncated or corrupt?): {_first_line(error)}") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # noqa: BLE001 - whatever a trusted pickle raises is bad input
        raise BadInputError(f"unpickling {path} failed: {type(error).__name__}: {_first_line(error)}") from None


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:200]


def extract_state_dict(obj: Any, path: str | Path = "checkpoint") -> Mapping[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        for key in _STATE_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
        if obj and all(isinstance(k, str) for k in obj) and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
    raise BadInputError(
        f"{path} holds no state_dict (expected a mapping of names to tensors, or one under "
        f"{', '.join(_STATE_KEYS)}); got {type(obj).__name__}"
    )


def load_weights(model: nn.Module, state: Mapping[str, torch.Tensor], arch: str) -> None:
    """load_state_dict(strict) with a readable summary of what does not fit, instead of torch's wall."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: checkpoint {list(state[k].shape)} vs model {list(own[k].shape)}"
              for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s) ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s) ({', '.join(unexpected[:3])}{', ...' if len(unexpected) > 3 else ''})")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatch(es) ({'; '.join(shapes[:2])}{'; ...' if len(shapes) > 2 else ''})")
    if problems:
        raise BadInputError(f"checkpoint does not fit arch {arch}: " + ", ".join(problems))
    model.load_state_dict(state, strict=True)


def apply_tt_config(model: nn.Module, tt: Mapping[str, Any]) -> None:
    """Swap in empty TT layers at the recorded names, ready for the bundle's state_dict."""
    for name, config in tt["layers"].items():
        try:
            model.get_submodule(name)
        except AttributeError:
            raise BadInputError(f"bundle names TT layer {name!r}, which the architecture does not have") from None
        try:
            layer = tt_layer_from_config(config)
        except (KeyError, TypeError, ValueError) as error:
            raise BadInputError(f"bundle's TT layer {name!r} has an unusable config: {error}") from None
        model.set_submodule(name, layer)


def load_checkpoint(
    path: str | Path,
    arch: str | None = None,
    arch_kwargs: dict[str, Any] | None = None,
    trust_pickle: bool = False,
) -> nn.Module:
    """The model in `path`, with `ttsnn_meta` (arch, io, history, source) attached.

    A bundle's own arch and kwargs win unless `arch` names a different architecture (a deliberate
    override); for a state_dict `arch` is required.
    """
    obj = read_checkpoint(path, trust_pickle)
    if isinstance(obj, nn.Module):
        model = obj
        get_meta(model).arch = arch
        get_meta(model).arch_kwargs = dict(arch_kwargs or {})
        return model
    if is_bundle(obj):
        return _load_bundle(obj, path, arch, arch_kwargs)
    if arch is None:
        raise BadInputError(f"{path} is a plain state_dict: name its architecture with --arch zoo:NAME or --arch MODULE:FACTORY")
    state = extract_state_dict(obj, path)
    model = build_arch(arch, arch_kwargs)
    load_weights(model, state, arch)
    meta = get_meta(model)
    meta.arch, meta.arch_kwargs = arch, dict(arch_kwargs or {})
    meta.source = {"path": str(Path(path).resolve()), "sha256": file_checksum(path)}
    return model


def _load_bundle(obj: Mapping[str, Any], path: str | Path, arch: str | None, arch_kwargs: dict[str, Any] | None) -> nn.Module:
    if obj.get("format_version", 0) > FORMAT_VERSION:
        raise BadInputError(f"{path} was written by a newer ttsnn (bundle format {obj['format_version']}); upgrade ttsnn")
    try:
        recorded = obj["arch"]["spec"]
        override = arch is not None and arch != recorded
        spec = arch if override else recorded
        kwargs = dict(arch_kwargs or {}) if override else dict(obj["arch"]["kwargs"])
        state = obj["state_dict"]
        if state_checksum(state) != obj["state_sha256"]:
            raise BadInputError(f"bundle {path} is corrupt: its weights do not match their checksum")
    except (KeyError, TypeError) as error:
        raise BadInputError(f"bundle {path} is incomplete (missing {error})") from None
    model = build_arch(spec, kwargs)
    if obj.get("tt"):
        apply_tt_config(model, obj["tt"])
    load_weights(model, state, spec)
    meta = get_meta(model)
    meta.arch, meta.arch_kwargs = spec, kwargs
    meta.io = ModelIO.from_dict(obj.get("io"))
    meta.history = list(obj.get("history") or [])
    meta.source = obj.get("source")
    return model


def load_model(path: str | Path, arch: str | None = None, arch_kwargs: dict[str, Any] | None = None) -> nn.Module:
    """Public API: the exact module in `path` (arch + TT config + weights), in eval mode."""
    return load_checkpoint(path, arch, arch_kwargs).eval()
