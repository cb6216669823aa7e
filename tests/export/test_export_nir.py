"""NIR export (`ttsnn_cli.export.nir`): nir.read loads the file, and its weights alone reproduce the model.

The graph is simulated in discrete time from the stored weights (`run_nir_chain`) and compared with the
torch model over T; one TT layer is also recomputed by hand from its three stored Conv2d nodes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import snntorch as snn
import torch
from torch import nn

from ttsnn_cli.errors import BadInputError
from ttsnn_cli.export.nir import DT, export_nir, run_nir_chain
from ttsnn_cli.layers.conv2d import TTConv2d
from ttsnn_cli.spiking.runner import run_timesteps
from ttsnn_cli.zoo import zoo_entry

nir = pytest.importorskip("nir")
T = 4


pytestmark = pytest.mark.usefixtures("one_thread")


def digits(mode: str | None) -> nn.Module:
    torch.manual_seed(0)
    model = zoo_entry("digits_csnn").factory(width=4).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.3, 0.3)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    if mode is not None:
        for name in ("conv1", "conv2", "conv3"):
            conv = model.get_submodule(name)
            model.set_submodule(name, TTConv2d(conv.in_channels, conv.out_channels, 3, (3, 3, 3), mode, 1, 1,
                                               bias=False, timesteps=T))
    return model.eval()


def zero_reset_seq() -> nn.Sequential:
    kw = dict(beta=0.8, reset_mechanism="zero", init_hidden=True)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), snn.Leaky(**kw),
        nn.Conv2d(4, 4, (3, 5), padding=(2, 4), dilation=(2, 2)), snn.Leaky(**kw),   # non-square: embedded
        nn.AvgPool2d(2), nn.Flatten(), nn.Linear(4 * 4 * 4, 5), snn.Leaky(output=True, **kw),
    ).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                module.weight.mul_(3)
        model[6].bias.fill_(0.6)
    return model


@pytest.mark.parametrize("mode", [None, "stt", "ptt"], ids=["dense", "stt", "ptt"])
@torch.no_grad()
def test_digits_nir_graph_reproduces_the_model(tmp_path: Path, mode: str | None) -> None:
    model = digits(mode)
    path = tmp_path / "digits.nir"
    nodes = export_nir(model, path, T, (1, 16, 16))
    graph = nir.read(path)
    assert len(graph.nodes) == nodes
    assert [p.name for p in tmp_path.iterdir()] == ["digits.nir"]  # written atomically, no temporary left
    assert graph.metadata["tt_mode"] == (mode or "dense")
    if mode:
        assert '"conv1": [3, 3, 3]' in str(graph.metadata["tt_ranks"])
        assert {"conv1.core1", "conv1.core23", "conv1.core4"} <= set(graph.nodes)
        assert graph.nodes["conv1.core23"].metadata["tt_mode"] == mode
    x = torch.rand(T, 3, 1, 16, 16)
    assert torch.allclose(run_nir_chain(graph, x), run_timesteps(model, x), atol=1e-4)


@torch.no_grad()
def test_lif_parameters_follow_snntorch_mapping(tmp_path: Path) -> None:
    model = zero_reset_seq()
    export_nir(model, tmp_path / "s.nir", T, (1, 8, 8))
    graph = nir.read(tmp_path / "s.nir")
    lif = graph.nodes["1"]
    assert isinstance(lif, nir.LIF) and lif.tau.shape == (4, 8, 8)
    np.testing.assert_allclose(lif.tau, DT / (1 - 0.8), rtol=1e-6)
    np.testing.assert_allclose(lif.r, 1 / (1 - 0.8), rtol=1e-6)
    assert np.all(lif.v_leak == 0) and np.all(lif.v_threshold == 1.0) and np.all(lif.v_reset == 0)
    x = torch.rand(T, 2, 1, 8, 8)
    reference = run_timesteps(model, x)
    assert 0 < reference.mean() < 1  # the last layer spikes, not always: the comparison means something
    assert torch.equal(run_nir_chain(graph, x), reference)


@torch.no_grad()
def test_one_tt_layer_recomputed_from_its_stored_cores(tmp_path: Path) -> None:
    """A planted STT layer: core1 -> core23 -> core4 from the file equals the TT layer (and its dense conv)."""
    torch.manual_seed(2)
    g1, g2, g3, g4 = torch.randn(2, 2), torch.randn(3, 2, 2), torch.randn(3, 2, 2), torch.randn(4, 2)
    conv = nn.Conv2d(2, 4, 3, padding=1)
    conv.weight.copy_(torch.einsum("or,brs,asp,pi->oiab", g4, g3, g2, g1))
    layer = TTConv2d.from_conv(conv, (2, 2, 2), "stt")
    model = nn.Sequential(layer, snn.Leaky(beta=0.5, reset_mechanism="zero", init_hidden=True)).eval()
    export_nir(model, tmp_path / "tt.nir", T, (2, 8, 8))
    nodes = nir.read(tmp_path / "tt.nir").nodes
    x = torch.randn(2, 2, 8, 8)
    y = x
    for name in ("0.core1", "0.core23", "0.core4"):
        n = nodes[name]
        y = torch.nn.functional.conv2d(y, torch.from_numpy(n.weight), torch.from_numpy(n.bias), tuple(n.stride),
                                       tuple(n.padding), tuple(n.dilation), n.groups)
    assert nodes["0.core23"].weight.shape == (2, 2, 3, 3)
    assert torch.allclose(y, layer(x), atol=1e-5)
    assert torch.allclose(y, conv(x), atol=1e-4)


@pytest.mark.parametrize("make,match", [
    (lambda: digits("htt"), "HTT switches path"),
    (lambda: zoo_entry("ms_resnet18").factory(), "membrane shortcut"),
    (lambda: nn.Sequential(nn.Conv2d(1, 2, 3), snn.Alpha(alpha=0.9, beta=0.5, init_hidden=True)), "Alpha neuron"),
    (lambda: nn.Sequential(nn.Conv2d(1, 2, 3), snn.Leaky(beta=0.5, reset_mechanism="zero", init_hidden=True),
                           nn.MaxPool2d(2)), r"layer 2 \(MaxPool2d\)"),
    (lambda: nn.Sequential(nn.Conv2d(1, 2, (3, 4)), snn.Leaky(beta=0.5, reset_mechanism="zero", init_hidden=True)),
     "3x4 kernel"),
], ids=["htt", "ms-resnet", "alpha", "maxpool", "odd-nonsquare"])
def test_unsupported_networks_are_refused_with_the_reason(tmp_path: Path, make, match: str) -> None:
    model = make().eval()
    shape = (3, 32, 32) if "MSResNet" in type(model).__name__ else (1, 16, 16)
    with pytest.raises(BadInputError, match=match):
        export_nir(model, tmp_path / "x.nir", T, shape)
    assert list(tmp_path.iterdir()) == []
