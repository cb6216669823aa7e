"""Synaptic operations per timestep: accumulates (ACs) for spike inputs, MACs for real-valued ones
(docs/hw.md; `hw.LayerWorkload`: "only a TT layer's first core sees spikes: cores 2-4 take real
values, so they cost MACs").

A layer's input counts as spikes when every value it received was 0 or 1 (seen by forward hooks,
`counting.profile_model`). Its ACs are:
- measured (``--data``): exactly, each output adds the nonzero inputs of its window
  (ones-kernel conv over the nonzero mask) times the output channels; the spike rate is the
  fraction of nonzero inputs;
- declared (no data): ``rate x MACs`` with a declared spike rate (default 0.1, i.e. SATA's spike
  sparsity 0.9).
Real-valued inputs cost their MACs (the first layer on analog input, TT cores 2-4, shortcuts on
membranes, the classifier on averaged spikes). A TT-matrix Linear on spikes costs ACs for its first
contraction step (each input spike adds m_1 r_1 values) and MACs for the later steps, which
contract real-valued intermediates.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ttsnn_cli.kinds import is_tt_layer
from ttsnn_cli.report.counting import Profile

DEFAULT_SPIKE_RATE = 0.1  # SATA's default spike sparsity sp_s = 0.9 (docs/hw.md)


def _div(value: float, by: int) -> float:
    return value / by if by else 0.0


def synops(model: nn.Module, profile: Profile, *, measured: bool, rate: float = DEFAULT_SPIKE_RATE,
           spike_flags: dict[str, bool] | None = None, source: str = "") -> dict[str, Any]:
    """SynOps per timestep from a profile.

    ``measured``: the profile ran on data with exact AC counts; otherwise ACs = ``rate`` x MACs.
    ``spike_flags`` overrides which layers take spikes (by leaf name; used for a baseline profiled on
    the meta device, borrowing the TT model's flags). Returns ``{"acs", "macs", "total",
    "spike_rate", "source", "layers": [{name, spike_input, rate, acs, macs}]}``.
    """
    tt_names = {name for name, m in model.named_modules() if is_tt_layer(m)}
    items = profile.items
    rows = []
    acs = macs = 0.0
    nonzero = numel = 0
    for name, stats in profile.leaves.items():
        if stats.samples == 0:
            continue
        spike = stats.binary if spike_flags is None else spike_flags.get(name, False)
        if spike and measured:
            layer_rate = _div(stats.input_nonzero, stats.input_numel)
            layer_acs = _div(stats.acs_exact, items)
            nonzero += stats.input_nonzero
            numel += stats.input_numel
        elif spike:
            layer_rate = rate
            layer_acs = rate * (stats.macs - stats.inner_macs) / items
        else:
            layer_rate, layer_acs = None, 0.0
        layer_macs = stats.inner_macs / items if spike else stats.macs / items
        acs += layer_acs
        macs += layer_macs
        parent = name.rpartition(".")[0]
        rows.append({"name": name, "layer": parent if parent in tt_names else name, "spike_input": spike,
                     "rate": layer_rate, "acs": layer_acs, "macs": layer_macs})
    mean_rate = _div(nonzero, numel) if measured else rate
    return {"acs": acs, "macs": macs, "total": acs + macs, "spike_rate": mean_rate,
            "source": source or ("measured" if measured else f"declared spike rate {rate}"), "layers": rows}


def spike_flags_by_layer(model: nn.Module, profile: Profile) -> dict[str, bool]:
    """Which reported layers take spikes: dense leaves by name, TT layers by their first core."""
    tt_names = {name for name, m in model.named_modules() if is_tt_layer(m)}
    flags: dict[str, bool] = {}
    for name, stats in profile.leaves.items():
        parent, _, leaf = name.rpartition(".")
        if parent in tt_names:
            if leaf == "core1":
                flags[parent] = stats.binary
        else:
            flags[name] = stats.binary
    return flags
