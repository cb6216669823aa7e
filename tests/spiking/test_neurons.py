"""The paper's LIF as snntorch neurons (the TT-SNN paper, Architecture) and the multistep wrapper."""

import pickle

import pytest
import torch

from ttsnn_cli.spiking.neurons import MultiStepLIF, paper_lif, rectangular
from ttsnn_cli.spiking.state import reset_states, time_folded


def reference_lif(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """u_t = 0.25 u_{t-1} (1 - s_{t-1}) + x_t, s_t = [u_t > 0.5]; x [T, ...]."""
    u = torch.zeros_like(x[0])
    s = torch.zeros_like(x[0])
    spikes, mems = [], []
    for t in range(x.shape[0]):
        u = 0.25 * u * (1 - s) + x[t]
        s = (u > 0.5).float()
        spikes.append(s)
        mems.append(u)
    return torch.stack(spikes), torch.stack(mems)


def test_snntorch_zero_reset_is_the_paper_equation():
    torch.manual_seed(0)
    x = torch.rand(12, 5, 7) * 0.9
    lif = paper_lif()
    mem = torch.zeros_like(x[0])
    spikes, mems = [], []
    for t in range(x.shape[0]):
        spk, mem = lif(x[t], mem)
        spikes.append(spk)
        mems.append(mem)
    want_s, want_u = reference_lif(x)
    assert torch.equal(torch.stack(spikes), want_s)
    assert torch.allclose(torch.stack(mems), want_u)
    assert want_s.sum() > 0 and want_s.sum() < want_s.numel()  # the test exercises both cases


def test_rectangular_surrogate_gradient():
    u = torch.tensor([-0.6, -0.49, -0.1, 0.0, 0.2, 0.49, 0.51, 1.0], requires_grad=True)
    s = rectangular(u)
    assert torch.equal(s, (u > 0).float())
    s.sum().backward()
    assert torch.equal(u.grad, torch.tensor([0.0, 1, 1, 1, 1, 1, 0, 0]))


def test_neurons_pickle_without_closures():
    lif = paper_lif()
    clone = pickle.loads(pickle.dumps(MultiStepLIF(lif)))
    assert clone.lif.spike_grad is rectangular
    assert set(lif.state_dict()) == {"beta", "threshold", "graded_spikes_factor", "reset_mechanism_val"}


def test_multistep_layouts_agree():
    torch.manual_seed(1)
    x = torch.rand(4, 3, 2, 5)
    want, _ = reference_lif(x)
    m = MultiStepLIF()
    assert torch.equal(m(x, sequence=True), want)
    assert torch.equal(m(x.flatten(0, 1), timesteps=4).unflatten(0, (4, 3)), want)
    with time_folded(m, 4):
        assert torch.equal(m(x.flatten(0, 1)).unflatten(0, (4, 3)), want)
    reset_states(m)
    per_step = torch.stack([m(x[t]) for t in range(4)])  # no T known: membrane kept between calls
    assert torch.equal(per_step, want)
    reset_states(m)
    assert torch.equal(m(x[0]), want[0])


def test_multistep_gradient_flows_through_time():
    x = (torch.rand(4, 2, 3) * 0.8).requires_grad_()
    MultiStepLIF()(x, sequence=True).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def _snntorch_loop(lif, x):
    mem = torch.zeros_like(x[0])
    out = []
    for t in range(x.shape[0]):
        spk, mem = lif(x[t], mem)
        out.append(spk)
    return torch.stack(out)


@pytest.mark.parametrize("mechanism", ["zero", "subtract", "none"])
def test_fused_loop_is_bitwise_snntorch(mechanism):
    """The fused multistep loop equals calling snntorch's Leaky step by step, values and gradients."""
    from snntorch import Leaky

    torch.manual_seed(2)
    x = (torch.randn(6, 4, 3, 5) * 0.6 + 0.3).requires_grad_()
    lif = Leaky(beta=0.25, threshold=0.5, reset_mechanism=mechanism, spike_grad=rectangular)
    wrapper = MultiStepLIF(lif)
    assert wrapper._fused()
    fused = wrapper(x, sequence=True)
    (gx_fused,) = torch.autograd.grad((fused * torch.arange(6.0).view(6, 1, 1, 1)).sum(), x)
    reference = _snntorch_loop(lif, x)
    (gx_ref,) = torch.autograd.grad((reference * torch.arange(6.0).view(6, 1, 1, 1)).sum(), x)
    assert torch.equal(fused, reference)
    assert torch.equal(gx_fused, gx_ref)
    assert gx_ref.abs().sum() > 0


def test_other_neurons_use_snntorch_itself():
    from snntorch import Leaky, surrogate

    wrapper = MultiStepLIF(Leaky(beta=0.5, spike_grad=surrogate.fast_sigmoid()))
    assert not wrapper._fused()
    x = torch.rand(3, 2, 4)
    assert torch.equal(wrapper(x, sequence=True), _snntorch_loop(wrapper.lif, x))


def test_one_node_lif_saves_one_byte_and_keeps_the_memory_format():
    """The fused loop as one autograd node: bitwise the op-by-op loop, bools saved, channels-last kept."""
    torch.manual_seed(3)
    x = (torch.randn(4 * 2, 3, 5, 5) * 0.6 + 0.3).contiguous(memory_format=torch.channels_last).requires_grad_()
    m = MultiStepLIF()
    grads, outs, saved = [], [], []
    for one_node in (False, True):
        m.one_node = one_node
        dtypes = []

        def pack(t, dtypes=dtypes):
            dtypes.append(t.dtype)
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = m(x, timesteps=4)
        outs.append(out)
        saved.append(dtypes)
        grads.append(torch.autograd.grad((out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum(), x)[0])
    assert torch.equal(outs[0], outs[1]) and torch.equal(grads[0], grads[1])
    assert outs[1].is_contiguous(memory_format=torch.channels_last)
    assert set(saved[1]) <= {torch.uint8, torch.float32} and saved[1].count(torch.float32) <= 1  # beta only
    assert saved[1].count(torch.uint8) == 1  # spike and surrogate window in one byte per neuron
    assert m.binary_output() and 0 < outs[1].sum() < outs[1].numel()


@pytest.mark.parametrize("native", [False, True])
def test_one_node_lif_backward_makes_no_zero_gradient_for_its_state(native):
    """The state byte is not differentiable: autograd would otherwise fill a tensor of zeros the
    size of the state for it before every backward of the neuron, only for it to be ignored."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class FilledTensors(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.shapes: list[tuple[int, ...]] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func.__name__.split(".")[0] in ("zeros", "zeros_like", "fill_", "zero_", "new_zeros") \
                    and isinstance(out, torch.Tensor):
                self.shapes.append(tuple(out.shape))
            return out

    x = (torch.randn(4 * 2, 3, 5, 5) + 0.3).requires_grad_()
    m = MultiStepLIF()
    m.native = native
    spikes, state = m(x, timesteps=4, with_state=True)
    assert state is not None
    filled = FilledTensors()
    with filled:
        spikes.sum().backward()
    assert tuple(state.unflatten(0, (4, -1)).shape) not in filled.shapes
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("native", [False, True])
def test_one_node_lif_backward_with_no_gradient_for_its_spikes(native):
    """An op after the neuron may return no gradient for the spikes; autograd still runs the
    neuron's backward, now with None (it no longer zero-fills one), and x gets only its other path's."""

    class NoGradient(torch.autograd.Function):
        @staticmethod
        def forward(ctx, spikes):
            return spikes * 1

        @staticmethod
        def backward(ctx, grad):
            return None

    x = (torch.randn(4 * 2, 3, 5, 5) + 0.3).requires_grad_()
    m = MultiStepLIF()
    m.native = native
    spikes = m(x, timesteps=4)
    (NoGradient.apply(spikes).sum() + x.sum()).backward()
    assert torch.equal(x.grad, torch.ones_like(x))


def test_a_graded_factor_set_after_the_first_step_is_seen() -> None:
    """`_plain_factor` is remembered between steps (a host read per neuron per step on CUDA), so any
    write to the factor must be seen: in place, by load_state_dict, or a new tensor."""
    lif = MultiStepLIF()
    x = torch.randn(4 * 3, 5) + 0.5
    plain = lif(x, timesteps=4)
    assert lif.binary_output()
    with torch.no_grad():
        lif.lif.graded_spikes_factor.fill_(2.0)
    assert not lif.binary_output()
    assert torch.equal(lif(x, timesteps=4), plain * 2)
    lif.load_state_dict({**lif.state_dict(), "lif.graded_spikes_factor": torch.tensor(1.0)})
    assert lif.binary_output() and torch.equal(lif(x, timesteps=4), plain)
    lif.lif.graded_spikes_factor = torch.tensor(3.0)
    assert torch.equal(lif(x, timesteps=4), plain * 3)
