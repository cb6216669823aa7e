"""NIR out, wider (issue 23): AdaptiveAvgPool2d, Sequentials of the user's own blocks, and every
refusal before any output is written, whatever combination of --onnx / --nir was asked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import snntorch as snn
import torch
from torch import nn
from typer.testing import CliRunner

from ttsnn_cli import load_model
from ttsnn_cli.cli.commands import app
from ttsnn_cli.compress.decompose import CompressConfig, compress_model
from ttsnn_cli.errors import BadInputError
from ttsnn_cli.export.nir import export_nir
from ttsnn_cli.spiking.runner import run_timesteps
from ttsnn_cli.spiking.state import reset_states

nir = pytest.importorskip("nir")
T = 6
SHAPE = (1, 8, 8)


class Block(nn.Module):
    """conv + BN + neuron, as users write them."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.lif = snn.Leaky(beta=0.8, init_hidden=True, reset_mechanism="zero")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lif(self.bn(self.conv(x)))


class Residual(Block):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lif(self.bn(self.conv(x)) + x)


def blocks(pool: nn.Module | None = None) -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(Block(1, 4), nn.Sequential(Block(4, 8)), pool or nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8 if pool is None else 8 * 4, 5),
                          snn.Leaky(beta=0.8, init_hidden=True, reset_mechanism="zero"))
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(1.5, 3.0)
                module.bias.uniform_(0.2, 0.5)
    return model.eval()


def residual_net() -> nn.Sequential:
    return nn.Sequential(Block(1, 4), Residual(4, 4)).eval()


def maxpool_net() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), snn.Leaky(beta=0.8, init_hidden=True), nn.MaxPool2d(2)).eval()


#: a network NIR expresses but ONNX does not (NIR's LI, as read back from a graph)
LI_NET = {"input_shape": [1, 8, 8], "layers": [{"op": "flatten", "start": 1, "end": 3},
                                               {"op": "linear", "in": 64, "out": 3, "bias": True}, {"op": "li", "shape": []}]}


def _spikes(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    reset_states(model)
    with torch.no_grad():
        return run_timesteps(model.eval(), x)


@pytest.mark.parametrize("pool,kernel", [(None, [8, 8]), (nn.AdaptiveAvgPool2d((2, 2)), [4, 4]),
                                         (nn.AdaptiveAvgPool2d((None, 2)), [1, 4])], ids=["1x1", "2x2", "none-by-2"])
def test_adaptive_pool_becomes_avgpool_when_the_size_divides(tmp_path: Path, pool, kernel) -> None:
    model = blocks(pool if pool is None else pool)
    if isinstance(pool, nn.AdaptiveAvgPool2d) and pool.output_size == (None, 2):
        model[4] = nn.Linear(8 * 8 * 2, 5)
    with torch.no_grad():
        model[4].weight.mul_(8)  # the readout spikes, so the comparison has spikes to compare
    export_nir(model, tmp_path / "m.nir", T, SHAPE)
    graph = nir.read(str(tmp_path / "m.nir"))
    pools = [n for n in graph.nodes.values() if isinstance(n, nir.AvgPool2d)]
    assert len(pools) == 1 and pools[0].kernel_size.tolist() == kernel == pools[0].stride.tolist()
    x = torch.rand(T, 8, *SHAPE, generator=torch.Generator().manual_seed(1)) * 2
    reference = _spikes(model, x)
    assert float(reference.mean()) > 0.01
    assert float((reference == _spikes(load_model(tmp_path / "m.nir"), x)).float().mean()) >= 0.99


def test_uneven_adaptive_pool_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="uneven windows"):
        export_nir(blocks(nn.AdaptiveAvgPool2d(3)), tmp_path / "m.nir", T, SHAPE)
    assert not (tmp_path / "m.nir").exists()


def test_sequential_of_user_blocks_is_traced(tmp_path: Path) -> None:
    model = blocks()
    export_nir(model, tmp_path / "m.nir", T, SHAPE)
    graph = nir.read(str(tmp_path / "m.nir"))
    assert {"0.conv", "0.lif", "1.0.conv", "1.0.lif"} <= set(graph.nodes)  # BN folded into the convs
    assert not any("bn" in name for name in graph.nodes)
    # compressed blocks too: the TT conv inside a block is one leaf, written as its cores
    compressed, _ = compress_model(blocks(), CompressConfig(ranks=64, allow_growth=True))
    export_nir(compressed, tmp_path / "tt.nir", T, SHAPE)
    nodes = set(nir.read(str(tmp_path / "tt.nir")).nodes)
    assert {"1.0.conv.core1", "1.0.conv.core23", "1.0.conv.core4"} <= nodes
    x = torch.rand(T, 8, *SHAPE, generator=torch.Generator().manual_seed(2)) * 2
    assert float((_spikes(model, x) == _spikes(load_model(tmp_path / "tt.nir"), x)).float().mean()) >= 0.99


def test_a_block_that_is_not_a_chain_is_refused_naming_it(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match=r"layer 1 \(Residual\) is a block whose forward is not a chain"):
        export_nir(residual_net(), tmp_path / "m.nir", T, SHAPE)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------ refusals first
@pytest.fixture
def trusted(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    monkeypatch.setenv("TTSNN_TRUSTED_ARCH", os.environ.get("TTSNN_TRUSTED_ARCH", "") + ",test_nir_out_wider")


@pytest.mark.parametrize("outputs", [("nir",), ("onnx", "nir"), ("onnx", "nir", "verify")], ids=["nir", "both", "both-verify"])
@pytest.mark.parametrize("factory,match", [("maxpool_net", "NIR has no max pooling node"),
                                           ("residual_net", "is a block whose forward is not a chain")])
def test_every_refusal_comes_before_any_output(tmp_path: Path, trusted, outputs, factory: str, match: str) -> None:
    torch.save(globals()[factory]().state_dict(), tmp_path / "m.pt")
    args = ["export", str(tmp_path / "m.pt"), "--arch", f"test_nir_out_wider:{factory}", "--timesteps", "3",
            "--input-shape", "1,8,8"]
    if "onnx" in outputs:
        args += ["--onnx", str(tmp_path / "m.onnx")]
    args += ["--nir", str(tmp_path / "m.nir")] + (["--verify"] if "verify" in outputs else [])
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 3, done.stderr
    assert match in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]


def test_an_onnx_refusal_leaves_no_nir_behind(tmp_path: Path) -> None:
    from ttsnn_cli import save_model

    from ttsnn_cli.storage.trust import build_arch

    save_model(build_arch("zoo:nir_graph", LI_NET), tmp_path / "li.tt", arch="zoo:nir_graph", arch_kwargs=LI_NET)
    done = CliRunner().invoke(app, ["export", str(tmp_path / "li.tt"), "--onnx", str(tmp_path / "m.onnx"), "--nir",
                                    str(tmp_path / "m.nir"), "--timesteps", "3", "--json"])
    assert done.exit_code == 3 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["li.tt"]
    done = CliRunner().invoke(app, ["export", str(tmp_path / "li.tt"), "--nir", str(tmp_path / "m.nir"), "--timesteps",
                                    "3", "--json"])
    assert done.exit_code == 0, done.stderr
    assert json.loads(done.stdout)["nir"] == str(tmp_path / "m.nir")
    assert isinstance(nir.read(str(tmp_path / "m.nir")).nodes["2"], nir.LI)
