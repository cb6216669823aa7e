"""The recipe stages owned by the engine: `train` (dense, before compress) and `finetune` (after)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ttsnn_cli.errors import BadInputError
from ttsnn_cli.pipeline.context import RunContext
from ttsnn_cli.pipeline.outputs import STAGE_FILES
from ttsnn_cli.pipeline.recipe import FinetuneSection, Recipe, TrainSection, resolve_data_spec, resolve_path
from ttsnn_cli.train.engine import TrainConfig
from ttsnn_cli.train.job import TrainJob, default_optimizer, run_train_job


def train_config(section: TrainSection, threads: int | None = None, arch: str | None = None) -> TrainConfig:
    """The engine's options from a recipe section; an unset optimizer and lr as `default_optimizer` picks them
    for the stage (a `finetune` section: fine-tuning) and `arch` (the model the stage trains)."""
    finetune = isinstance(section, FinetuneSection)
    distill = {"distill_weight": section.distill_weight, "distill_temperature": section.distill_temperature,
               "tt_kernel": section.tt_kernel} if finetune else {}
    optimizer, lr = default_optimizer("finetune" if finetune else "train", arch, section.optimizer, section.lr)
    return TrainConfig(**distill,
        epochs=section.epochs, batch_size=section.batch_size, lr=lr, optimizer=optimizer,  # type: ignore[arg-type]
        momentum=section.momentum, weight_decay=section.weight_decay, schedule=section.schedule, seed=section.seed,
        device=section.device, train=section.train, loss=section.loss, encoding=section.encoding,
        recompute_tt=section.recompute_tt, precision=section.precision, threads=threads, compile=section.compile,
        data_on_device=section.data_on_device,
    )


def _progress(context: RunContext, stage: str):
    def report(event: dict[str, Any]) -> None:
        context.emit("progress", stage=stage, event=event)  # every engine event: the CLI draws its bar
        if event["kind"] in ("warning", "hint"):
            context.emit("message", text=f"{stage} {event['kind']}: {event['message']}")
        if event["kind"] == "epoch_end":
            context.emit("message", text=(
                f"{stage} epoch {event['epoch']}/{event['epochs']}: loss {event['train_loss']:.4f}, "
                f"test acc {event['test_accuracy']:.2f} % ({event['seconds']:.1f} s)"))
    return report


def _data(recipe: Recipe, context: RunContext, section: TrainSection) -> str | None:
    return resolve_data_spec(context.base_dir, section.data or recipe.data)


def _log_dir(context: RunContext, section: TrainSection, stage: str) -> Path | None:
    """`logs: true`: the stage's --log-dir inside the run folder, one TensorBoard run per stage."""
    return context.out_dir / "logs" / stage if section.logs else None


def train_stage(recipe: Recipe, context: RunContext) -> dict[str, Any]:
    section = recipe.train
    assert section is not None
    output = context.out_dir / STAGE_FILES["train"]
    job = TrainJob("train", output, train_config(section, recipe.threads, recipe.model.arch),
                   data=_data(recipe, context, section), arch=recipe.model.arch, arch_kwargs=recipe.model.kwargs,
                   timesteps=section.timesteps or recipe.model.timesteps, force=context.force,
                   readout=section.readout, log_dir=_log_dir(context, section, "train"))
    _, result = run_train_job(job, progress=_progress(context, "train"))
    context.model_path = output
    context.dense_path = output
    return result


def teacher_path(teacher: str | None, context: RunContext):
    """`source`: the compress stage's input (the dense model); anything else: a path."""
    if teacher is None:
        return None
    if teacher == "source":
        if context.dense_path is None or not context.dense_path.is_file():
            raise BadInputError("finetune.teacher: source needs a trained dense model before compress "
                                "(a train stage, or model.checkpoint)")
        return context.dense_path
    return resolve_path(context.base_dir, teacher)


def finetune_stage(recipe: Recipe, context: RunContext) -> dict[str, Any]:
    section = recipe.finetune
    assert section is not None
    checkpoint = context.input_model(recipe)
    output = context.out_dir / STAGE_FILES["finetune"]
    arch = None if context.model_path else recipe.model.arch  # a bundle knows its architecture
    job = TrainJob("finetune", output, train_config(section, recipe.threads), data=_data(recipe, context, section), arch=arch,
                   arch_kwargs=recipe.model.kwargs if arch else None, checkpoint=checkpoint,
                   timesteps=section.timesteps or recipe.model.timesteps, force=context.force,
                   teacher=teacher_path(section.teacher, context),
                   teacher_arch=recipe.model.arch, teacher_arch_kwargs=recipe.model.kwargs,
                   readout=section.readout, log_dir=_log_dir(context, section, "finetune"))
    _, result = run_train_job(job, progress=_progress(context, "finetune"))
    context.model_path = output
    return result
