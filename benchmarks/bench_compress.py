"""How long `compress` takes on MS-ResNet34's 32 residual convs at the paper's ranks (STT).

Side by side in one run (the machines are shared and noisy): the SVD used inside tensorly's TT-SVD,
`qr_svd` (ours: QR of the long side, then a small SVD) against tensorly's `truncated_svd` and
`randomized_svd`; median of --repeats runs each, interleaved so that load affects all alike.
Random weights are fine for timing (the TT-SNN paper); the relative error column shows what each costs.

    python benchmarks/bench_compress.py [--repeats 3] [--mode stt]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from ttsnn_cli.compress.decompose import CompressConfig, compress_model
from ttsnn_cli.maths.ranks import RankSpec
from ttsnn_cli.storage.trust import build_arch

PAPER_RANKS_R34 = [24, 23, 22, 17, 16, 12, 22, 31, 25, 25, 24, 21, 20, 19, 48, 79, 64, 69, 63, 69, 60, 65, 63, 63, 62, 58,
                   121, 170, 173, 147, 161, 108]


def residual_conv_names(model: torch.nn.Module) -> list[str]:
    return [name for name, m in model.named_modules()
            if isinstance(m, torch.nn.Conv2d) and name.split(".")[-1] in ("conv1", "conv2") and name.startswith("layer")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--mode", default="stt", choices=["stt", "ptt", "htt"])
    parser.add_argument("--methods", default="qr_svd,truncated_svd,randomized_svd")
    args = parser.parse_args()
    torch.manual_seed(0)
    dense = build_arch("zoo:ms_resnet34", {"in_channels": 2, "num_classes": 101})
    names = residual_conv_names(dense)
    assert len(names) == 32, names
    overrides = {f"^{n}$".replace(".", r"\."): r for n, r in zip(names, PAPER_RANKS_R34)}
    methods = args.methods.split(",")
    times: dict[str, list[float]] = {m: [] for m in methods}
    errors: dict[str, float] = {}
    for _ in range(args.repeats):
        for method in methods:
            model = copy.deepcopy(dense)
            config = CompressConfig(RankSpec("fixed", None), mode=args.mode, include=[f"^{n}$" for n in names],
                                    overrides=overrides, timesteps=6, svd=method)
            start = time.perf_counter()
            _, result = compress_model(model, config)
            times[method].append(time.perf_counter() - start)
            errors[method] = statistics.mean(r.rel_error for r in result.layers if r.skipped is None)
    base = statistics.median(times[methods[0]])
    print(f"compress MS-ResNet34, 32 residual convs, paper ranks, mode {args.mode}, torch threads {torch.get_num_threads()}")
    print(f"{'svd':<16}{'median s':>10}{'min s':>8}{'vs ' + methods[0]:>14}{'mean rel. error':>18}")
    for method in methods:
        median = statistics.median(times[method])
        print(f"{method:<16}{median:>10.2f}{min(times[method]):>8.2f}{median / base:>13.2f}x{errors[method]:>18.4f}")


if __name__ == "__main__":
    main()
