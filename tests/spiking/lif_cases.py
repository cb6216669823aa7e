"""Inputs shared by the tests of the fused LIF's kernels (C and Triton) against its PyTorch loops."""

from __future__ import annotations

import torch

from ttsnn_cli.spiking.lif_sequence import SURROGATE_WIDTH
from ttsnn_cli.spiking.neurons import BETA, THRESHOLD, MultiStepLIF

TRAIN_A_NEURON = (
    "import torch\n"
    "from ttsnn_cli.spiking import lif_kernel\n"
    "from ttsnn_cli.spiking.neurons import MultiStepLIF\n"
    "x = torch.randn(8, 4, 5, requires_grad=True)\n"
    "MultiStepLIF()(x, timesteps=4).sum().backward()\n"
    "assert x.grad is not None\n"
    "print(lif_kernel.build_status())\n"
)
"""A script that trains one neuron in a fresh interpreter and prints how the C kernel was built."""

OTHER_INPUTS = ("float64", "strided steps", "per-channel beta")
"""Calls no kernel takes: they run the PyTorch loop."""


def membranes(shape: tuple[int, ...], seed: int, scale: float = 0.6) -> torch.Tensor:
    """Inputs that make neurons fire, stay silent and sit inside the surrogate's window, with exact
    ties on the threshold, on both window edges and on signed zeros."""
    generator = torch.Generator().manual_seed(seed)
    seq = torch.randn(shape, generator=generator) * scale + 0.2
    flat = seq.view(-1)
    ties = torch.tensor([THRESHOLD, THRESHOLD + SURROGATE_WIDTH, THRESHOLD - SURROGATE_WIDTH, 0.0, -0.0])
    flat[: min(flat.numel(), ties.numel())] = ties[: flat.numel()]
    return seq


def laid_out(mechanism: int, layout: str, steps: int) -> torch.Tensor:
    """A [steps, 3, 5, 7, 9] sequence whose steps are dense blocks in `layout` ("contiguous" or
    "channels_last", as a folded [T*B, C, H, W] tensor is laid out before it is unfolded)."""
    seq = membranes((steps * 3, 5, 7, 9), seed=mechanism)
    if layout == "channels_last":
        seq = seq.contiguous(memory_format=torch.channels_last)
    return seq.unflatten(0, (steps, 3))


LAYOUTS = ("contiguous", "channels_last")


def other_input(case: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(seq, beta, threshold) of one of `OTHER_INPUTS`."""
    seq = membranes((4, 3, 8), seed=5)
    beta = torch.tensor(BETA)
    if case == "float64":
        seq, beta = seq.double(), beta.double()
    elif case == "strided steps":
        seq = seq[:, :, ::2]
    else:
        beta = torch.full((8,), BETA)
    return seq, beta, torch.tensor(THRESHOLD, dtype=seq.dtype)


def spikes_and_grads(neurons: list[MultiStepLIF], seq: torch.Tensor, grad: torch.Tensor, timesteps: int = 4
                     ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each neuron's spikes over the folded `seq` and the input's gradient for `grad` on them."""
    results = []
    for lif in neurons:
        x = seq.clone().requires_grad_()
        spikes = lif(x, timesteps=timesteps)
        spikes.backward(grad)
        results.append((spikes, x.grad))
    return results
