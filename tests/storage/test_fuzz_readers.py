"""Property-based fuzzing of every reader: "a result or a typed error, nothing else".

Readers: checkpoints and bundles (mutated bytes, crafted fields), recipes, accelerator YAML, CIFAR
batches, N-Caltech101 event files, resume states (crafted, and real ones of SGD and Adam tampered with,
then trained one step). Each property feeds hypothesis-generated input
to the reader and accepts only its result or the typed error the CLI maps to exit 3
(`TtsnnError`; `AcceleratorConfigError` for hw/, which the report maps to BadInputError).

The default run keeps a small example budget (a few seconds in all); `pytest -m fuzz` runs the
same properties as a larger campaign (FUZZ_EXAMPLES each, 2,000 by default).
"""

from __future__ import annotations

import io
import pickle
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import user_nets
import yaml
from hypothesis import strategies as st

from hw.config import AcceleratorConfigError, load_accelerator
from ttsnn_cli import save_model
from ttsnn_cli.data.cifar import read_batch
from ttsnn_cli.data.ncaltech import events_to_frames, read_events
from ttsnn_cli.errors import TtsnnError
from ttsnn_cli.pipeline.recipe import load_recipe
from ttsnn_cli.storage.load import load_checkpoint
from ttsnn_cli.train.engine import TrainConfig
from ttsnn_cli.train.optimizers import make_optimizer, make_scheduler
from ttsnn_cli.train.resume import model_fingerprint, rng_state
from ttsnn_cli.train.resume import restore as restore_resume_state
from tests.fuzzing import mutated, property_tests

SMALL = 15
DELETE = 64  # the longest deletion a mutation makes (a bundle is kilobytes)
ARCH = "user_nets:sequential_net"
_FOLDER = Path(tempfile.mkdtemp(prefix="ttsnn-fuzz-"))


def _bundle_bytes() -> bytes:
    path = _FOLDER / "valid.tt"
    if not path.exists():
        torch.manual_seed(0)
        save_model(user_nets.sequential_net(channels=2), path, arch=ARCH)
    return path.read_bytes()


def _file(name: str, content: bytes) -> Path:
    path = _FOLDER / name
    path.write_bytes(content)
    return path


# ----------------------------------------------------------------------------- strategies
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
odd_values = json_values | st.builds(torch.zeros, st.integers(0, 3)) | st.binary(max_size=8) | st.tuples(st.integers())


BUNDLE_FIELDS = ["format_version", "ttsnn_version", "arch", "tt", "io", "state_dict", "state_sha256", "source", "history"]


@st.composite
def crafted_bundles(draw: st.DrawFn) -> dict[str, Any]:
    bundle = torch.load(io.BytesIO(_bundle_bytes()), weights_only=True)
    for field in draw(st.lists(st.sampled_from(BUNDLE_FIELDS), min_size=1, max_size=3, unique=True)):
        choice = draw(st.sampled_from(["replace", "delete", "nested"]))
        if choice == "delete":
            bundle.pop(field, None)
        elif choice == "nested" and isinstance(bundle.get(field), dict) and bundle[field]:
            key = draw(st.sampled_from(sorted(bundle[field])))
            bundle[field][key] = draw(odd_values)
        else:
            bundle[field] = draw(odd_values)
    return bundle


RECIPE_KEYS = {
    "model": ["arch", "kwargs", "checkpoint", "input_shape", "timesteps"],
    "compress": ["ranks", "rank_method", "mode", "include", "exclude", "layers", "svd"],
    "train": ["epochs", "batch_size", "timesteps", "lr", "momentum", "weight_decay", "seed", "device"],
    "report": ["hw", "accel", "data", "plot", "gates"],
    "export": ["onnx", "mode", "verify", "nir", "batch"],
}


@st.composite
def recipe_texts(draw: st.DrawFn) -> str:
    document: dict[str, Any] = {"model": {"arch": "zoo:digits_csnn"}, "compress": {"ranks": 2}}
    for section in draw(st.lists(st.sampled_from(sorted(RECIPE_KEYS)), max_size=3)):
        values = document.setdefault(section, {})
        for key in draw(st.lists(st.sampled_from(RECIPE_KEYS[section]), max_size=3)):
            values[key] = draw(json_values)
    text = yaml.safe_dump(document) if draw(st.booleans()) else repr(document)
    if draw(st.booleans()):
        text = draw(mutated(text.encode(), DELETE)).decode("utf-8", "replace")
    return text


ACCEL_KEYS = {"name": st.text(max_size=8), "clock_hz": st.floats(), "dataflow": st.text(max_size=3),
              "scalesim_version": st.integers(0, 4), "forward_bits": st.integers(-2, 40),
              "array": st.fixed_dictionaries({}, optional={"rows": json_values, "cols": json_values, "split": json_values}),
              "sparsity": st.fixed_dictionaries({}, optional={"sp_s": st.floats(), "sp_du": st.floats()}),
              "energy": st.fixed_dictionaries({"preset": st.sampled_from(["sata", "horowitz45", "x"])},
                                              optional={"joules_per_unit": st.floats(), "static_power_w": st.floats()})}


# ----------------------------------------------------------------------------- properties
def prop_checkpoint_bytes(data: bytes) -> None:
    try:
        load_checkpoint(_file("mutated.tt", data), trust_arch=True)
    except TtsnnError:
        pass


def prop_crafted_bundle(bundle: dict[str, Any]) -> None:
    path = _FOLDER / "crafted.tt"
    torch.save(bundle, path)
    try:
        load_checkpoint(path, trust_arch=True)
    except TtsnnError:
        pass


def prop_recipe(text: str) -> None:
    try:
        load_recipe(_file("recipe.yaml", text.encode("utf-8", "surrogatepass")))
    except TtsnnError:
        pass


def prop_accelerator(document: dict[str, Any] | bytes) -> None:
    content = document if isinstance(document, bytes) else yaml.safe_dump(document).encode()
    try:
        config = load_accelerator(str(_file("accel.yaml", content)))
    except AcceleratorConfigError:
        return
    assert config.clock_hz > 0 and np.isfinite(config.clock_hz)


def prop_cifar(batch: Any) -> None:
    try:
        images, labels = read_batch(_file("batch", pickle.dumps(batch)), "labels")
    except TtsnnError:
        return
    assert images.dtype == np.uint8 and images.shape[1:] == (3, 32, 32) and len(images) == len(labels) >= 1


def prop_events(content: bytes) -> None:
    try:
        events = read_events(_file("events.bin", content))
    except TtsnnError:
        return
    frames = events_to_frames(events, 3)
    assert frames.shape == (3, 2, 48, 48) and torch.isfinite(frames).all()


def _resume_objects(optimizer_name: str = "sgd") -> tuple[Any, ...]:
    model = user_nets.sequential_net(channels=2)
    config = TrainConfig(epochs=2, optimizer=optimizer_name)  # type: ignore[arg-type]
    optimizer = make_optimizer(list(model.parameters()), config)
    return model, config, optimizer, make_scheduler(optimizer, config, 4)


def prop_resume(state: Any) -> None:
    """A state restores into this run's objects and then trains one step, or it is bad input: never a
    crash in the first step (a string lr, `T_max` 0, a buffer of another shape)."""
    optimizer_name = state.pop("_optimizer", "sgd") if isinstance(state, dict) else "sgd"
    model, config, optimizer, scheduler = _resume_objects(optimizer_name)
    torch.save(state, _FOLDER / "state.pt")
    try:
        restore_resume_state(_FOLDER / "state.pt", config, model, optimizer, scheduler)
    except TtsnnError:
        return
    for param in model.parameters():
        param.grad = torch.ones_like(param)
    optimizer.step()
    scheduler.step()


def _config_key(optimizer_name: str = "sgd") -> dict[str, Any]:
    from ttsnn_cli.train.resume import config_key as options_key

    return options_key(TrainConfig(epochs=2, optimizer=optimizer_name))  # type: ignore[arg-type]


def _valid_resume_fields() -> st.SearchStrategy[dict[str, Any]]:
    fingerprint = model_fingerprint(user_nets.sequential_net(channels=2))
    return st.fixed_dictionaries({"config": st.just(_config_key()), "fingerprint": st.just(fingerprint)}, optional={
        "epoch": json_values, "model": odd_values, "optimizer": odd_values, "scheduler": odd_values,
        "rng": odd_values, "history": odd_values})


def _real_state(optimizer_name: str) -> dict[str, Any]:
    """What a run writes after epoch 1 of 2 (two steps of 2 per epoch)."""
    model, config, optimizer, scheduler = _resume_objects(optimizer_name)
    for _ in range(2):
        for param in model.parameters():
            param.grad = torch.randn_like(param)
        optimizer.step()
        scheduler.step()
    key = _config_key(optimizer_name)
    record = {"epoch": 1, "train_loss": 2.0, "train_accuracy": 10.0, "test_accuracy": 10.0, "lr": 0.1,
              "seconds": 1.0, "samples_per_s": 10.0}
    return {"epoch": 1, "config": key, "fingerprint": model_fingerprint(model), "model": model.state_dict(),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "scaler": {},
            "rng": rng_state(), "history": [record], "_optimizer": optimizer_name}


def _leaves(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path] if path else []
    if isinstance(value, dict):
        for key, item in value.items():
            found += _leaves(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _leaves(item, (*path, index))
    return found


@st.composite
def tampered_states(draw: st.DrawFn) -> dict[str, Any]:
    """A real state (SGD or Adam) with one or two fields replaced by odd values or removed."""
    state = _real_state(draw(st.sampled_from(["sgd", "adam"])))
    for _ in range(draw(st.integers(1, 2))):
        paths = [p for p in _leaves(state) if p[0] not in ("rng", "_optimizer")]
        path = draw(st.sampled_from(paths))
        node: Any = state
        for part in path[:-1]:
            node = node[part]
        replacement = draw(odd_values | st.sampled_from([0, -1, 10**12, float("nan"), "x", True, None])
                           | st.builds(lambda n: torch.full((n,), float("nan")), st.integers(0, 3)))
        if draw(st.booleans()) and isinstance(node, dict):
            node.pop(path[-1])
        else:
            node[path[-1]] = replacement
    return state


PROPERTIES: dict[str, tuple[Callable[[Any], None], st.SearchStrategy[Any]]] = {
    "checkpoint-bytes": (prop_checkpoint_bytes,
                         st.deferred(lambda: mutated(_bundle_bytes(), DELETE)) | st.binary(max_size=64)),
    "crafted-bundle": (prop_crafted_bundle, crafted_bundles()),
    "recipe": (prop_recipe, recipe_texts()),
    "accelerator-yaml": (prop_accelerator, st.fixed_dictionaries({}, optional=ACCEL_KEYS) | st.binary(max_size=64)),
    "cifar-batch": (prop_cifar, st.one_of(
        st.builds(lambda d, l: {b"data": np.asarray(d), b"labels": l},
                  st.lists(st.lists(st.integers(-5, 300), min_size=3072, max_size=3072), max_size=2),
                  st.lists(st.integers(-2, 12), max_size=3)),
        st.builds(lambda n, v: {b"data": np.full((n, 3072), v), b"labels": [0] * n}, st.integers(0, 2), st.floats(-1, 400)),
        json_values)),
    "ncaltech-events": (prop_events, st.binary(max_size=200)),
    "resume-state": (prop_resume, _valid_resume_fields() | odd_values | tampered_states()),
}


globals().update(property_tests(PROPERTIES, SMALL, ""))
