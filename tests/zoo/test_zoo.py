"""Zoo models: shapes, the paper's MS-ResNet structure and weight counts (the TT-SNN paper)."""

import torch
from torch import nn

from ttsnn_cli.spiking.neurons import MultiStepLIF
from ttsnn_cli.spiking.runner import run_timesteps
from ttsnn_cli.spiking.state import reset_states, time_folded
from ttsnn_cli.zoo import zoo_entry, zoo_names


def weights(model: nn.Module) -> int:
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))


def test_registered():
    assert {"digits_csnn", "ms_resnet18", "ms_resnet34"} <= set(zoo_names())


def test_msresnet34_ncaltech_weight_count():
    model = zoo_entry("ms_resnet34").factory(in_channels=2, num_classes=101)
    assert weights(model) == 21_311_104  # the TT-SNN paper, derived count


def test_msresnet18_cifar_weight_count_and_structure():
    model = zoo_entry("ms_resnet18").factory()
    assert weights(model) == 11_164_352
    names = dict(model.named_modules())
    assert isinstance(names["stem.conv"], nn.Conv2d) and names["stem.conv"].stride == (1, 1)
    residual = [n for n, m in names.items() if n.endswith(("conv1", "conv2")) and isinstance(m, nn.Conv2d)]
    assert len(residual) == 16 and all(names[n].kernel_size == (3, 3) for n in residual)
    assert [names[f"layer{i}.0.conv1"].stride for i in range(1, 5)] == [(1, 1), (2, 2), (2, 2), (2, 2)]
    assert names["layer2.0.shortcut.conv"].kernel_size == (1, 1)
    assert torch.all(names["layer1.0.bn1"].weight == 0.5) and torch.all(names["layer1.0.bn2"].weight == 0.1)
    assert torch.all(names["stem.bn"].weight == 0.5) and torch.all(names["layer2.0.shortcut.bn"].weight == 0.5)
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    assert model.multistep is True


def test_msresnet_forward_folded_equals_per_step_in_eval():
    torch.manual_seed(0)
    model = zoo_entry("ms_resnet18").factory(num_classes=7).eval()
    x = torch.rand(3, 2, 3, 16, 16)
    with torch.no_grad():
        out = run_timesteps(model, x)
        reset_states(model)
        steps = torch.stack([model.forward_step(x[t]) for t in range(3)])
    assert out.shape == (3, 2, 7)
    assert torch.allclose(out, steps, atol=1e-5)


def test_digits_csnn_shape_and_neurons():
    model = zoo_entry("digits_csnn").factory()
    out = run_timesteps(model, torch.rand(4, 5, 1, 16, 16))
    assert out.shape == (4, 5, 10)
    assert sum(isinstance(m, MultiStepLIF) for m in model.modules()) == 4
    convs = [m for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and n != "stem.conv"]
    assert sum(c.weight.numel() for c in convs) > 0.9 * weights(model)
    assert zoo_entry("digits_csnn").input_shape({}) == (1, 16, 16)


def test_msblock_adds_its_shortcut_in_place_unless_a_hook_holds_the_batchnorms_output():
    from ttsnn_cli.zoo.msresnet import MSBlock

    torch.manual_seed(0)
    block = MSBlock(4, 4, 1).train()
    x = torch.randn(2 * 3, 4, 5, 5) * 2
    with time_folded(block, 2):
        expected = block.bn2(block.conv2(block.lif2(block.bn1(block.conv1(block.lif1(x)))))) + x
        plain = block(x)
        kept = []
        block.bn2.register_forward_hook(lambda module, args, out: kept.append((out, out.clone())))
        hooked = block(x)
    assert torch.allclose(plain, expected, atol=1e-6) and torch.allclose(hooked, expected, atol=1e-6)
    held, seen = kept[0]
    assert torch.equal(held, seen) and not torch.equal(held, hooked)
