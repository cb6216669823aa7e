"""hw.cycles and hw.workload: SCALE-Sim closed forms and SATA_Sim totals.

Golden numbers: the SATA paper (Yin et al.), summarised in docs/hw.md (table "Numbers to reproduce", section "SATA dataflow"),
workload CSVs from SATA_Sim's TT-SNN artifacts, shipped as hw/workloads/*.csv."""

from __future__ import annotations

import math

import pytest

from hw.cycles import conv_gemm, gemm_cycles, sata_inference_cycles, sata_layer_cycles, ws_filter_load_span
from hw.workload import Gemm, LayerWorkload, dense_equivalent, from_csv, ptt_view, tt_cores, workload_path

RES19 = workload_path("sata_res19_baseline_T4")
RES34 = workload_path("sata_res34_stt_T6")


@pytest.mark.parametrize("dataflow, expected", [("os", 167_999), ("ws", 326_591), ("is", 182_303)])
def test_v3_closed_forms_hw_md_table(dataflow, expected):
    gemm = conv_gemm(7, 7, 3, 3, 192, 384, 1)
    assert gemm_cycles(gemm, rows=16, cols=8, dataflow=dataflow, version=3) == expected


@pytest.mark.parametrize("dataflow, expected", [("os", 2_751), ("ws", 3_263)])
def test_v3_gemm_64_cubed(dataflow, expected):
    # the SATA paper: GEMM 64x64x64 as a (64, 64, 1, 64, 1, 64, 1)-shaped layer
    gemm = conv_gemm(64, 64, 1, 64, 1, 64, 1)
    assert gemm == Gemm(64, 64, 64)
    assert gemm_cycles(gemm, rows=16, cols=8, dataflow=dataflow, version=3) == expected


def test_v2_os_unpadded_conv():
    gemm = conv_gemm(32, 32, 3, 3, 64, 64, 1)
    assert gemm_cycles(gemm, rows=16, cols=8, dataflow="os", version=2) == 272_687 == 456 * 598 - 1


def test_v2_os_subtracts_idle_last_column_fold():
    # K = 12 on 8 columns: c_last = 4, so v2 = v3 - 4
    gemm = Gemm(100, 12, 50)
    v3 = gemm_cycles(gemm, rows=16, cols=8, dataflow="os", version=3)
    assert gemm_cycles(gemm, rows=16, cols=8, dataflow="os", version=2) == v3 - 4


def test_unsupported_combinations_raise():
    with pytest.raises(ValueError, match="OS dataflow only"):
        gemm_cycles(Gemm(4, 4, 4), rows=4, cols=4, dataflow="ws", version=2)
    with pytest.raises(ValueError, match="dataflow"):
        gemm_cycles(Gemm(4, 4, 4), rows=4, cols=4, dataflow="xs")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="version"):
        gemm_cycles(Gemm(4, 4, 4), rows=4, cols=4, version=1)


def test_ws_filter_load_span_formula():
    # F*(Tt + 2*rows + cols - 2) - (Tt + rows + cols - 2) - 1 with Sr = W, Sc = K, Tt = P
    gemm = conv_gemm(32, 32, 3, 3, 64, 64, 1)  # P = 900, K = 64, W = 576: F = 36 * 8
    assert ws_filter_load_span(gemm, rows=16, cols=8) == 288 * (900 + 38) - (900 + 22) - 1


def test_sata_res19_baseline_total_exact():
    layers = from_csv(RES19)
    assert sata_inference_cycles(layers, 4)["cycles"] == 20_276_593


def test_sata_res34_stt_total_within_4_cycles():
    layers = from_csv(RES34)
    total = sata_inference_cycles(layers, 6)["cycles"]
    assert total == 20_096_171  # the closed form
    assert abs(total - 20_096_167) <= 4  # SATA_Sim's own run


def test_strided_layer_ws_span_uses_ceil_quirk():
    layer = LayerWorkload("s2", 16, 16, 3, 3, 128, 128, stride=(2, 2))
    os_gemm = Gemm(7 * 7, 128, 3 * 3 * 128)  # (16 - 3)//2 + 1 = 7
    ws_gemm = Gemm(8 * 8, 128, 3 * 3 * 128)  # ceil(16/2) = 8
    expected = 4 * gemm_cycles(os_gemm, rows=16, cols=8, version=2) + ws_filter_load_span(ws_gemm, rows=16, cols=8)
    assert sata_layer_cycles(layer, 4) == expected


def _resnet34_dense_from_architecture() -> list[LayerWorkload]:
    """Dense MS-ResNet34 for 2x48x48 (the TT-SNN paper), stride modelled by halving the input as SATA_Sim
    did, shortcuts left out as in SATA_Sim's workload."""
    layers = [LayerWorkload("Conv1", 48, 48, 3, 3, 2, 64, spike_input=False)]
    size, cin, n = 48, 64, 2
    for stage, (blocks, cout) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512))):
        if stage:
            size //= 2
        for _ in range(blocks):
            for _conv in range(2):
                layers.append(LayerWorkload(f"Conv{n}", size, size, 3, 3, cin, cout))
                cin, n = cout, n + 1
    layers.append(LayerWorkload("FC1", 1, 1, 1, 1, 512, 101, kind="linear"))
    return layers


def test_dense_resnet34_from_stt_csv_matches_architecture_and_hw_md():
    from_stt = dense_equivalent(from_csv(RES34))
    arch = _resnet34_dense_from_architecture()
    assert [(l.ih, l.r, l.s, l.c, l.k) for l in from_stt] == [(l.ih, l.r, l.s, l.c, l.k) for l in arch]
    dense = sata_inference_cycles(from_stt, 6)["cycles"]
    assert dense == pytest.approx(1.162e8, rel=1e-3)
    stt = sata_inference_cycles(from_csv(RES34), 6)["cycles"]
    assert stt / dense == pytest.approx(0.173, abs=5e-4)


def test_from_csv_tags_tt_groups_and_spike_inputs():
    layers = from_csv(RES34)
    assert layers[0].branch == "dense" and not layers[0].spike_input
    assert [l.branch for l in layers[1:5]] == ["tt_first", "tt_h", "tt_w", "tt_last"]
    assert {l.group for l in layers[1:5]} == {"Conv2"}
    assert [l.spike_input for l in layers[1:5]] == [True, False, False, False]
    assert layers[-1].kind == "linear" and layers[-1].branch == "dense"
    assert sum(l.branch == "tt_h" for l in layers) == 32


def test_from_csv_rejects_missing_columns(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("name,ifmap_h\nConv1,32\n")
    with pytest.raises(ValueError, match="missing CSV columns"):
        from_csv(bad)


def test_layer_shapes_and_gemms():
    layer = LayerWorkload("c", 32, 30, 3, 3, 16, 8, stride=(2, 2), padding=(1, 1))
    assert (layer.ho, layer.wo) == (16, 15)
    assert layer.gemm("fp") == Gemm(16 * 15, 8, 144)
    assert layer.gemm("bp") == Gemm(32 * 30, 16, 72)
    assert layer.gemm("wg") == Gemm(144, 8, 16 * 15)
    # SATA's counts: FP/WG C*R*S*K*E^2, BP C*R*S*K*H^2
    assert layer.gemm("fp").macs == layer.gemm("wg").macs == 16 * 9 * 8 * 16 * 15
    assert layer.gemm("bp").macs == 16 * 9 * 8 * 32 * 30
    with pytest.raises(ValueError):
        LayerWorkload("bad", 2, 2, 3, 3, 1, 1)


def test_tt_cores_chain_and_dense_round_trip():
    dense = LayerWorkload("L", 24, 24, 3, 3, 64, 128, stride=(2, 2), padding=(1, 1))
    cores = tt_cores(dense, (8, 9, 10))
    assert [c.branch for c in cores] == ["tt_first", "tt_h", "tt_w", "tt_last"]
    assert (cores[-1].ho, cores[-1].wo) == (dense.ho, dense.wo)
    # exact strided chain: 1x1 at input resolution, kh x 1 with stride (2, 1), ...
    assert cores[0].macs_per_step == 24 * 24 * 64 * 8
    assert cores[1].macs_per_step == 12 * 24 * 3 * 8 * 9
    assert cores[2].macs_per_step == 12 * 12 * 3 * 9 * 10
    assert cores[3].macs_per_step == 12 * 12 * 10 * 128
    back = dense_equivalent(cores)
    assert len(back) == 1 and back[0].macs_per_step == dense.macs_per_step
    # PTT: both middle cores read the first core's output and produce the block's output size
    ptt = ptt_view(cores)
    assert (ptt[1].ho, ptt[1].wo) == (ptt[2].ho, ptt[2].wo) == (12, 12)


def test_htt_middle_cores_run_first_half_only():
    layer = LayerWorkload("m", 8, 8, 3, 1, 4, 4, branch="tt_h", active_steps="first_half", group="g")
    assert [layer.steps(t) for t in (1, 4, 5, 6)] == [1, 2, 3, 3]
    assert sata_layer_cycles(layer, 5) - sata_layer_cycles(layer, 6) == 0
    assert math.ceil(5 / 2) == layer.steps(5)


def test_from_csv_reads_scalesim_header(tmp_path):
    topo = tmp_path / "topo.csv"
    topo.write_text("Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, Num Filter, Strides,\n"
                    "Conv1, 32, 32, 3, 3, 64, 64, 1,\n\n")
    (layer,) = from_csv(topo)
    assert (layer.name, layer.ih, layer.r, layer.c, layer.k) == ("Conv1", 32, 3, 64, 64)
    assert sata_layer_cycles(layer, 1) > gemm_cycles(conv_gemm(32, 32, 3, 3, 64, 64), rows=16, cols=8, version=2)


def test_integer_like_dims_are_normalised():
    class Index:  # stands in for numpy / torch integers
        def __init__(self, v):
            self.v = v

        def __index__(self):
            return self.v

    layer = LayerWorkload("c", Index(8), 8, 3, 3, 4, 4, stride=2, padding=Index(1))
    assert layer.ih == 8 and layer.stride == (2, 2) and layer.padding == (1, 1)
    assert layer == LayerWorkload("c", 8, 8, 3, 3, 4, 4, stride=(2, 2), padding=(1, 1))
    with pytest.raises(ValueError, match="invalid"):
        LayerWorkload("c", 8.5, 8, 3, 3, 4, 4)  # type: ignore[arg-type]
