"""The whole command line: the app with every command module imported (each registers itself)."""

from __future__ import annotations

from ttsnn_cli.cli import compress, export, inspect, report, run, sweep, train  # noqa: F401  (registration)
from ttsnn_cli.cli.app import app
from ttsnn_cli.cli.common import library_reads_files

library_reads_files(app)  # an unreadable file is bad input (exit 3) said by the library, not a usage error

__all__ = ["app"]
