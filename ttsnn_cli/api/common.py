"""What every API function shares: models given as modules or paths, errors worded as arguments,
options passed through to the job dataclasses.

Why a module may stand for a path: the jobs (`compress.job`, `train.job`, ...) read their model from
a file, as the CLI gives it. A notebook user holds an `nn.Module`; the API writes it to a private
temporary bundle (`host.private`: a folder only this user can touch, removed after the call) and
hands that path to the job, so the module takes exactly the road a file takes and the documents are
the CLI's. A bundle must name the code that rebuilds the model (`arch`): the module's recorded one
(it came from ttsnn), the caller's `arch=`, or else its class, `module:QualName`, built without
arguments (a notebook's `__main__:Net`). The temporary path never shows: errors and documents name
the module instead (`<Net in memory>`).

Why errors are reworded: the library's messages name CLI flags (`--arch`, `--trust-arch`) because
the CLI is their usual reader. At the API boundary `Call` rewrites them as the keyword arguments a
Python caller passes (`arch=`, `trust_arch=True`), on the same exception object, so its type, exit
code and extra fields (`NothingToDecompose.document`) stay.
"""

from __future__ import annotations

import dataclasses
import math
import re
import shutil
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Union

from torch import nn

from ttsnn_cli.errors import BadInputError, TtsnnError
from ttsnn_cli.host.private import make_private_temporary
from ttsnn_cli.storage.bundle import ModelMeta, save_bundle
from ttsnn_cli.storage.trust import check_plain_json, check_spec, parse_arch_kwargs, trusting

#: what the API takes wherever the CLI takes a model file: a module, or a path to a bundle or checkpoint
ModelLike = Union[nn.Module, str, Path]
#: progress callbacks receive the jobs' event dicts (`kind` and its fields); the library never prints
Progress = Callable[[dict[str, Any]], None]

#: CLI flags that take no value: in the API they are booleans, so `--force` reads `force=True`
BOOLEAN_FLAGS = frozenset({
    "trust-arch", "trust-pickle", "force", "verify", "hw", "resume", "recompute-tt", "reconstruct-dense",
    "allow-growth", "json", "search", "compile",
})
#: short flags and positional placeholders, by the argument that replaces them
RENAMED = {"o": "output"}
POSITIONALS = {"CHECKPOINT": "model=", "MODEL": "model="}

# `--flag`, optionally followed by a value that is a placeholder (T, SPEC, C,H,W, MODULE:FACTORY), a
# spec (zoo:NAME, mynets:build, cifar10:DIR) or a number list (8, 8,16,8)
_PLACEHOLDER = r"[A-Z][A-Z0-9_]*(?:[,:][A-Z0-9_]+)*"
_SPEC = r"[A-Za-z_][\w.]*:[\w.]+"
_NUMBERS = r"\d+(?:\.\d+)?(?:,\d+(?:\.\d+)?)*"
_FLAG = re.compile(rf"(?<![\w-])(?:--(?P<name>[a-z][a-z0-9-]*)|-(?P<short>[{''.join(RENAMED)}])\b)(?P<value>\s+(?:{_SPEC}|{_PLACEHOLDER}|{_NUMBERS})(?![\w(]))?"
                   rf"(?P<after>\s+[a-z])?")
_POSITIONAL = re.compile(r"\b(" + "|".join(POSITIONALS) + r")\b")


def argument_name(flag: str) -> str:
    """The keyword argument of a CLI flag: `--batch-size` -> `batch_size`, `-o` -> `output`."""
    name = flag.lstrip("-")
    return RENAMED.get(name, name.replace("-", "_"))


def _render_value(name: str, value: str) -> str:
    if name == "input_shape" and re.fullmatch(_PLACEHOLDER, value) and "," in value:
        return "(" + ", ".join(value.split(",")) + ")"  # C,H,W -> (C, H, W): the API takes a tuple
    if re.fullmatch(_PLACEHOLDER, value) or re.fullmatch(r"\d+(?:\.\d+)?", value):
        return value
    return repr(value)


def _argument(match: re.Match[str]) -> str:
    flag = match.group("name") or match.group("short")
    if flag.startswith("no-") and flag[3:] in BOOLEAN_FLAGS:
        return f"{argument_name(flag[3:])}=False" + (match.group("after") or "")
    name = argument_name(flag)
    after = match.group("after") or ""
    if flag in BOOLEAN_FLAGS:
        return f"{name}=True" + after
    if match.group("value"):
        return f"{name}={_render_value(name, match.group('value').strip())}" + after
    if after:  # the flag used as a noun: "--epochs must be >= 1" -> "epochs must be >= 1"
        return name + after
    return f"{name}="


def argument_wording(message: str, replacements: Mapping[str, str] | None = None) -> str:
    """`message` with CLI flags rewritten as keyword arguments and each `replacements` key (a private
    temporary path) replaced by its value (what the caller passed)."""
    for old, new in sorted((replacements or {}).items(), key=lambda item: -len(item[0])):
        message = message.replace(old, new)
    message = _FLAG.sub(_argument, message)
    return _POSITIONAL.sub(lambda m: POSITIONALS[m.group(1)], message)


class Call:
    """One API call: its private temporary folder (for modules given as models, and outputs not
    asked for), the architectures it trusts, and the rewording of its errors and documents.

    Use as a context manager; `replacements` (private path -> what the caller passed) is what errors
    and documents show instead of the private paths."""

    def __init__(self, trust_arch: bool = False) -> None:
        self.trust_arch = trust_arch
        self.trusted: list[str] = []
        self.replacements: dict[str, str] = {}
        self.inferred: list[str] = []  # architectures guessed from a module's class (`module_arch`)
        self._folder: Path | None = None

    def __enter__(self) -> Call:
        return self

    def __exit__(self, kind: Any, error: BaseException | None, traceback: Any) -> bool:
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
        if isinstance(error, TtsnnError):
            message = argument_wording(str(error), self.replacements)
            guessed = [spec for spec in self.inferred if spec in message]
            if guessed and ("cannot build" in message or "does not fit" in message):
                message += (f"; ttsnn rebuilds a module from its class {guessed[0]} without arguments: pass "
                            f"arch='module:factory' (and arch_kwargs=) naming how to build it")
            error.args = (message,) + tuple(error.args[1:])
            if isinstance(getattr(error, "document", None), dict):  # NothingToDecompose carries compress's document
                error.document = self.document(error.document)  # type: ignore[attr-defined]
        return False

    def folder(self) -> Path:
        """The call's private temporary folder, made on first use."""
        if self._folder is None:
            try:
                self._folder = make_private_temporary("ttsnn-api-")
            except OSError as error:
                raise BadInputError(f"cannot hold the model in a private temporary folder: {error}") from None
            self.replacements[str(self._folder.resolve())] = "<temporary>"
            self.replacements[str(self._folder)] = "<temporary>"
        return self._folder

    def trust(self) -> Any:
        """The trust scope of the job: every recorded architecture with `trust_arch=True`, else the
        ones the caller named or handed over as modules (zoo names and TTSNN_TRUSTED_ARCH always)."""
        return trusting(True if self.trust_arch else [s for s in self.trusted if s])

    def name(self, *specs: str | None) -> None:
        """Architectures the caller named (`arch=`, `teacher_arch=`): trusted like `--arch`."""
        self.trusted += [s for s in specs if s]

    def model_path(self, model: ModelLike | None, role: str = "model", arch: str | None = None,
                   arch_kwargs: dict[str, Any] | None = None, required: bool = False) -> Path | None:
        """A path the jobs can read for `model`: a path as given, a module written to a private bundle."""
        if model is None:
            if required:
                raise BadInputError(f"{role}= is required: a torch.nn.Module or a path to a model file")
            return None
        if isinstance(model, (str, Path)):
            return Path(model)
        if not isinstance(model, nn.Module):
            raise BadInputError(f"{role}= takes a torch.nn.Module or a path to a model file, got {type(model).__name__}")
        spec, kwargs = module_arch(model, role, arch, arch_kwargs)
        self.trusted.append(spec)
        if arch is None and not recorded_meta(model).arch:
            self.inferred.append(spec)
        meta = dataclasses.replace(recorded_meta(model), arch=spec, arch_kwargs=kwargs)
        path = self.folder() / f"{role}.tt"
        save_bundle(path, model, meta)
        shown = f"<{type(model).__name__} in memory>"
        self.replacements[str(path.resolve())] = shown
        self.replacements[str(path)] = shown
        return path

    def output_path(self, output: str | Path | None, name: str) -> tuple[Path, bool]:
        """Where the job writes: `output`, or (None) a private file removed after the call; the bool
        says whether the caller asked for the file."""
        if output is not None:
            return Path(output), True
        return self.folder() / name, False

    def document(self, document: Any) -> Any:
        """`document` with the private paths replaced by what the caller passed (recursively)."""
        if isinstance(document, str):
            for old, new in sorted(self.replacements.items(), key=lambda item: -len(item[0])):
                document = document.replace(old, new)
            return document
        if isinstance(document, dict):
            return {key: self.document(value) for key, value in document.items()}
        if isinstance(document, list):
            return [self.document(value) for value in document]
        return document


def recorded_meta(model: nn.Module) -> ModelMeta:
    """What ttsnn recorded on `model` (a fresh, empty record when nothing: the caller's module is
    read, never changed)."""
    meta = getattr(model, "ttsnn_meta", None)
    return meta if isinstance(meta, ModelMeta) else ModelMeta()


def module_arch(model: nn.Module, role: str, arch: str | None, arch_kwargs: dict[str, Any] | None
                ) -> tuple[str, dict[str, Any]]:
    """The architecture a bundle of `model` records: `arch=`, else the one ttsnn recorded on it, else
    its class as `module:QualName` (built without arguments when the bundle is read)."""
    meta = recorded_meta(model)
    if arch is not None:
        return check_spec(arch, "arch="), dict(arch_kwargs or {})
    if meta.arch:
        return meta.arch, dict(arch_kwargs if arch_kwargs is not None else meta.arch_kwargs)
    cls = type(model)
    hint = (f"pass arch='module:factory' naming the code that builds it (and arch_kwargs=...), e.g. a function "
            f"returning the {cls.__name__}")
    if cls.__module__.split(".")[0] in ("torch", "snntorch"):
        raise BadInputError(f"{role}= is a plain {cls.__name__}, which its class alone cannot rebuild: {hint}")
    if "<locals>" in cls.__qualname__:
        raise BadInputError(f"{role}= is a {cls.__name__} defined inside a function, which ttsnn cannot import: {hint}")
    return check_spec(f"{cls.__module__}:{cls.__qualname__}", "arch="), dict(arch_kwargs or {})


def json_kwargs(value: dict[str, Any] | str | None, name: str) -> dict[str, Any] | None:
    """Factory kwargs as a dict (or JSON text, as the CLI takes them), checked to be plain JSON."""
    if value is None:
        return None
    if isinstance(value, str):
        return parse_arch_kwargs(value)
    if not isinstance(value, Mapping):
        raise BadInputError(f"{name}= takes a dict of plain JSON values, got {type(value).__name__}")
    return check_plain_json(dict(value), f"{name}=")


def names(value: str | Iterable[str] | None) -> list[str]:
    """A repeatable option (`include=`, `exclude=`): one string or several."""
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def comma_text(value: Any) -> Any:
    """Sequences as the CLI's comma text (`ranks=(8, 16, 8)` is `--ranks 8,16,8`); others unchanged."""
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return value


def input_shape(value: str | Iterable[int] | None) -> tuple[int, ...] | None:
    """`input_shape=(C, H, W)` (or "C,H,W"): 1 to 4 positive whole sizes of one timestep's frame."""
    if value is None:
        return None
    try:
        parts = value.split(",") if isinstance(value, str) else list(value)
        if any(isinstance(p, bool) or (not isinstance(p, str) and int(p) != p) for p in parts):
            raise ValueError
        shape = tuple(int(p) for p in parts)
    except (TypeError, ValueError):
        raise BadInputError(f"input_shape= takes (C, H, W) as whole numbers, got {value!r}") from None
    if not 1 <= len(shape) <= 4 or min(shape) < 1:
        raise BadInputError(f"input_shape= takes 1 to 4 positive sizes (C, H, W for images), got {value!r}")
    return shape


def check_ranges(*checks: tuple[str, Any, float | None, float | None]) -> None:
    """Arguments out of range, refused before any work as the CLI refuses its options: each check is
    (argument, value, minimum, maximum); None values are unset; numbers must be finite."""
    for name, value, low, high in checks:
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise BadInputError(f"{name}= takes a number, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise BadInputError(f"{name}= must be a finite number, got {value}")
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f">= {low:g}" if high is None else f"in {low:g}..{high:g}" if low is not None else f"<= {high:g}"
            raise BadInputError(f"{name}= must be {bounds}, got {value}")


def apply_options(function: str, targets: Iterable[Any], options: Mapping[str, Any],
                  skip: Iterable[str] = ()) -> None:
    """Set each option on the first dataclass in `targets` that has a field of that name, so a new
    job option is an API argument as soon as it exists; an unknown one is a TypeError (as Python
    reports any unexpected keyword argument), listing what the function takes."""
    targets = list(targets)
    skipped = set(skip)
    for name, value in options.items():
        for target in targets:
            field = {f.name: f for f in dataclasses.fields(target)}.get(name)
            if field is not None and name not in skipped:
                if isinstance(value, str) and "Path" in str(field.type):
                    value = Path(value)  # the CLI hands the job a Path for a path option
                setattr(target, name, value)
                break
        else:
            known = sorted({f.name for t in targets for f in dataclasses.fields(t)} - skipped)
            raise TypeError(f"{function}() got an unexpected keyword argument {name!r}; it also takes: {', '.join(known)}")
