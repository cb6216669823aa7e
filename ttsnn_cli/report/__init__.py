"""`ttsnn report`: params, MACs, training FLOPs, synaptic operations, the hw accelerator model and
CI gates, as JSON-ready data (the CLI renders it). Read-only: nothing here changes a model."""

from __future__ import annotations

__all__ = ["ReportJob", "build_report", "run_report"]


def __getattr__(name: str):  # lazy: importing the package stays cheap
    if name in __all__:
        from ttsnn_cli.report import build

        return getattr(build, name)
    raise AttributeError(name)
