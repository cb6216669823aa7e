"""`LayerKind`: the hooks one TT layer type answers, so that nothing outside `kinds/` names layer classes.

A kind covers a dense layer type and its TT replacement (e.g. nn.Conv2d and TTConv2d). Each hook is
documented here once, with why it exists; the kind modules implement them. Consumers (compress,
report, export) ask `kinds.kind_of(module)` and call the hook, so adding a layer type is one kind
module and one registry line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ttsnn_cli.maths.ranks import RankSpec, ResolvedRanks
from ttsnn_cli.maths.tt import relative_error
from ttsnn_cli.spiking import spikingjelly


@dataclass
class LeafCall:
    """What one forward call of a leaf (a module that computes its own MACs) costs and sees.

    ``items``: input vectors / maps it processed; ``macs``: multiply-accumulates of the call;
    ``inner_macs``: those on real-valued intermediates inside the leaf (a TT-matrix's later steps);
    ``in_hw`` / ``out_hw``: spatial sizes (a Conv1d's length L as 1 x L, a Linear as 1 x 1)."""

    items: int
    macs: int
    inner_macs: int
    in_hw: tuple[int, int]
    out_hw: tuple[int, int]


def spatial(t: torch.Tensor) -> tuple[int, int]:
    """The spatial size of a conv input/output: (H, W), or (1, L) for a Conv1d."""
    return (int(t.shape[-2]), int(t.shape[-1])) if t.dim() == 4 else (1, int(t.shape[-1]))


def conv_window(conv: nn.Conv1d | nn.Conv2d) -> int:
    """MACs per output value of a dense conv: Cin/groups x prod(kernel)."""
    return (conv.in_channels // conv.groups) * math.prod(conv.kernel_size)


def params_of(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class LayerKind:
    """One TT layer type. Class attributes say what it is; methods are the type-specific hooks."""

    #: the `--layer-types` name and the `type` a bundle records for the TT layer
    name: str = ""
    #: the compress report's `type` for a decomposed layer (the dense class users know)
    label: str = ""
    #: the dense class (matched exactly when choosing what to decompose) and the TT class
    dense: type[nn.Module] = nn.Module
    tt: type[nn.Module] = nn.Module
    #: the TT layer is built of child convs (`core1`, ...) that count as leaves, not a leaf itself
    has_cores: bool = True
    #: what a global rank method (budget, uniform, sensitivity, fisher, recovery) can allocate this kind's ranks
    #: under (`--budget-on`): those layers share one budget; under other budgets, or for kinds with
    #: none, each layer takes the per-layer rule of the same method
    budget_units: tuple[str, ...] = ()
    #: the TT layer's mode is a real choice (a TT-matrix runs one chain in every mode)
    mode_applies: bool = True
    #: the TT layer has the `recompute` runtime switch of `--recompute-tt`
    recomputes: bool = False
    #: the TT layer has the `kernel_path` runtime switch: it can run as one conv of its rebuilt kernel
    rebuilds: bool = False
    #: NIR export folds a BatchNorm that directly follows the layer into its last node
    folds_batchnorm: bool = True

    # ------------------------------------------------------------------------------ which modules
    def owns_dense(self, module: nn.Module, exact: bool = True) -> bool:
        """A dense layer of this kind. `exact` (choosing what to decompose) refuses subclasses, whose
        forward may do more than the class they extend; counting and export take them too. SpikingJelly's
        `layer.Conv2d` / `Conv1d` / `Linear` are the exception: they add only a step mode, which the TT
        layer replacing one keeps (`kinds.stepmode`)."""
        if not exact:
            return isinstance(module, self.dense)
        return type(module) is self.dense or spikingjelly.step_wrapper_base(module) is self.dense

    def owns_tt(self, module: nn.Module) -> bool:
        """A TT layer of this kind."""
        return isinstance(module, self.tt)

    def is_leaf(self, module: nn.Module) -> bool:
        """Whether forward hooks measure this module itself (dense layers, TT layers without cores)."""
        return not (self.owns_tt(module) and self.has_cores)

    # ------------------------------------------------------------------------------ eligibility
    def unselected_reason(self, module: nn.Module, layer_types: tuple[str, ...]) -> str:
        """Why a layer of this kind stays dense when its name is not in `--layer-types`."""
        return f"{type(module).__name__}: not in --layer-types ({','.join(layer_types)}), stays dense"

    def skip_reason(self, module: nn.Module) -> str | None:
        """Why this dense layer's shape cannot (usefully) become TT cores, or None when it can."""
        return None

    def mode_refusal(self, mode: str) -> str | None:
        """The one-line tail refusing `--mode` for this kind (e.g. PTT on a Conv1d), or None."""
        return None

    # ------------------------------------------------------------------------------ ranks
    def resolve_ranks(self, module: nn.Module, spec: RankSpec, override: Any, mode: str, linear_cores: int,
                      shared: ResolvedRanks | None) -> ResolvedRanks:
        """The effective ranks of one layer: a per-layer `override`, the `shared` global allocation
        (for `global_budget` kinds), else `spec` on this layer's own TT unfoldings, capped."""
        raise NotImplementedError

    def core_weights(self, module: nn.Module, ranks: tuple[int, ...], linear_cores: int) -> int:
        """Weights the TT cores hold at `ranks` (bias excluded): what growth is judged on."""
        raise NotImplementedError

    def allocates(self, budget_on: str) -> bool:
        """Whether a global rank method allocates this kind's layers under a budget on `budget_on`."""
        return budget_on in self.budget_units

    def tt_tensor(self, module: nn.Module, linear_cores: int) -> torch.Tensor:
        """The tensor whose TT-SVD gives this layer's cores, modes in core order: what the global
        allocators read spectra from (`maths.ranks.ErrorProfile`) and count weights of
        (`maths.tt.tensor_tt_params` equals `core_weights`)."""
        raise NotImplementedError

    def rank_caps(self, module: nn.Module, linear_cores: int) -> tuple[int, ...]:
        """The largest meaningful rank of each bond (the TT tensor's unfolding sizes)."""
        from ttsnn_cli.maths.tt import unfolding_caps

        return unfolding_caps(tuple(self.tt_tensor(module, linear_cores).shape))

    def equal_ranks(self, mode: str) -> bool:
        """Whether this layer in `mode` needs one rank on every bond (PTT/HTT crosses)."""
        return mode != "stt"

    def growth_reason(self, module: nn.Module, ranks: tuple[int, ...], linear_cores: int) -> str | None:
        """The skip reason when the cores at `ranks` hold no fewer weights than the dense layer: one
        rule and one message for every kind, so a Conv2d, a Conv1d and a Linear are judged alike."""
        before, after = module.weight.numel(), self.core_weights(module, ranks, linear_cores)  # type: ignore[union-attr]
        if after < before:
            return None
        return (f"would grow {before:,} -> {after:,} weights at ranks {','.join(map(str, ranks))}: stays dense "
                "(lower its ranks under compress.layers, or pass --allow-growth to decompose it)")

    def grows(self, module: nn.Module, ranks: tuple[int, ...], linear_cores: int, allow: bool) -> str | None:
        """Compress never makes a layer larger unless `--allow-growth`: the same rule for every kind."""
        return None if allow else self.growth_reason(module, ranks, linear_cores)

    # ------------------------------------------------------------------------------ decomposition
    def build(self, module: nn.Module, ranks: tuple[int, ...], mode: str, timesteps: int | None, svd: str,
              linear_cores: int) -> nn.Module:
        """The TT layer of a dense one (TT-SVD in float64, stored in the layer's dtype)."""
        raise NotImplementedError

    def effective_weight(self, layer: nn.Module) -> torch.Tensor:
        """The dense weight a TT layer's full path computes, float64 (its relative error's operand)."""
        return layer.effective_kernel()  # type: ignore[operator]

    def note(self, module: nn.Module, mode: str, linear_cores: int) -> str | None:
        """What the compress report adds about this layer's decomposition."""
        return None

    def decompose(self, module: nn.Module, ranks: tuple[int, ...], mode: str, timesteps: int | None, svd: str,
                  linear_cores: int) -> tuple[nn.Module, float, str | None]:
        """The TT layer, its relative error against the dense weight, and the report's note."""
        from ttsnn_cli.kinds.stepmode import dense_step_mode, keep_step_mode

        layer = keep_step_mode(self.build(module, ranks, mode, timesteps, svd, linear_cores), dense_step_mode(module))
        error = relative_error(self.effective_weight(layer), module.weight)
        return layer, error, self.note(module, mode, linear_cores)

    def tt_config(self, layer: nn.Module) -> dict[str, Any]:
        """A TT layer's config as a bundle records it (`type` included; `step_mode` for a layer that
        keeps SpikingJelly's, absent otherwise so other bundles read as before)."""
        from ttsnn_cli.kinds.stepmode import layer_step_mode

        mode = layer_step_mode(layer)
        return {**layer.config(), "type": self.name, **({"step_mode": mode} if mode is not None else {})}  # type: ignore[operator]

    def from_config(self, config: dict[str, Any]) -> nn.Module:
        """An empty TT layer from a bundle's config, ready for its state_dict."""
        from ttsnn_cli.kinds.stepmode import keep_step_mode

        step_mode = config.get("step_mode")
        if step_mode is not None and step_mode not in ("s", "m"):
            raise ValueError(f"step_mode {step_mode!r} is not s or m")
        plain = {k: v for k, v in config.items() if k != "step_mode"}
        return keep_step_mode(self.tt.from_config(plain), step_mode)  # type: ignore[attr-defined]

    # ------------------------------------------------------------------------------ report fields
    def shape_fields(self, module: nn.Module) -> tuple[list[int] | None, int, int]:
        """(kernel or None, in channels/features, out channels/features) of a dense or TT layer."""
        raise NotImplementedError

    def describe(self, module: nn.Module) -> str:
        """The `shape` column of `ttsnn inspect` for a dense or TT layer."""
        raise NotImplementedError

    # ------------------------------------------------------------------------------ counting
    def leaf_weights(self, module: nn.Module) -> int:
        """The paper's `weights` of a leaf: a dense layer's weight, a TT-matrix's cores."""
        return module.weight.numel()  # type: ignore[union-attr]

    def leaf_call(self, module: nn.Module, x: torch.Tensor, out: torch.Tensor) -> LeafCall:
        """MACs and sizes of one forward call of a leaf, from the shapes a hook sees."""
        raise NotImplementedError

    def exact_acs(self, module: nn.Module, x: torch.Tensor) -> int:
        """Accumulates a spike input `x` costs a leaf, exactly: each output adds its nonzero inputs."""
        raise NotImplementedError

    def count_type(self, module: nn.Module) -> str:
        """The `type` of `report`'s layer row (conv, linear, tt-stt, tt-ptt, tt-htt, tt-linear)."""
        raise NotImplementedError

    # ------------------------------------------------------------------------------ hw workloads
    def workloads(self, name: str, module: nn.Module, leaves: dict[str, Any]) -> list[Any]:
        """`hw.LayerWorkload`s of a dense layer or of a TT layer's cores, from the profile's leaves
        (objects with `in_hw`, `binary`, `samples`); [] when the layer never ran."""
        raise NotImplementedError

    # ------------------------------------------------------------------------------ export
    def export_replacement(self, name: str, module: nn.Module, context: Any, reconstruct_dense: bool) -> nn.Module | None:
        """What a TT layer becomes in an export copy (a time-explicit or dense-folded module), or
        None to export it as it is. `context` is the copy's step context (`step`, `calls`)."""
        return None

    def nir_nodes(self, name: str, module: nn.Module, bn: nn.Module | None, x: torch.Tensor) -> tuple[list[tuple[str, Any]], torch.Tensor]:
        """NIR nodes of a dense or TT layer (a following BatchNorm `bn` folded in) and its output on
        `x`; BadInputError in one line when the layer has no NIR equivalent."""
        raise NotImplementedError


class DenseConvLeaves:
    """Counting hooks of a dense conv leaf, shared by the Conv2d and Conv1d kinds (mixed in before
    `LayerKind`). `batched_dims`: an input's dims when it carries a batch; `conv_fn`: F.conv2d/1d."""

    batched_dims: int = 4
    conv_fn: Any = None

    def leaf_call(self, module: nn.Module, x: torch.Tensor, out: torch.Tensor) -> LeafCall:
        x, out = _fold_steps(x, self.batched_dims), _fold_steps(out, self.batched_dims)
        items = x.shape[0] if x.dim() == self.batched_dims else 1
        return LeafCall(int(items), out.numel() * conv_window(module), 0, spatial(x), spatial(out))  # type: ignore[arg-type]

    def exact_acs(self, module: nn.Module, x: torch.Tensor) -> int:
        """Each output sums the nonzero inputs in its window: a ones-kernel conv over the nonzero mask,
        times the output channels. Grouped convs are not counted (0)."""
        conv: Any = module
        if conv.groups != 1:
            return 0
        x = _fold_steps(x, self.batched_dims)
        nz = (x != 0).to(torch.float32)
        ones = torch.ones(1, conv.in_channels, *conv.kernel_size, dtype=torch.float32, device=x.device)
        padding = conv.padding if conv.padding_mode == "zeros" else 0
        if conv.padding_mode != "zeros" and any(conv.padding if not isinstance(conv.padding, str) else (1,)):
            nz = torch.nn.functional.pad(nz, conv._reversed_padding_repeated_twice)  # the padded values of a spike map
        counts = type(self).conv_fn(nz, ones, None, conv.stride, padding, conv.dilation)
        return int(counts.sum().item()) * conv.out_channels


def _fold_steps(x: torch.Tensor, batched_dims: int) -> torch.Tensor:
    """A SpikingJelly multi-step conv's input or output [T, B, ...] as the [T*B, ...] its conv computes."""
    return x.flatten(0, 1) if x.dim() == batched_dims + 1 else x
