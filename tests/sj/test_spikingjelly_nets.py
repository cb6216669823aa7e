"""SpikingJelly networks in ttsnn (issue 23, item 2): detection, reset, compression that keeps the step
mode, full-rank agreement with the dense network, bundles, and every command end to end.

Skipped where SpikingJelly is not installed (an optional extra: `pip install --no-deps spikingjelly==2.0.0 loguru`);
test_sj_absent.py runs everywhere."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest
import torch
from torch import nn

HERE = Path(__file__).parent
T = 4


pytest.importorskip("spikingjelly")

from spikingjelly.activation_based import functional, neuron  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

import sj_nets  # noqa: E402
from ttsnn_cli import load_model  # noqa: E402
from ttsnn_cli.cli.commands import app  # noqa: E402
from ttsnn_cli.compress.decompose import CompressConfig, compress_model  # noqa: E402
from ttsnn_cli.kinds import kind_of  # noqa: E402
from ttsnn_cli.kinds.stepmode import StepModeTT  # noqa: E402
from ttsnn_cli.layers.conv2d import TTConv2d  # noqa: E402
from ttsnn_cli.spiking.runner import execution_style, run_timesteps  # noqa: E402
from ttsnn_cli.spiking.state import is_neuron, reset_states  # noqa: E402
from tests.sj.neuron_calls import neuron_calls  # noqa: E402

runner = CliRunner()
ARCH = "sj_nets:sew_ms_net"
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def _trust_sj_nets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TTSNN_TRUSTED_ARCH", os.environ.get("TTSNN_TRUSTED_ARCH", "") + ",sj_nets")
    monkeypatch.setenv("PYTHONPATH", str(HERE))


def _input(batch: int = 6, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(T, batch, 1, 16, 16, generator=generator) * 2


def _spikes(net: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The output and every SpikingJelly neuron's spikes over the sequence, in call order."""
    y, record = neuron_calls(net, x)
    return y, [out for _name, out in record]


def _firing(net: nn.Module, gain: float = 4.0) -> nn.Module:
    """A freshly initialised net barely fires (BatchNorm in eval keeps the small init scale, thresholds
    are 1): scaling every BatchNorm's weight makes it fire as a trained one does."""
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.mul_(gain)
    return net.eval()


def _full_rank(net: nn.Module) -> tuple[nn.Module, object]:
    return compress_model(copy.deepcopy(net), CompressConfig(ranks=4096, allow_growth=True))


def test_detection_styles_and_reset() -> None:
    multi, single = sj_nets.sew_ms_net(), sj_nets.single_step_net()
    assert execution_style(multi) == "multistep" and execution_style(single) == "stepped"
    assert sum(is_neuron(m) for m in multi.modules()) == 5
    x = _input()
    first = run_timesteps(multi.eval(), x)
    lif = multi.head[0]
    assert isinstance(lif.v, torch.Tensor) and lif.v.shape == (6, 16, 8, 8)
    reset_states(multi)
    assert lif.v == 0.0 and not isinstance(lif.v, torch.Tensor)  # back to its registered value
    assert torch.equal(run_timesteps(multi, x), first)  # reset between sequences: the same answer twice
    # a different batch after a run: no stale state of the old shape
    assert run_timesteps(multi, _input(batch=3)).shape == (T, 3, 10)


def test_step_wrappers_are_decomposed_and_keep_their_step_mode() -> None:
    net = sj_nets.sew_ms_net()
    compressed, result = _full_rank(net)
    decomposed = {r.name for r in result.layers if r.skipped is None}
    # layer.Conv2d (step wrappers) and the nn.Conv2d inside SeqToANNContainer; layer.Linear needs --layer-types linear
    assert decomposed == {"stem.0", "sew.conv.0", "sew.conv.3", "down.0", "ms.residual.1"}
    for name in ("stem.0", "sew.conv.0", "ms.residual.1"):
        layer = compressed.get_submodule(name)
        assert isinstance(layer, TTConv2d) and isinstance(layer, StepModeTT) and layer.step_mode == "m"
        assert kind_of(layer).name == "conv2d"
    down = compressed.get_submodule("down.0")
    assert type(down) is TTConv2d  # inside SeqToANNContainer: a plain TT layer on [T*B, ...]
    assert all(r.rel_error < 1e-5 for r in result.layers if r.skipped is None)
    # SpikingJelly's own step-mode switch still reaches the TT layers
    functional.set_step_mode(compressed, "s")
    assert compressed.get_submodule("stem.0").step_mode == "s"


def test_full_rank_reproduces_the_dense_network() -> None:
    """DESIGN.md's first test, for SpikingJelly: at full rank every layer computes its dense conv, and the
    whole network's spikes agree (>= 99 %; a float32 rounding can flip a neuron on its threshold)."""
    torch.manual_seed(3)
    net = _firing(sj_nets.sew_ms_net())
    compressed, _ = _full_rank(net)
    x = _input(batch=16, seed=1)
    want, dense_spikes = _spikes(net, x)
    got, tt_spikes = _spikes(compressed, x)
    assert len(dense_spikes) == len(tt_spikes) == 5
    total = sum(s.numel() for s in dense_spikes)
    rate = sum(float(s.sum()) for s in dense_spikes) / total
    assert 0.01 < rate < 0.9  # the comparison means something: neurons do fire, and not all of them
    agreement = sum(int((a == b).sum()) for a, b in zip(dense_spikes, tt_spikes)) / total
    assert agreement >= 0.99
    assert float((got - want).abs().max()) < 1e-3 or agreement < 1


def test_single_step_network_compresses_and_matches() -> None:
    net = _firing(sj_nets.single_step_net())
    compressed, result = _full_rank(net)
    assert {r.name for r in result.layers if r.skipped is None} == {"features.0", "features.3"}
    assert compressed.features[3].step_mode == "s"
    x = _input()
    want, dense_spikes = _spikes(net, x)
    got, tt_spikes = _spikes(compressed, x)
    total = sum(s.numel() for s in dense_spikes)
    assert sum(float(s.sum()) for s in dense_spikes) / total > 0.01
    agreement = sum(int((a == b).sum()) for a, b in zip(dense_spikes, tt_spikes)) / total
    assert agreement >= 0.99 and got.shape == want.shape == (T, 6, 10)


@torch.no_grad()
def test_conv1d_and_linear_wrappers_keep_the_step_mode() -> None:
    from spikingjelly.activation_based import layer

    net = nn.Sequential(layer.Conv1d(2, 8, 3, padding=1), neuron.LIFNode(), layer.Conv1d(8, 8, 5, padding=2),
                        neuron.IFNode(), layer.Flatten(), layer.Linear(8 * 20, 16), neuron.IFNode())
    functional.set_step_mode(net, "m")
    x = torch.rand(T, 3, 2, 20) * 3
    want = run_timesteps(net.eval(), x)
    compressed, result = compress_model(copy.deepcopy(net), CompressConfig(ranks=4096, allow_growth=True,
                                                                         layer_types=("conv1d", "linear")))
    assert [r.name for r in result.layers if r.skipped is None] == ["0", "2", "5"]
    assert all(isinstance(compressed[i], StepModeTT) and compressed[i].step_mode == "m" for i in (0, 2, 5))
    assert float((run_timesteps(compressed, x) == want).float().mean()) >= 0.99


def test_unmapped_neuron_is_refused_by_export_in_one_line() -> None:
    from spikingjelly.activation_based import layer

    from ttsnn_cli.errors import BadInputError
    from ttsnn_cli.export.functional import prepare_export_copy

    net = nn.Sequential(layer.Conv2d(1, 4, 3, padding=1), neuron.QIFNode())
    functional.set_step_mode(net, "m")
    with pytest.raises(BadInputError, match="QIFNode has no export mapping; supported: LIFNode, IFNode, ParametricLIFNode"):
        prepare_export_copy(net)


def _invoke(args: list[str]) -> dict:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, (result.stderr or result.stdout)[-2000:]
    return json.loads(result.stdout)


@pytest.mark.parametrize("mode", ["stt", pytest.param("htt", marks=pytest.mark.slow)])
def test_every_command_end_to_end(tmp_path: Path, mode: str) -> None:
    """state_dict + --arch -> compress -> finetune (1 epoch, digits) -> report -> export ONNX verified
    (unrolled and step); NIR refused in one line before any file is written (a residual forward)."""
    torch.manual_seed(0)
    checkpoint = tmp_path / "sew.pt"
    torch.save(sj_nets.sew_ms_net().state_dict(), checkpoint)
    compressed = tmp_path / "c.ttsnn"
    done = _invoke(["compress", str(checkpoint), "--arch", ARCH, "--ranks", "4", "--mode", mode,
                    "--timesteps", str(T), "-o", str(compressed)])
    assert done["totals"]["decomposed_layers"] >= 4 and done["totals"]["param_ratio"] > 1.5
    model = load_model(compressed)
    assert isinstance(model.sew.conv[0], StepModeTT) and model.sew.conv[0].step_mode == "m"
    tuned = tmp_path / "f.ttsnn"
    if mode == "stt":  # one fine-tune is enough: HTT trains through the same engine
        trained = _invoke(["finetune", str(compressed), "--data", "digits", "--epochs", "1", "--timesteps", str(T),
                           "--batch-size", "64", "-o", str(tuned)])
        assert trained["epochs"] == 1 and 0 <= trained["test_accuracy"] <= 100
    else:
        tuned = compressed
    report = _invoke(["report", str(tuned), "--input-shape", "1,16,16"])
    assert report["params"]["weights"] < report["baseline"]["params"]["weights"]
    assert report["baseline"]["macs_per_timestep"] == 534688  # the dense SEW/MS net on 16x16: counted by hand
    assert report["ratios"]["macs"] > 1
    for layout in ("unrolled", "step") if mode == "stt" else ("unrolled",):
        onnx_path = tmp_path / f"{layout}.onnx"
        exported = _invoke(["export", str(tuned), "--onnx", str(onnx_path), "--mode", layout, "--verify",
                            "--input-shape", "1,16,16"])
        assert exported["verified"] and exported["max_abs_diff"] <= 1e-4 and onnx_path.is_file()
        assert exported["neurons"] == ["stem.2", "sew.conv.2", "sew.conv.5", "ms.residual.0", "head.0"]
        if layout == "unrolled":
            assert exported["spike_agreement"] >= 0.99 and exported["spikes_compared"] > 0
    refused = runner.invoke(app, ["export", str(tuned), "--onnx", str(tmp_path / "n.onnx"), "--nir", str(tmp_path / "n.nir"),
                                  "--input-shape", "1,16,16"])
    assert refused.exit_code == 3 and len(refused.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "n.nir").exists() and not (tmp_path / "n.onnx").exists()


def test_dense_chain_exports_and_nir_is_refused_before_any_output(tmp_path: Path) -> None:
    """A dense SpikingJelly nn.Sequential (state_dict + --arch): ONNX verified as it is; NIR refused in one
    line (exit 3) with nothing written, dense or compressed: its second LIFNode resets softly, which no NIR
    node expresses (test_sj_nir.py exports the chains NIR can hold)."""
    checkpoint = tmp_path / "chain.pt"
    torch.save(sj_nets.sequential_chain().state_dict(), checkpoint)
    common = ["--arch", "sj_nets:sequential_chain", "--input-shape", "1,16,16", "--timesteps", str(T)]
    exported = _invoke(["export", str(checkpoint), *common, "--onnx", str(tmp_path / "d.onnx"), "--verify"])
    assert exported["verified"] and exported["spike_agreement"] >= 0.99
    compressed = tmp_path / "c.ttsnn"
    _invoke(["compress", str(checkpoint), "--arch", "sj_nets:sequential_chain", "--ranks", "2", "-o", str(compressed)])
    for model, extra in ((checkpoint, common), (compressed, common[2:])):
        refused = runner.invoke(app, ["export", str(model), *extra, "--onnx", str(tmp_path / "n.onnx"),
                                      "--nir", str(tmp_path / "n.nir")])
        assert refused.exit_code == 3, refused.stderr
        assert refused.stderr.strip().splitlines() == [refused.stderr.strip()]
        assert "neuron 5 (LIFNode): a soft reset (v_reset=None)" in refused.stderr
        assert not (tmp_path / "n.nir").exists() and not (tmp_path / "n.onnx").exists()


@pytest.mark.slow
def test_single_step_htt_exports_verified(tmp_path: Path) -> None:
    """Single-step mode (style stepped) with HTT layers: the step graph takes `t`, both layouts verify."""
    checkpoint = tmp_path / "single.pt"
    torch.save(sj_nets.single_step_net().state_dict(), checkpoint)
    compressed = tmp_path / "s.ttsnn"
    _invoke(["compress", str(checkpoint), "--arch", "sj_nets:single_step_net", "--ranks", "4", "--mode", "htt",
             "--timesteps", str(T), "-o", str(compressed)])
    for layout in ("unrolled", "step"):
        exported = _invoke(["export", str(compressed), "--onnx", str(tmp_path / f"{layout}.onnx"), "--mode", layout,
                            "--input-shape", "1,16,16", "--verify"])
        assert exported["verified"] and exported["max_abs_diff"] <= 1e-4
        assert ("t" in exported["inputs"]) == (layout == "step")
