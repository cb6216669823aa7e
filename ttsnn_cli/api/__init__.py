"""The whole pipeline as library calls, for notebooks and scripts: what the CLI's commands do,
without a shell.

Owns one module per stage, each wrapping that stage's library job exactly as the CLI command builds
it: `training` (`train`, `finetune`), `compression` (`compress`), `reporting` (`report`,
`gates_failed`), `exporting` (`export`), `sweeping` (`sweep`); and `common`: modules given where
files are expected (written to private temporary bundles), CLI flag names in error messages
rewritten as keyword arguments, options passed through to the job dataclasses by name.

Every function takes a model (an `nn.Module`, or a path) and keyword arguments named as the CLI's
options (`--batch-size` is `batch_size=`, a flag like `--force` is `force=True`), returns the
document `--json` prints (and, for the stages that make one, the model first), never prints
(progress goes to an optional `progress` callback) and raises the typed errors of
`ttsnn_cli.errors`, worded with argument names.
May import: every library package (errors to pipeline). Never cli.
"""

from __future__ import annotations

from ttsnn_cli.api.compression import compress
from ttsnn_cli.api.exporting import export
from ttsnn_cli.api.reporting import gates_failed, report
from ttsnn_cli.api.sweeping import sweep
from ttsnn_cli.api.training import finetune, train

__all__ = ["train", "finetune", "compress", "report", "gates_failed", "export", "sweep"]
