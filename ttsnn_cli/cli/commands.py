"""The whole command line: the app with every command module imported (each registers itself)."""

from __future__ import annotations

from ttsnn_cli.cli import compress, export, inspect, report, run, sweep, train  # noqa: F401  (registration)
from ttsnn_cli.cli.app import app

__all__ = ["app"]
