"""`--plot report.png`: per-layer weights and MACs per timestep (dense vs model, log scale) and,
with `--hw`, the simulated training energy of every schedule split by component. Matplotlib Agg
(headless); the file is written atomically."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from ttsnn_cli.fileio import atomic_write_bytes

DENSE, MODEL = "#9e9e9e", "#1f77b4"
COMPONENTS = (("compute", "#1f77b4"), ("spad", "#2ca02c"), ("sram", "#ff7f0e"), ("dram", "#d62728"), ("static", "#7f7f7f"))


def _bars(ax, names: list[str], dense: list[float | None], model: list[float], ylabel: str, title: str) -> None:
    import numpy as np

    x = np.arange(len(names))
    width = 0.42
    if any(v is not None for v in dense):
        ax.bar(x - width / 2, [v or 0 for v in dense], width, label="dense baseline", color=DENSE)
        ax.bar(x + width / 2, model, width, label="this model", color=MODEL)
    else:
        ax.bar(x, model, width * 2, label="this model", color=MODEL)
    ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.set_title(title, loc="left", fontsize=11)
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=90, fontsize=7)
    ax.set_xlim(-0.7, len(names) - 0.3)
    ax.grid(axis="y", alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))


def plot_report(report: dict[str, Any], path: str | Path) -> Path:
    """Draw the report's figure into ``path`` (PNG) and return the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["layers"]
    names = [row["name"] for row in rows]
    hw = report.get("hw") or {}
    panels = 3 if hw else 2
    fig, axes = plt.subplots(panels, 1, figsize=(max(10, 0.32 * len(names) + 3), 4.2 * panels + 1.5))
    ratios = report.get("ratios") or {}
    base = report.get("baseline") or {}
    weights_title = f"conv + linear weights per layer (total {report['params']['weights']:,}"
    if base:
        weights_title += f" vs dense {base['params']['weights']:,}, {ratios['weights']:.2f}x smaller"
    _bars(axes[0], names, [(r.get("baseline") or {}).get("weights") for r in rows], [r["weights"] for r in rows],
          "weights", weights_title + ")")
    macs_title = f"MACs per timestep per layer, as computed (total {report['macs_per_timestep']:,.0f}"
    if base:
        macs_title += f" vs dense {base['macs_per_timestep']:,.0f}, {ratios['macs']:.2f}x fewer"
    _bars(axes[1], names, [(r.get("baseline") or {}).get("macs_per_timestep") for r in rows],
          [r["macs_per_timestep"] for r in rows], "MACs / timestep", macs_title + ")")
    if hw:
        ax = axes[2]
        schedules = list(hw)
        bottom = [0.0] * len(schedules)
        for component, colour in COMPONENTS:
            values = [hw[s]["breakdown"]["energy_j"].get(component, 0.0) * 1e6 for s in schedules]
            if not any(values):
                continue
            ax.bar(schedules, values, 0.6, bottom=bottom, label=component, color=colour)
            bottom = [b + v for b, v in zip(bottom, values)]
        for i, s in enumerate(schedules):
            res = hw[s]
            ax.annotate(f"{res['energy_j'] * 1e6:,.1f} uJ\n{res['latency_s'] * 1e3:,.1f} ms",
                        (i, bottom[i]), ha="center", va="bottom", fontsize=8)
        accel = report.get("hw_accelerator") or {}
        ax.set_ylabel("training energy per sample (uJ)")
        ax.set_ylim(0, max(bottom) * 1.25 if bottom else 1)
        ax.set_title(f"simulated training energy by component per schedule (accelerator {accel.get('name', '?')}, "
                     f"T = {report['timesteps']}); labels: energy and latency", loc="left", fontsize=11)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.suptitle(f"ttsnn report: {Path(str(report['model'])).name} ({report['arch']}, {report['mode'].upper()})",
                 fontsize=13, x=0.01, ha="left")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())


METHOD_STYLE = {"uniform": ("#7f7f7f", "s"), "budget": ("#1f77b4", "o"), "sensitivity": ("#d62728", "^"),
                "vbmf": ("#2ca02c", "D")}


def plot_sweep(document: dict[str, Any], path: str | Path) -> Path:
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
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())
