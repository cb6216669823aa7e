"""ONNX export with the new exporter (`torch.onnx.export(..., dynamo=True)`, onnxscript).

Two graph layouts (DESIGN.md, "export"):
- unrolled (default): input `x` [T, B, *input_shape] (B dynamic, T baked in), output `y` = the
  network's first output over T, [T, B, ...]. Every step is traced through `functional.Unrolled`.
- step: one timestep, for streaming. Inputs `x` [B, *input_shape], then `t` (int64 scalar, the
  timestep 0..T-1) only when the model has HTT layers, then every state variable of every neuron
  named `<state>_in.<neuron>` (`mem_in.lif1`; Synaptic `syn_in`, `mem_in`; Alpha `syn_exc_in`,
  `syn_inh_in`, `mem_in`; RLeaky `spk_in`, `mem_in`; RSynaptic `spk_in`, `syn_in`, `mem_in`);
  outputs `y` and `<state>_out.<neuron>` in the same order. Start from zero states and feed each
  output back as the next step's input. HTT uses one graph with `t` as an
  input (both paths computed, `Where` selects), not two graphs: one file, one loop for the caller.
The graph's metadata (`metadata_props`) records the layout, T, the neuron order and the TT config.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from ttsnn_cli.errors import BadInputError, TtsnnError
from ttsnn_cli.export.functional import ExportCopy, Stepper, Unrolled, prepare_export_copy
from ttsnn_cli.spiking.runner import execution_style, own_loop_layout, run_timesteps
from ttsnn_cli.storage.bundle import tt_config
from ttsnn_cli.storage.outputs import atomic_write_bytes

ExportMode = Literal["unrolled", "step"]


@dataclass
class OnnxGraphInfo:
    """What was exported, for verification and the JSON report."""

    path: Path
    mode: ExportMode
    timesteps: int
    input_shape: tuple[int, ...]
    batch: int
    static_input: bool
    opset: int
    input_names: list[str]
    output_names: list[str]
    neurons: list[str]
    state_shapes: dict[str, list[int]] = field(default_factory=dict)  # by "<state>.<neuron>"
    state_names: list[str] = field(default_factory=list)  # "<state>.<neuron>", step-graph order
    takes_step: bool = False
    reconstruct_dense: bool = False
    copy: ExportCopy | None = None


def _io_name(state_name: str, direction: str) -> str:
    """'mem.lif1' -> 'mem_in.lif1' (the step graph's input/output names)."""
    state, _, neuron = state_name.partition(".")
    return f"{state}_{direction}.{neuron}"


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:300]


def sample_input(timesteps: int, batch: int, input_shape: tuple[int, ...], static: bool = False, seed: int = 0) -> torch.Tensor:
    """Random input [T, B, *shape] in [0, 1) (the same frame repeated when `static`)."""
    generator = torch.Generator().manual_seed(seed)
    if static:
        return torch.rand(1, batch, *input_shape, generator=generator).expand(timesteps, -1, *([-1] * len(input_shape))).contiguous()
    return torch.rand(timesteps, batch, *input_shape, generator=generator)


def export_onnx(
    model: nn.Module,
    path: str | Path,
    timesteps: int,
    input_shape: tuple[int, ...],
    mode: ExportMode = "unrolled",
    batch: int = 2,
    reconstruct_dense: bool = False,
) -> OnnxGraphInfo:
    """Write `model` as ONNX to `path` (atomically); the caller validated `path` beforehand."""
    model = model.eval()
    trace_batch = max(2, batch)  # torch.export specialises a dimension traced with size 1
    x = sample_input(timesteps, trace_batch, input_shape)
    with torch.no_grad():
        if execution_style(model) != "own_loop":  # own-loop models are probed below, in both layouts
            try:
                run_timesteps(model, x)
            except Exception as error:  # noqa: BLE001 - the model rejects the input shape
                raise BadInputError(
                    f"the model does not run on input [T={timesteps}, B, {', '.join(map(str, input_shape))}]: "
                    f"{_first_line(error)}"
                ) from None
        copy_ = prepare_export_copy(model, reconstruct_dense)
        static = False
        if copy_.style == "own_loop":  # the runner's probe: one frame or the sequence, time-major or batch-first
            layout = own_loop_layout(model, x)
            if not layout.sequence_input and layout.steps != timesteps:
                raise BadInputError(f"{type(model).__name__} runs its own loop of {layout.steps} steps, not T={timesteps}: "
                                    f"pass --timesteps {layout.steps}")
            static, copy_.batch_first = not layout.sequence_input, layout.batch_first
        unrolled = Unrolled(copy_, timesteps, static)
        batch_dim = torch.export.Dim("batch", min=1, max=1 << 20)
        info = OnnxGraphInfo(Path(path), mode, timesteps, tuple(input_shape), batch, static, 0, ["x"], ["y"],
                             list(copy_.neurons), takes_step=copy_.htt and mode == "step",
                             reconstruct_dense=reconstruct_dense, copy=copy_)
        if mode == "unrolled":
            wrapper: nn.Module = unrolled
            args: tuple[Any, ...] = (x,)
            dynamic: tuple[Any, ...] = ({1: batch_dim},)
        else:
            stepper = Stepper(copy_)
            outputs = stepper(x[0])  # from empty membranes: learn each state's shape
            states = [o.detach() for o in outputs[1:]]
            info.state_names = [f"{state}.{neuron}" for neuron, state in stepper.state_names()]
            info.state_shapes = {n: list(s.shape[1:]) for n, s in zip(info.state_names, states)}
            extra: list[torch.Tensor] = ([torch.tensor(0, dtype=torch.int64)] if info.takes_step else [])
            extra += [torch.zeros_like(s) for s in states]
            wrapper, args = stepper, (x[0], *extra)
            # forward(x, *extra): torch.export reads the varargs as one tuple argument
            dynamic = ({0: batch_dim}, (*([None] if info.takes_step else []), *({0: batch_dim} for _ in states)))
            info.input_names = ["x"] + (["t"] if info.takes_step else []) + [_io_name(n, "in") for n in info.state_names]
            info.output_names = ["y"] + [_io_name(n, "out") for n in info.state_names]
        program = _dynamo_export(wrapper, args, dynamic, info)
    proto = program.model_proto
    info.opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    _add_metadata(proto, model, info)
    atomic_write_bytes(path, proto.SerializeToString())
    return info


def _dynamo_export(wrapper: nn.Module, args: tuple[Any, ...], dynamic: tuple[Any, ...], info: OnnxGraphInfo) -> Any:
    """torch.onnx.export(dynamo=True), its progress chatter kept off stdout (the --json contract)."""
    chatter = io.StringIO()
    onnx_logger = logging.getLogger("torch.onnx")
    level = onnx_logger.level
    onnx_logger.setLevel(logging.ERROR)  # e.g. "torchvision is not installed", on every export
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(chatter):
            warnings.simplefilter("ignore")
            return torch.onnx.export(
                wrapper, args, dynamo=True, dynamic_shapes=dynamic, input_names=info.input_names,
                output_names=info.output_names, verbose=False, optimize=True,
            )
    except Exception as error:  # noqa: BLE001 - what the exporter cannot trace is an unsupported model
        ours = _typed_cause(error)
        if ours is not None:  # e.g. the user's forward failing while traced (spiking.runner.call_model)
            raise ours from None
        sys.stderr.write(chatter.getvalue()[-2000:])
        raise BadInputError(f"torch.onnx (dynamo) cannot export this model: {_first_line(error)}") from None
    finally:
        onnx_logger.setLevel(level)


def _typed_cause(error: BaseException) -> TtsnnError | None:
    """The first ttsnn error in `error`'s chain: torch.onnx wraps what the traced code raised."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, TtsnnError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _add_metadata(proto: Any, model: nn.Module, info: OnnxGraphInfo) -> None:
    config = tt_config(model)
    entries = {
        "ttsnn.layout": info.mode,
        "ttsnn.timesteps": str(info.timesteps),
        "ttsnn.input_shape": json.dumps(list(info.input_shape)),
        "ttsnn.static_input": str(info.static_input).lower(),
        "ttsnn.neurons": json.dumps(info.neurons),
        "ttsnn.reconstruct_dense": str(info.reconstruct_dense).lower(),
        "ttsnn.tt": json.dumps({"mode": config["mode"], "ranks": {k: v["ranks"] for k, v in config["layers"].items()}}
                               if config else None),
    }
    if info.mode == "step":
        entries["ttsnn.step"] = ("inputs x, [t if HTT], <state>_in.<neuron>...; outputs y, <state>_out.<neuron>...; "
                                 "start from zero states, feed each <state>_out back as <state>_in")
        entries["ttsnn.states"] = json.dumps(info.state_names)
    for key, value in entries.items():
        prop = proto.metadata_props.add()
        prop.key, prop.value = key, value
