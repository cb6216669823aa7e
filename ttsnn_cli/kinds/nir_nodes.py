"""NIR node builders the layer kinds share: convs with a BatchNorm folded in, symmetric padding.

`nir` is imported inside each builder (an optional dependency, needed only to export NIR). Shapes
follow nir 1.0.8: a Conv2d node takes one symmetric padding and infers shapes from a square kernel,
so a kh x kw kernel is zero-embedded in a square one (exact when |kh - kw| is even).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ttsnn_cli.errors import BadInputError


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().to(torch.float32).numpy()


def bn_affine(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval BatchNorm as y = scale * x + shift (float64)."""
    var = bn.running_var.double() if bn.running_var is not None else torch.ones(bn.num_features, dtype=torch.float64)
    mean = bn.running_mean.double() if bn.running_mean is not None else torch.zeros(bn.num_features, dtype=torch.float64)
    weight = bn.weight.double() if bn.weight is not None else torch.ones_like(var)
    bias = bn.bias.double() if bn.bias is not None else torch.zeros_like(var)
    scale = weight / torch.sqrt(var + bn.eps)
    return scale, bias - mean * scale


def symmetric_padding(name: str, pads: tuple[int, int, int, int], padding_mode: str) -> tuple[int, int]:
    left, right, top, bottom = pads
    if padding_mode != "zeros":
        raise BadInputError(f"layer {name}: padding_mode {padding_mode!r} has no NIR equivalent (zeros only)")
    if left != right or top != bottom:
        raise BadInputError(f"layer {name}: asymmetric padding {pads} has no NIR equivalent (Conv2d takes one symmetric padding)")
    return (top, left)


def conv_node(name: str, weight: torch.Tensor, bias: torch.Tensor | None, stride: Any, padding: Any, dilation: Any, groups: int,
               hw: tuple[int, int], metadata: dict[str, Any] | None = None) -> Any:
    import nir

    bias_np = to_numpy(bias) if bias is not None else np.zeros(weight.shape[0], dtype=np.float32)
    padding, dilation = list(padding), tuple(dilation)
    kh, kw = weight.shape[2], weight.shape[3]
    if kh != kw:  # NIR infers shapes from kh alone: embed the kernel in a square one (exact)
        if (kh - kw) % 2:
            raise BadInputError(f"layer {name}: a {kh}x{kw} kernel cannot be embedded in a square kernel symmetrically "
                                "(NIR's Conv2d shape inference assumes square kernels)")
        axis, extra = (3, (kh - kw) // 2) if kh > kw else (2, (kw - kh) // 2)
        pad = (extra, extra, 0, 0) if axis == 3 else (0, 0, extra, extra)
        weight = torch.nn.functional.pad(weight, pad)
        padding[axis - 2] += extra * dilation[axis - 2]  # the zero taps shift the origin by extra dilated taps
    node = nir.Conv2d(input_shape=tuple(hw), weight=to_numpy(weight), stride=tuple(stride), padding=tuple(padding),
                      dilation=dilation, groups=groups, bias=bias_np, metadata=metadata or {})
    return node


def fold_bn(weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.Module | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    if bn is None:
        return weight, bias
    scale, shift = bn_affine(bn)  # type: ignore[arg-type]
    base = bias.double() if bias is not None else torch.zeros_like(shift)
    return weight.double() * scale.reshape(-1, *[1] * (weight.dim() - 1)), base * scale + shift


def conv1d_node(name: str, weight: torch.Tensor, bias: torch.Tensor | None, stride: int, padding: int, dilation: int,
                 length: int, metadata: dict[str, Any] | None = None) -> Any:
    import nir

    bias_np = to_numpy(bias) if bias is not None else np.zeros(weight.shape[0], dtype=np.float32)
    return nir.Conv1d(input_shape=length, weight=to_numpy(weight), stride=stride, padding=padding, dilation=dilation,
                      groups=1, bias=bias_np, metadata=metadata or {})
