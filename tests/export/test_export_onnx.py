"""ONNX export (`ttsnn_cli.export.functional`, `.onnx`, `.verify`).

Fast: the export copy (what the exporter traces) reproduces every model style bit for bit in torch,
unrolled and stepped; `--reconstruct-dense` layers match their TT layers at every step; one real
dynamo export verified in onnxruntime; a tampered model fails verification (exit 5). Slow: the zoo
digits_csnn in stt/ptt/htt, unrolled and step, with and without reconstruct-dense, the own-loop style.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import snntorch as snn
import torch
from torch import nn

from ttsnn_cli.errors import BadInputError, ExportVerificationError
from ttsnn_cli.export.functional import Stepper, Unrolled, prepare_export_copy
from ttsnn_cli.export.onnx import export_onnx
from ttsnn_cli.export.verify import verify_onnx
from ttsnn_cli.kinds.conv2d import DenseFolded
from ttsnn_cli.layers.conv2d import TTConv2d
from ttsnn_cli.spiking.runner import run_timesteps
from ttsnn_cli.zoo import zoo_entry

T = 4


pytestmark = pytest.mark.usefixtures("one_thread")


def seq_net(reset: str = "subtract", reset_delay: bool = True) -> nn.Sequential:
    """User style B: Sequential + init_hidden Leaky (the last one with output=True)."""
    kw = dict(beta=0.8, reset_mechanism=reset, reset_delay=reset_delay, init_hidden=True)
    return nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1), snn.Leaky(**kw),
        nn.Conv2d(6, 8, 3, stride=2, padding=1, bias=False), snn.Leaky(**kw),
        nn.AvgPool2d(2), nn.Flatten(), nn.Linear(8 * 2 * 2, 5), snn.Leaky(output=True, **kw),
    ).eval()


class LoopNet(nn.Module):
    """User style A: init_leaky() membranes and its own loop over `num_steps`, static input."""

    def __init__(self, num_steps: int = T) -> None:
        super().__init__()
        self.num_steps = num_steps
        self.conv1, self.lif1 = nn.Conv2d(1, 6, 3, padding=1), snn.Leaky(beta=0.7)
        self.conv2, self.lif2 = nn.Conv2d(6, 6, 3, padding=1), snn.Leaky(beta=0.7, reset_mechanism="zero")
        self.fc, self.lif3 = nn.Linear(6 * 8 * 8, 4), snn.Leaky(beta=0.7)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mem1, mem2, mem3 = self.lif1.init_leaky(), self.lif2.init_leaky(), self.lif3.init_leaky()
        spikes, mems = [], []
        for _ in range(self.num_steps):
            spk1, mem1 = self.lif1(self.conv1(x), mem1)
            spk2, mem2 = self.lif2(self.conv2(spk1), mem2)
            spk3, mem3 = self.lif3(self.fc(spk2.flatten(1)), mem3)
            spikes.append(spk3)
            mems.append(mem3)
        return torch.stack(spikes), torch.stack(mems)


def scale_inputs(model: nn.Module, factor: float = 3.0) -> nn.Module:
    """Bigger first-layer weights so every layer spikes (a test with no spikes proves little)."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                module.weight.mul_(factor)
    return model


def digits(mode: str | None, width: int = 4) -> nn.Module:
    torch.manual_seed(0)
    model = zoo_entry("digits_csnn").factory(width=width).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.3, 0.3)
                module.running_var.uniform_(0.5, 1.5)
    if mode is not None:  # TT layers with random cores: export must reproduce them, whatever they approximate
        for name in ("conv1", "conv2", "conv3"):
            conv = model.get_submodule(name)
            model.set_submodule(name, TTConv2d(conv.in_channels, conv.out_channels, 3, (3, 3, 3), mode, 1, 1,
                                               bias=False, timesteps=T))
    return model.eval()


def _step_through(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    copy_ = prepare_export_copy(model)
    stepper = Stepper(copy_)
    states = [torch.zeros_like(s) for s in stepper(x[0])[1:]]
    ys = []
    for t in range(x.shape[0]):
        step = (torch.tensor(t),) if copy_.htt else ()
        out = stepper(x[t], *step, *states)
        ys.append(out[0])
        states = list(out[1:])
    return torch.stack(ys)


@pytest.mark.parametrize("factory", [
    lambda: scale_inputs(seq_net()),
    lambda: scale_inputs(seq_net("zero", reset_delay=False)),
    lambda: digits(None), lambda: digits("stt"), lambda: digits("ptt"), lambda: digits("htt"),
], ids=["seq-subtract", "seq-zero-nodelay", "digits-dense", "digits-stt", "digits-ptt", "digits-htt"])
@torch.no_grad()
def test_export_copy_reproduces_the_model_unrolled_and_stepped(factory) -> None:
    model = factory()
    shape = (1, 16, 16) if "DigitsCSNN" in type(model).__name__ else (1, 8, 8)
    x = torch.rand(T, 3, *shape) * 2
    reference = run_timesteps(model, x)
    assert torch.equal(Unrolled(prepare_export_copy(model), T)(x), reference)
    assert torch.equal(_step_through(model, x), reference)


@torch.no_grad()
def test_export_copy_reproduces_own_loop_model_and_refuses_step_mode() -> None:
    model = scale_inputs(LoopNet()).eval()
    x = torch.rand(1, 2, 1, 8, 8).expand(T, -1, -1, -1, -1)
    copy_ = prepare_export_copy(model)
    assert torch.equal(Unrolled(copy_, T, static_input=True)(x), run_timesteps(model, x))
    with pytest.raises(BadInputError, match="runs its own time loop"):
        Stepper(copy_)


@pytest.mark.parametrize("mode", ["stt", "ptt", "htt"])
@pytest.mark.parametrize("geometry", [
    dict(kernel_size=3, stride=1, padding=1), dict(kernel_size=(3, 5), stride=2, padding=(1, 2), dilation=(2, 1)),
    dict(kernel_size=3, stride=1, padding=(0, 1, 2, 1)), dict(kernel_size=3, stride=1, padding=1, padding_mode="reflect"),
], ids=["3x3", "3x5-stride-dilation", "asymmetric-pad", "reflect"])
@torch.no_grad()
def test_reconstruct_dense_matches_the_tt_layer_at_every_step(mode: str, geometry: dict) -> None:
    layer = TTConv2d(5, 7, ranks=(3, 3, 3), mode=mode, timesteps=T, **geometry).eval()
    for p in layer.parameters():
        p.normal_()
    folded = DenseFolded("layer", layer, prepare_export_copy(seq_net()).context)
    folded.context.clear()
    x = torch.randn(2, 5, 9, 11)
    for t in range(T):
        expected = layer(x)  # an HTT layer counts its calls: step t
        got = folded(x)
        assert got.shape == expected.shape
        assert torch.allclose(got, expected, atol=1e-5, rtol=1e-5), (t, (got - expected).abs().max())
    if mode == "htt":
        assert folded.reduced is not None and folded.full_steps == math.ceil(T / 2)


@torch.no_grad()
def test_reconstruct_dense_recovers_a_planted_low_rank_dense_conv() -> None:
    """Dense conv with a planted TT-rank-(2,2,2) kernel -> STT at that rank -> folded: the dense conv again."""
    torch.manual_seed(1)
    g1, g2, g3, g4 = torch.randn(2, 4), torch.randn(3, 2, 2), torch.randn(3, 2, 2), torch.randn(6, 2)
    conv = nn.Conv2d(4, 6, 3, padding=1)
    conv.weight.copy_(torch.einsum("or,brs,asp,pi->oiab", g4, g3, g2, g1))
    layer = TTConv2d.from_conv(conv, (2, 2, 2), "stt")
    folded = DenseFolded("conv", layer, prepare_export_copy(seq_net()).context)
    assert torch.allclose(folded.full.weight, conv.weight, atol=1e-5)
    x = torch.randn(2, 4, 8, 8)
    assert torch.allclose(folded(x), conv(x), atol=1e-4)


def test_prepare_refuses_a_network_without_neurons_or_with_an_unknown_one() -> None:
    with pytest.raises(BadInputError, match="no snntorch neuron"):
        prepare_export_copy(nn.Sequential(nn.Conv2d(1, 2, 3)))
    with pytest.raises(BadInputError, match="SLSTM has no export mapping"):
        prepare_export_copy(nn.Sequential(nn.Flatten(), snn.SLSTM(4, 4, init_hidden=True)))


@pytest.fixture(scope="module")
def exported_seq(tmp_path_factory: pytest.TempPathFactory):
    torch.manual_seed(0)
    model = scale_inputs(seq_net())
    path = tmp_path_factory.mktemp("onnx") / "seq.onnx"
    return model, export_onnx(model, path, T, (1, 8, 8), "unrolled", batch=3)


def test_unrolled_export_verifies_in_onnxruntime(exported_seq) -> None:
    import onnx
    import onnxruntime as ort

    model, info = exported_seq
    result = verify_onnx(model, info)
    assert result.verified and result.max_abs_diff <= 1e-4
    assert result.spike_agreement is not None and result.spike_agreement >= 0.999 and result.spikes_compared > 0
    proto = onnx.load(str(info.path))
    assert [i.name for i in proto.graph.input] == ["x"] and proto.graph.output[0].name == "y"
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["ttsnn.layout"] == "unrolled" and meta["ttsnn.timesteps"] == str(T)
    # batch is dynamic: run a batch the graph was not traced with
    x = torch.rand(T, 5, 1, 8, 8) * 2
    y = ort.InferenceSession(str(info.path), providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})[0]
    with torch.no_grad():
        assert np.abs(y - run_timesteps(model, x).numpy()).max() <= 1e-4


def test_verification_failure_raises_exit_5(exported_seq) -> None:
    model, info = exported_seq
    import copy

    tampered = copy.deepcopy(model)
    with torch.no_grad():
        tampered[-2].bias.add_(0.5)
    with pytest.raises(ExportVerificationError, match="max_abs_diff") as caught:
        verify_onnx(tampered, info)
    assert caught.value.exit_code == 5


@pytest.mark.slow
@pytest.mark.parametrize("mode,layout,dense", [
    ("stt", "unrolled", False), ("ptt", "unrolled", False), ("htt", "unrolled", False),
    ("stt", "unrolled", True), ("htt", "unrolled", True), ("ptt", "step", False), ("htt", "step", False),
    ("htt", "step", True),
])
def test_digits_every_tt_mode_exports_and_verifies(tmp_path: Path, mode: str, layout: str, dense: bool) -> None:
    import onnx

    model = digits(mode)
    info = export_onnx(model, tmp_path / "d.onnx", T, (1, 16, 16), layout, batch=2, reconstruct_dense=dense)  # type: ignore[arg-type]
    result = verify_onnx(model, info)
    assert result.verified and result.max_abs_diff <= 1e-4
    ops = {n.op_type for n in onnx.load(str(tmp_path / "d.onnx")).graph.node}
    if layout == "step":
        assert info.input_names[1:2] == (["t"] if mode == "htt" else ["mem_in.stem.lif"])
        assert info.output_names[1:] == [f"mem_out.{n}" for n in info.neurons]
    if mode == "htt" and layout == "step":
        assert "Where" in ops


@pytest.mark.slow
def test_own_loop_model_exports_unrolled(tmp_path: Path) -> None:
    model = scale_inputs(LoopNet()).eval()
    info = export_onnx(model, tmp_path / "loop.onnx", T, (1, 8, 8))
    assert info.static_input
    result = verify_onnx(model, info)
    assert result.verified and result.spike_agreement == 1.0 and result.spikes_compared > 0


@pytest.mark.slow
def test_ms_resnet18_ptt_exports_and_verifies(tmp_path: Path) -> None:
    """The paper's MS-ResNet (membrane shortcut) with PTT layers: unrolled graph verified (T=2, 3x8x8 to keep it quick)."""
    torch.manual_seed(0)
    model = zoo_entry("ms_resnet18").factory().eval()
    for name in ("layer1.0.conv1", "layer2.0.conv1", "layer4.1.conv2"):
        conv = model.get_submodule(name)
        model.set_submodule(name, TTConv2d(conv.in_channels, conv.out_channels, 3, (8, 8, 8), "ptt", conv.stride, 1,
                                           bias=False, timesteps=2))
    info = export_onnx(model.eval(), tmp_path / "r18.onnx", 2, (3, 8, 8), "unrolled", batch=2)
    result = verify_onnx(model, info)
    assert result.verified and result.spikes_compared > 0
