"""`ttsnn report` through the CLI: JSON contract, gates and exit codes (DESIGN.md)."""

from __future__ import annotations

import json

import pytest
from report_models import dense_model, tt_model
from typer.testing import CliRunner

from ttsnn_cli.cli.commands import app
from ttsnn_cli.storage.bundle import ModelIO, get_meta, save_bundle

runner = CliRunner()


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    folder = tmp_path_factory.mktemp("report")
    tt = tt_model("digits_csnn", [4, 4, 4], "ptt", 4, (1, 16, 16), width=8)
    save_bundle(folder / "tt.tt", tt)
    dense = dense_model("digits_csnn", width=8)
    get_meta(dense).io = ModelIO((1, 16, 16), 4, "digits")
    save_bundle(folder / "dense.pt", dense)
    return folder


def _report(*args: str):
    result = runner.invoke(app, ["report", *args])
    return result, (json.loads(result.stdout) if result.stdout.strip().startswith("{") else None)


def test_json_contract(bundles):
    result, doc = _report(str(bundles / "tt.tt"), "--json")
    assert result.exit_code == 0, result.output
    assert set(doc["params"]) >= {"total", "weights"}
    assert doc["macs_per_timestep"] > 0
    assert set(doc["ratios"]) >= {"params", "weights", "macs"}
    assert doc["baseline"]["params"]["weights"] > doc["params"]["weights"]
    assert doc["gates"] == []
    assert doc["training_flops"]["forward"] == 2 * 4 * doc["macs_per_timestep"]


def test_gate_failure_exits_4_with_the_json(bundles):
    result, doc = _report(str(bundles / "tt.tt"), "--json", "--min-param-reduction", "1000", "--min-mac-reduction", "1.01")
    assert result.exit_code == 4
    gates = {g["name"]: g for g in doc["gates"]}
    assert gates["min_param_reduction"]["passed"] is False
    assert gates["min_param_reduction"]["limit"] == 1000
    assert gates["min_mac_reduction"]["passed"] is True
    assert "gate failed" in result.stderr and "Traceback" not in result.output


def test_hw_schedules_and_energy_gate(bundles, tmp_path):
    plot = tmp_path / "r.png"
    result, doc = _report(str(bundles / "tt.tt"), "--json", "--hw", "--max-energy-ratio", "5.0", "--plot", str(plot))
    assert result.exit_code == 0, result.output
    assert list(doc["hw"]) == ["dense", "stt", "ptt_sequential", "ptt_parallel", "htt"]
    for res in doc["hw"].values():
        assert {"cycles", "latency_s", "energy_j", "breakdown"} <= set(res)
    gate = doc["gates"][0]
    assert gate["name"] == "max_energy_ratio" and gate["schedule"] == "ptt_parallel" and gate["passed"]
    notes = {c["name"]: c["paper"] for c in doc["hw_comparisons"]}
    assert "closest to the paper" in notes["ptt_parallel vs stt"]
    assert notes["stt vs dense"].startswith("NOT")
    assert plot.read_bytes()[:4] == b"\x89PNG"


def test_bad_accelerator_is_exit_3_one_line(bundles):
    result, _ = _report(str(bundles / "tt.tt"), "--hw", "--accel", "no-such-accel")
    assert result.exit_code == 3
    assert len(result.stderr.strip().splitlines()) == 1 and "no-such-accel" in result.stderr


def test_acc_drop_needs_data(bundles):
    result, _ = _report(str(bundles / "tt.tt"), "--max-acc-drop", "1")
    assert result.exit_code == 3 and "--data" in result.stderr


def test_missing_model_is_exit_3(tmp_path):
    result, _ = _report(str(tmp_path / "nope.tt"))
    assert result.exit_code == 3


def test_table_output_goes_to_stderr(bundles):
    result, _ = _report(str(bundles / "tt.tt"))
    assert result.exit_code == 0
    assert result.stdout == "" and "weights (conv+linear, paper's)" in result.stderr


@pytest.mark.slow  # evaluates both models on the digits test split
def test_data_measures_spikes_and_accuracy_gate(bundles):
    result, doc = _report(str(bundles / "tt.tt"), "--json", "--data", "digits", "--data-samples", "8", "--hw",
                          "--baseline", str(bundles / "dense.pt"), "--max-acc-drop", "100")
    assert result.exit_code == 0, result.output
    assert doc["synops_per_timestep"]["source"].startswith("measured on digits")
    assert doc["hw_sparsity"]["source"].startswith("measured")
    assert {"model", "baseline", "drop"} <= set(doc["accuracy"])
    assert doc["gates"][0]["name"] == "max_acc_drop" and doc["gates"][0]["passed"]


def test_report_stage_in_a_recipe(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "model: {arch: 'zoo:digits_csnn', kwargs: {width: 8}}\n"
        "compress: {ranks: 4, exclude: ['stem\\.conv']}\n"
        "report: {hw: true, gates: {min_param_reduction: 1000}}\n")
    result = runner.invoke(app, ["run", str(recipe), "--out", str(tmp_path / "out"), "--json"])
    assert result.exit_code == 4, result.output
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["gates"][0]["passed"] is False and "hw" in saved
