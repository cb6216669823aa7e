"""`compress` as a library call: `ttsnn compress` without a shell (the job is `compress.job`).

Arguments are the CLI's options, built into the CompressJob exactly as `cli/compress.py` builds it;
any other CompressJob field passes through by name. `--recipe` is the one option left to the
command line (a recipe's `model` and `compress` sections are the API's arguments here).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from torch import nn

from ttsnn_cli.api.common import (
    Call,
    ModelLike,
    Progress,
    apply_options,
    check_ranges,
    comma_text,
    input_shape as shape_of,
    json_kwargs,
    names,
)
from ttsnn_cli.compress.job import CompressJob, run_compress
from ttsnn_cli.compress.sensitivity import DEFAULT_CALIB_SAMPLES
from ttsnn_cli.storage.bundle import ModelIO
from ttsnn_cli.train.threads import check_threads, limited_threads

#: CompressJob fields the API sets from its own arguments
_OWN = ("output", "checkpoint", "io")


def compress(model: ModelLike | None = None, *, output: str | Path | None = None, arch: str | None = None,
             arch_kwargs: dict[str, Any] | str | None = None, ranks: int | str | Iterable[int] | None = None,
             rank_method: str | None = None, mode: str = "stt", include: str | Iterable[str] | None = None,
             exclude: str | Iterable[str] | None = None, timesteps: int | None = None,
             input_shape: str | Iterable[int] | None = None, layer_types: str | Iterable[str] | None = None,
             linear_cores: int | None = None, svd: str = "qr_svd", seed: int = 0, data: str | None = None,
             calib_samples: int = DEFAULT_CALIB_SAMPLES, force: bool = False, trust_pickle: bool = False,
             trust_arch: bool = False, style: str | None = None, allow_growth: bool = False, threads: int | None = None,
             budget_on: str | None = None, device: str | None = None,
             progress: Progress | None = None, **options: Any) -> tuple[nn.Module, dict[str, Any]]:
    """Decompose every eligible layer of a dense model by TT-SVD: `ttsnn compress`.

    `model` is a module, a path (a bundle, or a state_dict with `arch=`), or None with
    `arch='zoo:NAME'` to plan on a freshly initialised zoo model. `ranks` is an int, `(r1, r2, r3)`
    or `"r1,r2,r3"`; `rank_method` `fixed`, `vbmf`, `energy:F`, `budget:X`, `uniform:X` or
    `sensitivity:X` (with `data=`); `budget_on` what their X counts: `weights`, `macs` (per timestep,
    at the input shape) or `time` (measured per layer on `device`). `output` is the TT bundle to
    write (None: none written).

    Returns `(model, document)`: the TT module (the same module tree, layers swapped) and
    `ttsnn compress --json`'s document (`layers`, `totals`, `ratios`, `budget`, `mode`, `output`,
    `warnings`)."""
    with Call(trust_arch) as call:  # every refusal, these too, worded with argument names
        check_ranges(("timesteps", timesteps, 1, None), ("seed", seed, 0, 2**63 - 1), ("linear_cores", linear_cores, 1, 8))
        kwargs = json_kwargs(arch_kwargs, "arch_kwargs")
        target, wanted = call.output_path(output, "compressed.tt")
        checkpoint = call.model_path(model, "model", arch, kwargs)
        if isinstance(model, nn.Module):
            arch = kwargs = None  # the temporary bundle records them
        job = CompressJob(output=target, checkpoint=checkpoint, arch=arch, arch_kwargs=kwargs or {},
                          ranks=comma_text(ranks), rank_method=rank_method, mode=mode, include=names(include),
                          exclude=names(exclude), io=ModelIO(shape_of(input_shape), timesteps, None, style), svd=svd,
                          seed=seed, force=force, trust_pickle=trust_pickle, layer_types=comma_text(layer_types),
                          linear_cores=linear_cores or 3, data=data, calib_samples=calib_samples,
                          allow_growth=allow_growth, budget_on=budget_on or "weights", device=device)
        apply_options("compress", [job], options, skip=_OWN)
        call.name(job.arch)
        with call.trust(), limited_threads(check_threads(threads)):
            tt_model, document = run_compress(job, progress=progress)
        document = call.document(document)
        if not wanted:
            document["output"] = None
        return tt_model, document
