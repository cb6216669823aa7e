"""The resume state of a training run: what it records of the run (options, model, random
generators, history), and the checks a state passes before `--resume` loads anything from it.

Why checked field by field: torch loads optimiser and scheduler states without looking at them, so a
bad value (a string lr, `T_max` 0, a buffer of the wrong shape) would only fail in the first training
step, as an internal error; a garbage, tampered or mismatched file is bad input here instead.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np
import torch
from torch import nn

from ttsnn_cli.errors import BadInputError
from ttsnn_cli.storage.outputs import atomic_write_text, standard_json

if TYPE_CHECKING:
    from collections.abc import Callable


class TrainConfig(Protocol):
    """What this module reads of a run's options (`engine.TrainConfig`, a dataclass; typed here by
    what is used so that the engine, which imports this module, need not be imported back)."""

    __dataclass_fields__: ClassVar[dict[str, Any]]
    epochs: int


def rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(np.asarray(keys).astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    python = state["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def restore(state_path: Path, config: TrainConfig, model: nn.Module, optimizer: torch.optim.Optimizer,
            scheduler: Any, scaler: torch.amp.GradScaler | None = None) -> tuple[list[dict[str, Any]], int]:
    """Restore a resume state (weights-only read). Every field is checked against what this run
    builds itself before anything is loaded, because torch loads optimiser and scheduler states
    without looking at them and a bad value (a string lr, `T_max` 0, a buffer of the wrong shape)
    would only fail in the first training step, as an internal error. So a garbage, tampered or
    mismatched file is bad input here: other options, another model (`model_fingerprint`), or a
    field this run would never have written."""
    from ttsnn_cli.storage.read import read_checkpoint

    state = read_checkpoint(state_path)
    if not isinstance(state, dict):
        raise BadInputError(f"--resume: {state_path} is not a ttsnn resume state")
    _check_same_run(state_path, state, config, model)
    try:
        history, start_epoch = _check_resume_fields(state, config, model, optimizer, scheduler, scaler)
    except (ValueError, TypeError, KeyError) as error:
        raise BadInputError(f"--resume: {state_path} is not a valid resume state ({_one_line(error)})") from None
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(_as_this_run(state["optimizer"], optimizer))
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and scaler.is_enabled() and "scaler" in state:
            scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
    except Exception as error:  # noqa: BLE001 - any malformed field of the file is bad input
        raise BadInputError(f"--resume: {state_path} is not a valid resume state "
                            f"({type(error).__name__}: {_one_line(error)})") from None
    return history, start_epoch


def republish(metrics_path: Path, model: nn.Module, history: list[dict[str, Any]],
               on_epoch: Callable[[nn.Module, list[dict[str, Any]]], None] | None) -> None:
    """A finished run resumed has nothing left to train, but it still names its outputs: they are
    written again from the state (which holds the final weights and history), so a bundle or log
    deleted since, or never published by a run killed after its last state, exists when the command
    says it does."""
    atomic_write_text(metrics_path, "".join(standard_json(r) + "\n" for r in history))
    if on_epoch is not None:
        on_epoch(model, history)


#: `train.job` sets this attribute on the model: the checksums of the files the run starts from
ORIGIN_ATTRIBUTE = "ttsnn_origin"


def model_fingerprint(model: nn.Module) -> dict[str, Any]:
    """What a resume state records of the model it was written for, so that `--resume` refuses a
    state of another model even when every shape agrees (other kwargs, another checkpoint or
    teacher): the recorded architecture and kwargs, the module tree (names and types) with every
    parameter's name, shape and dtype, and the checksums of the input files when the caller knows
    them (`ORIGIN_ATTRIBUTE`). Weights are not part of it: a resumed run may start from any
    initialisation, since everything it trains comes from the state."""
    import hashlib
    import json

    meta = getattr(model, "ttsnn_meta", None)
    io = getattr(meta, "io", None)
    digest = hashlib.sha256()
    for name, module in model.named_modules():
        digest.update(f"{name}\t{type(module).__module__}.{type(module).__qualname__}\n".encode())
    for name, param in model.named_parameters():
        shape = "lazy" if nn.parameter.is_lazy(param) else tuple(param.shape)
        digest.update(f"{name}\t{shape}\t{param.dtype}\n".encode())
    origin = getattr(model, ORIGIN_ATTRIBUTE, None)
    return {
        "arch": getattr(meta, "arch", None),
        "arch_kwargs": json.dumps(getattr(meta, "arch_kwargs", None) or {}, sort_keys=True, default=repr),
        "readout": getattr(io, "readout", None),
        "structure": digest.hexdigest(),
        "origin": dict(origin) if isinstance(origin, dict) else None,
    }


_FINGERPRINT_WORDS = {"arch": "architecture", "arch_kwargs": "architecture kwargs", "readout": "readout",
                      "structure": "layers or parameter shapes", "origin": "input checkpoint or teacher"}


def _check_same_run(state_path: Path, state: dict[str, Any], config: TrainConfig, model: nn.Module) -> None:
    """The state must come from a run of these options and this model."""
    recorded, key = state.get("config"), config_key(config)
    if not isinstance(recorded, dict):
        raise BadInputError(f"--resume: {state_path} is not a ttsnn resume state (no options recorded)")
    if not _same(recorded, key):
        differ = [k for k in sorted(set(recorded) | set(key), key=str)
                  if k not in recorded or k not in key or not _same(recorded[k], key[k])]
        shown = ", ".join(f"{_show(k)} {_show(recorded.get(k, 'absent'))} there, {_show(key.get(k, 'absent'))} here"
                          for k in differ[:4])
        raise BadInputError(f"--resume: {state_path} was written with other options: {shown}")
    fingerprint = state.get("fingerprint")
    if fingerprint is None:
        raise BadInputError(f"--resume: {state_path} does not record which model it was written for (an older "
                            "ttsnn wrote it); start the run again without --resume")
    expected = model_fingerprint(model)
    if not isinstance(fingerprint, dict):
        raise BadInputError(f"--resume: {state_path} is not a valid resume state (fingerprint: {_show(fingerprint)})")
    differ = [_FINGERPRINT_WORDS[k] for k in expected if not _same(fingerprint.get(k), expected[k])]
    if differ:
        raise BadInputError(f"--resume: {state_path} was written for another model (its {', '.join(differ)} "
                            "differ); resume with the model and files the run started from, or start again "
                            "without --resume")


#: per optimiser: (buffers shaped like their parameter, one-element buffers, whether all are required)
_OPTIMISER_BUFFERS = {"SGD": ({"momentum_buffer"}, set(), False),
                      "Adam": ({"exp_avg", "exp_avg_sq"}, {"step"}, True)}
#: scheduler fields that change as it steps (every other field is fixed by the options)
_SCHEDULER_DYNAMIC = {"last_epoch", "_step_count", "_last_lr", "_is_initial", "_get_lr_called_within_step"}
_HISTORY_NUMBERS = ("epoch", "train_loss", "train_accuracy", "test_accuracy")


def _check_resume_fields(state: dict[str, Any], config: TrainConfig, model: nn.Module,
                         optimizer: torch.optim.Optimizer, scheduler: Any,
                         scaler: torch.amp.GradScaler | None) -> tuple[list[dict[str, Any]], int]:
    """Every field against this run's own objects; raises ValueError naming the field. Returns
    (history, epoch)."""
    epoch = state["epoch"]
    if not _is_int(epoch):
        raise ValueError(f"epoch: {_show(epoch)}")
    if not 0 <= epoch <= config.epochs:
        raise ValueError(f"epoch {epoch}, outside 0..{config.epochs}")
    history = state["history"]
    if not isinstance(history, list) or len(history) != epoch:
        raise ValueError(f"history: {len(history) if isinstance(history, list) else _show(history)} records "
                         f"for epoch {epoch}")
    for index, record in enumerate(history):
        if not isinstance(record, dict) or not all(isinstance(k, str) and _is_scalar(v) for k, v in record.items()):
            raise ValueError(f"history[{index}]: {_show(record)}")
        if not all(_is_number(record.get(k)) for k in _HISTORY_NUMBERS) or record["epoch"] != index + 1:
            raise ValueError(f"history[{index}]: {_show(record)}")
    _check_tensors("model", state["model"], model.state_dict())
    _check_optimizer(state["optimizer"], optimizer)
    _check_scheduler(state["scheduler"], scheduler, len(optimizer.param_groups))
    if scaler is not None and scaler.is_enabled() and "scaler" in state:
        _check_scaler(state["scaler"], scaler)
    if not isinstance(state["rng"], dict):
        raise ValueError(f"rng: {_show(state['rng'])}")
    return [dict(r) for r in history], int(epoch)


def _check_tensors(field: str, given: Any, expected: dict[str, torch.Tensor]) -> None:
    """The same names and shapes as this model's, finite where floating point."""
    if not isinstance(given, dict) or set(given) != set(expected):
        names = sorted(map(str, set(given) ^ set(expected)))[:3] if isinstance(given, dict) else given
        raise ValueError(f"{field}: other weights ({_show(names)})")
    for name, tensor in given.items():
        _check_buffer(f"{field}.{name}", tensor, tuple(expected[name].shape), floating=expected[name].is_floating_point())


def _check_buffer(field: str, tensor: Any, shape: tuple[int, ...] | None, floating: bool = True,
                  low: float | None = None) -> None:
    """A dense tensor of `shape` (None: one element), finite and >= `low` when floating point."""
    if not isinstance(tensor, torch.Tensor) or tensor.layout != torch.strided or tensor.is_complex():
        raise ValueError(f"{field}: {_show(tensor)}")
    if (tensor.numel() != 1) if shape is None else (tuple(tensor.shape) != shape):
        raise ValueError(f"{field}: shape {tuple(tensor.shape)}, expected {shape or 'one value'}")
    if floating != tensor.is_floating_point():
        raise ValueError(f"{field}: dtype {tensor.dtype}")
    if floating and not bool(torch.isfinite(tensor).all()):
        raise ValueError(f"{field}: not finite")
    if low is not None and bool((tensor < low).any()):
        raise ValueError(f"{field}: below {low}")


#: how the update runs, not what it computes: a state written by a fused update (CUDA, `optimizers.fusable`)
#: resumes unfused and the other way round, each run keeping its own
_IMPLEMENTATION = frozenset({"fused", "foreach"})


def _as_this_run(given: dict[str, Any], optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """`given` (checked) with this run's implementation fields, set before loading: torch places the
    buffers it loads (Adam's step count) for the implementation the loaded groups name."""
    groups = [{**group, **{name: live[name] for name in _IMPLEMENTATION if name in live}}
              for group, live in zip(given["param_groups"], optimizer.param_groups)]
    return {**given, "param_groups": groups}


def _check_optimizer(given: Any, optimizer: torch.optim.Optimizer) -> None:
    fresh = optimizer.state_dict()
    if not isinstance(given, dict) or set(given) != {"state", "param_groups"}:
        raise ValueError(f"optimizer: {_show(given)}")
    groups = given["param_groups"]
    if not isinstance(groups, list) or len(groups) != len(fresh["param_groups"]):
        raise ValueError(f"optimizer.param_groups: {_show(groups)}")
    params: dict[int, torch.Tensor] = {}
    for index, (group, own, live) in enumerate(zip(groups, fresh["param_groups"], optimizer.param_groups)):
        if not isinstance(group, dict) or set(group) != set(own):
            raise ValueError(f"optimizer.param_groups[{index}]: other fields")
        for name, value in own.items():
            if name == "lr":
                if not (_is_number(group["lr"]) and group["lr"] >= 0):
                    raise ValueError(f"optimizer lr: {_show(group['lr'])}")
            elif name in _IMPLEMENTATION:
                if not any(group[name] is allowed for allowed in (None, True, False)):
                    raise ValueError(f"optimizer {name}: {_show(group[name])}")
            elif not _same(group[name], value):
                raise ValueError(f"optimizer {name}: {_show(group[name])}, this run has {_show(value)}")
        params.update(zip(own["params"], live["params"]))
    buffers = given["state"]
    if not isinstance(buffers, dict):
        raise ValueError(f"optimizer.state: {_show(buffers)}")
    shaped, single, required = _OPTIMISER_BUFFERS.get(type(optimizer).__name__, (None, None, False))
    for key, values in buffers.items():
        if not _is_int(key) or key not in params or not isinstance(values, dict):
            raise ValueError(f"optimizer.state[{_show(key)}]: {_show(values)}")
        names = set(values)
        if shaped is not None and (not names <= shaped | single or (required and values and names != shaped | single)):
            raise ValueError(f"optimizer.state[{key}]: fields {sorted(map(str, names))}")
        for name, tensor in values.items():
            if tensor is None and name == "momentum_buffer":
                continue
            one = name in single if single is not None else isinstance(tensor, torch.Tensor) and tensor.dim() == 0
            _check_buffer(f"optimizer.state[{key}].{name}", tensor, None if one else tuple(params[key].shape),
                          low=0 if name in ("step", "exp_avg_sq", "max_exp_avg_sq") else None)


def _check_scheduler(given: Any, scheduler: Any, groups: int) -> None:
    fresh = scheduler.state_dict()
    if not isinstance(given, dict) or not set(fresh) - _SCHEDULER_DYNAMIC <= set(given) <= set(fresh):
        raise ValueError(f"scheduler: fields {sorted(map(str, given)) if isinstance(given, dict) else _show(given)}")
    for name, value in given.items():
        if name in _SCHEDULER_DYNAMIC:
            continue
        if not _same(value, fresh[name]):
            raise ValueError(f"scheduler {name}: {_show(value)}, this run has {_show(fresh[name])}")
    last = given.get("last_epoch", 0)
    top = fresh.get("T_max", 2**62)  # a cosine schedule never steps past its end
    if not (_is_int(last) and 0 <= last <= top):
        raise ValueError(f"scheduler last_epoch: {_show(last)}, outside 0..{top}")
    count = given.get("_step_count", 0)
    if not (_is_int(count) and 0 <= count <= 2**62):
        raise ValueError(f"scheduler _step_count: {_show(count)}")
    for flag in ("_is_initial", "_get_lr_called_within_step"):
        if not isinstance(given.get(flag, False), bool):
            raise ValueError(f"scheduler {flag}: {_show(given[flag])}")
    rates = given.get("_last_lr", [0.0] * groups)
    if not (isinstance(rates, list) and len(rates) == groups and all(_is_number(r) and r >= 0 for r in rates)):
        raise ValueError(f"scheduler _last_lr: {_show(rates)}")


def _check_scaler(given: Any, scaler: torch.amp.GradScaler) -> None:
    fresh = scaler.state_dict()
    if not isinstance(given, dict) or set(given) != set(fresh):
        raise ValueError(f"scaler: {_show(given)}")
    for name, value in given.items():
        if name == "scale":
            ok = _is_number(value) and value > 0
        elif name == "_growth_tracker":
            ok = _is_int(value) and value >= 0
        else:
            ok = _same(value, fresh[name])
        if not ok:
            raise ValueError(f"scaler {name}: {_show(value)}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    """A finite real number (never a bool, a string or a tensor)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (bool, str)) or _is_number(value)


def _same(a: Any, b: Any) -> bool:
    """Plain equality of JSON-like values that never calls a tensor's `==` (a crafted field may be
    one) and never equates a bool with a number."""
    if _is_int(a) or isinstance(a, float):
        return (_is_int(b) or isinstance(b, float)) and a == b
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return set(a) == set(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (str, bool, type(None))):
        return a == b
    return False


def _show(value: Any) -> str:
    """A short one-line picture of a value from the file, for a message."""
    text = " ".join(repr(value).split())
    return text if len(text) <= 60 else text[:57] + "..."


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())[:200]


def config_key(config: TrainConfig) -> dict[str, Any]:
    """The options a resumed run must share with the original (device may differ)."""
    key = asdict(config)
    key.pop("device")
    key.pop("threads")  # how many cores computed it changes no result a resume must match
    key.pop("tt_kernel")  # nor which way the TT layers computed the same function
    key.pop("data_on_device")  # nor where the batches were made (the same batches: train.batches)
    key.pop("compile")  # nor whether the step ran compiled (the same function)
    if key["precision"] == "fp32":  # the states written before --precision existed were all fp32
        key.pop("precision")
    return key
