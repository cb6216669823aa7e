"""Parameters and MACs per timestep, per layer, measured with forward hooks (the TT-SNN paper,
"Counting convention").

Conventions:
- ``params``: every parameter (BN and biases included); ``weights``: conv + linear weights only, the
  paper's convention (TT cores are convs, so a TT layer's weights are its cores; a TT-matrix
  Linear's weights are its cores).
- ``macs``: multiply-accumulates of every Conv2d, Conv1d and Linear as the layers actually compute
  them, from the shapes seen by forward hooks: a conv costs ``out.numel() * Cin/groups * prod(k)``, a
  linear ``out.numel() * in_features``, a TT-matrix Linear its contraction chain
  (``TTLinear.macs_per_item`` per input vector). A Conv1d's length L is reported as a 1 x L map. BN, pooling, neurons and additions are not counted. Per
  timestep = the run's total / (T * B). TT layers are their cores: in STT the exact strided chain
  (1x1 at the input resolution, kh x 1 with stride (s, 1), 1 x kw with stride (1, s), 1x1), in PTT
  what our layer runs (1x1 at the input resolution, both middle cores at the full stride), in HTT the
  average over T of full and reduced steps.
- ``macs_paper``: the paper's convention beside it: every TT core counted at the TT layer's output
  resolution, i.e. (Cin*r1 + kh*r1*r2 + kw*r2*r3 + r3*Cout) * Ho*Wo per full step (dense layers as
  computed). It reproduces the paper's 281,970,016 (ResNet34) and 93,105,984 (ResNet18).

``profile_model`` is the one hook pass shared by counting, SynOps and the hw workloads.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from torch import nn

from ttsnn_cli.kinds import LayerKind, is_tt_layer, kind_of, leaf_kind, needs_all_steps
from ttsnn_cli.kinds.base import spatial
from ttsnn_cli.layers.hooks import watching
from ttsnn_cli.spiking.runner import needs_values, prepare_run, run_timesteps
from ttsnn_cli.spiking.state import reset_states


@dataclass
class LeafStats:
    """What the hooks saw of one Conv2d / Linear over a run (all calls summed)."""

    name: str
    module: nn.Module
    samples: int = 0  # number of [C, H, W] (or [features]) items it processed (T*B per full run)
    macs: int = 0
    in_hw: tuple[int, int] | None = None
    out_hw: tuple[int, int] | None = None
    binary: bool = True  # every input value was 0 or 1 (spikes)
    input_nonzero: int = 0
    input_numel: int = 0
    acs_exact: int = 0  # accumulates for binary inputs: nonzero inputs x their fan-out, exactly
    inner_macs: int = 0  # MACs on real-valued values inside the leaf (a TT-matrix's steps after the first)


@dataclass
class Profile:
    """One hooked run: leaves by name, TT layers' output sizes, and the run's T * B."""

    leaves: dict[str, LeafStats]
    tt_out_hw: dict[str, tuple[int, int]]
    steps: int
    batch: int

    @property
    def items(self) -> int:
        return self.steps * self.batch


def _cored(module: nn.Module) -> bool:
    """A TT layer built of core leaves (reported as one row summing its cores)."""
    kind = kind_of(module)
    return kind is not None and kind.owns_tt(module) and kind.has_cores


def profile_model(model: nn.Module, inputs: torch.Tensor, exact_acs: bool = False) -> Profile:
    """Run ``inputs`` [T, B, ...] through ``model`` (no grad) with hooks on every Conv2d / Linear
    (TT cores included) and every TTConv2d. ``exact_acs`` also counts spike accumulates exactly
    (a ones-kernel conv over the nonzero mask: costs about one extra conv per layer)."""
    leaves: dict[str, LeafStats] = {}
    tt_out: dict[str, tuple[int, int]] = {}

    def leaf_hook(stats: LeafStats, kind: LayerKind):
        def hook(module: nn.Module, args: tuple[Any, ...], out: torch.Tensor) -> None:
            x = args[0]
            call = kind.leaf_call(module, x, out)
            stats.macs += call.macs
            stats.inner_macs += call.inner_macs
            stats.in_hw = stats.in_hw or call.in_hw
            stats.out_hw = stats.out_hw or call.out_hw
            stats.samples += call.items
            if x.device.type != "meta":
                stats.binary = stats.binary and bool(((x == 0) | (x == 1)).all())
                stats.input_nonzero += int((x != 0).sum())
                stats.input_numel += x.numel()
                if exact_acs and stats.binary:
                    stats.acs_exact += kind.exact_acs(module, x)
            else:
                stats.binary = False
        return hook

    def tt_hook(name: str):
        def hook(module: nn.Module, args: tuple[Any, ...], out: torch.Tensor) -> None:
            tt_out.setdefault(name, spatial(out))
        return hook

    prepare_run(model, inputs)  # an own-loop model's layout probe must not be counted
    after = []
    for name, module in model.named_modules():
        kind = leaf_kind(module)
        if kind is not None:
            leaves[name] = LeafStats(name, module)
            after.append((module, leaf_hook(leaves[name], kind)))
        elif is_tt_layer(module):
            after.append((module, tt_hook(name)))
    with watching(after), torch.no_grad():
        out = run_timesteps(model, inputs)
    for name, stats in leaves.items():
        parent, _, leaf = name.rpartition(".")
        if parent in tt_out or (leaf.startswith("core") and parent and is_tt_layer(model.get_submodule(parent))):
            # a TT layer's cores after the first take the first core's real-valued output (an all-zero
            # input, from silent neurons upstream, would otherwise look like spikes)
            stats.binary = stats.binary and leaf == "core1"
    # the steps the model ran: an own-loop model taking one frame runs its own number, whatever it was given
    return Profile(leaves, tt_out, int(out.shape[0]), int(inputs.shape[1]))


def probe_input(input_shape: tuple[int, ...], steps: int, batch: int = 1, seed: int = 0,
                device: str | torch.device = "cpu") -> torch.Tensor:
    """A real-valued probe [T, B, *input_shape] (seeded normal: never mistaken for spikes). On the
    meta device it is made there directly: a shape-only probe must not allocate the real input first
    (a recorded input shape of 30000x30000 would take gigabytes before any check)."""
    if torch.device(device).type == "meta":
        return torch.empty(steps, batch, *input_shape, device="meta")
    generator = torch.Generator().manual_seed(seed)
    frame = torch.randn(batch, *input_shape, generator=generator)
    return frame.unsqueeze(0).expand(steps, *frame.shape).contiguous()


def param_counts(model: nn.Module) -> dict[str, int]:
    """``total``: all parameters; ``weights``: conv + linear weights (the paper's convention)."""
    total = sum(p.numel() for p in model.parameters())
    weights = sum(kind.leaf_weights(m) for m in model.modules() if (kind := leaf_kind(m)) is not None)
    return {"total": int(total), "weights": int(weights)}


def _owner(name: str, tt_names: set[str]) -> str | None:
    parent = name.rpartition(".")[0]
    return parent if parent in tt_names else None


def _div(value: int, by: int) -> int | float:
    return value // by if value % by == 0 else value / by


@dataclass
class LayerCount:
    """One reported layer: a dense Conv2d / Linear, or a whole TT layer (its four cores)."""

    name: str
    type: str  # conv | linear | tt-stt | tt-ptt | tt-htt | tt-linear (a TT-matrix)
    kernel: list[int] | None
    in_channels: int
    out_channels: int
    ranks: list[int] | None
    params: int
    weights: int
    macs_per_timestep: int | float
    macs_paper_per_timestep: int | float
    input_hw: list[int] | None
    output_hw: list[int] | None
    spike_input: bool
    cores: dict[str, int | float] = field(default_factory=dict)  # MACs per timestep per core

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def layer_counts(model: nn.Module, profile: Profile) -> list[LayerCount]:
    """Per-layer params and MACs per timestep (module order) from one profile."""
    tt_layers = {name: m for name, m in model.named_modules() if _cored(m)}
    rows: dict[str, LayerCount] = {}
    raw: dict[str, list[int]] = {}  # TT layer -> [MACs, paper-convention MACs] over the run
    items = profile.items
    for name, stats in profile.leaves.items():
        module = stats.module
        owner = _owner(name, set(tt_layers))
        if owner is None:
            if stats.samples == 0:
                continue  # never called (e.g. an unused branch)
            kind = leaf_kind(module)
            assert kind is not None
            kernel, cin, cout = kind.shape_fields(module)
            macs = _div(stats.macs, items)
            rows[name] = LayerCount(
                name, kind.count_type(module), kernel, cin, cout,
                list(module.ranks) if kind.owns_tt(module) else None,  # type: ignore[arg-type]
                sum(p.numel() for p in module.parameters()), kind.leaf_weights(module),
                macs, macs, list(stats.in_hw) if stats.in_hw else None,
                list(stats.out_hw) if stats.out_hw else None, stats.binary)
            continue
        tt = tt_layers[owner]
        row = rows.get(owner)
        if row is None:
            core1 = profile.leaves[f"{owner}.core1"]
            out_hw = profile.tt_out_hw.get(owner)
            tt_kind = kind_of(tt)
            assert tt_kind is not None
            kernel, cin, cout = tt_kind.shape_fields(tt)
            row = rows[owner] = LayerCount(
                owner, tt_kind.count_type(tt), kernel, cin, cout, list(tt.ranks),  # type: ignore[arg-type]
                sum(p.numel() for p in tt.parameters()), 0, 0, 0,
                list(core1.in_hw) if core1.in_hw else None, list(out_hw) if out_hw else None, core1.binary)
            raw[owner] = [0, 0]
        row.weights += module.weight.numel()  # type: ignore[union-attr]
        row.cores[name.rpartition(".")[2]] = _div(stats.macs, items)
        ho, wo = profile.tt_out_hw.get(owner, (0, 0))
        raw[owner][0] += stats.macs
        raw[owner][1] += module.weight.numel() * stats.samples * ho * wo  # type: ignore[union-attr]
        row.macs_per_timestep = _div(raw[owner][0], items)
        row.macs_paper_per_timestep = _div(raw[owner][1], items)
    return list(rows.values())


def paper_macs_total(model: nn.Module, profile: Profile) -> int:
    """The paper-convention MACs of the whole run (not per timestep)."""
    tt_names = {name for name, m in model.named_modules() if _cored(m)}
    total = 0
    for name, stats in profile.leaves.items():
        owner = _owner(name, tt_names)
        if owner is None:
            total += stats.macs
        else:
            ho, wo = profile.tt_out_hw.get(owner, (0, 0))
            total += stats.module.weight.numel() * stats.samples * ho * wo  # type: ignore[union-attr]
    return total


def on_meta(model: nn.Module) -> nn.Module:
    """A copy of ``model`` on the meta device: shapes without arithmetic, for counting. Neuron
    states are cleared first (a state left by a training step is not a leaf and cannot be copied)."""
    reset_states(model)
    return copy.deepcopy(model).to("meta")


R = TypeVar("R")


def counted_run(model: nn.Module, input_shape: tuple[int, ...], steps: int, run: Callable[[nn.Module, torch.Tensor], R],
                batch: int = 1, train: bool = False) -> R:
    """`run(copy, probe)` on a copy of `model` and a probe [steps, batch, *input_shape], for counting.

    On the meta device first: counts need shapes only, and there nothing is computed or allocated.
    A model whose forward branches on values cannot run there; it then runs for real on a CPU copy
    (what one such run needs was bounded before: `spiking.budget`), with the same counts."""
    try:
        meta = on_meta(model).train(train)
        return run(meta, probe_input(tuple(input_shape), steps, batch, device="meta"))
    except Exception as error:  # noqa: BLE001 - only the meta device's refusal is retried, the rest re-raised
        if not needs_values(error):
            raise
    reset_states(model)
    real = copy.deepcopy(model).to("cpu").train(train)
    reset_states(real)
    return run(real, probe_input(tuple(input_shape), steps, batch))


def count_model(model: nn.Module, input_shape: tuple[int, ...], timesteps: int, *,
                profile: Profile | None = None) -> dict[str, Any]:
    """Params and MACs per timestep of ``model`` for one sample, per layer and in total.

    Counts only need shapes, so by default the hooked run is on a meta-device copy (no arithmetic);
    pass a real ``profile`` to reuse one. Returns ``{"params": {total, weights}, "macs_per_timestep",
    "macs_paper_per_timestep", "layers": [LayerCount.to_dict()]}`` (``spike_input`` in the rows is
    only meaningful for a real profile)."""
    if profile is None:
        steps = timesteps if needs_all_steps(model) else 1
        profile = counted_run(model, tuple(input_shape), steps, profile_model)
    layers = layer_counts(model, profile)
    items = profile.items
    total = sum(s.macs for s in profile.leaves.values())
    return {
        "params": param_counts(model),
        "macs_per_timestep": _div(total, items),
        "macs_paper_per_timestep": _div(paper_macs_total(model, profile), items),
        "layers": [row.to_dict() for row in layers],
    }


def spike_profile(model: nn.Module, input_shape: tuple[int, ...], timesteps: int) -> Profile:
    """A real run on a probe input (eval mode): which layers see spikes (binary inputs)."""
    steps = timesteps if needs_all_steps(model) else 1
    was_training = model.training
    model.eval()
    try:
        return profile_model(model, probe_input(tuple(input_shape), steps))
    finally:
        model.train(was_training)
