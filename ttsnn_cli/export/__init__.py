"""Export: ONNX (verified against onnxruntime) and NIR, from any model ttsnn can load.

- `functional`: the export copy with explicit spiking state (what the exporters trace);
- `onnx`: the unrolled and step graphs via `torch.onnx.export(dynamo=True)`;
- `verify`: onnx.checker plus onnxruntime against torch;
- `nir`: the NIR 1.0.8 graph;
- `job`: one export end to end, as the CLI and the recipe stage run it.
May import: everything below it (maths to report). Never pipeline or cli.
"""

from __future__ import annotations

from ttsnn_cli.export.job import ExportJob, run_export

__all__ = ["ExportJob", "run_export"]
