"""The fused LIF sequence of `lif_sequence._LIFSequence` in Triton: one kernel per direction.

Imported only by `lif_triton`, and only where Triton is installed. The functions are left undecorated
so that `lif_triton` can compile them for the GPU (`triton.jit`) or run them in Triton's interpreter on
the CPU (how the tests check them against the PyTorch loops without a GPU).

Each program takes BLOCK neurons and walks all T steps with the membrane in registers: one read of
the input and one write of the spikes and the state byte per neuron and step, where the PyTorch loop
launches about eight kernels per step, each a pass over memory. Every float operation is the one the
PyTorch loop performs, in the same order, in float32; compiled without FMA contraction
(`enable_fp_fusion=False`, which `lif_triton` passes), the results are bitwise the loop's.

Precision: the membrane integrates in float32 whatever the input's precision. Under autocast the
input, the spikes and the incoming gradient may be bfloat16 or float16; they are read and written as
such (upcasting is exact, and the spikes are 0 or 1), which saves the casts around the neuron. The
gradient out is float32 (autograd rounds it to the input's dtype, as the cast it replaces did).

Layout: the tensors hold T steps one after another, each a dense block of `n` neurons (any memory
format, the same for every tensor), indexed as [T, n]. Offsets are 64-bit: T * n passes 2**31 at
large batches. Beta and the threshold are read from one-element device tensors, so no value crosses
to the host (a host read would synchronise every call and cannot be captured in a CUDA graph).

Only Triton's builtins are used (`tl.full`, not `tl.zeros`): the library's own jit functions cannot
run in the interpreter unless it was switched on before Triton was first imported.

MECHANISM: 0 subtract, 1 zero, 2 none (snntorch's reset_mechanism_val codes).
State byte: 2 * (1 - spike) + window, window = |u - threshold| < width.
"""

import triton.language as tl


def lif_forward_kernel(seq, spikes, state, beta_ptr, threshold_ptr, steps, n, width,
                       MECHANISM: tl.constexpr, BLOCK: tl.constexpr):
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inside = offsets < n
    beta = tl.load(beta_ptr)
    threshold = tl.load(threshold_ptr)
    mem = tl.full([BLOCK], 0.0, tl.float32)
    keep = tl.full([BLOCK], 0.0, tl.float32)  # 1 - the previous step's spike
    for t in range(steps):
        here = offsets + t * n
        x = tl.load(seq + here, mask=inside, other=0.0).to(tl.float32)  # exact from bf16 / fp16
        if MECHANISM == 1:  # (u * (1 - s)) * beta + x
            updated = (mem * keep) * beta + x
        elif MECHANISM == 0:  # (u * beta + x) - s * threshold
            updated = (mem * beta + x) - (1.0 - keep) * threshold
        else:
            updated = mem * beta + x
        mem = tl.where(t > 0, updated, x)
        shift = mem - threshold
        spike = tl.where(shift > 0.0, 1.0, 0.0)
        keep = 1.0 - spike
        window = tl.where(tl.abs(shift) < width, 1.0, 0.0)
        tl.store(spikes + here, spike.to(spikes.dtype.element_ty), mask=inside)  # 0 and 1: exact in any
        tl.store(state + here, (window + keep * 2.0).to(tl.uint8), mask=inside)


def lif_backward_kernel(grad, state, out, beta_ptr, steps, n, MECHANISM: tl.constexpr, BLOCK: tl.constexpr):
    # g_t = grad_t * window_t + carried; carried = ((1 - s_t) * g_{t+1}) * beta (zero reset) or
    # g_{t+1} * beta (subtract, none); nothing is carried into the last step.
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inside = offsets < n
    beta = tl.load(beta_ptr)
    following = tl.full([BLOCK], 0.0, tl.float32)
    for i in range(steps):
        here = offsets + (steps - 1 - i) * n
        byte = tl.load(state + here, mask=inside, other=0)
        value = tl.load(grad + here, mask=inside, other=0.0).to(tl.float32) * (byte & 1).to(tl.float32)
        if MECHANISM == 1:
            carried = ((byte >> 1).to(tl.float32) * following) * beta
        else:
            carried = following * beta
        value = tl.where(i > 0, value + carried, value)
        tl.store(out + here, value, mask=inside)
        following = value


def spikes_of_state_kernel(state, spikes, n, BLOCK: tl.constexpr):
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inside = offsets < n
    byte = tl.load(state + offsets, mask=inside, other=0)
    tl.store(spikes + offsets, 1.0 - (byte >> 1).to(tl.float32), mask=inside)
