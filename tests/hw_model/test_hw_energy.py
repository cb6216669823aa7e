"""hw.energy: SATA's BPTT energy model (the SATA paper, "SATA training (BPTT) energy model") and
the Horowitz 45 nm preset."""

from __future__ import annotations

import itertools

import pytest

from hw.energy import (
    SATA_COMPONENTS,
    energy_preset,
    horowitz45,
    layer_counts,
    sata,
    sata_composites,
    training_energy,
    with_overrides,
)
from hw.workload import LayerWorkload, from_csv, workload_path

TINY = LayerWorkload("tiny", 2, 2, 1, 1, 2, 3)  # W = 6, E^2 = H^2 = 4


def test_sata_composite_op_energies():
    ops = sata_composites(SATA_COMPONENTS)
    assert ops.ac == pytest.approx(0.039694, abs=1e-9)
    assert ops.mac == pytest.approx(0.2779, abs=1e-9)
    assert ops.lif == pytest.approx(0.11255, abs=1e-9)
    assert ops.pgu == pytest.approx(0.27216, abs=1e-9)
    table = sata()
    assert (table.access.dram, table.access.sram, table.access.spad) == (55.58, 1.95, 0.2779)
    assert table.forward_bits == 2 and table.fp_bit_scaling


def test_horowitz45_preset_values():
    table = horowitz45()
    assert (table.ops.mac, table.ops.ac) == (4.6, 0.9)
    assert table.unit == "pJ" and table.joules_per_unit == 1e-12
    assert not table.fp_bit_scaling
    with pytest.raises(ValueError, match="allowed: sata, horowitz45"):
        energy_preset("nope")


def test_layer_counts_by_hand():
    # T = 2, sp_s = 0.5, sp_du = 0.25, b = 2 (the SATA energy formulas of docs/hw.md, evaluated by hand)
    n = layer_counts(TINY, 2, sp_s=0.5, sp_du=0.25, forward_bits=2)
    assert n["fp"] == {"ac": 24, "mac": 0, "lif": 24, "pgu": 0, "dram": 38, "sram": 76, "spad": 28}
    assert n["bp"] == {"ac": 0, "mac": 36, "lif": 0, "pgu": 24, "dram": 32, "sram": 190, "spad": 30}
    assert n["wg"] == {"ac": 24, "mac": 0, "lif": 0, "pgu": 0, "dram": 12, "sram": 68, "spad": 92}


def test_training_energy_by_hand_sata():
    result = training_energy([TINY], sata(), 2, sp_s=0.5, sp_du=0.25)
    fp = 0.125 * (24 * 0.039694 + 24 * 0.11255)  # FP ops scaled by b/16
    bp = 36 * 0.2779 + 24 * 0.27216
    wg = 24 * 0.039694
    memory = 82 * 55.58 + 334 * 1.95 + 150 * 0.2779
    assert result["energy_units"] == pytest.approx(fp + bp + wg + memory, rel=1e-12)
    assert result["energy_j"] == pytest.approx((fp + bp + wg + memory) * 1e-12, rel=1e-12)
    comp = result["by_component_j"]
    assert comp["compute"] == pytest.approx((fp + bp + wg) * 1e-12, rel=1e-12)
    assert comp["dram"] == pytest.approx(82 * 55.58e-12, rel=1e-12)
    assert sum(comp.values()) == pytest.approx(result["energy_j"], rel=1e-12)
    assert sum(result["by_phase_j"].values()) == pytest.approx(result["energy_j"], rel=1e-12)


def test_fp_bit_scaling_is_b_over_16():
    scaled = training_energy([TINY], sata(), 2, sp_s=0.5, sp_du=0.25, phases=("fp",))
    plain = training_energy([TINY], with_overrides(sata(), fp_bit_scaling=False), 2, sp_s=0.5, sp_du=0.25,
                            phases=("fp",))
    assert scaled["by_component_j"]["compute"] == pytest.approx(plain["by_component_j"]["compute"] * 2 / 16)
    assert scaled["by_component_j"]["dram"] == plain["by_component_j"]["dram"]


def test_real_valued_inputs_cost_macs_and_are_not_packed():
    real = LayerWorkload("real", 2, 2, 1, 1, 2, 3, spike_input=False)
    n = layer_counts(real, 2, sp_s=0.5, sp_du=0.25, forward_bits=2)
    assert (n["fp"]["ac"], n["fp"]["mac"]) == (0, 48)  # dense MACs, no spike sparsity
    assert n["fp"]["dram"] == 6 + 2 * (12 + 8)  # C*H^2/1, one word per real value
    inner = LayerWorkload("inner", 2, 2, 3, 1, 2, 2, padding=(1, 0), branch="tt_h", spike_input=False, group="g")
    m = layer_counts(inner, 2, sp_s=0.5, sp_du=0.9, forward_bits=2)
    assert m["fp"]["lif"] == m["bp"]["pgu"] == 0  # no neuron after an inner TT core
    assert m["bp"]["mac"] == inner.weights * inner.in_pixels * 2  # its gradient is dense


def test_linear_layers_add_not_assign():
    # SATA_Sim's Linear branch assigns instead of adding, wiping the conv energy: not here.
    conv = LayerWorkload("conv", 8, 8, 3, 3, 4, 4, padding=(1, 1))
    fc = LayerWorkload("fc", 1, 1, 1, 1, 256, 10, kind="linear")
    both = training_energy([conv, fc], sata(), 4, sp_s=0.9, sp_du=0.7)["energy_j"]
    each = [training_energy([layer], sata(), 4, sp_s=0.9, sp_du=0.7)["energy_j"] for layer in (conv, fc)]
    assert both == pytest.approx(sum(each), rel=1e-12)
    assert both > max(each)


@pytest.mark.parametrize("table", [sata(), horowitz45()], ids=["sata", "horowitz45"])
def test_more_sparsity_never_costs_more(table):
    layers = from_csv(workload_path("sata_res34_stt_T6"))[:9]
    grid = [0.0, 0.3, 0.7, 0.9, 1.0]
    energy = {(s, d): training_energy(layers, table, 6, sp_s=s, sp_du=d)["energy_j"]
              for s, d in itertools.product(grid, grid)}
    for (s, d), value in energy.items():
        for s2, d2 in energy:
            if s2 >= s and d2 >= d:
                assert energy[(s2, d2)] <= value * (1 + 1e-12)
    assert energy[(0.9, 0.7)] < energy[(0.0, 0.0)]


def test_invalid_inputs_raise():
    with pytest.raises(ValueError, match="sp_s"):
        training_energy([TINY], sata(), 2, sp_s=1.5, sp_du=0.5)
    with pytest.raises(ValueError, match="phases"):
        training_energy([TINY], sata(), 2, sp_s=0.5, sp_du=0.5, phases=("fwd",))
    with pytest.raises(ValueError, match="timesteps"):
        training_energy([TINY], sata(), 0, sp_s=0.5, sp_du=0.5)


def test_static_power_adds_latency_times_power():
    table = with_overrides(horowitz45(), static_power_w=0.5)
    base = training_energy([TINY], horowitz45(), 2, sp_s=0.5, sp_du=0.5, latency_s=1e-3)
    with_static = training_energy([TINY], table, 2, sp_s=0.5, sp_du=0.5, latency_s=1e-3)
    assert with_static["energy_j"] - base["energy_j"] == pytest.approx(0.5e-3)
    assert with_static["by_component_j"]["static"] == pytest.approx(0.5e-3)
