"""Out of sample: which global rank method keeps accuracy after fine-tuning, across nets and recipes?

bench_accuracy.py compared the rank methods on two conv nets trained one way. This study asks the
same question where the answer could not have been tuned in: four networks of three layer kinds,
each trained dense by three different recipes (optimiser, epochs and seed differ), then swept by
`ttsnn sweep` at targets 4, 8, 16 and 32x with every rank method (`uniform`, `budget`,
`sensitivity`, `fisher`: whichever this ttsnn has), fine-tuned for 1 and for 3 epochs (lr 0.02,
cosine, batch 32). Each recipe's seed is also its sweeps' fine-tuning and calibration seed, so "the
mean over 3 seeds" is the mean over the three recipes. Networks, all on digits (16x16), all on CPU:

- `digits_csnn` (zoo, T = 4; the stem conv kept dense);
- `ms_resnet18` (zoo, one input channel, T = 2; dense trained on 720 samples and fine-tuned on 360,
  fewer dense epochs: it is ~10x slower; the stem conv kept dense);
- `conv1d`: bench_layers' audio-style Conv1d SNN, image rows as 16 channels of length 16, T = 4 direct
  (`conv1d_digits` below puts `nn.Flatten(1, 2)` in front); layer types conv1d, linear;
- `mlp`: bench_layers' spiking MLP, one image row per step (T = 16; the data is `digits_rows` below,
  a user dataset of [16, 1, 1, 16] sequences); layer types linear.

Recipes (batch 32, cosine): A SGD lr 0.1, momentum 0.9, 6 epochs, seed 0; B Adam lr 1e-3, 4 epochs,
seed 1; C SGD lr 0.05, momentum 0.9, weight decay 5e-4, 8 epochs, seed 2. MS-ResNet18 trains 3 / 2 / 4
epochs; conv1d and mlp 3x the epochs (seconds each, and the recipes' own epochs leave them far below
bench_layers' dense accuracy).

Results: `<out>/<net>/dense-<recipe>.tt`, the sweeps `<out>/<net>/<recipe>/ft<E>/sweep.json` (every
point kept), `<out>/<net>/summary.json`, and, rebuilt from every `<out>/*/summary.json` present,
`<out>/summary.json` and `<out>/summary.md`: per net x fine-tune epochs x target, each method's
accuracy after fine-tuning (mean over the recipes, with min-max), its weights and MACs ratios, and
its gap to the best method of that cell; per method the mean and worst gap over all cells; and the
two criteria for the recommended default (`--recommend`, `budget`): (a) never more than 0.5 points
below the best other method at any cell, (b) at 32x at least 2 points above `uniform` wherever
`uniform` loses >= 3 points against dense.

Resumable (finished dense models and sweep points are kept; a rerun naming fewer methods or targets
keeps and reports the ones measured before), one process per call; run nets in parallel as separate
processes on the same `--out` (each net locks its own folder, the summary is rebuilt under a lock):

    python benchmarks/bench_rank_methods.py [--out benchmarks/results/rank-methods]
        [--nets digits_csnn,ms_resnet18,conv1d,mlp] [--recipes A,B,C] [--finetune-epochs 1,3]
        [--methods uniform,budget,sensitivity,fisher] [--targets 4,8,16,32] [--recommend budget]
    python benchmarks/bench_rank_methods.py --smoke [--out DIR]   # ~30 s: recipe A, 2 dense epochs, 2 nets
    python benchmarks/bench_rank_methods.py --nets ms_resnet18 --budget-on macs --methods budget,fisher --targets 8
        # the same targets in MACs and in weights, side by side, on the study's dense models

Threads: $OMP_NUM_THREADS (default 1). Smoke results go to a new temporary folder unless --out is
given, and a smoke folder and a real one are never mixed.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Subset, TensorDataset

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the nets and data below are imported by ttsnn as `bench_rank_methods:...`
    sys.path.insert(0, str(HERE))

from bench_accuracy import point_progress  # noqa: E402
from bench_layers import conv1d_net, mlp  # noqa: E402

from ttsnn_cli.data import load_data  # noqa: E402
from ttsnn_cli.data.digits import digits_tensors  # noqa: E402
from ttsnn_cli.pipeline import sweep as sweep_module  # noqa: E402
from ttsnn_cli.pipeline.sweep import SweepJob, run_sweep  # noqa: E402
from ttsnn_cli.storage.bundle import ModelIO, get_meta, save_bundle  # noqa: E402
from ttsnn_cli.storage.outputs import atomic_write_text  # noqa: E402
from ttsnn_cli.storage.trust import build_arch, trusting  # noqa: E402
from ttsnn_cli.train.engine import TrainConfig, fit  # noqa: E402

MODULE = "bench_rank_methods"  # how ttsnn imports this file's factories (HERE is on sys.path)


# ------------------------------------------------------------------------------ nets and data
def conv1d_digits() -> nn.Sequential:
    """bench_layers' Conv1d SNN reading a digits frame [B, 1, 16, 16] as 16 channels of length 16."""
    return nn.Sequential(nn.Flatten(1, 2), *conv1d_net())


def mlp_rows() -> nn.Sequential:
    """bench_layers' spiking MLP reading one step [B, 1, 1, 16] (one image row) as 16 features."""
    return nn.Sequential(nn.Flatten(), *mlp())


def digits_rows() -> tuple[TensorDataset, TensorDataset, int]:
    """digits as sequences: item x [T=16, 1, 1, 16], one image row per step (a user dataset)."""
    xtr, ytr, xte, yte = digits_tensors()

    def rows(x: torch.Tensor) -> torch.Tensor:  # [N, 1, 16, 16] -> [N, 16, 1, 1, 16]
        return x[:, 0, :, None, None, :].contiguous()

    return TensorDataset(rows(xtr), ytr), TensorDataset(rows(xte), yte), 10


TARGETS = [4.0, 8.0, 16.0, 32.0]
FINETUNE = {"batch_size": 32, "lr": 0.02, "schedule": "cosine"}

#: per net: what is built, how it sees the data, what is compressed, and its compute budget
NETS: dict[str, dict[str, Any]] = {
    "digits_csnn": {
        "arch": "zoo:digits_csnn", "kwargs": {}, "data": "digits", "timesteps": 4, "exclude": [r"stem\.conv"],
        "layer_types": None, "dense_samples": None, "train_samples": None, "calib_samples": 256,
        "dense_epochs": {},
    },
    "ms_resnet18": {
        "arch": "zoo:ms_resnet18", "kwargs": {"in_channels": 1, "num_classes": 10}, "data": "digits",
        "timesteps": 2, "exclude": [r"stem\.conv"], "layer_types": None,
        "dense_samples": 720, "train_samples": 360, "calib_samples": 64,
        "dense_epochs": {"A": 3, "B": 2, "C": 4},  # ~10x slower per epoch than the others
    },
    "conv1d": {
        "arch": f"{MODULE}:conv1d_digits", "kwargs": {}, "data": "digits", "timesteps": 4, "exclude": [],
        "layer_types": ["conv1d", "linear"], "dense_samples": None, "train_samples": None, "calib_samples": 256,
        "dense_epochs": {"A": 18, "B": 12, "C": 24},  # 3x: seconds per epoch, and the recipes' epochs stop at ~85 %
    },
    "mlp": {
        "arch": f"{MODULE}:mlp_rows", "kwargs": {}, "data": f"{MODULE}:digits_rows", "timesteps": 16, "exclude": [],
        "layer_types": ["linear"], "dense_samples": None, "train_samples": None, "calib_samples": 256,
        "dense_epochs": {"A": 18, "B": 12, "C": 24},  # 3x: the recipes' epochs stop at ~50 % (bench_layers: 70 %)
    },
}

#: dense training recipes; each recipe's seed also seeds its sweeps (fine-tuning order, subsets, calibration)
RECIPES: dict[str, dict[str, Any]] = {
    "A": {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4, "epochs": 6, "seed": 0},
    "B": {"optimizer": "adam", "lr": 1e-3, "momentum": 0.9, "weight_decay": 0.0, "epochs": 4, "seed": 1},
    "C": {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "epochs": 8, "seed": 2},
}
DEFAULT_METHODS = ["uniform", "budget", "sensitivity", "fisher"]

#: --smoke: the whole pipeline in minutes (numbers meaningless)
SMOKE = {"nets": "digits_csnn,mlp", "recipes": "A", "finetune_epochs": "1", "targets": "8,32",
         "dense_epochs": 2, "dense_samples": 600, "train_samples": 200, "calib_samples": 32}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# ------------------------------------------------------------------------------ locks
@contextlib.contextmanager
def locked(path: Path, wait: bool) -> Iterator[None]:
    """An exclusive flock on `path` for the block; `wait=False` refuses (SystemExit) when it is held."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise SystemExit(f"another bench_rank_methods process is working on {path.parent}; "
                             "run each net in one process only") from None
        yield
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------ the runs
def train_dense(net: str, setup: dict[str, Any], recipe: str, path: Path) -> float | None:
    """The dense model of `net` trained by `recipe`; skipped when `path` exists (resumed when cut off).
    Returns the seconds it took (None when kept)."""
    if path.is_file():
        return None
    started = time.perf_counter()
    plan = RECIPES[recipe] | {"epochs": setup["dense_epochs"].get(recipe, RECIPES[recipe]["epochs"])}
    steps = setup["timesteps"]
    data = load_data(setup["data"], timesteps=steps, augment=True)
    if setup["dense_samples"]:
        order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(plan["seed"]))
        data = replace(data, train=Subset(data.train, sorted(order[: setup["dense_samples"]].tolist())))
    torch.manual_seed(plan["seed"])
    model = build_arch(setup["arch"], setup["kwargs"])
    meta = get_meta(model)
    meta.arch, meta.arch_kwargs = setup["arch"], dict(setup["kwargs"])
    meta.io = ModelIO(tuple(data.input_shape), steps, setup["data"])
    config = TrainConfig(timesteps=steps, batch_size=32, schedule="cosine", **plan)
    output = path.with_suffix(".training")
    resume = output.with_name(output.name + ".resume.pt").is_file()
    result = fit(model, data, config, output, resume=resume,
                 progress=lambda e: e["kind"] == "epoch_end" and log(
                     f"{net} {recipe} dense epoch {e['epoch']}: test {e['test_accuracy']:.2f} %"))
    seconds = time.perf_counter() - started
    meta.history.append({"stage": "train", "data": setup["data"], "recipe": recipe, "epochs": config.epochs,
                         "optimizer": config.optimizer, "lr": config.lr, "seed": config.seed,
                         "test_accuracy": result["test_accuracy"], "seconds": seconds})
    save_bundle(path, model, meta)
    log(f"{net} {recipe} dense: {result['test_accuracy']:.2f} % in {seconds:.0f} s")
    return seconds


def sweep(net: str, setup: dict[str, Any], recipe: str, dense: Path, folder: Path, epochs: int,
          methods: list[str], targets: list[float], budget_on: str = "weights") -> dict[str, Any]:
    """One sweep of one dense model: every method x target, fine-tuned `epochs` epochs.

    sweep.json lists only the points of the methods and targets its last run named, so a rerun with
    fewer (`--methods fisher` once fisher exists) would drop the others from it: the methods and
    targets an earlier run measured here are added to this run's (their points are kept, not redone)."""
    seed = RECIPES[recipe]["seed"]
    earlier = folder / sweep_module.RESULTS
    if earlier.is_file():
        points = json.loads(earlier.read_text()).get("points", [])
        methods = methods + [m for m in dict.fromkeys(p["method"] for p in points)
                             if m not in methods and m in sweep_module.METHODS]
        targets = sorted(set(targets) | {float(p["target"]) for p in points if p["target"] is not None})
    extra: dict[str, Any] = {}
    if setup["layer_types"] is not None:
        extra["layer_types"] = list(setup["layer_types"])
    job = SweepJob(
        model=dense, data=setup["data"], out_dir=folder, targets=targets, methods=methods,
        finetune=TrainConfig(seed=seed, timesteps=setup["timesteps"], epochs=epochs, **FINETUNE),
        exclude=list(setup["exclude"]), calib_samples=setup["calib_samples"], train_samples=setup["train_samples"],
        timesteps=setup["timesteps"], seed=seed, arch=setup["arch"], arch_kwargs=dict(setup["kwargs"]),
        plot=None, force=False, budget_on=budget_on, **extra,
    )

    # Measured curves (sensitivity, fisher) depend on the dense model, the calibration seed and samples,
    # not on the fine-tune: a sibling sweep's curves serve this one (sweep checks their fingerprint and re-measures
    # them when they do not fit), which saves a measurement per recipe.
    kept = sweep_module.CURVES  # one file name, or one per method that measures curves
    for curves in sorted(kept.values()) if isinstance(kept, dict) else [kept]:
        same_budget = [f for f in folder.parent.glob(f"ft*/{curves}")
                       if f.parent.name.endswith("-macs") == (budget_on == "macs")]
        siblings = sorted(same_budget)
        if siblings and not (folder / curves).exists():
            folder.mkdir(exist_ok=True)
            shutil.copyfile(siblings[0], folder / curves)

    with trusting([setup["arch"]]):  # the bundles record this file's factories: the user named them here
        return run_sweep(job, progress=point_progress(f"{net} {recipe} {folder.name}", log, macs=True))


# ------------------------------------------------------------------------------ tables
def _stats(values: list[float]) -> dict[str, Any]:
    return {"mean": statistics.mean(values), "min": min(values), "max": max(values), "values": values}


def net_cells(sweeps: dict[str, dict[int, dict[str, Any]]], epochs_list: list[int]) -> list[dict[str, Any]]:
    """Per fine-tune epochs x target: each method's accuracy after fine-tuning (mean over the recipes
    that have the point), ratios, and gap to the cell's best method."""
    cells = []
    for epochs in epochs_list:
        runs = {recipe: by_ft[epochs] for recipe, by_ft in sweeps.items() if epochs in by_ft}
        if not runs:
            continue
        dense = _stats([doc["dense_accuracy"] for doc in runs.values()])
        targets = sorted({p["target"] for doc in runs.values() for p in doc["points"] if p["target"] is not None})
        for target in targets:
            methods: dict[str, Any] = {}
            for doc in runs.values():
                for p in doc["points"]:
                    if p["target"] == target:
                        methods.setdefault(p["method"], []).append(p)
            row: dict[str, Any] = {}
            for method, points in methods.items():
                row[method] = {"accuracy_after": _stats([p["accuracy_after"] for p in points]),
                               "accuracy_before": _stats([p["accuracy_before"] for p in points]),
                               "weight_ratio": _stats([p["weight_ratio"] for p in points]),
                               "mac_ratio": _stats([p["mac_ratio"] for p in points]),
                               "recipes": len(points)}
            best = max(v["accuracy_after"]["mean"] for v in row.values())
            for value in row.values():
                value["gap_to_best"] = best - value["accuracy_after"]["mean"]
            cells.append({"finetune_epochs": epochs, "target": target, "dense_accuracy": dense,
                          "recipes": sorted(runs), "best": best, "methods": row})
    return cells


def budget_pairs(folder: Path) -> list[dict[str, Any]]:
    """Each point swept with the targets in MACs (`ft<E>-macs`) beside the same method, target, recipe
    and fine-tune with the targets in weights (`ft<E>-weights`, swept beside it): the decomposed layers'
    ratios and accuracy."""
    def scoped(p: dict[str, Any]) -> dict[str, Any]:
        return {"weights_x": p.get("decomposed_weight_ratio"), "macs_x": p.get("decomposed_mac_ratio"),
                "model_macs_x": p["mac_ratio"], "accuracy_after": p["accuracy_after"]}

    pairs = []
    for macs_json in sorted(folder.glob("*/ft*-macs/sweep.json")):
        weights_json = macs_json.parent.with_name(macs_json.parent.name[: -len("-macs")] + "-weights") / "sweep.json"
        if not weights_json.is_file():
            continue
        by_weights = {(p["method"], p["target"]): p for p in json.loads(weights_json.read_text())["points"]}
        for p in json.loads(macs_json.read_text())["points"]:
            twin = by_weights.get((p["method"], p["target"]))
            if twin is not None:
                pairs.append({"recipe": macs_json.parent.parent.name, "finetune_epochs": int(macs_json.parent.name[2:-5]),
                              "method": p["method"], "target": p["target"], "on_weights": scoped(twin),
                              "on_macs": scoped(p)})
    return pairs


def method_gaps(cells: list[dict[str, Any]]) -> dict[str, Any]:
    """Per method: mean and worst gap to the best method over the cells it has."""
    gaps: dict[str, list[float]] = {}
    for cell in cells:
        for method, value in cell["methods"].items():
            gaps.setdefault(method, []).append(value["gap_to_best"])
    return {m: {"mean_gap": statistics.mean(g), "worst_gap": max(g), "cells": len(g)} for m, g in gaps.items()}


def criteria(cells: list[dict[str, Any]], candidate: str) -> dict[str, Any]:
    """The issue's two criteria for `candidate` over `cells` (each carrying its `net`), means over recipes:
    (a) never more than 0.5 points below the best other method at any cell;
    (b) at 32x, at least 2 points above uniform wherever uniform loses >= 3 points against dense."""
    below, lossy, missing = [], [], []
    for cell in cells:
        where = {"net": cell["net"], "finetune_epochs": cell["finetune_epochs"], "target": cell["target"]}
        mine = cell["methods"].get(candidate)
        others = [v["accuracy_after"]["mean"] for m, v in cell["methods"].items() if m != candidate]
        if mine is None:
            missing.append(where)
            continue
        if others:
            below.append(where | {"behind_best_other": max(others) - mine["accuracy_after"]["mean"]})
        uniform = cell["methods"].get("uniform")
        if cell["target"] == 32 and uniform is not None:
            loss = cell["dense_accuracy"]["mean"] - uniform["accuracy_after"]["mean"]
            if loss >= 3.0:
                gain = mine["accuracy_after"]["mean"] - uniform["accuracy_after"]["mean"]
                lossy.append(where | {"uniform_loss": loss, "above_uniform": gain})
    worst = max(below, key=lambda c: c["behind_best_other"], default=None)
    return {  # None: no cell to judge
        "candidate": candidate,
        "cells_missing_candidate": missing,
        "a_worst_cell": worst,
        "a_never_more_than_half_point_below_best_other":
            all(c["behind_best_other"] <= 0.5 for c in below) if below else None,
        "b_lossy_cells_at_32": lossy,
        "b_two_points_above_uniform_where_uniform_loses_3":
            all(c["above_uniform"] >= 2.0 for c in lossy) if lossy else None,
    }


def _spread(stats: dict[str, Any], digits: int = 2) -> str:
    text = f"{stats['mean']:.{digits}f}"
    if len(stats["values"]) < 2:
        return text
    return f"{text} ({stats['min']:.{digits - 1}f}-{stats['max']:.{digits - 1}f})"


def markdown(document: dict[str, Any]) -> str:
    lines = ["# Rank methods out of sample", "",
             "Accuracy after fine-tuning, mean over the dense recipes (min-max); ratios dense / compressed "
             "(mean (min-max) over recipes); gap: points behind the cell's best method.", ""]
    for net, entry in document["nets"].items():
        dense = ", ".join(f"{r} {a:.2f}" for r, a in entry["dense_accuracy"].items())
        lines += [f"## {net} (dense: {dense} %)", ""]
        for epochs in sorted({c["finetune_epochs"] for c in entry["cells"]}):
            first = next(c for c in entry["cells"] if c["finetune_epochs"] == epochs)
            lines += [f"### {net}, fine-tuned {epochs} epoch{'s' if epochs > 1 else ''} "
                      f"(dense {_spread(first['dense_accuracy'])} %, recipes {', '.join(first['recipes'])})", "",
                      "| target | method | recipes | weights x | MACs x | acc. before FT | after FT | gap to best |",
                      "|---|---|---|---|---|---|---|---|"]
            for cell in (c for c in entry["cells"] if c["finetune_epochs"] == epochs):
                for method, v in sorted(cell["methods"].items(), key=lambda kv: kv[1]["gap_to_best"]):
                    lines.append(f"| {cell['target']:g} | {method} | {v['recipes']} | {_spread(v['weight_ratio'])} | "
                                 f"{_spread(v['mac_ratio'])} | {_spread(v['accuracy_before'])} | "
                                 f"{_spread(v['accuracy_after'])} | {v['gap_to_best']:.2f} |")
            lines.append("")
    lines += ["## Per method, all cells", "", "| method | cells | mean gap to best | worst gap to best |",
              "|---|---|---|---|"]
    for method, g in sorted(document["methods"].items(), key=lambda kv: kv[1]["mean_gap"]):
        lines.append(f"| {method} | {g['cells']} | {g['mean_gap']:.2f} | {g['worst_gap']:.2f} |")
    for net, entry in document["nets"].items():
        if entry.get("budget_pairs"):
            lines += ["", f"## {net}: the same target in weights and in MACs (`--budget-on`)", "",
                      "decomposed layers' ratios (dense / TT) and accuracy after fine-tuning", "",
                      "| recipe | FT epochs | method | target | weights x | MACs x | acc. | MAC budget: weights x | "
                      "MACs x | acc. |", "|---|---|---|---|---|---|---|---|---|---|"]
            for q in entry["budget_pairs"]:
                w, m = q["on_weights"], q["on_macs"]
                cell = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731 - older points lack the scoped ratios
                lines.append(f"| {q['recipe']} | {q['finetune_epochs']} | {q['method']} | {q['target']:g} | "
                             f"{cell(w['weights_x'])} | {cell(w['macs_x'])} | {w['accuracy_after']:.2f} | "
                             f"{cell(m['weights_x'])} | {cell(m['macs_x'])} | {m['accuracy_after']:.2f} |")
    rec = document.get("recommendation")
    if rec is not None:
        lines += ["", "## Recommendation", "", rec["text"]]
    for c in document["criteria"].values():
        lines += _criteria_lines(c)
    return "\n".join(lines)


def _criteria_lines(c: dict[str, Any]) -> list[str]:
    lines = ["", f"## Criteria for `{c['candidate']}`", ""]
    worst = c["a_worst_cell"]
    if worst is not None:
        lines.append(f"- (a) never more than 0.5 points below the best other method: "
                     f"**{'yes' if c['a_never_more_than_half_point_below_best_other'] else 'no'}** (worst: "
                     f"{worst['behind_best_other']:.2f} behind, {worst['net']} ft{worst['finetune_epochs']} "
                     f"{worst['target']:g}x)")
    else:
        lines.append("- (a) not measured: no cell has the candidate and another method")
    b = c["b_two_points_above_uniform_where_uniform_loses_3"]
    detail = "; ".join(f"{x['net']} ft{x['finetune_epochs']}: uniform -{x['uniform_loss']:.2f}, "
                       f"{c['candidate']} {x['above_uniform']:+.2f} vs uniform" for x in c["b_lossy_cells_at_32"])
    lines.append("- (b) at 32x, >= 2 points above uniform where uniform loses >= 3: "
                 + ("not applicable (no such cell)" if b is None else f"**{'yes' if b else 'no'}** ({detail})"))
    if c["cells_missing_candidate"]:
        lines.append(f"- cells without `{c['candidate']}`: {len(c['cells_missing_candidate'])}")
    return lines


def recommend(methods: dict[str, Any], judged: dict[str, Any]) -> dict[str, Any] | None:
    """The method the README recommends, as the measurements decide it: among the methods meeting both
    criteria (b counts as met where no cell applies), the smallest mean gap to the best; if none meets
    them, the smallest worst gap (then mean gap), said plainly."""
    if not methods:
        return None
    def passes(m: str) -> bool:
        c = judged[m]
        return bool(c["a_never_more_than_half_point_below_best_other"]) and \
            c["b_two_points_above_uniform_where_uniform_loses_3"] is not False
    meeting = sorted((m for m in methods if m != "uniform" and passes(m)), key=lambda m: methods[m]["mean_gap"])
    if meeting:
        name = meeting[0]
        text = (f"**`{name}`** meets both criteria: never more than 0.5 points below the best other method "
                f"(worst {judged[name]['a_worst_cell']['behind_best_other']:.2f}), mean gap to the best "
                f"{methods[name]['mean_gap']:.2f} points.")
    else:
        name = min(methods, key=lambda m: (methods[m]["worst_gap"], methods[m]["mean_gap"]))
        text = (f"No method meets criterion (a) in every cell (fine-tuning noise between recipes is several "
                f"points). **`{name}`** has the smallest worst gap to the best method "
                f"({methods[name]['worst_gap']:.2f} points; mean {methods[name]['mean_gap']:.2f}).")
    return {"method": name, "meets_criteria": bool(meeting), "text": text}


DOCS_BEGIN, DOCS_END = "<!-- rank-study:begin (bench_rank_methods.py writes this) -->", "<!-- rank-study:end -->"


def docs_block(document: dict[str, Any], out: Path) -> str:
    """The per-method table and the recommendation, as docs/rank-methods.md shows them."""
    lines = [DOCS_BEGIN, "", "| method | cells | mean gap to best | worst gap to best | (a) worst behind best other | (b) at 32x |",
             "|---|---|---|---|---|---|"]
    for method, g in sorted(document["methods"].items(), key=lambda kv: kv[1]["mean_gap"]):
        c = document["criteria"][method]
        worst = c["a_worst_cell"]
        behind = "-" if worst is None else (f"{worst['behind_best_other']:.2f} ({worst['net']} ft{worst['finetune_epochs']} "
                                            f"{worst['target']:g}x)")
        b = c["b_two_points_above_uniform_where_uniform_loses_3"]
        lines.append(f"| {method} | {g['cells']} | {g['mean_gap']:.2f} | {g['worst_gap']:.2f} | {behind} | "
                     f"{'-' if method == 'uniform' else 'n/a' if b is None else 'yes' if b else 'no'} |")
    rec = document.get("recommendation")
    if rec is not None:
        lines += ["", rec["text"]]
    for net, entry in document["nets"].items():
        pairs = entry.get("budget_pairs") or []
        if not pairs:
            continue
        lines += ["", f"{net}, the same target in weights and in MACs (`--budget-on macs`), mean over the recipes "
                  "(the decomposed layers' ratios; accuracy after fine-tuning):", "",
                  "| method | target | FT epochs | weight budget: MACs x | acc. | MAC budget: MACs x | weights x | acc. |",
                  "|---|---|---|---|---|---|---|---|"]
        groups: dict[tuple, list[dict[str, Any]]] = {}
        for q in pairs:
            groups.setdefault((q["method"], q["target"], q["finetune_epochs"]), []).append(q)

        def mean(rows: list[dict[str, Any]], side: str, key: str) -> str:
            values = [r[side][key] for r in rows if r[side][key] is not None]
            return f"{statistics.mean(values):.2f}" if values else "-"

        for (method, target, epochs), rows in sorted(groups.items()):
            lines.append(f"| {method} | {target:g} | {epochs} | {mean(rows, 'on_weights', 'macs_x')} | "
                         f"{mean(rows, 'on_weights', 'accuracy_after')} | {mean(rows, 'on_macs', 'macs_x')} | "
                         f"{mean(rows, 'on_macs', 'weights_x')} | {mean(rows, 'on_macs', 'accuracy_after')} |")
    lines += ["", f"Every cell, every point: `{out}/summary.md` (and each sweep's `sweep.json`).", "", DOCS_END]
    return "\n".join(lines)


def write_docs(path: Path, block: str) -> bool:
    """Replace the marked block in `path` (False when the markers are absent)."""
    text = path.read_text()
    start, end = text.find(DOCS_BEGIN), text.find(DOCS_END)
    if start < 0 or end < start:
        return False
    atomic_write_text(path, text[:start] + block + text[end + len(DOCS_END):])
    return True


def rebuild_summary(out: Path, candidate: str) -> dict[str, Any]:
    """`<out>/summary.{json,md}` from every `<out>/*/summary.json` present (each net may be another
    process's): under a lock, written atomically, so concurrent processes never mix or tear them."""
    with locked(out / ".summary.lock", wait=True):
        nets = {p.parent.name: json.loads(p.read_text()) for p in sorted(out.glob("*/summary.json"))}
        cells = [cell | {"net": net} for net, entry in nets.items() for cell in entry["cells"]]
        methods = method_gaps(cells)
        judged = {m: criteria(cells, m) for m in sorted(methods, key=lambda m: (m != candidate, m))}
        document = {"nets": nets, "methods": methods, "criteria": judged, "recommendation": recommend(methods, judged)}
        atomic_write_text(out / "summary.json", json.dumps(document, indent=1) + "\n")
        atomic_write_text(out / "summary.md", markdown(document))
    return document


# ------------------------------------------------------------------------------ main
def _floats(text: str) -> list[float]:
    return [float(t) for t in text.split(",") if t.strip()]


def _names(text: str, known: dict[str, Any] | list[str], what: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise SystemExit(f"unknown {what} {', '.join(unknown) or '(none given)'}; choose from {', '.join(known)}")
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="default benchmarks/results/rank-methods "
                        "(with --smoke: a new temporary folder)")
    parser.add_argument("--nets", default=",".join(NETS))
    parser.add_argument("--recipes", default=",".join(RECIPES))
    parser.add_argument("--finetune-epochs", default="1,3")
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                        help="rank methods with a target; of the default list, those this ttsnn lacks are skipped")
    parser.add_argument("--targets", default=",".join(f"{t:g}" for t in TARGETS))
    parser.add_argument("--recommend", default="budget", help="the method whose criteria are listed first "
                        "(every method is checked; the recommendation follows from the checks)")
    parser.add_argument("--docs", type=Path, default=Path("docs/rank-methods.md"),
                        help="rewrite this file's marked block with the per-method table and recommendation "
                        "(not with --smoke)")
    parser.add_argument("--budget-on", default="weights", choices=["weights", "macs"],
                        help="macs: sweep the named methods and targets with the targets in MACs per timestep "
                        "(ft<E>-macs/) and in weights (ft<E>-weights/), compared point by point (not part of the "
                        "method study's cells)")
    parser.add_argument("--smoke", action="store_true", help="a tiny end-to-end run (numbers meaningless)")
    args = parser.parse_args()
    given = {option for option, value in vars(args).items() if value != parser.get_default(option)}
    nets_setup = {name: dict(setup) for name, setup in NETS.items()}
    if args.smoke:
        for option in ("nets", "recipes", "finetune_epochs", "targets"):
            if option not in given:
                setattr(args, option, SMOKE[option])
        for setup in nets_setup.values():
            setup.update(dense_samples=SMOKE["dense_samples"], train_samples=SMOKE["train_samples"],
                         calib_samples=SMOKE["calib_samples"], dense_epochs={r: SMOKE["dense_epochs"] for r in RECIPES})
        if args.out is None:
            args.out = Path(tempfile.mkdtemp(prefix="rank-methods-smoke-"))
    out = args.out or Path("benchmarks/results/rank-methods")
    nets = _names(args.nets, NETS, "net")
    recipes = _names(args.recipes, RECIPES, "recipe")
    epochs_list = [int(e) for e in args.finetune_epochs.split(",") if e.strip()]
    targets = _floats(args.targets)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    lacking = [m for m in methods if m not in sweep_module.METHODS]
    if lacking and "methods" in given:
        raise SystemExit(f"this ttsnn has no rank method {', '.join(lacking)} "
                         f"(it has {', '.join(sweep_module.METHODS)})")
    if lacking:
        log(f"skipping {', '.join(lacking)}: not in this ttsnn's sweep methods ({', '.join(sweep_module.METHODS)})")
        methods = [m for m in methods if m not in lacking]
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    out.mkdir(parents=True, exist_ok=True)
    marker = out / ".smoke"  # smoke models and sweeps must never be resumed as the real study's, nor the reverse
    if args.smoke and not marker.exists() and any(out.glob("*/dense-*.tt")):
        raise SystemExit(f"{out} holds the real study's results; give --smoke another --out")
    if not args.smoke and marker.exists():
        raise SystemExit(f"{out} holds a --smoke run's results; choose another --out")
    if args.smoke:
        marker.touch()
    log(f"out {out}: nets {nets}, recipes {recipes}, fine-tune epochs {epochs_list}, methods {methods}, "
        f"targets {[f'{t:g}' for t in targets]}")
    for net in nets:
        setup = nets_setup[net]
        folder = out / net
        folder.mkdir(exist_ok=True)
        started = time.perf_counter()
        with locked(folder / ".bench.lock", wait=False):
            sweeps: dict[str, dict[int, dict[str, Any]]] = {}
            dense_accuracy: dict[str, float] = {}
            timings: dict[str, Any] = {}
            for recipe in recipes:
                dense = folder / f"dense-{recipe}.tt"
                seconds = train_dense(net, setup, recipe, dense)
                if seconds is not None:
                    timings[f"dense-{recipe}"] = seconds
                (folder / recipe).mkdir(exist_ok=True)
                for epochs in epochs_list:
                    if args.budget_on == "macs":  # both budgets, side by side, outside the study's cells
                        for on in ("weights", "macs"):
                            sweep(net, setup, recipe, dense, folder / recipe / f"ft{epochs}-{on}", epochs, methods,
                                  targets, on)
                        continue
                    doc = sweep(net, setup, recipe, dense, folder / recipe / f"ft{epochs}", epochs, methods, targets)
                    sweeps.setdefault(recipe, {})[epochs] = doc
                    dense_accuracy[recipe] = doc["dense_accuracy"]
            # every recipe and fine-tune measured so far for this net, not only this call's
            for sweep_json in sorted(folder.glob("*/ft*/sweep.json")):
                recipe, name = sweep_json.parent.parent.name, sweep_json.parent.name
                if recipe in RECIPES and name[2:].isdigit() and int(name[2:]) not in sweeps.get(recipe, {}):
                    ft = int(name[2:])
                    doc = json.loads(sweep_json.read_text())
                    sweeps.setdefault(recipe, {})[ft] = doc
                    dense_accuracy.setdefault(recipe, doc["dense_accuracy"])
            all_epochs = sorted({ft for by_ft in sweeps.values() for ft in by_ft})
            cells = net_cells(sweeps, all_epochs)
            entry = {"setup": setup | {"finetune": FINETUNE}, "recipes": {r: RECIPES[r] for r in sorted(sweeps)},
                     "dense_accuracy": dict(sorted(dense_accuracy.items())), "cells": cells,
                     "methods": method_gaps(cells),
                     "criteria": criteria([c | {"net": net} for c in cells], args.recommend),
                     "budget_pairs": budget_pairs(folder),
                     "seconds_this_call": time.perf_counter() - started, "dense_training_seconds": timings,
                     "smoke": bool(args.smoke)}
            atomic_write_text(folder / "summary.json", json.dumps(entry, indent=1) + "\n")
        log(f"{net}: {json.dumps(entry['methods'])}")
    document = rebuild_summary(out, args.recommend)
    log(f"recommendation: {json.dumps(document['recommendation'])}")
    log(f"wrote {out / 'summary.md'}")
    if not args.smoke and args.docs.is_file() and write_docs(args.docs, docs_block(document, out)):
        log(f"wrote the study's block in {args.docs}")


if __name__ == "__main__":
    main()
