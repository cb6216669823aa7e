"""Ranks from per-layer loss curves under one global budget: the greedy knapsack of `sensitivity:X`
(`choose_ranks`) and the min-max rule of `fisher:X` and `recovery:X` (`minmax_ranks`).

Why apart from the measurement (`compress.sensitivity`): how a curve is obtained (measured,
estimated, measured after recovery) and how a budget is spent on curves are two choices, and each
allocator works on any curves, stored or fresh. The budget counts the curves' weights or what a
`maths.ranks.Costs` counts (`--budget-on macs|time`); the greedy knapsack is the module docstring of
`compress.sensitivity` (step 3), the min-max rule is `budget:X`'s (`maths.ranks.budget_ranks`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from ttsnn_cli.maths.ranks import Costs, Ranks, ResolvedRanks, lowest_fitting


@dataclass(frozen=True)
class Point:
    """One measurement: the layer at `ranks` (`weights` TT core weights), and the loss it gives."""

    ranks: Ranks
    weights: int
    loss: float
    loss_increase: float


@dataclass
class LayerCurve:
    """A layer's sensitivity curve: its dense kernel size and one point per candidate rank,
    sorted by weights (ascending)."""

    name: str
    dense_weights: int
    points: list[Point]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dense_weights": self.dense_weights,
                "points": [asdict(p) | {"ranks": list(p.ranks)} for p in self.points]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LayerCurve:
        points = [Point(tuple(p["ranks"]), int(p["weights"]), float(p["loss"]), float(p["loss_increase"]))  # type: ignore[arg-type]
                  for p in data["points"]]
        return cls(str(data["name"]), int(data["dense_weights"]), points)


def _envelope(points: list[Point]) -> list[float]:
    """Loss increase made non-increasing in weights: a smaller rank never counts as better."""
    values = [p.loss_increase for p in points]
    for i in range(len(values) - 2, -1, -1):
        values[i] = max(values[i], values[i + 1])
    return values


class _Budget:
    """What the allocators over curves share: a candidate's cost (weights, or what `costs` counts), the
    budget, each curve's monotone envelope, and the notes of the result."""

    def __init__(self, curves: dict[str, LayerCurve], factor: float, costs: Costs | None, method: str) -> None:
        self.curves, self.factor, self.costs, self.method = curves, factor, costs, method
        self.dense = sum(self.dense_of(n) for n in curves)
        self.allowed = self.dense / factor
        self.unit = "" if costs is None or costs.unit == "weights" else f" in {costs.unit}"
        self.envelope = {name: _envelope(c.points) for name, c in curves.items()}

    def dense_of(self, name: str) -> float:
        return float(self.curves[name].dense_weights) if self.costs is None else self.costs.dense(name)

    def at(self, name: str, index: int) -> float:
        point = self.curves[name].points[index]
        return float(point.weights) if self.costs is None else self.costs.at(name, point.ranks)

    def cost(self, position: dict[str, int]) -> float:
        return sum(self.at(n, i) for n, i in position.items())

    def can_step_up(self, position: dict[str, int], name: str) -> bool:
        """Whether `name`'s next larger candidate fits in what the budget has left."""
        index = position[name]
        return (index + 1 < len(self.curves[name].points)
                and self.at(name, index + 1) - self.at(name, index) <= self.allowed - self.cost(position))

    def resolved(self, position: dict[str, int], met: bool, describe: Callable[[str, int], str]) -> dict[str, ResolvedRanks]:
        """The chosen ranks, each noted with `describe(name, index)` (or why the budget cannot be met)."""
        what = "weights" if self.costs is None else self.costs.unit
        resolved = {}
        for name, index in position.items():
            point = self.curves[name].points[index]
            note = (f"{self.method} {self.factor:g}x{self.unit}{describe(name, index)}, this layer "
                    f"{self.dense_of(name) / self.at(name, index):.2f}x smaller{self.unit}")
            if not met:
                note = (f"{self.method} {self.factor:g}x{self.unit} cannot be met: the smallest candidates shrink "
                        f"the decomposed layers' {what} only {self.dense / self.cost(position):.2f}x")
            resolved[name] = ResolvedRanks(point.ranks, point.ranks, note)
        return resolved


def choose_ranks(curves: dict[str, LayerCurve], factor: float, costs: Costs | None = None,
                 method: str = "sensitivity") -> dict[str, ResolvedRanks]:
    """Greedy allocation under the global budget (see the module docstring). The budget counts the
    curves' weights, or what `costs` counts (`--budget-on macs|time`): the price of a step is then
    loss increase per MAC (or second) saved."""
    budget = _Budget(curves, factor, costs, method)
    at, envelope = budget.at, budget.envelope
    position = {name: len(c.points) - 1 for name, c in curves.items()}
    while budget.cost(position) > budget.allowed:
        best: tuple[float, str] | None = None
        for name, index in position.items():
            if index == 0:
                continue
            saved = at(name, index) - at(name, index - 1)
            price = (envelope[name][index - 1] - envelope[name][index]) / max(saved, 1e-12)
            if best is None or price < best[0]:
                best = (price, name)
        if best is None:
            break  # every layer at its smallest candidate
        position[best[1]] -= 1
    met = budget.cost(position) <= budget.allowed
    while met:  # steps down are coarse: spend what is left where it buys the most loss back
        best = None
        for name, index in position.items():
            if not budget.can_step_up(position, name):
                continue
            gain = (envelope[name][index] - envelope[name][index + 1]) / max(at(name, index + 1) - at(name, index), 1e-12)
            if gain > 0 and (best is None or gain > best[0]):
                best = (gain, name)
        if best is None:
            break
        position[best[1]] += 1
    how = "alone" if method == "sensitivity" else "estimated"
    return budget.resolved(position, met, lambda name, index:
                           f": loss +{curves[name].points[index].loss_increase:.4g} {how}")


def minmax_ranks(curves: dict[str, LayerCurve], factor: float, costs: Costs | None = None,
                 method: str = "fisher") -> dict[str, ResolvedRanks]:
    """Min-max allocation on the curves (`fisher:X`): the smallest common level e such that every layer
    at its smallest candidate with error <= e fits the budget (bisection over the levels where a
    layer's choice changes, on each curve's monotone envelope), as `budget:X` does on its bound; then
    the budget left buys steps back up, the layer with the largest error first."""
    budget = _Budget(curves, factor, costs, method)
    envelope = budget.envelope

    def plan(level: float) -> dict[str, int]:
        return {name: next((i for i, v in enumerate(values) if v <= level), len(values) - 1)
                for name, values in envelope.items()}

    levels = sorted({v for values in envelope.values() for v in values})
    met = budget.cost(plan(levels[-1])) <= budget.allowed  # the largest level: every layer's first candidate
    position = plan(levels[lowest_fitting(levels, lambda level: budget.cost(plan(level)) <= budget.allowed)
                           if met else -1])
    while met:  # spare budget: the worst layer steps up first, while a step fits
        steps = [(envelope[n][i], n) for n, i in position.items() if budget.can_step_up(position, n)]
        if not steps:
            break
        position[max(steps)[1]] += 1
    worst = max(envelope[n][i] for n, i in position.items())
    return budget.resolved(position, met, lambda name, index:
                           f" (min-max): error {envelope[name][index]:.4g} (worst layer {worst:.4g})")
