"""Model -> accelerator workloads (`hw.LayerWorkload`), the bridge from torch to `hw/`.

Every Conv2d and Linear the model runs becomes one workload with the input size the hooks saw
(unpadded, with the layer's own padding and stride: hw's closed forms then see the real output
size). A TTConv2d becomes its four cores as the exact STT chain runs them (`hw.tt_cores`: 1x1
C->r1, kh x 1 with stride (s_h, 1), 1 x kw with stride (1, s_w), 1x1 r3->K), tagged with their
branch and grouped under the layer's name; `hw.simulate_schedules` derives the PTT and HTT views
(both middle cores reading the first core's output at the full stride, as our PTT layer does).
Spike inputs come from the profile (binary inputs); a TT layer's cores 2-4 take real values.
A Conv1d is a 1 x k conv on a 1 x L map; a TTConv1d its three cores (`hw.tt_conv1d_cores`); a
TT-matrix Linear its contraction steps as GEMMs (`hw.tt_matrix_steps`).
Dilation is not modelled by `hw` (a dilated layer is counted as undilated).
"""

from __future__ import annotations

from torch import nn

from hw import LayerWorkload, tt_conv1d_cores, tt_cores, tt_matrix_steps
from ttsnn_cli.layers.conv2d import TTConv2d, conv_padding
from ttsnn_cli.layers.conv1d import TTConv1d, conv1d_padding
from ttsnn_cli.layers.kinds import is_tt_layer
from ttsnn_cli.layers.linear import TTLinear
from ttsnn_cli.report.counting import Profile


def _pads(padding: tuple[int, int, int, int]) -> tuple[int, int]:
    left, _right, top, _bottom = padding
    return (top, left)


def model_workloads(model: nn.Module, profile: Profile) -> list[LayerWorkload]:
    """The model's workload list in execution order of definition (module order)."""
    out: list[LayerWorkload] = []
    leaves = profile.leaves
    for name, module in model.named_modules():
        if isinstance(module, TTConv2d):
            core1 = leaves.get(f"{name}.core1")
            if core1 is None or core1.in_hw is None:
                continue
            ih, iw = core1.in_hw
            kh, kw = module.kernel_size
            dense = LayerWorkload(name, ih, iw, kh, kw, module.in_channels, module.out_channels,
                                  stride=module.stride, padding=_pads(module.padding),
                                  spike_input=core1.binary)
            out.extend(tt_cores(dense, module.ranks))  # type: ignore[arg-type]
        elif isinstance(module, TTConv1d):
            core1 = leaves.get(f"{name}.core1")
            if core1 is None or core1.in_hw is None:
                continue
            dense = LayerWorkload(name, 1, core1.in_hw[1], 1, module.kernel_size, module.in_channels,
                                  module.out_channels, stride=(1, module.stride), padding=(0, module.padding[0]),
                                  spike_input=core1.binary)
            out.extend(tt_conv1d_cores(dense, module.ranks))  # type: ignore[arg-type]
        elif isinstance(module, TTLinear) and name in leaves and leaves[name].samples:
            out.extend(tt_matrix_steps(name, module.in_factors, module.out_factors, module.ranks,
                                       leaves[name].binary))
        elif isinstance(module, nn.Conv1d) and name in leaves and not _is_core(name, model):
            stats = leaves[name]
            if stats.in_hw is None:
                continue
            out.append(LayerWorkload(name, 1, stats.in_hw[1], 1, module.kernel_size[0],
                                     module.in_channels // module.groups, module.out_channels,
                                     stride=(1, module.stride[0]), padding=(0, conv1d_padding(module)[0]),
                                     spike_input=stats.binary))
        elif isinstance(module, nn.Conv2d) and name in leaves and not _is_core(name, model):
            stats = leaves[name]
            if stats.in_hw is None:
                continue
            ih, iw = stats.in_hw
            kh, kw = module.kernel_size
            out.append(LayerWorkload(name, ih, iw, kh, kw, module.in_channels // module.groups,
                                     module.out_channels, stride=module.stride,
                                     padding=_pads(conv_padding(module)), spike_input=stats.binary))
        elif isinstance(module, nn.Linear) and name in leaves and leaves[name].samples:
            out.append(LayerWorkload(name, 1, 1, 1, 1, module.in_features, module.out_features,
                                     kind="linear", spike_input=leaves[name].binary))
    return out


def _is_core(name: str, model: nn.Module) -> bool:
    parent = name.rpartition(".")[0]
    return bool(parent) and is_tt_layer(model.get_submodule(parent))


def with_spike_flags(layers: list[LayerWorkload], flags: dict[str, bool]) -> list[LayerWorkload]:
    """Workloads with ``spike_input`` set from another profile's flags (by layer / group name)."""
    from dataclasses import replace

    result = []
    for layer in layers:
        key = layer.group or layer.name
        if key in flags and layer.branch in ("dense", "tt_first"):
            layer = replace(layer, spike_input=flags[key])
        result.append(layer)
    return result
