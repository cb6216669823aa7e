"""Parameters and MACs per timestep, per layer, measured with forward hooks (reference/paper.md,
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
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import math

from ttsnn_cli.layers.kinds import is_tt_layer
from ttsnn_cli.layers.linear import TTLinear
from ttsnn_cli.spiking.runner import run_timesteps
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


CONVS = (nn.Conv2d, nn.Conv1d)
LEAVES = (nn.Conv2d, nn.Conv1d, nn.Linear, TTLinear)


def _conv_window(conv: nn.Conv2d | nn.Conv1d) -> int:
    return (conv.in_channels // conv.groups) * math.prod(conv.kernel_size)


def _map(t: torch.Tensor) -> tuple[int, int]:
    """The spatial size of a conv input/output: (H, W), or (1, L) for a Conv1d."""
    return (int(t.shape[-2]), int(t.shape[-1])) if t.dim() == 4 else (1, int(t.shape[-1]))


def _first_step_fanout(layer: TTLinear) -> int:
    """Values a TT-matrix's first contraction writes per input element: m_1 r_1."""
    return layer.out_factors[0] * (layer.ranks[0] if layer.ranks else 1)


def _exact_acs(module: nn.Module, x: torch.Tensor) -> int:
    """Accumulates a spike input costs: each output sums the nonzero inputs in its window."""
    nz = (x != 0).to(torch.float32)
    if isinstance(module, nn.Linear):
        return int(nz.sum().item()) * module.out_features
    if isinstance(module, TTLinear):
        return int(nz.sum().item()) * _first_step_fanout(module)
    conv: nn.Conv2d = module  # type: ignore[assignment]
    if conv.groups != 1:
        return 0
    ones = torch.ones(1, conv.in_channels, *conv.kernel_size, dtype=torch.float32, device=x.device)
    padding = conv.padding if conv.padding_mode == "zeros" else 0
    if conv.padding_mode != "zeros" and any(conv.padding if not isinstance(conv.padding, str) else (1,)):
        nz = F.pad(nz, conv._reversed_padding_repeated_twice)  # the padded values of a spike map
    run = F.conv1d if isinstance(conv, nn.Conv1d) else F.conv2d
    counts = run(nz, ones, None, conv.stride, padding, conv.dilation)
    return int(counts.sum().item()) * conv.out_channels


def profile_model(model: nn.Module, inputs: torch.Tensor, exact_acs: bool = False) -> Profile:
    """Run ``inputs`` [T, B, ...] through ``model`` (no grad) with hooks on every Conv2d / Linear
    (TT cores included) and every TTConv2d. ``exact_acs`` also counts spike accumulates exactly
    (a ones-kernel conv over the nonzero mask: costs about one extra conv per layer)."""
    leaves: dict[str, LeafStats] = {}
    tt_out: dict[str, tuple[int, int]] = {}
    handles = []

    def leaf_hook(stats: LeafStats):
        def hook(module: nn.Module, args: tuple[Any, ...], out: torch.Tensor) -> None:
            x = args[0]
            if isinstance(module, CONVS):
                batched = 4 if isinstance(module, nn.Conv2d) else 3
                items = x.shape[0] if x.dim() == batched else 1
                stats.macs += out.numel() * _conv_window(module)
                stats.in_hw = stats.in_hw or _map(x)
                stats.out_hw = stats.out_hw or _map(out)
            elif isinstance(module, TTLinear):
                items = out.numel() // module.out_features
                total = items * module.macs_per_item()
                stats.macs += total
                stats.inner_macs += total - items * module.in_features * _first_step_fanout(module)
                stats.in_hw = stats.out_hw = (1, 1)
            else:
                items = out.numel() // module.out_features  # type: ignore[operator]
                stats.macs += out.numel() * module.in_features  # type: ignore[operator]
                stats.in_hw = stats.out_hw = (1, 1)
            stats.samples += items
            if x.device.type != "meta":
                stats.binary = stats.binary and bool(((x == 0) | (x == 1)).all())
                stats.input_nonzero += int((x != 0).sum())
                stats.input_numel += x.numel()
                if exact_acs and stats.binary:
                    stats.acs_exact += _exact_acs(module, x)
            else:
                stats.binary = False
        return hook

    def tt_hook(name: str):
        def hook(module: nn.Module, args: tuple[Any, ...], out: torch.Tensor) -> None:
            tt_out.setdefault(name, _map(out))
        return hook

    for name, module in model.named_modules():
        if isinstance(module, LEAVES):
            stats = LeafStats(name, module)
            leaves[name] = stats
            handles.append(module.register_forward_hook(leaf_hook(stats)))
        elif is_tt_layer(module):
            handles.append(module.register_forward_hook(tt_hook(name)))
    try:
        with torch.no_grad():
            out = run_timesteps(model, inputs)
    finally:
        for handle in handles:
            handle.remove()
    for name, stats in leaves.items():
        parent, _, leaf = name.rpartition(".")
        if parent in tt_out or (leaf.startswith("core") and parent and is_tt_layer(model.get_submodule(parent))):
            # a TT layer's cores after the first take the first core's real-valued output (an all-zero
            # input, from silent neurons upstream, would otherwise look like spikes)
            stats.binary = stats.binary and leaf == "core1"
    # the steps the model ran: an own-loop model taking one frame runs its own number, whatever it was given
    return Profile(leaves, tt_out, int(out.shape[0]), int(inputs.shape[1]))


def needs_all_steps(model: nn.Module) -> bool:
    """Whether per-step costs vary over time (HTT layers): then count over all T steps."""
    return any(is_tt_layer(m) and getattr(m, "mode", "stt") == "htt" for m in model.modules())


def probe_input(input_shape: tuple[int, ...], steps: int, batch: int = 1, seed: int = 0) -> torch.Tensor:
    """A real-valued probe [T, B, *input_shape] (seeded normal: never mistaken for spikes)."""
    generator = torch.Generator().manual_seed(seed)
    frame = torch.randn(batch, *input_shape, generator=generator)
    return frame.unsqueeze(0).expand(steps, *frame.shape).contiguous()


def param_counts(model: nn.Module) -> dict[str, int]:
    """``total``: all parameters; ``weights``: conv + linear weights (the paper's convention)."""
    total = sum(p.numel() for p in model.parameters())
    weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, (*CONVS, nn.Linear)))
    weights += sum(c.numel() for m in model.modules() if isinstance(m, TTLinear) for c in m.cores)
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
    tt_layers = {name: m for name, m in model.named_modules() if is_tt_layer(m) and not isinstance(m, TTLinear)}
    rows: dict[str, LayerCount] = {}
    raw: dict[str, list[int]] = {}  # TT layer -> [MACs, paper-convention MACs] over the run
    items = profile.items
    for name, stats in profile.leaves.items():
        module = stats.module
        owner = _owner(name, set(tt_layers))
        if owner is None:
            if stats.samples == 0:
                continue  # never called (e.g. an unused branch)
            conv = isinstance(module, CONVS)
            macs = _div(stats.macs, items)
            if isinstance(module, TTLinear):
                rows[name] = LayerCount(
                    name, "tt-linear", None, module.in_features, module.out_features, list(module.ranks),
                    sum(p.numel() for p in module.parameters()), sum(c.numel() for c in module.cores), macs, macs,
                    [1, 1], [1, 1], stats.binary)
                continue
            rows[name] = LayerCount(
                name, "conv" if conv else "linear",
                list(module.kernel_size) if conv else None,  # type: ignore[union-attr]
                module.in_channels if conv else module.in_features,  # type: ignore[union-attr]
                module.out_channels if conv else module.out_features,  # type: ignore[union-attr]
                None, sum(p.numel() for p in module.parameters()), module.weight.numel(),  # type: ignore[union-attr]
                macs, macs, list(stats.in_hw) if stats.in_hw else None,
                list(stats.out_hw) if stats.out_hw else None, stats.binary)
            continue
        tt = tt_layers[owner]
        row = rows.get(owner)
        if row is None:
            core1 = profile.leaves[f"{owner}.core1"]
            out_hw = profile.tt_out_hw.get(owner)
            row = rows[owner] = LayerCount(
                owner, f"tt-{tt.mode}", [tt.kernel_size] if isinstance(tt.kernel_size, int) else list(tt.kernel_size), tt.in_channels, tt.out_channels, list(tt.ranks),
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
    tt_names = {name for name, m in model.named_modules() if is_tt_layer(m) and not isinstance(m, TTLinear)}
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


def count_model(model: nn.Module, input_shape: tuple[int, ...], timesteps: int, *,
                profile: Profile | None = None) -> dict[str, Any]:
    """Params and MACs per timestep of ``model`` for one sample, per layer and in total.

    Counts only need shapes, so by default the hooked run is on a meta-device copy (no arithmetic);
    pass a real ``profile`` to reuse one. Returns ``{"params": {total, weights}, "macs_per_timestep",
    "macs_paper_per_timestep", "layers": [LayerCount.to_dict()]}`` (``spike_input`` in the rows is
    only meaningful for a real profile)."""
    if profile is None:
        steps = timesteps if needs_all_steps(model) else 1
        meta = on_meta(model).eval()
        profile = profile_model(meta, probe_input(tuple(input_shape), steps).to("meta"))
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
