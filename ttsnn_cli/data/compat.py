"""Whether a model can eat a dataset: one sample through it before any work is done.

Every job that feeds a dataset to a model (train, fine-tune, sensitivity calibration, sweep) asks
this first, so a mismatch is one line of bad input (exit 3) instead of an error deep in an epoch.
"""

from __future__ import annotations

import torch
from torch import nn

from ttsnn_cli.data import DataBundle, encode
from ttsnn_cli.errors import BadInputError, UserCodeError
from ttsnn_cli.spiking.runner import run_timesteps


def check_compatible(model: nn.Module, data: DataBundle, timesteps: int, spec: str) -> None:
    """One sample through the model (eval, no grad): a model that cannot eat the data is bad input."""
    x, _ = data.test[0] if len(data.test) else data.train[0]
    inputs = encode(x.unsqueeze(0), timesteps, "direct", data.temporal)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = run_timesteps(model, inputs)
    except (RuntimeError, ValueError, UserCodeError) as error:
        cause = error.cause if isinstance(error, UserCodeError) else error
        if not isinstance(cause, (RuntimeError, ValueError)):
            raise  # not a shape mismatch: the runner's message names the user's code and what it did
        first = (str(cause).splitlines() or [""])[0][:200]
        raise BadInputError(f"the model cannot consume --data {spec} (frames {list(data.input_shape)}): {first}") from None
    finally:
        model.train(was_training)
    if out.shape[-1] != data.num_classes:
        raise BadInputError(
            f"the model has {out.shape[-1]} outputs but --data {spec} has {data.num_classes} classes"
            " (set num_classes in --arch-kwargs)"
        )
