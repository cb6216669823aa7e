"""Schedules of one model's workload on one accelerator, side by side (docs/hw.md, "What is
modelled": Schedules): cycles, latency, energy and their breakdowns, as JSON-ready dicts.

Schedules (``SCHEDULES``):

- ``dense``: the dense network (the TT groups merged back into their convs unless given).
- ``stt``: all TT cores one after another, every step (the STT chain).
- ``ptt_sequential``: PTT's cores (both middle cores read the first core's output) one after another.
- ``ptt_parallel``: PTT with the two middle cores ``tt_h`` / ``tt_w`` of a layer running concurrently,
  each on half the array (rows or columns halved, ``array.split``); the pair takes the slower half.
  If the split would be slower than running both on the whole array one after the other (never for
  equal-shaped cores), the controller runs them sequentially: a pair costs
  min(max(half_h, half_w), full_h + full_w).
- ``htt``: HTT, i.e. PTT (parallel middle cores) for t < ceil(T/2), first and last cores only after.

Training = FP + BP + WG per layer and active step, each a GEMM (``LayerWorkload.gemm``) mapped onto
the array by the configured dataflow and SCALE-Sim closed form (``hw.cycles.gemm_cycles``):
FP (Ho*Wo x R*S*C) @ (R*S*C x K); BP (IH*IW x R*S*K) @ (R*S*K x C), the transposed conv giving the
input gradient; WG (R*S*C x Ho*Wo) @ (Ho*Wo x K), one per step (accumulated into the stationary
outputs). The phases run one after another on the same array; LIF/PGU element-wise ops run in
their own units alongside and add energy, not array cycles. Sparsity gates energy only: cycles are
those of the dense GEMMs (as in SATA). Latency = cycles / clock.

Energy does not depend on the schedule's concurrency (same ops and accesses) unless the
accelerator has a static power: PTT sequential and parallel differ in time, not in dynamic energy.
"""

from __future__ import annotations

from typing import Callable, Iterable

from hw.config import AcceleratorConfig
from hw.cycles import gemm_cycles, sata_layer_cycles
from hw.energy import training_energy
from hw.workload import MIDDLE_BRANCHES, PHASES, LayerWorkload, dense_equivalent, htt_view, ptt_view

SCHEDULES: tuple[str, ...] = ("dense", "stt", "ptt_sequential", "ptt_parallel", "htt")

DESCRIPTIONS: dict[str, str] = {
    "dense": "dense network, every layer on the whole array",
    "stt": "STT: all TT cores one after another, every timestep",
    "ptt_sequential": "PTT: both middle cores read the first core's output, run one after another",
    "ptt_parallel": "PTT: the two middle cores run concurrently on the array split in two halves",
    "htt": "HTT: PTT with concurrent middle cores for t < ceil(T/2), first and last cores only after",
}

#: (workload view, middle cores concurrent) per TT schedule.
_VIEWS: dict[str, tuple[Callable[[list[LayerWorkload]], list[LayerWorkload]], bool]] = {
    "stt": (list, False),
    "ptt_sequential": (ptt_view, False),
    "ptt_parallel": (ptt_view, True),
    "htt": (htt_view, True),
}

#: comparisons reported by :func:`compare_schedules` (candidate, reference).
COMPARISONS: tuple[tuple[str, str], ...] = (
    ("stt", "dense"), ("ptt_parallel", "dense"), ("htt", "dense"),
    ("ptt_parallel", "stt"), ("ptt_parallel", "ptt_sequential"), ("htt", "stt"),
)


def half_array(accel: AcceleratorConfig) -> tuple[int, int]:
    """(rows, cols) of one half of the array when PTT's middle cores share it."""
    rows, cols = accel.array.rows, accel.array.cols
    return (rows // 2, cols) if accel.array.split == "rows" else (rows, cols // 2)


def layer_phase_cycles(layer: LayerWorkload, timesteps: int, accel: AcceleratorConfig, *,
                       rows: int | None = None, cols: int | None = None,
                       phases: Iterable[str] = PHASES) -> dict[str, int]:
    """Array cycles of one layer per training phase over its active steps:
    steps * gemm_cycles(phase GEMM) on a ``rows x cols`` array (default: the whole array)."""
    rows = accel.array.rows if rows is None else rows
    cols = accel.array.cols if cols is None else cols
    steps = layer.steps(timesteps)
    return {phase: steps * gemm_cycles(layer.gemm(phase), rows=rows, cols=cols, dataflow=accel.dataflow,
                                       version=accel.scalesim_version)  # type: ignore[arg-type]
            for phase in phases}


def _pairs(layers: list[LayerWorkload]) -> dict[str, dict[str, LayerWorkload]]:
    pairs: dict[str, dict[str, LayerWorkload]] = {}
    for layer in layers:
        if layer.branch in MIDDLE_BRANCHES:
            pairs.setdefault(layer.group, {})[layer.branch] = layer
    return {g: p for g, p in pairs.items() if len(p) == 2}


def _cycles(layers: list[LayerWorkload], cost: Callable[[LayerWorkload, int | None, int | None], int],
            halves: tuple[int, int], concurrent: bool) -> int:
    """Total of ``cost(layer, rows, cols)``; concurrent middle pairs cost
    min(max(half_h, half_w), full_h + full_w)."""
    pairs = _pairs(layers) if concurrent else {}
    total = 0
    for layer in layers:
        pair = pairs.get(layer.group) if layer.branch in MIDDLE_BRANCHES else None
        if pair is None:
            total += cost(layer, None, None)
        elif layer.branch == "tt_h":
            h, w = pair["tt_h"], pair["tt_w"]
            split = max(cost(h, *halves), cost(w, *halves))
            total += min(split, cost(h, None, None) + cost(w, None, None))
    return total


def schedule_cycles(layers: list[LayerWorkload], accel: AcceleratorConfig, timesteps: int, *,
                    concurrent: bool = False, phases: Iterable[str] = PHASES) -> dict[str, int]:
    """Training cycles per phase of a workload (already in the schedule's view)."""
    halves = half_array(accel)
    return {phase: _cycles(layers, lambda l, r, c, p=phase: layer_phase_cycles(  # type: ignore[misc]
                l, timesteps, accel, rows=r, cols=c, phases=(p,))[p], halves, concurrent)
            for phase in phases}


def sata_inference(layers: list[LayerWorkload], accel: AcceleratorConfig, timesteps: int, *,
                   concurrent: bool = False) -> int:
    """Forward-only cycles in SATA_Sim's dataflow (steps * OS_v2 + WS filter-load span per layer,
    ``hw.cycles.sata_layer_cycles``) on this accelerator's array, concurrent pairs as above."""
    def cost(layer: LayerWorkload, rows: int | None, cols: int | None) -> int:
        return sata_layer_cycles(layer, timesteps, rows=rows or accel.array.rows,
                                 cols=cols or accel.array.cols)
    return _cycles(layers, cost, half_array(accel), concurrent)


def simulate_schedule(layers: list[LayerWorkload], accel: AcceleratorConfig, timesteps: int, *,
                      concurrent: bool = False, sp_s: float | None = None, sp_du: float | None = None,
                      phases: Iterable[str] = PHASES, inference: bool = False,
                      description: str = "") -> dict[str, object]:
    """Cycles, latency and energy of one workload (already in its schedule's view).

    Returns ``{"description", "cycles", "latency_s", "energy_j", "energy_units", "energy_unit",
    "timesteps", "sparsity", "breakdown": {"cycles": {phase}, "energy_j": {compute, spad, sram,
    dram, static}, "energy_phase_j": {phase}, "ops", "accesses"}}`` (+ ``inference`` when asked:
    SATA dataflow forward cycles, latency and FP-only energy).
    """
    phases = tuple(phases)
    sp_s = accel.sparsity.sp_s if sp_s is None else sp_s
    sp_du = accel.sparsity.sp_du if sp_du is None else sp_du
    model = accel.energy_model()
    by_phase = schedule_cycles(layers, accel, timesteps, concurrent=concurrent, phases=phases)
    cycles = sum(by_phase.values())
    latency = cycles / accel.clock_hz
    energy = training_energy(layers, model, timesteps, sp_s=sp_s, sp_du=sp_du, phases=phases,
                             latency_s=latency)
    result: dict[str, object] = {
        "description": description,
        "cycles": cycles,
        "latency_s": latency,
        "energy_j": energy["energy_j"],
        "energy_units": energy["energy_units"],
        "energy_unit": energy["unit"],
        "timesteps": timesteps,
        "sparsity": {"sp_s": sp_s, "sp_du": sp_du},
        "breakdown": {
            "cycles": by_phase,
            "energy_j": energy["by_component_j"],
            "energy_phase_j": energy["by_phase_j"],
            "ops": energy["ops"],
            "accesses": energy["accesses"],
        },
    }
    if inference:
        inf_cycles = sata_inference(layers, accel, timesteps, concurrent=concurrent)
        inf_latency = inf_cycles / accel.clock_hz
        inf_energy = training_energy(layers, model, timesteps, sp_s=sp_s, sp_du=sp_du, phases=("fp",),
                                     latency_s=inf_latency)
        result["inference"] = {"cycles": inf_cycles, "latency_s": inf_latency,
                               "energy_j": inf_energy["energy_j"], "energy_units": inf_energy["energy_units"]}
    return result


def simulate_schedules(layers: list[LayerWorkload], accel: AcceleratorConfig, timesteps: int, *,
                       dense_layers: list[LayerWorkload] | None = None,
                       schedules: Iterable[str] = SCHEDULES, sp_s: float | None = None,
                       sp_du: float | None = None, phases: Iterable[str] = PHASES,
                       inference: bool = False) -> dict[str, dict[str, object]]:
    """All schedules of a model side by side: ``{schedule name: simulate_schedule(...)}``, the
    ``report`` JSON's ``hw`` object. Each TT schedule also gets ``vs_dense`` (cycle and energy
    ratios) when ``dense`` is computed.

    ``layers``: the model's workload with TT cores tagged by branch and group, as the STT chain
    computes them (the PTT/HTT views are derived here). Without TT groups only ``dense`` is
    reported. ``dense_layers`` defaults to ``dense_equivalent(layers)``. Sparsities default to the
    accelerator's; pass measured spike / gradient sparsities when known.
    """
    schedules = tuple(schedules)
    unknown = [s for s in schedules if s not in SCHEDULES]
    if unknown:
        raise ValueError(f"unknown schedules {unknown} (allowed: {', '.join(SCHEDULES)})")
    has_tt = any(layer.branch != "dense" for layer in layers)
    common = {"sp_s": sp_s, "sp_du": sp_du, "phases": tuple(phases), "inference": inference}
    results: dict[str, dict[str, object]] = {}
    for name in schedules:
        if name == "dense":
            dense = dense_layers if dense_layers is not None else dense_equivalent(layers)
            results[name] = simulate_schedule(dense, accel, timesteps, description=DESCRIPTIONS[name],
                                              **common)  # type: ignore[arg-type]
        elif has_tt:
            view, concurrent = _VIEWS[name]
            results[name] = simulate_schedule(view(layers), accel, timesteps, concurrent=concurrent,
                                              description=DESCRIPTIONS[name], **common)  # type: ignore[arg-type]
    if "dense" in results:
        base = results["dense"]
        for name, res in results.items():
            if name != "dense":
                res["vs_dense"] = _ratios(res, base)
    return results


def _ratios(candidate: dict[str, object], reference: dict[str, object]) -> dict[str, float]:
    def ratio(key: str) -> float:
        ref = float(reference[key])  # type: ignore[arg-type]
        return float(candidate[key]) / ref if ref else float("nan")  # type: ignore[arg-type]
    return {"cycles": ratio("cycles"), "energy": ratio("energy_j")}


def compare_schedules(results: dict[str, dict[str, object]],
                      pairs: Iterable[tuple[str, str]] = COMPARISONS) -> list[dict[str, object]]:
    """Named comparisons between computed schedules: cycle and energy ratios and % changes
    (negative = saving), e.g. ``ptt_parallel`` vs ``stt`` (the comparison closest to the paper's
    -17.7 % time / -28.3 % energy claims, see docs/hw.md). Pairs with a missing schedule are skipped."""
    out = []
    for cand, ref in pairs:
        if cand in results and ref in results:
            r = _ratios(results[cand], results[ref])
            out.append({"name": f"{cand} vs {ref}", "candidate": cand, "reference": ref,
                        "cycles_ratio": r["cycles"], "energy_ratio": r["energy"],
                        "time_change_pct": 100 * (r["cycles"] - 1), "energy_change_pct": 100 * (r["energy"] - 1)})
    return out
