"""Mixed precision for training and evaluation: one home for `--precision fp32|bf16|fp16`.

Why autocast and not a model cast: the weights, the optimiser's state and BatchNorm's statistics stay
float32 (a bf16 weight would swallow SGD's small updates); only the convolutions and matrix products
run in the lower precision, which is where a GPU's tensor cores pay. fp16 has a narrow exponent, so
its gradients are scaled up before backward and checked for overflow (a step that overflowed is
skipped and the scale lowered); bf16 has float32's exponent and needs no scaler. The neurons take
the dtype their input arrives in (spikes are exactly 0 or 1 in every precision; the compiled CPU
neuron only serves float32 and steps aside otherwise).
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

PRECISIONS = ("fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(name: str) -> str:
    """`name` if ttsnn trains in it; the message lists the choices otherwise (the caller raises)."""
    if name not in PRECISIONS:
        raise ValueError(f"--precision {name!r} is not one of {', '.join(PRECISIONS)}")
    return name


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """The autocast region for one forward (and its loss) in `precision` on `device`; fp32: nothing."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=_DTYPES[precision])


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """A loss scaler that is active only for fp16 (for fp32 and bf16 its calls pass straight through)."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")
