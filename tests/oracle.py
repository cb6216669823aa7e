"""Helpers the dense-oracle tests of TT layers share: the grid of conv shape options and the error
measure (one definition, so the Conv2d and Conv1d suites cover their options the same way)."""

from __future__ import annotations

import itertools

import torch

CHANNELS = [(3, 5), (8, 4), (6, 6)]


def shape_grid(kernels: list, strides: list, paddings: list, dilations: list) -> list[tuple]:
    """Every (channels, kernel, stride, padding, dilation, bias) combination torch accepts (no strided
    'same'); channel counts and bias alternate along the grid so each appears with every other axis
    without a full product."""
    shapes = [
        (kernel, stride, padding, dilation)
        for kernel, stride, padding, dilation in itertools.product(kernels, strides, paddings, dilations)
        if not (padding == "same" and stride != 1)
    ]
    return [(CHANNELS[i % 3], *shape, i % 2 == 0) for i, shape in enumerate(shapes)]


def rel_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b||."""
    return float((a - b).norm() / b.norm())
