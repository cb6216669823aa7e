"""`ttsnn report` and `ttsnn inspect`: what a model costs and holds, as JSON-ready data.

Owns: params, MACs, training FLOPs, synaptic operations (`counting`, `flops`, `synops`), the bridge to
the `hw` accelerator model (`workloads`), CI gates (`gates`), plots (`plot`), layer listings
(`inspection`), and `job` (one report end to end). Read-only: nothing here changes a model.
May import: everything below it (maths to train) and `hw`. Never export, pipeline or cli.
"""

from __future__ import annotations

__all__ = ["ReportJob", "build_report", "run_report"]


def __getattr__(name: str):  # lazy: importing the package stays cheap
    if name in __all__:
        from ttsnn_cli.report import job

        return getattr(job, name)
    raise AttributeError(name)
