"""The compiled LIF kernel (`lif_kernel`) against the PyTorch loops of `lif_sequence._LIFSequence`, bitwise."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ttsnn_cli.spiking import lif_kernel
from ttsnn_cli.spiking import lif_sequence as fused
from ttsnn_cli.spiking.lif_sequence import SURROGATE_WIDTH, _lif_grad_loop, _lif_loop, _LIFSequence
from ttsnn_cli.spiking.neurons import BETA, THRESHOLD, MultiStepLIF

from tests.spiking.lif_cases import (
    LAYOUTS,
    OTHER_INPUTS,
    TRAIN_A_NEURON,
    laid_out,
    membranes,
    other_input,
    spikes_and_grads,
)

MECHANISMS = (0, 1, 2)

needs_compiler = pytest.mark.skipif(lif_kernel._compiler() is None, reason="no C compiler on this machine")


def _both(seq: torch.Tensor, mechanism: int, grad: torch.Tensor):
    beta, threshold = torch.tensor(BETA), torch.tensor(THRESHOLD)
    reference = _lif_loop(seq, beta, threshold, mechanism)
    fast = lif_kernel.forward(seq, BETA, THRESHOLD, SURROGATE_WIDTH, mechanism)
    return reference, fast, _lif_grad_loop(grad, reference[1], beta, mechanism), lif_kernel.backward(grad, reference[1], BETA, mechanism)


@needs_compiler
def test_the_kernel_builds_here_and_passes_its_own_check() -> None:
    assert lif_kernel.library() is not None, lif_kernel.build_status()
    assert lif_kernel.build_status().startswith("built with")
    assert fused._native_verified()


@needs_compiler
@pytest.mark.parametrize("mechanism", MECHANISMS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("steps", [1, 4])
def test_kernel_equals_the_pytorch_loops_bitwise(mechanism: int, layout: str, steps: int) -> None:
    seq = laid_out(mechanism, layout, steps)
    grad = torch.randn(seq.shape)
    (spikes, state), (fast_spikes, fast_state), grad_seq, fast_grad = _both(seq, mechanism, grad)
    assert torch.equal(spikes, fast_spikes) and torch.equal(state, fast_state)
    assert fast_spikes.stride() == seq.stride() and fast_state.stride() == seq.stride()
    assert torch.equal(grad_seq, fast_grad)
    assert torch.equal(fused.spikes_of_state(state, torch.float32), spikes)


@needs_compiler
def test_large_tensors_give_the_same_bits() -> None:
    n = 40 * 512 + 77  # many of the kernel's 512-neuron blocks, the last one partial
    seq = membranes((4, n), seed=3)
    grad = torch.randn(seq.shape)
    for mechanism in MECHANISMS:
        (spikes, state), (fast_spikes, fast_state), grad_seq, fast_grad = _both(seq, mechanism, grad)
        assert torch.equal(spikes, fast_spikes) and torch.equal(state, fast_state)
        assert torch.equal(grad_seq, fast_grad)


def _shares_torch_openmp() -> bool:
    return sys.platform == "linux" and "parallel backend: OpenMP" in torch.__config__.parallel_info()


@needs_compiler
@pytest.mark.skipif(not _shares_torch_openmp(), reason="torch runs on no OpenMP runtime the kernel can share here")
def test_the_kernel_runs_on_torchs_own_openmp_threads_here() -> None:
    assert "on torch's OpenMP threads" in lif_kernel.build_status()
    assert lif_kernel.threads() == torch.get_num_threads()
    with open("/proc/self/maps") as handle:  # other packages' renamed copies (libgomp-<hash>.so) may sit beside it
        loaded = {line.rstrip("\n").split(maxsplit=5)[-1] for line in handle if line.rstrip().endswith("/libgomp.so.1")}
    assert len(loaded) == 1  # the kernel brought no second copy of the runtime torch runs on


@needs_compiler
@pytest.mark.parametrize("threads", [2, 3, 7])
def test_splitting_the_neurons_over_threads_changes_no_bit(monkeypatch: pytest.MonkeyPatch, threads: int) -> None:
    n = 40 * 512 + 77  # whole blocks per thread, the last block partial
    seq = membranes((4, n), seed=5)
    grad = torch.randn(seq.shape)
    monkeypatch.setattr(lif_kernel, "THREADS", 1)
    one = [lif_kernel.forward(seq, BETA, THRESHOLD, SURROGATE_WIDTH, m) for m in MECHANISMS]
    one_grad = [lif_kernel.backward(grad, state, BETA, m) for m, (_, state) in zip(MECHANISMS, one)]
    monkeypatch.setattr(lif_kernel, "THREADS", threads)
    for m, (spikes, state), grad_seq in zip(MECHANISMS, one, one_grad):
        fast_spikes, fast_state = lif_kernel.forward(seq, BETA, THRESHOLD, SURROGATE_WIDTH, m)
        assert torch.equal(spikes, fast_spikes) and torch.equal(state, fast_state)
        assert torch.equal(grad_seq, lif_kernel.backward(grad, state, BETA, m))
        assert torch.equal(lif_kernel.spikes_of_state(state), spikes)


@needs_compiler
def test_a_kernel_on_another_openmp_runtime_than_torchs_runs_on_the_calling_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lif_kernel, "_torch_openmp_runtime", lambda: 1)  # no runtime lives at address 1
    lif_kernel._build.cache_clear()
    try:
        assert "on the calling thread" in lif_kernel.build_status()
        assert lif_kernel.threads() == 1
        seq = membranes((4, 3000), seed=6)
        (spikes, state), (fast_spikes, fast_state), _, _ = _both(seq, 1, torch.randn(seq.shape))
        assert torch.equal(spikes, fast_spikes) and torch.equal(state, fast_state)
    finally:
        monkeypatch.undo()
        lif_kernel._build.cache_clear()


@needs_compiler
@pytest.mark.skipif(sys.platform != "linux", reason="a POSIX shell wrapper around cc")
def test_a_compiler_without_openmp_still_builds_the_kernel(tmp_path) -> None:
    compiler = tmp_path / "cc-without-openmp"
    compiler.write_text('#!/bin/sh\nfor a in "$@"; do [ "$a" = -fopenmp ] && exit 1; done\nexec cc "$@"\n')
    compiler.chmod(0o755)
    script = ("import torch\nfrom ttsnn_cli.spiking import lif_kernel\n"
              "print(lif_kernel.build_status(), lif_kernel.threads())\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={**_environment(), "CC": str(compiler)})
    assert done.returncode == 0, done.stderr
    assert "on the calling thread 1" in done.stdout


@needs_compiler
@settings(max_examples=40, deadline=None)
@given(
    steps=st.integers(1, 6),
    width=st.integers(1, 600),
    mechanism=st.sampled_from(MECHANISMS),
    scale=st.floats(0.01, 4.0),
    seed=st.integers(0, 2**31 - 1),
)
def test_kernel_equals_the_loops_on_random_sequences(steps: int, width: int, mechanism: int, scale: float, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    seq = torch.randn(steps, width, generator=generator) * scale
    grad = torch.randn(steps, width, generator=generator) * scale
    (spikes, state), (fast_spikes, fast_state), grad_seq, fast_grad = _both(seq, mechanism, grad)
    assert torch.equal(spikes, fast_spikes) and torch.equal(state, fast_state)
    assert torch.equal(grad_seq, fast_grad)


@needs_compiler
def test_a_gradient_in_another_layout_is_read_in_the_states_layout() -> None:
    seq = membranes((8, 6, 5, 5), seed=4).contiguous(memory_format=torch.channels_last).unflatten(0, (4, 2))
    x = seq.clone().requires_grad_()
    spikes, _ = _LIFSequence.apply(x, torch.tensor(BETA), torch.tensor(THRESHOLD), 1, True)
    grad = torch.randn(seq.shape)  # contiguous, unlike the channels-last state
    spikes.backward(grad)
    reference = seq.clone().requires_grad_()
    ref_spikes, _ = _LIFSequence.apply(reference, torch.tensor(BETA), torch.tensor(THRESHOLD), 1, False)
    ref_spikes.backward(grad)
    assert torch.equal(x.grad, reference.grad)
    expanded = torch.ones(()).expand(seq.shape)  # what the gradient of a sum arrives as
    x.grad = reference.grad = None
    _LIFSequence.apply(x, torch.tensor(BETA), torch.tensor(THRESHOLD), 1, True)[0].backward(expanded)
    _LIFSequence.apply(reference, torch.tensor(BETA), torch.tensor(THRESHOLD), 1, False)[0].backward(expanded)
    assert torch.equal(x.grad, reference.grad)


@pytest.mark.parametrize("case", OTHER_INPUTS)
def test_other_inputs_run_the_pytorch_loop(case: str) -> None:
    assert not fused._native_applies(*other_input(case))


def test_the_multistep_neuron_gives_the_same_spikes_and_gradients_with_and_without_the_kernel() -> None:
    seq = membranes((4 * 2, 16, 6, 6), seed=6).contiguous(memory_format=torch.channels_last)
    grad = torch.randn(seq.shape)
    native, loops = MultiStepLIF(), MultiStepLIF()
    loops.native = False
    results = spikes_and_grads([native, loops], seq, grad)
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])


def test_a_kernel_that_disagrees_with_the_loops_is_never_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """The once-per-process check is what stands between a miscompiled kernel and a training run."""
    real = lif_kernel.forward

    def off_by_one_spike(seq, *args):
        spikes, state = real(seq, *args)
        first = (0,) * spikes.dim()
        spikes[first] = 1 - spikes[first]
        return spikes, state

    monkeypatch.setattr(lif_kernel, "forward", off_by_one_spike)
    fused._native_verified.cache_clear()
    try:
        assert not fused._native_verified()
        seq = membranes((2, 3, 4), seed=7)
        assert not fused._native_applies(seq, torch.tensor(BETA), torch.tensor(THRESHOLD))
    finally:
        monkeypatch.undo()
        fused._native_verified.cache_clear()


def test_without_a_compiler_or_when_switched_off_everything_runs_the_pytorch_loop() -> None:
    """In fresh interpreters: CC naming no program or one that fails, and TTSNN_NATIVE=0, where the
    neuron still trains on the PyTorch loop; and CC with flags of its own, which builds."""
    cases = (({"CC": "no-such-compiler-ttsnn"}, "no C compiler"), ({"TTSNN_NATIVE": "0"}, "switched off"),
             ({"CC": "false"}, "could not build it"))
    if shutil.which("cc"):
        cases += (({"CC": "cc -O1"}, "built with"),)
    for env, expected in cases:
        done = subprocess.run([sys.executable, "-c", TRAIN_A_NEURON], capture_output=True, text=True, timeout=300,
                              env={**_environment(), **env})
        assert done.returncode == 0, done.stderr
        assert expected in done.stdout


def _environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("CC", "TTSNN_NATIVE")}
