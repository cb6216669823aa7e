"""Conv1d and TT-matrix Linear layers on real (small) data: compression, accuracy, and speed.

Two SNNs on the embedded digits data (16 x 16 images), trained dense, then compressed by ttsnn at
a few ranks and fine-tuned briefly (same epochs for every rank), all in one run:
- an audio-style Conv1d SNN, image rows as channels and columns as the sequence (16 channels, L = 16),
  T = 4 direct input: Conv1d 16->64 k3, LIF, Conv1d 64->64 k3, LIF, AvgPool1d 2, Linear 512->10, LIF;
  compressed with --layer-types conv1d,linear;
- a spiking MLP with rows as time (T = 16 steps of one 16-pixel row): Linear 16->256, LIF,
  Linear 256->256, LIF, Linear 256->10, LIF; compressed with --layer-types linear (d = 3 cores).
Reported: weights ratio of the decomposed layers (dense / TT) and of the whole net, test accuracy
before and after the fine-tune against dense.

Then forward+backward time of TT-matrix Linear against nn.Linear at those nets' sizes and at
784 x 1000 (batch 256), interleaved repeats, median, ratio TT / dense (< 1: TT faster).

    python benchmarks/bench_layers.py [--epochs 6] [--finetune-epochs 2] [--repeats 30]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import snntorch as snn
import torch
from torch import nn

from ttsnn_cli.compress.decompose import CompressConfig, compress_model
from ttsnn_cli.data.digits import digits_tensors
from ttsnn_cli.layers.linear import TTLinear
from ttsnn_cli.maths.ranks import RankSpec
from ttsnn_cli.maths.tt import factorize
from ttsnn_cli.spiking.runner import run_timesteps


def lif(**kw) -> snn.Leaky:
    return snn.Leaky(beta=0.9, init_hidden=True, **kw)


def conv1d_net() -> nn.Sequential:
    return nn.Sequential(nn.Conv1d(16, 64, 3, padding=1), lif(), nn.Conv1d(64, 64, 3, padding=1), lif(),
                         nn.AvgPool1d(2), nn.Flatten(), nn.Linear(512, 10), lif(output=True))


def mlp() -> nn.Sequential:
    return nn.Sequential(nn.Linear(16, 256), lif(), nn.Linear(256, 256), lif(), nn.Linear(256, 10), lif(output=True))


def as_channels(x: torch.Tensor) -> torch.Tensor:
    """[B, 1, 16, 16] -> [T=4, B, 16, 16]: rows as channels, the same frame every step."""
    return x[:, 0].unsqueeze(0).expand(4, -1, -1, -1)


def as_time(x: torch.Tensor) -> torch.Tensor:
    """[B, 1, 16, 16] -> [T=16, B, 16]: one image row per step."""
    return x[:, 0].permute(1, 0, 2)


def spikes_out(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = run_timesteps(model, x)
    return (out[0] if isinstance(out, tuple) else out).sum(0)


def train(model: nn.Module, data, encode, epochs: int, lr: float, seed: int = 0) -> None:
    xtr, ytr = data
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(ytr), generator=generator).split(64):
            loss = nn.functional.cross_entropy(spikes_out(model, encode(xtr[idx])), ytr[idx])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()


@torch.no_grad()
def accuracy(model: nn.Module, data, encode) -> float:
    model.eval()
    x, y = data
    return 100.0 * float((spikes_out(model, encode(x)).argmax(1) == y).float().mean())


def weights(model: nn.Module) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if not n.endswith("bias"))


def accuracy_table(name: str, factory, encode, layer_types, ranks_list, args, train_set, test_set) -> None:
    torch.manual_seed(0)
    dense = factory()
    train(dense, train_set, encode, args.epochs, 2e-3)
    dense_acc = accuracy(dense, test_set, encode)
    print(f"\n{name}: dense test accuracy {dense_acc:.1f} %, {weights(dense):,} weights")
    print(f"{'ranks':>6} {'decomposed x':>13} {'whole net x':>12} {'acc after SVD':>14} {'after fine-tune':>16} {'vs dense':>9}")
    for ranks in ranks_list:
        config = CompressConfig(RankSpec("fixed", (ranks,) * 3), layer_types=layer_types)
        model, result = compress_model(copy.deepcopy(dense), config)
        totals = result.totals
        before = accuracy(model, test_set, encode)
        train(model, train_set, encode, args.finetune_epochs, 1e-3, seed=1)
        after = accuracy(model, test_set, encode)
        print(f"{ranks:>6} {totals['decomposed_param_ratio']:>12.2f}x {weights(dense) / weights(model):>11.2f}x "
              f"{before:>13.1f}% {after:>15.1f}% {after - dense_acc:>+8.1f}")


def time_step(layer: nn.Module, x: torch.Tensor) -> float:
    start = time.perf_counter()
    layer(x).square().mean().backward()
    return time.perf_counter() - start


def speed_table(repeats: int) -> None:
    print(f"\nforward+backward, batch 256, median of {repeats} interleaved repeats (ms); ratio < 1: TT faster")
    print(f"{'in x out':>10} {'factors (in -> out)':>26} {'ranks':>6} {'weights x':>10} {'dense ms':>9} {'TT ms':>7} {'TT/dense':>9}")
    for features_in, features_out, ranks in [(256, 256, 8), (512, 10, 4), (784, 1000, 8), (784, 1000, 16)]:
        torch.manual_seed(0)
        dense = nn.Linear(features_in, features_out)
        in_f, out_f = factorize(features_in, 3), factorize(features_out, 3)
        tt = TTLinear.from_linear(dense, (ranks, ranks), in_f, out_f)
        x = torch.randn(256, features_in, requires_grad=True)
        times: dict[str, list[float]] = {"dense": [], "tt": []}
        for _ in range(3):  # warm-up
            time_step(dense, x), time_step(tt, x)
        for _ in range(repeats):
            times["dense"].append(time_step(dense, x))
            times["tt"].append(time_step(tt, x))
        d, t = statistics.median(times["dense"]) * 1e3, statistics.median(times["tt"]) * 1e3
        ratio = dense.weight.numel() / sum(c.numel() for c in tt.cores)
        factors = f"{'x'.join(map(str, in_f))} -> {'x'.join(map(str, out_f))}"
        print(f"{features_in:>4}x{features_out:<5} {factors:>26} {ranks:>6} {ratio:>9.1f}x {d:>9.3f} {t:>7.3f} {t / d:>9.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--finetune-epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(1)
    xtr, ytr, xte, yte = digits_tensors()
    train_set, test_set = (xtr, ytr), (xte, yte)
    started = time.perf_counter()
    accuracy_table("audio-style Conv1d SNN (rows as channels, T=4)", conv1d_net, as_channels, ("conv1d", "linear"),
                   [4, 8, 16], args, train_set, test_set)
    accuracy_table("spiking MLP (rows as time, T=16)", mlp, as_time, ("linear",), [4, 8, 16], args, train_set, test_set)
    speed_table(args.repeats)
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
