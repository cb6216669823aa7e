"""ttsnn: tensor-train compression of spiking neural networks (TT-SNN, DATE 2024).

Public API (stable): everything a user needs to write their own training loop around a compressed
model: `load_model`, `save_model` (+ `ModelIO`, what a bundle records of the model's input),
`compress_model` (+ `CompressConfig`), the TT layers `TTConv2d`, `TTConv1d`, `TTLinear`, and time:
`reset_states` (before each sequence), `run_timesteps` (a model over [T, B, ...] whatever its
execution style), `encode` (a static batch as a [T, B, ...] sequence).
The whole pipeline as calls (`ttsnn_cli.api`, docs/python-api.md): `train`, `finetune`, `compress`,
`report`, `export`, `sweep`, each taking a model (module or path) and the CLI's options as keyword
arguments and returning the document its command's `--json` prints (the model first, for the stages
that make one); `gates_failed` reads a report's failed gates.
Importing ttsnn changes no global state (tensorly's backend is switched only inside
`tl.backend_context` while decomposing), and imports nothing heavy: the names below load their
modules on first use, so the `ttsnn` command can answer Ctrl-C cleanly from its first instant.
"""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ttsnn_cli._version import __version__

if TYPE_CHECKING:
    from torch import nn

    from ttsnn_cli.api import compress, export, finetune, gates_failed, report, sweep, train
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
           "TTConv1d", "TTLinear", "reset_states", "run_timesteps", "encode",
           "train", "finetune", "compress", "report", "export", "sweep", "gates_failed"]

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
    **{name: "ttsnn_cli.api" for name in ("finetune", "sweep", "gates_failed")},
}

#: API functions named as the subpackage that does the work (`ttsnn_cli.train` trains...)
_STAGES = ("train", "compress", "report", "export")


class _Stage:
    # `ttsnn_cli.train` is both the `train` function and the training subpackage: calling it runs
    # `ttsnn_cli.api.train`; its attributes are the subpackage's (`ttsnn_cli.train.engine`,
    # `import ttsnn_cli.train.job as job`, `monkeypatch.setattr("ttsnn_cli.train.engine.fit", ...)`
    # all still reach the module). Why: the API's names (`from ttsnn_cli import train`) are the names
    # of the subpackages, and Python would otherwise hand whoever imports the name the module, once
    # the subpackage is loaded. (Comments, not a docstring: `__doc__` is the function's.)

    def __init__(self, name: str) -> None:
        for attribute in ("_name", "__name__", "__qualname__"):
            object.__setattr__(self, attribute, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module("ttsnn_cli.api"), self._name)(*args, **kwargs)

    @property
    def __wrapped__(self) -> Any:  # inspect.signature, help() and notebooks' `train?` read the function
        return getattr(importlib.import_module("ttsnn_cli.api"), self._name)

    @property
    def __doc__(self) -> str | None:  # type: ignore[override]
        return self.__wrapped__.__doc__

    def __get__(self, instance: Any, owner: Any = None) -> Any:  # a routine to pydoc: help() shows the function
        return self

    def __getattr__(self, attribute: str) -> Any:
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        package = importlib.import_module(f"ttsnn_cli.{self._name}")
        try:
            return getattr(package, attribute)
        except AttributeError:
            try:
                return importlib.import_module(f"ttsnn_cli.{self._name}.{attribute}")
            except ModuleNotFoundError as error:
                if error.name != f"ttsnn_cli.{self._name}.{attribute}":
                    raise
                raise AttributeError(f"ttsnn_cli.{self._name} has no attribute {attribute!r}") from None

    def __dir__(self) -> list[str]:  # completion in a notebook lists the subpackage's names
        import pkgutil

        package = importlib.import_module(f"ttsnn_cli.{self._name}")
        modules = {info.name for info in pkgutil.iter_modules(package.__path__)}
        return sorted(set(dir(package)) | modules | {"__call__", "__doc__"})

    def __setattr__(self, attribute: str, value: Any) -> None:  # monkeypatching a module attribute
        setattr(importlib.import_module(f"ttsnn_cli.{self._name}"), attribute, value)

    def __delattr__(self, attribute: str) -> None:
        delattr(importlib.import_module(f"ttsnn_cli.{self._name}"), attribute)

    def __repr__(self) -> str:
        return f"<ttsnn_cli.{self._name}: the {self._name}() function and the ttsnn_cli.{self._name} package>"


class _Package(types.ModuleType):
    """The package module: importing a subpackage named like a stage function keeps the function
    (the import system would set the attribute to the module; `sys.modules` still holds it)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _STAGES and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


if not TYPE_CHECKING:
    train, compress, report, export = (_Stage(name) for name in _STAGES)
sys.modules[__name__].__class__ = _Package


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
