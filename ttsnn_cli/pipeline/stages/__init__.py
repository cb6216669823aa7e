"""The recipe's stages: one module per stage adapts its recipe section to the stage's library job.

Owns: turning a recipe section into a job (`compress.job.CompressJob`, `train.job.TrainJob`, ...),
running it, and moving the run's context on. Adding a stage: its module here and one line below.
May import every library package below the CLI; nothing but `pipeline.run` imports it.
"""

from __future__ import annotations

from ttsnn_cli.pipeline.context import StageFunction
from ttsnn_cli.pipeline.stages.compress import compress_stage
from ttsnn_cli.pipeline.stages.export import export_stage
from ttsnn_cli.pipeline.stages.report import report_stage
from ttsnn_cli.pipeline.stages.sweep import sweep_stage
from ttsnn_cli.pipeline.stages.train import finetune_stage, train_stage

# Name -> stage, in the order a recipe runs them.
STAGES: dict[str, StageFunction] = {
    "train": train_stage,
    "compress": compress_stage,
    "finetune": finetune_stage,
    "report": report_stage,
    "export": export_stage,
    "sweep": sweep_stage,
}
