"""Growth and full-rank exactness are one rule for Conv2d, Conv1d and Linear (issue 25).

At full rank the cores of every kind hold more weights than the dense layer: without
`--allow-growth` each stays dense with the same message; with it each is decomposed and computes
the dense layer to float precision (relative error below 1e-5), through the library and the CLI.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import user_nets
from torch import nn
from typer.testing import CliRunner

from ttsnn_cli.compress.decompose import CompressConfig, NothingToDecompose, compress_model
from ttsnn_cli.kinds import KINDS
from ttsnn_cli.maths.ranks import RankSpec

FULL = RankSpec("fixed", (1000, 1000, 1000))  # capped to each layer's full TT ranks

#: one dense layer of each type and an input it takes (batch 3)
LAYERS = {
    "conv2d": (lambda: nn.Conv2d(3, 5, 3, padding=1), (3, 3, 6, 6)),
    "conv1d": (lambda: nn.Conv1d(3, 5, 3, padding=1), (3, 3, 10)),
    "linear": (lambda: nn.Linear(12, 6), (3, 12)),
}
#: where full rank is exact: STT for every kind (PTT and HTT convs approximate with equal ranks by
#: design); a TT-matrix Linear runs the exact chain in every mode
EXACT = [("conv1d", "stt"), ("conv2d", "stt"), ("linear", "htt"), ("linear", "ptt"), ("linear", "stt")]


def _config(kind: str, mode: str = "stt", allow: bool = False) -> CompressConfig:
    return CompressConfig(FULL, mode=mode, layer_types=(kind,), allow_growth=allow, linear_cores=2,  # type: ignore[arg-type]
                          timesteps=4)


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_full_rank_grows_and_stays_dense_without_the_flag(kind: str) -> None:
    build, _ = LAYERS[kind]
    torch.manual_seed(0)
    with pytest.raises(NothingToDecompose) as caught:
        compress_model(nn.Sequential(build()), _config(kind))
    reason = caught.value.document["layers"][0]["skipped"]
    assert reason.startswith("would grow ") and "weights at ranks" in reason and "--allow-growth" in reason


@pytest.mark.parametrize("kind,mode", EXACT)
def test_allow_growth_decomposes_exactly(kind: str, mode: str) -> None:
    build, shape = LAYERS[kind]
    torch.manual_seed(0)
    dense = nn.Sequential(build())
    model, result = compress_model(copy.deepcopy(dense), _config(kind, mode, allow=True))
    row = result.layers[0]
    assert row.skipped is None and row.params_after > row.params_before and row.rel_error < 1e-5
    assert KINDS[kind].owns_tt(model[0])
    x = torch.randn(shape)
    with torch.no_grad():
        want, got = dense(x), model(x)
    assert float((got - want).norm() / want.norm()) < 1e-5


MODELS = {
    "conv2d": ("user_nets:sequential_net", user_nets.sequential_net),
    "conv1d": ("user_nets:digits_conv1d", user_nets.digits_conv1d),
    "linear": ("user_nets:recurrent_mlp", user_nets.recurrent_mlp),
}


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_cli_full_rank_exactness_with_allow_growth(kind: str, tmp_path: Path) -> None:
    """`compress --ranks 1000 --allow-growth --layer-types KIND`: every layer of the kind decomposed
    exactly (the full-rank check on an MLP included); without the flag the growing ones stay dense."""
    from ttsnn_cli.cli.commands import app

    arch, factory = MODELS[kind]
    torch.manual_seed(0)
    torch.save(factory().state_dict(), tmp_path / "dense.pt")
    base = ["compress", str(tmp_path / "dense.pt"), "--arch", arch, "--layer-types", kind, "--ranks", "1000", "--json"]
    grown = CliRunner().invoke(app, [*base, "--allow-growth", "-o", str(tmp_path / "a.tt")])
    assert grown.exit_code == 0, grown.stderr
    rows = [row for row in json.loads(grown.stdout)["layers"] if row["ranks"] is not None]
    assert rows and all(row["skipped"] is None and row["rel_error"] < 1e-5 for row in rows)
    kept = CliRunner().invoke(app, [*base, "-o", str(tmp_path / "b.tt")])
    assert kept.exit_code in (0, 3), kept.stderr
    text = kept.stdout if kept.exit_code == 0 else kept.stderr
    assert "would grow" in text and not (kept.exit_code == 3 and (tmp_path / "b.tt").exists())
