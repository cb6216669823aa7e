"""Running what snntorch's NIR importer builds, shared by the tests that read ttsnn's graphs with it."""

from __future__ import annotations

import torch

from ttsnn_cli.spiking.state import reset_states


def run_unbatched(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """`net` (state passed in and out, as the importer's graph runs) over x [T, B, ...], one sample at a
    time from a reset state: NIR's shapes exclude the batch. Returns [T, B, ...]."""
    outputs = []
    with torch.no_grad():
        for b in range(x.shape[1]):
            reset_states(net)
            state, steps = None, []
            for t in range(x.shape[0]):
                y, state = net(x[t, b], state)
                steps.append(y)
            outputs.append(torch.stack(steps))
    return torch.stack(outputs, dim=1)
