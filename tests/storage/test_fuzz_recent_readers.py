"""Property-based fuzzing of the readers added since the last hardening (issue 25): "a result or a
typed error (TtsnnError), nothing else".

Readers: sweep folders (`sweep.json` as a resumed sweep reads it), sensitivity curves
(`check_curves`, then the allocation that trusts them), teacher models (`train.job.load_teacher`
and the compatibility probe), own-loop probing (`spiking.runner.own_loop_layout` and a run, with
forwards that return or raise anything), and the environment the kernel build and the trust
boundary read: `CC`, `TMPDIR`, `TTSNN_NATIVE`, `TTSNN_KEEP_FREED_MEMORY`, `TTSNN_TRUSTED_ARCH`.

As in `test_fuzz_readers.py`: the default run tries a few examples each (SMALL), `pytest -m fuzz`
runs a campaign of FUZZ_EXAMPLES each.
"""

from __future__ import annotations

import atexit
import copy
import functools
import io
import json
import math
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import user_nets
from hypothesis import strategies as st
from torch import nn
from torch.utils.data import Subset

from ttsnn_cli import save_model
from ttsnn_cli.errors import TtsnnError
from tests.fuzzing import property_tests

SMALL = 10
_FOLDER = Path(tempfile.mkdtemp(prefix="ttsnn-fuzz-recent-"))
atexit.register(shutil.rmtree, _FOLDER, True)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)


@st.composite
def mutated_text(draw: st.DrawFn, original: str) -> str:
    """`original` with a few cuts, insertions and flips (truncated files, stray bytes)."""
    data = list(original)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        kind = draw(st.sampled_from(["cut", "insert", "delete"]))
        if kind == "cut":
            del data[at:]
        elif kind == "insert":
            data[at:at] = list(draw(st.text(min_size=1, max_size=6)))
        elif data:
            del data[at : at + draw(st.integers(1, 20))]
    return "".join(data)


def _paths(document: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(document, dict):
        for key, value in document.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(document, list):
        for index, value in enumerate(document):
            yield from _paths(value, (*prefix, index))


@st.composite
def tampered(draw: st.DrawFn, original: dict[str, Any]) -> Any:
    """`original` with one to three fields replaced by odd JSON values or removed."""
    document = copy.deepcopy(original)
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(document) if p]
        if not paths:
            return draw(json_values)
        path = draw(st.sampled_from(paths))
        node = document
        for part in path[:-1]:
            node = node[part]
        if draw(st.booleans()) and isinstance(node, dict):
            node.pop(path[-1])
        else:
            node[path[-1]] = draw(json_values | st.sampled_from([float("nan"), float("inf"), -1, 0, "1", [], {}]))
    return document


def _finite(document: Any) -> bool:
    if isinstance(document, float):
        return math.isfinite(document)
    if isinstance(document, dict):
        return all(_finite(v) for v in document.values())
    if isinstance(document, list):
        return all(_finite(v) for v in document)
    return True


# ----------------------------------------------------------------------------- sweep folders
@functools.cache
def _sweep_setup() -> tuple[Any, dict[str, Any], dict[str, Any]]:
    from ttsnn_cli.pipeline.sweep import SweepJob, settings as sweep_settings

    folder = _FOLDER / "sweep"
    folder.mkdir(exist_ok=True)
    job = SweepJob(model=_FOLDER / "m.tt", data="digits", out_dir=folder, targets=[4.0], methods=["budget"])
    current = json.loads(json.dumps(sweep_settings(job, "0" * 64, None)))
    point = {"method": "budget", "target": 4.0, "param_ratio": 2.0, "weight_ratio": 2.5, "mac_ratio": 1.5,
             "params": 100, "weights": 80, "accuracy_before": 40.0, "accuracy_after": 45.0, "seconds": 1.0,
             "ranks": {"0": [2, 2, 2]}, "rank_method": "budget:4", "output": str(folder / "budget-4.tt")}
    return job, current, {"dense_accuracy": 50.0, "points": [point], "settings": current}


def prop_sweep_json(text: str) -> None:
    from ttsnn_cli.pipeline.sweep import RESULTS, _previous, gates

    job, current, _ = _sweep_setup()
    (job.out_dir / RESULTS).write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        earlier = _previous(job, current)
    except TtsnnError:
        return
    assert isinstance(earlier, dict) and _finite(earlier)  # NaN and Infinity never enter a sweep
    for point in earlier.get("points", []):
        assert all(math.isfinite(point[k]) and point[k] > 0 for k in ("param_ratio", "weight_ratio", "mac_ratio"))
    gates({"dense_accuracy": earlier.get("dense_accuracy", 0.0), "points": earlier.get("points", [])}, 1.0)


def _sweep_texts() -> st.SearchStrategy[str]:
    valid = st.deferred(lambda: st.just(_sweep_setup()[2]))
    return st.one_of(
        valid.flatmap(tampered).map(lambda d: json.dumps(d, allow_nan=True)),
        valid.map(lambda d: json.dumps(d)).flatmap(mutated_text),
        json_values.map(lambda d: json.dumps(d, allow_nan=True)),
        st.text(max_size=40),
    )


# ----------------------------------------------------------------------------- sensitivity curves
@functools.cache
def _curves_setup() -> tuple[nn.Module, dict[str, nn.Module], dict[str, Any]]:
    from ttsnn_cli.compress.decompose import CompressConfig, free_layers, plan_layers
    from ttsnn_cli.compress.sensitivity import calibration_set, candidate_factors, curves_document, measure_sensitivity
    from ttsnn_cli.data import DataBundle, load_data
    from ttsnn_cli.maths.ranks import RankSpec

    torch.manual_seed(0)
    model = user_nets.sequential_net(channels=2)
    config = CompressConfig(RankSpec("budget", 4.0))
    layers = free_layers(plan_layers(model, config)[0], config)
    full = load_data("digits", timesteps=2, augment=False)
    data = DataBundle("digits", Subset(full.train, range(8)), Subset(full.test, range(4)), (1, 16, 16), 10)
    factors = candidate_factors([4.0])
    base, curves = measure_sensitivity(model, layers, calibration_set(data, 4, 2, 0), factors, "stt", 2)
    document = curves_document(base, curves, calibration_set(data, 4, 2, 0), 0) | {"factors": factors, "mode": "stt"}
    return model, layers, json.loads(json.dumps(document))


def prop_curves(document: Any) -> None:
    from ttsnn_cli.compress.sensitivity import check_curves, sensitivity_ranks
    from ttsnn_cli.kinds import tt_dims

    model, layers, _ = _curves_setup()
    try:
        checked = check_curves(document, "curves.json", tt_dims(layers, 3))
    except TtsnnError:
        return
    chosen, _ = sensitivity_ranks(model, layers, 4.0, None, 0, 2, 0, measured=checked)  # type: ignore[arg-type]
    assert set(chosen) == set(layers)
    assert all(all(isinstance(r, int) and r >= 1 for r in ranks.effective) for ranks in chosen.values())


def _curves_documents() -> st.SearchStrategy[Any]:
    valid = st.deferred(lambda: st.just(_curves_setup()[2]))
    return st.one_of(valid.flatmap(tampered), json_values)


# ----------------------------------------------------------------------------- teacher models
@functools.cache
def _teacher_setup() -> tuple[bytes, Any]:
    from ttsnn_cli.data import DataBundle, load_data

    torch.manual_seed(0)
    path = _FOLDER / "teacher-valid.tt"
    save_model(user_nets.sequential_net(channels=2), path, arch="user_nets:sequential_net")
    full = load_data("digits", timesteps=2, augment=False)
    data = DataBundle("digits", Subset(full.train, range(4)), Subset(full.test, range(4)), (1, 16, 16), 10)
    return path.read_bytes(), data


@st.composite
def teacher_files(draw: st.DrawFn) -> tuple[bytes, str | None]:
    original, _ = _teacher_setup()
    bundle = torch.load(io.BytesIO(original), weights_only=True)
    choice = draw(st.sampled_from(["field", "bytes", "state_dict", "arch"]))
    if choice == "field":
        field = draw(st.sampled_from(["arch", "io", "tt", "state_dict", "history", "format_version"]))
        bundle[field] = draw(json_values | st.builds(torch.zeros, st.integers(0, 3)))
    elif choice == "arch":
        bundle["arch"] = {"spec": draw(st.sampled_from(["user_nets:loop_net", "user_nets:not_a_module", "zoo:digits_csnn",
                                                        "user_nets:os.system", "os:system", "user_nets:torch.save"])),
                          "kwargs": draw(st.dictionaries(st.sampled_from(["channels", "command", "width"]),
                                                         json_values, max_size=2))}
    elif choice == "state_dict":
        state = {k: v for k, v in bundle["state_dict"].items() if draw(st.booleans()) or not k.endswith("weight")}
        return _saved(state), draw(st.sampled_from([None, "user_nets:sequential_net", "user_nets:loop_net", "zoo:digits_csnn"]))
    buffer = io.BytesIO()
    torch.save(bundle, buffer)
    data = buffer.getvalue()
    if choice == "bytes":
        cut = draw(st.integers(0, len(data)))
        data = data[:cut] + draw(st.binary(max_size=8))
    return data, None


def _saved(value: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def prop_teacher(case: tuple[bytes, str | None]) -> None:
    from ttsnn_cli.data.compat import check_compatible
    from ttsnn_cli.storage.bundle import get_meta
    from ttsnn_cli.train.job import TrainJob, load_teacher

    content, arch = case
    path = _FOLDER / "teacher.tt"
    path.write_bytes(content)
    student = user_nets.sequential_net(channels=2)
    meta = get_meta(student)
    meta.arch, meta.arch_kwargs = "user_nets:sequential_net", {"channels": 2}
    job = TrainJob(stage="finetune", output=_FOLDER / "student.tt", teacher=path, teacher_arch=arch)
    marker = _FOLDER / "PWNED"
    try:
        teacher = load_teacher(job, student)
        assert teacher is not None and not teacher.training
        check_compatible(teacher, _teacher_setup()[1], 2, "digits")
    except TtsnnError:
        pass
    assert not marker.exists()


# ----------------------------------------------------------------------------- own-loop probing
ACTIONS = ["good", "good-batch-first", "dict", "none", "int", "str", "empty-tuple", "int-tensor", "complex",
           "wrong-batch", "scalar", "TypeError", "KeyError", "AssertionError", "ZeroDivisionError", "StopIteration",
           "MemoryError", "RecursionError", "SystemExit", "BaseException", "GeneratorExit"]


class Hostile(nn.Module):
    """An own-loop network (its own T, static input) whose n-th forward does `script[n]` (the last
    entry repeats)."""

    def __init__(self, script: list[str], steps: int = 3) -> None:
        super().__init__()
        self.fc = nn.Linear(16 * 16, 4)
        self.script, self.steps, self.calls = script, steps, 0

    def forward(self, x: torch.Tensor) -> Any:
        action = self.script[min(self.calls, len(self.script) - 1)]
        self.calls += 1
        batch = x.shape[-4] if x.dim() >= 4 and x.shape[-3] == 1 else x.shape[0]
        good = self.fc(x.reshape(-1, 16 * 16)[:1].expand(batch, -1)).unsqueeze(0).expand(self.steps, -1, -1)
        if action == "good":
            return good, good
        if action == "good-batch-first":
            return good.transpose(0, 1)
        if action in ("TypeError", "KeyError", "AssertionError", "ZeroDivisionError", "StopIteration", "MemoryError",
                      "RecursionError", "SystemExit", "BaseException", "GeneratorExit"):
            raise {"SystemExit": SystemExit, "BaseException": BaseException, "GeneratorExit": GeneratorExit}.get(
                action, __builtins__[action] if isinstance(__builtins__, dict) else getattr(__builtins__, action))("hostile")
        return {"dict": {"spikes": good}, "none": None, "int": 3, "str": "spikes", "empty-tuple": (),
                "int-tensor": good.long(), "complex": good.to(torch.complex64),
                "wrong-batch": good[:, :1], "scalar": good.sum()}[action]


def prop_own_loop(script: list[str]) -> None:
    from ttsnn_cli.spiking.runner import apply_style, own_loop_layout, run_timesteps

    model = Hostile(script)
    apply_style(model, "own_loop")
    inputs = torch.rand(3, 2, 1, 16, 16)
    try:
        own_loop_layout(model, inputs)
        out = run_timesteps(model, inputs, fold=True)
    except TtsnnError:
        return
    assert isinstance(out, torch.Tensor) and out.is_floating_point() and out.shape[1] == 2


# ----------------------------------------------------------------------------- the environment
@contextmanager
def _env(name: str, value: str | None) -> Iterator[None]:
    old = os.environ.get(name)
    try:
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


#: what an environment variable can hold (no NUL byte, no lone surrogate: the OS cannot pass them)
env_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=20)

#: compilers that fail fast (a real compiler takes a second a build: the default run stays quick)
CC_VALUES = st.one_of(
    st.sampled_from(["", " ", "false", "true", "/nonexistent/cc", "'unbalanced", "cc -x", "env", "sh -c exit",
                     "/dev/null", "/etc/passwd", "echo", "printf"]),
    env_text.map(lambda t: "/nonexistent/" + t),
)


def prop_cc(value: str) -> None:
    from ttsnn_cli.spiking import lif_kernel

    lif_kernel._build.cache_clear()
    try:
        with _env("CC", value):
            library = lif_kernel.library()
            status = lif_kernel.build_status()
        assert library is None or all(hasattr(library, name) for name in lif_kernel._SIGNATURES)
        assert isinstance(status, str) and status
    finally:
        lif_kernel._build.cache_clear()  # the next user builds with the real environment


def prop_native_switch(value: str) -> None:
    from ttsnn_cli.spiking import lif_kernel

    with _env(lif_kernel.ENV_SWITCH, value), _env("CC", "/nonexistent/cc"):
        lif_kernel._build.cache_clear()
        try:
            assert isinstance(lif_kernel.enabled(), bool)
            assert lif_kernel.library() is None  # switched off, or no compiler: the PyTorch loop runs
            assert lif_kernel.build_status()
        finally:
            lif_kernel._build.cache_clear()


def prop_keep_freed_memory(value: str) -> None:
    from ttsnn_cli.train import allocator

    class _Libc:  # this process keeps its allocator: only the switch's reading is under test
        gnu_get_libc_version = object()

        class mallopt:  # noqa: N801 - stands in for a C function
            argtypes: Any = None
            restype: Any = None

            def __new__(cls, option: int, value: int) -> int:  # type: ignore[misc]
                return 1

    original = allocator.ctypes.CDLL
    allocator.ctypes.CDLL = lambda name: _Libc()  # type: ignore[assignment, misc]
    try:
        with _env(allocator.ENV_SWITCH, value):
            applied = allocator.keep_freed_memory()
    finally:
        allocator.ctypes.CDLL = original  # type: ignore[misc]
    assert isinstance(applied, bool) and applied == (value.strip() != "0")


def _tmpdir_candidates(tmp: Path) -> dict[str, str]:
    (tmp / "file").write_text("x")
    shared = tmp / "shared"
    shared.mkdir(exist_ok=True)
    shared.chmod(0o777)  # writable by others, not sticky: unsafe
    sticky = tmp / "sticky"
    sticky.mkdir(exist_ok=True)
    sticky.chmod(0o1777)
    link = tmp / "link"
    if not link.is_symlink():
        link.symlink_to(shared)
    return {"file": str(tmp / "file"), "shared": str(shared), "sticky": str(sticky), "link": str(link),
            "missing": str(tmp / "missing"), "dev": "/dev/null", "relative": "relative/dir", "empty": "",
            "safe": str(tmp)}


def prop_tmpdir(choice: tuple[str, str]) -> None:
    from ttsnn_cli.host.private import is_private, make_private_temporary, private_folder, safe_bases

    kind, text = choice
    tmp = _FOLDER / "tmpdirs"
    tmp.mkdir(exist_ok=True)
    value = _tmpdir_candidates(tmp).get(kind, text)
    old = tempfile.tempdir
    tempfile.tempdir = None  # re-read TMPDIR
    cache = _FOLDER / "cache"  # the fallback base: kept inside this test's folder
    try:
        with _env("TMPDIR", value), _env("XDG_CACHE_HOME", str(cache)):
            bases = list(safe_bases())
            for make in (lambda: make_private_temporary("ttsnn-fuzz-"), lambda: private_folder("ttsnn-fuzz")):
                try:
                    folder = make()
                except OSError:  # no safe base: the callers fall back (the PyTorch loop, no log file)
                    assert not bases
                    continue
                assert is_private(folder) and not folder.is_symlink()
                assert any(Path(os.path.realpath(folder)).parent == base for base in bases)
                assert not (Path(os.path.realpath(folder)).parent.stat().st_mode & stat.S_IWOTH) or \
                    Path(os.path.realpath(folder)).parent.stat().st_mode & stat.S_ISVTX
                folder.rmdir()  # each example makes its own (a text TMPDIR may name a real folder)
    finally:
        tempfile.tempdir = old


TRUST_VALUES = st.one_of(
    st.sampled_from(["", "*", "user_nets", "os", "torch", "user_nets:torch.save", "user_nets:os.system", ",", "::",
                     "user_nets,os", "builtins", "subprocess", "zoo", "*,os"]),
    env_text,
)
SPECS = st.sampled_from(["user_nets:sequential_net", "user_nets:torch.save", "user_nets:os.system",
                         "user_nets:snn.Leaky", "user_nets:nn.Sequential", "os:system", "builtins:eval",
                         "user_nets:LoopNet.forward", "user_nets:not_a_module", "zoo:digits_csnn", "subprocess:run"])


def prop_trusted_arch(case: tuple[str, str, dict[str, Any]]) -> None:
    from ttsnn_cli.storage.load import load_checkpoint

    value, spec, kwargs = case
    marker = _FOLDER / "PWNED"
    original, _ = _teacher_setup()
    bundle = torch.load(io.BytesIO(original), weights_only=True)
    bundle["arch"] = {"spec": spec, "kwargs": {**kwargs, "command": f"touch {marker}", "f": str(marker), "obj": 1}
                      if spec.split(":")[-1] in ("system", "torch.save", "os.system", "run", "eval") else kwargs}
    path = _FOLDER / "trusted.tt"
    torch.save(bundle, path)
    with _env("TTSNN_TRUSTED_ARCH", value):
        try:
            load_checkpoint(path)
        except TtsnnError:
            pass
    assert not marker.exists(), f"{spec} ran code with TTSNN_TRUSTED_ARCH={value!r}"


PROPERTIES: dict[str, tuple[Callable[[Any], None], st.SearchStrategy[Any]]] = {
    "sweep-json": (prop_sweep_json, _sweep_texts()),
    "sensitivity-curves": (prop_curves, _curves_documents()),
    "teacher-model": (prop_teacher, teacher_files()),
    "own-loop-forward": (prop_own_loop, st.lists(st.sampled_from(ACTIONS), min_size=1, max_size=6)),
    "env-cc": (prop_cc, CC_VALUES),
    "env-ttsnn-native": (prop_native_switch, env_text | st.sampled_from(["0", " 0 ", "1", "no", ""])),
    "env-keep-freed-memory": (prop_keep_freed_memory, env_text | st.sampled_from(["0", " 0", "1", "off"])),
    "env-tmpdir": (prop_tmpdir, st.tuples(st.sampled_from(["file", "shared", "sticky", "link", "missing", "dev",
                                                           "relative", "empty", "safe", "text"]),
                                          env_text)),
    "env-trusted-arch": (prop_trusted_arch, st.tuples(TRUST_VALUES, SPECS,
                                                      st.dictionaries(st.sampled_from(["channels", "x"]),
                                                                      st.integers(-2, 3), max_size=1))),
}


globals().update(property_tests(PROPERTIES, SMALL, ""))
