"""The training input pipeline: batches made on the device from a resident split against a DataLoader.

Two measures, each taken both ways (`TTSNN_DATA_ON_DEVICE` unset: batches made from the resident split,
`train.batches`; `=off`: a DataLoader reading sample by sample, as before), alternating the two ways
round by round (ABBA) and reporting the median:

- input alone: one epoch of training batches (gather, decode, augment; the CIFAR split augments), no
  model, in this process;
- the epoch through the CLI: `ttsnn train --epochs 1 --json` in a fresh process, its `samples_per_s`
  (training batches only, the test pass excluded), for `digits` and for CIFAR-format data written to a
  temporary folder as `bench_cuda.py` writes it (random pixels: the speed does not depend on them).

    python benchmarks/bench_input.py [--device cpu] [--cifar-images 5000] [--rounds 4] [--in-process] [--skip-cli]
        [--json out.json]

`--in-process` adds one epoch through `fit` in this process (the same model, the test pass cut short),
less exposed than fresh processes to whatever else the machine runs.

The model through the CLI is `zoo:digits_csnn` (in_channels 3 for CIFAR); on CUDA give `--arch
zoo:ms_resnet18` for the paper's network (`bench_cuda.py --epoch N` times that one both ways too).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cuda import _write_cifar  # noqa: E402  (the same fabricated CIFAR-format files)

from ttsnn_cli.data import load_data  # noqa: E402
from ttsnn_cli.train.batches import ENV, loader_batches, resident_data  # noqa: E402

WAYS = ("resident", "loader")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def input_alone(spec: str, batch: int, rounds: int, device: torch.device) -> dict[str, float]:
    """Median seconds of one epoch of training batches each way, landed on `device`."""
    data = load_data(spec, timesteps=4, augment=True)
    order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(0)).tolist()
    resident = resident_data(data.train, device)
    assert resident is not None, f"{spec}: no resident form"
    data.train[0]  # the per-sample path's frames made before timing (the reader makes them at first use)

    def one(way: str) -> float:
        _sync(device)
        start = time.perf_counter()
        batches = resident.batches(order, batch) if way == "resident" else loader_batches(data.train, order, batch)
        for x, y in batches:
            x, y = x.to(device), y.to(device)
        _sync(device)
        return time.perf_counter() - start

    times: dict[str, list[float]] = {way: [] for way in WAYS}
    one("resident"), one("loader")  # warm-up
    for index in range(rounds):
        for way in (WAYS if index % 2 == 0 else WAYS[::-1]):
            times[way].append(one(way))
    return {way: statistics.median(values) for way, values in times.items()}


def epoch_in_process(spec: str, in_channels: int, batch: int, rounds: int, device: str) -> dict[str, float]:
    """Median training samples/s of one `fit` epoch each way, in this process (the test pass cut to
    64 samples: it is not timed, only waited for), alternating the ways round by round."""
    from torch.utils.data import Subset

    from ttsnn_cli.data import DataBundle
    from ttsnn_cli.train.engine import TrainConfig, fit
    from ttsnn_cli.zoo import zoo_entry

    full = load_data(spec, timesteps=4, augment=True)
    data = DataBundle(full.name, full.train, Subset(full.test, range(64)), full.input_shape, full.num_classes)
    speeds: dict[str, list[float]] = {way: [] for way in WAYS}
    with tempfile.TemporaryDirectory() as folder:
        for index in range(rounds + 1):
            for way in (WAYS if index % 2 == 0 else WAYS[::-1]):
                torch.manual_seed(0)
                model = zoo_entry("digits_csnn").factory(in_channels=in_channels)
                config = TrainConfig(epochs=1, batch_size=batch, device=device,
                                     data_on_device="auto" if way == "resident" else "off")
                result = fit(model, data, config, Path(folder) / f"{way}{index}.tt")
                if index:  # the first round warms up
                    speeds[way].append(result["history"][-1]["samples_per_s"])
    return {way: statistics.median(values) for way, values in speeds.items()}


def epoch_through_cli(spec: str, arch_args: list[str], batch: int, rounds: int, device: str) -> dict[str, float]:
    """Median training samples/s of `ttsnn train --epochs 1` each way."""
    speeds: dict[str, list[float]] = {way: [] for way in WAYS}
    with tempfile.TemporaryDirectory() as folder:
        for index in range(rounds):
            for way in (WAYS if index % 2 == 0 else WAYS[::-1]):
                env = dict(os.environ)
                env.pop(ENV, None)
                if way == "loader":
                    env[ENV] = "off"
                done = subprocess.run(
                    [sys.executable, "-m", "ttsnn_cli", "train", *arch_args, "--data", spec, "-o",
                     str(Path(folder) / "m.tt"), "--epochs", "1", "--batch-size", str(batch), "--device", device,
                     "--json", "--force"], check=True, capture_output=True, text=True, env=env)
                speeds[way].append(json.loads(done.stdout)["history"][-1]["samples_per_s"])
    return {way: statistics.median(values) for way, values in speeds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cifar-images", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--arch", default="zoo:digits_csnn")
    parser.add_argument("--skip-cli", action="store_true", help="no epoch through the CLI")
    parser.add_argument("--in-process", action="store_true", help="also one epoch through `fit` in this process")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    device = torch.device(args.device)
    results: dict = {"device": args.device, "torch": torch.__version__, "threads": torch.get_num_threads(),
                     "batch": args.batch, "rounds": args.rounds, "cifar_images": args.cifar_images}
    with tempfile.TemporaryDirectory() as folder:
        cifar = f"cifar10:{_write_cifar(Path(folder) / 'data', args.cifar_images)}"
        for name, spec, kwargs in (("digits", "digits", {}), ("cifar", cifar, {"in_channels": 3})):
            alone = input_alone(spec, args.batch, args.rounds, device)
            row = {"input_s": alone, "input_speedup": alone["loader"] / alone["resident"]}
            print(f"{name}: input alone, one epoch: resident {1000 * alone['resident']:.1f} ms, "
                  f"DataLoader {1000 * alone['loader']:.1f} ms ({row['input_speedup']:.1f}x)", file=sys.stderr)
            if args.in_process:
                speed = epoch_in_process(spec, kwargs.get("in_channels", 1), args.batch, args.rounds, args.device)
                row["fit_samples_per_s"] = speed
                row["fit_speedup"] = speed["resident"] / speed["loader"]
                print(f"{name}: epoch through fit: resident {speed['resident']:.0f} samples/s, "
                      f"DataLoader {speed['loader']:.0f} samples/s ({row['fit_speedup']:.2f}x)", file=sys.stderr)
            if not args.skip_cli:
                arch = ["--arch", args.arch] + (["--arch-kwargs", json.dumps(kwargs)] if kwargs else [])
                speed = epoch_through_cli(spec, arch, args.batch, args.rounds, args.device)
                row["samples_per_s"] = speed
                row["epoch_speedup"] = speed["resident"] / speed["loader"]
                print(f"{name}: epoch through the CLI: resident {speed['resident']:.0f} samples/s, "
                      f"DataLoader {speed['loader']:.0f} samples/s ({row['epoch_speedup']:.2f}x)", file=sys.stderr)
            results[name] = row
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
