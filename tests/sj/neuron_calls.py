"""Recording every neuron's output while a network runs, shared by the SpikingJelly tests that compare
spikes neuron by neuron (imports no SpikingJelly: it works on any network ttsnn runs)."""

from __future__ import annotations

import torch
from torch import nn

from ttsnn_cli.layers.hooks import watching
from ttsnn_cli.spiking.runner import run_timesteps
from ttsnn_cli.spiking.state import is_neuron


def neuron_calls(net: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[tuple[str, torch.Tensor]]]:
    """`net`'s output over x and each neuron's output per call, as (module name, output) in call order:
    a multi-step neuron is called once for the sequence, a single-step one once per step. The hooks are
    removed again whatever happens, so the network is left as it came."""
    record: list[tuple[str, torch.Tensor]] = []
    hooks = [(module, lambda _m, _i, out, name=name: record.append((name, out.detach().clone())))
             for name, module in net.named_modules() if is_neuron(module)]
    with watching(hooks), torch.no_grad():
        y = run_timesteps(net.eval(), x)
    return y, record
