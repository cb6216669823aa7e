"""hw.schedule and hw.config: schedules side by side, accelerator YAML validation, package hygiene."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

import hw
from hw.config import AcceleratorConfigError, load_accelerator, parse_accelerator, preset_names
from hw.cycles import gemm_cycles, sata_inference_cycles
from hw.schedule import SCHEDULES, compare_schedules, layer_phase_cycles, simulate_schedules
from hw.workload import LayerWorkload, dense_equivalent, from_csv, tt_cores, workload_path

HW_DIR = Path(hw.__file__).parent


@pytest.fixture(scope="module")
def res34():
    return from_csv(workload_path("sata_res34_stt_T6"))


@pytest.fixture(scope="module", params=["sata", "tt-accel"])
def results(request, res34):
    accel = load_accelerator(request.param)
    return accel, simulate_schedules(res34, accel, 6, inference=True)


# --- config ------------------------------------------------------------------------------------
def test_every_shipped_preset_validates():
    assert {"sata", "tt-accel"} <= set(preset_names())
    for name in preset_names():
        accel = load_accelerator(name)
        assert accel.name == name
        accel.energy_model()  # resolves the energy preset and overrides
    sata = load_accelerator("sata")
    assert (sata.array.rows, sata.array.cols, sata.clock_hz, sata.scalesim_version) == (16, 8, 4e8, 2)
    assert sata.energy_model().name == "sata"
    assert load_accelerator("tt-accel").energy_model().name == "horowitz45"


def test_user_file_with_overrides(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\narray: {rows: 32, cols: 32, split: cols}\nclock_hz: 1.0e+9\n"
                    "energy: {preset: sata, joules_per_unit: 2.0e-12, ops: {mac: 0.5}}\n")
    accel = load_accelerator(path)
    assert (accel.array.rows, accel.array.cols, accel.dataflow) == (32, 32, "os")
    model = accel.energy_model()
    assert model.ops.mac == 0.5 and model.joules_per_unit == 2e-12
    assert model.ops.ac == pytest.approx(0.039694)  # not overridden: from the preset
    assert load_accelerator(str(path)) == accel


@pytest.mark.parametrize("text, needle", [
    ("name: x\nenergy: {preset: sata}\narray: {rows: sixteen}\n", "array.rows"),
    ("name: x\nenergy: {preset: sata}\nbogus: 1\n", "bogus: Extra inputs are not permitted"),
    ("name: x\nenergy: {preset: sata, ops: {mca: 1}}\n", "energy.ops.mca"),
    ("name: x\nenergy: {preset: nope}\n", "energy.preset"),
    ("name: x\n", "energy: Field required"),
    ("name: x\nenergy: {preset: sata}\ndataflow: ws\nscalesim_version: 2\n", "dataflow 'os' only"),
    ("name: x\nenergy: {preset: sata}\nsparsity: {sp_s: 1.5}\n", "sparsity.sp_s"),
    ("name: x\nenergy: {preset: sata}\narray: {rows: 1, split: rows}\n", "cannot split"),
    ("- just\n- a list\n", "expected a mapping"),
    ("name: [unclosed\n", "invalid YAML"),
])
def test_bad_files_raise_one_line_typed_error(tmp_path, text, needle):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(AcceleratorConfigError) as info:
        load_accelerator(path)
    message = str(info.value)
    assert needle in message and "\n" not in message
    assert isinstance(info.value, ValueError)


def test_all_errors_reported_at_once():
    with pytest.raises(AcceleratorConfigError) as info:
        parse_accelerator({"name": "x", "energy": {"preset": "sata"}, "clock_hz": -1, "array": {"cols": 0}})
    assert "clock_hz" in str(info.value) and "array.cols" in str(info.value)


def test_missing_file_or_unknown_preset():
    with pytest.raises(AcceleratorConfigError, match="neither a preset .*sata.* nor an existing file"):
        load_accelerator("no-such-accelerator")


# --- schedules ---------------------------------------------------------------------------------
def test_schedule_objects_have_contract_keys_and_are_json(results):
    accel, res = results
    assert list(res) == list(SCHEDULES)
    for name, r in res.items():
        assert {"cycles", "latency_s", "energy_j", "breakdown"} <= set(r)
        assert r["latency_s"] == pytest.approx(r["cycles"] / accel.clock_hz)
        assert r["cycles"] == sum(r["breakdown"]["cycles"].values())
        assert sum(r["breakdown"]["energy_j"].values()) == pytest.approx(r["energy_j"])
        assert sum(r["breakdown"]["energy_phase_j"].values()) == pytest.approx(r["energy_j"])
        assert r["energy_j"] > 0
    json.loads(json.dumps(res, allow_nan=False))


def test_invariants_on_resnet34(results):
    _, res = results
    d, stt, seq, par, htt = (res[s] for s in SCHEDULES)
    for r in (stt, seq, par, htt):  # TT never slower or costlier than dense on this workload
        assert r["cycles"] < d["cycles"] and r["energy_j"] < d["energy_j"]
        assert r["inference"]["cycles"] < d["inference"]["cycles"]
    assert par["cycles"] <= seq["cycles"]
    assert par["inference"]["cycles"] <= seq["inference"]["cycles"]
    assert par["energy_j"] == pytest.approx(seq["energy_j"])  # same ops, no static power
    assert htt["cycles"] < par["cycles"] and htt["energy_j"] < par["energy_j"]
    assert stt["vs_dense"]["cycles"] == pytest.approx(stt["cycles"] / d["cycles"])


def test_sata_inference_matches_sata_sim(res34):
    accel = load_accelerator("sata")
    res = simulate_schedules(res34, accel, 6, inference=True, schedules=("dense", "stt"))
    assert res["stt"]["inference"]["cycles"] == sata_inference_cycles(res34, 6)["cycles"] == 20_096_171
    assert res["dense"]["inference"]["cycles"] == sata_inference_cycles(dense_equivalent(res34), 6)["cycles"]


def test_ptt_parallel_pair_by_hand():
    # one TT layer; middle cores 3x1 and 1x3 r -> r on 16 x 8, rows split into two 8 x 8 halves
    accel = load_accelerator("tt-accel")  # v3, OS
    cores = tt_cores(LayerWorkload("L", 16, 16, 3, 3, 32, 32, padding=(1, 1)), (12, 12, 12))
    res = simulate_schedules(cores, accel, 4, phases=("fp",), schedules=("ptt_sequential", "ptt_parallel"))
    h, w = cores[1].gemm("fp"), cores[2].gemm("fp")  # both (256 x 36) @ (36 x 12)
    full = [4 * gemm_cycles(g, rows=16, cols=8) for g in (h, w)]
    half = [4 * gemm_cycles(g, rows=8, cols=8) for g in (h, w)]
    outer = sum(4 * gemm_cycles(c.gemm("fp"), rows=16, cols=8) for c in (cores[0], cores[3]))
    assert res["ptt_sequential"]["cycles"] == outer + sum(full)
    assert res["ptt_parallel"]["cycles"] == outer + min(max(half), sum(full))
    assert res["ptt_parallel"]["cycles"] < res["ptt_sequential"]["cycles"]


def test_split_never_slower_than_sequential():
    # a pair whose halves would be slower than sequential falls back to running them in turn
    accel = parse_accelerator({"name": "x", "energy": {"preset": "sata"}, "array": {"rows": 2, "cols": 64}})
    h = LayerWorkload("h", 64, 1, 3, 1, 4, 64, branch="tt_h", spike_input=False, group="g")
    w = replace(h, name="w", r=1, s=1, branch="tt_w")
    f = LayerWorkload("f", 64, 1, 1, 1, 4, 4, branch="tt_first", group="g")
    last = replace(f, name="l", branch="tt_last", spike_input=False)
    res = simulate_schedules([f, h, w, last], accel, 2, schedules=("ptt_sequential", "ptt_parallel"))
    assert res["ptt_parallel"]["cycles"] <= res["ptt_sequential"]["cycles"]


def test_htt_halves_middle_core_steps(res34):
    accel = load_accelerator("tt-accel")
    for timesteps in (4, 5, 6):
        res = simulate_schedules(res34, accel, timesteps, schedules=("ptt_sequential", "htt"))
        mid = [l for l in res34 if l.branch in ("tt_h", "tt_w")]
        mid_macs = sum(l.macs_per_step for l in mid)
        saved = res["ptt_sequential"]["breakdown"]["ops"]["mac"] - res["htt"]["breakdown"]["ops"]["mac"]
        # FP and WG MACs of the middle cores (real inputs) + their dense BP MACs on skipped steps
        bp_macs = sum(l.weights * l.in_pixels for l in mid)
        skipped = timesteps - math.ceil(timesteps / 2)
        assert saved == pytest.approx(skipped * (2 * mid_macs + bp_macs), rel=1e-9)


def test_measured_sparsity_overrides_defaults(res34):
    accel = load_accelerator("sata")
    lo = simulate_schedules(res34, accel, 6, schedules=("stt",), sp_s=0.5, sp_du=0.5)["stt"]
    hi = simulate_schedules(res34, accel, 6, schedules=("stt",), sp_s=0.95, sp_du=0.9)["stt"]
    assert hi["sparsity"] == {"sp_s": 0.95, "sp_du": 0.9}
    assert hi["energy_j"] < lo["energy_j"] and hi["cycles"] == lo["cycles"]  # sparsity gates energy only


def test_dense_only_model_reports_dense_only():
    layers = [LayerWorkload("c", 8, 8, 3, 3, 4, 4, padding=(1, 1))]
    res = simulate_schedules(layers, load_accelerator("sata"), 4)
    assert list(res) == ["dense"]
    with pytest.raises(ValueError, match="unknown schedules"):
        simulate_schedules(layers, load_accelerator("sata"), 4, schedules=("fast",))


def test_compare_schedules(results):
    _, res = results
    rows = {row["name"]: row for row in compare_schedules(res)}
    row = rows["ptt_parallel vs stt"]
    assert row["cycles_ratio"] == pytest.approx(res["ptt_parallel"]["cycles"] / res["stt"]["cycles"])
    assert row["time_change_pct"] == pytest.approx(100 * (row["cycles_ratio"] - 1))


def test_layer_phase_cycles_uses_configured_dataflow():
    accel = parse_accelerator({"name": "x", "energy": {"preset": "sata"}, "dataflow": "ws"})
    layer = LayerWorkload("c", 7, 7, 3, 3, 192, 384)
    assert layer_phase_cycles(layer, 1, accel, phases=("fp",))["fp"] == 326_591


# --- hygiene -----------------------------------------------------------------------------------
def test_no_torch_anywhere_in_hw():
    sources = list(HW_DIR.rglob("*.py"))
    assert sources and not [p for p in sources if "import torch" in p.read_text()]
    code = "import sys, hw; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=HW_DIR.parent)


def test_public_api_is_declared():
    assert set(hw.__all__) <= set(dir(hw))
    for name in ("LayerWorkload", "load_accelerator", "simulate_schedules", "sata_inference_cycles",
                 "training_energy", "AcceleratorConfigError"):
        assert name in hw.__all__
