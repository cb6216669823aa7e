"""The rebuilt-kernel path of a TT layer (one conv of the kernel rebuilt from the cores, every call)
against the factored path it replaces: the same outputs and the same gradients for every core, over
modes, kernel shapes, strides, paddings (asymmetric, reflect, circular, 'same') and dilations; under
bf16 autocast; inside an MS-ResNet training step; and the per-layer plan that picks a path."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
from torch import nn

from ttsnn_cli.kinds import kind_of
from ttsnn_cli.layers.conv2d import TTConv2d
from ttsnn_cli.spiking.runner import run_timesteps
from ttsnn_cli.spiking.state import reset_states, time_folded
from ttsnn_cli.train.kernel_plan import (
    choose,
    kernel_paths,
    measure_plan,
    plan_summary,
    rebuildable_layers,
    uniform_plan,
)
from tests.report_models import tt_model

GRID = [
    (mode, kernel, stride, padding, dilation, padding_mode)
    for mode, kernel, stride, padding, dilation, padding_mode in itertools.product(
        ["stt", "ptt"], [(3, 3), (5, 3), (2, 2), (1, 3)], [1, (2, 1), 2], [0, 1, (2, 1), "same"], [1, (1, 2)],
        ["zeros", "reflect", "circular"])
    if not (padding == "same" and stride != 1)
]


def _both_ways(layer: nn.Module, x: torch.Tensor) -> list[tuple[torch.Tensor, ...]]:
    """(output, d x, d every core) factored, then rebuilt, for the same upstream gradient."""
    results = []
    grad = None
    for path in ("factored", "rebuilt"):
        with kernel_paths(layer, {"": path}):
            y = layer(x)
            grad = torch.randn_like(y, generator=torch.Generator().manual_seed(1)) if grad is None else grad
            results.append((y, *torch.autograd.grad(y, [x, *layer.parameters()], grad)))
    return results


@pytest.mark.parametrize("mode,kernel,stride,padding,dilation,padding_mode", GRID)
def test_rebuilt_kernel_computes_what_the_cores_compute(mode, kernel, stride, padding, dilation, padding_mode) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 8, kernel, stride=stride, padding=padding, dilation=dilation,
                     padding_mode=padding_mode).double()
    layer = TTConv2d.from_conv(conv, (4, 4, 4), mode).double()
    x = torch.randn(2, 6, 11, 10, dtype=torch.float64, requires_grad=True)
    factored, rebuilt = _both_ways(layer, x)
    assert factored[0].shape == rebuilt[0].shape
    for a, b in zip(factored, rebuilt):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)


def test_rebuilt_kernel_is_the_effective_kernel() -> None:
    torch.manual_seed(0)
    for mode in ("stt", "ptt"):
        layer = TTConv2d.from_conv(nn.Conv2d(5, 7, 3, padding=1), (3, 3, 3), mode)
        torch.testing.assert_close(layer.dense_kernel().double(), layer.effective_kernel(), rtol=1e-5, atol=1e-6)


def test_float32_and_bf16_autocast_agree_with_the_factored_path() -> None:
    torch.manual_seed(0)
    layer = TTConv2d.from_conv(nn.Conv2d(16, 24, 3, stride=2, padding=1), (8, 8, 8), "ptt")
    x = torch.rand(4, 16, 12, 12).lt(0.3).float().requires_grad_()
    factored, rebuilt = _both_ways(layer, x)
    for a, b in zip(factored, rebuilt):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with kernel_paths(layer, {"": "rebuilt"}):
            low = layer(x)
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), factored[0], rtol=0.05, atol=0.05)


@pytest.mark.parametrize("stride,padding,padding_mode", [(1, 1, "zeros"), (2, 1, "zeros"), ((2, 1), (2, 1), "zeros"),
                                                     (1, 1, "reflect"), (2, 0, "zeros"), (1, "same", "circular")])
@pytest.mark.parametrize("steps", [1, 3, 4])
def test_htt_rebuilt_runs_the_cross_then_one_1x1(stride, padding, padding_mode, steps) -> None:
    """Folded over T: the early steps' cross kernel, then HTT's reduced steps as one 1x1 of G4 G1."""
    torch.manual_seed(0)
    conv = nn.Conv2d(5, 7, 3, stride=stride, padding=padding, padding_mode=padding_mode).double()
    layer = TTConv2d.from_conv(conv, (3, 3, 3), "htt", timesteps=steps).double()
    x = torch.randn(steps * 2, 5, 9, 8, dtype=torch.float64, requires_grad=True)
    with time_folded(layer, steps):
        factored, rebuilt = _both_ways(layer, x)
    for a, b in zip(factored, rebuilt):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)


def test_htt_rebuilt_per_step_counts_its_calls_as_the_factored_path() -> None:
    torch.manual_seed(0)
    layer = TTConv2d.from_conv(nn.Conv2d(4, 6, 3, padding=1), (2, 2, 2), "htt", timesteps=4)
    frames = torch.randn(4, 2, 4, 8, 8)
    outputs = {}
    for path in ("factored", "rebuilt"):
        reset_states(layer)
        with kernel_paths(layer, {"": path}):
            outputs[path] = torch.stack([layer(frame) for frame in frames])
    torch.testing.assert_close(outputs["rebuilt"], outputs["factored"], rtol=1e-5, atol=1e-6)


def test_grouped_layers_are_not_rebuildable() -> None:
    htt = TTConv2d.from_conv(nn.Conv2d(4, 4, 3, padding=1), (2, 2, 2), "htt", timesteps=2)
    model = nn.Sequential(htt, TTConv2d.from_conv(nn.Conv2d(4, 4, 3, padding=1), (2, 2, 2), "stt"))
    assert list(rebuildable_layers(model)) == ["0", "1"]
    grouped_kind = kind_of(nn.Conv2d(4, 4, 3, groups=2), exact=False)
    assert grouped_kind is None or not grouped_kind.rebuilds


def test_kernel_paths_restore_what_ran_before() -> None:
    model = tt_model("digits_csnn", [4, 4, 4], "ptt", 2, (1, 16, 16))
    layers = rebuildable_layers(model)
    assert len(layers) == 3
    first = next(iter(layers))
    layers[first].kernel_path = "rebuilt"
    with kernel_paths(model, uniform_plan(model, "factored")):
        assert not any(layer.rebuilds() for layer in layers.values())
    assert layers[first].rebuilds() and "kernel_path" not in vars(layers[list(layers)[1]])


@pytest.mark.parametrize("mode", ["stt", "ptt", "htt"])
def test_an_ms_resnet_training_step_rebuilt_matches_factored(mode: str) -> None:
    """Inside an MS-ResNet block a factored TT layer feeding BatchNorm takes the fused low-rank path
    (`lowrank_bn`); a rebuilt one runs as a plain conv: the step's loss and gradients agree."""
    torch.manual_seed(0)
    model = tt_model("ms_resnet18", [8] * 16, mode, 2, (3, 16, 16), in_channels=3, num_classes=10).double().train()
    x = torch.rand(2, 2, 3, 16, 16, dtype=torch.float64)  # [T, B, C, H, W]; float64: no spike flips on rounding
    results = []
    for path in ("factored", "rebuilt"):
        model.zero_grad(set_to_none=True)
        torch.manual_seed(1)
        with kernel_paths(model, uniform_plan(model, path)):
            out = run_timesteps(model, x)
        loss = out.mean(0).logsumexp(-1).mean()
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    (loss_f, grads_f), (loss_r, grads_r) = results
    torch.testing.assert_close(loss_r, loss_f, rtol=1e-9, atol=1e-10)
    assert len(grads_f) == len(grads_r)
    for a, b in zip(grads_f, grads_r):
        torch.testing.assert_close(b, a, rtol=1e-7, atol=1e-9)


def test_measure_plan_times_every_layer_on_the_shape_it_sees() -> None:
    model = tt_model("digits_csnn", [4, 4, 4], "stt", 2, (1, 16, 16)).train()
    x = torch.rand(2, 3, 1, 16, 16)
    grads_before = [p.grad for p in model.parameters()]
    timings = measure_plan(model, lambda: run_timesteps(model, x), repeats=1)
    assert set(timings) == set(rebuildable_layers(model))
    assert all(t.factored_ms > 0 and t.rebuilt_ms > 0 for t in timings.values())
    assert [p.grad for p in model.parameters()] == grads_before  # timing leaves no gradient behind
    assert model.training
    plan = choose(timings)
    assert set(plan.values()) <= {"factored", "rebuilt"}
    summary = plan_summary(plan, timings)
    assert summary["factored"] + summary["rebuilt"] == 3 and set(summary["layers"]) == set(plan)


@pytest.mark.cuda
def test_rebuilt_kernel_on_cuda_matches_the_factored_path() -> None:
    torch.manual_seed(0)
    layer = TTConv2d.from_conv(nn.Conv2d(32, 64, 3, stride=2, padding=1), (16, 16, 16), "ptt").cuda()
    x = torch.rand(8, 32, 16, 16, device="cuda").lt(0.2).float().requires_grad_()
    torch.backends.cudnn.allow_tf32 = False
    factored, rebuilt = _both_ways(layer, x)
    for a, b in zip(factored, rebuilt):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)



@pytest.mark.parametrize("mode,most", [("stt", 14), ("ptt", 11)])
def test_the_rebuild_is_a_few_small_products(mode: str, most: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rebuilding a layer's kernel costs a few ops on small tensors, forward and backward together,
    besides its one convolution: on a GPU each op is a launch, and the rebuilt path exists to launch
    fewer than the factored one (built with einsums and index copies it had 19 for STT, 36 for PTT)."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from op_count import work_ops  # type: ignore[import-not-found]

    layer = TTConv2d(16, 32, (3, 3), (4, 4, 4), mode, (1, 1), (1, 1, 1, 1), (1, 1), False, "zeros", None)
    x = torch.rand(2, 16, 6, 6).contiguous(memory_format=torch.channels_last).requires_grad_()
    grad = torch.ones(2, 32, 6, 6).contiguous(memory_format=torch.channels_last)
    with kernel_paths(layer, {"": "rebuilt"}):
        layer(x).backward(grad)  # the placement matrix is made once per shape, outside the count
        layer.zero_grad(set_to_none=True)
        x.grad = None
        work = dict(work_ops(lambda: layer(x).backward(grad)))
    assert work.pop("convolution") == work.pop("convolution_backward") == 1
    assert sum(work.values()) <= most, work


def test_measure_plan_times_an_ms_resnet_layer_with_its_batchnorm(monkeypatch: pytest.MonkeyPatch) -> None:
    """A factored MS-ResNet layer trains with BatchNorm folded into its last core, a rebuilt one with
    BatchNorm after it: the plan times each way as it trains, and leaves the statistics as they were."""
    from ttsnn_cli.zoo import msresnet

    from ttsnn_cli.compress.decompose import CompressConfig, compress_model
    from ttsnn_cli.maths.ranks import RankSpec

    torch.manual_seed(0)
    dense = msresnet.MSResNet((1, 1, 1, 1), in_channels=1, num_classes=5, channels=(8, 16, 16, 16))
    model, _ = compress_model(dense, CompressConfig(RankSpec("fixed", (3, 3, 3)), mode="ptt"))
    model.train()
    folded = []
    real = msresnet.conv1x1_bn
    monkeypatch.setattr(msresnet, "conv1x1_bn", lambda m, conv, bn, **kw: folded.append(bn) or real(m, conv, bn, **kw))
    layers = rebuildable_layers(model)
    units = model.plan_units()
    assert set(units) == {name for name in layers if name.startswith("layer")} and len(units) == 8  # the stem: alone
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    x = torch.rand(2, 16, 1, 12, 12)  # T 2, batch 16: enough pixels for the fold to pay
    folded.clear()
    timings = measure_plan(model, lambda: run_timesteps(model, x), repeats=1)
    assert set(timings) == set(layers)
    bns = {id(bn) for bn in folded}
    assert bns == {id(modules[1]) for _, modules in units.values()}  # every layer's own BatchNorm, factored
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name  # running statistics too
    assert all(p.grad is None for p in model.parameters())
