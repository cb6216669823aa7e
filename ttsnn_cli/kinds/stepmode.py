"""TT layers that keep SpikingJelly's step mode, for the `layer.Conv2d` / `Conv1d` / `Linear` they replace.

Why: a SpikingJelly network in multi-step mode (`functional.set_step_mode(net, "m")`) calls its
`layer.Conv2d` once with [T, B, C, H, W]; the wrapper folds [T, B] into the batch around nn.Conv2d.
A plain TTConv2d swapped in at that name would see a 5-D input and fail, and `set_step_mode` would
no longer reach it. So the TT layer that replaces such a wrapper is the same TT class with
`StepModeTT` mixed in: it keeps `step_mode` ("s": as the TT class; "m": [T, B, ...] folded into the
batch, time-major, with the TT layer told T, which HTT needs), is a SpikingJelly `StepModule` when
SpikingJelly is loaded (so `set_step_mode` changes it without complaint), and records `step_mode` in
its bundle config. The TT class underneath is unchanged, so every kind hook (counts, export, NIR)
treats it as the class it extends: `isinstance(layer, TTConv2d)` holds.

The classes are made on demand, one per TT class (`step_mode_class`), and live in this module's
namespace under a fixed name (`StepModeTTConv2d`, ...), so a pickled compressed model finds its class
again (`__getattr__` below rebuilds it in a fresh process).
"""

from __future__ import annotations

import sys
from typing import Any

import torch
from torch import nn

from ttsnn_cli.spiking import spikingjelly
from ttsnn_cli.spiking.state import TimeAware

_PREFIX = "StepModeTT"
_CLASSES: dict[type[nn.Module], type[nn.Module]] = {}


class StepModeTT:
    """Mixed in before a TT class: SpikingJelly's step mode around the TT layer's forward."""

    _step_mode: str = "s"

    @property
    def step_mode(self) -> str:
        return self._step_mode

    @step_mode.setter
    def step_mode(self, value: str) -> None:
        if value not in ("s", "m"):
            raise ValueError(f'step_mode can only be "s" or "m", but got "{value}"')
        self._step_mode = value

    def supported_step_mode(self) -> tuple[str, ...]:
        return ("s", "m")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._step_mode != "m" or _linear_like(self):
            return super().forward(x)  # type: ignore[misc]  # a Linear takes any leading dims
        kernel = getattr(self, "kernel_size", (0, 0))
        spatial = len(kernel) if isinstance(kernel, (tuple, list)) else 1  # TTConv1d keeps an int
        if x.dim() != spatial + 3:  # as SpikingJelly's own layer refuses it, rather than a confusing conv error
            raise ValueError(f"step mode m expects x of shape [T, N, C, {', '.join('DHW'[-spatial:])}],"
                             f" but got x with shape {list(x.shape)}")
        steps, batch = x.shape[0], x.shape[1]
        folded = x.flatten(0, 1)
        if isinstance(self, TimeAware):
            previous = self.folded_timesteps
            self.folded_timesteps = steps
            try:
                y = super().forward(folded)  # type: ignore[misc]
            finally:
                self.folded_timesteps = previous
        else:
            y = super().forward(folded)  # type: ignore[misc]
        return y.unflatten(0, (steps, batch))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, step_mode={self._step_mode}"  # type: ignore[misc]


def _linear_like(layer: object) -> bool:
    """A TT layer over feature vectors (a TT-matrix Linear): it maps the last dim, whatever leads."""
    return hasattr(layer, "in_features") and not hasattr(layer, "kernel_size")


def step_mode_class(tt_class: type[nn.Module]) -> type[nn.Module]:
    """The step-mode TT class over `tt_class` (made once, named `StepModeTT<Class>` here)."""
    cls = _CLASSES.get(tt_class)
    if cls is not None:
        return cls
    bases: tuple[type, ...] = (StepModeTT, tt_class)
    step_module = spikingjelly._base_class("StepModule")  # noqa: SLF001 - the adapter's own lookup
    if step_module is not None:
        bases += (step_module,)
    name = _PREFIX + tt_class.__name__.removeprefix("TT")
    cls = type(name, bases, {"__module__": __name__, "__qualname__": name,
                             "__doc__": f"{tt_class.__name__} keeping SpikingJelly's step mode (see the module docstring)."})
    _CLASSES[tt_class] = cls
    setattr(sys.modules[__name__], name, cls)
    return cls


def keep_step_mode(layer: nn.Module, step_mode: str | None) -> nn.Module:
    """`layer` (a new TT layer) turned into its step-mode class with `step_mode`; unchanged for None.

    The class is swapped on the fresh instance, so its parameters and state stay as built."""
    if step_mode is None:
        return layer
    if not isinstance(layer, StepModeTT):
        layer.__class__ = step_mode_class(type(layer))
    layer.step_mode = step_mode  # type: ignore[assignment]
    return layer


def dense_step_mode(module: nn.Module) -> str | None:
    """The step mode of a dense SpikingJelly step wrapper (`layer.Conv2d` ...), None for anything else."""
    if spikingjelly.step_wrapper_base(module) is None:
        return None
    mode = getattr(module, "step_mode", None)
    return mode if mode in ("s", "m") else None


def layer_step_mode(layer: nn.Module) -> str | None:
    """The step mode a TT layer keeps (None for a plain TT layer): what its bundle config records."""
    return layer.step_mode if isinstance(layer, StepModeTT) else None


def __getattr__(name: str) -> Any:
    """`StepModeTTConv2d` & co. in a fresh process (unpickling a compressed model), made on demand."""
    package = sys.modules.get(__name__.rpartition(".")[0])  # loaded before this module: its registry names every TT class
    if name.startswith(_PREFIX) and package is not None:
        for kind in getattr(package, "KINDS", {}).values():
            if _PREFIX + kind.tt.__name__.removeprefix("TT") == name:
                return step_mode_class(kind.tt)
    raise AttributeError(name)


class FoldSteps(nn.Module):
    """An export replacement (an HTT step or a dense-folded conv) of a layer in step mode "m": the
    replacement computes on [N, ...], so [T, B, ...] is folded into the batch around it, as the layer did."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        steps, batch = x.shape[0], x.shape[1]
        return self.inner(x.flatten(0, 1)).unflatten(0, (steps, batch))


def fold_steps(replacement: nn.Module | None, layer: nn.Module) -> nn.Module | None:
    """`replacement` of `layer` in an export copy, folding time around it when `layer` runs in step
    mode "m" (a conv: a TT-matrix Linear takes any leading dims)."""
    if replacement is None or layer_step_mode(layer) != "m" or _linear_like(layer):
        return replacement
    return FoldSteps(replacement)
