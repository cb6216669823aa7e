"""report/plot.py's figures say what the numbers mean: an accuracy gain is a gain, the sweep's log2
axis is labelled at any range, and equal stt / ptt_sequential bars come with the reason."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pytest
from report_models import tt_model

from ttsnn_cli.layers.conv2d import TTConv2d
from ttsnn_cli.report.job import ReportJob, build_report
from ttsnn_cli.report.plot import accuracy_change, ratio_ticks, report_figure, sweep_figure

pytestmark = pytest.mark.usefixtures("one_thread")


def _report_doc(accuracy: dict | None = None) -> dict:
    rows = [{"name": "conv1", "type": "tt-stt", "kernel": [3, 3], "ranks": [2, 2, 2], "weights": 40,
             "macs_per_timestep": 900, "baseline": {"weights": 90, "macs_per_timestep": 2000}},
            {"name": "fc", "type": "linear", "kernel": None, "ranks": None, "weights": 50,
             "macs_per_timestep": 50, "baseline": {"weights": 50, "macs_per_timestep": 50}}]
    return {"model": "m.tt", "arch": "zoo:x", "mode": "stt", "timesteps": 4, "layers": rows,
            "params": {"total": 95, "weights": 90}, "macs_per_timestep": 950,
            "baseline": {"params": {"total": 145, "weights": 140}, "macs_per_timestep": 2050},
            "ratios": {"weights": 140 / 90, "macs": 2050 / 950}, "accuracy": accuracy}


def _title(fig) -> str:
    return fig._suptitle.get_text()


def test_accuracy_change_says_gain_or_drop() -> None:
    assert accuracy_change(-1.11) == "gain 1.11 pts"
    assert accuracy_change(2.5) == "drop 2.50 pts"
    assert accuracy_change(0.0) == "drop 0.00 pts"


@pytest.mark.parametrize("model,dense,words", [(97.0, 95.89, "gain 1.11 pts"), (95.0, 96.5, "drop 1.50 pts")])
def test_report_title_says_gain_when_accuracy_rose(model, dense, words) -> None:
    fig = report_figure(_report_doc({"model": model, "baseline": dense, "drop": dense - model}))
    try:
        assert words in _title(fig)
        assert "drop -" not in _title(fig)
    finally:
        plt.close(fig)


def _visible_tick_labels(ax) -> list[str]:
    ax.figure.canvas.draw()
    low, high = ax.get_xlim()
    return [label.get_text() for label, tick in zip(ax.get_xticklabels(), ax.get_xticks())
            if label.get_text() and low <= tick <= high]


@pytest.mark.parametrize("ratios", [(1.1, 1.35, 1.8), (1.02, 1.04), (1.5,), (3.0, 5.0), (2.0, 8.0, 64.0), (1.3, 900.0)])
def test_sweep_axis_is_labelled_at_any_range(ratios) -> None:
    document = {"dense_accuracy": 98.0, "arch": "zoo:digits_csnn", "settings": {"finetune": {"epochs": 1}},
                "points": [{"method": "budget", "target": r, "weight_ratio": r, "accuracy_before": 50.0,
                            "accuracy_after": 90.0} for r in ratios]}
    fig = sweep_figure(document)
    try:
        labels = _visible_tick_labels(fig.axes[0])
        assert len(labels) >= 2, labels
        assert all(label.endswith("x") for label in labels)
        low, high = fig.axes[0].get_xlim()
        assert low <= min(ratios) and max(ratios) <= high  # the points are still in view
    finally:
        plt.close(fig)


def test_ratio_ticks() -> None:
    assert ratio_ticks(1.5, 70.0) == [2.0, 4.0, 8.0, 16.0, 32.0, 64.0]
    narrow = ratio_ticks(1.05, 1.9)
    assert len(narrow) >= 3 and all(1.05 <= t <= 1.9 for t in narrow)
    assert len(ratio_ticks(2.0 ** -20, 2.0 ** 20)) <= 11
    assert ratio_ticks(1.0, 1.0) == [1.0]


def _hw_report(strided: bool) -> dict:
    model = tt_model("digits_csnn", [2, 2, 2], "stt", 2, (1, 16, 16), width=4)
    if strided:  # conv2 at stride 2 (8x8 -> 4x4); the global average pool takes any size
        conv = model.conv2
        model.conv2 = TTConv2d(conv.in_channels, conv.out_channels, (3, 3), (2, 2, 2), "stt", (2, 2), (1, 1), (1, 1),
                               False, timesteps=2)
    return build_report(ReportJob(model=Path("m.tt"), hw=True), model)


def test_equal_stt_and_ptt_sequential_bars_say_why() -> None:
    doc = _hw_report(strided=False)
    stt, ptt = doc["hw"]["stt"], doc["hw"]["ptt_sequential"]
    assert (stt["cycles"], stt["energy_j"]) == (ptt["cycles"], ptt["energy_j"])
    assert "no TT layer is strided" in doc["hw_notes"]["ptt_sequential"]
    fig = report_figure(doc)
    try:
        legend = " ".join(t.get_text() for t in fig.axes[2].get_legend().get_texts()).replace("\n", " ")
        assert "ptt_sequential = stt" in legend and "no TT layer is strided" in legend
        assert any("(see note)" in t.get_text() for t in fig.axes[2].texts)
    finally:
        plt.close(fig)


def test_a_strided_tt_layer_tells_ptt_sequential_from_stt_and_gets_no_note() -> None:
    doc = _hw_report(strided=True)
    assert doc["hw"]["stt"]["cycles"] != doc["hw"]["ptt_sequential"]["cycles"]
    assert doc["hw_notes"] == {}
