"""`train` and `finetune` as library calls: `ttsnn train` / `ttsnn finetune` without a shell.

Options pass straight through to the job's dataclasses (`train.engine.TrainConfig`, then
`train.job.TrainJob`) by name, so every training option the CLI gains (a new TrainConfig or TrainJob
field) is an argument here the moment it exists; defaults are the dataclasses', which the CLI's
defaults equal (`tests/api/test_api_training.py` holds the two together); an optimiser and learning
rate left unset follow the architecture as on the command line (`train.job.default_optimizer`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from torch import nn

from ttsnn_cli.api.common import Call, ModelLike, Progress, apply_options, json_kwargs, module_arch
from ttsnn_cli.errors import BadInputError
from ttsnn_cli.train.engine import TrainConfig
from ttsnn_cli.train.job import TrainJob, default_optimizer, run_train_job

#: TrainJob fields the API sets itself (from its positional and path arguments)
_OWN = ("stage", "output", "config", "checkpoint")


def build_train_job(stage: str, output: Path, options: dict[str, Any]) -> TrainJob:
    """The TrainJob a `ttsnn train|finetune` command line with these options builds: each option is
    a TrainJob field (timesteps, data, arch, resume, ...) or a TrainConfig field (epochs, lr, ...)."""
    options = dict(options)
    optimizer, lr = options.pop("optimizer", None), options.pop("lr", None)
    config = TrainConfig()
    job = TrainJob(stage, output, config)  # type: ignore[arg-type]
    apply_options(stage, [job, config], options, skip=_OWN)
    if optimizer is not None and not isinstance(optimizer, str):
        raise BadInputError(f"optimizer= takes a name (sgd, adam), got {optimizer!r}")
    # what the user left unset follows the architecture and the optimiser, as on the command line
    config.optimizer, config.lr = default_optimizer(stage, job.arch, optimizer, lr)  # type: ignore[assignment]
    job.arch_kwargs = json_kwargs(job.arch_kwargs, "arch_kwargs")
    job.teacher_arch_kwargs = json_kwargs(job.teacher_arch_kwargs, "teacher_arch_kwargs")
    return job


def _run(stage: str, model: ModelLike | None, output: str | Path | None, trust_arch: bool,
         progress: Progress | None, options: dict[str, Any]) -> tuple[nn.Module, dict[str, Any]]:
    with Call(trust_arch) as call:
        target, wanted = call.output_path(output, f"{stage}.tt")
        if stage == "train" and isinstance(model, nn.Module):  # its architecture, from a fresh seeded start
            options = dict(options)
            options["arch"], options["arch_kwargs"] = module_arch(
                model, "model", options.get("arch"), json_kwargs(options.get("arch_kwargs"), "arch_kwargs"))
        elif stage == "train" and model is not None:
            raise BadInputError("train starts from an architecture: pass model= an nn.Module or arch='zoo:NAME' / "
                                "arch='module:factory' (to continue from a file, use finetune)")
        job = build_train_job(stage, target, options)
        teacher = job.teacher
        if stage == "train":
            job.arch_kwargs = job.arch_kwargs or {}  # as the CLI parses an absent --arch-kwargs
        else:
            job.checkpoint = call.model_path(model, "model", job.arch, job.arch_kwargs)
            if isinstance(model, nn.Module):
                job.arch = job.arch_kwargs = None  # the temporary bundle records them
        if isinstance(teacher, nn.Module):
            job.teacher = call.model_path(teacher, "teacher", job.teacher_arch, job.teacher_arch_kwargs)
            job.teacher_arch = job.teacher_arch_kwargs = None
        elif teacher is not None:
            job.teacher = Path(teacher)
        call.name(job.arch, job.teacher_arch)
        with call.trust():
            trained, document = run_train_job(job, progress=progress)
        document = call.document(document)
        if not wanted:
            document["output"] = None
        return trained, document


def train(model: nn.Module | None = None, *, data: str | None = None, output: str | Path | None = None,
          trust_arch: bool = False, progress: Progress | None = None, **options: Any) -> tuple[nn.Module, dict[str, Any]]:
    """Train a dense SNN from a fresh, seeded initialisation: `ttsnn train`.

    `model` is a module whose architecture is trained (its class rebuilt, so the run is reproducible
    from `seed` as on the command line; its current weights are not used: `finetune` continues from
    them), or None with `arch='zoo:NAME'` / `arch='module:factory'`. Options are the CLI's, named as
    arguments: `epochs`, `batch_size`, `timesteps`, `lr`, `optimizer`, `seed`, `loss`, `device`,
    `resume`, `force`, ... `output` is the bundle to write (None: none written, the model is returned).

    Returns `(model, document)`: the trained module and `ttsnn train --json`'s document."""
    if data is not None:
        options["data"] = data
    return _run("train", model, output, trust_arch, progress, options)


def finetune(model: ModelLike, *, data: str | None = None, output: str | Path | None = None,
             teacher: ModelLike | None = None, trust_arch: bool = False, progress: Progress | None = None,
             **options: Any) -> tuple[nn.Module, dict[str, Any]]:
    """Fine-tune a (TT) model with surrogate-gradient BPTT: `ttsnn finetune`.

    `model` is a module (e.g. `compress`'s) or a path to a bundle (or a state_dict with `arch=`);
    `teacher` (module or path) distils into it. `data` defaults to the one the model records. Options
    as for `train` (an unset `lr`: 0.01 with SGD), plus `teacher_arch`, `distill_weight`,
    `distill_temperature`, `train='cores'`, `recompute_tt`, `trust_pickle`.

    Returns `(model, document)`: the tuned module and `ttsnn finetune --json`'s document (`epochs`,
    `train_loss`, `test_accuracy` in percent, `output`)."""
    if data is not None:
        options["data"] = data
    if teacher is not None:
        options["teacher"] = teacher
    return _run("finetune", model, output, trust_arch, progress, options)


def train_option_names() -> list[str]:
    """Every option `train` / `finetune` pass through (TrainJob and TrainConfig fields)."""
    fields = {f.name for f in dataclasses.fields(TrainJob)} | {f.name for f in dataclasses.fields(TrainConfig)}
    return sorted(fields - set(_OWN))


# `help(train)` and a notebook's `train?` list the options that pass through, as they are now
_OPTIONS_LINE = "\n\n    Options passed through: " + ", ".join(train_option_names()) + "."
train.__doc__ = (train.__doc__ or "") + _OPTIONS_LINE
finetune.__doc__ = (finetune.__doc__ or "") + _OPTIONS_LINE
