"""Model -> accelerator workloads (`hw.LayerWorkload`), the bridge from torch to `hw/`.

Every Conv2d and Linear the model runs becomes one workload with the input size the hooks saw
(unpadded, with the layer's own padding and stride: hw's closed forms then see the real output
size). A TTConv2d becomes its four cores as the exact STT chain runs them (`hw.tt_cores`: 1x1
C->r1, kh x 1 with stride (s_h, 1), 1 x kw with stride (1, s_w), 1x1 r3->K), tagged with their
branch and grouped under the layer's name; `hw.simulate_schedules` derives the PTT and HTT views
(both middle cores reading the first core's output at the full stride, as our PTT layer does).
Spike inputs come from the profile (binary inputs); a TT layer's cores 2-4 take real values.
A Conv1d is a 1 x k conv on a 1 x L map; a TTConv1d its three cores (`hw.tt_conv1d_cores`); a
TT-matrix Linear its contraction steps as GEMMs (`hw.tt_matrix_steps`); a grouped TT conv its four
grouped cores. Each layer type's workloads are its kind's (`ttsnn_cli.kinds`).
Dilation is not modelled by `hw` (a dilated layer is counted as undilated).
"""

from __future__ import annotations

from torch import nn

from hw import LayerWorkload
from ttsnn_cli.kinds import is_tt_layer, kind_of
from ttsnn_cli.report.counting import Profile


def model_workloads(model: nn.Module, profile: Profile) -> list[LayerWorkload]:
    """The model's workload list in execution order of definition (module order): each dense layer
    or TT layer asks its kind (`LayerKind.workloads`); a TT layer's cores are the layer's, not their own."""
    out: list[LayerWorkload] = []
    for name, module in model.named_modules():
        kind = kind_of(module, exact=False)
        if kind is None or _is_core(name, model):
            continue
        out.extend(kind.workloads(name, module, profile.leaves))
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
