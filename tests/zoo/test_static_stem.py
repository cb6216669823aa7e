"""The stem run once for T identical frames (`static_stem`) against the stem on all T copies: the
model's output, every gradient and BatchNorm's running statistics."""

import copy

import pytest
import torch
from torch import nn

from ttsnn_cli.compress.decompose import CompressConfig, compress_model
from ttsnn_cli.maths.ranks import parse_rank_spec
from ttsnn_cli.spiking.runner import run_timesteps
from ttsnn_cli.zoo import static_stem
from ttsnn_cli.zoo.msresnet import MSResNet


def _model(mode: str | None, momentum: float | None = 0.1) -> MSResNet:
    torch.manual_seed(0)
    model = MSResNet((1, 1, 1, 1), in_channels=3, num_classes=5, channels=(16, 16, 32, 32))
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 1.0)  # livelier spikes at random init
            m.momentum = momentum
    if mode is not None:
        config = CompressConfig(ranks=parse_rank_spec(4, None), mode=mode, include=[r"conv[12]$"], timesteps=4)
        model, _ = compress_model(model, config)
    return model.double()


def _step(model: MSResNet, frames: torch.Tensor, once: bool, steps: int = 2):
    """Outputs and gradients of `steps` training steps' losses, and every buffer after them."""
    model = _copy(model)
    model.stem_once = once
    outs, grads = [], []
    for _ in range(steps):
        model.zero_grad(set_to_none=True)
        out = run_timesteps(model, frames)
        (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
        outs.append(out.detach())
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    return outs, grads, {n: b.clone() for n, b in model.named_buffers()}


def _copy(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model)


def _assert_close(a: torch.Tensor, b: torch.Tensor, name: str) -> None:
    assert a.shape == b.shape, name
    if a.dtype == torch.int64 or a.numel() == 0:
        assert torch.equal(a, b), name
        return
    scale = a.abs().max().clamp_min(1e-12)
    assert (a - b).abs().max() <= 1e-9 * scale, name


@pytest.mark.parametrize("mode", [None, "ptt", "stt"])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_the_stem_once_is_the_stem_on_every_copy(mode, momentum, monkeypatch):
    calls = []
    real = static_stem.stem_once
    monkeypatch.setattr(static_stem, "stem_once", lambda *a: calls.append(1) or real(*a))
    model = _model(mode, momentum).train()
    image = torch.rand(3, 3, 8, 8, dtype=torch.float64) * 2
    frames = image.unsqueeze(0).expand(4, *image.shape).contiguous()  # as data.encode's direct encoding
    plain = _step(model, frames, once=False)
    assert calls == []
    once = _step(model, frames, once=True)
    assert len(calls) == 2
    for a, b in zip(plain[0], once[0]):
        _assert_close(a, b, "output")
    for step_plain, step_once in zip(plain[1], once[1]):
        assert step_plain.keys() == step_once.keys() and len(step_plain) == len(list(model.parameters()))
        for name in step_plain:
            _assert_close(step_plain[name], step_once[name], name)
    assert plain[2].keys() == once[2].keys()
    for name in plain[2]:
        _assert_close(plain[2][name], once[2][name], name)
    assert not torch.equal(plain[2]["stem.bn.running_var"], model.stem.bn.running_var)  # the step updated it


def test_the_stem_once_in_eval_mode_and_its_layout():
    model = _model("ptt").eval()
    image = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    frames = image.unsqueeze(0).expand(3, *image.shape).contiguous()
    with torch.no_grad():
        model.stem_once = False
        reference = run_timesteps(model, frames)
        model.stem_once = True
        fast = run_timesteps(model, frames)
        stem_out = static_stem.stem_once(model.stem, image.contiguous(memory_format=torch.channels_last), 3)
    _assert_close(reference, fast, "output")
    assert stem_out.shape == (6, 16, 8, 8) and stem_out.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(stem_out[:2], stem_out[4:])


@pytest.mark.parametrize("case", ["different_frames", "one_step", "hooked", "sync_bn", "meta"])
def test_the_plain_stem_runs_where_the_shortcut_does_not_apply(case, monkeypatch):
    model = _model(None).train()
    image = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    frames = image.unsqueeze(0).expand(3, *image.shape).contiguous()
    if case == "different_frames":
        frames = frames.clone()
        frames[2, 0, 0, 0, 0] += 1
    if case == "one_step":
        frames = frames[:1]
    if case == "hooked":
        model.stem.conv.register_forward_hook(lambda *args: None)
    if case == "sync_bn":
        model.stem.bn = nn.SyncBatchNorm(16).double()
    if case == "meta":
        frames = frames.to("meta")
    assert not static_stem.applies(model.stem, frames)
    assert static_stem.applies(model.stem, image.unsqueeze(0).expand(3, *image.shape)) == (case not in ("hooked", "sync_bn"))


def test_repetition_is_read_from_the_strides_or_the_callers_word_before_the_values(monkeypatch):
    """An expanded view repeats by construction, and the training engine vouches for direct encoding
    (`repeated_frames`): neither compares values (a host read that waits for the GPU on CUDA)."""
    stem = nn.Sequential()
    stem.add_module("conv", nn.Conv2d(1, 4, 3, padding=1))
    stem.add_module("bn", nn.BatchNorm2d(4))
    image = torch.randn(2, 1, 6, 6)
    compared = []
    real_equal = torch.equal
    monkeypatch.setattr(torch, "equal", lambda a, b: compared.append(1) or real_equal(a, b))
    assert static_stem.applies(stem, image.unsqueeze(0).expand(3, *image.shape)) and not compared
    copies = image.unsqueeze(0).expand(3, *image.shape).contiguous()
    with static_stem.repeated_frames():
        assert static_stem.applies(stem, copies) and not compared
    assert static_stem.applies(stem, copies) and compared  # no word given: the values decide
    different = copies.clone()
    different[1, 0, 0, 0, 0] += 1
    assert not static_stem.applies(stem, different)
