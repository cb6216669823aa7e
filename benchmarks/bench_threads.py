"""Several trainings at once on one machine: how `--threads` changes the time they take together.

Runs the same `ttsnn train` N times one after another, then N at once, first with torch's default
threads (one per core, per process), then with `--threads K` (default: cores // N, at least 1).
Reported per setting: the wall time of the N runs one after another, of the N at once, their ratio
(at once / one after another), and the N at once against the N one after another with the default
threads (the plain cost of the work; the target is at most 1.25 with --threads).

    python benchmarks/bench_threads.py [--processes 4] [--epochs 1] [--threads K] [--json out.json]

Each run: `ttsnn train --arch zoo:digits_csnn --data digits --epochs E --batch-size 64` into a
temporary folder (the whole digits training split per epoch). Measure on a quiet machine: the figure
compares schedules of the same work, and anything else running shifts both sides unequally.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def command(output: Path, epochs: int, threads: int | None) -> list[str]:
    args = [sys.executable, "-m", "ttsnn_cli", "train", "--arch", "zoo:digits_csnn", "--data", "digits",
            "-o", str(output), "--epochs", str(epochs), "--force", "--json"]
    return args + (["--threads", str(threads)] if threads else [])


def environment(threads: int | None) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # the default setting must really be torch's default
        env.pop(name, None)
    return env


def run_all(folder: Path, processes: int, epochs: int, threads: int | None, together: bool) -> float:
    started = time.perf_counter()
    if together:
        running = [subprocess.Popen(command(folder / f"p{i}.tt", epochs, threads), env=environment(threads),
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for i in range(processes)]
        codes = [p.wait() for p in running]
    else:
        codes = [subprocess.run(command(folder / f"s{i}.tt", epochs, threads), env=environment(threads),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
                 for i in range(processes)]
    if any(codes):
        raise SystemExit(f"a training failed: exit codes {codes}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="per process (default: cores // processes)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    share = args.threads or max(1, cores // args.processes)
    results = []
    baseline = None  # the N runs one after another with torch's default threads: the work's plain cost
    with tempfile.TemporaryDirectory(prefix="bench-threads-") as tmp:
        folder = Path(tmp)
        for label, threads in (("default threads", None), (f"--threads {share}", share)):
            one_by_one = run_all(folder, args.processes, args.epochs, threads, together=False)
            at_once = run_all(folder, args.processes, args.epochs, threads, together=True)
            baseline = baseline or one_by_one
            row = {"setting": label, "processes": args.processes, "cores": cores, "epochs": args.epochs,
                   "one_after_another_s": round(one_by_one, 1), "at_once_s": round(at_once, 1),
                   "ratio": round(at_once / one_by_one, 2),
                   "at_once_vs_default_one_after_another": round(at_once / baseline, 2)}
            results.append(row)
            print(f"{label:>16}: {args.processes} one after another {one_by_one:6.1f} s, at once {at_once:6.1f} s, "
                  f"ratio {at_once / one_by_one:.2f}; at once / default one after another "
                  f"{at_once / baseline:.2f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
