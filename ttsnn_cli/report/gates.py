"""CI gates on a report: each a name, the measured value, the limit and the verdict.

- ``min_param_reduction``: dense / TT conv + linear weights (the paper's convention, ``ratios.weights``)
  must be at least the limit;
- ``min_mac_reduction``: dense / TT MACs per timestep as the layers compute them (``ratios.macs``);
- ``max_energy_ratio``: simulated training energy of the model's own schedule (``stt``,
  ``ptt_parallel`` or ``htt``) over ``dense`` must be at most the limit;
- ``max_acc_drop``: dense minus TT test accuracy, in percentage points, at most the limit.
The CLI exits 4 when any gate fails (`ttsnn_cli.errors.GateFailedError`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from ttsnn_cli.errors import BadInputError

#: the hw schedule a TT mode trains with
MODE_SCHEDULE = {"stt": "stt", "ptt": "ptt_parallel", "htt": "htt", "mixed": "stt", "dense": "dense"}


@dataclass
class GateLimits:
    min_param_reduction: float | None = None
    min_mac_reduction: float | None = None
    max_energy_ratio: float | None = None
    max_acc_drop: float | None = None

    def any(self) -> bool:
        return any(getattr(self, f.name) is not None for f in fields(self))


def _gate(name: str, value: float, limit: float, at_least: bool) -> dict[str, Any]:
    passed = value >= limit if at_least else value <= limit
    return {"name": name, "value": value, "limit": limit, "passed": bool(passed),
            "rule": f"value {'>=' if at_least else '<='} limit"}


def evaluate_gates(report: dict[str, Any], limits: GateLimits) -> list[dict[str, Any]]:
    """The gates asked for, in a fixed order. Raises BadInputError when a gate lacks what it
    measures (no baseline, no hw run, no accuracy)."""
    gates = []
    ratios = report.get("ratios")
    for name, key in (("min_param_reduction", "weights"), ("min_mac_reduction", "macs")):
        limit = getattr(limits, name)
        if limit is None:
            continue
        if not ratios:
            raise BadInputError(f"--{name.replace('_', '-')} needs a dense baseline: report a TT bundle or pass --baseline")
        gates.append(_gate(name, ratios[key], limit, at_least=True))
    if limits.max_energy_ratio is not None:
        hw = report.get("hw") or {}
        schedule = MODE_SCHEDULE.get(report.get("mode", "stt"), "stt")
        if "dense" not in hw or schedule not in hw:
            raise BadInputError("--max-energy-ratio needs the hw model with a dense baseline and a TT model")
        ratio = hw[schedule]["energy_j"] / hw["dense"]["energy_j"]
        gate = _gate("max_energy_ratio", ratio, limits.max_energy_ratio, at_least=False)
        gate["schedule"] = schedule
        gates.append(gate)
    if limits.max_acc_drop is not None:
        accuracy = report.get("accuracy")
        if not accuracy:
            raise BadInputError("--max-acc-drop needs --data (both models are evaluated on its test split)")
        gates.append(_gate("max_acc_drop", accuracy["drop"], limits.max_acc_drop, at_least=False))
    return gates


def failed(gates: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [gate for gate in gates if not gate["passed"]]
