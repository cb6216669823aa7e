"""Counting, SynOps, training FLOPs and hw workloads of Conv1d, TTConv1d and TT-matrix Linear layers,
against hand counts (the issue's audio net: dense MACs must include every Conv1d)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import user_nets
from torch import nn
from typer.testing import CliRunner

import hw
from ttsnn_cli.cli.commands import app
from ttsnn_cli.compress.decompose import CompressConfig, compress_model
from ttsnn_cli.maths.ranks import RankSpec
from ttsnn_cli.report.counting import count_model, probe_input, profile_model
from ttsnn_cli.report.flops import training_flops
from ttsnn_cli.report.synops import synops
from ttsnn_cli.report.workloads import model_workloads
from ttsnn_cli.storage.bundle import get_meta, save_bundle

SHAPE = (16, 40)


def _audio_tt():
    config = CompressConfig(RankSpec("fixed", (4, 4, 4)), layer_types=("conv1d", "linear"), linear_cores=2)
    return compress_model(user_nets.audio_net(), config)[0]


def test_dense_audio_net_counts_every_conv1d() -> None:
    counts = count_model(user_nets.audio_net(), SHAPE, 4)
    # conv 16->32 k5 on L=40; 32->32 k3 s2 d2 p2 -> L=20; k4 same; 1x1; avgpool 2; fc 320->10
    l1, l2 = 40, (40 + 4 - 2 * 2 - 1) // 2 + 1
    expected = 32 * 16 * 5 * l1 + 32 * 32 * 3 * l2 + 32 * 32 * 4 * l2 + 32 * 32 * l2 + 10 * 32 * (l2 // 2)
    assert counts["macs_per_timestep"] == expected
    weights = 32 * 16 * 5 + 32 * 32 * 3 + 32 * 32 * 4 + 32 * 32 + 10 * 320
    assert counts["params"]["weights"] == weights


def test_tt_audio_net_counts_its_cores_and_tt_matrix_chain() -> None:
    model = _audio_tt()
    counts = count_model(model, SHAPE, 4)
    rows = {row["name"]: row for row in counts["layers"]}
    assert rows["0"]["type"] == "tt-stt" and rows["0"]["cores"] == {
        "core1": 16 * 4 * 40, "core2": 5 * 4 * 4 * 40, "core3": 4 * 32 * 40}
    fc = rows["9"]
    layer = model[9]
    assert fc["type"] == "tt-linear" and fc["macs_per_timestep"] == layer.macs_per_item()
    assert fc["weights"] == sum(c.numel() for c in layer.cores) and fc["ranks"] == [4]
    # FlopCounterMode agrees: forward FLOPs = 2 x MACs over T
    flops = training_flops(model, SHAPE, 4)
    assert flops["forward"] == 2 * 4 * counts["macs_per_timestep"]
    assert flops["backward"] > 0


def test_synops_split_a_tt_matrix_on_spikes_into_first_step_acs_and_later_macs() -> None:
    model = nn.Sequential(nn.Linear(64, 96))
    model, _ = compress_model(model, CompressConfig(RankSpec("fixed", (3, 3, 3)), layer_types=("linear",), linear_cores=2))
    spikes = (torch.rand(2, 5, 64) < 0.3).float()
    profile = profile_model(model, spikes, exact_acs=True)
    result = synops(model, profile, measured=True)
    layer = model[0]
    m1, r1 = layer.out_factors[0], layer.ranks[0]
    assert result["acs"] == int((spikes != 0).sum()) * m1 * r1 / 10
    assert result["macs"] == (layer.macs_per_item() - 64 * m1 * r1)


def test_workloads_and_hw_schedules_for_conv1d_and_tt_matrix() -> None:
    model = _audio_tt()
    profile = profile_model(model, probe_input(SHAPE, 1))
    layers = model_workloads(model, profile)
    groups = {}
    for w in layers:
        groups.setdefault(w.group or w.name, []).append(w)
    assert [w.branch for w in groups["0"]] == ["tt_first", "tt_w", "tt_last"]
    assert [w.branch for w in groups["9"]] == ["tt_first", "tt_last"]
    assert sum(w.macs_per_step for w in groups["9"]) == model[9].macs_per_item()
    assert sum(w.macs_per_step for w in groups["0"]) == 16 * 4 * 40 + 5 * 4 * 4 * 40 + 4 * 32 * 40
    dense = {w.name: w for w in hw.dense_equivalent(layers)}
    assert dense["0"].macs_per_step == 32 * 16 * 5 * 40 and dense["9"].macs_per_step == 320 * 10
    assert dense["0"].wo == 40 and dense["2"].stride == (1, 2)  # hw counts dilated layers as undilated (documented)
    accel = hw.load_accelerator("sata")
    results = hw.simulate_schedules(layers, accel, 4)
    assert results["stt"]["cycles"] < results["dense"]["cycles"]


def test_report_cli_on_a_conv1d_bundle(tmp_path: Path) -> None:
    model = _audio_tt()
    meta = get_meta(model)
    meta.arch, meta.io.input_shape, meta.io.timesteps = "user_nets:audio_net", SHAPE, 4
    path = tmp_path / "a.tt"
    save_bundle(path, model, meta)
    result = CliRunner().invoke(app, ["report", str(path), "--hw", "--json"])
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["ratios"]["macs"] > 1 and document["baseline"]["macs_per_timestep"] > 100_000
    assert document["hw"]["stt"]["cycles"] > 0
