"""Compatibility import path: loading lives in `ttsnn_cli.loading` (the trust boundary's one home)."""

from ttsnn_cli.loading import (  # noqa: F401
    apply_tt_config,
    extract_state_dict,
    load_checkpoint,
    load_model,
    load_weights,
    read_checkpoint,
)
