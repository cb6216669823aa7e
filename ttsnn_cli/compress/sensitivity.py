"""`sensitivity:X`: measured per-layer loss curves, and ranks chosen from them under a global budget.

Why: reconstruction error (what `budget:X` balances) is only a proxy. Some layers tolerate a large
kernel error at little cost in loss, others not at all, and only data tells which (ALDS, NeurIPS
2021; the layer-wise sensitivity of Zhang et al.'s global rank search).

1. Calibration (`calibration_set`): a fixed, seeded subset of the *training* split (never the test
   split the accuracy is reported on), direct-encoded over T, labels kept.
2. Measurement (`measure_sensitivity`): for every decomposed layer and every candidate rank, that
   layer alone is replaced by its TT layer (TT-SVD, in the compress mode) and the calibration loss
   (cross-entropy of the time-averaged output, in eval mode, no gradients) is compared with the
   dense model's: `loss_increase = loss(layer at rank r) - loss(dense)`. Candidate ranks are the
   largest equal ranks shrinking the layer by the factors `candidate_factors` lists (a sqrt(2) grid
   around the target), plus rank 1.
3. Allocation (`allocation.choose_ranks`): every layer starts at its largest candidate; while the TT weights
   exceed sum(kernel weights) / X, the layer whose next step down costs the least loss per weight
   saved steps down (a greedy knapsack on the monotone envelope of each curve: noise that makes a
   smaller rank look better than a larger one is not rewarded); then the weights left under the
   budget buy steps back up, most loss recovered per weight first. Layer interactions are ignored, as
   in every layer-wise sensitivity method; the fine-tune recovers them.

`fisher:X` and `recovery:X` share step 1 and allocate min-max (`allocation.minmax_ranks`); their curves are
estimated (`compress.fisher`) or measured after a few steps of training the layer (`compress.recovery`).

Deterministic: the subset comes from the seed, TT-SVD and the eval forward are deterministic.
The library never prints: progress goes to the `progress` callback, one event per measurement.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Annotated, Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr
from torch import nn

from ttsnn_cli.data import DataBundle, encode
from ttsnn_cli.errors import BadInputError
from ttsnn_cli.compress.allocation import LayerCurve, Point, choose_ranks, minmax_ranks
from ttsnn_cli.compress.fisher import FISHER_BATCH, fisher_error, fisher_information
from ttsnn_cli.compress.recovery import RECOVERY_LR, RECOVERY_STEPS, recover
from ttsnn_cli.kinds import kind_of, tt_dims
from ttsnn_cli.layers.conv2d import Mode
from ttsnn_cli.maths.ranks import Costs, Ranks, ResolvedRanks
from ttsnn_cli.maths.tt import tensor_tt_params, unfolding_caps
from ttsnn_cli.spiking.runner import run_timesteps
from ttsnn_cli.storage.schema import validated

Progress = Callable[[dict[str, Any]], None]  # an event sink, as the training engine takes

DEFAULT_CALIB_SAMPLES = 256


@dataclass(frozen=True)
class Calibration:
    """Inputs [T, N, ...] (direct-encoded) and labels [N] the loss is measured on."""

    inputs: torch.Tensor
    labels: torch.Tensor
    indices: list[int]


FiniteFloat = Annotated[float, Field(strict=True, allow_inf_nan=False)]
PositiveInt = Annotated[StrictInt, Field(ge=1)]


class _PointRecord(BaseModel):
    model_config = ConfigDict(extra="ignore")

    ranks: Annotated[list[PositiveInt], Field(min_length=1, max_length=64)]
    weights: PositiveInt
    loss: FiniteFloat
    loss_increase: FiniteFloat


class _CurveRecord(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: StrictStr
    dense_weights: PositiveInt
    points: Annotated[list[_PointRecord], Field(min_length=1)]


class CurvesRecord(BaseModel):
    """The fields of a stored curves document `choose_ranks` relies on (a file is input: checked)."""

    model_config = ConfigDict(extra="ignore")

    factors: Annotated[list[Annotated[FiniteFloat, Field(ge=1)]], Field(min_length=1)]
    layers: list[_CurveRecord]


def _check_curve(curve: _CurveRecord, index: int, dims: tuple[int, ...], source: str) -> None:
    """Every number a stored curve holds must be what measuring this layer gives: a curve for
    another kernel (or edited weights) would allocate ranks for a layer that is not there."""
    where = f"sensitivity curves {source}: layers.{index}"
    if curve.dense_weights != math.prod(dims):
        raise BadInputError(f"{where}.dense_weights is {curve.dense_weights}, but layer {curve.name} holds "
                            f"{math.prod(dims)} weights")
    caps = unfolding_caps(dims)
    for j, point in enumerate(curve.points):
        ranks = tuple(point.ranks)
        if len(ranks) != len(caps) or any(r > c for r, c in zip(ranks, caps)):
            raise BadInputError(f"{where}.points.{j}.ranks {list(ranks)} do not fit the TT ranks {list(caps)} of layer "
                                f"{curve.name}")
        if point.weights != tensor_tt_params(dims, ranks):
            raise BadInputError(f"{where}.points.{j}.weights is {point.weights}, but ranks {list(ranks)} of layer "
                                f"{curve.name} hold {tensor_tt_params(dims, ranks)}")


def check_curves(document: Any, source: str, layers: dict[str, tuple[int, ...]]) -> dict[str, Any]:
    """`document` (read from `source`) if it is a curves document for exactly `layers` (each layer's
    TT tensor dims, `kinds.tt_dims`); otherwise one BadInputError naming the file and the field. Why:
    the stored curves are a cache anyone can edit, and `choose_ranks` divides by their weights and
    indexes their points."""
    record = validated(CurvesRecord, document, f"sensitivity curves {source} have a bad field", first_only=True)
    names = [curve.name for curve in record.layers]
    if len(set(names)) != len(names) or set(names) != set(layers):
        held = ", ".join(sorted(set(names))) or "no layer"
        raise BadInputError(f"sensitivity curves {source}: layers hold curves for {held}, "
                            f"but the layers to decompose are {', '.join(sorted(layers))}")
    for index, curve in enumerate(record.layers):
        _check_curve(curve, index, tuple(layers[curve.name]), source)
    return document


def check_finite_curves(base_loss: float, curves: dict[str, LayerCurve]) -> None:
    """A measured loss that is NaN or infinite means the model's output is: no rank can be chosen
    from it, and standard JSON cannot store it."""
    if not math.isfinite(base_loss):
        raise BadInputError(f"the dense model's calibration loss is {base_loss}: its output is not finite; "
                            "check the model and the data")
    for curve in curves.values():
        bad = next((p for p in curve.points if not math.isfinite(p.loss)), None)
        if bad is not None:
            raise BadInputError(f"layer {curve.name} at ranks {list(bad.ranks)} gives a calibration loss of "
                                f"{bad.loss}; its output is not finite")


#: the grid's top: no layer shrinks further even at rank 1 (a kernel of 4096 x 4096 x 3 x 3 weights at
#: most ~2e4 times), so a larger target measures the same candidates; and the grid stays finite (a
#: target of 1e308 times the spread would overflow to infinity)
MAX_FACTOR = 1e12


def candidate_factors(targets: Iterable[float], spread: float = 4.0) -> list[float]:
    """Shrink factors to measure: a sqrt(2) grid from min(targets) / spread to max(targets) * spread
    (at least 1, at most MAX_FACTOR): the allocation moves weights between layers, so each layer
    needs points on both sides of the target."""
    targets = list(targets)
    low = min(max(1.0, min(targets) / spread), MAX_FACTOR)
    high = max(min(max(targets) * spread, MAX_FACTOR), low)
    steps = int(math.floor(2 * math.log2(high / low) + 1e-9))
    return [low * 2 ** (k / 2) for k in range(steps + 1)]


def candidate_ranks(dims: tuple[int, ...], factors: Iterable[float],
                    cost: Callable[[Ranks], float] | None = None, dense_cost: float | None = None) -> list[Ranks]:
    """Equal ranks r on every bond (every mode can use them) of a layer whose TT tensor has `dims`:
    for each factor, the largest r whose cores are at least that many times smaller than the kernel
    (in weights, or in `cost` against `dense_cost`: a MAC budget needs candidates on both sides of
    the target *in MACs*); plus rank 1. Unique, ascending."""
    bonds = len(dims) - 1
    price = cost or (lambda ranks: float(tensor_tt_params(dims, ranks)))
    dense = math.prod(dims) if cost is None or dense_cost is None else dense_cost
    limit = min(unfolding_caps(dims))
    ranks = {1}
    for factor in factors:
        r = 1
        while r < limit and price((r + 1,) * bonds) * factor <= dense:  # type: ignore[arg-type]
            r += 1
        ranks.add(r)
    return [(r,) * bonds for r in sorted(ranks)]  # type: ignore[misc]


def calibration_set(data: DataBundle, samples: int, timesteps: int, seed: int) -> Calibration:
    """A seeded subset of the training split (without augmentation: load the data with augment=False)."""
    count = min(samples, len(data.train))
    generator = torch.Generator().manual_seed(seed)
    indices = sorted(torch.randperm(len(data.train), generator=generator)[:count].tolist())
    xs, ys = zip(*(data.train[i] for i in indices))
    inputs = encode(torch.stack(xs), timesteps, "direct", data.temporal)
    return Calibration(inputs, torch.as_tensor(ys, dtype=torch.long), indices)


@torch.no_grad()
def calibration_loss(model: nn.Module, calibration: Calibration, batch_size: int = 128) -> float:
    """Mean cross-entropy of the time-averaged output over the calibration set (model in eval)."""
    device = next(model.parameters()).device
    total = 0.0
    count = calibration.labels.shape[0]
    for start in range(0, count, batch_size):
        inputs = calibration.inputs[:, start:start + batch_size].to(device)
        labels = calibration.labels[start:start + batch_size].to(device)
        out = run_timesteps(model, inputs, fold=True)
        total += float(F.cross_entropy(out.mean(0), labels, reduction="sum"))
    return total / max(count, 1)


#: how a layer's loss curve is obtained: measured with the layer swapped in, estimated (`fisher`), or
#: measured after a few steps of training the swapped-in layer (`recovery`)
CRITERIA = {"sensitivity": "measured", "fisher": "fisher", "recovery": "recovered"}
#: the methods whose curves are allocated min-max (`minmax_ranks`), not greedily (`choose_ranks`)
MINMAX = ("fisher", "recovery")


def measure_sensitivity(
    model: nn.Module,
    layers: dict[str, nn.Module],
    calibration: Calibration,
    factors: Iterable[float],
    mode: Mode = "stt",
    timesteps: int | None = None,
    svd: str = "qr_svd",
    progress: Progress | None = None,
    costs: Costs | None = None,
    linear_cores: int = 3,
    criterion: str = "measured",
) -> tuple[float, dict[str, LayerCurve]]:
    """(dense calibration loss, one curve per layer). `criterion` "measured" swaps each candidate
    layer in and measures the calibration loss; "recovered" trains the swapped-in layer for a few
    steps on one half of the calibration set and measures on the other (`compress.recovery`; the
    dense loss is then the second half's); "fisher" gives each candidate's Fisher-weighted
    relative error instead (`compress.fisher`, as both `loss` and `loss_increase`; no forward pass
    per candidate). `model` is left as it was (every
    swapped layer is put back, also on error) and in the train/eval state it had. With `costs` (a
    MAC or time budget) the candidate grid is spaced in that cost."""
    factors = list(factors)
    report = progress or (lambda event: None)
    spaced = costs is not None and costs.unit != "weights"
    dims = tt_dims(layers, linear_cores)
    plan = {name: candidate_ranks(dims[name], factors,
                                  partial(costs.at, name) if spaced else None,  # type: ignore[union-attr]
                                  costs.dense(name) if spaced else None)  # type: ignore[union-attr]
            for name in layers}
    total = sum(len(c) for c in plan.values())
    was_training = model.training
    model.eval()
    fit = judged = calibration
    if criterion == "recovered":  # fitted on one half, judged on the other
        if calibration.labels.shape[0] < 2:
            raise BadInputError("recovery:X trains on half the calibration samples and judges on the other half: "
                                "give --calib-samples 2 or more")
        half = calibration.labels.shape[0] // 2
        fit = Calibration(calibration.inputs[:, :half], calibration.labels[:half], calibration.indices[:half])
        judged = Calibration(calibration.inputs[:, half:], calibration.labels[half:], calibration.indices[half:])
    try:
        base = calibration_loss(model, judged)
        fisher = (fisher_information(model, layers, calibration.inputs, calibration.labels)
                  if criterion == "fisher" else None)
        done = 0
        report({"kind": "sensitivity_start", "total": total, "layers": len(plan), "dense_loss": base})
        curves = {}
        for name, conv in layers.items():
            kind = kind_of(conv, exact=False)
            assert kind is not None, name
            points = []
            for ranks in plan[name]:
                with torch.no_grad():
                    layer = kind.build(conv, ranks, mode, timesteps, svd, linear_cores).eval()
                if fisher is not None:
                    loss = fisher_error(fisher[name], conv.weight, kind.effective_weight(layer))  # type: ignore[arg-type]
                else:
                    model.set_submodule(name, layer)
                    try:
                        loss = calibration_loss(model, judged)
                        if criterion == "recovered":  # the steps only count where they help (see recovery)
                            recover(model, layer, fit.inputs, fit.labels)
                            loss = min(loss, calibration_loss(model, judged))
                    finally:
                        model.set_submodule(name, conv)
                weights = tensor_tt_params(dims[name], ranks)
                points.append(Point(ranks, weights, loss, loss if fisher is not None else loss - base))
                done += 1
                report({"kind": "sensitivity", "done": done, "total": total, "layer": name,
                        "ranks": list(ranks), "loss_increase": loss - base})
            curves[name] = LayerCurve(name, math.prod(dims[name]), sorted(points, key=lambda p: p.weights))
    finally:
        model.train(was_training)
    return base, curves


#: what a curve's `loss` is, by criterion (the JSON says it)
LOSS_NOTES = {
    "measured": "cross-entropy of the time-averaged output, eval mode, the layer alone at the candidate ranks",
    "recovered": f"cross-entropy of the time-averaged output on the second half of the calibration set, eval mode, "
                 f"the layer alone at the candidate ranks, the lower of before and after {RECOVERY_STEPS} SGD steps "
                 f"(lr {RECOVERY_LR}) of its cores on the first half",
    "fisher": "Fisher-weighted relative error sum F (W - TT(W))^2 / sum F W^2 (loss = loss_increase), F the "
              f"diagonal empirical Fisher (mean squared gradient over mini-batches of {FISHER_BATCH}, eval mode)",
}


def curves_document(base_loss: float, curves: dict[str, LayerCurve], calibration: Calibration,
                    seed: int, criterion: str = "measured") -> dict[str, Any]:
    """The JSON the compress result carries under `sensitivity`."""
    return {
        "calib_samples": len(calibration.indices),
        "seed": seed,
        "split": "train",
        "dense_loss": base_loss,
        "criterion": criterion,
        "loss": LOSS_NOTES[criterion],
        "layers": [c.to_dict() for c in curves.values()],
    }


def sensitivity_ranks(
    model: nn.Module,
    layers: dict[str, nn.Module],
    factor: float,
    data: DataBundle,
    calib_samples: int,
    timesteps: int,
    seed: int,
    mode: Mode = "stt",
    svd: str = "qr_svd",
    progress: Progress | None = None,
    measured: dict[str, Any] | None = None,
    costs: Costs | None = None,
    linear_cores: int = 3,
    method: str = "sensitivity",
) -> tuple[dict[str, ResolvedRanks], dict[str, Any]]:
    """Measure (or reuse `measured`, a `curves_document` whose factors cover `factor`) and allocate,
    under a budget in weights or in what `costs` counts. `method`: `sensitivity` (measured curves)
    or `fisher` (estimated ones, `CRITERIA`).

    Returns the chosen ranks by layer and the curves document (with the factors measured).
    """
    if measured is None:
        calibration = calibration_set(data, calib_samples, timesteps, seed)
        factors = candidate_factors([factor])
        criterion = CRITERIA[method]
        base, curves = measure_sensitivity(model, layers, calibration, factors, mode, timesteps, svd, progress, costs,
                                           linear_cores, criterion)
        measured = curves_document(base, curves, calibration, seed, criterion) | {"factors": factors, "mode": mode}
    curves = {c["name"]: LayerCurve.from_dict(c) for c in measured["layers"]}
    missing = sorted(set(layers) - set(curves))
    if missing:
        raise ValueError(f"sensitivity curves lack layer(s) {', '.join(missing)}")
    allocate = minmax_ranks if method in MINMAX else choose_ranks
    return allocate({name: curves[name] for name in layers}, factor, costs, method), measured
