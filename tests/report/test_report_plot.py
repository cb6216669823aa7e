"""report/plot.py: layer names with their type, kept-dense layers marked, the model's own schedule
highlighted, accuracy shown when there is data; the sweep's Pareto plot."""

from __future__ import annotations

import json

import pytest
from report_models import dense_model, tt_model
from typer.testing import CliRunner

from ttsnn_cli.cli.commands import app
from ttsnn_cli.report.plot import is_kept_dense, layer_label, plot_sweep
from ttsnn_cli.storage.bundle import ModelIO, get_meta, save_bundle

pytestmark = pytest.mark.usefixtures("one_thread")


def test_layer_labels_say_type_kernel_ranks_and_kept_dense() -> None:
    tt_row = {"name": "conv1", "type": "tt-ptt", "kernel": [3, 3], "ranks": [4, 4, 4]}
    dense_row = {"name": "stem.conv", "type": "conv", "kernel": [3, 3], "ranks": None}
    assert layer_label(tt_row, True) == "conv1 (tt-ptt 3x3 r 4,4,4)"
    assert layer_label(dense_row, True) == "stem.conv (conv 3x3) [dense]"
    assert layer_label(dense_row, False) == "stem.conv (conv 3x3)"
    assert layer_label({"name": "fc", "type": "linear", "kernel": None, "ranks": None}, True) == "fc (linear) [dense]"
    assert is_kept_dense(dense_row) and not is_kept_dense(tt_row)


def test_report_plot_with_data_shows_accuracy(tmp_path) -> None:
    tt = tt_model("digits_csnn", [4, 4, 4], "ptt", 2, (1, 16, 16), width=4)
    get_meta(tt).io = ModelIO((1, 16, 16), 2, "digits")
    save_bundle(tmp_path / "tt.tt", tt)
    dense = dense_model("digits_csnn", width=4)
    get_meta(dense).io = ModelIO((1, 16, 16), 2, "digits")
    save_bundle(tmp_path / "dense.tt", dense)
    plot = tmp_path / "r.png"
    result = CliRunner().invoke(app, ["report", str(tmp_path / "tt.tt"), "--baseline", str(tmp_path / "dense.tt"),
                                      "--data", "digits", "--data-samples", "8", "--hw", "--plot", str(plot), "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    accuracy = document["accuracy"]
    assert 0 <= accuracy["model"] <= 100 and 0 <= accuracy["baseline"] <= 100
    assert accuracy["drop"] == pytest.approx(accuracy["baseline"] - accuracy["model"])
    assert document["hw_schedule_of_model"] == "ptt_parallel"
    assert plot.read_bytes()[:4] == b"\x89PNG"
    again = CliRunner().invoke(app, ["report", str(tmp_path / "tt.tt"), "--data", "digits", "--data-samples", "8",
                                     "--plot", str(tmp_path / "r2.png")])
    assert again.exit_code == 0, again.output  # no trained baseline known: the model's accuracy only
    assert "accuracy: model" in again.stderr


def test_pareto_plot_of_a_sweep(tmp_path) -> None:
    document = {"dense_accuracy": 98.0, "arch": "zoo:digits_csnn", "settings": {"finetune": {"epochs": 1}},
                "points": [{"method": m, "target": t, "weight_ratio": t or 12.0, "accuracy_before": 50.0,
                            "accuracy_after": 95.0 - (t or 12) / 10}
                           for m in ("uniform", "sensitivity") for t in (4.0, 16.0)] +
                          [{"method": "vbmf", "target": None, "weight_ratio": 12.0, "accuracy_before": 60.0,
                            "accuracy_after": 96.0}]}
    path = plot_sweep(document, tmp_path / "front.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
