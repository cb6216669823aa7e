"""`ttsnn sweep` against a hostile folder and hostile options: the files it keeps (sweep.json, the
sensitivity curves) are validated on read, the curves' fingerprint covers the layer selection, two
writers of one folder never both succeed, targets are finite and reachable, every refusal comes
before the folder is created, and a recipe's sweep folder that is a file is bad input.
Each case: the exit code, exactly one stderr line, no traceback, nothing left behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from ttsnn_cli.cli.commands import app
from ttsnn_cli.errors import BadInputError
from ttsnn_cli.pipeline.sweep import SweepJob, run_sweep
from ttsnn_cli.storage.outputs import standard_json
from ttsnn_cli.train.engine import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")
runner = CliRunner()
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def dense(dense_bundle: Path) -> Path:
    return dense_bundle


def _args(dense: Path, out: Path, targets: str = "6", methods: str = "uniform", *extra: str) -> list[str]:
    return ["sweep", str(dense), "--data", "digits", "-o", str(out), "--targets", targets, "--methods", methods,
            "--exclude", "stem", "--train-samples", "8", "--calib-samples", "8", "--batch-size", "8", "--json", *extra]


def _sweep(dense: Path, out: Path, targets: str = "6", methods: str = "uniform", *extra: str):
    return runner.invoke(app, _args(dense, out, targets, methods, *extra))


def _refused(result: Any, *words: str, code: int = 3) -> None:
    """Exit `code`, one stderr line holding every word, no traceback."""
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output and "internal error" not in result.stderr
    for word in words:
        assert word in lines[0], lines[0]


def _strict_json(path: Path) -> Any:
    """The file as standard JSON: NaN or Infinity fail the test."""
    def refuse(name: str) -> Any:
        raise AssertionError(f"{path} holds {name}")
    return json.loads(path.read_text(), parse_constant=refuse)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_bad_sweep_json_is_one_line_and_force_replaces_it(tmp_path: Path, dense: Path) -> None:
    out = tmp_path / "s"
    assert _sweep(dense, out).exit_code == 0
    good = _strict_json(out / "sweep.json")
    point = good["points"][0]
    variants = {
        "truncated": (out / "sweep.json").read_text()[:40],
        "a list": "[1, 2]",
        "an int": "7",
        "points null": json.dumps(good | {"points": None}),
        "no weight_ratio": json.dumps(good | {"points": [{k: v for k, v in point.items() if k != "weight_ratio"}]}),
        "string numbers": json.dumps(good | {"points": [point | {"weight_ratio": "3.5"}]}),
        "zero ratio": json.dumps(good | {"points": [point | {"mac_ratio": 0}]}),
        "NaN": json.dumps(good | {"dense_accuracy": float("nan")}),
        "huge": json.dumps(good).replace(json.dumps(good["dense_accuracy"]), "1e400", 1),
    }
    fields = {"points null": "points", "no weight_ratio": "weight_ratio", "string numbers": "weight_ratio",
              "zero ratio": "mac_ratio", "NaN": "NaN"}
    for name, text in variants.items():
        (out / "sweep.json").write_text(text)
        before = _snapshot(out)
        result = _sweep(dense, out)
        _refused(result, "sweep.json", fields.get(name, ""), "--force")
        assert _snapshot(out) == before, name  # nothing rewritten
    forced = _sweep(dense, out, "6", "uniform", "--force")  # --force starts afresh over the bad file
    assert forced.exit_code == 0, forced.output
    assert _strict_json(out / "sweep.json")["points"][0]["method"] == "uniform"


def test_bad_sensitivity_curves_are_one_line_and_force_measures_again(tmp_path: Path, dense: Path) -> None:
    out = tmp_path / "s"
    assert _sweep(dense, out, "4,16", "sensitivity").exit_code == 0
    curves = out / "sensitivity.json"
    good = _strict_json(curves)
    layer = good["layers"][0]
    point = layer["points"][0]

    def with_layer(**changes: Any) -> str:
        return json.dumps(good | {"layers": [layer | changes] + good["layers"][1:]})

    variants = {
        "truncated": (curves.read_text()[:60], "not valid JSON"),
        "a list": ("[]", "list"),
        "points null": (with_layer(points=None), "points"),
        "no weights": (with_layer(points=[{k: v for k, v in point.items() if k != "weights"}]), "weights"),
        "string loss": (with_layer(points=[point | {"loss": "0.5"}]), "loss"),
        "zero weights": (with_layer(points=[point | {"weights": 0}]), "weights"),
        "zero dense weights": (with_layer(dense_weights=0), "dense_weights"),
        "edited weights": (with_layer(points=[point | {"weights": point["weights"] + 1}]), "weights"),
        "other layer": (with_layer(name="stem.conv"), "stem.conv"),
        "NaN": (with_layer(points=[point | {"loss": float("nan")}]), "NaN"),
    }
    for name, (text, field) in variants.items():
        curves.write_text(text)
        before = _snapshot(out)
        result = _sweep(dense, out, "8", "sensitivity")  # a target the stored grid covers: the curves are read
        _refused(result, "sensitivity.json", field, "--force")
        assert _snapshot(out) == before, name
    forced = _sweep(dense, out, "8", "sensitivity", "--force")
    assert forced.exit_code == 0, forced.output
    assert [c["name"] for c in _strict_json(curves)["layers"]] == [c["name"] for c in good["layers"]]


def test_curves_fingerprint_covers_the_layer_selection(tmp_path: Path, dense: Path) -> None:
    out = tmp_path / "s"
    assert _sweep(dense, out, "4", "sensitivity").exit_code == 0
    assert {c["name"] for c in _strict_json(out / "sensitivity.json")["layers"]} == {"conv1", "conv2", "conv3"}
    other = _sweep(dense, out, "4", "sensitivity", "--exclude", "conv3")
    _refused(other, "other settings")  # sweep.json's settings differ: refused without --force
    forced = _sweep(dense, out, "4", "sensitivity", "--exclude", "conv3", "--force")
    assert forced.exit_code == 0, forced.output  # the stored curves (other layers) are measured anew
    assert {c["name"] for c in _strict_json(out / "sensitivity.json")["layers"]} == {"conv1", "conv2"}
    assert set(json.loads(forced.stdout)["points"][0]["ranks"]) == {"conv1", "conv2"}


def _hold_lock(folder: Path) -> subprocess.Popen:
    """Another real process holding the sweep folder's lock until its stdin closes."""
    code = ("import fcntl, sys; f = open(sys.argv[1], 'w'); fcntl.flock(f, fcntl.LOCK_EX); "
            "print('locked', flush=True); sys.stdin.read()")
    holder = subprocess.Popen([sys.executable, "-c", code, str(folder / ".sweep.lock")], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    return holder


def test_two_writers_of_one_folder_never_both_succeed(tmp_path: Path, dense: Path) -> None:
    out = tmp_path / "s"
    out.mkdir()
    holder = _hold_lock(out)
    try:  # another process is writing the folder: refused, one line, nothing written
        _refused(_sweep(dense, out), "another ttsnn sweep is writing", str(out))
        assert sorted(p.name for p in out.iterdir()) == [".sweep.lock"]
    finally:
        holder.communicate(timeout=30)
    # two writers at once with different settings (threads, each its own lock): exactly one succeeds
    outcomes: dict[float, Any] = {}

    def write(lr: float) -> None:
        job = SweepJob(dense, "digits", out, targets=[6.0], methods=["uniform"], exclude=["stem"], train_samples=8,
                       finetune=TrainConfig(epochs=1, lr=lr, batch_size=8))
        try:
            outcomes[lr] = run_sweep(job)
        except BadInputError as error:
            outcomes[lr] = error

    threads = [threading.Thread(target=write, args=(lr,)) for lr in (0.01, 0.05)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    won = [o for o in outcomes.values() if isinstance(o, dict)]
    lost = [str(o) for o in outcomes.values() if isinstance(o, BadInputError)]
    assert len(won) == 1 and len(lost) == 1, outcomes
    assert "another ttsnn sweep is writing" in lost[0] or "other settings" in lost[0], lost
    assert _strict_json(out / "sweep.json")["points"] == json.loads(standard_json(won[0]))["points"]


@pytest.mark.slow
def test_two_sweep_processes_race_for_one_folder(tmp_path: Path, dense: Path) -> None:
    """The real thing: two `ttsnn sweep` processes with different settings on one folder."""
    out = tmp_path / "s"
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    commands = [[sys.executable, "-m", "ttsnn_cli", *_args(dense, out, "6", "uniform", *extra)]
                for extra in ((), ("--lr", "0.05"))]
    procs = [subprocess.Popen(c, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for c in commands]
    results = [(p.returncode, out, err) for p in procs for out, err in [p.communicate(timeout=300)]]
    assert sorted(code for code, _, _ in results) == [0, 3], results
    winner = next(i for i, (code, _, _) in enumerate(results) if code == 0)
    loser = results[1 - winner]
    assert len(loser[2].strip().splitlines()) == 1 and "Traceback" not in loser[2], loser[2]
    assert "another ttsnn sweep is writing" in loser[2] or "other settings" in loser[2], loser[2]
    assert _strict_json(out / "sweep.json")["points"] == json.loads(results[winner][1])["points"]


@pytest.mark.parametrize("targets", ["inf", "1e400", "nan", "1e308", "6,6.0000001"])
def test_targets_must_be_finite_and_reachable(tmp_path: Path, dense: Path, targets: str) -> None:
    out = tmp_path / "s"
    result = _sweep(dense, out, targets, "budget,sensitivity")
    _refused(result, "target")
    assert not out.exists()


def test_refusals_leave_no_folder_behind(tmp_path: Path, dense: Path) -> None:
    out = tmp_path / "s"
    _refused(_sweep(dense, out, "6", "uniform", "--include", "("), "--include", "regular expression")
    assert not out.exists()
    _refused(_sweep(dense, out, "6", "uniform", "--exclude", ".*"), "no layer to decompose")
    assert not out.exists()
    compressed = tmp_path / "tt.tt"
    made = runner.invoke(app, ["compress", str(dense), "-o", str(compressed), "--ranks", "2", "--exclude", "stem"])
    assert made.exit_code == 0, made.output
    _refused(_sweep(compressed, out), "already TT-compressed")
    assert not out.exists()
    long_plot = out / "plots" / ("p" * 300 + ".png")  # refused once the folder exists: it is removed again
    _refused(_sweep(dense, out, "6", "uniform", "--plot", str(long_plot)), "too long")
    assert not out.exists()
    plotted = _sweep(dense, out, "6", "uniform", "--plot", str(out / "plots" / "front.png"))
    assert plotted.exit_code == 0, plotted.output
    assert (out / "plots" / "front.png").is_file()
    link = tmp_path / "dangling"
    link.symlink_to(tmp_path / "nowhere")
    _refused(_sweep(dense, link), "symbolic link")
    assert link.is_symlink() and not (tmp_path / "nowhere").exists()


def test_recipe_sweep_folder_that_is_a_file_is_bad_input(tmp_path: Path, dense: Path) -> None:
    recipe = {"name": "front", "data": "digits",
              "model": {"arch": "zoo:digits_csnn", "kwargs": {"width": 4}, "checkpoint": str(dense)},
              "sweep": {"targets": [6], "methods": ["uniform"], "exclude": ["stem"], "train_samples": 8,
                        "finetune": {"epochs": 1, "batch_size": 8}}}
    path = tmp_path / "front.yaml"
    path.write_text(yaml.safe_dump(recipe))
    run = tmp_path / "run"
    run.mkdir()
    (run / "sweep").write_text("not a folder")
    result = runner.invoke(app, ["run", str(path), "--out", str(run), "--force"])
    _refused(result)
    assert "file" in result.stderr.replace(str(tmp_path), "") and "sweep" in result.stderr.replace(str(tmp_path), "")
    assert (run / "sweep").read_text() == "not a folder"
