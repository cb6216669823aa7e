"""BatchNorm through a TT layer's rank bottleneck (`lowrank_bn`) against the two modules it stands for:
values, every gradient and the running statistics, in float64 to 1e-10 and in float32 to float
tolerance; the cases it must leave to the modules; and the MS-ResNet steps that use it."""

from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from ttsnn_cli.compress.decompose import CompressConfig, compress_model
from ttsnn_cli.layers import lowrank_bn
from ttsnn_cli.maths.ranks import parse_rank_spec
from ttsnn_cli.spiking.runner import run_timesteps
from ttsnn_cli.spiking.state import reset_states
from ttsnn_cli.zoo.msresnet import MSResNet


def _pair(rank: int, channels: int, bias: bool, momentum: float | None, dtype: torch.dtype, seed: int = 0):
    torch.manual_seed(seed)
    conv = nn.Conv2d(rank, channels, 1, bias=bias).to(dtype)
    bn = nn.BatchNorm2d(channels, momentum=momentum).to(dtype)
    with torch.no_grad():
        bn.weight.uniform_(0.3, 1.5)
        bn.bias.normal_()
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2)
    return conv, bn


def _step(conv, bn, m, grad, fused: bool, input_scale: float = 1.0):
    """Output, gradients (input, weight, bias, gamma, beta) and BatchNorm's buffers after one step."""
    conv, bn = _copy(conv), _copy(bn)
    m = m.clone().requires_grad_()
    if fused:
        out = lowrank_bn.conv1x1_bn(m, conv, bn, always=True, input_scale=input_scale)
    else:
        out = bn(conv(m * input_scale))
    out.backward(grad)
    bias_grad = conv.bias.grad if conv.bias is not None else torch.zeros(0)
    return [out, m.grad, conv.weight.grad, bias_grad, bn.weight.grad, bn.bias.grad,
            bn.running_mean, bn.running_var, bn.num_batches_tracked]


def _copy(module: nn.Module) -> nn.Module:
    clone = type(module).__new__(type(module))
    clone.__dict__ = {**module.__dict__, "_parameters": {k: nn.Parameter(v.detach().clone()) if v is not None else None
                                                         for k, v in module._parameters.items()},
                      "_buffers": {k: v.clone() if v is not None else None for k, v in module._buffers.items()}}
    return clone


def _layout(t: torch.Tensor) -> tuple[int, ...]:
    """The strides that matter (a dimension of size 1 may have any stride)."""
    return tuple(stride for size, stride in zip(t.shape, t.stride()) if size > 1)


def _close(plain, fused, rtol: float) -> None:
    names = ["out", "grad_m", "grad_w", "grad_b", "grad_gamma", "grad_beta", "running_mean", "running_var", "batches"]
    for name, a, b in zip(names, plain, fused):
        assert a.shape == b.shape and _layout(a) == _layout(b), name
        if name == "grad_b":  # BatchNorm removes any bias: 0, where the plain path sums float noise around 0
            assert b.abs().sum() == 0 and a.abs().sum() <= rtol * plain[0].abs().sum(), name
            continue
        scale = a.abs().max().clamp_min(1e-12)
        assert (a - b).abs().max() <= rtol * scale, name


@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("momentum, input_scale", [(0.1, 1.0), (None, 1.0), (0.1, 0.5)])
@pytest.mark.parametrize("n, rank, channels, size", [(4, 5, 12, 6), (3, 16, 8, 4), (2, 7, 30, 1)])
def test_fused_is_the_two_modules_in_float64(channels_last, bias, momentum, input_scale, n, rank, channels, size):
    """input_scale 0.5: PTT's halving of the branch sum, folded into the small matrices."""
    conv, bn = _pair(rank, channels, bias, momentum, torch.float64)
    m = torch.randn(n, rank, size, size, dtype=torch.float64) * 1.5 + 0.7  # off-centre: the mean matters
    grad = torch.randn(n, channels, size, size, dtype=torch.float64)
    if channels_last:
        m, grad = m.contiguous(memory_format=torch.channels_last), grad.contiguous(memory_format=torch.channels_last)
    _close(_step(conv, bn, m, grad, False, input_scale), _step(conv, bn, m, grad, True, input_scale), 1e-10)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 4), rank=st.integers(1, 9), channels=st.integers(1, 12), size=st.integers(1, 5),
       offset=st.floats(-3, 3), seed=st.integers(0, 2**16))
def test_fused_matches_on_random_shapes(n, rank, channels, size, offset, seed):
    if n * size * size < 2:  # one value per channel: BatchNorm refuses it (tested below)
        return
    conv, bn = _pair(rank, channels, True, 0.1, torch.float64, seed)
    generator = torch.Generator().manual_seed(seed)
    m = torch.randn(n, rank, size, size, dtype=torch.float64, generator=generator) + offset
    grad = torch.randn(n, channels, size, size, dtype=torch.float64, generator=generator)
    _close(_step(conv, bn, m, grad, False), _step(conv, bn, m, grad, True), 1e-9)


def test_fused_in_float32_at_a_first_stage_size():
    """MS-ResNet18's first stage at batch 8 x T 4: 32768 pixels, rank 25, 64 channels."""
    conv, bn = _pair(25, 64, True, 0.1, torch.float32)
    m = (torch.randn(32, 25, 32, 32) * 1.5 + 0.7).contiguous(memory_format=torch.channels_last)
    grad = torch.randn(32, 64, 32, 32).contiguous(memory_format=torch.channels_last)
    assert lowrank_bn.pays(m, 64)
    _close(_step(conv, bn, m, grad, False, 0.5), _step(conv, bn, m, grad, True, 0.5), 2e-5)


def test_an_input_without_gradient_still_trains_the_weights():
    conv, bn = _pair(5, 12, True, 0.1, torch.float64)
    m = torch.randn(4, 5, 6, 6, dtype=torch.float64)  # no requires_grad: only the parameters learn
    grad = torch.randn(4, 12, 6, 6, dtype=torch.float64)
    grads = []
    for fused in (False, True):
        c, b = _copy(conv), _copy(bn)
        (lowrank_bn.conv1x1_bn(m, c, b, always=True) if fused else b(c(m))).backward(grad)
        grads.append([c.weight.grad, b.weight.grad, b.bias.grad])
    for plain, fused in zip(*grads):
        assert torch.allclose(plain, fused, rtol=1e-10, atol=1e-12)


def test_fused_keeps_no_output_sized_tensor_for_backward():
    conv, bn = _pair(4, 32, True, 0.1, torch.float32)
    m = torch.randn(8, 4, 6, 6, requires_grad=True)
    kept = []
    for fused in (False, True):
        sizes: list[int] = []

        def pack(t, sizes=sizes):
            sizes.append(t.numel())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            lowrank_bn.conv1x1_bn(m, conv, bn, always=True) if fused else bn(conv(m))
        kept.append(max(sizes))
    assert kept[0] == 8 * 32 * 6 * 6 and kept[1] == m.numel()  # the conv's output, then only the input


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_under_autocast_the_fused_form_runs_in_float32_and_keeps_less(dtype, monkeypatch):
    """As `--precision bf16|fp16` runs it: the autocast dtype out, the two modules' values and
    gradients to half-precision tolerance (the fused form rounds once, at the end), and only the
    r-channel input kept, as it came in half precision, where the modules keep the conv's half
    input and output."""
    calls = _spy(monkeypatch)
    conv, bn = _pair(6, 24, True, 0.1, torch.float32)
    m = (torch.randn(4, 6, 8, 8) * 1.5 + 0.7).to(dtype)  # what core3 hands over under autocast
    grad = torch.randn(4, 24, 8, 8)
    results, kept = [], []
    for fused in (False, True):
        c, b = _copy(conv), _copy(bn)
        x = m.clone().requires_grad_()
        saved: dict[int, int] = {}

        def pack(t, saved=saved):
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        params = {p.untyped_storage().data_ptr() for p in [*c.parameters(), *b.parameters()]}
        with torch.autocast("cpu", dtype=dtype), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = lowrank_bn.conv1x1_bn(x, c, b, always=True) if fused else b(c(x))
        assert out.dtype == dtype
        out.float().backward(grad)
        kept.append(sum(n for ptr, n in saved.items() if ptr not in params))
        results.append([out.float(), x.grad.float(), c.weight.grad, b.weight.grad, b.bias.grad, b.running_mean,
                        b.running_var])
    assert calls == [1]
    for name, plain, fused in zip(["out", "grad_m", "grad_w", "grad_gamma", "grad_beta", "mean", "var"], *results):
        assert (plain - fused).abs().max() <= 2e-2 * plain.abs().max(), name
    assert kept[1] < kept[0] and kept[1] <= m.numel() * m.element_size() + 4096


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_keeping_the_half_input_gives_the_gradients_of_keeping_the_centred_rows(dtype):
    """Backward centres the kept half-precision input again with forward's operations: bitwise the
    gradients it had when forward kept its float32 centred rows."""
    conv, bn = _pair(6, 24, True, 0.1, torch.float32)
    m = (torch.randn(4, 6, 8, 8) * 1.5 + 0.7).to(dtype).contiguous(memory_format=torch.channels_last)
    grad = torch.randn(4, 24, 8, 8)
    results = []
    for keep_half in (False, True):
        c, b = _copy(conv), _copy(bn)
        x = m.clone().requires_grad_()
        out = lowrank_bn._LowRankBatchNorm.apply(x.float(), c.weight, c.bias, b.weight, b.bias, b.running_mean,
                                                 b.running_var, 0.1, b.eps, 0.5, x.detach() if keep_half else None)
        out.backward(grad)
        results.append([out, x.grad, c.weight.grad, b.weight.grad, b.bias.grad])
    for plain, kept in zip(*results):
        assert torch.equal(plain, kept)


def test_on_the_cpu_under_autocast_only_the_memory_mode_takes_it():
    m = torch.randn(32, 25, 32, 32)
    assert lowrank_bn.pays(m, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not lowrank_bn.pays(m, 64)


@pytest.mark.cuda
def test_on_cuda_under_bf16_autocast_the_default_path_takes_it(monkeypatch):
    calls = _spy(monkeypatch)
    conv, bn = (module.cuda() for module in _pair(25, 64, True, 0.1, torch.float32))
    m = (torch.randn(32, 25, 32, 32, device="cuda") * 1.5 + 0.7).contiguous(memory_format=torch.channels_last)
    outs = []
    for fused in (True, False):
        c, b = _copy(conv), _copy(bn)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            outs.append(lowrank_bn.conv1x1_bn(m.bfloat16(), c, b) if fused else b(c(m.bfloat16())))
    assert calls == [1] and outs[0].dtype == torch.bfloat16
    assert (outs[0].float() - outs[1].float()).abs().max() <= 2e-2 * outs[1].float().abs().max()


def _spy(monkeypatch) -> list:
    calls = []
    real = lowrank_bn._LowRankBatchNorm.apply
    monkeypatch.setattr(lowrank_bn._LowRankBatchNorm, "apply", lambda *a: calls.append(1) or real(*a))
    return calls


class _ScaledBatchNorm(nn.BatchNorm2d):
    def forward(self, x):
        return super().forward(x) * 2


@pytest.mark.parametrize("case", ["eval", "no_grad", "conv_hook", "bn_pre_hook", "global_hook", "not_affine",
                                  "no_running_stats", "strided", "padded", "sync", "own_forward"])
def test_the_modules_run_where_the_fused_form_does_not_apply(case, monkeypatch):
    calls = _spy(monkeypatch)
    conv, bn = _pair(3, 6, True, 0.1, torch.float32)
    m = torch.randn(2, 3, 5, 5, requires_grad=True)
    context = torch.no_grad() if case == "no_grad" else torch.enable_grad()
    handles = []
    if case == "eval":
        bn.eval()
    elif case == "conv_hook":
        handles.append(conv.register_forward_hook(lambda *a: None))
    elif case == "bn_pre_hook":
        handles.append(bn.register_forward_pre_hook(lambda *a: None))
    elif case == "global_hook":
        handles.append(nn.modules.module.register_module_forward_hook(lambda *a: None))
    elif case == "not_affine":
        bn = nn.BatchNorm2d(6, affine=False)
    elif case == "no_running_stats":
        bn = nn.BatchNorm2d(6, track_running_stats=False)
    elif case == "strided":
        conv = nn.Conv2d(3, 6, 1, stride=2)
    elif case == "padded":
        conv = nn.Conv2d(3, 6, 1, padding=1)
    elif case == "sync":  # its statistics span processes (outside a process group it runs locally)
        bn = nn.SyncBatchNorm(6)
    elif case == "own_forward":
        bn = _ScaledBatchNorm(6)
    try:
        with context:
            expected = bn(conv(m))
            bn.num_batches_tracked.sub_(1) if bn.num_batches_tracked is not None and bn.training else None
            got = lowrank_bn.conv1x1_bn(m, conv, bn, always=True)
    finally:
        for handle in handles:
            handle.remove()
    assert calls == []
    assert torch.allclose(expected, got)


def test_one_value_per_channel_is_refused_as_batchnorm_refuses_it():
    conv, bn = _pair(3, 6, True, 0.1, torch.float32)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        lowrank_bn.conv1x1_bn(torch.randn(1, 3, 1, 1, requires_grad=True), conv, bn, always=True)


def test_the_default_takes_the_fused_form_only_where_it_measured_faster():
    """`python benchmarks/bench_training.py --fused-bn --batch 1/8/32`."""
    assert lowrank_bn.pays(torch.empty(32, 25, 32, 32), 64)  # first stage, batch 8 x T 4: 1.35x
    assert lowrank_bn.pays(torch.empty(32, 43, 16, 16), 128)  # second stage: 1.21x
    assert not lowrank_bn.pays(torch.empty(32, 70, 8, 8), 256)  # third: 0.98x
    assert lowrank_bn.pays(torch.empty(128, 70, 8, 8), 256)  # third at batch 32: 1.12x
    assert not lowrank_bn.pays(torch.empty(128, 186, 4, 4), 512)  # last: the r x r products cost more
    assert not lowrank_bn.pays(torch.empty(4, 43, 16, 16), 128)  # second stage at batch 1: 0.85x
    # narrow layers: too few output channels to save on, however many pixels (0.81-0.99x at batch 32)
    for rank in (8, 16, 24):
        assert not lowrank_bn.pays(torch.empty(128, rank, 16, 16), 16)
    assert lowrank_bn.pays(torch.empty(128, 16, 16, 16), 32)  # 1.53x
    assert lowrank_bn.pays(torch.empty(32, 8, 16, 16), 64)  # 1.43x at batch 8
    assert not lowrank_bn.pays(torch.empty(32, 24, 16, 16), 32)  # fewer than 2r outputs


def _msresnet(mode: str) -> MSResNet:
    torch.manual_seed(0)
    model = MSResNet((1, 1, 1, 1), in_channels=3, num_classes=5, channels=(16, 16, 32, 32))
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 1.0)  # livelier spikes at random init
    config = CompressConfig(ranks=parse_rank_spec(4, None), mode=mode, include=[r"conv[12]$"], timesteps=4)
    model, _ = compress_model(model, config)
    return model.train().double()


@pytest.mark.parametrize("mode, per_step", [("stt", False), ("ptt", False), ("htt", False), ("htt", True)])
def test_msresnet_steps_are_the_plain_steps(mode, per_step, monkeypatch):
    """Every TT layer's BatchNorm fused (thresholds at 0) against none fused: the same gradients and
    running statistics, in float64, for every TT mode, folded and per step."""
    x = torch.rand(4, 2, 3, 8, 8, dtype=torch.float64) * 2
    results = []
    for threshold in (10**12, 0):
        for name in ("MIN_ROWS", "MIN_ROWS_PER_RANK_SQUARED", "MIN_OUT_CHANNELS", "MIN_OUT_PER_RANK"):
            monkeypatch.setattr(lowrank_bn, name, threshold)
        calls = _spy(monkeypatch)
        model = _msresnet(mode)
        if per_step:
            reset_states(model)
            out = torch.stack([model.forward_step(x[t]) for t in range(x.shape[0])])
        else:
            out = run_timesteps(model, x)
        (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((grads, {k: v.clone() for k, v in model.state_dict().items()}, len(calls)))
    (plain, plain_state, plain_calls), (fused, fused_state, fused_calls) = results
    assert plain_calls == 0 and fused_calls == 8 * (x.shape[0] if per_step else 1)
    assert plain.keys() == fused.keys()
    for name in plain:
        if name.endswith("core4.bias"):  # removed by BatchNorm: exactly 0 fused, float noise plain
            assert fused[name].abs().max() == 0 and plain[name].abs().max() < 1e-10
            continue
        scale = plain[name].abs().max().clamp_min(1e-12)
        assert (plain[name] - fused[name]).abs().max() <= 1e-10 * scale, name
    for name in plain_state:
        assert torch.allclose(plain_state[name].double(), fused_state[name].double(), rtol=1e-10, atol=1e-12), name


@pytest.mark.parametrize("mode", ["stt", "ptt", "htt"])
def test_unscaled_core4_input_times_its_scale_is_the_layers_bitwise(mode):
    from ttsnn_cli.layers.conv2d import TTConv2d

    torch.manual_seed(0)
    dense = nn.Conv2d(6, 8, 3, padding=1)
    layer = TTConv2d.from_conv(dense, (4, 4, 4), mode, timesteps=2 if mode == "htt" else None)
    x = torch.rand(4, 6, 5, 5)
    layer.folded_timesteps = 2 if mode == "htt" else None
    m, scale = layer.core4_input_unscaled(x)
    assert scale == (0.5 if mode == "ptt" else 1.0)
    assert torch.equal(m * scale, layer.core4_input(x))


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("count", [100, 2 * 4096, 3 * 4096 + 37, 9001])
def test_rows_product_is_the_plain_product(threads, count):
    """One slice of rows per thread (bmm, summed), plus the rows left over: a^T b to float64 rounding."""
    generator = torch.Generator().manual_seed(count)
    a = torch.randn(count, 7, dtype=torch.float64, generator=generator) + 2.0
    b = torch.randn(count, 5, dtype=torch.float64, generator=generator)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        product = lowrank_bn._rows_product(a, b)
    finally:
        torch.set_num_threads(before)
    assert product.shape == (7, 5)
    assert torch.allclose(product, a.T @ b, rtol=1e-12, atol=1e-9)


def test_rows_product_slices_only_where_each_slice_is_large(monkeypatch):
    calls = []
    real = torch.bmm
    monkeypatch.setattr(torch, "bmm", lambda *args: calls.append(args[0].shape) or real(*args))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        lowrank_bn._rows_product(torch.ones(2 * 4096 - 1, 3), torch.ones(2 * 4096 - 1, 4))
        assert calls == []
        total = lowrank_bn._rows_product(torch.ones(2 * 4096 + 5, 3), torch.ones(2 * 4096 + 5, 4))
    finally:
        torch.set_num_threads(before)
    assert calls == [(2, 3, 4098)] and torch.equal(total, torch.full((3, 4), 2 * 4096 + 5.0))


def test_fused_is_the_two_modules_in_float64_where_the_products_are_sliced():
    """Enough pixels (2 x 4100) that the covariance and the weight-gradient product run sliced."""
    conv, bn = _pair(6, 10, True, 0.1, torch.float64)
    m = (torch.randn(2, 6, 41, 100, dtype=torch.float64) * 1.5 + 0.7).contiguous(memory_format=torch.channels_last)
    grad = torch.randn(2, 10, 41, 100, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        _close(_step(conv, bn, m, grad, False, 0.5), _step(conv, bn, m, grad, True, 0.5), 1e-10)
    finally:
        torch.set_num_threads(before)


def test_the_fused_form_is_a_few_dozen_small_ops(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forward and backward of the fused form, one TT layer's last core and BatchNorm: every op on the
    (C, r), (r, r) and (C,) tensors is a launch that a GPU step bound by the host waits for, so the
    products take their scalars and the sums fuse (it took 46 before; on CUDA two fewer, where the
    column sums are one reduction each, not a product with a column of ones)."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from op_count import work_ops  # type: ignore[import-not-found]

    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)  # unsliced products, as on CUDA
    conv, bn = _pair(24, 64, False, 0.1, torch.float32)
    m = torch.rand(16, 24, 16, 16).contiguous(memory_format=torch.channels_last).requires_grad_()
    grad = torch.rand(16, 64, 16, 16).contiguous(memory_format=torch.channels_last)
    lowrank_bn.conv1x1_bn(m, conv, bn, always=True, input_scale=0.5).backward(grad)
    for tensor in (m, *conv.parameters(), *bn.parameters()):
        tensor.grad = None  # as a training step finds them: no gradient to add to
    ops = work_ops(lambda: lowrank_bn.conv1x1_bn(m, conv, bn, always=True, input_scale=0.5).backward(grad))
    assert ops["convolution"] == 1 and sum(ops.values()) <= 35, dict(ops)
