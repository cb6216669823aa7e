"""`export` as a library call: `ttsnn export` without a shell (the job is `export.job`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ttsnn_cli.api.common import Call, ModelLike, apply_options, check_ranges, input_shape as shape_of, json_kwargs
from ttsnn_cli.export.job import ExportJob, run_export
from ttsnn_cli.storage.bundle import ModelIO
from ttsnn_cli.train.threads import check_threads, limited_threads

#: ExportJob fields the API sets from its own arguments
_OWN = ("model", "io", "onnx", "nir")


def export(model: ModelLike, *, onnx: str | Path | None = None, nir: str | Path | None = None, verify: bool = False,
           mode: str = "unrolled", timesteps: int | None = None, input_shape: Any = None, batch: int = 2,
           reconstruct_dense: bool = False, arch: str | None = None, arch_kwargs: dict[str, Any] | str | None = None,
           force: bool = False, trust_pickle: bool = False, trust_arch: bool = False, style: str | None = None,
           threads: int | None = None, **options: Any) -> dict[str, Any]:
    """Write `model` as an ONNX graph (`mode='unrolled'`: x[T, B, ...] -> y[T, B, ...]; `'step'`: one
    timestep, membranes as inputs and outputs) and/or a NIR graph: `ttsnn export`.

    `verify=True` checks the graph in onnxruntime against torch; a mismatch raises
    `ExportVerificationError` (the CLI's exit 5). Returns `ttsnn export --json`'s document (`onnx`,
    `verified`, `max_abs_diff`, `nir`, `mode`, `timesteps`, ...)."""
    with Call(trust_arch) as call:  # every refusal, these too, worded with argument names
        check_ranges(("timesteps", timesteps, 1, None), ("batch", batch, 1, 4096))
        kwargs = json_kwargs(arch_kwargs, "arch_kwargs")
        path = call.model_path(model, "model", arch, kwargs, required=True)
        if not isinstance(model, (str, Path)):
            arch = kwargs = None  # the temporary bundle records them
        job = ExportJob(model=path, onnx=Path(onnx) if onnx is not None else None, mode=mode,  # type: ignore[arg-type]
                        io=ModelIO(shape_of(input_shape), timesteps, None, style), batch=batch,
                        reconstruct_dense=reconstruct_dense, verify=verify, nir=Path(nir) if nir is not None else None,
                        arch=arch, arch_kwargs=kwargs or {}, force=force, trust_pickle=trust_pickle)
        apply_options("export", [job], options, skip=_OWN)
        call.name(job.arch)
        with call.trust(), limited_threads(check_threads(threads)):
            document = run_export(job)
        return call.document(document)
