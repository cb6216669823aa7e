"""The paper's LIF neuron as snntorch neurons, and a multistep wrapper that loops one over time.

LIF (the TT-SNN paper, "Architecture"):
    u_t = 0.25 * u_{t-1} * (1 - s_{t-1}) + x_t,    s_t = [u_t > 0.5]      (hard reset, reset detached)
snntorch 1.0.0 computes exactly this with `Leaky(beta=0.25, threshold=0.5, reset_mechanism="zero")` and
its default `reset_delay=True`: the reset of step t-1 is applied to the membrane at the start of step t
(`mem = (1 - reset) * mem; mem = beta * mem + x`), and the reset signal is detached. Tests check it.

Surrogate gradient: rectangular, ds/du = 1 where |u - thr| < 0.5 (snntorch passes `mem - thr`, so
|mem_shift| < 0.5). `rectangular` is a module-level function backed by an autograd.Function, so a
neuron holding it pickles by reference: no closure is stored on any module (snntorch issue 420).
"""

from __future__ import annotations

import functools

import torch
from snntorch import Leaky
from torch import nn

from ttsnn_cli.spiking import lif_kernel
from ttsnn_cli.spiking.state import TimeAware

BETA = 0.25
THRESHOLD = 0.5
SURROGATE_WIDTH = 0.5  # half-width of the rectangle around the threshold


class _Rectangular(torch.autograd.Function):
    """Heaviside forward; gradient 1 inside |x| < 0.5, 0 outside (x = u - threshold)."""

    @staticmethod
    def forward(ctx, mem_shift: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(mem_shift.abs() < SURROGATE_WIDTH)  # a bool mask: 1 byte per neuron, not 4
        return (mem_shift > 0).to(mem_shift.dtype)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (inside,) = ctx.saved_tensors
        return grad_output * inside.to(grad_output.dtype)


def rectangular(mem_shift: torch.Tensor) -> torch.Tensor:
    """Spike of `mem_shift = u - threshold` with the rectangular surrogate gradient (picklable)."""
    return _Rectangular.apply(mem_shift)


class _LIFSequence(torch.autograd.Function):
    """The fused LIF over a whole sequence [T, ...] as one autograd node (0/1 spikes, fixed beta and
    threshold), computing exactly what the op-by-op loop computes, values and gradients bitwise (up
    to the sign of a zero).

    Forward keeps one byte per neuron and step for backward, `state = 2 * (1 - spike) + window`
    (window: |u - thr| < 0.5), and returns it beside the float spikes, so that a convolution reading
    the spikes can keep this same byte for its weight gradient instead of a copy of its own
    (`saved.packed_spikes` with `state`): a neuron and the layer after it then hold 1 byte per neuron
    where they held 3 (two bool masks here, a bool copy in the conv).
    On CPU float32 both directions run the compiled kernel (`lif_kernel`, one pass over memory) when
    `native` is set and it is available; otherwise the PyTorch loops below, which it matches bitwise.
    Backward is the BPTT recurrence of u_t = beta * u_{t-1} * (1 - s_{t-1}) + x_t (zero reset;
    `subtract` and `none` have d u_t / d u_{t-1} = beta):
        g_t = grad_t * window_t + beta * g_{t+1} * (1 - s_t),    d loss / d x_t = g_t.
    """

    @staticmethod
    def forward(ctx, seq: torch.Tensor, beta: torch.Tensor, threshold: torch.Tensor, mechanism: int,  # type: ignore[override]
                native: bool = False):
        ctx.native = native and _native_applies(seq, beta, threshold)
        if ctx.native:
            spikes, state = lif_kernel.forward(seq, float(beta), float(threshold), SURROGATE_WIDTH, mechanism)
        else:
            spikes, state = _lif_loop(seq, beta, threshold, mechanism)
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
        if ctx.native and lif_kernel.usable(grad, state):
            return lif_kernel.backward(grad, state, float(beta), ctx.mechanism), None, None, None, None
        return _lif_grad_loop(grad, state, beta, ctx.mechanism), None, None, None, None


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
    """Once per process: the compiled kernel reproduces the PyTorch loops bitwise (spikes, state and
    gradient, every reset mechanism, a channels-last layout, membranes on and near the threshold);
    a compiler that contracts or reorders float operations anyway is caught here, not in training."""
    generator = torch.Generator().manual_seed(0)
    seq = torch.randn(3, 2, 5, 7, 3, generator=generator).contiguous(memory_format=torch.channels_last_3d)
    seq[0, 0, 0, 0] = torch.tensor([THRESHOLD, THRESHOLD + SURROGATE_WIDTH, THRESHOLD - SURROGATE_WIDTH])  # ties
    grad = torch.randn(seq.shape, generator=generator)
    beta, threshold = torch.tensor(BETA), torch.tensor(THRESHOLD)
    for mechanism in _MECHANISMS.values():
        spikes, state = _lif_loop(seq, beta, threshold, mechanism)
        fast_spikes, fast_state = lif_kernel.forward(seq, BETA, THRESHOLD, SURROGATE_WIDTH, mechanism)
        grad_seq = _lif_grad_loop(grad, state, beta, mechanism)
        fast_grad = lif_kernel.backward(grad, state, BETA, mechanism)
        if not (torch.equal(spikes, fast_spikes) and torch.equal(state, fast_state) and torch.equal(grad_seq, fast_grad)
                and torch.equal(spikes, lif_kernel.spikes_of_state(state))):
            return False
    return True


def spikes_of_state(state: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The 0/1 spikes recorded in a `_LIFSequence` state byte (2 * (1 - spike) + window), as `dtype`."""
    if dtype == torch.float32 and lif_kernel.usable(state) and lif_kernel.is_dense(state) and _native_verified():
        return lif_kernel.spikes_of_state(state)
    return (1 - state.bitwise_right_shift(1)).to(dtype)


def paper_lif(init_hidden: bool = False, output: bool = False) -> Leaky:
    """The paper's LIF as a snntorch Leaky: decay 0.25, threshold 0.5, hard reset, rectangular surrogate."""
    return Leaky(
        beta=BETA,
        threshold=THRESHOLD,
        reset_mechanism="zero",
        spike_grad=rectangular,
        init_hidden=init_hidden,
        output=output,
    )


_MECHANISMS = {"subtract": 0, "zero": 1, "none": 2}  # snntorch's reset_mechanism_val codes


_LOW_PRECISION = (torch.bfloat16, torch.float16)


class MultiStepLIF(TimeAware, nn.Module):
    """Loops one snntorch Leaky over time for layers that run folded.

    Input layouts (output spikes in the same layout):
    - folded [T*B, ...], time-major, when T is known: from `state.time_folded` (`folded_timesteps`),
      or from the `timesteps` argument of `forward`;
    - a sequence [T, B, ...] with `forward(x, sequence=True)`;
    - one step [B, ...] when no T is known at all: the membrane is then kept between calls (per-step
      execution, the reference the folded path is checked against); `state.reset_states` clears it.
    In the folded and sequence layouts every call is a whole sequence starting from a zero membrane.
    """

    def __init__(self, neuron: Leaky | None = None) -> None:
        super().__init__()
        self.lif = neuron if neuron is not None else paper_lif()
        if getattr(self.lif, "init_hidden", False):
            raise ValueError("MultiStepLIF drives the membrane itself: wrap a neuron with init_hidden=False")

    def forward(self, x: torch.Tensor, timesteps: int | None = None, sequence: bool = False,
                with_state: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor | None]:
        """Spikes in the layout of `x`; with `with_state`, also the one-byte record the one-node LIF
        keeps for backward (`_LIFSequence`, in the same layout; None on every other path), which a
        layer reading the spikes can keep instead of its own copy (`saved.packed_spikes`)."""
        if x.dtype in _LOW_PRECISION:
            # Under autocast the membrane still integrates in float32: in bf16 its 8-bit mantissa
            # decides near-threshold spikes (and their surrogate gradients) by rounding. The spikes,
            # exactly 0 or 1, go back in the input's precision.
            spikes, state = self._run(x.float(), timesteps, sequence)
            spikes = spikes.to(x.dtype)
        else:
            spikes, state = self._run(x, timesteps, sequence)
        return (spikes, state) if with_state else spikes

    def _run(self, x: torch.Tensor, timesteps: int | None, sequence: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        if sequence:
            return self._loop(x)
        steps = timesteps if timesteps is not None else self.folded_timesteps
        if steps is None:
            mem = self.lif.mem if self.lif.mem.shape == x.shape else torch.zeros_like(x)
            spk, mem = self.lif(x, mem)
            self.lif.mem = mem
            return spk, None
        if x.shape[0] % steps:
            raise ValueError(f"folded input of {x.shape[0]} samples is not a multiple of T={steps}")
        spikes, state = self._loop(x.unflatten(0, (steps, -1)))
        return spikes.flatten(0, 1), None if state is None else state.flatten(0, 1)

    def _fused(self) -> bool:
        """True when the neuron is a plain snntorch Leaky with our surrogate: `_fused_loop` applies."""
        lif = self.lif
        return (
            type(lif) is Leaky
            and lif.spike_grad is rectangular
            and lif.reset_delay
            and not lif.state_quant
            and not lif.inhibition
            and getattr(lif, "_reset_mechanism", None) in _MECHANISMS
        )

    one_node: bool = True
    """Runtime switch (not persisted): the fused loop as one autograd node (`_LIFSequence`) where it
    applies; off, it is recorded op by op (the reference the tests compare it with)."""

    native: bool = True
    """Runtime switch (not persisted): the one-node LIF runs the compiled kernel (`lif_kernel`) on CPU
    float32 where it is available; off, its PyTorch loops (bitwise the same results)."""

    def binary_output(self) -> bool:
        """True when every output is exactly 0 or 1 (the fused path without graded spikes).

        A convolution reading such spikes may keep them packed for backward (`train.memory`)."""
        return self._fused() and not self._learnable() and self._plain_factor()

    def _learnable(self) -> bool:
        lif = self.lif
        return bool(lif.beta.requires_grad or lif.threshold.requires_grad or lif.graded_spikes_factor.requires_grad)

    def _plain_factor(self) -> bool:
        """graded_spikes_factor == 1 (no data-dependent Python on meta or fake tensors: False there)."""
        try:
            return not bool(self.lif.graded_spikes_factor.ne(1).any())
        except RuntimeError:
            return False

    def _fused_loop(self, seq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """snntorch Leaky's recurrence over T with half its per-step ops, bitwise equal (tests check).

        Per step snntorch recomputes the previous step's spike for the reset, clones it and clamps
        beta; here the reset is the previous spike itself (detached, so the reset carries no gradient,
        as in snntorch), beta is clamped once, and the zero reset is a masked fill. With fixed beta
        and threshold and 0/1 spikes the whole loop is one autograd node (`_LIFSequence`) that keeps
        one byte per neuron and step for backward (returned as the state); otherwise it is recorded
        op by op (no state).
        """
        lif = self.lif
        beta = lif.beta.clamp(0, 1)
        threshold, factor = lif.threshold, lif.graded_spikes_factor
        mechanism = _MECHANISMS[lif._reset_mechanism]
        if self.one_node and not self._learnable() and self._plain_factor():
            return _LIFSequence.apply(seq, beta, threshold, mechanism, self.native)
        graded = factor.requires_grad or not self._plain_factor()
        spikes = []
        mem = seq[0]  # beta * 0 + x_0
        for t in range(seq.shape[0]):
            if t:
                reset = spikes[-1].detach() / factor if graded else spikes[-1].detach()
                if mechanism == 1:  # zero: (1 - reset) * mem, saving a bool mask for backward, not floats
                    mem = beta * mem.masked_fill(reset.bool(), 0.0) + seq[t]
                elif mechanism == 0:  # subtract
                    mem = beta * mem + seq[t] - reset * threshold
                else:
                    mem = beta * mem + seq[t]
            spk = rectangular(mem - threshold)
            spikes.append(spk * factor if graded else spk)
        return torch.stack(spikes), None

    def _loop(self, seq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self._fused():
            return self._fused_loop(seq)
        mem = torch.zeros_like(seq[0])
        spikes = []
        for t in range(seq.shape[0]):
            spk, mem = self.lif(seq[t], mem)
            spikes.append(spk)
        self.lif.mem = torch.zeros(0, device=seq.device, dtype=seq.dtype)  # keep no graph alive
        self.lif.reset = self.lif.mem
        return torch.stack(spikes), None
