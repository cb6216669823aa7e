"""The Triton LIF kernels (`lif_triton`) against the PyTorch loops of `lif_sequence._LIFSequence`, bitwise.

Without a GPU the kernels run in Triton's interpreter (the same kernel source, numpy underneath), and
are compiled for NVIDIA targets to check that they build and that no multiply-add is fused (which
would change the bits on the GPU); with one, the tests marked `cuda` run them for real."""

from __future__ import annotations

import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ttsnn_cli.compress.decompose import CompressConfig, compress_model
from ttsnn_cli.maths.ranks import RankSpec
from ttsnn_cli.spiking import lif_sequence as fused
from ttsnn_cli.spiking import lif_triton
from ttsnn_cli.spiking.lif_sequence import SURROGATE_WIDTH, _lif_grad_loop, _lif_loop, _LIFSequence
from ttsnn_cli.spiking.neurons import BETA, THRESHOLD, MultiStepLIF, freeze_for_compile
from ttsnn_cli.spiking.runner import run_timesteps
from ttsnn_cli.zoo.msresnet import MSResNet

from tests.spiking.lif_cases import LAYOUTS, OTHER_INPUTS, laid_out, membranes, other_input, spikes_and_grads

triton = pytest.importorskip("triton", reason="Triton is not installed")

MECHANISMS = (0, 1, 2)


def _interpreted(seq: torch.Tensor, grad: torch.Tensor, mechanism: int, beta: float = BETA):
    beta_t, threshold = torch.tensor(beta), torch.tensor(THRESHOLD)
    spikes, state = _lif_loop(seq, beta_t, threshold, mechanism)
    fast_spikes, fast_state = lif_triton.forward(seq, beta_t, threshold, SURROGATE_WIDTH, mechanism, interpret=True)
    grad_seq = _lif_grad_loop(grad, state, beta_t, mechanism)
    fast_grad = lif_triton.backward(grad, state, beta_t, mechanism, interpret=True)
    return (spikes, state, grad_seq), (fast_spikes, fast_state, fast_grad)


def _assert_same_bits(reference, fast) -> None:  # type: ignore[no-untyped-def]
    for expected, got in zip(reference, fast, strict=True):
        assert got.dtype == expected.dtype and got.stride() == expected.stride()
        assert torch.equal(got, expected)
        # signed zeros too: a gradient of -0.0 where the loop has +0.0 would be a different kernel
        if got.is_floating_point():
            assert torch.equal(torch.signbit(got), torch.signbit(expected))


@pytest.mark.parametrize("mechanism", MECHANISMS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("steps", [1, 4])
def test_interpreted_kernels_equal_the_pytorch_loops_bitwise(mechanism: int, layout: str, steps: int) -> None:
    seq = laid_out(mechanism, layout, steps)
    reference, fast = _interpreted(seq, torch.randn(seq.shape), mechanism)
    _assert_same_bits(reference, fast)
    assert torch.equal(lif_triton.spikes_of_state(fast[1], interpret=True), reference[0])


def test_several_blocks_and_a_partial_last_one_give_the_same_bits() -> None:
    n = 3 * lif_triton.BLOCK + 77
    seq = membranes((4, n), seed=3)
    grad = torch.randn(seq.shape)
    for mechanism in MECHANISMS:
        _assert_same_bits(*_interpreted(seq, grad, mechanism))


@settings(max_examples=25, deadline=None)
@given(
    steps=st.integers(1, 6),
    width=st.integers(1, 300),
    mechanism=st.sampled_from(MECHANISMS),
    scale=st.sampled_from([1e-3, 0.6, 3.0, 1e4]),
    beta=st.sampled_from([0.0, 0.25, 0.9, 1.0]),
    seed=st.integers(0, 2**16),
)
def test_any_sequence_gives_the_loops_bits(steps: int, width: int, mechanism: int, scale: float, beta: float,
                                           seed: int) -> None:
    seq = membranes((steps, width), seed=seed, scale=scale)
    grad = torch.randn(steps, width, generator=torch.Generator().manual_seed(seed + 1)) * scale
    _assert_same_bits(*_interpreted(seq, grad, mechanism, beta=beta))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_half_precision_is_read_as_it_is_and_integrated_in_float32(dtype: torch.dtype, mechanism: int) -> None:
    """Under autocast the kernels read a bf16 / fp16 input and write the spikes in it; the membrane
    integrates in float32, so everything equals the float32 loop on the upcast input, and the
    gradient (float32) equals the loop's on the upcast incoming gradient."""
    seq = membranes((4, 3, 5, 7), seed=mechanism).to(dtype).contiguous(memory_format=torch.channels_last)
    grad = torch.randn(seq.shape).to(dtype)
    beta, threshold = torch.tensor(BETA), torch.tensor(THRESHOLD)
    spikes, state = _lif_loop(seq.float(), beta, threshold, mechanism)
    fast_spikes, fast_state = lif_triton.forward(seq, beta, threshold, SURROGATE_WIDTH, mechanism, interpret=True)
    assert fast_spikes.dtype == dtype and fast_spikes.stride() == seq.stride()
    assert torch.equal(fast_spikes.float(), spikes) and torch.equal(fast_state, state)
    fast_grad = lif_triton.backward(grad, state, beta, mechanism, interpret=True)
    assert fast_grad.dtype == torch.float32
    assert torch.equal(fast_grad, _lif_grad_loop(grad.float(), state, beta, mechanism))


def test_a_gradient_in_another_layout_is_read_in_the_states_layout() -> None:
    seq = membranes((8, 6, 5, 5), seed=4).contiguous(memory_format=torch.channels_last).unflatten(0, (4, 2))
    beta, threshold = torch.tensor(BETA), torch.tensor(THRESHOLD)
    _spikes, state = _lif_loop(seq, beta, threshold, 1)
    for grad in (torch.randn(seq.shape), torch.ones(()).expand(seq.shape)):
        fast = lif_triton.backward(grad, state, beta, 1, interpret=True)
        assert torch.equal(fast, _lif_grad_loop(grad, state, beta, 1))
        assert fast.stride() == state.stride()


def test_empty_steps_launch_nothing() -> None:
    seq = torch.empty(3, 0, 4)
    spikes, state = lif_triton.forward(seq, torch.tensor(BETA), torch.tensor(THRESHOLD), SURROGATE_WIDTH, 1,
                                       interpret=True)
    assert spikes.shape == state.shape == seq.shape


# --- the switch and the dispatch ----------------------------------------------------------------


@pytest.fixture
def interpret(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """TTSNN_TRITON=interpret: the one-node LIF runs the Triton kernels, interpreted, on the CPU."""
    monkeypatch.setenv(lif_triton.ENV_SWITCH, "interpret")
    fused._triton_checked.clear()
    yield
    fused._triton_checked.clear()


def test_the_switch_reads_off_gpu_and_interpret(monkeypatch: pytest.MonkeyPatch) -> None:
    seq = torch.zeros(2, 3)
    for value, mode in (("0", "off"), ("1", "gpu"), ("", "gpu"), (" Interpret ", "interpret")):
        monkeypatch.setenv(lif_triton.ENV_SWITCH, value)
        assert lif_triton.mode() == mode
    monkeypatch.setenv(lif_triton.ENV_SWITCH, "1")
    assert not lif_triton.usable(seq), "by default the kernels run on CUDA tensors only"
    assert lif_triton.status() == "on CUDA float32 tensors"
    monkeypatch.setenv(lif_triton.ENV_SWITCH, "0")
    assert lif_triton.status().startswith("switched off")
    monkeypatch.setenv(lif_triton.ENV_SWITCH, "interpret")
    assert lif_triton.usable(seq)
    assert not lif_triton.usable(seq.double()) and not lif_triton.usable(seq, seq.to(torch.int32))


@pytest.mark.usefixtures("interpret")
def test_the_one_node_lif_runs_the_kernels_and_matches_the_loops() -> None:
    seq = membranes((4 * 2, 16, 6, 6), seed=6).contiguous(memory_format=torch.channels_last)
    grad = torch.randn(seq.shape)
    assert fused._triton_applies(seq.unflatten(0, (4, 2)), torch.tensor(BETA), torch.tensor(THRESHOLD))
    calls = []
    real = lif_triton.forward

    def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        return real(*args, **kwargs)

    results = []
    for native in (True, False):
        lif = MultiStepLIF()
        lif.native = native
        x = seq.clone().requires_grad_()
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(lif_triton, "forward", counted)
            spikes = lif(x, timesteps=4)
        spikes.backward(grad)
        results.append((spikes, x.grad))
    assert calls == [1], "the kernel ran for the native neuron only"
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])


@pytest.mark.usefixtures("interpret")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_the_neuron_under_autocast_gives_the_casts_results_without_them(dtype: torch.dtype) -> None:
    """The neuron hands a half-precision input to the one-node LIF as it is (no cast either side);
    spikes and the input's gradient are bitwise those of the upcast path it replaces, with the
    kernels (interpreted) and with the loops."""
    seq = (membranes((4 * 2, 16, 6, 6), seed=6) * 2).to(dtype).contiguous(memory_format=torch.channels_last)
    grad = torch.randn(seq.shape).to(dtype)
    reference = MultiStepLIF()
    reference.one_node = False  # the op-by-op path: float32 throughout, cast at both ends
    results = spikes_and_grads([MultiStepLIF(), _with(MultiStepLIF(), native=False), reference], seq, grad)
    assert all(spikes.dtype == dtype and x_grad.dtype == dtype for spikes, x_grad in results)
    for spikes, x_grad in results[:2]:
        assert torch.equal(spikes, results[2][0]) and torch.equal(x_grad, results[2][1])


def _with(lif: MultiStepLIF, **flags: bool) -> MultiStepLIF:
    for name, value in flags.items():
        setattr(lif, name, value)
    return lif


@pytest.mark.parametrize("case", OTHER_INPUTS)
@pytest.mark.usefixtures("interpret")
def test_other_inputs_run_the_pytorch_loop(case: str) -> None:
    assert not fused._triton_applies(*other_input(case))


@pytest.mark.usefixtures("interpret")
def test_kernels_that_disagree_with_the_loops_are_never_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """The once-per-device check is what stands between a miscompiled kernel and a training run."""
    real = lif_triton.backward

    def a_wrong_gradient(grad, state, beta, mechanism, interpret=None):  # type: ignore[no-untyped-def]
        out = real(grad, state, beta, mechanism, interpret)
        out.view(-1)[0] += 1
        return out

    monkeypatch.setattr(lif_triton, "backward", a_wrong_gradient)
    seq = membranes((2, 3, 4), seed=7)
    assert not fused._triton_applies(seq, torch.tensor(BETA), torch.tensor(THRESHOLD))
    x = seq.clone().requires_grad_()
    spikes, _ = _LIFSequence.apply(x, torch.tensor(BETA), torch.tensor(THRESHOLD), 1, True)
    spikes.sum().backward()  # the loop (or the C kernel) serves, and gives the loop's gradient
    assert torch.equal(x.grad, _lif_grad_loop(torch.ones_like(seq), _lif_loop(seq, torch.tensor(BETA),
                                                                               torch.tensor(THRESHOLD), 1)[1],
                                              torch.tensor(BETA), 1))


def _ptt_step(native: bool, compiled: bool = False) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Loss and gradients of one PTT MS-ResNet step (every neuron, forward and backward, the spikes
    kept packed for the convolutions), its neurons on the fused kernels or not."""
    torch.manual_seed(0)
    model = MSResNet((1, 1, 1, 1), in_channels=1, num_classes=5, channels=(8, 8, 16, 16))
    model, _ = compress_model(model, CompressConfig(RankSpec("fixed", (3, 3, 3)), mode="ptt", timesteps=2))  # type: ignore[arg-type]
    for module in model.modules():
        if isinstance(module, MultiStepLIF):
            module.native = native
    x = torch.randn(2, 4, 1, 12, 12, generator=torch.Generator().manual_seed(1))

    def loss_of(inputs: torch.Tensor) -> torch.Tensor:
        return run_timesteps(model, inputs, fold=True).mean(0).square().sum()

    if compiled:
        freeze_for_compile(model)
        loss_of = torch.compile(loss_of, backend="aot_eager", fullgraph=True)
    loss = loss_of(x)
    loss.backward()
    return loss.detach(), [p.grad for p in model.parameters() if p.grad is not None]


@pytest.mark.usefixtures("interpret", "one_thread")
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_a_training_step_through_the_kernels_equals_the_loops(compiled: bool) -> None:
    """Eager (the autograd node) and compiled (the custom op, `fullgraph=True`) give the loops' loss
    and gradients exactly."""
    torch._dynamo.reset()
    loss, grads = _ptt_step(True, compiled)
    reference_loss, reference_grads = _ptt_step(False)
    assert torch.equal(loss, reference_loss)
    assert len(grads) == len(reference_grads) and all(torch.equal(a, b) for a, b in zip(grads, reference_grads))


# --- built for the GPU --------------------------------------------------------------------------


@pytest.mark.parametrize("capability", [80, 90])
def test_the_kernels_compile_for_nvidia_gpus_without_fused_multiply_adds(capability: int) -> None:
    """Compiled here (no GPU needed) as `lif_triton` launches them: `enable_fp_fusion=False` must leave
    no FMA in the PTX, or the GPU's bits would differ from the loop's."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    kernels = lif_triton._kernels(False)
    assert kernels is not None
    forward = {"seq": "*fp32", "spikes": "*fp32", "state": "*u8", "beta_ptr": "*fp32", "threshold_ptr": "*fp32",
               "steps": "i32", "n": "i32", "width": "fp32"}
    backward = {"grad": "*fp32", "state": "*u8", "out": "*fp32", "beta_ptr": "*fp32", "steps": "i32", "n": "i32"}
    builds = [  # (kernel, argument types): float32, and the half precision --precision bf16 hands over
        (kernels.forward, forward), (kernels.forward, forward | {"seq": "*bf16", "spikes": "*bf16"}),
        (kernels.backward, backward), (kernels.backward, backward | {"grad": "*bf16"}),
        (kernels.spikes_of_state, {"state": "*u8", "spikes": "*fp32", "n": "i64"}),
    ]
    for kernel, signature in builds:
        for mechanism in (MECHANISMS if "MECHANISM" in kernel.arg_names else (None,)):
            constants = {"BLOCK": lif_triton.BLOCK} | ({} if mechanism is None else {"MECHANISM": mechanism})
            source = ASTSource(kernel, signature=signature | {name: "constexpr" for name in constants},
                               constexprs=constants)
            try:
                compiled = triton.compile(source, target=GPUTarget("cuda", capability, 32),
                                          options={"enable_fp_fusion": False, "num_warps": lif_triton.NUM_WARPS})
            except RuntimeError as exc:  # the wheel's ptxas cannot run on this machine
                if "ptxas" in str(exc):
                    pytest.skip(f"cannot assemble for the GPU here: {exc}")
                raise
            ptx = compiled.asm["ptx"]
            assert not re.search(r"\b(fma|mad)\.[a-z.]*f32", ptx), "a fused float multiply-add"  # integer ones may
            if mechanism is not None:
                assert re.search(r"\bmul\.rn\.f32", ptx), "the recurrence's float products, kept apart"
            assert compiled.asm.get("cubin")


# --- on a GPU -----------------------------------------------------------------------------------


@pytest.mark.cuda
@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_on_cuda_the_kernels_are_checked_used_and_give_the_loops_bits(mechanism: int) -> None:
    device = torch.device("cuda")
    seq = membranes((4 * 8, 32, 12, 12), seed=mechanism).to(device).contiguous(memory_format=torch.channels_last)
    seq = seq.unflatten(0, (4, 8))
    beta, threshold = torch.tensor(BETA, device=device), torch.tensor(THRESHOLD, device=device)
    assert fused._triton_applies(seq, beta, threshold), lif_triton.status()
    assert fused.fused_kernel(device) == "triton"
    grad = torch.randn(seq.shape, device=device)
    spikes, state = _lif_loop(seq, beta, threshold, mechanism)
    fast_spikes, fast_state = fused.lif_forward(seq, beta, threshold, mechanism, True)
    assert torch.equal(spikes, fast_spikes) and torch.equal(state, fast_state)
    assert torch.equal(_lif_grad_loop(grad, state, beta, mechanism), fused.lif_backward(grad, state, beta, mechanism, True))
    assert torch.equal(fused.spikes_of_state(state, torch.float32), spikes)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_on_cuda_the_neuron_reads_half_precision_and_matches_the_cast_path(dtype: torch.dtype) -> None:
    seq = (membranes((4 * 8, 32, 12, 12), seed=9) * 2).to("cuda", dtype).contiguous(memory_format=torch.channels_last)
    grad = torch.randn(seq.shape, device="cuda").to(dtype)
    results = spikes_and_grads([MultiStepLIF().cuda(), _with(MultiStepLIF(), one_node=False).cuda()], seq, grad)
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])


def test_a_run_can_say_which_kernel_computed_its_neurons(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    monkeypatch.setenv(lif_triton.ENV_SWITCH, "interpret")
    fused._triton_checked.clear()
    assert fused.fused_kernel(cpu) == "triton"
    monkeypatch.setenv(lif_triton.ENV_SWITCH, "1")
    assert fused.fused_kernel(cpu) in ("c", "pytorch loop (C kernel: no C compiler found (set CC))")
    monkeypatch.setenv("TTSNN_NATIVE", "0")
    assert fused.fused_kernel(cpu) == "pytorch loop (C kernel: switched off (TTSNN_NATIVE=0))"
    fused._triton_checked.clear()
