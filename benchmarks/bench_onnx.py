"""onnxruntime CPU latency: exported TT model vs exported dense model vs TT --reconstruct-dense.

Same network, T and batch for every variant; each graph is the unrolled export `ttsnn export` writes
(dynamo, input [T, B, C, H, W]). Runs are interleaved (variant A, B, C, A, B, C, ...) so that load
on a shared machine hits every variant alike; the table shows medians and ratios.

Networks (weights random: latency does not depend on their values, and TT layers are built
directly at the given ranks, skipping the decomposition):
  ms_resnet18, 3x32x32, T=4, the paper's CIFAR10 ranks (the TT-SNN paper), PTT and STT;
  digits_csnn (width 32), 1x16x16, T=4, rank 16 (the quickstart's), PTT.

    python benchmarks/bench_onnx.py [--repeats 20] [--batch 8] [--threads 2] [--only digits]

Measured 2026-11-25 (onnxruntime 1.32 CPU, 2 threads on a shared 2-core machine under load, batch 8,
T=4, median of interleaved runs; dense/this = speed-up over the dense graph):
    ms_resnet18 3x32x32   dense 1446 ms | ptt 687 ms (2.11x) | stt 699 ms (2.07x)
                          ptt+reconstruct-dense 1428 ms (1.01x) | stt+reconstruct-dense 1393 ms (1.04x)
    digits_csnn w32       dense 47.9 ms | ptt 23.7 ms (2.03x) | ptt+reconstruct-dense 47.9 ms (1.00x)
The TT graphs meet the >= 1.5x goal; folding back to dense kernels gives the dense speed (same convs).
Export (dynamo) takes 1.5-3.5 min per ms_resnet18 graph here, ~25 s for digits_csnn.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ttsnn_cli.export.onnx import export_onnx
from ttsnn_cli.layers.conv2d import TTConv2d
from ttsnn_cli.zoo import zoo_entry

RESNET18_CIFAR10_RANKS = (24, 27, 25, 29, 37, 45, 43, 41, 65, 74, 70, 63, 104, 153, 186, 145)


def _tt_swap(model: nn.Module, ranks: dict[str, int], mode: str, timesteps: int) -> nn.Module:
    for name, rank in ranks.items():
        conv = model.get_submodule(name)
        assert isinstance(conv, nn.Conv2d)
        layer = TTConv2d(conv.in_channels, conv.out_channels, conv.kernel_size, (rank, rank, rank), mode, conv.stride,
                         conv.padding, conv.dilation, conv.bias is not None, timesteps=timesteps)
        model.set_submodule(name, layer)
    return model.eval()


def networks(only: str | None) -> list[tuple[str, tuple[int, ...], dict[str, nn.Module]]]:
    torch.manual_seed(0)
    out = []
    if only in (None, "resnet18"):
        factory = zoo_entry("ms_resnet18").factory
        names = [f"layer{s}.{b}.conv{c}" for s in range(1, 5) for b in range(2) for c in (1, 2)]
        ranks = dict(zip(names, RESNET18_CIFAR10_RANKS))
        out.append(("ms_resnet18 3x32x32 T=4", (3, 32, 32), {
            "dense": factory().eval(),
            "ptt": _tt_swap(factory(), ranks, "ptt", 4),
            "stt": _tt_swap(factory(), ranks, "stt", 4),
        }))
    if only in (None, "digits"):
        factory = zoo_entry("digits_csnn").factory
        ranks = {"conv1": 16, "conv2": 16, "conv3": 16}
        out.append(("digits_csnn w32 1x16x16 T=4", (1, 16, 16), {
            "dense": factory().eval(),
            "ptt": _tt_swap(factory(), ranks, "ptt", 4),
        }))
    return out


def session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--timesteps", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", choices=["resnet18", "digits"], default=None)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench_onnx_"))
    rows = []
    for title, shape, variants in networks(args.only):
        graphs: dict[str, Path] = {}
        for name, model in variants.items():
            folds = [False] if name == "dense" else [False, True]
            for fold in folds:
                label = name if not fold else f"{name}+reconstruct-dense"
                path = folder / f"{title.split()[0]}_{label}.onnx"
                started = time.perf_counter()
                export_onnx(model, path, args.timesteps, shape, "unrolled", args.batch, reconstruct_dense=fold)
                print(f"[{title}] exported {label} in {time.perf_counter() - started:.0f} s "
                      f"({path.stat().st_size / 1e6:.1f} MB)", file=sys.stderr, flush=True)
                graphs[label] = path
        x = np.random.default_rng(0).random((args.timesteps, args.batch, *shape), dtype=np.float32)
        sessions = {label: session(path, args.threads) for label, path in graphs.items()}
        times: dict[str, list[float]] = {label: [] for label in sessions}
        for _ in range(args.warmup):
            for s in sessions.values():
                s.run(None, {"x": x})
        for _ in range(args.repeats):
            for label, s in sessions.items():
                started = time.perf_counter()
                s.run(None, {"x": x})
                times[label].append(time.perf_counter() - started)
        medians = {label: statistics.median(v) * 1e3 for label, v in times.items()}
        for label, ms in medians.items():
            rows.append((title, label, ms, medians["dense"] / ms, min(times[label]) * 1e3))
    print(f"\nonnxruntime CPU, {args.threads} threads, batch {args.batch}, T={args.timesteps}, "
          f"median of {args.repeats} interleaved runs")
    print(f"{'network':30s} {'graph':24s} {'median ms':>10s} {'min ms':>8s} {'dense/this':>11s}")
    for title, label, ms, ratio, best in rows:
        print(f"{title:30s} {label:24s} {ms:10.2f} {best:8.2f} {ratio:10.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
