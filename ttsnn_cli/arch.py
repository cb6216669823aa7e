"""Compatibility import path: architecture specs and their trust live in `ttsnn_cli.loading.trust`."""

from ttsnn_cli.loading.trust import build_arch, parse_arch_kwargs, zoo_io  # noqa: F401
