"""One export job: load the model, resolve T and the input shape, write ONNX (and NIR), verify.

Shared by `ttsnn export` and the recipe's export stage. Every path is validated before any work;
every file is written atomically. The NIR graph is built before the ONNX is written, so a network
NIR cannot express is refused before any output exists, whatever combination of outputs was asked.
Returns the contract's JSON-ready dict (DESIGN.md: `onnx`, `verified`, `max_abs_diff`, `nir`, plus
`mode`, `timesteps`, `input_shape`, `batch`, `opset`, `onnx_bytes`, `spike_agreement`,
`reconstruct_dense`, `tt`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from ttsnn_cli.errors import BadInputError
from ttsnn_cli.spiking.budget import check_run_fits, check_sizes
from ttsnn_cli.spiking.runner import apply_style, resolve_timesteps
from ttsnn_cli.storage.bundle import ModelIO, get_meta, tt_config
from ttsnn_cli.storage.load import load_checkpoint
from ttsnn_cli.storage.outputs import check_output_path, same_file
from ttsnn_cli.storage.trust import zoo_io

MODES = ("unrolled", "step")
#: most tensor operations an unrolled graph may hold (T x a step's): tracing 4,368 (digits_csnn at T=48)
#: takes about a minute on two CPU cores and the time grows faster than T
MAX_UNROLLED_OPS = 8192


@dataclass
class ExportJob:
    model: Path
    onnx: Path | None
    mode: str = "unrolled"
    io: ModelIO = field(default_factory=ModelIO)
    batch: int = 2
    reconstruct_dense: bool = False
    verify: bool = False
    nir: Path | None = None
    arch: str | None = None
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    force: bool = False
    trust_pickle: bool = False


def resolve_io(model: nn.Module, io: ModelIO) -> tuple[int, tuple[int, ...]]:
    """T and the per-step input shape: options over the bundle over the zoo's defaults."""
    meta = get_meta(model)
    merged = zoo_io(meta.arch, meta.arch_kwargs).merged(meta.io).merged(io)
    apply_style(model, io.style)
    if merged.input_shape is not None:  # before resolve_timesteps, whose own-loop probe allocates the input
        check_sizes(tuple(merged.input_shape), merged.timesteps or 1, what="export")
    merged.timesteps = resolve_timesteps(model, merged.input_shape, io.timesteps, merged.timesteps)
    if merged.timesteps is None:
        raise BadInputError("the number of timesteps is unknown: pass --timesteps T")
    if merged.input_shape is None:
        raise BadInputError("the per-step input shape is unknown: pass --input-shape C,H,W")
    return int(merged.timesteps), tuple(merged.input_shape)


def check_export_size(model: nn.Module, timesteps: int, input_shape: tuple[int, ...], job: ExportJob) -> None:
    """Refuse, before tracing, an export whose runs cannot fit in memory (`spiking.budget`) or whose
    unrolled graph would hold more than MAX_UNROLLED_OPS operations: the unrolled graph repeats every
    operation of a step T times, and tracing and optimising it grows faster than T (minutes, and
    gigabytes, at a few hundred steps of a small network), while the step graph is one step whatever T."""
    cost = check_run_fits(model, input_shape, timesteps, batch=max(2, job.batch), what="export")
    if job.onnx is None or job.mode != "unrolled" or cost is None:
        return
    ops = cost.ops * timesteps
    if ops > MAX_UNROLLED_OPS:
        most = max(1, MAX_UNROLLED_OPS // max(cost.ops, 1))
        raise BadInputError(f"an unrolled export at T={timesteps} would hold about {ops:,} operations "
                            f"({cost.ops:,} per step), more than the {MAX_UNROLLED_OPS:,} ttsnn traces; pass --mode "
                            f"step (one step, run T times with its states fed back) or at most --timesteps {most}")


def run_export(job: ExportJob) -> dict[str, Any]:
    from ttsnn_cli.export.onnx import export_onnx

    if job.mode not in MODES:
        raise BadInputError(f"unknown export mode {job.mode!r}; choose unrolled or step")
    if job.batch < 1:
        raise BadInputError(f"--batch must be at least 1, got {job.batch}")
    if job.onnx is None and job.nir is None:
        raise BadInputError("nothing to export: give --onnx OUT and/or --nir OUT")
    if job.onnx is not None and job.nir is not None and same_file(job.onnx, job.nir):
        raise BadInputError("--onnx and --nir name the same file")
    # an ONNX or NIR graph is another kind of file than its model: it never replaces it, even with force;
    # the checked (`~`-expanded) paths are the ones written
    if job.onnx is not None:
        job.onnx = check_output_path(job.onnx, [job.model], job.force, replace_input=False)
    if job.nir is not None:
        job.nir = check_output_path(job.nir, [job.model], job.force, replace_input=False)
    model = load_checkpoint(job.model, job.arch, job.arch_kwargs or None, job.trust_pickle).eval()
    timesteps, input_shape = resolve_io(model, job.io)
    check_export_size(model, timesteps, input_shape, job)
    config = tt_config(model)
    document: dict[str, Any] = {
        "onnx": str(job.onnx) if job.onnx else None, "verified": False, "max_abs_diff": None,
        "nir": None, "mode": job.mode, "timesteps": timesteps, "input_shape": list(input_shape),
        "batch": job.batch, "reconstruct_dense": job.reconstruct_dense, "opset": None, "onnx_bytes": None,
        "spike_agreement": None, "spikes_compared": 0, "neurons": None,
        "tt": {"mode": config["mode"], "layers": {k: v["ranks"] for k, v in config["layers"].items()}} if config else None,
    }
    nir_graph = None
    if job.nir is not None:  # NIR refuses what it cannot express before any file is written (ONNX included)
        from ttsnn_cli.export.nir import build_nir_graph

        nir_graph = build_nir_graph(model, timesteps, input_shape)
    if job.onnx is not None:
        info = export_onnx(model, job.onnx, timesteps, input_shape, job.mode, job.batch,  # type: ignore[arg-type]
                           job.reconstruct_dense)
        document.update(opset=info.opset, onnx_bytes=Path(job.onnx).stat().st_size, neurons=info.neurons,
                        static_input=info.static_input, inputs=info.input_names, outputs=info.output_names)
        if job.verify:
            from ttsnn_cli.export.verify import verify_onnx

            document.update(verify_onnx(model, info).to_dict())
    if job.nir is not None:
        from ttsnn_cli.export.nir import export_nir

        document["nir"] = str(job.nir)
        warnings: list[str] = []
        document["nir_nodes"] = export_nir(model, job.nir, timesteps, input_shape, warnings, graph=nir_graph)
        document["warnings"] = document.get("warnings", []) + warnings
    return document
