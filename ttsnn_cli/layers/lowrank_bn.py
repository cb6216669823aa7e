"""BatchNorm after a TT layer, computed through the layer's rank-r bottleneck.

A TT layer ends in a 1x1 conv, core4: Y = B W^T + b, from its r-channel input B (rows = pixels) to
Cout channels. In training, BatchNorm normalises Y with its batch statistics, and everything it
needs is a linear image of B's statistics:
    mean(Y) = mean(B) W^T + b,    var(Y)_c = w_c Cov(B) w_c^T     (Cov(B): r x r),
so with Bc = B - mean(B), a = gamma * invstd, the normalised output is one 1x1 conv of Bc,
    Z = Bc (diag(a) W)^T + beta,
and backward needs no Cout-channel tensor but the incoming gradient G either. With S = G^T Bc
(C x r, the product core4's weight gradient computes anyway), grad_beta = sum_p G, and
grad_gamma = invstd * rowdot(S, W):
    dL/dW = diag(a) (S - diag(grad_gamma * invstd) W Cov(B))
    dL/dB = G diag(a) W - Bc M - (a * grad_beta / P) W,   M = W^T diag(a * invstd * grad_gamma / P) W
    dL/db = 0 (BatchNorm removes any bias; the plain path computes it as float noise around 0).
That is the plain path's values and gradients up to float rounding (tests compare them for every
TT mode), with less work and less memory: the plain path writes Y, reads it twice more for the
statistics and the normalisation, keeps it for backward (Cout channels per pixel), and in backward
reads it and G twice each and writes BatchNorm's gradient, which core4's backward reads twice again.
Here the forward reads B twice and writes Z; backward reads G twice and Bc twice; only Bc (r
channels) is kept. The r x r and C x r products are extra; with few pixels per channel, or few
output channels to save on, they cost more than they save, so the default path takes the fused form
only from `MIN_ROWS` pixels and `MIN_ROWS_PER_RANK_SQUARED` * r^2 up, for at least
`MIN_OUT_CHANNELS` outputs and `MIN_OUT_PER_RANK` * r (`benchmarks/bench_training.py --fused-bn
--batch 1/8/32`: MS-ResNet18's four stages 1.35x faster at 52 r^2 pixels, 1.70x at 210 r^2, 1.21x at
4.4 r^2, 1.12x at 1.7 r^2, 1.01x at 6.6 r^2 and 4096 pixels; 0.98x at 0.42 r^2, 0.85x at 0.55 r^2,
0.71x at 0.01 r^2. Narrow layers at 16x16: 16 outputs 0.74-0.99x at any rank and size; 32 outputs
at ranks 8-16 1.11-1.53x and 64 at rank 8 1.43-1.76x, both below 1 at 1024 pixels). The
memory-saving mode (`--recompute-tt`) always takes it, for the memory. PTT's halving of the branch
sum rides along: it scales W, not the activations.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ttsnn_cli.layers import running_stats
from ttsnn_cli.layers.hooks import has_hooks

MIN_ROWS = 4096
MIN_ROWS_PER_RANK_SQUARED = 1.5
MIN_OUT_CHANNELS = 32
MIN_OUT_PER_RANK = 2.0
MIN_ROWS_PER_SLICE = 4096
"""`_rows_product` cuts its rows into one slice per thread only from this many rows per slice."""
FUSE_UNDER_CPU_AUTOCAST = False
"""Whether the default path takes the fused form under autocast on the CPU, where it measured slower
(`pays`); on, the CPU takes it as CUDA does (`benchmarks/bench_training.py --exact-only` counts
what a CUDA step keeps so)."""


def _rows(t: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] -> [N*H*W, C]: a view of channels-last data, a copy of any other layout."""
    return t.permute(0, 2, 3, 1).reshape(-1, t.shape[1])


def _image(rows: torch.Tensor, shape: torch.Size, channels_last: bool) -> torch.Tensor:
    """[N*H*W, C] rows back to [N, C, H, W], channels-last (a view) or contiguous (a copy)."""
    n, _, h, w = shape
    image = rows.view(n, h, w, rows.shape[1]).permute(0, 3, 1, 2)
    return image if channels_last else image.contiguous()


def _rows_product(a: torch.Tensor, b: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """alpha a^T b for row matrices a (P x m) and b (P x n), P pixels, m and n a few dozen channels
    (alpha rides in the product: one launch, not two).

    On CPU the GEMM behind `a.T @ b` splits its work over the output, one or two tiles here, so
    with 2 threads a 32768 x 27 covariance took 0.70 ms where one thread alone took 0.49 ms. Cut
    into one slice of rows per thread, the slices' products summed (`torch.bmm` runs them in
    parallel), it took 0.23 ms, and the C x r product of backward 0.59 against 0.79 ms. The same
    sum up to the order of float additions."""
    count = a.shape[0]
    slices = torch.get_num_threads() if a.device.type == "cpu" else 1
    if slices < 2 or count < slices * MIN_ROWS_PER_SLICE:
        return a.T @ b if alpha == 1 else torch.addmm(a.new_empty(a.shape[1], b.shape[1]), a.T, b, beta=0, alpha=alpha)
    size = count // slices
    bulk = slices * size
    total = torch.bmm(a[:bulk].reshape(slices, size, -1).transpose(1, 2), b[:bulk].reshape(slices, size, -1)).sum(0)
    total = total.addmm_(a[bulk:].T, b[bulk:]) if bulk < count else total
    return total if alpha == 1 else total.mul_(alpha)


def _column_sums(rows: torch.Tensor) -> torch.Tensor:
    """Each column's sum of rows (P x n). On the CPU as a product with a column of ones, which measured
    faster there than the reduction (32768 x 186: 0.14 against 0.32 ms); elsewhere the one reduction,
    one launch where the product takes two."""
    return rows.new_ones(rows.shape[0]) @ rows if rows.device.type == "cpu" else rows.sum(0)


def _rowdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(C,) dot products of a's and b's rows, (C, r) each, as one batched product (one launch)."""
    return torch.bmm(a.unsqueeze(1), b.unsqueeze(2)).view(-1)


def _is_channels_last(t: torch.Tensor) -> bool:
    return t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()


class _LowRankBatchNorm(torch.autograd.Function):
    """Training-mode BatchNorm of a 1x1 conv's output from the conv's r-channel input (module doc)."""

    @staticmethod
    def forward(ctx, m, weight, bias, gamma, beta, running_mean, running_var, momentum: float, eps: float,  # type: ignore[override]
                input_scale: float, half_input: torch.Tensor | None = None):
        """`half_input`: m as autocast handed it, before the float32 copy `m` (conv1x1_bn): kept for
        backward with the mean in its place of the float32 centred rows, half the bytes; backward
        centres it again, with the very operations forward ran, so the gradients are the same."""
        channels_last = _is_channels_last(m)
        rows = _rows(m)
        count = rows.shape[0]
        w = weight.flatten(1) * input_scale  # (C, r): the conv reads m * input_scale
        mean_m = _column_sums(rows) / count
        centred = rows - mean_m
        covariance = _rows_product(centred, centred, alpha=1 / count)  # (r, r)
        w_cov = w @ covariance
        var = _rowdot(w_cov, w)  # (C,) biased, as BatchNorm normalises
        invstd = (var + eps).rsqrt()
        scale = gamma * invstd
        scaled_w = scale[:, None] * w
        out = F.conv2d(_image(centred, m.shape, True), scaled_w[:, :, None, None], beta)
        if not channels_last:
            out = out.contiguous()
        with torch.no_grad():  # as nn.BatchNorm2d: the unbiased variance goes into the running estimate
            mean_y = mean_m @ w.T if bias is None else torch.addmv(bias, w, mean_m)
            running_stats.update(running_mean, running_var, mean_y, var, count, momentum)
        kept = (half_input, mean_m) if half_input is not None else (centred,)
        ctx.save_for_backward(w, scale, scaled_w, w_cov, invstd, *kept)  # small ones kept rather than redone
        ctx.shape, ctx.channels_last, ctx.has_bias = m.shape, channels_last, bias is not None
        ctx.weight_shape, ctx.input_scale, ctx.dtype = weight.shape, input_scale, m.dtype
        return out

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        with torch.autocast(grad.device.type, enabled=False):  # in forward's precision, even under autocast
            return _LowRankBatchNorm._backward(ctx, grad.to(ctx.dtype))

    @staticmethod
    def _backward(ctx, grad):  # type: ignore[no-untyped-def]
        """The module docstring's gradients, each (r x r, C x r or C) small product fused where
        torch has the fused form (addcmul, addmm, addmv with their scalars): a few launches per
        layer, which a GPU step bound by the host pays for one by one."""
        w, scale, scaled_w, w_cov, invstd, *kept = ctx.saved_tensors
        if len(kept) == 2:  # the half-precision input and its mean: centre it as forward did
            half_input, mean_m = kept
            centred = _rows(half_input.to(ctx.dtype)) - mean_m
        else:
            (centred,) = kept
        count = centred.shape[0]
        g = _rows(grad)  # (P, C)
        s = _rows_product(centred, g).T  # (C, r); this order runs faster than g^T centred
        grad_beta = _column_sums(g)
        grad_gamma = invstd * _rowdot(s, w)
        shrink = grad_gamma * invstd  # (C,)
        grad_weight = torch.addcmul(s, shrink[:, None], w_cov, value=-1).mul_((scale * ctx.input_scale)[:, None])
        grad_m = None
        if ctx.needs_input_grad[0]:
            r = w.shape[1]
            mix = torch.addmm(w.new_empty(r, r), w.T, (scale * shrink)[:, None] * w, beta=0, alpha=1 / count)  # (r, r)
            shift = torch.addmv(w.new_empty(r), w.T, scale * grad_beta, beta=0, alpha=-1 / count)  # (r,), negated
            grad_rows = torch.addmm(shift, g, scaled_w).addmm_(centred, mix, alpha=-1)
            grad_m = _image(grad_rows, ctx.shape, ctx.channels_last)
        grad_bias = torch.zeros_like(w[:, 0]) if ctx.has_bias else None
        return (grad_m, grad_weight.view(ctx.weight_shape), grad_bias, grad_gamma, grad_beta,
                None, None, None, None, None, None)


def fused_applies(m: torch.Tensor, conv: nn.Conv2d, bn: nn.BatchNorm2d) -> bool:
    """The fused form can stand for bn(conv(m)): training with gradients and running statistics, an
    affine BatchNorm2d after a plain 1x1 conv (neither with a forward of its own: a SyncBatchNorm's
    statistics span processes), more than one value per channel, no hooks and no tracing. Under
    autocast it applies too, in float32 (`conv1x1_bn`)."""
    return (
        isinstance(bn, nn.BatchNorm2d) and type(bn).forward is nn.BatchNorm2d.forward
        and isinstance(conv, nn.Conv2d) and type(conv).forward is nn.Conv2d.forward
        and bn.training and torch.is_grad_enabled() and bn.affine and bn.track_running_stats
        and bn.running_mean is not None and m.dim() == 4
        and conv.kernel_size == (1, 1) and conv.stride == (1, 1) and conv.padding in ((0, 0), "valid")
        and conv.groups == 1 and conv.padding_mode == "zeros"
        and m.shape[0] * m.shape[2] * m.shape[3] > 1
        and not torch.jit.is_tracing() and not torch.compiler.is_compiling()
        and not has_hooks(conv, bn)
    )


def pays(m: torch.Tensor, out_channels: int) -> bool:
    """The fused form is the faster one for this input and output width (`MIN_ROWS`,
    `MIN_ROWS_PER_RANK_SQUARED`, `MIN_OUT_CHANNELS`, `MIN_OUT_PER_RANK`). Not under autocast on the
    CPU, where its float32 arithmetic measured slower than the two modules' half precision (MS-ResNet18
    PTT, bf16, batch 8: a step 0.166 s against 0.151 s, for 105 MB kept instead of 120 MB); there it runs
    for its memory only (`--recompute-tt`). On CUDA it keeps the thresholds (`benchmarks/bench_cuda.py`
    measures `PTT bf16` with and without it)."""
    if m.device.type == "cpu" and torch.is_autocast_enabled("cpu") and not FUSE_UNDER_CPU_AUTOCAST:
        return False
    rows, rank = m.shape[0] * m.shape[2] * m.shape[3], m.shape[1]
    return (rows >= MIN_ROWS and rows >= MIN_ROWS_PER_RANK_SQUARED * rank * rank
            and out_channels >= MIN_OUT_CHANNELS and out_channels >= MIN_OUT_PER_RANK * rank)


def conv1x1_bn(m: torch.Tensor, conv: nn.Conv2d, bn: nn.BatchNorm2d, always: bool = False,
               input_scale: float = 1.0) -> torch.Tensor:
    """bn(conv(m * input_scale)) for a 1x1 stride-1 conv, in the fused form where it applies and pays
    (or `always`, for its memory), else as the two modules. The fused form folds `input_scale`
    into the conv's small weight instead of scaling m (PTT's halving: `TTConv2d.core4_input_unscaled`).

    Under autocast (`--precision bf16|fp16`) the fused form runs in float32 and returns the autocast
    dtype, as the two modules do: BatchNorm keeps its statistics in float32, and half precision would
    take the r x r covariance, whose differences of large sums it cannot hold. It keeps the r-channel
    input as it came, in half precision (2r bytes a pixel), and centres it again in float32 for
    backward, where the two modules keep the conv's half-precision input and output (2r + 2 Cout
    bytes). MS-ResNet18 PTT in bf16 at batch 128, as CUDA runs it, keeps 1432 MB a step against
    dense's 1580 MB (0.91x); keeping the float32 centred rows it kept 1595 MB (1.01x)
    (`benchmarks/bench_training.py --batch 128 --exact-only bf16`, exact counts)."""
    if not (fused_applies(m, conv, bn) and (always or pays(m, conv.out_channels))):
        return bn(conv(m if input_scale == 1 else m * input_scale))
    momentum = running_stats.next_momentum(bn)
    device = m.device.type
    if not torch.is_autocast_enabled(device):
        return _LowRankBatchNorm.apply(m, conv.weight, conv.bias, bn.weight, bn.bias, bn.running_mean,
                                       bn.running_var, momentum, bn.eps, input_scale)
    with torch.autocast(device, enabled=False):
        out = _LowRankBatchNorm.apply(m.float(), conv.weight, conv.bias, bn.weight, bn.bias, bn.running_mean,
                                      bn.running_var, momentum, bn.eps, input_scale,
                                      m.detach() if m.dtype != torch.float32 else None)
    return out.to(torch.get_autocast_dtype(device))
