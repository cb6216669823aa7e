"""`ttsnn sweep --max-acc-drop PTS --search` (issue 24): the search over targets (doubling, then
bisection on the log scale, bounded), which point it chooses and why, and that finished points are
reused rather than redone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ttsnn_cli.cli.commands import app
from ttsnn_cli.pipeline.sweep import SearchWalk, choose_point, grid_target, search_targets

pytestmark = pytest.mark.usefixtures("one_thread")
runner = CliRunner()


class FakeFront:
    """A fake evaluator: a point holds while its target is at most `threshold`; counts each call."""

    def __init__(self, threshold: float) -> None:
        self.threshold, self.calls = threshold, []

    def __call__(self, target: float) -> tuple[bool, object]:
        self.calls.append(target)
        return target <= self.threshold, target


def test_doubling_then_bisection_brackets_the_limit_on_the_grid() -> None:
    front = FakeFront(20.0)
    walk = search_targets(4, 1e6, front, max_points=8)
    assert front.calls[:4] == [4.0, 8.0, 16.0, 32.0]  # doubling until a point drops too much
    assert walk.best == grid_target(17) and walk.failed_above == grid_target(18)  # 19.03 held, 22.63 did not
    assert walk.best <= 20 < walk.failed_above
    assert walk.stopped.startswith("resolution") and len(front.calls) == len(set(front.calls)) <= 8


def test_a_failing_start_bisects_towards_dense() -> None:
    front = FakeFront(3.0)
    walk = search_targets(4, 1e6, front, max_points=8)
    assert front.calls[0] == 4.0 and all(t < 4 for t in front.calls[1:])
    assert walk.best is not None and walk.best <= 3.0 < walk.failed_above  # type: ignore[operator]
    nothing = search_targets(4, 1e6, FakeFront(1.0), max_points=8)
    assert nothing.best is None  # not even the smallest grid target holds


def test_the_search_is_bounded_and_stops_at_the_limit_or_when_ranks_saturate() -> None:
    front = FakeFront(1e9)
    walk = search_targets(4, 100, front, max_points=20)
    assert walk.stopped == "limit" and walk.best == grid_target(26) and front.calls[-1] <= 100
    bounded = FakeFront(1e9)
    search_targets(4, 1e9, bounded, max_points=3)
    assert len(bounded.calls) == 3
    same = search_targets(4, 1e9, lambda t: (True, "rank 1 everywhere"), max_points=20)
    assert same.stopped.startswith("saturated") and len(same.tried) == 2


def test_choose_point_names_the_most_compressed_within_the_limit_and_why() -> None:
    def point(target: float, acc: float) -> dict:
        return {"method": "budget", "target": target, "weight_ratio": target * 0.9, "mac_ratio": target * 0.8,
                "accuracy_after": acc}

    document = {"dense_accuracy": 98.3, "points": [point(8, 98.0), point(16, 97.9), point(32, 95.9)]}
    walk = SearchWalk([(8, True), (16, True), (32, False)], 16.0, 32.0, "points")
    chosen = choose_point(document, 1.0, {"budget": walk})
    assert chosen is not None and chosen["point"] == "budget-16"
    assert "within 1 pts of dense (dense 98.30, point 97.90" in chosen["reason"]
    assert "budget-32 dropped 2.40" in chosen["reason"]
    assert choose_point(document, 0.1, {"budget": walk}) is None




def _sweep(dense: Path, out: Path, *extra: str):
    return runner.invoke(app, ["sweep", str(dense), "--data", "digits", "-o", str(out), "--methods", "budget",
                               "--exclude", "stem", "--train-samples", "40", "--batch-size", "40",
                               "--finetune-epochs", "1", "--json", *extra])


def test_sweep_search_chooses_a_point_says_why_and_reuses_finished_points(tmp_path: Path, dense_bundle: Path) -> None:
    """An untrained width-4 network on digits, 1 fine-tune epoch on 40 samples: a limit of 100 points
    holds everywhere, so the search doubles until its point budget; the point of an earlier grid
    sweep in the folder is reused, and a rerun redoes nothing."""
    out = tmp_path / "sweep"
    grid = _sweep(dense_bundle, out, "--targets", "4")  # an earlier grid sweep: its point is reused
    assert grid.exit_code == 0, grid.output
    result = _sweep(dense_bundle, out, "--targets", "4", "--max-acc-drop", "100", "--search", "--search-points", "3")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    walk = document["search"]["methods"]["budget"]
    assert [t["target"] for t in walk["tried"]][:1] == [4.0] and len(walk["tried"]) <= 3
    assert document["chosen"]["point"] == f"budget-{walk['best']:g}" and "most compressed" in document["chosen"]["reason"]
    assert document["gates"][0]["passed"] and document["gates"][0]["point"] == document["chosen"]["point"]
    assert "sweep: chose budget-" in result.stderr
    stamp = (out / "budget-4.tt").stat().st_mtime_ns  # the grid sweep's point was not redone
    again = _sweep(dense_bundle, out, "--targets", "4", "--max-acc-drop", "100", "--search", "--search-points", "3")
    assert again.exit_code == 0 and json.loads(again.stdout)["points"] == document["points"]
    assert (out / "budget-4.tt").stat().st_mtime_ns == stamp
    refused = _sweep(dense_bundle, tmp_path / "other", "--search")
    assert refused.exit_code == 3 and "--max-acc-drop" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
