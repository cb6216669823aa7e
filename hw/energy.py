"""Training (BPTT) energy: SATA's per-stage op and memory-access counts times per-op energies
(docs/hw.md, "What is modelled": Energy), with two energy tables: ``sata`` (SATA_Sim's
16-bit component table) and ``horowitz45`` (Horowitz, ISSCC 2014, 45 nm).

Energy = sum(ops x op energy) + sum(accesses x access energy) (+ static power x latency when a
static power is configured; 0 by default, as in SATA). Every layer's energy is added to the total,
linear layers included (SATA_Sim's scripts assign instead of add for Linear layers, wiping the conv
energy: that defect is deliberately not reproduced).

Units. ``horowitz45`` is in pJ (``joules_per_unit`` = 1e-12). SATA_Sim's table has no stated unit: its
values are relative (a 16-bit MAC = mul + acc = 0.2779, a scratchpad access the same, an SRAM access
7.02x and a DRAM access 200x that) and SATA_Sim labels its totals nJ after dividing by 1000, i.e. it
reads the table as pJ. The ``sata`` preset therefore also uses 1e-12 J per unit; every result states
the unit, the raw value (``energy_units``) and the factor, and the factor is configurable.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Callable, Iterable

from hw.workload import PHASES, LayerWorkload

#: SATA_Sim's 16-bit component energies (docs/hw.md; its own units, see the module docstring).
SATA_COMPONENTS: dict[str, float] = {
    "mul": 0.239, "acc": 0.0389, "add": 0.00967, "and": 0.000794,
    "comp": 0.00309, "mux": 0.00172, "reg": 0.0301, "shift": 0.00605,
}


@dataclass(frozen=True)
class OpEnergies:
    """Energy per operation: AC (spike x operand: accumulate), MAC, LIF update, PGU (LIF gradient)."""

    ac: float
    mac: float
    lif: float
    pgu: float


@dataclass(frozen=True)
class AccessEnergies:
    """Energy per memory access: off-chip DRAM, global buffer (SRAM, SATA's GLB), PE scratchpad."""

    dram: float
    sram: float
    spad: float


@dataclass(frozen=True)
class EnergyModel:
    """An energy table. ``forward_bits`` is SATA's b (spikes packed b per word in the memory
    counts); with ``fp_bit_scaling`` the forward-pass op energies scale by b/16 (SATA's model)."""

    name: str
    unit: str
    joules_per_unit: float
    ops: OpEnergies
    access: AccessEnergies
    forward_bits: int = 2
    fp_bit_scaling: bool = True
    static_power_w: float = 0.0
    notes: str = field(default="", compare=False)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def sata_composites(components: dict[str, float] = SATA_COMPONENTS) -> OpEnergies:
    """SATA's composite op energies from its component table (docs/hw.md):
    AC = acc + and; MAC = mul + acc; LIF = add + comp + 2 mux + 3 reg + shift;
    PGU = mul + 2 add + mux + 2 shift."""
    c = components
    return OpEnergies(
        ac=c["acc"] + c["and"],
        mac=c["mul"] + c["acc"],
        lif=c["add"] + c["comp"] + 2 * c["mux"] + 3 * c["reg"] + c["shift"],
        pgu=c["mul"] + 2 * c["add"] + c["mux"] + 2 * c["shift"],
    )


def sata() -> EnergyModel:
    """SATA_Sim's table: composites from :data:`SATA_COMPONENTS`; DRAM 55.58, SRAM 1.95, SPAD 0.2779
    per access (200x, 7.02x, 1x a 16-bit MAC, Eyeriss-style); b = 2; FP ops scaled by b/16."""
    return EnergyModel(
        name="sata", unit="SATA_Sim table unit (16-bit MAC = 0.2779), read as pJ",
        joules_per_unit=1e-12, ops=sata_composites(),
        access=AccessEnergies(dram=55.58, sram=1.95, spad=0.2779),
        forward_bits=2, fp_bit_scaling=True,
        notes="SATA (Yin et al., TCAD 2023) / SATA_Sim energy table, docs/hw.md",
    )


def horowitz45() -> EnergyModel:
    """Horowitz 45 nm (ISSCC 2014), pJ: fp32 MAC 4.6 (mult 3.7 + add 0.9), AC 0.9 (fp32 add).
    LIF and PGU are SATA's composites with fp32 parts, mult + 2 add = 5.5 (mux, reg, shift,
    and neglected). Per 64-bit access: DRAM 1300 (low end of 1.3-2.6 nJ), global buffer 20
    (32 KB SRAM), scratchpad 10 (8 KB SRAM, the smallest listed: an upper bound for a PE
    scratchpad). Each counted word is charged one access. No b/16 scaling of FP ops."""
    return EnergyModel(
        name="horowitz45", unit="pJ", joules_per_unit=1e-12,
        ops=OpEnergies(ac=0.9, mac=4.6, lif=5.5, pgu=5.5),
        access=AccessEnergies(dram=1300.0, sram=20.0, spad=10.0),
        forward_bits=2, fp_bit_scaling=False,
        notes="Horowitz, ISSCC 2014, 45 nm; docs/hw.md",
    )


#: Energy presets by name (one registry: add a table here).
ENERGY_PRESETS: dict[str, Callable[[], EnergyModel]] = {"sata": sata, "horowitz45": horowitz45}


def energy_preset(name: str) -> EnergyModel:
    """The named energy table (``sata`` or ``horowitz45``)."""
    try:
        return ENERGY_PRESETS[name]()
    except KeyError:
        raise ValueError(f"unknown energy preset {name!r} (allowed: {', '.join(ENERGY_PRESETS)})") from None


def _check_sparsity(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")


def layer_counts(layer: LayerWorkload, timesteps: int, *, sp_s: float, sp_du: float,
                 forward_bits: int) -> dict[str, dict[str, float]]:
    """Op and access counts of one layer over its active steps, per phase (SATA's formulas, docs/hw.md).

    With W = K*C*R*S, E2 = Ho*Wo, H2 = IH*IW, T = active steps, p = b for spike inputs (packed b
    per word) else 1:
    FP: AC = (1 - sp_s)*W*E2*T for spike inputs, else MAC = W*E2*T; LIF = K*E2*T;
        DRAM = W + T*(K*E2 + C*H2/p); GLB = 2*DRAM; SPAD = 2*(W + T*C*H2/p).
    BP: MAC = (1 - sp_du)*W*H2*T; PGU = K*E2*T;
        DRAM = T*(K*E2 + C*H2/p); GLB = 7*T*K*E2 + 2*T*C*H2/p + W; SPAD = W + T*K*E2.
    WG: AC = (1 - sp_s)*W*E2*T for spike inputs, else MAC = W*E2*T;
        DRAM = 2*W; GLB = 2*(1 + T)*W + T*(C*H2/p + K*E2); SPAD = GLB + 2*T*W.
    LIF/PGU and the gradient sparsity sp_du apply only where a neuron follows (dense layers, a TT
    layer's last core): the gradients reaching the inner TT cores are dense.
    """
    _check_sparsity("sp_s", sp_s)
    _check_sparsity("sp_du", sp_du)
    t = layer.steps(timesteps)
    w, e2, h2 = layer.weights, layer.out_pixels, layer.in_pixels
    k, c = layer.k, layer.c
    pack = forward_bits if layer.spike_input else 1
    inp = c * h2 / pack
    neuron = k * e2 * t if layer.has_neuron else 0
    grad_density = (1.0 - sp_du) if layer.has_neuron else 1.0
    if layer.spike_input:
        fp_ac, fp_mac = (1.0 - sp_s) * w * e2 * t, 0.0
    else:
        fp_ac, fp_mac = 0.0, float(w * e2 * t)
    dram_fp = w + t * (k * e2 + inp)
    glb_wg = 2 * (1 + t) * w + t * (inp + k * e2)
    return {
        "fp": {"ac": fp_ac, "mac": fp_mac, "lif": neuron, "pgu": 0,
               "dram": dram_fp, "sram": 2 * dram_fp, "spad": 2 * (w + t * inp)},
        "bp": {"ac": 0.0, "mac": grad_density * w * h2 * t, "lif": 0, "pgu": neuron,
               "dram": t * (k * e2 + inp), "sram": 7 * t * k * e2 + 2 * t * inp + w,
               "spad": w + t * k * e2},
        "wg": {"ac": fp_ac, "mac": fp_mac, "lif": 0, "pgu": 0,
               "dram": 2 * w, "sram": glb_wg, "spad": glb_wg + 2 * t * w},
    }


def training_energy(layers: Iterable[LayerWorkload], model: EnergyModel, timesteps: int, *,
                    sp_s: float, sp_du: float, phases: Iterable[str] = PHASES,
                    latency_s: float = 0.0) -> dict[str, object]:
    """Energy of one training iteration (one sample, T steps) over all layers and the given phases.

    Returns JSON-ready data: ``energy_j``, ``energy_units`` (raw, in ``unit``), ``unit``,
    ``joules_per_unit``, ``by_component_j`` (compute, spad, sram, dram, static), ``by_phase_j``
    (fp, bp, wg; static energy is not attributed to a phase), ``ops`` and ``accesses`` totals.
    Pass ``phases=("fp",)`` for forward-only (inference) energy.
    """
    phases = tuple(phases)
    unknown = [p for p in phases if p not in PHASES]
    if unknown:
        raise ValueError(f"unknown phases {unknown} (allowed: {', '.join(PHASES)})")
    op_e, acc_e = model.ops, model.access
    fp_scale = model.forward_bits / 16 if model.fp_bit_scaling else 1.0
    ops = dict.fromkeys(("ac", "mac", "lif", "pgu"), 0.0)
    accesses = dict.fromkeys(("dram", "sram", "spad"), 0.0)
    by_component = dict.fromkeys(("compute", "spad", "sram", "dram"), 0.0)
    by_phase = dict.fromkeys(phases, 0.0)
    for layer in layers:
        counts = layer_counts(layer, timesteps, sp_s=sp_s, sp_du=sp_du, forward_bits=model.forward_bits)
        for phase in phases:
            n = counts[phase]
            scale = fp_scale if phase == "fp" else 1.0
            compute = scale * (n["ac"] * op_e.ac + n["mac"] * op_e.mac + n["lif"] * op_e.lif
                               + n["pgu"] * op_e.pgu)
            memory = {lvl: n[lvl] * getattr(acc_e, lvl) for lvl in accesses}
            by_component["compute"] += compute
            for lvl, value in memory.items():
                by_component[lvl] += value
                accesses[lvl] += n[lvl]
            for op in ops:
                ops[op] += n[op]
            by_phase[phase] += compute + sum(memory.values())
    j = model.joules_per_unit
    static_j = model.static_power_w * latency_s
    units = sum(by_component.values())
    component_j = {key: value * j for key, value in by_component.items()}
    component_j["static"] = static_j
    return {
        "energy_j": units * j + static_j,
        "energy_units": units,
        "unit": model.unit,
        "joules_per_unit": j,
        "by_component_j": component_j,
        "by_phase_j": {key: value * j for key, value in by_phase.items()},
        "ops": ops,
        "accesses": accesses,
    }


def with_overrides(model: EnergyModel, **changes: object) -> EnergyModel:
    """A copy of ``model`` with top-level fields replaced (``ops``/``access`` as partial dicts)."""
    ops = changes.pop("ops", None)
    access = changes.pop("access", None)
    if ops:
        changes["ops"] = replace(model.ops, **ops)  # type: ignore[arg-type]
    if access:
        changes["access"] = replace(model.access, **access)  # type: ignore[arg-type]
    return replace(model, **changes)  # type: ignore[arg-type]
