"""--round-ranks N: every chosen rank to a multiple of N (tensor-core friendly), capped, counted as used."""

from __future__ import annotations

import pytest
import torch
import user_nets
from torch import nn

from ttsnn_cli.compress.decompose import CompressConfig, compress_model
from ttsnn_cli.layers.conv2d import TTConv2d
from ttsnn_cli.maths.ranks import RankSpec, ResolvedRanks, round_ranks

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("ranks, caps, equal, expected", [
    ((11, 18, 16), (32, 96, 64), False, (8, 16, 16)),   # nearest multiple (11 -> 8, 18 -> 16)
    ((12, 20, 3), (32, 96, 64), False, (16, 24, 8)),    # halves round up; never below N
    ((3, 30, 5), (3, 96, 9), False, (3, 32, 8)),        # a cap below N stays; 5 -> 8 (cap 9 not reached)
    ((3, 30, 13), (3, 96, 12), False, (3, 32, 12)),     # 13 -> 16 is above the cap: the cap
    ((13, 13, 13), (64, 64, 64), True, (16, 16, 16)),   # equal ranks stay equal
    ((13, 13, 13), (64, 10, 64), True, (10, 10, 10)),
])
def test_round_ranks(ranks: tuple, caps: tuple, equal: bool, expected: tuple) -> None:
    rounded = round_ranks(ResolvedRanks(ranks, ranks, "chosen"), 8, caps, equal)
    assert rounded.effective == expected
    assert rounded.note.startswith("chosen; rounded from")
    assert round_ranks(ResolvedRanks(ranks, ranks), 1, caps, equal).effective == ranks  # 1: as chosen


@pytest.mark.parametrize("mode", ["stt", "ptt", "htt"])
def test_compress_builds_and_counts_the_rounded_ranks(mode: str) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(16, 48, 3, padding=1), nn.ReLU(), nn.Conv2d(48, 40, 3, padding=1))
    config = CompressConfig(RankSpec("fixed", (11, 11, 11)), mode=mode, timesteps=4, round_ranks=8)  # type: ignore[arg-type]
    compressed, result = compress_model(model, config)
    for report in result.layers:
        assert report.skipped is None and all(r % 8 == 0 for r in report.ranks)
    layers = [m for m in compressed.modules() if isinstance(m, TTConv2d)]
    assert [tuple(layer.ranks) for layer in layers] == [tuple(r.ranks) for r in result.layers]
    assert sum(r.params_after for r in result.layers) == sum(p.numel() for p in compressed.parameters())


def test_global_budget_reports_what_the_rounded_ranks_reach() -> None:
    torch.manual_seed(0)
    model = user_nets.sequential_net(channels=24)
    plain = compress_model(user_nets.sequential_net(channels=24), CompressConfig(RankSpec("budget", value=4.0)))[1]
    rounded = compress_model(model, CompressConfig(RankSpec("budget", value=4.0), round_ranks=8))[1]
    assert any("--round-ranks 8" in (r.note or "") for r in rounded.layers)
    assert [r.ranks for r in rounded.layers if r.ranks] != [r.ranks for r in plain.layers if r.ranks]
