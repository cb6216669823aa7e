"""Loading a model across the trust boundary: the one home of "a file is data" (DESIGN.md, Trust).

    read.py    file -> object: weights-only unpickling, a pickle with code only with --trust-pickle
    schema.py  bundle dict -> validated record (pydantic, strict): a wrong field is exit 3 naming it
    trust.py   architecture spec -> nn.Module: zoo names, or module:factory specs the user trusts
    guard.py   user code (factories, modules, trusted pickles) failing in any way is bad input

Accepted inputs: a NIR graph (`.nir` or any HDF5 file, read as data by `nir_graph`); a ttsnn
bundle; a state_dict (bare, or under `state_dict` / `model_state_dict` / `model`) with an
architecture spec; a pickled whole module only with `trust_pickle=True`. A
bundle's recorded `module:factory` is imported only when trusted (`trust.is_trusted`): the same spec
given as `arch`, `trust_arch`, a `trusting` block or TTSNN_TRUSTED_ARCH.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ttsnn_cli.errors import BadInputError, first_line
from ttsnn_cli.kinds import tt_layer_from_config
from ttsnn_cli.storage.bundle import ModelIO, file_checksum, get_meta, is_bundle, state_checksum
from ttsnn_cli.storage.nir_graph import ARCH as NIR_ARCH
from ttsnn_cli.storage.nir_graph import is_nir_file, load_nir
from ttsnn_cli.storage.read import read_checkpoint
from ttsnn_cli.storage.schema import BundleRecord, validate_bundle
from ttsnn_cli.storage.trust import (
    TRUST_ENV,
    build_arch,
    check_spec,
    is_trusted,
    parse_arch_kwargs,
    trusting,
    untrusted_message,
    zoo_io,
)

__all__ = [
    "TRUST_ENV", "apply_tt_config", "build_arch", "extract_state_dict", "is_trusted", "load_checkpoint",
    "load_model", "load_weights", "parse_arch_kwargs", "read_checkpoint", "trusting", "validate_bundle", "zoo_io",
]

_STATE_KEYS = ("state_dict", "model_state_dict", "model")


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


def _shape_problems(own: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]) -> list[str]:
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
    return problems


def load_weights(model: nn.Module, state: Mapping[str, torch.Tensor], arch: str) -> None:
    """load_state_dict(strict) with a readable summary of what does not fit, instead of torch's wall."""
    own = model.state_dict()
    problems = _shape_problems(own, state)
    if problems:
        raise BadInputError(f"checkpoint does not fit arch {arch}: " + ", ".join(problems))
    bad = [k for k, v in state.items() if v.layout != torch.strided or v.is_complex() != own[k].is_complex()]
    if bad:
        raise BadInputError(f"checkpoint does not fit arch {arch}: {bad[0]} is not a dense tensor of the right kind")
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, ValueError) as error:
        raise BadInputError(f"checkpoint does not fit arch {arch}: {first_line(error)}") from None


def _tt_layer(config: Mapping[str, Any]) -> nn.Module:
    """An empty TT layer of the recorded type (the layer registry owns the config format)."""
    return tt_layer_from_config(dict(config))


def apply_tt_config(model: nn.Module, tt: Mapping[str, Any], state: Mapping[str, torch.Tensor] | None = None) -> None:
    """Swap in empty TT layers at the recorded names, ready for the bundle's state_dict.

    Each layer is first built on the meta device and checked against `state`, so a crafted config
    (huge ranks or channels) is refused before it allocates anything.
    """
    for name, config in tt["layers"].items():
        try:
            model.get_submodule(name)
        except AttributeError:
            raise BadInputError(f"bundle names TT layer {name!r}, which the architecture does not have") from None
        try:
            with torch.device("meta"):
                probe = _tt_layer(config)
        except BadInputError:
            raise
        except Exception as error:  # noqa: BLE001 - a crafted config is bad input
            raise BadInputError(f"bundle field tt.layers.{name} is not a valid TT layer config: "
                                f"{type(error).__name__}: {first_line(error)}") from None
        for key, tensor in probe.state_dict().items():
            full = f"{name}.{key}"
            if state is not None and (full not in state or tuple(state[full].shape) != tuple(tensor.shape)):
                found = list(state[full].shape) if full in state else "nothing"
                raise BadInputError(f"bundle field tt.layers.{name} does not fit its weights "
                                    f"({full}: config {list(tensor.shape)}, weights {found})")
        model.set_submodule(name, _tt_layer(config))


def load_checkpoint(
    path: str | Path,
    arch: str | None = None,
    arch_kwargs: dict[str, Any] | None = None,
    trust_pickle: bool = False,
    trust_arch: bool = False,
) -> nn.Module:
    """The model in `path`, with `ttsnn_meta` (arch, io, history, source) attached.

    A bundle's own arch and kwargs win unless `arch` names a different architecture (a deliberate
    override); for a state_dict `arch` is required. `arch` is named by the caller, hence trusted; a
    bundle's recorded `module:factory` only under `trust_arch` or `trust.is_trusted`.
    """
    if is_nir_file(path):  # a NIR graph is data naming its own layers: no code, no --arch
        if arch is not None and arch != NIR_ARCH:
            raise BadInputError(f"{path} is a NIR graph: it names its own layers, so --arch {arch} does not apply; drop it")
        return load_nir(path)
    obj = read_checkpoint(path, trust_pickle)
    if isinstance(obj, nn.Module):
        model = obj
        get_meta(model).arch = arch
        get_meta(model).arch_kwargs = dict(arch_kwargs or {})
        return model
    if is_bundle(obj):
        record = validate_bundle(obj, str(path))
        with trusting(trust_arch):
            return _load_bundle(record, path, arch, arch_kwargs)
    if arch is None:
        raise BadInputError(f"{path} is a plain state_dict: name its architecture with --arch zoo:NAME or --arch MODULE:FACTORY")
    check_spec(arch)
    state = extract_state_dict(obj, path)
    model = build_arch(arch, arch_kwargs)
    load_weights(model, state, arch)
    meta = get_meta(model)
    meta.arch, meta.arch_kwargs = arch, dict(arch_kwargs or {})
    meta.source = {"path": str(Path(path).resolve()), "sha256": file_checksum(path)}
    return model


def _load_bundle(record: BundleRecord, path: str | Path, arch: str | None, arch_kwargs: dict[str, Any] | None) -> nn.Module:
    recorded = record.arch.spec
    override = arch is not None and arch != recorded
    spec = arch if override else recorded
    check_spec(spec)
    if not is_trusted(spec, named=[arch]):
        raise BadInputError(untrusted_message(spec, f"bundle {path}"))
    kwargs = dict(arch_kwargs or {}) if override else dict(record.arch.kwargs)
    state = record.state_dict
    try:
        checksum = state_checksum(state)
    except Exception as error:  # noqa: BLE001 - an exotic tensor (sparse, quantized...) in a crafted file
        raise BadInputError(f"bundle {path} has a bad field: state_dict: {type(error).__name__}: {first_line(error)}") from None
    if checksum != record.state_sha256:
        raise BadInputError(f"bundle {path} is corrupt: its weights do not match their checksum")
    model = build_arch(spec, kwargs)
    if record.tt:
        apply_tt_config(model, record.tt.model_dump(), state)
    load_weights(model, state, spec)
    meta = get_meta(model)
    meta.arch, meta.arch_kwargs = spec, kwargs
    meta.io = record.io.model_io() if record.io else ModelIO()
    meta.history = list(record.history)
    meta.source = record.source.model_dump() if record.source else None
    return model


def load_model(path: str | Path, arch: str | None = None, arch_kwargs: dict[str, Any] | None = None,
               trust_arch: bool = False) -> nn.Module:
    """Public API: the exact module in `path` (arch + TT config + weights), in eval mode.

    A bundle recording a `module:factory` architecture loads when that spec is passed as `arch`,
    with `trust_arch=True`, or when TTSNN_TRUSTED_ARCH lists it; zoo architectures always load.
    """
    return load_checkpoint(path, arch, arch_kwargs, trust_arch=trust_arch).eval()
