"""The fused LIF neuron (`lif_sequence._LIFSequence`) as Triton kernels for CUDA float32 tensors.

Why: on a GPU the PyTorch loop of the one-node LIF launches 16 small kernels per time step, forward
and backward together, so a training step spends its time dispatching them from the host
(MS-ResNet18 at T = 4: about 1,090 of a step's 2,570 kernels are its 17 neuron layers'). One kernel
per direction per neuron layer reads each input once and keeps the membrane in registers across the
T steps. The kernels (`lif_triton_kernels`) do the loop's float operations in its order and are built
without FMA contraction, so they match it bitwise; `lif_sequence` checks that once per device before
first use, and any mismatch or failure sends the calls back to the loop.

`TTSNN_TRITON`: unset or 1, the kernels run on CUDA float32 tensors where Triton is installed (it
ships with torch's CUDA builds); 0, never; `interpret`, they run on every device through Triton's
interpreter (slow: for tests and debugging, which is how the CPU test suite checks them end to end).
"""

from __future__ import annotations

import contextlib
import functools
import os
from types import SimpleNamespace

import torch

from ttsnn_cli.spiking.lif_kernel import steps_are_dense

ENV_SWITCH = "TTSNN_TRITON"
BLOCK = 1024
"""Neurons per program: a multiple of 32 * NUM_WARPS; big enough that a program's loads are wide."""
NUM_WARPS = 4
DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.uint8)
"""What the kernels read: float inputs and gradients (the membrane is float32 whatever they are), the state."""


def mode() -> str:
    """'off', 'gpu' (the default) or 'interpret', from `TTSNN_TRITON`."""
    value = os.environ.get(ENV_SWITCH, "1").strip().lower()
    if value == "0":
        return "off"
    return "interpret" if value == "interpret" else "gpu"


@functools.cache
def _kernels(interpret: bool) -> SimpleNamespace | None:
    """The three kernels, compiled for the GPU or wrapped for the interpreter; None without Triton."""
    try:
        import triton

        from ttsnn_cli.spiking import lif_triton_kernels as source
    except Exception:  # not installed, or an installation that does not import
        return None
    if interpret:
        from triton.runtime.interpreter import InterpretedFunction

        wrap = InterpretedFunction
    else:
        wrap = triton.jit
    return SimpleNamespace(forward=wrap(source.lif_forward_kernel), backward=wrap(source.lif_backward_kernel),
                           spikes_of_state=wrap(source.spikes_of_state_kernel))


def status() -> str:
    """Whether the kernels are in use, in a few words (for benchmarks and bug reports)."""
    current = mode()
    if current == "off":
        return f"switched off ({ENV_SWITCH}=0)"
    if _kernels(current == "interpret") is None:
        return "Triton is not installed"
    return "interpreted on every device" if current == "interpret" else "on CUDA float32 tensors"


def usable(*tensors: torch.Tensor) -> bool:
    """True when the kernels may run on these tensors (`DTYPES`, on one device): on
    CUDA by default, anywhere in interpret mode; plain tensors only (fake and functional tensors under
    `torch.compile` have no memory behind them), and Triton installed."""
    current = mode()
    if current == "off" or torch.jit.is_tracing() or torch.compiler.is_compiling():
        return False
    if any(type(t) is not torch.Tensor or t.dtype not in DTYPES for t in tensors):
        return False
    device = tensors[0].device
    if any(t.device != device for t in tensors) or (current == "gpu" and device.type != "cuda"):
        return False
    return _kernels(current == "interpret") is not None


def _interpret() -> bool:
    return mode() == "interpret"


def _launch(kernel, n: int, *args, **constants) -> None:  # type: ignore[no-untyped-def]
    """Run `kernel` over n neurons on the tensors' device (Triton launches on the current one: made
    the tensors' for the call, so cuda:1 works too), FMA contraction off (bitwise equality)."""
    device = args[0].device
    with torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext():
        kernel[(-(-n // BLOCK),)](*args, BLOCK=BLOCK, num_warps=NUM_WARPS, enable_fp_fusion=False, **constants)


def _scalar(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A one-element float32 tensor on `like`'s device (read by the kernel: no host round trip)."""
    return value.detach().reshape(1).to(device=like.device, dtype=torch.float32)


def forward(seq: torch.Tensor, beta: torch.Tensor, threshold: torch.Tensor, width: float, mechanism: int,
            interpret: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Spikes (0/1, in `seq`'s dtype) and state bytes of the LIF over `seq` [T, ...] in `seq`'s layout;
    needs `steps_are_dense(seq)` (`lif_kernel`) and scalar beta and threshold."""
    kernels = _kernels(_interpret() if interpret is None else interpret)
    assert kernels is not None
    spikes = torch.empty_like(seq)
    state = torch.empty_like(seq, dtype=torch.uint8)
    steps, n = seq.shape[0], seq[0].numel()
    if n:
        _launch(kernels.forward, n, seq, spikes, state, _scalar(beta, seq), _scalar(threshold, seq), steps, n,
                float(width), MECHANISM=mechanism)
    return spikes, state


def backward(grad: torch.Tensor, state: torch.Tensor, beta: torch.Tensor, mechanism: int,
             interpret: bool | None = None) -> torch.Tensor:
    """d loss / d seq (float32) from the spikes' gradient (any float dtype) and the forward's state,
    in the state's layout (`grad` is copied into it first when it arrives in another)."""
    kernels = _kernels(_interpret() if interpret is None else interpret)
    assert kernels is not None
    if grad.stride() != state.stride() or not steps_are_dense(grad):
        grad = torch.empty_like(state, dtype=grad.dtype).copy_(grad)
    out = torch.empty_like(grad, dtype=torch.float32)
    steps, n = state.shape[0], state[0].numel()
    if n:
        _launch(kernels.backward, n, grad, state, out, _scalar(beta, grad), steps, n, MECHANISM=mechanism)
    return out


def spikes_of_state(state: torch.Tensor, interpret: bool | None = None) -> torch.Tensor:
    """The float32 0/1 spikes a dense state tensor records, in its layout, in one pass."""
    kernels = _kernels(_interpret() if interpret is None else interpret)
    assert kernels is not None
    spikes = torch.empty_like(state, dtype=torch.float32)
    if state.numel():
        _launch(kernels.spikes_of_state, state.numel(), state, spikes, state.numel())
    return spikes
