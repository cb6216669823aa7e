"""Architecture specs and who trusts them: the only place ttsnn imports or calls model code.

A checkpoint holds only weights (snntorch neurons cannot be pickled, ecosystem.md), so every load
needs the code that builds the network. That code is named by a spec:

- `zoo:NAME`: a built-in model; always allowed (ttsnn's own code; kwargs checked against the
  factory's signature, sizes from 1 to MAX_ZOO_SIZE, so a crafted
  bundle cannot make ttsnn allocate gigabytes);
- `MODULE:FACTORY`: an importable callable. It runs with the user's privileges, so it is imported
  only when the user named it: on the command line (`--arch`), in a recipe they run, in the Python
  API's `arch=`, in `--trust-arch` (every architecture the given files record), or in the
  `TTSNN_TRUSTED_ARCH` environment variable (comma-separated `module:factory` specs, module names
  trusting everything below them, or `*`). A spec recorded in a bundle is data: without one of those
  it is refused, never imported.

Kwargs are plain JSON values (null, booleans, finite numbers, strings, lists, string-keyed objects),
whatever their source. Whatever user code raises at import or call time (SystemExit included) is bad
input naming the spec (`guard.call_user_code`).
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import inspect
import json
import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from types import ModuleType
from typing import Annotated, Any

from pydantic import AfterValidator, StrictStr
from torch import nn

from ttsnn_cli.errors import BadInputError, abbreviate
from ttsnn_cli.host.imports import current_folder_last
from ttsnn_cli.storage.bundle import ModelIO
from ttsnn_cli.storage.guard import call_user_code
from ttsnn_cli.zoo import check_zoo_size, zoo_entry

TRUST_ENV = "TTSNN_TRUSTED_ARCH"
_DOTTED = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"
_SPEC = re.compile(rf"^(?:zoo:[A-Za-z0-9_.-]+|{_DOTTED}:{_DOTTED})$")
#: deepest JSON value accepted as kwargs (a factory needs a few levels; thousands are an attack)
MAX_JSON_DEPTH = 32
#: largest size kwarg (channels, classes, width) of a zoo model: beyond it a bundle's or option's kwargs
#: would allocate gigabytes before any check could run
MAX_ZOO_SIZE = 4096

#: specs the current command trusts beyond the ones it names (`--trust-arch` sets True: all)
_TRUSTED: contextvars.ContextVar[bool | frozenset[str]] = contextvars.ContextVar("ttsnn_trusted_arch", default=frozenset())


def check_spec(spec: Any, where: str = "--arch") -> str:
    """`spec` if it is `zoo:NAME` or `module.path:factory.attr`; a one-line BadInputError otherwise."""
    if not isinstance(spec, str) or not _SPEC.match(spec):
        raise BadInputError(f"{where} must be zoo:NAME or MODULE:FACTORY (e.g. mypkg.nets:build), got {abbreviate(repr(spec))}")
    return spec


def check_plain_json(value: Any, where: str, depth: int = 0) -> Any:
    """`value` if it is a plain JSON value (tuples read as lists); BadInputError naming the path if not."""
    if depth > MAX_JSON_DEPTH:
        raise BadInputError(f"{where} is nested deeper than {MAX_JSON_DEPTH} levels")
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise BadInputError(f"{where} is {value}: only finite numbers are plain JSON values")
        return value
    if isinstance(value, (list, tuple)):
        return [check_plain_json(item, f"{where}[{i}]", depth + 1) for i, item in enumerate(value)]
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise BadInputError(f"{where} has a non-string key {abbreviate(repr(key))}")
            out[key] = check_plain_json(item, f"{where}.{key}", depth + 1)
        return out
    raise BadInputError(f"{where} holds a {type(value).__name__}, not a plain JSON value")


def _as_value_error(check: Any, where: str) -> Any:
    def validate(value: Any) -> Any:
        try:
            return check(value, where)
        except BadInputError as error:
            raise ValueError(str(error)) from None

    return AfterValidator(validate)


#: pydantic field types for a spec and for kwargs, shared by the bundle schema and recipes
ArchSpec = Annotated[StrictStr, _as_value_error(check_spec, "spec")]
JsonKwargs = Annotated[dict[StrictStr, Any], _as_value_error(check_plain_json, "kwargs")]


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_arch_kwargs(text: str | None) -> dict[str, Any]:
    """`--arch-kwargs` JSON -> dict, with a one-line error for anything else (NaN, deep nesting...)."""
    if text is None or text.strip() == "":
        return {}
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as error:
        raise BadInputError(f"--arch-kwargs is not valid JSON ({error.msg} at position {error.pos}): {abbreviate(repr(text))}") from None
    except ValueError as error:
        raise BadInputError(f"--arch-kwargs: {error}") from None
    except RecursionError:
        raise BadInputError("--arch-kwargs is nested too deeply") from None
    if not isinstance(value, dict):
        raise BadInputError(f"--arch-kwargs must be a JSON object like '{{\"num_classes\": 10}}', got {abbreviate(repr(text))}")
    return check_plain_json(value, "--arch-kwargs")


# ------------------------------------------------------------------------------------ trust
@contextlib.contextmanager
def trusting(specs: bool | Iterable[str]) -> Iterator[None]:
    """Within the block, also trust `specs` (True: every recorded architecture, `--trust-arch`)."""
    current = _TRUSTED.get()
    if specs is True or current is True:
        value: bool | frozenset[str] = True
    else:
        value = frozenset(current) | frozenset(s for s in (specs or ()) if isinstance(s, str))
    token = _TRUSTED.set(value)
    try:
        yield
    finally:
        _TRUSTED.reset(token)


def _env_entries() -> list[str]:
    return [part.strip() for part in os.environ.get(TRUST_ENV, "").split(",") if part.strip()]


def is_trusted(spec: str, named: Iterable[str | None] = ()) -> bool:
    """May ttsnn import and call `spec`? Zoo names always; a module:factory only when the user named
    it (`named`, the current `trusting` block, or TTSNN_TRUSTED_ARCH)."""
    if spec.startswith("zoo:"):
        return True
    if spec in set(named):
        return True
    trusted = _TRUSTED.get()
    if trusted is True or spec in trusted:
        return True
    module = spec.partition(":")[0]
    for entry in _env_entries():
        if entry == "*" or entry == spec or (":" not in entry and (module == entry or module.startswith(entry + "."))):
            return True
    return False


def untrusted_message(spec: str, source: str) -> str:
    return (f"{source} records architecture {spec}, which is code: ttsnn imports it only if you trust it. "
            f"Pass --arch {spec} (or --trust-arch), or add it to {TRUST_ENV}")


# ------------------------------------------------------------------------------------ building
def build_arch(spec: str, kwargs: Mapping[str, Any] | None = None) -> nn.Module:
    """Build the dense model named by `spec` with `kwargs`. The caller decided `spec` is trusted
    (a spec the user named, or a zoo name); errors name what was wrong in one line."""
    check_spec(spec)
    kwargs = check_plain_json(dict(kwargs or {}), f"kwargs of {spec}")
    if spec.startswith("zoo:"):
        return _build_zoo(spec, kwargs)
    factory = _import_factory(spec)
    shown = abbreviate(json.dumps(kwargs))
    model = call_user_code(lambda: factory(**kwargs), f"cannot build {spec} with kwargs {shown}")
    if not isinstance(model, nn.Module):
        raise BadInputError(f"{spec} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def _build_zoo(spec: str, kwargs: dict[str, Any]) -> nn.Module:
    factory = check_zoo_kwargs(spec, kwargs)
    shown = abbreviate(json.dumps(kwargs))
    return call_user_code(lambda: factory(**kwargs), f"cannot build {spec} with kwargs {shown}")


def check_zoo_kwargs(spec: str, kwargs: Mapping[str, Any]) -> Any:
    """The zoo factory of `spec`, after checking `kwargs` against its signature (sizes 1..MAX_ZOO_SIZE)."""
    try:
        factory = zoo_entry(spec[4:]).factory
    except KeyError as error:
        raise BadInputError(str(error.args[0])) from None
    parameters = inspect.signature(factory).parameters
    for key, value in kwargs.items():
        if key not in parameters:
            raise BadInputError(f"{spec} takes no argument {key!r}; it takes {', '.join(parameters) or 'none'}")
        if parameters[key].annotation in (int, "int") and (type(value) is not int or not 1 <= value <= MAX_ZOO_SIZE):
            raise BadInputError(f"{spec}: {key} must be a whole number from 1 to {MAX_ZOO_SIZE}, "
                                f"got {abbreviate(json.dumps(value))}")
    check_zoo_size(spec[4:], dict(kwargs))  # the whole model's size, counted before it is built
    return factory


def _import_factory(spec: str, option: str = "--arch") -> Any:
    """The callable `spec` names, walking only through what its module itself defines.

    Trusting `mynets` means trusting the code in `mynets`, not every module it imports: a recorded
    `mynets:torch.os.system` or `mynets:save` (after `from torch import save`) would otherwise call
    whatever those name with kwargs a bundle chose. So each step of the attribute path must be
    defined in the module or below it (a class, function or submodule of `mynets`). `option` names
    the spec's source in messages (`--data` for a dataset factory)."""
    module_name, _, attribute = spec.partition(":")
    # Users run ttsnn from their project folder, as they would run `python -c "import mypkg"`; the
    # folder goes last on the path so it never hides an installed package (host.imports).
    current_folder_last()
    try:
        module = call_user_code(lambda: importlib.import_module(module_name), f"importing {module_name!r} for {option} {spec} failed")
    except BadInputError as error:
        if "ModuleNotFoundError" in str(error):
            raise BadInputError(f"cannot import module {module_name!r} for {option} {spec}: {str(error).split(': ', 2)[-1]}") from None
        raise
    factory: Any = module
    for part in attribute.split("."):
        if not hasattr(factory, part):
            raise BadInputError(f"module {module_name!r} has no attribute {attribute!r} (from {option} {spec})")
        factory = getattr(factory, part)
        home = _defined_in(factory)
        if home is None or not (home == module_name or home.startswith(module_name + ".")):
            where = f"defined in {home!r}" if home else "of unknown origin"
            raise BadInputError(f"{spec} names {part!r}, which is {where}, not in module {module_name!r}: "
                                f"a spec may only name code its own module defines")
    if not callable(factory):
        raise BadInputError(f"{spec} is not callable")
    return factory


def _defined_in(value: Any) -> str | None:
    """The module that defines `value` (a module's own name for a module), or None when it says none."""
    if isinstance(value, ModuleType):
        return value.__name__
    home = getattr(value, "__module__", None)
    return home if isinstance(home, str) else None


def zoo_io(arch: str | None, kwargs: dict[str, Any] | None) -> ModelIO:
    """The input shape, T and data a zoo model declares (nothing known for user architectures)."""
    if not arch or not arch.startswith("zoo:"):
        return ModelIO()
    try:
        entry = zoo_entry(arch[4:])
    except KeyError as error:
        raise BadInputError(str(error.args[0])) from None
    shape = call_user_code(lambda: entry.input_shape(dict(kwargs or {})), f"cannot get the input shape of {arch}")
    return ModelIO(tuple(shape), entry.timesteps, entry.data)
