"""Where a training step's time goes, and how it grows with the batch: the evidence behind issue 11's
"2.5x faster than ttsnn's own dense step", for MS-ResNet18 (3x32x32, T = 4, SGD, the paper's CIFAR10
ranks, PTT), in the process setting of `bench_training.py` (freed memory kept, 2 threads).

1. Per module kind, inside the real step: forward and backward wall time of the TT layers (all four
   cores), dense convs, shortcut convs, BatchNorms and neurons, by stage, from module hooks (full
   backward hooks add a little time of their own; the sum is printed beside the unhooked step).
2. The step time at two batch sizes, interleaved, fitted as fixed + per-sample cost: the ratio of
   the per-sample costs is what the dense/TT ratio tends to at large batches.

    PYTHONPATH=. python benchmarks/bench_breakdown.py [--batch 8] [--small 1] [--steps 7]
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import sys
import time
import warnings

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_training import build, sgd, timed, train_step  # noqa: E402

from ttsnn_cli.allocator import keep_freed_memory  # noqa: E402
from ttsnn_cli.layers import TTConv2d  # noqa: E402
from ttsnn_cli.neurons import MultiStepLIF  # noqa: E402

Totals = dict[str, float]


def _kind(name: str, module: torch.nn.Module) -> str | None:
    """The row a module's time goes to; None for modules inside a TT layer or containers."""
    stage = name.split(".")[0]
    if isinstance(module, TTConv2d):
        return f"TT layers, {stage}"
    if isinstance(module, torch.nn.Conv2d) and ".core" not in name:
        return "shortcut convs" if "shortcut" in name else "stem conv" if stage == "stem" else f"dense convs, {stage}"
    if isinstance(module, torch.nn.BatchNorm2d):
        return "BatchNorm"
    if isinstance(module, MultiStepLIF):
        return "LIF neurons"
    return None


def hooked_times(model: torch.nn.Module, step, steps: int) -> tuple[Totals, Totals]:
    """Mean forward and backward seconds per step of each module kind, measured with hooks."""
    forward: Totals = collections.defaultdict(float)
    backward: Totals = collections.defaultdict(float)
    handles = []
    for name, module in model.named_modules():
        kind = _kind(name, module)
        if kind is None:
            continue
        start: dict[str, float] = {}

        def pre(mod, args, start=start):
            start["f"] = time.perf_counter()

        def post(mod, args, out, start=start, kind=kind):
            forward[kind] += time.perf_counter() - start["f"]

        def bpre(mod, grad, start=start):
            start["b"] = time.perf_counter()

        def bpost(mod, grad_in, grad_out, start=start, kind=kind):
            backward[kind] += time.perf_counter() - start["b"]

        handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post),
                    module.register_full_backward_pre_hook(bpre), module.register_full_backward_hook(bpost)]
    try:
        step()  # warm-up with hooks
        forward.clear(), backward.clear()
        for _ in range(steps):
            step()
    finally:
        for handle in handles:
            handle.remove()
    return {k: v / steps for k, v in forward.items()}, {k: v / steps for k, v in backward.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--small", type=int, default=1, help="the second batch size of the fit")
    parser.add_argument("--steps", type=int, default=7)
    parser.add_argument("--timesteps", type=int, default=4)
    args = parser.parse_args()
    keep_freed_memory()
    torch.set_num_threads(2)
    # the stem's input needs no gradient: its backward hook fires on the output's gradient (the
    # stem's backward is then not timed, a few tenths of a millisecond of weight gradient)
    warnings.filterwarnings("ignore", message="Full backward hook is firing")
    T = args.timesteps
    models = {"dense": build("dense", T).train(), "PTT": build("tt", T).train()}
    optimizers = {k: sgd(m) for k, m in models.items()}
    torch.manual_seed(1)
    batches = {b: (torch.rand(b, 3, 32, 32), torch.randint(0, 10, (b,))) for b in (args.batch, args.small)}

    def stepper(kind: str, batch: int):
        return lambda: train_step(models[kind], optimizers[kind], *batches[batch], T)

    configs = {(k, b): (stepper(k, b),) for k in models for b in batches}
    median = timed(configs, args.steps)
    print(f"MS-ResNet18, T={T}, batch {args.batch}, torch threads {torch.get_num_threads()}, {args.steps} steps")
    print(f"\n{'module kind (forward + backward, ms per step)':<46}{'dense':>10}{'PTT':>10}")
    times = {k: hooked_times(models[k], stepper(k, args.batch), args.steps) for k in models}
    kinds = sorted({kind for fwd, bwd in times.values() for kind in (*fwd, *bwd)})
    for kind in kinds:
        cells = [1e3 * (times[k][0].get(kind, 0.0) + times[k][1].get(kind, 0.0)) for k in models]
        print(f"{kind:<46}" + "".join(f"{c:>10.1f}" for c in cells))
    sums = [1e3 * (sum(times[k][0].values()) + sum(times[k][1].values())) for k in models]
    print(f"{'sum of the rows':<46}" + "".join(f"{s:>10.1f}" for s in sums))
    print(f"{'the whole step, no hooks':<46}" + "".join(f"{1e3 * median[(k, args.batch)]:>10.1f}" for k in models))

    print(f"\n{'fit: step = fixed + batch x per-sample (ms)':<46}{'dense':>10}{'PTT':>10}{'ratio':>10}")
    big, small = args.batch, args.small
    per_sample = {k: (median[(k, big)] - median[(k, small)]) / (big - small) for k in models}
    fixed = {k: median[(k, small)] - small * per_sample[k] for k in models}
    for label, values in (("fixed", fixed), ("per sample", per_sample)):
        print(f"{label:<46}{1e3 * values['dense']:>10.1f}{1e3 * values['PTT']:>10.1f}"
              f"{values['dense'] / values['PTT']:>9.2f}x")
    for b in (small, big):
        print(f"{f'step at batch {b}':<46}{1e3 * median[('dense', b)]:>10.1f}{1e3 * median[('PTT', b)]:>10.1f}"
              f"{median[('dense', b)] / median[('PTT', b)]:>9.2f}x")


if __name__ == "__main__":
    main()
