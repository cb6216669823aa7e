"""The fused LIF over a whole sequence [T, ...]: one autograd node in eager mode, one custom op under
`torch.compile`, both running the same code: a fused kernel where one applies (the compiled C kernel
`lif_kernel` on CPU float32, the Triton kernels `lif_triton` on CUDA float32), else the PyTorch loops,
all bitwise equal.

Why a custom op as well (`ttsnn::lif_sequence`): `torch.compile` cannot trace into the kernel (called
through ctypes) nor through the data-dependent checks that pick it; a custom op is opaque to the
compiler (one node with a registered shape function and a registered backward), so a compiled step
keeps the neuron whole instead of breaking the graph at it, and gets eager's values and gradients.
`neurons.MultiStepLIF` chooses between them.
"""

from __future__ import annotations

import functools

import torch

from ttsnn_cli.spiking import lif_kernel, lif_triton

SURROGATE_WIDTH = 0.5  # half-width of the rectangle around the threshold
MECHANISMS = {"subtract": 0, "zero": 1, "none": 2}  # snntorch's reset_mechanism_val codes
HALF = (torch.bfloat16, torch.float16)
"""Input precisions (autocast's) taken with float32 arithmetic: spikes come back in them, gradients as float32."""
_PROBE_BETA, _PROBE_THRESHOLD = 0.25, 0.5  # the values the one-time kernel check runs with


class _LIFSequence(torch.autograd.Function):
    """The fused LIF over a whole sequence [T, ...] as one autograd node (0/1 spikes, fixed beta and
    threshold), computing exactly what the op-by-op loop computes, values and gradients bitwise (up
    to the sign of a zero).

    Forward keeps one byte per neuron and step for backward, `state = 2 * (1 - spike) + window`
    (window: |u - thr| < 0.5), and returns it beside the float spikes, so that a convolution reading
    the spikes can keep this same byte for its weight gradient instead of a copy of its own
    (`saved.packed_spikes` with `state`): a neuron and the layer after it then hold 1 byte per neuron
    where they held 3 (two bool masks here, a bool copy in the conv).
    With `native` set, both directions run a fused kernel (one pass over memory) where one applies:
    the compiled C kernel (`lif_kernel`) on CPU float32, the Triton kernels (`lif_triton`) on CUDA
    float32; otherwise the PyTorch loops below, which both match bitwise.
    Backward is the BPTT recurrence of u_t = beta * u_{t-1} * (1 - s_{t-1}) + x_t (zero reset;
    `subtract` and `none` have d u_t / d u_{t-1} = beta):
        g_t = grad_t * window_t + beta * g_{t+1} * (1 - s_t),    d loss / d x_t = g_t.
    """

    @staticmethod
    def forward(ctx, seq: torch.Tensor, beta: torch.Tensor, threshold: torch.Tensor, mechanism: int,  # type: ignore[override]
                native: bool = False):
        ctx.native = native
        spikes, state = lif_forward(seq, beta, threshold, mechanism, native)
        ctx.mechanism = mechanism
        ctx.mark_non_differentiable(state)
        ctx.set_materialize_grads(False)  # else autograd zero-fills a gradient for the state every call
        ctx.save_for_backward(beta, state)
        return spikes, state

    @staticmethod
    def backward(ctx, grad: torch.Tensor, _grad_state: torch.Tensor | None = None):  # type: ignore[override]
        if grad is None:  # an op after the neuron gave no gradient for the spikes (autograd still calls us)
            return None, None, None, None, None
        beta, state = ctx.saved_tensors
        return lif_backward(grad, state, beta, ctx.mechanism, ctx.native), None, None, None, None


def lif_forward(seq: torch.Tensor, beta: torch.Tensor, threshold: torch.Tensor, mechanism: int, native: bool
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """(spikes, state) of `_LIFSequence`: a fused kernel where `native` asks and one applies, else
    the PyTorch loop (bitwise the same). Shared by the autograd node and the custom op (`lif_op`)."""
    if native and _triton_applies(seq, beta, threshold, mechanism):
        return lif_triton.forward(seq, beta, threshold, SURROGATE_WIDTH, mechanism)
    if seq.dtype in HALF:  # the membrane integrates in float32 on every path; the spikes come back as given
        spikes, state = lif_forward(seq.float(), beta, threshold, mechanism, native)
        return spikes.to(seq.dtype), state
    if native and _native_applies(seq, beta, threshold):
        return lif_kernel.forward(seq, float(beta), float(threshold), SURROGATE_WIDTH, mechanism)
    return _lif_loop(seq, beta, threshold, mechanism)


def lif_backward(grad: torch.Tensor, state: torch.Tensor, beta: torch.Tensor, mechanism: int, native: bool) -> torch.Tensor:
    """d loss / d seq of `_LIFSequence` from its state, in float32 for a half-precision gradient (autograd
    rounds it to the input's dtype): a fused kernel where it applies, else the loop."""
    if (native and beta.numel() == 1 and beta.dtype == torch.float32 and lif_triton.usable(grad, state)
            and lif_kernel.steps_are_dense(state) and _triton_verified(state.device, mechanism, grad.dtype)):
        return lif_triton.backward(grad, state, beta, mechanism)
    if grad.dtype in HALF:
        grad = grad.float()
    if (native and beta.numel() == 1 and lif_kernel.usable(grad, state) and lif_kernel.steps_are_dense(state)
            and _native_verified()):
        return lif_kernel.backward(grad, state, float(beta), mechanism)
    return _lif_grad_loop(grad, state, beta, mechanism)


def _lif_loop(seq: torch.Tensor, beta: torch.Tensor, threshold: torch.Tensor, mechanism: int
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """`_LIFSequence`'s forward in PyTorch. Every per-step op writes float or uint8: on CPU,
    comparisons producing bool and masked fills run 3-25x slower than the same float arithmetic, so
    the zero reset is a multiplication by 1 - spike (equal to the masked fill: a fired membrane is
    positive). The loop runs in place on buffers reused every step."""
    spikes = torch.empty_like(seq)  # all keep the input's memory format (channels_last)
    state = torch.empty_like(seq, dtype=torch.uint8)
    keep, shift = torch.empty_like(seq[0]), torch.empty_like(seq[0])  # reused every step
    mem = seq[0]
    for t in range(seq.shape[0]):
        if t:  # in place on our own membrane buffer: the same products and sums, in the same order
            if mechanism == 1:
                mem = torch.mul(mem, keep, out=mem if t > 1 else None).mul_(beta).add_(seq[t])
            elif mechanism == 0:
                mem = torch.mul(mem, beta, out=mem if t > 1 else None).add_(seq[t]).sub_(spikes[t - 1] * threshold)
            else:
                mem = torch.mul(mem, beta, out=mem if t > 1 else None).add_(seq[t])
        torch.sub(mem, threshold, out=shift)
        torch.gt(shift, 0, out=spikes[t])
        torch.sub(1, spikes[t], out=keep)
        torch.lt(shift.abs_(), SURROGATE_WIDTH, out=shift)  # the window, as 0/1 floats
        state[t].copy_(shift.add_(keep, alpha=2))
    return spikes, state


def _lif_grad_loop(grad: torch.Tensor, state: torch.Tensor, beta: torch.Tensor, mechanism: int) -> torch.Tensor:
    """`_LIFSequence`'s backward in PyTorch: each state bit becomes a reused float buffer before it
    multiplies (a product by 0 or 1 is exact)."""
    grad_seq = torch.empty_like(state, dtype=grad.dtype)
    factor = torch.empty_like(grad_seq[0])  # reused: a float copy of one bit of the state
    for t in reversed(range(grad.shape[0])):
        torch.mul(grad[t], factor.copy_(state[t].bitwise_and(1)), out=grad_seq[t])  # the window
        if t + 1 < grad.shape[0]:
            if mechanism == 1:  # (1 - spike) * g_{t+1} * beta
                carried = factor.copy_(state[t].bitwise_right_shift(1)).mul_(grad_seq[t + 1]).mul_(beta)
            else:
                carried = torch.mul(grad_seq[t + 1], beta, out=factor)
            grad_seq[t].add_(carried)
    return grad_seq


def _triton_applies(seq: torch.Tensor, beta: torch.Tensor, threshold: torch.Tensor, mechanism: int = 1) -> bool:
    """The Triton kernels take this call: float32, bfloat16 or float16 with dense steps on a device they
    run on (CUDA, or any in interpret mode), scalar float32 beta and threshold, and the kernels checked
    on that device."""
    return (
        beta.numel() == 1 and threshold.numel() == 1
        and seq.dtype in (torch.float32, *HALF) and beta.dtype == threshold.dtype == torch.float32
        and lif_triton.usable(seq)
        and lif_kernel.steps_are_dense(seq)
        and _triton_verified(seq.device, mechanism, seq.dtype)
    )


def _native_applies(seq: torch.Tensor, beta: torch.Tensor, threshold: torch.Tensor) -> bool:
    """The compiled kernel takes this call: CPU float32 with dense steps, scalar beta and threshold,
    and the kernel built and verified in this process."""
    return (
        beta.numel() == 1 and threshold.numel() == 1
        and seq.dtype == beta.dtype == threshold.dtype == torch.float32
        and lif_kernel.usable(seq, beta, threshold)
        and lif_kernel.steps_are_dense(seq)
        and _native_verified()
    )


@functools.cache
def _native_verified() -> bool:
    """Once per process: the compiled kernel reproduces the PyTorch loops bitwise (`_matches_loops`);
    a compiler that contracts or reorders float operations anyway is caught here, not in training."""
    return _matches_loops(
        lambda seq, beta, threshold, mechanism: lif_kernel.forward(seq, float(beta), float(threshold),
                                                                   SURROGATE_WIDTH, mechanism),
        lambda grad, state, beta, mechanism: lif_kernel.backward(grad, state, float(beta), mechanism),
        lif_kernel.spikes_of_state, torch.device("cpu"))


_triton_checked: dict[tuple[torch.device, int, torch.dtype], bool] = {}


def _triton_verified(device: torch.device, mechanism: int = 1, dtype: torch.dtype = torch.float32) -> bool:
    """Once per device, reset mechanism and input precision: the Triton kernels reproduce the PyTorch
    loops bitwise (`_matches_loops`); a Triton that cannot compile or launch here, or gives other
    bits, leaves the loops in charge. Each variant is a kernel Triton compiles (about a second, then
    cached on disk), so only the variants a run uses are checked. Not while a CUDA graph is being
    captured (the check reads results on the host): that call takes the loop, and a later one checks."""
    key = (device, mechanism, dtype)
    if key not in _triton_checked:
        if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
            return False
        half = dtype if dtype in HALF else None
        try:
            _triton_checked[key] = _matches_loops(
                lambda seq, beta, threshold, mechanism: lif_triton.forward(
                    seq if half is None else seq.to(half), beta, threshold, SURROGATE_WIDTH, mechanism),
                lambda grad, state, beta, mechanism: lif_triton.backward(
                    grad if half is None else grad.to(half), state, beta, mechanism),
                lif_triton.spikes_of_state, device, half, mechanisms=(mechanism,))
        except Exception:  # noqa: BLE001 - any failure to compile or launch means: do not use them
            _triton_checked[key] = False
    return _triton_checked[key]


def _matches_loops(forward, backward, spikes_of_state, device: torch.device,  # type: ignore[no-untyped-def]
                   half: torch.dtype | None = None, mechanisms: tuple[int, ...] = tuple(MECHANISMS.values())) -> bool:
    """True when a kernel's forward, backward and spikes-from-state give the PyTorch loops' exact bits
    on `device`: each of `mechanisms` (the reset rules), a channels-last layout, membranes on the threshold and on both
    edges of the surrogate's window. With `half`, the kernel is handed the input and the gradient in
    that precision (the loops then run on them upcast) and its spikes are compared as floats."""
    generator = torch.Generator().manual_seed(0)
    seq = torch.randn(3, 2, 5, 7, 3, generator=generator).contiguous(memory_format=torch.channels_last_3d)
    seq[0, 0, 0, 0] = torch.tensor([_PROBE_THRESHOLD, _PROBE_THRESHOLD + SURROGATE_WIDTH,
                                    _PROBE_THRESHOLD - SURROGATE_WIDTH])  # ties
    grad = torch.randn(seq.shape, generator=generator)
    seq, grad = seq.to(device), grad.to(device)
    if half is not None:  # values the half precision holds exactly, so the loops see what the kernel reads
        seq, grad = seq.to(half).float(), grad.to(half).float()
    beta = torch.tensor(_PROBE_BETA, device=device)
    threshold = torch.tensor(_PROBE_THRESHOLD, device=device)
    for mechanism in mechanisms:
        spikes, state = _lif_loop(seq, beta, threshold, mechanism)
        fast_spikes, fast_state = forward(seq, beta, threshold, mechanism)
        fast_spikes = fast_spikes.float()
        grad_seq = _lif_grad_loop(grad, state, beta, mechanism)
        fast_grad = backward(grad, state, beta, mechanism)
        if not (torch.equal(spikes, fast_spikes) and torch.equal(state, fast_state) and torch.equal(grad_seq, fast_grad)
                and torch.equal(spikes, spikes_of_state(state))):
            return False
    return True


def fused_kernel(device: torch.device) -> str:
    """Which kernel the one-node LIF runs on `device` (float32 or half inputs, dense steps): "triton",
    "c", or "pytorch loop (why)". For reports: a run says how its neurons were computed."""
    if lif_triton.mode() == "interpret" or device.type == "cuda":
        if not lif_triton.usable(torch.empty(0, device=device)):
            return f"pytorch loop (Triton kernels: {lif_triton.status()})"
        return "triton" if _triton_verified(device) else "pytorch loop (the Triton kernels failed their check)"
    if device.type == "cpu":
        if lif_kernel.library() is not None and _native_verified():
            return "c"
        return f"pytorch loop (C kernel: {lif_kernel.build_status()})"
    return "pytorch loop"


def spikes_of_state(state: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The 0/1 spikes recorded in a `_LIFSequence` state byte (2 * (1 - spike) + window), as `dtype`."""
    if (dtype == torch.float32 and lif_triton.usable(state) and lif_kernel.is_dense(state)
            and _triton_verified(state.device)):  # checked with the zero reset: the state byte is the same for all
        return lif_triton.spikes_of_state(state)
    if dtype == torch.float32 and lif_kernel.usable(state) and lif_kernel.is_dense(state) and _native_verified():
        return lif_kernel.spikes_of_state(state)
    return (1 - state.bitwise_right_shift(1)).to(dtype)


@torch.library.custom_op("ttsnn::lif_sequence", mutates_args=())
def lif_sequence(seq: torch.Tensor, beta: torch.Tensor, threshold: torch.Tensor, mechanism: int,
                 native: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(0/1 spikes, one-byte state) of the fused LIF over seq [T, ...] (`_LIFSequence`)."""
    return lif_forward(seq, beta, threshold, mechanism, native)


@lif_sequence.register_fake
def _(seq: torch.Tensor, beta: torch.Tensor, threshold: torch.Tensor, mechanism: int,
      native: bool) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.empty_like(seq), torch.empty_like(seq, dtype=torch.uint8)


@torch.library.custom_op("ttsnn::lif_sequence_grad", mutates_args=())
def lif_sequence_grad(grad: torch.Tensor, state: torch.Tensor, beta: torch.Tensor, mechanism: int,
                      native: bool) -> torch.Tensor:
    """d loss / d seq from the state the forward kept (`_LIFSequence.backward`)."""
    return lif_backward(grad, state, beta, mechanism, native)


@lif_sequence_grad.register_fake
def _(grad: torch.Tensor, state: torch.Tensor, beta: torch.Tensor, mechanism: int, native: bool) -> torch.Tensor:
    return torch.empty_like(state, dtype=torch.float32 if grad.dtype in HALF else grad.dtype)


def _setup_context(ctx, inputs, output) -> None:  # type: ignore[no-untyped-def]
    _seq, beta, _threshold, mechanism, native = inputs
    ctx.save_for_backward(beta, output[1])
    ctx.mechanism, ctx.native = mechanism, native


def _backward(ctx, grad, _grad_state):  # type: ignore[no-untyped-def]
    beta, state = ctx.saved_tensors
    if grad is None:
        return None, None, None, None, None
    return lif_sequence_grad(grad, state, beta, ctx.mechanism, ctx.native), None, None, None, None


lif_sequence.register_autograd(_backward, setup_context=_setup_context)
