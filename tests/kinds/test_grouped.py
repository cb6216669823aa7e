"""The `conv2d_grouped` kind, added through its kind module alone: a grouped Conv2d as one TT chain
per group (four grouped cores), checked against the dense oracle, through compress, bundles, report
counts, ONNX (verified in onnxruntime) and NIR."""

from __future__ import annotations

import json
from pathlib import Path

import grouped_nets
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from ttsnn_cli import load_model
from ttsnn_cli.cli.commands import app
from ttsnn_cli.compress.decompose import CompressConfig, compress_model
from ttsnn_cli.errors import BadInputError
from ttsnn_cli.kinds import KINDS, kind_of
from ttsnn_cli.kinds.conv2d_grouped import TTConv2dGrouped
from ttsnn_cli.maths.ranks import RankSpec
from ttsnn_cli.maths.tt import max_tt_ranks
from ttsnn_cli.report.counting import count_model
from ttsnn_cli.spiking.runner import run_timesteps

runner = CliRunner()
ARCH = "grouped_nets:grouped_net"
T = 3
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def _trust_grouped_nets(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    monkeypatch.setenv("TTSNN_TRUSTED_ARCH", os.environ.get("TTSNN_TRUSTED_ARCH", "") + ",grouped_nets")


def _full_ranks(conv: nn.Conv2d) -> tuple[int, int, int]:
    return max_tt_ranks((conv.out_channels // conv.groups, conv.in_channels // conv.groups, *conv.kernel_size))


@pytest.mark.parametrize("groups", [2, 4])
@pytest.mark.parametrize("stride,padding,dilation,bias", [
    (1, 1, 1, True), (2, 0, 1, False), ((2, 1), (2, 1), 2, True), (1, "same", 1, False), (1, (1, 2), (1, 2), True),
])
@torch.no_grad()
def test_full_rank_matches_the_dense_grouped_conv(groups: int, stride, padding, dilation, bias: bool) -> None:
    torch.manual_seed(groups)
    conv = nn.Conv2d(8, 12, (3, 5), stride=stride, padding=padding, dilation=dilation, groups=groups, bias=bias)
    layer, error, _ = KINDS["conv2d_grouped"].decompose(conv, _full_ranks(conv), "stt", None, "qr_svd", 3)
    assert isinstance(layer, TTConv2dGrouped) and layer.core1.weight.dtype == torch.float32
    assert error < 1e-5  # the stored cores, float64 product, against the kernel
    x = torch.randn(2, 8, 11, 13)
    want, got = conv(x), layer(x)
    assert got.shape == want.shape
    assert float((got - want).norm() / want.norm()) < 1e-5


@torch.no_grad()
def test_circular_padding_and_low_rank_stay_close() -> None:
    conv = nn.Conv2d(8, 8, 3, padding=1, groups=2, padding_mode="circular")
    layer, error, _ = KINDS["conv2d_grouped"].decompose(conv, _full_ranks(conv), "stt", None, "qr_svd", 3)
    x = torch.randn(1, 8, 6, 7)
    assert error < 1e-5 and float((layer(x) - conv(x)).norm() / conv(x).norm()) < 1e-5


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    return grouped_nets.grouped_net().eval()


def test_default_layer_types_keep_grouped_convs_dense_with_the_old_reason() -> None:
    model, result = compress_model(_model(), CompressConfig(RankSpec("fixed", (2, 2, 2))))
    rows = {r.name: r for r in result.layers}
    assert rows["2"].skipped == "grouped conv (groups=2): TT cores cannot split channel groups"
    assert type(model[2]) is nn.Conv2d


def test_compress_model_decomposes_it_per_group_when_asked() -> None:
    dense = _model()
    config = CompressConfig(RankSpec("fixed", (3, 3, 3)), layer_types=("conv2d_grouped",))
    model, result = compress_model(_model(), config)
    row = {r.name: r for r in result.layers}["2"]
    assert isinstance(model[2], TTConv2dGrouped) and type(model[0]) is nn.Conv2d
    assert row.skipped is None and row.ranks == [3, 3, 3] and row.type == "Conv2d" and row.kernel == [3, 3]
    assert kind_of(model[2]) is KINDS["conv2d_grouped"] and kind_of(dense[2]) is KINDS["conv2d_grouped"]
    with pytest.raises(BadInputError, match="layer 2: a grouped conv decomposes in STT only"):
        compress_model(_model(), CompressConfig(RankSpec("fixed", (3, 3, 3)), mode="ptt", layer_types=("conv2d_grouped",)))
    # at full rank the swapped layer computes the dense one (layer by layer: spikes amplify rounding)
    full = CompressConfig(RankSpec("fixed", (8, 12, 4)), layer_types=("conv2d_grouped",), allow_growth=True)
    exact, result = compress_model(_model(), full)
    assert {r.name: r for r in result.layers}["2"].rel_error < 1e-5
    frames = torch.rand(2, 8, 8, 8)
    with torch.no_grad():
        assert float((exact[2](frames) - dense[2](frames)).norm() / dense[2](frames).norm()) < 1e-5


def test_bundle_round_trips_and_report_counts_match_a_hand_count(tmp_path: Path) -> None:
    checkpoint = tmp_path / "g.pt"
    torch.save(_model().state_dict(), checkpoint)
    out = tmp_path / "g.tt"
    result = runner.invoke(app, ["compress", str(checkpoint), "--arch", ARCH, "--ranks", "2", "--layer-types",
                                 "conv2d_grouped", "--input-shape", "4,8,8", "--timesteps", str(T), "-o", str(out), "--json"])
    assert result.exit_code == 0, result.stderr
    layers = {row["name"]: row for row in json.loads(result.stdout)["layers"]}
    assert layers["2"]["ranks"] == [2, 2, 2] and layers["2"]["skipped"] is None
    model, again = load_model(out, arch=ARCH), load_model(out, arch=ARCH)
    assert isinstance(model[2], TTConv2dGrouped) and model[2].groups == 2
    x = torch.rand(T, 2, 4, 8, 8)
    with torch.no_grad():
        assert torch.equal(run_timesteps(model, x), run_timesteps(again, x))
    # hand count: 2 groups of 4 -> 4 channels, 3x3, ranks 2, 8x8 in, stride 2 -> 4x4 out
    g, cin, cout, r, (h, w), (ho, wo) = 2, 8, 8, 2, (8, 8), (4, 4)
    weights = g * (cin // g * r + r * r * 3 + r * r * 3 + r * cout // g)
    counts = count_model(model, (4, 8, 8), T)
    row = {row["name"]: row for row in counts["layers"]}["2"]
    assert row["type"] == "tt-stt" and row["weights"] == weights and row["params"] == weights + cout
    macs = (h * w * cin * r            # core1: 1x1 at the input, each group Cin/G -> r
            + ho * w * g * r * r * 3   # core2: 3x1, stride (2, 1)
            + ho * wo * g * r * r * 3  # core3: 1x3, stride (1, 2)
            + ho * wo * cout * r)      # core4: 1x1, each group r -> Cout/G
    assert row["macs_per_timestep"] == macs and row["cores"]["core1"] == h * w * cin * r
    dense_row = {row["name"]: row for row in count_model(_model(), (4, 8, 8), T)["layers"]}["2"]
    assert dense_row["macs_per_timestep"] == ho * wo * cout * (cin // g) * 9
    hw = runner.invoke(app, ["report", str(out), "--hw", "--json"])
    assert hw.exit_code == 0, hw.stderr


def test_onnx_export_verifies_and_nir_maps_grouped_cores(tmp_path: Path) -> None:
    nir = pytest.importorskip("nir")
    from ttsnn_cli.export.nir import export_nir, run_nir_chain

    model, _ = compress_model(_model(), CompressConfig(RankSpec("fixed", (2, 2, 2)), layer_types=("conv2d_grouped",)))
    bundle = tmp_path / "g.tt"
    from ttsnn_cli import save_model

    save_model(model, bundle, arch=ARCH)
    for extra in ([], ["--reconstruct-dense"]):
        onnx = tmp_path / f"g{len(extra)}.onnx"
        result = runner.invoke(app, ["export", str(bundle), "--arch", ARCH, "--timesteps", str(T), "--input-shape",
                                     "4,8,8", "--onnx", str(onnx), "--verify", "--json", *extra])
        assert result.exit_code == 0, result.stderr
        document = json.loads(result.stdout)
        assert document["verified"] is True and document["max_abs_diff"] <= 1e-4
    export_nir(model, tmp_path / "g.nir", T, (4, 8, 8))
    graph = nir.read(tmp_path / "g.nir")
    middle = graph.nodes["2.core23"]  # the two groups' merged middle cores, block-diagonal (r3 G, r1 G, 3, 3)
    assert middle.metadata["groups"] == 2 and middle.weight.shape == (4, 4, 3, 3) and not middle.weight[:2, 2:].any()
    x = torch.rand(T, 2, 4, 8, 8)
    with torch.no_grad():
        assert torch.allclose(run_nir_chain(graph, x), run_timesteps(model, x), atol=1e-4)
