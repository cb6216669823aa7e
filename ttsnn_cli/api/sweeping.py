"""`sweep` as a library call: `ttsnn sweep` without a shell (the job is `pipeline.sweep`).

The fine-tuning options of each point (`finetune_epochs`, `batch_size`, `lr`, `distill_*`, `device`,
`precision`, `seed`) build the sweep's TrainConfig as the CLI builds it; other SweepJob fields pass
through by name. Resumable as the command is: a rerun with the same model and settings keeps the
finished points (a module given as the model is the same model when its weights are).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ttsnn_cli.api.common import Call, ModelLike, Progress, apply_options, check_ranges, json_kwargs, names
from ttsnn_cli.compress.sensitivity import DEFAULT_CALIB_SAMPLES
from ttsnn_cli.errors import BadInputError
from ttsnn_cli.pipeline.sweep import SweepJob, run_sweep
from ttsnn_cli.train.engine import TrainConfig
from ttsnn_cli.train.threads import check_threads, limited_threads

#: SweepJob fields the API sets from its own arguments
_OWN = ("model", "out_dir", "finetune", "teacher", "targets", "methods")


def _targets(value: str | Iterable[float]) -> list[float]:
    try:
        if isinstance(value, str):
            return [float(p) for p in value.split(",") if p.strip()]
        return [float(v) for v in value]
    except (TypeError, ValueError):
        raise BadInputError(f"targets= takes shrink factors, e.g. [4, 8, 16] or '4,8,16', got {value!r}") from None


def sweep(model: ModelLike, *, data: str, output: str | Path, targets: str | Iterable[float] = (4, 8, 16, 32),
          methods: str | Iterable[str] = ("budget", "sensitivity", "vbmf"), teacher: ModelLike | None = None,
          finetune_epochs: int = 1, batch_size: int = 64, lr: float = 0.01, distill_weight: float = 0.5,
          distill_temperature: float = 4.0, mode: str = "stt", include: str | Iterable[str] | None = None,
          exclude: str | Iterable[str] | None = None, calib_samples: int = DEFAULT_CALIB_SAMPLES,
          train_samples: int | None = None, timesteps: int | None = None, seed: int = 0, device: str = "auto",
          arch: str | None = None, arch_kwargs: dict[str, Any] | str | None = None, plot: str | Path | None = None,
          max_acc_drop: float | None = None, force: bool = False, trust_pickle: bool = False,
          trust_arch: bool = False, style: str | None = None, precision: str = "fp32",
          tt_kernel: str = "auto", threads: int | None = None, search: bool = False, search_points: int = 8,
          compile: bool = False, progress: Progress | None = None, **options: Any) -> dict[str, Any]:
    """For each rank method and target: compress the dense `model`, evaluate, fine-tune, evaluate
    again: `ttsnn sweep`. `output` is the sweep's folder (sweep.json, one bundle per point);
    `teacher='source'` distils every point from the model itself.

    `search=True` (with `max_acc_drop`) searches each method's targets for the most compressed point
    within `max_acc_drop` of dense instead of running every target; the document then says which
    point it `chosen` and why, and each method's walk under `search`.

    Returns `ttsnn sweep --json`'s document (`dense_accuracy`, `points`, `gates`, `output`, ...); a
    failed `max_acc_drop` gate is `passed: False` in `gates`, not an exception."""
    with Call(trust_arch) as call:  # every refusal, these too, worded with argument names
        check_ranges(("timesteps", timesteps, 1, None), ("finetune_epochs", finetune_epochs, 1, None),
                     ("batch_size", batch_size, 1, None), ("calib_samples", calib_samples, 1, None),
                     ("train_samples", train_samples, 1, None), ("max_acc_drop", max_acc_drop, 0, None),
                     ("search_points", search_points, 1, None))
        kwargs = json_kwargs(arch_kwargs, "arch_kwargs")
        path = call.model_path(model, "model", arch, kwargs, required=True)
        if not isinstance(model, (str, Path)):
            arch = kwargs = None  # the temporary bundle records them
        if isinstance(teacher, str) and teacher == "source":
            teacher_path = path
        else:
            teacher_path = call.model_path(teacher, "teacher")
        config = TrainConfig(epochs=finetune_epochs, batch_size=batch_size, lr=lr, seed=seed, device=device,
                             distill_weight=distill_weight, distill_temperature=distill_temperature, precision=precision,
                             tt_kernel=tt_kernel, threads=check_threads(threads), compile=compile)
        job = SweepJob(model=path, data=data, out_dir=Path(output), targets=_targets(targets),  # type: ignore[arg-type]
                       methods=[m.strip() for m in (methods.split(",") if isinstance(methods, str) else methods) if m.strip()],
                       finetune=config, teacher=teacher_path, mode=mode, include=names(include), exclude=names(exclude),
                       calib_samples=calib_samples, seed=seed, arch=arch, arch_kwargs=kwargs, timesteps=timesteps,
                       max_acc_drop=max_acc_drop, train_samples=train_samples,
                       plot=Path(plot) if plot is not None else None, force=force, trust_pickle=trust_pickle, style=style,
                       search=search, search_points=search_points)
        apply_options("sweep", [job], options, skip=_OWN)
        call.name(job.arch)
        with call.trust(), limited_threads(threads):
            document = run_sweep(job, progress=progress)
        return call.document(document)
