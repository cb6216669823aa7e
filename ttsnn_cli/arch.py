"""Turn an architecture spec into a dense nn.Module: `zoo:NAME` or an importable `module:factory`.

A checkpoint holds only weights (snntorch neurons cannot be pickled, ecosystem.md), so every load
needs the code that builds the network; this is the one place that finds and calls it.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any

from torch import nn

from ttsnn_cli.bundle import ModelIO
from ttsnn_cli.errors import BadInputError
from ttsnn_cli.zoo import zoo_entry


def parse_arch_kwargs(text: str | None) -> dict[str, Any]:
    """`--arch-kwargs` JSON -> dict, with a one-line error for anything else."""
    if text is None or text.strip() == "":
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise BadInputError(f"--arch-kwargs is not valid JSON ({error.msg} at position {error.pos}): {text!r}") from None
    if not isinstance(value, dict):
        raise BadInputError(f"--arch-kwargs must be a JSON object like '{{\"num_classes\": 10}}', got {text!r}")
    return value


def build_arch(spec: str, kwargs: dict[str, Any] | None = None) -> nn.Module:
    """Build the dense model named by `spec` with `kwargs`; errors name what was missing."""
    kwargs = dict(kwargs or {})
    if spec.startswith("zoo:"):
        try:
            factory = zoo_entry(spec[4:]).factory
        except KeyError as error:
            raise BadInputError(str(error.args[0])) from None
    else:
        factory = _import_factory(spec)
    try:
        model = factory(**kwargs)
    except TypeError as error:
        raise BadInputError(f"cannot build {spec} with kwargs {json.dumps(kwargs)}: {error}") from None
    if not isinstance(model, nn.Module):
        raise BadInputError(f"{spec} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def _import_factory(spec: str) -> Any:
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise BadInputError(f"--arch must be zoo:NAME or MODULE:FACTORY (e.g. mypkg.nets:build), got {spec!r}")
    # Users run ttsnn from their project folder, as they would run `python -c "import mypkg"`.
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        raise BadInputError(f"cannot import module {module_name!r} for --arch {spec}: {error}") from None
    except Exception as error:  # noqa: BLE001 - a user's module failing at import is bad input
        raise BadInputError(f"importing {module_name!r} for --arch failed: {type(error).__name__}: {error}") from None
    factory = module
    for part in attribute.split("."):
        if not hasattr(factory, part):
            raise BadInputError(f"module {module_name!r} has no attribute {attribute!r} (from --arch {spec})")
        factory = getattr(factory, part)
    if not callable(factory):
        raise BadInputError(f"{spec} is not callable")
    return factory


def zoo_io(arch: str | None, kwargs: dict[str, Any] | None) -> ModelIO:
    """The input shape, T and data a zoo model declares (nothing known for user architectures)."""
    if not arch or not arch.startswith("zoo:"):
        return ModelIO()
    try:
        entry = zoo_entry(arch[4:])
    except KeyError as error:
        raise BadInputError(str(error.args[0])) from None
    return ModelIO(tuple(entry.input_shape(dict(kwargs or {}))), entry.timesteps, entry.data)
