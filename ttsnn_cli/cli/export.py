"""`ttsnn export MODEL --onnx OUT [--nir OUT]`: ONNX (unrolled or step) verified with onnxruntime, NIR."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from ttsnn_cli.cli.app import app
from ttsnn_cli.cli.common import (
    STYLE_HELP,
    THREADS_HELP,
    TRUST_ARCH_HELP,
    check_options,
    err_console,
    guarded,
    print_json,
    trust_scope,
    warn,
)
from ttsnn_cli.cli.compress import parse_input_shape
from ttsnn_cli.export import ExportJob, run_export
from ttsnn_cli.storage.bundle import ModelIO
from ttsnn_cli.storage.trust import parse_arch_kwargs
from ttsnn_cli.train.threads import check_threads, limited_threads


class LayoutChoice(str, Enum):
    unrolled = "unrolled"
    step = "step"


@app.command()
@guarded
def export(
    model: Path = typer.Argument(..., help="Bundle (TT or dense) or state_dict (with --arch)."),
    onnx: Optional[Path] = typer.Option(None, "--onnx", help="ONNX file to write."),
    mode: LayoutChoice = typer.Option(LayoutChoice.unrolled, help="unrolled: x[T,B,...] -> y[T,B,...]; step: one timestep, membranes as inputs/outputs."),
    timesteps: Optional[int] = typer.Option(None, help="Timesteps T, when the model does not say."),
    input_shape: Optional[str] = typer.Option(None, help="Per-step input shape C,H,W, when the model does not say."),
    batch: int = typer.Option(2, help="Batch size for tracing and verification (the graph's batch is dynamic)."),
    reconstruct_dense: bool = typer.Option(False, "--reconstruct-dense", help="Fold every TT layer back into dense conv kernels."),
    verify: bool = typer.Option(False, "--verify", help="onnx.checker + onnxruntime against torch (exit 5 on a mismatch)."),
    nir: Optional[Path] = typer.Option(None, "--nir", help="NIR graph file to write (nir 1.0.8, HDF5)."),
    arch: Optional[str] = typer.Option(None, help="zoo:NAME or MODULE:FACTORY, for a plain state_dict."),
    arch_kwargs: Optional[str] = typer.Option(None, help="JSON kwargs for the factory."),
    force: bool = typer.Option(False, "--force", help="Overwrite existing output files."),
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help="Allow a pickled whole module (runs code from the file!)."),
    trust_arch: bool = typer.Option(False, "--trust-arch", help=TRUST_ARCH_HELP),
    json_output: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
    style: Optional[str] = typer.Option(None, help=STYLE_HELP),
    threads: Optional[int] = typer.Option(None, "--threads", help=THREADS_HELP),
) -> None:
    """Export a model to ONNX (and NIR); --verify checks the graph against torch in onnxruntime."""
    check_options(("--timesteps", timesteps, 1, None), ("--batch", batch, 1, 4096))
    job = ExportJob(model=model, onnx=onnx, mode=mode.value, io=ModelIO(parse_input_shape(input_shape), timesteps, None, style),
                    batch=batch, reconstruct_dense=reconstruct_dense, verify=verify, nir=nir, arch=arch,
                    arch_kwargs=parse_arch_kwargs(arch_kwargs), force=force, trust_pickle=trust_pickle)
    with trust_scope(trust_arch, arch), limited_threads(check_threads(threads)):
        document = run_export(job)
    for message in document.get("warnings", []):
        warn(message)
    if json_output:
        print_json(document)
        return
    console = err_console()
    if document["onnx"]:
        console.print(f"onnx: {document['onnx']} ({document['mode']}, T={document['timesteps']}, opset {document['opset']}, "
                      f"{document['onnx_bytes']} bytes)")
    if verify:
        agreement = document["spike_agreement"]
        console.print(f"verified: max_abs_diff {document['max_abs_diff']:.3g}, spike agreement "
                      f"{'n/a' if agreement is None else f'{agreement:.6f}'} over {document['spikes_compared']} spikes")
    if document["nir"]:
        console.print(f"nir: {document['nir']} ({document['nir_nodes']} nodes)")
