"""ONNX (verified in onnxruntime), --reconstruct-dense and NIR for TTConv1d and TT-matrix Linear layers."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import snntorch as snn
import torch
from torch import nn

from ttsnn_cli.compress.decompose import CompressConfig, compress_model
from ttsnn_cli.export.functional import Unrolled, prepare_export_copy
from ttsnn_cli.export.onnx import export_onnx
from ttsnn_cli.export.verify import verify_onnx
from ttsnn_cli.kinds.conv1d import DenseFolded1d
from ttsnn_cli.layers.conv1d import TTConv1d
from ttsnn_cli.layers.linear import TTLinear
from ttsnn_cli.maths.ranks import RankSpec
from ttsnn_cli.spiking.runner import run_timesteps

T = 4
pytestmark = pytest.mark.usefixtures("one_thread")


def audio(mode: str = "stt", reset: str = "subtract") -> nn.Sequential:
    """Conv1d -> LIF -> Conv1d (stride 2) -> LIF -> Flatten -> Linear -> LIF, compressed (conv1d + linear)."""
    torch.manual_seed(0)
    kw = dict(beta=0.8, init_hidden=True, reset_mechanism=reset)
    dense = nn.Sequential(
        nn.Conv1d(8, 24, 5, padding=2), snn.Leaky(**kw),
        nn.Conv1d(24, 24, 3, stride=2, padding=1, bias=False), snn.Leaky(**kw),
        nn.Flatten(), nn.Linear(24 * 8, 12), snn.Leaky(output=True, **kw),
    ).eval()
    with torch.no_grad():
        for m in dense.modules():
            if isinstance(m, (nn.Conv1d, nn.Linear)):
                m.weight.mul_(3)
    config = CompressConfig(RankSpec("fixed", (4, 4, 4)), mode=mode, timesteps=T, layer_types=("conv1d", "linear"),
                            linear_cores=2)
    return compress_model(dense, config)[0].eval()


@pytest.mark.parametrize("mode", ["stt", "htt"])
@torch.no_grad()
def test_reconstruct_dense_matches_tt_layers_at_every_step(mode: str) -> None:
    model = audio(mode)
    assert isinstance(model[0], TTConv1d) and isinstance(model[5], TTLinear)
    plain, folded = prepare_export_copy(model), prepare_export_copy(model, reconstruct_dense=True)
    assert isinstance(folded.model[0], DenseFolded1d) and type(folded.model[5]) is nn.Linear
    x = torch.rand(T, 3, 8, 16)
    reference = run_timesteps(model, x)
    assert torch.allclose(Unrolled(plain, T)(x), reference, atol=1e-5)
    assert (Unrolled(folded, T)(x) - reference).abs().max() < 1e-4


@pytest.mark.parametrize("mode,dense,layout", [("stt", False, "unrolled"), ("htt", False, "unrolled"),
                                               ("htt", True, "unrolled"), ("htt", False, "step")])
def test_onnx_export_verifies_in_onnxruntime(tmp_path: Path, mode: str, dense: bool, layout: str) -> None:
    model = audio(mode)
    info = export_onnx(model, tmp_path / "a.onnx", T, (8, 16), layout, batch=2, reconstruct_dense=dense)  # type: ignore[arg-type]
    result = verify_onnx(model, info)
    assert result.verified and result.max_abs_diff <= 1e-4


@torch.no_grad()
def test_nir_writes_conv1d_core_chains_and_a_reconstructed_affine(tmp_path: Path) -> None:
    nir = pytest.importorskip("nir")
    from ttsnn_cli.export.nir import export_nir, run_nir_chain

    model = audio("stt", reset="zero")
    path = tmp_path / "a.nir"
    export_nir(model, path, T, (8, 16))
    graph = nir.read(path)
    assert {"0.core1", "0.core2", "0.core3", "2.core1", "2.core2", "2.core3"} <= set(graph.nodes)
    assert isinstance(graph.nodes["0.core2"], nir.Conv1d) and graph.nodes["0.core2"].weight.shape == (4, 4, 5)
    fc = graph.nodes["5"]
    assert isinstance(fc, nir.Affine) and "reconstructed Affine" in fc.metadata["tt_matrix"]
    assert np.allclose(fc.weight, model[5].effective_weight().numpy(), atol=1e-6)
    x = torch.rand(T, 3, 8, 16)
    assert torch.allclose(run_nir_chain(graph, x), run_timesteps(model, x), atol=1e-4)
    # HTT Conv1d is time-dependent: refused with the reason
    from ttsnn_cli.errors import BadInputError

    with pytest.raises(BadInputError, match="layer 0: HTT"):
        export_nir(audio("htt", reset="zero"), tmp_path / "h.nir", T, (8, 16))


@torch.no_grad()
def test_dense_conv1d_net_exports_to_nir(tmp_path: Path) -> None:
    nir = pytest.importorskip("nir")
    from ttsnn_cli.export.nir import export_nir, run_nir_chain

    model = nn.Sequential(nn.Conv1d(4, 6, 3, padding=1), nn.BatchNorm1d(6), snn.Leaky(beta=0.9, init_hidden=True,
                          reset_mechanism="zero"), nn.Flatten(), nn.Linear(6 * 10, 3)).eval()
    model[1].running_mean.uniform_(-0.5, 0.5)
    export_nir(model, tmp_path / "d.nir", T, (4, 10))
    graph = nir.read(tmp_path / "d.nir")
    x = torch.rand(T, 2, 4, 10)
    assert torch.allclose(run_nir_chain(graph, x), run_timesteps(copy.deepcopy(model), x), atol=1e-4)
