"""Model -> hw workloads (ttsnn_cli/report/workloads.py) against hw's CSV-derived layer shapes
(hw/workloads/sata_res34_stt_T6.csv, SATA_Sim's ResNet34 STT run) where the conventions agree:
channels, filters and kernels of every core; input sizes of stride-1 layers (SATA_Sim gave
unpadded sizes and modelled stride by halving the input, so strided layers differ by design)."""

from __future__ import annotations

import pytest
from report_models import r34

import hw
from ttsnn_cli.report.counting import on_meta, probe_input, profile_model
from ttsnn_cli.report.workloads import model_workloads


@pytest.fixture(scope="module")
def r34_workload():
    model = r34("stt")
    profile = profile_model(on_meta(model).eval(), probe_input((2, 48, 48), 1).to("meta"))
    return model_workloads(model, profile)


def test_tt_cores_match_sata_csv(r34_workload):
    ours = [layer for layer in r34_workload if layer.branch != "dense"]
    csv = [layer for layer in hw.from_csv(hw.workload_path("sata_res34_stt_T6")) if layer.branch != "dense"]
    assert len(ours) == len(csv) == 128
    for mine, theirs in zip(ours, csv):
        assert mine.branch == theirs.branch
        assert (mine.c, mine.k, mine.r, mine.s) == (theirs.c, theirs.k, theirs.r, theirs.s), (mine, theirs)
    groups = {layer.group for layer in ours}
    stride1 = [g for g in groups if all(l.stride == (1, 1) for l in ours if l.group == g)]
    assert len(stride1) == 29  # three strided first convs (layer2..4.0.conv1)
    by_group = {}
    for mine, theirs in zip(ours, csv):
        by_group.setdefault(mine.group, []).append((mine, theirs))
    for group in stride1:
        for mine, theirs in by_group[group]:
            assert (mine.ih, mine.iw) == (theirs.ih, theirs.iw)


def test_workload_macs_agree_with_counting(r34_workload):
    # hw's per-step MACs of our workload = the exact strided chain (the TT-SNN paper: 293,815,564)
    assert sum(layer.macs_per_step for layer in r34_workload) == 293_815_564
    # the PTT view hw schedules = what our PTT layer computes
    from hw.workload import ptt_view

    assert sum(layer.macs_per_step for layer in ptt_view(r34_workload)) == 290_402_656
    # the dense equivalent = the dense ResNet34
    assert sum(layer.macs_per_step for layer in hw.dense_equivalent(r34_workload)) == 2_607_368_704


def test_schedules_side_by_side(r34_workload):
    accel = hw.load_accelerator("sata")
    results = hw.simulate_schedules(r34_workload, accel, 6)
    assert list(results) == ["dense", "stt", "ptt_sequential", "ptt_parallel", "htt"]
    for res in results.values():
        assert {"cycles", "latency_s", "energy_j", "breakdown"} <= set(res)
    assert results["ptt_parallel"]["cycles"] <= results["ptt_sequential"]["cycles"]
    assert results["stt"]["cycles"] < results["dense"]["cycles"]
    assert results["htt"]["energy_j"] < results["ptt_parallel"]["energy_j"]
