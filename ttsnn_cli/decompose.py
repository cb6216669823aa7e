"""nn.Module -> nn.Module with TT layers: choose layers, resolve ranks, decompose, swap in place.

`compress_model` is the library's stage function: it returns the same model object with each
eligible Conv2d replaced by a TTConv2d at the same name, and a data-first report of what it did.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from ttsnn_cli.errors import BadInputError
from ttsnn_cli.layers import MODES, Mode, TTConv2d
from ttsnn_cli.ranks import RankSpec, RankSpecError, ResolvedRanks, budget_ranks, cap_ranks, parse_ranks, resolve_layer_ranks
from ttsnn_cli.tt import SVD_METHODS, relative_error


@dataclass
class CompressConfig:
    """What to decompose and how. `overrides` maps a module name (or a regex matching whole names)
    to ranks, for per-layer recipes such as the paper's."""

    ranks: RankSpec
    mode: Mode = "stt"
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    overrides: dict[str, Any] = field(default_factory=dict)
    timesteps: int | None = None
    svd: str = "qr_svd"


@dataclass
class LayerReport:
    name: str
    type: str
    kernel: list[int] | None
    in_channels: int | None
    out_channels: int | None
    ranks: list[int] | None
    requested_ranks: list[int] | None
    params_before: int
    params_after: int
    rel_error: float | None
    skipped: str | None
    note: str | None = None


@dataclass
class CompressionResult:
    mode: str
    rank_method: str
    layers: list[LayerReport]
    totals: dict[str, Any]
    warnings: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "rank_method": self.rank_method,
            "layers": [asdict(layer) for layer in self.layers],
            "totals": self.totals,
            "warnings": list(self.warnings),
        }


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def skip_reason(conv: nn.Conv2d) -> str | None:
    """Why a Conv2d cannot (usefully) become TT cores, or None when it can."""
    if conv.groups != 1:
        kind = "depthwise" if conv.groups == conv.in_channels == conv.out_channels else "grouped"
        return f"{kind} conv (groups={conv.groups}): TT cores cannot split channel groups"
    if conv.kernel_size == (1, 1):
        return "1x1 conv: already a channel matrix, nothing spatial to split"
    if conv.padding_mode not in ("zeros", "reflect", "replicate", "circular"):
        return f"padding_mode {conv.padding_mode!r} not supported"
    return None


def _compile(patterns: list[str], option: str) -> list[re.Pattern[str]]:
    compiled = []
    for pattern in patterns:
        try:
            compiled.append(re.compile(pattern))
        except re.error as error:
            raise BadInputError(f"{option} {pattern!r} is not a valid regular expression: {error}") from None
    return compiled


def _override_for(name: str, overrides: dict[str, Any]) -> Any:
    if name in overrides:
        return overrides[name]
    for pattern, value in overrides.items():
        try:
            if re.fullmatch(pattern, name):
                return value
        except re.error:
            continue
    return None


def plan_layers(model: nn.Module, config: CompressConfig) -> tuple[dict[str, nn.Conv2d], list[LayerReport]]:
    """Split the model's convs and linears into those to decompose and those skipped (with reasons)."""
    include = _compile(config.include, "--include")
    exclude = _compile(config.exclude, "--exclude")
    chosen: dict[str, nn.Conv2d] = {}
    skipped: list[LayerReport] = []
    inside_tt = [name for name, m in model.named_modules() if isinstance(m, TTConv2d)]
    for name, module in model.named_modules():
        if any(name == t or name.startswith(t + ".") for t in inside_tt):
            continue
        if isinstance(module, nn.Linear):
            skipped.append(_skipped(name, module, "Linear: not a convolution, stays dense"))
            continue
        if not isinstance(module, nn.Conv2d):
            continue
        reason = skip_reason(module)
        if reason is None and include and not any(p.search(name) for p in include):
            reason = "not matched by --include"
        if reason is None:
            hit = next((p.pattern for p in exclude if p.search(name)), None)
            if hit is not None:
                reason = f"excluded by --exclude {hit}"
        if reason is None:
            chosen[name] = module
        else:
            skipped.append(_skipped(name, module, reason))
    return chosen, skipped


def _skipped(name: str, module: nn.Module, reason: str) -> LayerReport:
    is_conv = isinstance(module, nn.Conv2d)
    return LayerReport(
        name=name,
        type=type(module).__name__,
        kernel=list(module.kernel_size) if is_conv else None,
        in_channels=module.in_channels if is_conv else module.in_features,
        out_channels=module.out_channels if is_conv else module.out_features,
        ranks=None,
        requested_ranks=None,
        params_before=_params(module),
        params_after=_params(module),
        rel_error=None,
        skipped=reason,
    )


def resolve_all_ranks(chosen: dict[str, nn.Conv2d], config: CompressConfig) -> dict[str, ResolvedRanks]:
    equal = config.mode != "stt"
    spec = config.ranks
    budget: dict[str, ResolvedRanks] = {}
    if spec.method == "budget":
        assert spec.value is not None
        budget = budget_ranks({n: tuple(c.weight.shape) for n, c in chosen.items()}, spec.value, equal)
    resolved = {}
    for name, conv in chosen.items():
        override = _override_for(name, config.overrides)
        try:
            if override is not None:
                resolved[name] = cap_ranks(tuple(conv.weight.shape), parse_ranks(override), equal)
            elif spec.method == "budget":
                resolved[name] = budget[name]
            else:
                resolved[name] = resolve_layer_ranks(conv.weight, spec, equal)
        except RankSpecError as error:
            raise BadInputError(f"layer {name}: {error}") from None
    return resolved


def compress_model(model: nn.Module, config: CompressConfig) -> tuple[nn.Module, CompressionResult]:
    """Decompose every eligible Conv2d of `model` in place; return it with the per-layer report."""
    if config.mode not in MODES:
        raise BadInputError(f"unknown mode {config.mode!r}; choose one of {', '.join(MODES)}")
    if config.svd not in SVD_METHODS:
        raise BadInputError(f"unknown SVD method {config.svd!r}; choose one of {', '.join(SVD_METHODS)}")
    if config.mode == "htt" and not config.timesteps:
        raise BadInputError("HTT needs the number of timesteps: pass --timesteps T (or set model.timesteps in the recipe)")
    params_total_before = _params(model)
    chosen, reports = plan_layers(model, config)
    if not chosen:
        raise BadInputError("no Conv2d layer to decompose (all skipped: see --include/--exclude, or the model has no k x k convs)")
    resolved = resolve_all_ranks(chosen, config)
    warnings = [f"{name}: ranks {r.note}" for name, r in resolved.items() if r.note and r.note.startswith("capped")]
    warnings += [f"{name}: {r.note}" for name, r in resolved.items() if r.note and r.note.startswith("vbmf found")]
    for name, conv in chosen.items():
        ranks = resolved[name]
        with torch.no_grad():
            layer = TTConv2d.from_conv(conv, ranks.effective, config.mode, config.timesteps, config.svd)
            error = relative_error(layer.effective_kernel(), conv.weight)
        reports.append(
            LayerReport(
                name=name,
                type="Conv2d",
                kernel=list(conv.kernel_size),
                in_channels=conv.in_channels,
                out_channels=conv.out_channels,
                ranks=list(ranks.effective),
                requested_ranks=list(ranks.requested),
                params_before=_params(conv),
                params_after=_params(layer),
                rel_error=error,
                skipped=None,
                note=ranks.note,
            )
        )
        layer.train(conv.training)
        model.set_submodule(name, layer)
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    reports.sort(key=lambda r: order.get(r.name, len(order)))
    decomposed = [r for r in reports if r.skipped is None]
    before = sum(r.params_before for r in decomposed)
    after = sum(r.params_after for r in decomposed)
    params_total_after = _params(model)
    totals = {
        "params_before": params_total_before,
        "params_after": params_total_after,
        "param_ratio": params_total_before / params_total_after,
        "decomposed_layers": len(decomposed),
        "skipped_layers": len(reports) - len(decomposed),
        "decomposed_params_before": before,
        "decomposed_params_after": after,
        "decomposed_param_ratio": before / after,
    }
    return model, CompressionResult(config.mode, config.ranks.describe(), reports, totals, warnings)
