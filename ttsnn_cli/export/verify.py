"""Check an exported ONNX file: `onnx.checker` (full check), then onnxruntime against torch.

Outputs: onnxruntime's `y` against the original torch model (`runner.run_timesteps`) on random
inputs over T; passes when max |diff| <= `tolerance` (1e-4).
Spikes: every Heaviside [u - thr > 0] the graph computes, against the torch export copy in eager
mode. Unrolled graphs: each Greater -> Cast value is exposed as an extra output of an in-memory copy
of the graph (the file is untouched) and matched, in order, with the Heavisides torch recorded.
Step graphs: the spikes are read off the membranes both sides return (h = [u - thr > 0]).
A float32 rounding difference can flip a neuron sitting exactly on its threshold, so spikes are
compared statistically: `spike_agreement` is the fraction equal, and must be >= `min_agreement`.
When spikes did flip, the outputs downstream of a flip legitimately differ by more than 1e-4: the
check then asks `output_agreement` (the fraction of output elements within 1e-4) >= 0.99 instead.
Without any flip, every output must be within 1e-4.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ttsnn_cli.errors import ExportVerificationError
from ttsnn_cli.export.functional import Stepper, Unrolled
from ttsnn_cli.export.neuron_slot import NeuronSlot
from ttsnn_cli.export.onnx import OnnxGraphInfo, sample_input
from ttsnn_cli.spiking.runner import run_timesteps

TOLERANCE = 1e-4
MIN_AGREEMENT = 0.999
MIN_OUTPUT_AGREEMENT = 0.99


@dataclass
class VerifyResult:
    verified: bool
    max_abs_diff: float
    spike_agreement: float | None
    spikes_compared: int
    checker: str
    output_agreement: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "verified": self.verified,
            "max_abs_diff": self.max_abs_diff,
            "spike_agreement": self.spike_agreement,
            "spikes_compared": self.spikes_compared,
            "checker": self.checker,
            "output_agreement": self.output_agreement,
        }


def _session(data: bytes) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def verify_onnx(model: nn.Module, info: OnnxGraphInfo, seed: int = 1, tolerance: float = TOLERANCE,
                min_agreement: float = MIN_AGREEMENT) -> VerifyResult:
    """Raise ExportVerificationError (exit 5) with the figures unless the file reproduces `model`."""
    import onnx

    try:
        onnx.checker.check_model(str(info.path), full_check=True)
    except Exception as error:  # noqa: BLE001 - any checker complaint is a failed verification
        raise ExportVerificationError(f"onnx.checker rejects {info.path}: {str(error).strip().splitlines()[0][:300]}") from None
    x = sample_input(info.timesteps, info.batch, info.input_shape, static=info.static_input, seed=seed)
    with torch.no_grad():
        reference = run_timesteps(model.eval(), x).detach().numpy()
    proto = onnx.load(str(info.path))
    if info.mode == "unrolled":
        got, agreement, compared = _run_unrolled(proto, info, x)
    else:
        got, agreement, compared = _run_step(proto, info, x)
    if got.shape != reference.shape:
        raise ExportVerificationError(f"onnxruntime output shape {list(got.shape)} != torch {list(reference.shape)}")
    errors = np.abs(got.astype(np.float64) - reference.astype(np.float64))
    diff = float(errors.max()) if got.size else 0.0
    within = float(np.mean(errors <= tolerance)) if got.size else 1.0
    result = VerifyResult(True, diff, agreement, compared, "ok", within)
    spikes_ok = agreement is None or agreement >= min_agreement
    # A threshold flip (agreement < 1) legitimately moves the outputs downstream of it: then the
    # outputs must still agree almost everywhere (>= MIN_OUTPUT_AGREEMENT of the elements).
    flipped = agreement is not None and agreement < 1
    outputs_ok = diff <= tolerance or (flipped and within >= MIN_OUTPUT_AGREEMENT)
    if not (outputs_ok and spikes_ok):
        result.verified = False
        agree = "n/a" if agreement is None else f"{agreement:.6f}"
        raise ExportVerificationError(
            f"onnxruntime does not reproduce torch: max_abs_diff {diff:.3g} (limit {tolerance:g}; "
            f"{within:.2%} of outputs within it), spike agreement {agree} (limit {min_agreement}) over {compared} spikes"
        )
    return result


def _spike_values(proto: Any) -> list[str]:
    """Names of the values Cast(Greater(...)) produces, in graph order: the Heavisides."""
    producers = {out: node.op_type for node in proto.graph.node for out in node.output}
    return [node.output[0] for node in proto.graph.node
            if node.op_type == "Cast" and node.input and producers.get(node.input[0]) == "Greater"]


def _run_unrolled(proto: Any, info: OnnxGraphInfo, x: torch.Tensor) -> tuple[np.ndarray, float | None, int]:
    from onnx import helper

    names = _spike_values(proto)
    existing = {o.name for o in proto.graph.output}
    for name in names:
        if name not in existing:
            proto.graph.output.append(helper.make_tensor_value_info(name, proto.graph.output[0].type.tensor_type.elem_type, None))
    outputs = _session(proto.SerializeToString()).run(None, {"x": x.numpy()})
    got, spikes = outputs[0], outputs[len(existing):]
    assert info.copy is not None
    wrapper = Unrolled(info.copy, info.timesteps, info.static_input)
    recorded = _recorded(info, lambda: wrapper(x))
    if len(recorded) != len(spikes) or any(r.shape != s.shape for r, s in zip(recorded, spikes)):
        return got, None, 0  # cannot pair them up (e.g. the optimiser merged two): outputs still checked
    return got, *_agreement(recorded, spikes)


def _recorded(info: OnnxGraphInfo, run: Any) -> list[np.ndarray]:
    assert info.copy is not None
    context = info.copy.context
    context.record = []
    try:
        with torch.no_grad():
            run()
        return [h.numpy() for h in context.record]
    finally:
        context.record = None


def _agreement(expected: list[np.ndarray], got: list[np.ndarray]) -> tuple[float | None, int]:
    total = sum(e.size for e in expected)
    if total == 0:
        return None, 0
    equal = sum(int(np.sum(e == g)) for e, g in zip(expected, got))
    return equal / total, total


def _run_step(proto: Any, info: OnnxGraphInfo, x: torch.Tensor) -> tuple[np.ndarray, float | None, int]:
    assert info.copy is not None
    session = _session(proto.SerializeToString())
    stepper = Stepper(info.copy)
    names = info.state_names
    thresholds = {n: _threshold(info.copy.model.get_submodule(n.partition(".")[2])) for n in names}
    batch = x.shape[1]
    ort_states = [np.zeros((batch, *info.state_shapes[n]), dtype=np.float32) for n in names]
    torch_states = [torch.zeros(batch, *info.state_shapes[n]) for n in names]
    input_names = info.input_names[len(info.input_names) - len(names):]
    ys, expected, got = [], [], []
    for t in range(info.timesteps):
        feeds: dict[str, Any] = {"x": x[t].numpy()}
        if info.takes_step:
            feeds["t"] = np.array(t, dtype=np.int64)
        feeds.update(dict(zip(input_names, ort_states)))
        outputs = session.run(None, feeds)
        ys.append(outputs[0])
        ort_states = outputs[1:]
        with torch.no_grad():
            step = (torch.tensor(t, dtype=torch.int64),) if info.takes_step else ()
            torch_out = stepper(x[t], *step, *torch_states)
        torch_states = list(torch_out[1:])
        for name, mine, theirs in zip(names, torch_states, ort_states):
            if name.startswith("mem."):  # spikes read off each membrane: h = [u - thr > 0]
                expected.append((mine.numpy() - thresholds[name]) > 0)
                got.append((theirs - thresholds[name]) > 0)
            elif np.abs(mine.numpy() - theirs).max(initial=0.0) > 1e-3 and not name.startswith("spk."):
                expected.append(np.zeros(1, bool))  # another state drifted: count it as a disagreement
                got.append(np.ones(1, bool))
    return np.stack(ys), *_agreement(expected, got)


def _threshold(slot: nn.Module) -> np.ndarray:
    assert isinstance(slot, NeuronSlot)
    return slot.threshold.detach().numpy()
