"""Less training memory for TT layers: recompute their inner cores in backward instead of saving them.

A dense conv saves only its input for backward. A TT layer saves its input too, and in addition the
first core's output A (r channels) and the last core's input (r channels): at the paper's ranks that
is up to 0.75 of an output-sized tensor more per layer, which cancels the parameter savings in
activation-dominated training steps (benchmarks/bench_training.py counts it). Under
`recomputing_tt(model)` each TTConv2d runs through `torch.utils.checkpoint` (non-reentrant): it saves
its input only and recomputes the cheap cores during backward. Values and gradients are unchanged.

The swap is of the layers' class, for the duration of the block only, so nothing is stored on the
modules (no closures, state_dict and pickling untouched).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ttsnn_cli.layers import TTConv2d


class _RecomputingTTConv2d(TTConv2d):
    """TTConv2d whose forward is checkpointed while gradients are recorded (never constructed)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # per-step HTT counts its calls: a recomputation would count twice, so it is left alone
        per_step_htt = self.mode == "htt" and self.folded_timesteps is None
        if torch.is_grad_enabled() and not per_step_htt:
            return checkpoint(TTConv2d.forward, self, x, use_reentrant=False)
        return TTConv2d.forward(self, x)


@contextlib.contextmanager
def recomputing_tt(model: nn.Module, enabled: bool = True) -> Iterator[None]:
    """Within the block, every TTConv2d of `model` recomputes its cores in backward."""
    swapped = [m for m in model.modules() if type(m) is TTConv2d] if enabled else []
    for module in swapped:
        module.__class__ = _RecomputingTTConv2d
    try:
        yield
    finally:
        for module in swapped:
            module.__class__ = TTConv2d
