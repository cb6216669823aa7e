"""Training levers keep the plain path's values and gradients: spikes saved packed (`spiking.saved`), the
LIF as one autograd node, channels-last execution, sums into existing buffers; checked for dense training and every TT mode,
folded and per step."""

import pytest
import torch
from torch import nn

from ttsnn_cli.compress.decompose import CompressConfig, compress_model
from ttsnn_cli.layers.conv2d import TTConv2d
from ttsnn_cli.maths.ranks import parse_rank_spec
from ttsnn_cli.spiking import saved as saved_module
from ttsnn_cli.spiking.lif_sequence import spikes_of_state
from ttsnn_cli.spiking.neurons import MultiStepLIF
from ttsnn_cli.spiking.runner import run_timesteps
from ttsnn_cli.spiking.saved import packed_spikes
from ttsnn_cli.spiking.state import reset_states
from ttsnn_cli.train.layout import match_weights_to_activations, restore_weights
from ttsnn_cli.zoo.msresnet import MSBlock, MSResNet


def _saving(tensors: list[int]):
    def pack(t):
        tensors.append(t.numel() * t.element_size())
        return t

    return torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)


def test_packed_spikes_keep_bools_and_give_the_same_gradients():
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 5, 3, padding=1)
    spikes = (torch.rand(4, 6, 7, 7) > 0.6).float().requires_grad_()
    grads = []
    for enabled in (False, True):
        with packed_spikes(spikes, enabled=enabled):
            out = conv(spikes)
        grads.append(torch.autograd.grad((out * out).sum(), [conv.weight, conv.bias, spikes]))
    for plain, packed in zip(*grads):
        assert torch.equal(plain, packed)  # the unpacked tensor is bitwise the original


def test_packed_spikes_store_a_quarter_of_the_bytes():
    conv = nn.Conv2d(8, 4, 1, bias=False)
    spikes = (torch.rand(2, 8, 5, 5) > 0.5).float().requires_grad_()
    seen = []

    def pack(t):
        seen.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        conv(spikes)
    plain = sum(t.numel() * t.element_size() for t in seen if t.data_ptr() == spikes.data_ptr())
    with packed_spikes(spikes):  # the hooks packed_spikes installed are the innermost ones
        pack, unpack = torch._C._autograd._top_saved_tensors_default_hooks(False)
        packed = pack(spikes)
        assert packed.bits.dtype == torch.bool and torch.equal(unpack(packed), spikes)
        assert pack(conv.weight) is conv.weight  # anything else is kept as it is
    assert packed.bits.numel() * packed.bits.element_size() * 4 == plain


def test_spikes_read_by_a_conv_are_kept_as_the_neurons_own_state_byte():
    """The conv reading a one-node LIF's spikes keeps the LIF's state byte itself: one byte per neuron
    and step in all (spike and surrogate window), where a bool copy made it three; same gradients."""
    torch.manual_seed(1)
    lif, conv = MultiStepLIF(), nn.Conv2d(6, 5, 3, padding=1)
    x = (torch.randn(3 * 2, 6, 7, 7) + 0.4).requires_grad_()
    grads, stored = [], []
    for share in (False, True):
        seen: dict[int, int] = {}

        def pack(t, seen=seen):
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            spikes, state = lif(x, timesteps=3, with_state=True)
        assert state.dtype == torch.uint8 and torch.equal(spikes, spikes_of_state(state, torch.float32))
        with packed_spikes(spikes, state=state if share else None):
            pack_hook, _ = torch._C._autograd._top_saved_tensors_default_hooks(False)
            packed = pack_hook(spikes)
            seen[packed.bits.untyped_storage().data_ptr()] = packed.bits.untyped_storage().nbytes()
            out = conv(spikes)
        stored.append(sum(seen.values()))  # the LIF's state (and beta) plus the conv's copy
        grads.append(torch.autograd.grad((out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum(),
                                         [conv.weight, x]))
        assert (packed.bits is state) == share
    for plain, shared in zip(*grads):
        assert torch.equal(plain, shared)
    assert stored[0] - stored[1] == x.numel()  # the bool copy is gone
    assert 0 < spikes.sum() < spikes.numel()


def _count_packing(monkeypatch) -> list:
    """The shapes of the tensors packed from now on (a list that fills as the model runs)."""
    packed = []
    real = saved_module._Packed.__init__

    def counting(self, tensor, state=None):
        packed.append(tensor.shape)
        real(self, tensor, state)

    monkeypatch.setattr(saved_module._Packed, "__init__", counting)
    return packed


def _levers(model: nn.Module, on: bool) -> None:
    for m in model.modules():
        if isinstance(m, MultiStepLIF):
            m.one_node = on
        if isinstance(m, MSBlock):
            m.pack_spikes = on
        if isinstance(m, MSResNet):
            m.channels_last = on
        if isinstance(m, (MSBlock, TTConv2d)):
            m.sum_in_place = on


def _small_msresnet(mode: str | None) -> MSResNet:
    torch.manual_seed(0)
    model = MSResNet((1, 1, 1, 1), in_channels=3, num_classes=5, channels=(16, 16, 32, 32))
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 1.0)  # livelier spikes at random init: both cases exercised
    if mode is None:
        return model.train()
    config = CompressConfig(ranks=parse_rank_spec(4, None), mode=mode, include=[r"conv[12]$"], timesteps=4)
    model, _ = compress_model(model, config)
    return model.train()


def _gradients(model: nn.Module, x: torch.Tensor, per_step: bool) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    if per_step:
        reset_states(model)
        out = torch.stack([model.forward_step(x[t]) for t in range(x.shape[0])])
    else:
        out = run_timesteps(model, x)
    weights = torch.linspace(-1, 1, out.numel()).view_as(out)
    (out * weights).sum().backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("mode, per_step", [(None, False), (None, True), ("stt", False), ("ptt", False),
                                            ("htt", False), ("htt", True)])
def test_levers_give_the_plain_paths_gradients(mode, per_step, monkeypatch):
    model = _small_msresnet(mode)
    x = torch.rand(4, 2, 3, 8, 8) * 2
    _levers(model, False)
    plain = _gradients(model, x, per_step)
    _levers(model, True)
    relaid = match_weights_to_activations(model)  # what training does (train.layout)
    assert relaid or mode is not None  # rank-4 cores read too few channels to run channels-last
    assert all(w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous() for w in relaid)
    fast = _gradients(model, x, per_step)
    restore_weights(relaid)
    assert all(w.is_contiguous() for w in relaid)
    assert plain.keys() == fast.keys() and len(plain) == len(list(model.parameters()))
    for name in plain:  # float tolerance: channels-last convolutions sum in another order
        scale = plain[name].abs().max().clamp_min(1e-6)
        assert (plain[name] - fast[name]).abs().max() <= 1e-4 * scale, name
    assert any(plain[n].abs().sum() > 0 for n in plain if "layer4" in n)  # spikes reach the last stage

    packed = _count_packing(monkeypatch)
    _gradients(model, x, per_step)
    convs_reading_spikes = 2 * sum(isinstance(m, MSBlock) for m in model.modules())
    assert len(packed) == convs_reading_spikes * (x.shape[0] if per_step else 1)


@pytest.mark.parametrize("mode, per_step", [("stt", False), ("ptt", False), ("htt", False), ("htt", True)])
def test_recomputing_the_last_core_for_batchnorm_gives_the_same_step(mode, per_step):
    """--recompute-tt in an MS-ResNet block: gradients and BatchNorm running statistics unchanged,
    less kept for backward. In float64: BatchNorm over two samples of a 1x1 map (the last stage
    here) divides by a variance of two values, which magnifies float32 rounding past any fixed
    tolerance; float64 shows the two paths compute the same function."""
    from ttsnn_cli.train.memory import recomputing_tt

    model = _small_msresnet(mode).double()
    x = torch.rand(4, 2, 3, 8, 8, dtype=torch.float64) * 2
    _levers(model, False)  # outside the mode nothing repacks what is saved; inside it packs spikes too
    results = []
    for recompute in (False, True):
        state = {k: v.clone() for k, v in model.state_dict().items()}
        sizes: list[int] = []
        with recomputing_tt(model, enabled=recompute), _saving(sizes):
            grads = _gradients(model, x, per_step)
        results.append((grads, {k: v.clone() for k, v in model.state_dict().items()}, sum(sizes)))
        model.load_state_dict(state)
    (plain, plain_state, plain_bytes), (again, again_state, again_bytes) = results
    for name in plain:
        scale = plain[name].abs().max().clamp_min(1e-6)
        assert (plain[name] - again[name]).abs().max() <= 1e-10 * scale, name
    for name in plain_state:
        assert torch.allclose(plain_state[name].double(), again_state[name].double(), rtol=1e-10, atol=1e-12), name
    assert again_bytes < plain_bytes


def test_spikes_are_packed_only_in_the_memory_saving_mode(monkeypatch):
    """Packing costs time (decoding in backward), so the defaults, the fastest settings, keep float
    spikes; --recompute-tt (`recomputing_tt`) packs them for the block and puts every flag back."""
    from ttsnn_cli.layers.conv2d import TTConv2d
    from ttsnn_cli.train.memory import recomputing_tt

    model = _small_msresnet("ptt")
    blocks = [m for m in model.modules() if isinstance(m, MSBlock)]
    layers = [m for m in model.modules() if isinstance(m, TTConv2d)]
    x = torch.rand(4, 2, 3, 8, 8) * 2
    packed = _count_packing(monkeypatch)
    plain = _gradients(model, x, per_step=False)
    assert packed == [] and not any(b.pack_spikes for b in blocks) and not any(t.recompute for t in layers)
    blocks[0].pack_spikes = False  # a setting of the user's own is restored, not dropped
    with recomputing_tt(model):
        assert all(b.pack_spikes for b in blocks) and all(t.recompute for t in layers)
        again = _gradients(model, x, per_step=False)
    assert len(packed) == 2 * len(blocks)
    assert blocks[0].__dict__["pack_spikes"] is False and "pack_spikes" not in blocks[1].__dict__
    assert not any(t.recompute for t in layers)
    for name in plain:
        scale = plain[name].abs().max().clamp_min(1e-6)
        assert (plain[name] - again[name]).abs().max() <= 1e-5 * scale, name
