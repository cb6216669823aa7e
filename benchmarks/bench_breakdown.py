"""Where a training step's time goes, and how it grows with the batch: the evidence behind a
TT step "2.5x faster than ttsnn's own dense step", for MS-ResNet18 (3x32x32, T = 4, SGD, the paper's CIFAR10
ranks, PTT), in the process setting of `bench_training.py` (freed memory kept, 2 threads).

1. Inside the real step, per stage: forward and backward wall time of the residual path's convs and
   BatchNorms (dense, or TT layers with their BatchNorm), of the neurons and of the shortcuts, from
   module hooks (full backward hooks add a little time of their own; the sum is printed beside the
   unhooked step).
2. The step time at two batch sizes, interleaved, fitted as fixed + per-sample cost: the ratio of
   the per-sample costs is what the dense/TT ratio tends to at large batches.

    PYTHONPATH=. python benchmarks/bench_breakdown.py [--batch 8] [--small 1] [--steps 7]
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import time
import warnings

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_training import build, sgd, timed, train_step  # noqa: E402

from ttsnn_cli.spiking.neurons import MultiStepLIF  # noqa: E402
from ttsnn_cli.train.allocator import keep_freed_memory  # noqa: E402
from ttsnn_cli.zoo.msresnet import MSBlock  # noqa: E402

Totals = dict[str, float]


def _kind(name: str, module: torch.nn.Module) -> str | None:
    """The row a module's time goes to. Hooks go on whole blocks, neurons, shortcuts and the stem,
    never on a TT layer or its BatchNorm: a watched TT layer runs its unfused path
    (`hooks.has_hooks`), so its time is its block's minus the neurons' and the shortcut's."""
    stage = name.split(".")[0]
    if isinstance(module, MSBlock):
        return f"blocks {stage}"
    if isinstance(module, MultiStepLIF):
        return f"LIF {stage}" if stage.startswith("layer") else "LIF head"
    if name.endswith("shortcut") and isinstance(module, torch.nn.Sequential):
        return f"shortcut {stage}"
    if name == "stem":
        return "stem conv + BatchNorm"
    return None


def _rows(total: Totals) -> Totals:
    """Per stage: the residual path's convs and BatchNorms (block minus neurons and shortcut), the
    neurons, the shortcut; then the stem and the head's neuron."""
    rows: Totals = {}
    for stage in sorted({k.split()[-1] for k in total if k.startswith("blocks")}):
        rows[f"{stage}: convs + BatchNorm of the residual path"] = (
            total[f"blocks {stage}"] - total.get(f"LIF {stage}", 0.0) - total.get(f"shortcut {stage}", 0.0))
    rows["all stages: LIF neurons"] = sum(v for k, v in total.items() if k.startswith("LIF layer"))
    rows["all stages: shortcut conv + BatchNorm"] = sum(v for k, v in total.items() if k.startswith("shortcut"))
    rows["stem conv + BatchNorm, head LIF"] = total.get("stem conv + BatchNorm", 0.0) + total.get("LIF head", 0.0)
    return rows


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
    print(f"\n{'forward + backward, ms per step':<58}{'dense':>10}{'PTT':>10}")
    times = {}
    for k in models:
        forward, backward = hooked_times(models[k], stepper(k, args.batch), args.steps)
        times[k] = _rows({kind: forward.get(kind, 0.0) + backward.get(kind, 0.0) for kind in {*forward, *backward}})
    for row in times["PTT"]:
        print(f"{row:<58}" + "".join(f"{1e3 * times[k][row]:>10.1f}" for k in models))
    print(f"{'sum of the rows':<58}" + "".join(f"{1e3 * sum(times[k].values()):>10.1f}" for k in models))
    print(f"{'the whole step, no hooks':<58}" + "".join(f"{1e3 * median[(k, args.batch)]:>10.1f}" for k in models))

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
