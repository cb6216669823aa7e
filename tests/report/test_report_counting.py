"""Counting (ttsnn_cli/report/counting.py, flops.py, synops.py) against the paper's figures
(the TT-SNN paper, "Counting convention and the numbers to reproduce") and hand counts.

The TT models are built in memory with the paper's ranks (tests/report_models.py): counts depend
only on shapes and ranks, so no TT-SVD is needed."""

from __future__ import annotations

import pytest
import torch
from report_models import dense_model, r18, r34
from torch import nn

from ttsnn_cli.report.counting import count_model, profile_model
from ttsnn_cli.report.flops import training_flops
from ttsnn_cli.report.synops import synops


@pytest.fixture(scope="module")
def dense34():
    return count_model(dense_model("ms_resnet34", in_channels=2, num_classes=101), (2, 48, 48), 6)


def test_resnet34_dense_numbers(dense34):
    # the paper: weights 21,311,104; MACs per timestep 2,607,368,704 (derived, exact)
    assert dense34["params"]["weights"] == 21_311_104
    assert dense34["macs_per_timestep"] == 2_607_368_704


def test_resnet34_stt_numbers():
    counts = count_model(r34("stt"), (2, 48, 48), 6)
    assert counts["params"]["weights"] == 2_671_716           # the paper: 7.98x
    assert counts["macs_per_timestep"] == 293_815_564          # exact strided chain
    assert counts["macs_paper_per_timestep"] == 281_970_016    # cores at output resolution: 9.25x


def test_resnet34_ptt_counts_what_our_layer_runs():
    counts = count_model(r34("ptt"), (2, 48, 48), 6)
    assert counts["params"]["weights"] == 2_671_716
    assert counts["macs_paper_per_timestep"] == 281_970_016
    # our PTT: 1x1 at the input resolution, both middle cores at the full stride (output resolution)
    assert counts["macs_per_timestep"] == 290_402_656
    strided = next(row for row in counts["layers"] if row["name"] == "layer2.0.conv1")
    r, cin, cout = 22, 64, 128
    assert strided["cores"]["core1"] == cin * r * 48 * 48
    assert strided["cores"]["core2"] == strided["cores"]["core3"] == 3 * r * r * 24 * 24
    assert strided["cores"]["core4"] == r * cout * 24 * 24


def test_resnet18_cifar10_numbers():
    dense = count_model(dense_model("ms_resnet18", in_channels=3, num_classes=10), (3, 32, 32), 4)
    tt = count_model(r18("stt"), (3, 32, 32), 4)
    assert dense["params"]["weights"] == 11_164_352
    assert dense["macs_per_timestep"] == 555_422_720
    assert tt["params"]["weights"] == 1_647_546
    assert tt["macs_per_timestep"] == 100_181_760
    assert tt["macs_paper_per_timestep"] == 93_105_984



def test_htt_averages_full_and_reduced_steps():
    # one HTT layer 8->8, 3x3, r = 2, 6x6 map, T = 3: steps 0, 1 full (ceil(3/2) = 2), step 2 reduced
    from ttsnn_cli.layers.conv2d import TTConv2d

    layer = TTConv2d(8, 8, 3, (2, 2, 2), "htt", 1, 1, bias=False, timesteps=3)
    counts = count_model(nn.Sequential(layer), (8, 6, 6), 3)
    full = (8 * 2 + 3 * 2 * 2 + 3 * 2 * 2 + 2 * 8) * 36
    reduced = (8 * 2 + 2 * 8) * 36          # the paper: (Cin*r + r*Cout)*H*W
    assert counts["macs_per_timestep"] == pytest.approx((2 * full + reduced) / 3)


def test_synops_hand_counted():
    """conv 1->2 3x3 pad 1 on a 4x4 spike map with spikes at (0,0) and (1,1), then a Linear.
    Spike (0,0) lies in 4 output windows, (1,1) in 9: ACs = 13 x 2 filters = 26. The Linear reads
    the conv's real output: MACs = 32 x 3 = 96."""
    conv = nn.Conv2d(1, 2, 3, padding=1, bias=False)
    nn.init.constant_(conv.weight, 0.3)
    model = nn.Sequential(conv, nn.Flatten(), nn.Linear(32, 3, bias=False))
    x = torch.zeros(1, 1, 1, 4, 4)
    x[0, 0, 0, 0, 0] = x[0, 0, 0, 1, 1] = 1.0
    profile = profile_model(model, x, exact_acs=True)
    result = synops(model, profile, measured=True)
    assert result["acs"] == 26
    assert result["macs"] == 96
    assert result["spike_rate"] == pytest.approx(2 / 16)
    declared = synops(model, profile, measured=False, rate=0.1)
    assert declared["acs"] == pytest.approx(0.1 * 2 * 16 * 9)  # rate x conv MACs
    assert declared["macs"] == 96


def test_only_first_tt_core_sees_spikes():
    from ttsnn_cli.report.counting import spike_profile

    model = r18("stt")
    profile = spike_profile(model, (3, 32, 32), 4)
    assert profile.leaves["layer1.0.conv1.core1"].binary
    for core in ("core2", "core3", "core4"):
        assert not profile.leaves[f"layer1.0.conv1.{core}"].binary
    assert not profile.leaves["stem.conv"].binary  # analog input


def test_flop_counter_agrees_with_mac_counts():
    model = r18("stt")
    flops = training_flops(model, (3, 32, 32), 4)
    assert flops["forward"] == 2 * 4 * 100_181_760  # FlopCounterMode: 2 FLOPs per MAC, over T
    assert flops["backward"] > flops["forward"]      # input + weight gradients
