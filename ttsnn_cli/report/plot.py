"""`--plot report.png`: per-layer weights and MACs per timestep (dense vs model, log scale) and,
with `--hw`, the simulated training energy of every schedule split by component. Matplotlib Agg
(headless); the file is written atomically.

Layers are named with their type (`tt-stt 3x3 r 8,8,8`, `conv 1x1`, `linear`); in a TT model, the
layers that stayed dense are marked (hatched bars, `[dense]` in the name); the energy panel
highlights the schedule the model itself trains with; with `--data`, the measured test accuracy
(and the dense baseline's, when a trained one is known) is in the title, as a drop or a gain in
points. When two schedules come out equal for a reason (``hw_notes``: stt and ptt_sequential run
the same core shapes when no TT layer is strided), the energy panel says why.

`plot_sweep` draws a sweep's accuracy-compression front; its log2 axis of reductions is labelled at
any range (`ratio_ticks`). `report_figure` / `sweep_figure` return the figures unsaved (tests read them)."""

from __future__ import annotations

import io
import math
import textwrap
from pathlib import Path
from typing import Any

from ttsnn_cli.storage.outputs import atomic_write_bytes

DENSE, MODEL = "#9e9e9e", "#1f77b4"
COMPONENTS = (("compute", "#1f77b4"), ("spad", "#2ca02c"), ("sram", "#ff7f0e"), ("dram", "#d62728"), ("static", "#7f7f7f"))


def layer_label(row: dict[str, Any], tt_model: bool) -> str:
    """`name (type kernel, ranks)`; a layer a TT model kept dense gets `[dense]`."""
    kernel = "x".join(map(str, row["kernel"])) if row.get("kernel") else ""
    kind = " ".join(part for part in (row.get("type", ""), kernel) if part)
    if row.get("ranks"):
        kind += " r " + ",".join(map(str, row["ranks"]))
    label = f"{row['name']} ({kind})"
    if tt_model and is_kept_dense(row):
        label += " [dense]"
    return label


def is_kept_dense(row: dict[str, Any]) -> bool:
    """A conv/linear row without TT cores (in a TT model: skipped by compress)."""
    return not str(row.get("type", "")).startswith("tt")


def accuracy_change(drop: float) -> str:
    """``drop = dense - model`` accuracy in points, said the way it went: ``drop 1.20 pts`` or
    ``gain 1.11 pts`` (never a negative drop)."""
    return f"gain {-drop:.2f} pts" if drop < 0 else f"drop {drop:.2f} pts"


def _bars(ax, names: list[str], dense: list[float | None], model: list[float], ylabel: str, title: str,
          skipped: list[bool] | None = None) -> None:
    import numpy as np

    x = np.arange(len(names))
    width = 0.42
    skipped = skipped or [False] * len(names)
    hatches = ["//" if s else "" for s in skipped]
    if any(v is not None for v in dense):
        ax.bar(x - width / 2, [v or 0 for v in dense], width, label="dense baseline", color=DENSE)
        bars = ax.bar(x + width / 2, model, width, label="this model", color=MODEL)
    else:
        bars = ax.bar(x, model, width * 2, label="this model", color=MODEL)
    for bar, hatch in zip(bars, hatches):
        if hatch:
            bar.set_hatch(hatch)
            bar.set_facecolor("#aec7e8")
    from matplotlib.patches import Patch

    handles = [Patch(facecolor=DENSE, label="dense baseline")] if any(v is not None for v in dense) else []
    handles.append(Patch(facecolor=MODEL, label="this model"))
    if any(skipped):
        handles.append(Patch(facecolor="#aec7e8", hatch="//", label="this model, kept dense"))
    ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.set_title(title, loc="left", fontsize=11)
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=90, fontsize=7)
    for tick, skip in zip(ax.get_xticklabels(), skipped):
        if skip:
            tick.set_color("#7f7f7f")
    ax.set_xlim(-0.7, len(names) - 0.3)
    ax.grid(axis="y", alpha=0.3, which="both")
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))


def plot_report(report: dict[str, Any], path: str | Path) -> Path:
    """Draw the report's figure into ``path`` (PNG) and return the path."""
    return _save(report_figure(report), path)


def _save(fig: Any, path: str | Path) -> Path:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())


def report_figure(report: dict[str, Any]) -> Any:
    """The report's matplotlib figure (the caller saves or closes it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["layers"]
    tt_model = report.get("mode", "dense") != "dense"
    names = [layer_label(row, tt_model) for row in rows]
    skipped = [tt_model and is_kept_dense(row) for row in rows]
    hw = report.get("hw") or {}
    panels = 3 if hw else 2
    fig, axes = plt.subplots(panels, 1, figsize=(max(10, 0.32 * len(names) + 3), 4.2 * panels + 3.0))
    ratios = report.get("ratios") or {}
    base = report.get("baseline") or {}
    weights_title = f"conv + linear weights per layer (total {report['params']['weights']:,}"
    if base:
        weights_title += f" vs dense {base['params']['weights']:,}, {ratios['weights']:.2f}x smaller"
    _bars(axes[0], names, [(r.get("baseline") or {}).get("weights") for r in rows], [r["weights"] for r in rows],
          "weights", weights_title + ")", skipped)
    macs_title = f"MACs per timestep per layer, as computed (total {report['macs_per_timestep']:,.0f}"
    if base:
        macs_title += f" vs dense {base['macs_per_timestep']:,.0f}, {ratios['macs']:.2f}x fewer"
    _bars(axes[1], names, [(r.get("baseline") or {}).get("macs_per_timestep") for r in rows],
          [r["macs_per_timestep"] for r in rows], "MACs / timestep", macs_title + ")", skipped)
    if hw:
        ax = axes[2]
        schedules = list(hw)
        own = report.get("hw_schedule_of_model")
        bottom = [0.0] * len(schedules)
        for component, colour in COMPONENTS:
            values = [hw[s]["breakdown"]["energy_j"].get(component, 0.0) * 1e6 for s in schedules]
            if not any(values):
                continue
            ax.bar(schedules, values, 0.6, bottom=bottom, label=component, color=colour)
            bottom = [b + v for b, v in zip(bottom, values)]
        notes = report.get("hw_notes") or {}
        for i, s in enumerate(schedules):
            res = hw[s]
            mine = s == own
            prefix = "this model\n" if mine else ""
            suffix = "\n(see note)" if s in notes else ""
            ax.annotate(f"{prefix}{res['energy_j'] * 1e6:,.1f} uJ\n{res['latency_s'] * 1e3:,.1f} ms{suffix}",
                        (i, bottom[i]), ha="center", va="bottom", fontsize=8, fontweight="bold" if mine else "normal")
            if mine:
                ax.bar([s], [bottom[i]], 0.66, fill=False, edgecolor="black", linewidth=2.2)
        for tick in ax.get_xticklabels():
            if tick.get_text() == own:
                tick.set_fontweight("bold")
        accel = report.get("hw_accelerator") or {}
        ax.set_ylabel("training energy per sample (uJ)")
        ax.set_ylim(0, max(bottom) * 1.25 if bottom else 1)
        ax.set_title(f"simulated training energy by component per schedule (accelerator {accel.get('name', '?')}, "
                     f"T = {report['timesteps']}); labels: energy and latency", loc="left", fontsize=11)
        ax.grid(axis="y", alpha=0.3)
        handles, _ = ax.get_legend_handles_labels()
        from matplotlib.patches import Patch

        for note in notes.values():  # why two schedules are equal
            handles.append(Patch(facecolor="none", edgecolor="none", label=textwrap.fill(f"note: {note}", 34)))
        ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    title = f"ttsnn report: {Path(str(report['model'])).name} ({report['arch']}, {report['mode'].upper()})"
    accuracy = report.get("accuracy") or {}
    if accuracy.get("model") is not None:
        title += f"; test accuracy {accuracy['model']:.2f} %"
        if accuracy.get("baseline") is not None:
            title += f" (dense {accuracy['baseline']:.2f} %, {accuracy_change(accuracy['drop'])})"
    fig.suptitle(title, fontsize=13, x=0.01, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 0.98))  # room for the suptitle
    return fig


METHOD_STYLE = {"uniform": ("#7f7f7f", "s"), "budget": ("#1f77b4", "o"), "sensitivity": ("#d62728", "^"),
                "vbmf": ("#2ca02c", "D")}


def ratio_ticks(low: float, high: float) -> list[float]:
    """Labelled tick positions for a log2 axis of reductions spanning [low, high]: the powers of two
    inside when there are at least three (thinned to at most 10), else round numbers spaced evenly
    (all points between 1x and 2x, say, still get labels), else the two ends."""
    from matplotlib.ticker import MaxNLocator

    if not (0 < low < high and math.isfinite(high)):
        return [low] if low > 0 and math.isfinite(low) else []
    first, last = math.ceil(math.log2(low) - 1e-9), math.floor(math.log2(high) + 1e-9)
    powers = [2.0 ** k for k in range(first, last + 1)]
    if len(powers) >= 3:
        every = math.ceil(len(powers) / 10)
        return powers[::every]
    ticks = [float(t) for t in MaxNLocator(nbins=6, steps=[1, 2, 2.5, 5, 10]).tick_values(low, high)
             if low <= t <= high]
    return ticks if len(ticks) >= 2 else [low, high]


def _label_ratio_axis(ax: Any) -> None:
    """Ticks from `ratio_ticks` labelled ``1.5x``, ``16x``; no minor labels (they crowd and vanish)."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    low, high = ax.get_xlim()
    ax.xaxis.set_major_locator(FixedLocator(ratio_ticks(low, high)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}x"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlim(low, high)


def plot_sweep(document: dict[str, Any], path: str | Path) -> Path:
    """The accuracy-compression front of a sweep (`sweep_figure`) written to ``path`` (PNG)."""
    return _save(sweep_figure(document), path)


def sweep_figure(document: dict[str, Any]) -> Any:
    """The accuracy-compression front of a sweep: test accuracy after fine-tuning against weight
    reduction (dense / TT conv + linear weights, log scale), one line per method, the accuracy
    before fine-tuning as faint markers, dense accuracy as the reference line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    ax.axhline(document["dense_accuracy"], color="black", linestyle="--", linewidth=1,
               label=f"dense {document['dense_accuracy']:.2f} %")
    methods: dict[str, list[dict[str, Any]]] = {}
    for point in document["points"]:
        methods.setdefault(point["method"], []).append(point)
    for method, points in methods.items():
        points = sorted(points, key=lambda p: p["weight_ratio"])
        colour, marker = METHOD_STYLE.get(method, (None, "o"))
        xs = [p["weight_ratio"] for p in points]
        line = ax.plot(xs, [p["accuracy_after"] for p in points], marker=marker, color=colour, label=method)[0]
        ax.scatter(xs, [p["accuracy_before"] for p in points], marker=marker, color=line.get_color(), alpha=0.25, s=18)
    ax.set_xscale("log", base=2)
    _label_ratio_axis(ax)
    ax.set_xlabel("weight reduction (dense / TT conv + linear weights)")
    ax.set_ylabel("test accuracy after fine-tuning (%)")
    low = min([p["accuracy_after"] for p in document["points"]] + [document["dense_accuracy"]])
    ax.set_ylim(max(0.0, low - 5), min(100.0, document["dense_accuracy"] + 3))
    ax.grid(alpha=0.3, which="both")
    title = f"accuracy-compression front: {document.get('arch') or ''}"
    epochs = (document.get("settings") or {}).get("finetune", {}).get("epochs")
    teacher = (document.get("settings") or {}).get("teacher_sha256")
    title += f" ({epochs} fine-tune epoch{'s' if epochs != 1 else ''}{', distilled' if teacher else ''}; faint: before)"
    ax.set_title(title, loc="left", fontsize=10)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    return fig
