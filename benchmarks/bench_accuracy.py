"""The accuracy-compression front on real data: which rank method keeps accuracy at 4-32x?

For each model (digits_csnn, MS-ResNet18 with one input channel), trained dense on scikit-learn's
digits (16x16): `ttsnn sweep` at every target with `uniform` (every layer X times smaller),
`budget` (global, min-max reconstruction error), `vbmf` (the paper's; no target) and `sensitivity`
(global, measured loss), each fine-tuned the same way (same epochs, lr, seed, subset), once
plainly and once distilled from the dense model (`--teacher source`). Everything runs on CPU; the
compute is budgeted (few epochs, MS-ResNet18 at T = 2 on a training subset) so it fits a shared
2-core machine. Results: `<out>/<model>/{plain,distilled}/sweep.json`, the Pareto plots
`<out>/<model>-{plain,distilled}.png`, `<out>/<model>/summary.json` and `<out>/summary.md` with the goals
checked (sensitivity never below uniform; at the most aggressive target where uniform loses >= 3
points, sensitivity recovers at least half; distillation adds >= 0.5 points there).

    python benchmarks/bench_accuracy.py [--out benchmarks/results/accuracy] [--models digits_csnn,ms_resnet18] [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Subset

from ttsnn_cli.data import load_data
from ttsnn_cli.pipeline.sweep import SweepJob, run_sweep
from ttsnn_cli.storage.bundle import ModelIO, get_meta, save_bundle
from ttsnn_cli.storage.trust import build_arch
from ttsnn_cli.train.engine import TrainConfig, fit

#: the compute budget per model (dense training and the fine-tune every sweep point gets)
SETUPS: dict[str, dict[str, Any]] = {
    "digits_csnn": {
        "arch": "zoo:digits_csnn", "kwargs": {}, "timesteps": 4, "exclude": [r"stem\.conv"],
        "dense": {"epochs": 6, "batch_size": 32, "lr": 0.1}, "dense_samples": None,
        "targets": [4.0, 8.0, 16.0, 32.0], "finetune": {"epochs": 1, "batch_size": 32, "lr": 0.02},
        "train_samples": None, "calib_samples": 256,
    },
    "ms_resnet18": {
        "arch": "zoo:ms_resnet18", "kwargs": {"in_channels": 1, "num_classes": 10}, "timesteps": 2,
        "exclude": [r"stem\.conv"],
        "dense": {"epochs": 3, "batch_size": 32, "lr": 0.1}, "dense_samples": 720,
        "targets": [4.0, 8.0, 16.0, 32.0], "finetune": {"epochs": 1, "batch_size": 32, "lr": 0.02},
        "train_samples": 360, "calib_samples": 64,
    },
}
METHODS = ["uniform", "budget", "vbmf", "sensitivity"]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def train_dense(name: str, setup: dict[str, Any], path: Path) -> None:
    """The dense starting point (skipped when `path` exists: the benchmark resumes)."""
    if path.is_file():
        return
    steps = setup["timesteps"]
    data = load_data("digits", timesteps=steps, augment=True)
    if setup["dense_samples"]:
        order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(0))[: setup["dense_samples"]]
        data = replace(data, train=Subset(data.train, sorted(order.tolist())))
    torch.manual_seed(0)
    model = build_arch(setup["arch"], setup["kwargs"])
    meta = get_meta(model)
    meta.arch, meta.arch_kwargs = setup["arch"], dict(setup["kwargs"])
    meta.io = ModelIO(tuple(data.input_shape), steps, "digits")
    config = TrainConfig(timesteps=steps, seed=0, **setup["dense"])
    output = path.with_suffix(".training")
    resume = output.with_name(output.name + ".resume.pt").is_file()  # an interrupted run continues
    result = fit(model, data, config, output, resume=resume,
                 progress=lambda e: e["kind"] == "epoch_end" and log(f"{name} dense epoch {e['epoch']}: "
                                                                      f"test {e['test_accuracy']:.2f} %"))
    meta.history.append({"stage": "train", "data": "digits", "epochs": config.epochs,
                         "test_accuracy": result["test_accuracy"]})
    save_bundle(path, model, meta)


def sweep(name: str, setup: dict[str, Any], dense: Path, out: Path, distilled: bool, seed: int) -> dict[str, Any]:
    """One sweep; `seed` draws the fine-tuning subset, the calibration samples and the fine-tuning
    order (so different seeds may choose different sensitivity ranks, as different users would)."""
    methods = setup.get("distill_methods", METHODS) if distilled else METHODS
    targets = setup.get("distill_targets", setup["targets"]) if distilled else setup["targets"]
    job = SweepJob(
        model=dense, data="digits", out_dir=out, targets=targets, methods=methods,
        finetune=TrainConfig(seed=seed, timesteps=setup["timesteps"], **setup["finetune"]),
        teacher=dense if distilled else None, exclude=setup["exclude"], calib_samples=setup["calib_samples"],
        train_samples=setup["train_samples"], timesteps=setup["timesteps"], seed=seed,
        plot=out.parent / f"{name}-{'distilled' if distilled else 'plain'}.png", force=False,
    )
    if job.plot is not None and job.plot.exists():
        job.plot.unlink()  # redrawn from the (resumed) points
    curves = out.parent / "plain" / "sensitivity.json"
    if distilled and curves.is_file() and not (out / "sensitivity.json").exists():
        out.mkdir(exist_ok=True)  # the same measured curves, hence the same ranks, with and without a teacher
        shutil.copyfile(curves, out / "sensitivity.json")

    return run_sweep(job, progress=point_progress(f"{name} seed {seed} {'distilled' if distilled else 'plain'}", log))


def point_progress(prefix: str, log: Callable[[str], None], macs: bool = False) -> Callable[[dict[str, Any]], None]:
    """A sweep progress callback logging each finished (or kept) point in one line after `prefix`."""

    def progress(event: dict[str, Any]) -> None:
        if event["kind"] == "point":
            p = event["point"]
            how = "kept" if event["skipped"] else f"{p['seconds']:.0f} s"
            mac_ratio = f"{p['mac_ratio']:.2f}x MACs, " if macs else ""
            log(f"{prefix} {p['method']} {p['target']:g}: {p['weight_ratio']:.2f}x weights, {mac_ratio}"
                f"{p['accuracy_before']:.2f} -> {p['accuracy_after']:.2f} % ({how})")

    return progress


def mean_points(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The sweeps of several seeds as one: each point's accuracies averaged, the per-seed values kept
    (`accuracy_after_seeds`); ratios are those of the first seed (sensitivity ranks may differ)."""
    first = runs[0]
    points = []
    for p in first["points"]:
        same = [q for run in runs for q in run["points"] if (q["method"], q["target"]) == (p["method"], p["target"])]
        points.append(p | {
            "accuracy_before": statistics.mean(q["accuracy_before"] for q in same),
            "accuracy_after": statistics.mean(q["accuracy_after"] for q in same),
            "accuracy_after_seeds": [q["accuracy_after"] for q in same],
            "weight_ratio_seeds": [q["weight_ratio"] for q in same]})
    return first | {"points": points, "seeds": len(runs)}


def goals(plain: dict[str, Any], distilled: dict[str, Any] | None) -> dict[str, Any]:
    """The three accuracy targets, checked on the measured points (means over seeds)."""
    dense = plain["dense_accuracy"]
    after = {(p["method"], p["target"]): p["accuracy_after"] for p in plain["points"]}
    targets = sorted({t for m, t in after if m == "uniform"})
    never_below = {f"{t:g}": after[("sensitivity", t)] - after[("uniform", t)] for t in targets}
    lossy = [t for t in targets if dense - after[("uniform", t)] >= 3.0]
    result: dict[str, Any] = {
        "dense_accuracy": dense,
        "sensitivity_minus_uniform": never_below,
        "sensitivity_never_below_uniform": all(v >= 0 for v in never_below.values()),
        "most_aggressive_lossy_target": max(lossy) if lossy else None,
    }
    if lossy:
        t = max(lossy)
        loss = dense - after[("uniform", t)]
        recovered = after[("sensitivity", t)] - after[("uniform", t)]
        result.update({"uniform_loss": loss, "sensitivity_recovered": recovered,
                       "recovered_fraction": recovered / loss, "recovers_half": recovered >= loss / 2})
        if distilled is not None:
            soft = {(p["method"], p["target"]): p["accuracy_after"] for p in distilled["points"]}
            if ("sensitivity", t) in soft:
                gain = soft[("sensitivity", t)] - after[("sensitivity", t)]
                result.update({"distillation_gain_sensitivity": gain, "distillation_adds_half_point": gain >= 0.5})
            if ("uniform", t) in soft:
                result["distillation_gain_uniform"] = soft[("uniform", t)] - after[("uniform", t)]
    return result


def _spread(point: dict[str, Any]) -> str:
    values = point.get("accuracy_after_seeds") or [point["accuracy_after"]]
    text = f"{statistics.mean(values):.2f}"
    return text if len(values) < 2 else f"{text} ({min(values):.1f}-{max(values):.1f})"


def markdown(summary: dict[str, Any]) -> str:
    lines = []
    for name, entry in summary["models"].items():
        seeds = entry["plain"].get("seeds", 1)
        lines.append(f"### {name} (dense {entry['goals']['dense_accuracy']:.2f} %, "
                     f"{seeds} seed{'s' if seeds > 1 else ''}: mean (min-max))\n")
        lines.append("| method | target | weights x | MACs x | acc. before FT | after FT | after FT, distilled |")
        lines.append("|---|---|---|---|---|---|---|")
        soft = {(p["method"], p["target"]): p for p in (entry.get("distilled") or {}).get("points", [])}
        for p in entry["plain"]["points"]:
            d = soft.get((p["method"], p["target"]))
            target = "-" if p["target"] is None else f"{p['target']:g}"
            tuned = "-" if d is None else _spread(d)
            lines.append(f"| {p['method']} | {target} | {p['weight_ratio']:.2f} | {p['mac_ratio']:.2f} | "
                         f"{p['accuracy_before']:.2f} | {_spread(p)} | {tuned} |")
        lines.append("")
        lines.append("goals: `" + json.dumps(entry["goals"]) + "`\n")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/accuracy"))
    parser.add_argument("--models", default="digits_csnn,ms_resnet18")
    parser.add_argument("--no-distill", action="store_true", help="skip the distilled sweeps")
    parser.add_argument("--finetune-epochs", type=int, default=None,
                        help="fine-tuning epochs of every point (default: the model's setup, 1)")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds; tables and goals use the means "
                        "(seed 0 in <out>/<model>/, seed k in <out>/<model>/seed<k>/)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.models.split(","):
        setup = SETUPS[name]
        if args.finetune_epochs is not None:
            setup = setup | {"finetune": setup["finetune"] | {"epochs": args.finetune_epochs}}
        started = time.perf_counter()
        folder = args.out / name
        folder.mkdir(exist_ok=True)
        dense = folder / "dense.tt"
        train_dense(name, setup, dense)
        plains, distills = [], []
        for seed in [int(s) for s in args.seeds.split(",")]:
            where = folder if seed == 0 else folder / f"seed{seed}"
            where.mkdir(exist_ok=True)
            plains.append(sweep(name, setup, dense, where / "plain", distilled=False, seed=seed))
            if not args.no_distill:
                distills.append(sweep(name, setup, dense, where / "distilled", distilled=True, seed=seed))
        plain = mean_points(plains)
        distilled = mean_points(distills) if distills else None
        entry = {"setup": setup, "plain": plain, "distilled": distilled, "goals": goals(plain, distilled),
                 "per_seed_goals": [goals(p, d) for p, d in zip(plains, distills or [None] * len(plains))],
                 "seconds": time.perf_counter() - started}
        (folder / "summary.json").write_text(json.dumps(entry, indent=1) + "\n")
        log(f"{name}: {json.dumps(entry['goals'])}")
    # one table for every model measured so far (each model may run in its own process)
    models = {p.parent.name: json.loads(p.read_text()) for p in sorted(args.out.glob("*/summary.json"))}
    (args.out / "summary.md").write_text(markdown({"models": models}))


if __name__ == "__main__":
    main()
