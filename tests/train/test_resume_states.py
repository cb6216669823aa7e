"""Resume states (`OUT.resume.pt`) as input: every field checked before anything is loaded.

A state whose optimiser, scheduler, scaler, history, epoch or weights are bad is bad input
(BadInputError, exit 3), never a crash in the first training step; a state written for another
model (other kwargs, another checkpoint or teacher, other layers) is refused even when every shape
agrees; and a finished run resumed writes its outputs again from the state.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import Subset
from typer.testing import CliRunner

from ttsnn_cli.data import DataBundle, load_data
from ttsnn_cli.errors import BadInputError
from ttsnn_cli.storage.bundle import get_meta
from ttsnn_cli.train.engine import TrainConfig, fit, side_paths
from ttsnn_cli.train.optimizers import make_optimizer, make_scheduler
from ttsnn_cli.train.resume import ORIGIN_ATTRIBUTE, model_fingerprint
from ttsnn_cli.train.resume import restore as restore_state
from ttsnn_cli.train.precision import grad_scaler
from ttsnn_cli.zoo import zoo_entry

STEPS = 2  # batches per epoch of the tiny data below


@pytest.fixture(scope="module")
def tiny_digits() -> DataBundle:
    full = load_data("digits")
    return DataBundle("digits", Subset(full.train, range(0, 64)), Subset(full.test, range(0, 32)), (1, 16, 16), 10)


def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = zoo_entry("digits_csnn").factory(width=2)
    meta = get_meta(model)
    meta.arch, meta.arch_kwargs = "zoo:digits_csnn", {"width": 2}
    return model


def config(optimizer: str = "sgd") -> TrainConfig:
    return TrainConfig(epochs=2, batch_size=32, timesteps=2, lr=0.05, seed=1, optimizer=optimizer)  # type: ignore[arg-type]


class _Stop(Exception):
    pass


def _stop_at_two(model: torch.nn.Module, history: list[dict[str, Any]]) -> None:
    if len(history) == 2:
        raise _Stop


@pytest.fixture(scope="module", params=["sgd", "adam"])
def state(request: pytest.FixtureRequest, tiny_digits: DataBundle, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A real state after epoch 1 of 2 (the run stopped before writing epoch 2's)."""
    out = tmp_path_factory.mktemp("state") / "m.tt"
    with pytest.raises(_Stop):
        fit(tiny_model(), tiny_digits, config(request.param), out, on_epoch=_stop_at_two)
    loaded = torch.load(side_paths(out)[1], weights_only=True)
    assert loaded["epoch"] == 1 and loaded["optimizer"]["state"]
    return {"optimizer_name": request.param, "state": loaded}


def restore(tmp_path: Path, state: dict[str, Any], optimizer_name: str, model: torch.nn.Module | None = None,
            precision: str = "fp32") -> tuple[list[dict[str, Any]], int]:
    """`resume.restore` into fresh objects, then one training step: the loaded state must be usable."""
    model = model or tiny_model()
    cfg = config(optimizer_name)
    cfg.precision = precision
    optimizer = make_optimizer(list(model.parameters()), cfg)
    scheduler = make_scheduler(optimizer, cfg, cfg.epochs * STEPS)
    scaler = grad_scaler(precision, torch.device("cpu"))
    path = tmp_path / "s.resume.pt"
    torch.save(state, path)
    result = restore_state(path, cfg, model, optimizer, scheduler, scaler)
    for param in model.parameters():
        param.grad = torch.ones_like(param)
    optimizer.step()
    scheduler.step()
    return result


def test_a_valid_state_restores(tmp_path: Path, state: dict[str, Any]) -> None:
    history, epoch = restore(tmp_path, copy.deepcopy(state["state"]), state["optimizer_name"])
    assert epoch == 1 and [r["epoch"] for r in history] == [1]


@pytest.mark.parametrize("fused,foreach", [(None, None), (False, True), (True, None)])
@pytest.mark.parametrize("fuse_here", [False, True])
def test_a_state_of_any_update_implementation_restores_into_this_runs(
        tmp_path: Path, state: dict[str, Any], fused: bool | None, foreach: bool | None, fuse_here: bool) -> None:
    """A state written by a fused update (on CUDA, `optimizers.fusable`) resumes unfused (on the CPU) and
    the other way round: each run keeps its own implementation."""
    other = copy.deepcopy(state["state"])
    other["optimizer"]["param_groups"][0].update(fused=fused, foreach=foreach)
    model = tiny_model()
    cfg = config(state["optimizer_name"])
    optimizer = make_optimizer(list(model.parameters()), cfg, fused=fuse_here)
    path = tmp_path / "s.resume.pt"
    torch.save(other, path)
    _, epoch = restore_state(path, cfg, model, optimizer, make_scheduler(optimizer, cfg, cfg.epochs * STEPS))
    assert epoch == 1
    assert optimizer.param_groups[0]["fused"] is (True if fuse_here else None)
    assert optimizer.param_groups[0]["foreach"] is None
    for param in model.parameters():
        param.grad = torch.ones_like(param)
    optimizer.step()  # Adam's loaded step count sits where the fused kernel wants it


def _key(node: Any, part: str) -> Any:
    if isinstance(node, list) or (part not in node and part.isdigit() and int(part) in node):
        return int(part)
    return part


def _at(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """Set a field by dotted path (`optimizer.param_groups.0.lr`); `~` deletes it."""
    def change(state: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = state
        for part in parents:
            node = node[_key(node, part)]
        if isinstance(value, str) and value == "~":
            del node[_key(node, last)]
        else:
            node[_key(node, last)] = value
    return change


def _first_buffer(state: dict[str, Any], name: str, value: Callable[[torch.Tensor], Any]) -> None:
    buffers = state["optimizer"]["state"]
    first = min(buffers)
    if name in buffers[first]:
        buffers[first][name] = value(buffers[first][name])
    else:
        pytest.skip(f"this optimiser keeps no {name}")


def _drop_buffer(state: dict[str, Any], name: str) -> None:
    _first_buffer(state, name, lambda t: t)  # skips where this optimiser keeps no such buffer
    state["optimizer"]["state"][min(state["optimizer"]["state"])].pop(name)


BAD: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "lr-string": (_at("optimizer.param_groups.0.lr", "x"), "lr"),
    "lr-nan": (_at("optimizer.param_groups.0.lr", float("nan")), "lr"),
    "lr-negative": (_at("optimizer.param_groups.0.lr", -1.0), "lr"),
    "lr-tensor": (_at("optimizer.param_groups.0.lr", torch.ones(3)), "lr"),
    "weight-decay-other": (_at("optimizer.param_groups.0.weight_decay", 0.5), "weight_decay"),
    "fused-string": (_at("optimizer.param_groups.0.fused", "x"), "fused"),
    "foreach-tensor": (_at("optimizer.param_groups.0.foreach", torch.ones(2)), "foreach"),
    "initial-lr-string": (_at("optimizer.param_groups.0.initial_lr", "x"), "initial_lr"),
    "group-extra-field": (_at("optimizer.param_groups.0.evil", 1), "other fields"),
    "group-missing-field": (_at("optimizer.param_groups.0.weight_decay", "~"), "other fields"),
    "params-shuffled": (lambda s: s["optimizer"]["param_groups"][0].__setitem__("params", s["optimizer"]["param_groups"][0]["params"][::-1]), "params"),
    "two-groups": (lambda s: s["optimizer"]["param_groups"].append(dict(s["optimizer"]["param_groups"][0])), "param_groups"),
    "state-key-out-of-range": (lambda s: s["optimizer"]["state"].__setitem__(999, {}), "optimizer.state"),
    "state-key-string": (lambda s: s["optimizer"]["state"].__setitem__("a", {}), "optimizer.state"),
    "momentum-wrong-shape": (lambda s: _first_buffer(s, "momentum_buffer", lambda t: torch.zeros(7)), "shape"),
    "momentum-nan": (lambda s: _first_buffer(s, "momentum_buffer", lambda t: torch.full_like(t, float("nan"))), "finite"),
    "momentum-string": (lambda s: _first_buffer(s, "momentum_buffer", lambda t: "x"), "momentum_buffer"),
    "momentum-int": (lambda s: _first_buffer(s, "momentum_buffer", lambda t: t.long()), "dtype"),
    "adam-step-missing": (lambda s: _drop_buffer(s, "step"), "fields"),
    "adam-step-negative": (lambda s: _first_buffer(s, "step", lambda t: torch.tensor(-3.0)), "below"),
    "adam-second-moment-negative": (lambda s: _first_buffer(s, "exp_avg_sq", lambda t: -t - 1), "below"),
    "adam-exp-avg-sparse": (lambda s: _first_buffer(s, "exp_avg", lambda t: t.to_sparse()), "exp_avg"),
    "optimizer-extra-field": (_at("optimizer.evil", 1), "optimizer"),
    "optimizer-string": (_at("optimizer", "x"), "optimizer"),
    "tmax-0": (_at("scheduler.T_max", 0), "T_max"),
    "tmax-string": (_at("scheduler.T_max", "x"), "T_max"),
    "tmax-float": (_at("scheduler.T_max", 4.5), "T_max"),
    "eta-min-nan": (_at("scheduler.eta_min", float("nan")), "eta_min"),
    "base-lrs-strings": (_at("scheduler.base_lrs", ["x"]), "base_lrs"),
    "last-epoch-negative": (_at("scheduler.last_epoch", -1), "last_epoch"),
    "last-epoch-huge": (_at("scheduler.last_epoch", 10**30), "last_epoch"),
    "last-epoch-bool": (_at("scheduler.last_epoch", True), "last_epoch"),
    "step-count-string": (_at("scheduler._step_count", "1"), "_step_count"),
    "last-lr-nan": (_at("scheduler._last_lr", [float("nan")]), "_last_lr"),
    "scheduler-swaps-optimizer": (_at("scheduler.optimizer", "x"), "scheduler"),
    "scheduler-list": (_at("scheduler", [1, 2]), "scheduler"),
    "epoch-string": (_at("epoch", "1"), "epoch"),
    "epoch-bool": (_at("epoch", True), "epoch"),
    "epoch-beyond": (lambda s: (s.__setitem__("epoch", 5), s.__setitem__("history", s["history"] * 5)), "outside"),
    "history-short": (_at("history", []), "history"),
    "history-record-missing-accuracy": (lambda s: s["history"][0].pop("test_accuracy"), "history"),
    "history-record-tensor": (_at("history.0.lr", torch.ones(2)), "history"),
    "history-record-nan": (_at("history.0.train_loss", float("nan")), "history"),
    "history-not-list": (_at("history", {"a": 1}), "history"),
    "model-missing-weight": (lambda s: s["model"].pop(next(iter(s["model"]))), "model"),
    "model-wrong-shape": (lambda s: s["model"].__setitem__("fc.weight", torch.zeros(3, 3)), "shape"),
    "model-nan": (lambda s: s["model"].__setitem__("fc.bias", torch.full_like(s["model"]["fc.bias"], float("nan"))), "finite"),
    "model-string": (_at("model", "x"), "model"),
    "rng-string": (_at("rng", "x"), "rng"),
    "rng-garbage": (_at("rng", {"python": 1}), "valid resume state"),
    "config-tensor": (_at("config", torch.ones(2)), "no options"),
    "config-other-lr": (_at("config.lr", 0.5), "other options"),
    "config-lr-tensor": (_at("config.lr", torch.ones(2)), "other options"),
    "fingerprint-missing": (_at("fingerprint", "~"), "does not record which model"),
    "fingerprint-string": (_at("fingerprint", "x"), "fingerprint"),
    "fingerprint-other-layers": (_at("fingerprint.structure", "0" * 64), "another model"),
    "fingerprint-other-kwargs": (_at("fingerprint.arch_kwargs", '{"width": 3}'), "another model"),
    "fingerprint-other-checkpoint": (_at("fingerprint.origin", {"checkpoint": "0" * 64, "teacher": None}), "another model"),
    "not-a-dict": (lambda s: s.clear() or s.update({"config": 1}), "no options"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_a_bad_state_is_bad_input(tmp_path: Path, state: dict[str, Any], name: str) -> None:
    change, words = BAD[name]
    bad = copy.deepcopy(state["state"])
    change(bad)
    with pytest.raises(BadInputError, match=words) as caught:
        restore(tmp_path, bad, state["optimizer_name"])
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("field,value,words", [
    ("scale", "x", "scale"), ("scale", 0.0, "scale"), ("scale", float("inf"), "scale"),
    ("_growth_tracker", -1, "_growth_tracker"), ("growth_factor", 100.0, "growth_factor"),
    ("evil", 1, "scaler"),
])
def test_a_bad_loss_scaler_is_bad_input(tmp_path: Path, state: dict[str, Any], field: str, value: Any, words: str) -> None:
    """fp16 runs save a GradScaler state; it is checked like the rest."""
    good = copy.deepcopy(state["state"])
    good["config"]["precision"] = "fp16"
    good["scaler"] = torch.amp.GradScaler("cpu").state_dict()
    restore(tmp_path, copy.deepcopy(good), state["optimizer_name"], precision="fp16")
    good["scaler"][field] = value
    with pytest.raises(BadInputError, match=words):
        restore(tmp_path, good, state["optimizer_name"], precision="fp16")


def test_a_state_of_another_model_with_the_same_shapes_is_refused(tmp_path: Path, state: dict[str, Any]) -> None:
    """Same parameter names and shapes, but other kwargs, another module type, or another input file."""
    def other_kwargs(model: torch.nn.Module) -> None:
        get_meta(model).arch_kwargs = {"width": 2, "num_classes": 10}

    def other_neuron(model: torch.nn.Module) -> None:
        model.fc = type("MyLinear", (torch.nn.Linear,), {})(model.fc.in_features, model.fc.out_features)

    def other_checkpoint(model: torch.nn.Module) -> None:
        setattr(model, ORIGIN_ATTRIBUTE, {"checkpoint": "f" * 64, "teacher": None})

    for change in (other_kwargs, other_neuron, other_checkpoint):
        model = tiny_model()
        change(model)
        assert model_fingerprint(model) != model_fingerprint(tiny_model())
        with pytest.raises(BadInputError, match="another model"):
            restore(tmp_path, copy.deepcopy(state["state"]), state["optimizer_name"], model=model)


def test_the_fingerprint_ignores_weights(state: dict[str, Any]) -> None:
    """A resumed run may start from any initialisation: everything it trains comes from the state."""
    a, b = tiny_model(), tiny_model()
    with torch.no_grad():
        for param in b.parameters():
            param.add_(1.0)
    assert model_fingerprint(a) == model_fingerprint(b)
    assert state["state"]["fingerprint"] == model_fingerprint(tiny_model())


# ----------------------------------------------------------------------------- through the CLI
FAST = ["--epochs", "1", "--timesteps", "2", "--batch-size", "256", "--data", "digits"]


def _invoke(*args: Any) -> Any:
    from ttsnn_cli.cli.commands import app

    return CliRunner().invoke(app, [str(a) for a in args])


def test_resuming_a_finished_run_rewrites_its_deleted_bundle(tmp_path: Path) -> None:
    out = tmp_path / "a.tt"
    first = _invoke("train", "--arch", "zoo:digits_csnn", "--arch-kwargs", '{"width": 2}', *FAST, "-o", out, "--json")
    assert first.exit_code == 0, first.stderr
    weights = torch.load(out, weights_only=True)["state_dict"]
    out.unlink()
    side_paths(out)[0].unlink()
    again = _invoke("train", "--arch", "zoo:digits_csnn", "--arch-kwargs", '{"width": 2}', *FAST, "-o", out, "--resume", "--json")
    assert again.exit_code == 0, again.stderr
    assert json.loads(again.stdout)["resumed_from_epoch"] == 1
    assert out.is_file() and side_paths(out)[0].is_file()
    rewritten = torch.load(out, weights_only=True)["state_dict"]
    assert all(torch.equal(weights[k], rewritten[k]) for k in weights)
    assert json.loads(side_paths(out)[0].read_text().splitlines()[0])["epoch"] == 1


def test_finetune_resume_refuses_a_state_of_another_checkpoint_and_accepts_in_place(tmp_path: Path) -> None:
    for seed, name in ((0, "a.tt"), (1, "b.tt")):
        done = _invoke("train", "--arch", "zoo:digits_csnn", "--arch-kwargs", '{"width": 2}', *FAST, "--seed", seed,
                       "-o", tmp_path / name)
        assert done.exit_code == 0, done.stderr
    tuned = _invoke("finetune", tmp_path / "a.tt", *FAST, "-o", tmp_path / "f.tt")
    assert tuned.exit_code == 0, tuned.stderr
    other = _invoke("finetune", tmp_path / "b.tt", *FAST, "-o", tmp_path / "f.tt", "--resume")
    assert other.exit_code == 3 and "another model" in other.stderr
    assert len(other.stderr.strip().splitlines()) == 1
    same = _invoke("finetune", tmp_path / "a.tt", *FAST, "-o", tmp_path / "f.tt", "--resume")
    assert same.exit_code == 0, same.stderr
    # fine-tuned in place: the input changes every epoch, so it is not part of the fingerprint
    in_place = _invoke("finetune", tmp_path / "b.tt", *FAST, "-o", tmp_path / "b.tt", "--force")
    assert in_place.exit_code == 0, in_place.stderr
    resumed = _invoke("finetune", tmp_path / "b.tt", *FAST, "-o", tmp_path / "b.tt", "--resume")
    assert resumed.exit_code == 0, resumed.stderr
