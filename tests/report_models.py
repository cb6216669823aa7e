"""Helpers for the report tests: TT models built in memory (no TT-SVD: counts depend only on shapes
and ranks), with the paper's ranks (the TT-SNN paper, "Rank selection")."""

from __future__ import annotations

from torch import nn

from ttsnn_cli.layers.conv2d import TTConv2d, conv_padding
from ttsnn_cli.storage.bundle import ModelIO, get_meta
from ttsnn_cli.storage.trust import build_arch

R34_RANKS = [int(r) for r in (
    "24,23,22,17,16,12,22,31,25,25,24,21,20,19,48,79,64,69,63,69,60,65,63,63,62,58,121,170,173,147,161,108"
).split(",")]
R18_RANKS = [int(r) for r in "24,27,25,29,37,45,43,41,65,74,70,63,104,153,186,145".split(",")]


def block_convs(model: nn.Module) -> list[str]:
    """Every 3x3 conv but the stem (the residual convs of the MS-ResNets, conv1..3 of digits_csnn)."""
    return [n for n, m in model.named_modules()
            if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3) and not n.startswith("stem")]


def dense_model(name: str, **kwargs) -> nn.Module:
    arch = f"zoo:{name}"
    model = build_arch(arch, kwargs)
    meta = get_meta(model)
    meta.arch, meta.arch_kwargs = arch, dict(kwargs)
    return model


def tt_model(name: str, ranks: list[int], mode: str = "stt", timesteps: int = 4,
             input_shape: tuple[int, ...] | None = None, **kwargs) -> nn.Module:
    """The zoo model with every residual 3x3 conv swapped for an (untrained) TT layer of rank r."""
    model = dense_model(name, **kwargs)
    names = block_convs(model)
    assert len(names) == len(ranks), (len(names), len(ranks))
    for layer, r in zip(names, ranks):
        conv = model.get_submodule(layer)
        model.set_submodule(layer, TTConv2d(conv.in_channels, conv.out_channels, conv.kernel_size, (r, r, r), mode,
                                            conv.stride, conv_padding(conv), conv.dilation, conv.bias is not None,
                                            timesteps=timesteps))
    get_meta(model).io = ModelIO(input_shape, timesteps, None)
    return model


def r34(mode: str = "stt") -> nn.Module:
    return tt_model("ms_resnet34", R34_RANKS, mode, 6, (2, 48, 48), in_channels=2, num_classes=101)


def r18(mode: str = "stt") -> nn.Module:
    return tt_model("ms_resnet18", R18_RANKS, mode, 4, (3, 32, 32), in_channels=3, num_classes=10)
