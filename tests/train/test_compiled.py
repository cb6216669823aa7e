"""`--compile`: every mode's training step compiles without a graph break (`fullgraph=True`) and gives
eager's loss and gradients; the one-node LIF is a custom op with correct fake and autograd registrations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from ttsnn_cli.cli.commands import app
from ttsnn_cli.compress.decompose import CompressConfig, compress_model
from ttsnn_cli.maths.ranks import RankSpec
from ttsnn_cli.spiking import lif_sequence as fused
from ttsnn_cli.spiking.neurons import BETA, THRESHOLD, MultiStepLIF, freeze_for_compile
from ttsnn_cli.spiking.runner import run_timesteps
from ttsnn_cli.train.kernel_plan import kernel_paths, uniform_plan
from ttsnn_cli.zoo.msresnet import MSResNet

pytestmark = pytest.mark.usefixtures("one_thread")
T = 3


def _model(mode: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = MSResNet((1, 1, 1, 1), in_channels=1, num_classes=5, channels=(8, 8, 16, 16))
    if mode != "dense":
        model, _ = compress_model(model, CompressConfig(RankSpec("fixed", (3, 3, 3)), mode=mode, timesteps=T))  # type: ignore[arg-type]
    return model.train()


def _loss(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return run_timesteps(model, x, fold=True).mean(0).square().sum()


@pytest.mark.parametrize("mode,path", [("dense", "factored"), ("stt", "factored"), ("ptt", "factored"),
                                       ("htt", "factored"), ("stt", "rebuilt"), ("ptt", "rebuilt"), ("htt", "rebuilt")])
def test_the_step_compiles_whole_and_matches_eager(mode: str, path: str) -> None:
    """Also with every TT layer on its rebuilt kernel (`--tt-kernel rebuilt`), compiled against the
    eager factored step: the placement matrix the cross is built with is made inside the graph."""
    eager, compiled = _model(mode), _model(mode)
    x = torch.randn(T, 4, 1, 12, 12)
    freeze_for_compile(compiled)
    with kernel_paths(compiled, uniform_plan(compiled, path)):
        step = torch.compile(lambda inputs: _loss(compiled, inputs), fullgraph=True, backend="aot_eager")
        loss = step(x)
        loss.backward()
    reference = _loss(eager, x)
    reference.backward()
    torch.testing.assert_close(loss, reference, rtol=1e-5, atol=1e-6)
    for (name, a), b in zip(compiled.named_parameters(), eager.parameters()):
        assert (a.grad is None) == (b.grad is None), name
        if a.grad is not None:
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5, msg=name)


def test_the_compiled_graph_keeps_the_lif_as_one_custom_op() -> None:
    """The LIF is one `ttsnn::lif_sequence` node (not T steps of traced ops) in the compiled graph."""
    model = _model("ptt")
    freeze_for_compile(model)
    graphs = []

    def backend(graph: torch.fx.GraphModule, example_inputs):  # records what dynamo hands the compiler
        graphs.append(graph)
        return graph.forward

    torch.compile(lambda inputs: _loss(model, inputs), fullgraph=True, backend=backend)(torch.randn(T, 2, 1, 12, 12))
    targets = [str(node.target) for graph in graphs for node in graph.graph.nodes if node.op == "call_function"]
    neurons = sum(isinstance(m, MultiStepLIF) for m in model.modules())
    assert sum("lif_sequence" in t for t in targets) == neurons > 0


def test_an_unfrozen_neuron_compiles_on_the_op_by_op_path() -> None:
    """Without `freeze_for_compile` a compiled neuron cannot branch on its factor's value: it takes the
    op-by-op loop, which gives the same spikes."""
    torch.manual_seed(0)
    neuron = MultiStepLIF()
    seq = torch.randn(T, 4, 6, requires_grad=True)
    compiled = torch.compile(lambda s: neuron(s, sequence=True), fullgraph=True, backend="aot_eager")(seq)
    torch.testing.assert_close(compiled, neuron(seq, sequence=True))


@pytest.mark.parametrize("mechanism", [0, 1, 2])
def test_lif_custom_op_registrations(mechanism: int) -> None:
    """torch.library.opcheck: schema, fake (shape) function, autograd registration, against the real kernel."""
    seq = torch.randn(T, 3, 5, requires_grad=True)
    beta, threshold = torch.tensor(BETA), torch.tensor(THRESHOLD)
    torch.library.opcheck(fused.lif_sequence, (seq, beta, threshold, mechanism, True),
                          test_utils=("test_schema", "test_faketensor", "test_autograd_registration"))
    spikes, state = fused.lif_sequence(seq, beta, threshold, mechanism, True)
    grad = torch.randn_like(spikes)
    (got,) = torch.autograd.grad(spikes, seq, grad)
    seq2 = seq.detach().clone().requires_grad_(True)
    spikes2, state2 = fused._LIFSequence.apply(seq2, beta, threshold, mechanism, True)
    (want,) = torch.autograd.grad(spikes2, seq2, grad)
    assert torch.equal(spikes, spikes2) and torch.equal(state, state2) and torch.equal(got, want)


@pytest.mark.slow
def test_finetune_compile_through_the_cli(tmp_path: Path) -> None:
    """`ttsnn train --compile` (inductor on the CPU) trains and records the same settings as eager."""
    runner = CliRunner()
    result = runner.invoke(app, ["train", "--arch", "zoo:digits_csnn", "--arch-kwargs", '{"width": 4}', "--data", "digits",
                                 "--epochs", "1", "--timesteps", "2", "--compile", "-o", str(tmp_path / "d.tt"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["test_accuracy"] >= 0


# ------------------------------------------------------------------------------------ on CUDA
@pytest.mark.cuda
@pytest.mark.parametrize("mode", ["dense", "ptt"])
def test_the_compiled_cuda_step_matches_eager(mode: str) -> None:
    """`--compile` on CUDA (inductor, CUDA graphs through `compile_step`): eager's loss and gradients."""
    from ttsnn_cli.train.compiled import compile_step

    class Loss(torch.nn.Module):  # the step's forward as the engine hands it to compile_step
        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, inputs: torch.Tensor) -> torch.Tensor:
            return _loss(self.model, inputs)

    eager, compiled = _model(mode).cuda(), _model(mode).cuda()
    x = torch.randn(T, 4, 1, 12, 12, device="cuda")
    runner = compile_step(Loss(compiled), compiled, torch.device("cuda"))
    for _ in range(3):  # warm-up and capture, then a replay
        compiled.zero_grad(set_to_none=True)
        loss = runner(x).clone()  # a CUDA-graph output is overwritten by the next replay
        loss.backward()
    reference = _loss(eager, x)
    reference.backward()
    torch.testing.assert_close(loss, reference, rtol=1e-4, atol=1e-5)
    for (name, a), b in zip(compiled.named_parameters(), eager.parameters()):
        if a.grad is not None:
            cosine = torch.nn.functional.cosine_similarity(a.grad.flatten(), b.grad.flatten(), dim=0)
            assert b.grad.abs().max() == 0 or cosine > 0.999, (name, float(cosine))


@pytest.mark.cuda
def test_train_compile_learns_on_the_gpu(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["train", "--arch", "zoo:digits_csnn", "--arch-kwargs", '{"width": 4}', "--data",
                                      "digits", "--epochs", "2", "--timesteps", "2", "--compile", "--device", "cuda",
                                      "-o", str(tmp_path / "d.tt"), "--json"])
    assert result.exit_code == 0, result.output
    history = json.loads(result.stdout)["history"]
    assert history[-1]["train_loss"] < history[0]["train_loss"]


def test_sweep_and_train_take_compile_and_data_on_device(tmp_path: Path) -> None:
    """The options reach the engine's config: a bad --data-on-device is one line (exit 3) before any work."""
    runner = CliRunner()
    bad = runner.invoke(app, ["train", "--arch", "zoo:digits_csnn", "--data", "digits", "--data-on-device", "sometimes",
                              "-o", str(tmp_path / "d.tt")])
    assert bad.exit_code == 3 and "--data-on-device must be one of auto, off" in bad.output
    assert not (tmp_path / "d.tt").exists()
    parsed = runner.invoke(app, ["sweep", str(tmp_path / "missing.tt"), "--data", "digits", "-o", str(tmp_path / "s"),
                                 "--compile", "--budget-on", "joules"])
    assert parsed.exit_code == 3 and "--budget-on" in parsed.output  # --compile parsed (an unknown option exits 2)
