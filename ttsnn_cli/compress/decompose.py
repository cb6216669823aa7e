"""nn.Module -> nn.Module with TT layers: choose layers, resolve ranks, decompose, swap in place.

`compress_model` is the library's stage function: it returns the same model object with each
eligible layer of the chosen types (`--layer-types`, default conv2d,conv1d) replaced by its TT layer
at the same name (Conv2d -> TTConv2d, Conv1d -> TTConv1d, Linear -> TTLinear, a grouped Conv2d ->
TTConv2dGrouped with `conv2d_grouped`), and a data-first report of what it did. Everything about a
layer type (eligibility, ranks, growth, decomposition) is its kind's (`ttsnn_cli.kinds`).

Modes and the new types: a Conv1d takes STT or HTT; PTT needs two spatial axes, so `--mode ptt` on a
model with a Conv1d to decompose is refused in one line naming the layer (a silent STT fallback would
make the reported mode a lie; pass `--layer-types conv2d` or `--exclude` it). A TT-matrix Linear has
no spatial cores: it runs its exact chain in every mode (its report note says so).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from ttsnn_cli.compress.costs import Probe, Timer, budget_costs, check_budget_on, probe
from ttsnn_cli.errors import BadInputError
from ttsnn_cli.kinds import DEFAULT_LAYER_TYPES, KINDS, LayerKind, is_tt_layer, kind_of, tt_dims
from ttsnn_cli.layers.conv2d import MODES, Mode
from ttsnn_cli.maths.ranks import (
    DATA_METHODS,
    GLOBAL_METHODS,
    Costs,
    RankSpec,
    RankSpecError,
    ResolvedRanks,
    budget_ranks,
    parse_rank_spec,
    round_ranks,
    uniform_ranks,
)
from ttsnn_cli.maths.tt import SVD_METHODS


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
    layer_types: tuple[str, ...] = DEFAULT_LAYER_TYPES
    linear_cores: int = 3  # d, the number of TT-matrix cores of a Linear (in/out features split in d factors)
    #: ranks chosen elsewhere (e.g. `sensitivity.choose_ranks` for `sensitivity:X`), by layer name
    chosen_ranks: dict[str, ResolvedRanks] | None = None
    allow_growth: bool = False  # decompose a layer even when its cores hold more weights than the kernel (--allow-growth)
    #: what the global methods' budget X counts (--budget-on): weights, macs (per timestep) or time (measured)
    budget_on: str = "weights"
    round_ranks: int = 1  # round every effective rank to a multiple of this (tensor cores like 8); 1: as chosen
    #: per-step input shape (C,H,W): MACs and time are counted at the shapes the model sees
    input_shape: tuple[int, ...] | None = None
    device: str | None = None  # where --budget-on time measures (auto: cuda if available)
    #: the measured costs (`prepare_costs`), and the dense model's shape probe they came from
    costs: Costs | None = None
    probe: Probe | None = None
    probe_error: str | None = None  # why the shape probe failed (the MAC ratios are then unknown)
    timer: Timer | None = None  # the clock --budget-on time measures with (tests pass a fake one)

    def __post_init__(self) -> None:
        """The Python API takes ranks as `--ranks` and `--rank-method` do: 8, "8,16,8" or "budget:8"."""
        if isinstance(self.ranks, RankSpec):
            return
        text = str(self.ranks).strip()
        method, ranks = (text, None) if ":" in text or text in ("vbmf",) else (None, self.ranks)
        try:
            self.ranks = parse_rank_spec(ranks, method, per_layer=bool(self.overrides))
        except RankSpecError as error:
            raise BadInputError(f"ranks={self.ranks!r}: {error}") from None


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


def _check_overrides(names: list[str], overrides: dict[str, Any]) -> None:
    """A per-layer rank whose name (or whole-name regex) matches no decomposed layer is a typo: refuse it."""
    for key in overrides:
        if key in names:
            continue
        try:
            if any(re.fullmatch(key, name) for name in names):
                continue
        except re.error:
            pass
        shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
        raise BadInputError(f"per-layer ranks name {key!r}, which matches no layer being decomposed ({shown})")


def _type_reason(name: str, module: nn.Module, model: nn.Module, config: CompressConfig) -> str | None:
    """Why a layer of a known type is not decomposed before looking at its shape, or None."""
    kind = kind_of(module)
    if kind is None:  # a subclass of a covered class: its forward may do more, so it is not ours to split
        return f"{type(module).__name__}: not in --layer-types ({','.join(config.layer_types)}), stays dense"
    if kind.name not in config.layer_types:
        return kind.unselected_reason(module, config.layer_types)
    parent = name.rpartition(".")[0]
    if isinstance(model.get_submodule(parent) if parent else model, nn.MultiheadAttention):
        return "inside MultiheadAttention, which reads the weight directly: stays dense"
    return kind.skip_reason(module)


def plan_layers(model: nn.Module, config: CompressConfig) -> tuple[dict[str, nn.Module], list[LayerReport]]:
    """Split the model's convs and linears into those to decompose and those skipped (with reasons)."""
    include = _compile(config.include, "--include")
    exclude = _compile(config.exclude, "--exclude")
    chosen: dict[str, nn.Module] = {}
    skipped: list[LayerReport] = []
    inside_tt = [name for name, m in model.named_modules() if is_tt_layer(m)]
    for name, module in model.named_modules():
        if any(name == t or name.startswith(t + ".") for t in inside_tt):
            continue
        if kind_of(module, exact=False) is None or is_tt_layer(module):
            continue
        reason = _type_reason(name, module, model, config)
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


def _kind(module: nn.Module) -> LayerKind:
    kind = kind_of(module, exact=False)
    assert kind is not None, type(module).__name__
    return kind


def _skipped(name: str, module: nn.Module, reason: str) -> LayerReport:
    kernel, cin, cout = _kind(module).shape_fields(module)
    return LayerReport(
        name=name,
        type=type(module).__name__,
        kernel=kernel,
        in_channels=cin,
        out_channels=cout,
        ranks=None,
        requested_ranks=None,
        params_before=_params(module),
        params_after=_params(module),
        rel_error=None,
        skipped=reason,
    )


def free_layers(chosen: dict[str, nn.Module], config: CompressConfig) -> dict[str, nn.Module]:
    """The layers a global rank method chooses for: those whose kind it allocates under the budget's
    unit (`LayerKind.allocates`: Conv2d always, Conv1d and Linear in weights) without a per-layer
    override."""
    budget_on = config.budget_on or "weights"
    return {n: c for n, c in chosen.items()
            if _kind(c).allocates(budget_on) and _override_for(n, config.overrides) is None}


def global_ranks(chosen: dict[str, nn.Module], config: CompressConfig) -> dict[str, ResolvedRanks]:
    """Ranks of the methods that share one budget over the layers without a per-layer override.

    The budget covers the layers it allocates (`free_layers`); overridden layers keep the ranks the
    recipe gives, and layers of a kind it does not allocate under this budget (Conv1d / Linear under
    MACs or time) take the per-layer rule (`layer_ranks`: each at least X times smaller), so the
    whole still shrinks at least X times.
    """
    spec = config.ranks
    free = free_layers(chosen, config)
    if not free:
        return {}
    if spec.method in DATA_METHODS:
        if config.chosen_ranks is None:
            raise BadInputError(f"{spec.method}:X measures the loss on data: give --data SPEC (calibration samples)")
        missing = sorted(set(free) - set(config.chosen_ranks))
        if missing:
            raise BadInputError(f"{spec.method} ranks were measured without layer(s) {', '.join(missing)}")
        return {n: config.chosen_ranks[n] for n in free}
    assert spec.value is not None
    costs = config.costs if config.budget_on != "weights" else None
    if spec.method == "uniform":
        return uniform_ranks(tt_dims(free, config.linear_cores), spec.value, costs)
    tensors = {n: _kind(m).tt_tensor(m, config.linear_cores) for n, m in free.items()}
    equal = {n: _kind(m).equal_ranks(config.mode) for n, m in free.items()}
    return budget_ranks(tensors, spec.value, equal=equal, costs=costs)


def prepare_costs(model: nn.Module, config: CompressConfig, progress: Any = None) -> None:
    """Measure what the budget counts (`--budget-on macs|time`) for the layers a global method
    allocates, once, into `config.costs`; and, whenever the input shape is known, the dense model's
    shape probe (`config.probe`) that the result's MAC ratios compare against. A probe that fails
    only leaves the MAC ratios unknown, unless the budget needs it."""
    config.budget_on = check_budget_on(config.budget_on, config.ranks.method)
    if config.probe is None and config.input_shape is not None:
        free = free_layers(plan_layers(model, config)[0], config)
        try:
            config.probe = probe(model, tuple(config.input_shape), config.timesteps or 1, list(free))
        except Exception as error:  # noqa: BLE001 - a model that cannot be probed still compresses by weights
            if config.budget_on != "weights":
                raise BadInputError(f"--budget-on {config.budget_on}: the model did not run at input shape "
                                    f"{','.join(map(str, config.input_shape))}: {error}") from None
            config.probe_error = f"MAC ratios unknown: the model did not run at input shape {config.input_shape}: {error}"
    if config.budget_on == "weights" or config.costs is not None:
        return
    free = free_layers(plan_layers(model, config)[0], config)
    if free:
        config.costs = budget_costs(config.budget_on, free, config.probe, config.mode, config.timesteps,  # type: ignore[arg-type]
                                    config.device, config.timer, progress)


def _slower_than_dense(chosen: dict[str, nn.Module], config: CompressConfig) -> dict[str, str]:
    """With `--budget-on time`: the layers whose TT layer is not faster than the dense one even at
    rank 1 on this device, each with its skip reason. They stay dense and out of the allocation:
    decomposing them would spend time, not save it (thin core convs on a CPU often lose)."""
    costs = config.costs
    if config.budget_on != "time" or costs is None:
        return {}
    slow = {}
    for name in free_layers(chosen, config):
        fastest, dense = costs.at(name, (1, 1, 1)), costs.dense(name)
        if fastest >= dense:
            slow[name] = (f"--budget-on time: even at rank 1 the TT layer is not faster than the dense layer "
                          f"({fastest * 1e3:.3g} ms vs {dense * 1e3:.3g} ms forward + backward): stays dense")
    return slow


def resolve_all_ranks(chosen: dict[str, nn.Module], config: CompressConfig) -> dict[str, ResolvedRanks]:
    """Effective ranks per chosen layer, by its kind: a layer the global method allocates
    (`free_layers`) takes the shared allocation, the others that method's per-layer rule (`budget:X` each)."""
    spec = config.ranks
    shared = global_ranks(chosen, config) if spec.method in GLOBAL_METHODS else {}
    resolved = {}
    for name, conv in chosen.items():
        override = _override_for(name, config.overrides)
        kind = _kind(conv)
        own = spec
        if name not in shared and spec.method in GLOBAL_METHODS:
            own = RankSpec("budget", value=spec.value)
        try:
            resolved[name] = kind.resolve_ranks(conv, own, override, config.mode, config.linear_cores, shared.get(name))
        except RankSpecError as error:
            raise BadInputError(f"layer {name}: {error}") from None
        resolved[name] = round_ranks(resolved[name], config.round_ranks, kind.rank_caps(conv, config.linear_cores),
                                     kind.equal_ranks(config.mode))
    return resolved


def _grows(module: nn.Module, ranks: tuple[int, ...], cores: int, allow: bool = False) -> str | None:
    """The skip reason when the TT cores at `ranks` would hold no fewer weights than the dense layer
    (e.g. a 1-input-channel stem at rank 8: 312 -> 334), else None. `allow` (--allow-growth) keeps a
    growing layer of every kind (full-rank checks against the dense oracle)."""
    return _kind(module).grows(module, ranks, cores, allow)


class NothingToDecompose(BadInputError):
    """Every candidate layer was skipped. The one-line message names each layer's reason; `document`
    is compress's JSON document with the skipped layers (the CLI prints it with --json)."""

    def __init__(self, model: nn.Module, config: CompressConfig, reports: list[LayerReport]) -> None:
        order = {name: i for i, (name, _) in enumerate(model.named_modules())}
        reports = sorted(reports, key=lambda r: order.get(r.name, len(order)))
        reasons = "; ".join(f"{r.name}: {r.skipped}" for r in reports) or "the model has no conv or linear layer"
        super().__init__(f"no layer to decompose ({reasons})")
        params = _params(model)
        self.document = {
            "mode": config.mode, "rank_method": config.ranks.describe(), "layers": [asdict(r) for r in reports],
            "totals": {"params_before": params, "params_after": params, "param_ratio": 1.0, "decomposed_layers": 0,
                       "skipped_layers": len(reports)},
            "warnings": [], "output": None, "error": str(self),
        }


def compress_model(model: nn.Module, config: CompressConfig) -> tuple[nn.Module, CompressionResult]:
    """Decompose every eligible Conv2d of `model` in place; return it with the per-layer report."""
    if config.mode not in MODES:
        raise BadInputError(f"unknown mode {config.mode!r}; choose one of {', '.join(MODES)}")
    if config.svd not in SVD_METHODS:
        raise BadInputError(f"unknown SVD method {config.svd!r}; choose one of {', '.join(SVD_METHODS)}")
    if config.mode == "htt" and not config.timesteps:
        raise BadInputError("HTT needs the number of timesteps: pass --timesteps T (or set model.timesteps in the recipe)")
    unknown = [t for t in config.layer_types if t not in KINDS]
    if unknown or not config.layer_types:
        raise BadInputError(f"--layer-types takes a comma list of {', '.join(KINDS)}; got {','.join(config.layer_types)!r}")
    if config.linear_cores < 1:
        raise BadInputError(f"--linear-cores must be at least 1, got {config.linear_cores}")
    params_total_before = _params(model)
    chosen, reports = plan_layers(model, config)
    for name, module in chosen.items():
        refusal = _kind(module).mode_refusal(config.mode)
        if refusal is not None:
            raise BadInputError(f"layer {name}: {refusal}")
    if not chosen:
        raise NothingToDecompose(model, config, reports)
    _check_overrides(list(chosen), config.overrides)
    if config.budget_on != "weights" and config.costs is None:
        prepare_costs(model, config)
    for name, reason in _slower_than_dense(chosen, config).items():  # a time budget never buys a slower layer
        reports.append(_skipped(name, chosen.pop(name), reason))
    if not chosen:
        raise NothingToDecompose(model, config, reports)
    resolved = resolve_all_ranks(chosen, config)
    for name in list(chosen):  # compress never makes a layer larger unless asked: skip it, saying so
        reason = _grows(chosen[name], resolved[name].effective, config.linear_cores, config.allow_growth)
        if reason is not None:
            reports.append(_skipped(name, chosen.pop(name), reason))
            del resolved[name]
    if not chosen:
        raise NothingToDecompose(model, config, reports)
    warnings = [f"{name}: ranks {r.note}" for name, r in resolved.items() if r.note and r.note.startswith("capped")]
    warnings += [f"{name}: {r.note}" for name, r in resolved.items() if r.note and r.note.startswith("vbmf found")]
    unmet = sorted({r.note for r in resolved.values() if r.note and "cannot be met" in r.note})
    warnings += unmet
    for name, conv in chosen.items():
        ranks = resolved[name]
        with torch.no_grad():
            layer, error, note = _decompose_one(conv, ranks.effective, config)
        kind = _kind(conv)
        kernel, cin, cout = kind.shape_fields(conv)
        reports.append(
            LayerReport(
                name=name,
                type=kind.label,
                kernel=kernel,
                in_channels=cin,
                out_channels=cout,
                ranks=list(ranks.effective),
                requested_ranks=list(ranks.requested),
                params_before=_params(conv),
                params_after=_params(layer),
                rel_error=error,
                skipped=None,
                note="; ".join(n for n in (ranks.note, note) if n) or None,
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


def _decompose_one(module: nn.Module, ranks: tuple[int, ...], config: CompressConfig) -> tuple[nn.Module, float, str | None]:
    """The TT layer for one chosen layer, its relative error against the dense weight, and a note."""
    return _kind(module).decompose(module, ranks, config.mode, config.timesteps, config.svd, config.linear_cores)
