"""`ttsnn sweep` and the recipe's sweep stage: the points and their keys, resume (finished points kept),
settings that changed are refused, the Pareto plot, the --max-acc-drop gate (exit 4)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from ttsnn_cli.cli.commands import app
from ttsnn_cli.pipeline.sweep import SweepJob, gates, planned_points
from ttsnn_cli.storage.bundle import get_meta

pytestmark = pytest.mark.usefixtures("one_thread")
runner = CliRunner()
POINT_KEYS = {"method", "target", "param_ratio", "mac_ratio", "accuracy_before", "accuracy_after", "seconds"}




def _sweep(dense: Path, out: Path, *extra: str):
    return runner.invoke(app, ["sweep", str(dense), "--data", "digits", "-o", str(out), "--targets", "6",
                               "--methods", "uniform,budget,sensitivity,vbmf", "--exclude", "stem",
                               "--train-samples", "40", "--calib-samples", "8", "--batch-size", "40", "--json", *extra])


def test_sweep_points_resume_and_refuse_other_settings(tmp_path: Path, dense_bundle: Path) -> None:
    out = tmp_path / "sweep"
    result = _sweep(dense_bundle, out, "--plot", str(tmp_path / "front.png"))
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert [(p["method"], p["target"]) for p in document["points"]] == [
        ("uniform", 6.0), ("budget", 6.0), ("sensitivity", 6.0), ("vbmf", None)]
    for point in document["points"]:
        assert POINT_KEYS <= set(point) and Path(point["output"]).is_file()
        assert point["weight_ratio"] >= (point["target"] or 1) * 0.5  # stem and fc stay dense
    budget6 = next(p for p in document["points"] if p["method"] == "budget" and p["target"] == 6.0)
    uniform6 = next(p for p in document["points"] if p["method"] == "uniform" and p["target"] == 6.0)
    assert budget6["weight_ratio"] > 3 and uniform6["weight_ratio"] > 3
    assert document["output"] == str(out) and 0 <= document["dense_accuracy"] <= 100
    assert (tmp_path / "front.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "sweep.json").read_text())["points"] == document["points"]
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*.tt")}
    # a rerun keeps every finished point (same numbers, files untouched); the plot needs --force
    again = _sweep(dense_bundle, out)
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["points"] == document["points"]
    assert {p: p.stat().st_mtime_ns for p in out.glob("*.tt")} == stamps
    exists = _sweep(dense_bundle, out, "--plot", str(tmp_path / "front.png"))
    assert exists.exit_code == 3 and "exists" in exists.stderr
    other = _sweep(dense_bundle, out, "--lr", "0.5")
    assert other.exit_code == 3 and "other settings" in other.stderr


def test_sweep_bad_options_are_bad_input(tmp_path: Path, dense_bundle: Path) -> None:
    for args, message in ((["--methods", "magic"], "unknown method"), (["--targets", "0.5"], ">= 1"),
                          (["--targets", "x"], "--targets"), (["--mode", "qtt"], "unknown mode")):
        result = _sweep(dense_bundle, tmp_path / "s", *args)
        assert result.exit_code == 3 and message in result.stderr, result.stderr
        assert not (tmp_path / "s").exists()


def test_sweep_records_the_style_asked_for(tmp_path: Path, dense_bundle: Path) -> None:
    """--style reaches every point's bundle (a user network keeps running the way it was told), and a
    style that does not exist is one line, exit 3, before anything is written."""
    from ttsnn_cli.storage.load import load_checkpoint

    bad = _sweep(dense_bundle, tmp_path / "bad", "--style", "sideways")
    assert bad.exit_code == 3 and "--style 'sideways'" in bad.stderr and not (tmp_path / "bad").exists()
    out = tmp_path / "styled"
    result = runner.invoke(app, ["sweep", str(dense_bundle), "--data", "digits", "-o", str(out), "--targets", "6",
                                 "--methods", "uniform", "--exclude", "stem", "--train-samples", "8", "--batch-size",
                                 "8", "--style", "multistep", "--json"])
    assert result.exit_code == 0, result.output
    point = json.loads(result.stdout)["points"][0]
    assert get_meta(load_checkpoint(point["output"])).io.style == "multistep"
    assert json.loads((out / "sweep.json").read_text())["settings"]["style"] == "multistep"


def test_gates_one_per_point() -> None:
    document = {"dense_accuracy": 90.0, "points": [{"method": "budget", "target": 4.0, "accuracy_after": 89.5},
                                                   {"method": "vbmf", "target": None, "accuracy_after": 80.0}]}
    result = gates(document, 1.0)
    assert [(g["point"], g["passed"]) for g in result] == [("budget-4", True), ("vbmf", False)]
    assert gates(document, None) == []
    assert planned_points(SweepJob(Path("m"), "digits", Path("o"), targets=[2.0], methods=["vbmf", "budget"])) == [
        ("vbmf", None), ("budget", 2.0)]


def test_sweep_gate_fails_with_exit_4_and_recipe_stage(tmp_path: Path) -> None:
    """A trained dense model, a point that cannot recover (lr ~ 0): the gate fails, JSON still written."""
    recipe = {
        "name": "front", "data": "digits",
        "model": {"arch": "zoo:digits_csnn", "kwargs": {"width": 4}, "timesteps": 2},
        "train": {"epochs": 1, "batch_size": 32, "lr": 0.1},
        "sweep": {"targets": [30], "methods": ["uniform"], "exclude": ["stem"], "train_samples": 8,
                  "finetune": {"epochs": 1, "lr": 1e-9, "batch_size": 8, "teacher": "source"},
                  "max_acc_drop": 0.0},
    }
    path = tmp_path / "front.yaml"
    path.write_text(yaml.safe_dump(recipe))
    result = runner.invoke(app, ["run", str(path), "--out", str(tmp_path / "run")])
    assert result.exit_code == 4, result.output
    assert "sweep gate failed" in result.stderr and "uniform-30" in result.stderr
    document = json.loads((tmp_path / "run" / "sweep" / "sweep.json").read_text())
    assert document["points"][0]["accuracy_after"] < document["dense_accuracy"]
    assert document["settings"]["teacher_sha256"] is not None  # distilled from the trained dense model
    assert (tmp_path / "run" / "sweep" / "pareto.png").is_file()


def test_sensitivity_curves_measured_once_serve_every_target_they_cover(tmp_path: Path, dense_bundle: Path) -> None:
    """The curves are measured on a grid around the targets and kept in the folder: a later sweep
    whose targets the grid covers reuses them (not re-measured); one outside it measures anew."""
    out = tmp_path / "front"

    def sweep(targets: str):
        return runner.invoke(app, ["sweep", str(dense_bundle), "--data", "digits", "-o", str(out), "--targets",
                                   targets, "--methods", "sensitivity", "--exclude", "stem", "--train-samples", "8",
                                   "--calib-samples", "8", "--batch-size", "8", "--json"])

    assert sweep("4,16").exit_code == 0
    curves = out / "sensitivity.json"
    measured = json.loads(curves.read_text())
    stamp = curves.stat().st_mtime_ns
    assert min(measured["factors"]) <= 2.0 and max(measured["factors"]) >= 32.0  # a factor-2 margin each side
    narrower = sweep("8")
    assert narrower.exit_code == 0, narrower.output
    assert curves.stat().st_mtime_ns == stamp  # served by the stored curves
    assert [p["target"] for p in json.loads(narrower.stdout)["points"]] == [8.0]  # this run's points
    wider = sweep("64")
    assert wider.exit_code == 0, wider.output
    assert max(json.loads(curves.read_text())["factors"]) >= 128.0  # measured again, on the wider grid


def test_fisher_points_keep_their_own_curves_and_the_layer_types_are_settings(tmp_path: Path, dense_bundle: Path) -> None:
    """fisher:X points: curves estimated once into fisher.json (criterion recorded), beside the measured
    sensitivity.json; --layer-types is part of the settings a resumed sweep must share."""
    out = tmp_path / "front"
    args = ["sweep", str(dense_bundle), "--data", "digits", "-o", str(out), "--targets", "4", "--methods",
            "fisher,sensitivity", "--exclude", "stem", "--train-samples", "8", "--calib-samples", "8",
            "--batch-size", "8", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    points = json.loads(result.stdout)["points"]
    assert [p["method"] for p in points] == ["fisher", "sensitivity"]
    assert points[0]["weight_ratio"] > 2.0 and points[0]["rank_method"] == "fisher:4"
    fisher = json.loads((out / "fisher.json").read_text())
    assert fisher["criterion"] == "fisher" and json.loads((out / "sensitivity.json").read_text())["criterion"] == "measured"
    other = runner.invoke(app, args + ["--layer-types", "conv2d,linear"])
    assert other.exit_code == 3 and "other settings" in other.output


def test_budget_on_macs_spends_the_targets_in_macs(tmp_path: Path, dense_bundle: Path) -> None:
    """--budget-on macs: the same target buys more MAC reduction than a weight budget does, the
    setting is recorded, and a method without a target is refused before any work."""
    def run(out: str, *extra: str):
        return runner.invoke(app, ["sweep", str(dense_bundle), "--data", "digits", "-o", str(tmp_path / out),
                                   "--targets", "4", "--methods", "budget,uniform", "--exclude", "stem",
                                   "--train-samples", "8", "--batch-size", "8", "--json", *extra])

    by_weights, by_macs = run("w"), run("m", "--budget-on", "macs")
    assert by_weights.exit_code == 0 and by_macs.exit_code == 0, by_macs.output
    weights = {p["method"]: p for p in json.loads(by_weights.stdout)["points"]}
    macs = {p["method"]: p for p in json.loads(by_macs.stdout)["points"]}
    assert macs["budget"]["mac_ratio"] >= weights["budget"]["mac_ratio"]
    assert macs["budget"]["decomposed_mac_ratio"] >= 4.0 * 0.999  # the budget's own scope reaches the target
    assert weights["budget"]["decomposed_weight_ratio"] >= 4.0 * 0.999
    assert json.loads((tmp_path / "m" / "sweep.json").read_text())["settings"]["budget_on"] == "macs"
    refused = runner.invoke(app, ["sweep", str(dense_bundle), "--data", "digits", "-o", str(tmp_path / "v"),
                                  "--methods", "budget,vbmf", "--budget-on", "macs"])
    assert refused.exit_code == 3 and "vbmf has no target" in refused.output and not (tmp_path / "v").exists()
