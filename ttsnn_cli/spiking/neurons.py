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

import torch
from snntorch import Leaky
from torch import nn

from ttsnn_cli.spiking.lif_sequence import HALF, MECHANISMS, SURROGATE_WIDTH, _LIFSequence, lif_sequence
from ttsnn_cli.spiking.state import TimeAware

BETA = 0.25
THRESHOLD = 0.5


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
        if x.dtype in HALF and not self._one_node_takes_half(timesteps, sequence):
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

    def _one_node_takes_half(self, timesteps: int | None, sequence: bool) -> bool:
        """The eager one-node LIF will take this half-precision input as it is: it integrates in float32
        itself (`lif_sequence.lif_forward`), and on CUDA its Triton kernels read the input and write the
        spikes in half precision, saving the casts either side (two passes over memory, and the cast of
        the gradient back)."""
        known_steps = sequence or timesteps is not None or self.folded_timesteps is not None
        return (known_steps and self.one_node and self._fused() and not self._learnable() and self._plain_factor()
                and not torch.compiler.is_compiling())

    def _fused(self) -> bool:
        """True when the neuron is a plain snntorch Leaky with our surrogate: `_fused_loop` applies."""
        lif = self.lif
        return (
            type(lif) is Leaky
            and lif.spike_grad is rectangular
            and lif.reset_delay
            and not lif.state_quant
            and not lif.inhibition
            and getattr(lif, "_reset_mechanism", None) in MECHANISMS
        )

    one_node: bool = True
    """Runtime switch (not persisted): the fused loop as one autograd node (`_LIFSequence`) where it
    applies; off, it is recorded op by op (the reference the tests compare it with)."""

    native: bool = True
    """Runtime switch (not persisted): the one-node LIF runs a fused kernel where one applies (`lif_kernel`
    on CPU float32, `lif_triton` on CUDA float32); off, its PyTorch loops (bitwise the same results)."""

    def binary_output(self) -> bool:
        """True when every output is exactly 0 or 1 (the fused path without graded spikes).

        A convolution reading such spikes may keep them packed for backward (`train.memory`)."""
        return self._fused() and not self._learnable() and self._plain_factor()

    def _learnable(self) -> bool:
        lif = self.lif
        return bool(lif.beta.requires_grad or lif.threshold.requires_grad or lif.graded_spikes_factor.requires_grad)

    frozen_plain: bool | None = None
    """`_plain_factor` as `freeze_for_compile` read it before compiling: a compiled graph cannot branch on
    a tensor's value. None (not frozen): a compiled call takes the op-by-op path, correct for any factor."""

    _plain_seen: tuple[object, ...] | None = None
    _plain_answer: bool = False

    def _plain_factor(self) -> bool:
        """graded_spikes_factor == 1 (no data-dependent Python on meta or fake tensors: False there).

        Read once and remembered for as long as the factor is the same tensor, unmodified (its
        version counter counts in-place writes such as `load_state_dict`'s): on CUDA every read of a
        value on the host waits for all queued kernels, and this one ran for every neuron every step."""
        if torch.compiler.is_compiling():
            return bool(self.frozen_plain)
        factor = self.lif.graded_spikes_factor
        try:
            seen = (id(factor), factor._version, factor.data_ptr(), factor.device, factor.shape)
        except RuntimeError:  # a tensor without storage (functional, fake): never remembered
            seen = None
        if seen is None or seen != self._plain_seen:
            try:
                answer = not bool(factor.ne(1).any())
            except RuntimeError:
                answer = False
            if seen is None:
                return answer
            self._plain_seen, self._plain_answer = seen, answer
        return self._plain_answer

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
        mechanism = MECHANISMS[lif._reset_mechanism]
        if self.one_node and not self._learnable() and self._plain_factor():
            if torch.compiler.is_compiling():  # one opaque node the compiler keeps whole (`lif_op`)
                return lif_sequence(seq, beta, threshold, mechanism, self.native)
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


def freeze_for_compile(model: nn.Module) -> None:
    """Read, once and eagerly, what the neurons decide from tensor values (`MultiStepLIF._plain_factor`),
    so a compiled step (`torch.compile`) takes the same one-node path as eager without branching on data."""
    for module in model.modules():
        if isinstance(module, MultiStepLIF):
            module.frozen_plain = None
            module.frozen_plain = module._plain_factor()

