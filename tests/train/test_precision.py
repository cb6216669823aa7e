"""`--precision` (ttsnn_cli.train.precision): autocast training that stays close to fp32, for dense
and every TT mode, on the CPU (bf16 and fp16) and, in `cuda` tests, on the GPU."""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils.data import Subset
from typer.testing import CliRunner

from ttsnn_cli.cli.commands import app
from ttsnn_cli.compress.decompose import CompressConfig, compress_model
from ttsnn_cli.data import DataBundle, load_data
from ttsnn_cli.errors import BadInputError
from ttsnn_cli.pipeline.recipe import TrainSection
from ttsnn_cli.spiking.runner import run_timesteps
from ttsnn_cli.train.engine import TrainConfig, fit, side_paths
from ttsnn_cli.train.precision import autocast
from ttsnn_cli.zoo import zoo_entry

MODES = ("dense", "stt", "ptt", "htt")


@pytest.fixture(scope="module")
def small_digits() -> DataBundle:
    full = load_data("digits")
    return DataBundle("digits", Subset(full.train, range(0, 1400, 14)), Subset(full.test, range(0, 360, 10)), (1, 16, 16), 10)


def model_in(mode: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = zoo_entry("digits_csnn").factory(width=8)
    if mode != "dense":
        model, _ = compress_model(model, CompressConfig(ranks=4, mode=mode, exclude=[r"stem\.conv"], timesteps=2))
    return model


def _forward_and_grads(model: torch.nn.Module, x: torch.Tensor, precision: str, device: torch.device):
    model.zero_grad(set_to_none=True)
    with autocast(precision, device):
        out = run_timesteps(model, x, fold=True)
    out.float().mean(0).logsumexp(-1).sum().backward()
    return out.float().detach(), {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("mode", MODES)
def test_bf16_autocast_stays_near_fp32_on_the_cpu(mode: str) -> None:
    """Rounding to bf16 flips the odd spike near threshold, and the early layers' gradients of a
    random spiking net are that sensitive anyway (rounding only the weights to bf16 and running in
    fp32 gives the stem a gradient cosine of about 0.5): so the output and the readout's gradients
    must agree with fp32, and every gradient fp32 has, bf16 has too, finite and in float32."""
    model = model_in(mode)
    x = torch.rand(4, 8, 1, 16, 16) * 2
    out32, grads32 = _forward_and_grads(model, x, "fp32", torch.device("cpu"))
    out16, grads16 = _forward_and_grads(model, x, "bf16", torch.device("cpu"))
    assert grads16.keys() == grads32.keys()
    assert torch.nn.functional.cosine_similarity(out16.flatten(), out32.flatten(), dim=0) > 0.95
    for name, g in grads16.items():
        assert torch.isfinite(g).all() and g.dtype == torch.float32, name
    for name in ("fc.weight", "fc.bias"):
        cosine = torch.nn.functional.cosine_similarity(grads32[name].flatten(), grads16[name].flatten(), dim=0)
        assert cosine > 0.95, (name, float(cosine))


def test_the_membrane_integrates_in_float32_under_autocast() -> None:
    """A bf16 input to the neuron gives bf16 spikes computed from a float32 membrane: the same
    spikes as the float32 neuron fed the same (bf16-representable) values."""
    from ttsnn_cli.spiking.neurons import MultiStepLIF

    x = (torch.randn(6, 32, 50) * 1.5).bfloat16()
    low = MultiStepLIF()(x, timesteps=6)
    high = MultiStepLIF()(x.float(), timesteps=6)
    assert low.dtype == torch.bfloat16 and torch.equal(low.float(), high)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_a_ptt_finetune_learns_in_lower_precision_and_resumes(tmp_path, small_digits, precision: str) -> None:
    model = model_in("ptt")
    config = TrainConfig(epochs=2, batch_size=32, timesteps=2, lr=0.05, seed=3, precision=precision)
    result = fit(model, small_digits, config, tmp_path / "m.tt")
    assert result["history"][-1]["train_loss"] < result["history"][0]["train_loss"]
    assert all(torch.isfinite(p).all() and p.dtype == torch.float32 for p in model.parameters())
    state = torch.load(side_paths(tmp_path / "m.tt")[1], weights_only=True)
    assert state["config"]["precision"] == precision and "scaler" in state


def test_resuming_with_another_precision_is_refused(tmp_path, small_digits) -> None:
    config = TrainConfig(epochs=1, batch_size=64, timesteps=2, lr=0.05, seed=3, precision="bf16")
    fit(model_in("dense"), small_digits, config, tmp_path / "m.tt")
    with pytest.raises(BadInputError, match="other options"):
        fit(model_in("dense"), small_digits, TrainConfig(**{**config.__dict__, "epochs": 2, "precision": "fp32"}),
            tmp_path / "m.tt", resume=True)


def test_fp32_is_the_plain_path_bit_for_bit(tmp_path, small_digits) -> None:
    """The default adds no autocast region and no scaling: two runs, with and without naming fp32,
    give the same bits (and the same as before --precision existed: nothing in the path changed)."""
    base = dict(epochs=1, batch_size=64, timesteps=2, lr=0.05, seed=3)
    a, b = model_in("stt"), model_in("stt")
    fit(a, small_digits, TrainConfig(**base), tmp_path / "a.tt")
    fit(b, small_digits, TrainConfig(**base, precision="fp32"), tmp_path / "b.tt")
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name


def test_the_option_is_checked_everywhere_it_is_taken(tmp_path) -> None:
    with pytest.raises(BadInputError, match="--precision 'fp8' is not one of fp32, bf16, fp16"):
        TrainConfig(precision="fp8").validate()
    with pytest.raises(ValueError):
        TrainSection(precision="fp8")
    result = CliRunner().invoke(app, ["train", "--arch", "zoo:digits_csnn", "--data", "digits", "-o",
                                      str(tmp_path / "x.tt"), "--precision", "int4"])
    assert result.exit_code == 3 and "--precision" in result.output
    assert not (tmp_path / "x.tt").exists()


def test_the_cli_trains_in_bf16_and_says_so(tmp_path) -> None:
    result = CliRunner().invoke(app, ["train", "--arch", "zoo:digits_csnn", "--arch-kwargs", '{"width": 4}',
                                      "--data", "digits", "-o", str(tmp_path / "d.tt"), "--epochs", "1",
                                      "--batch-size", "128", "--precision", "bf16", "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["config"]["precision"] == "bf16"


# ------------------------------------------------------------------------------------ on CUDA
@pytest.mark.cuda
@pytest.mark.parametrize("mode", MODES)
def test_the_gpu_step_equals_the_cpu_step_in_fp32(mode: str) -> None:
    cpu = model_in(mode)
    gpu = model_in(mode).cuda()
    x = torch.rand(4, 8, 1, 16, 16) * 2
    out_cpu, grads_cpu = _forward_and_grads(cpu, x, "fp32", torch.device("cpu"))
    out_gpu, grads_gpu = _forward_and_grads(gpu, x.cuda(), "fp32", torch.device("cuda"))
    assert (out_gpu.cpu() != out_cpu).float().mean() < 0.01  # a spike may flip at float rounding
    for name, g in grads_cpu.items():
        cosine = torch.nn.functional.cosine_similarity(g.flatten(), grads_gpu[name].cpu().flatten(), dim=0)
        assert g.abs().max() == 0 or cosine > 0.99, (name, float(cosine))


@pytest.mark.cuda
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_a_ptt_finetune_learns_on_the_gpu_in_lower_precision(tmp_path, small_digits, precision: str) -> None:
    config = TrainConfig(epochs=2, batch_size=32, timesteps=2, lr=0.05, seed=3, precision=precision, device="cuda")
    result = fit(model_in("ptt"), small_digits, config, tmp_path / "m.tt")
    assert result["device"].startswith("cuda")
    assert result["history"][-1]["train_loss"] < result["history"][0]["train_loss"]
