"""The train and finetune stages end to end: model + data + engine -> bundle written every epoch.

Shared by `ttsnn train`, `ttsnn finetune` and the recipe pipeline, so all behave the same. Every input
is validated before any work (output path, options, data, whether the model can eat the data).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from torch import nn

from ttsnn_cli.data import SPEC_HELP, chosen_data, load_data
from ttsnn_cli.data.compat import check_compatible
from ttsnn_cli.errors import BadInputError
from ttsnn_cli.spiking.budget import check_run_fits, check_timesteps
from ttsnn_cli.spiking.runner import check_readout, check_style, resolve_timesteps
from ttsnn_cli.storage.bundle import ModelIO, get_meta, save_bundle
from ttsnn_cli.storage.load import load_checkpoint
from ttsnn_cli.storage.outputs import check_output_path
from ttsnn_cli.storage.trust import build_arch, zoo_io
from ttsnn_cli.train.engine import Progress, TrainConfig, fit, set_seed, side_paths
from ttsnn_cli.train.logs import EpochLogs


@dataclass
class TrainJob:
    stage: Literal["train", "finetune"]
    output: Path
    config: TrainConfig = field(default_factory=TrainConfig)
    data: str | None = None
    arch: str | None = None  # train: the architecture to build; finetune: overrides the bundle's
    arch_kwargs: dict[str, Any] | None = None
    checkpoint: Path | None = None  # finetune: the model to start from
    timesteps: int | None = None  # None: from the bundle / zoo entry / 4
    style: str | None = None  # --style (runner.STYLES); None: detected, or the bundle's
    resume: bool = False
    force: bool = False
    trust_pickle: bool = False
    teacher: Path | None = None  # finetune: distil from this model (a bundle, or a state_dict + teacher_arch)
    teacher_arch: str | None = None  # default: the student's recorded (dense) architecture
    teacher_arch_kwargs: dict[str, Any] | None = None
    log_dir: Path | None = None  # --log-dir: metrics.csv and a TensorBoard event file, every epoch (train.logs)
    readout: str | None = None  # --readout spikes|membrane|N; None: the bundle's, else spikes (runner.readout_index)


def default_optimizer(stage: str, arch: str | None, optimizer: str | None = None,
                      lr: float | None = None) -> tuple[str, float]:
    """The optimiser and learning rate for what the user left unset (None). Why these: the zoo's
    networks and the paper train with SGD at 0.1 (fine-tuning 0.01), but a snntorch tutorial network
    trained from scratch with it stays at chance (10-13 % on digits after 2 epochs, docs/training.md):
    its spike-count logits are small and SGD's steps with them. Adam at 1e-3 trains it. So `train` of
    a user's architecture (MODULE:FACTORY) defaults to Adam, and the learning rate follows the optimiser
    (Adam 1e-3; SGD 0.1 to train, 0.01 to fine-tune)."""
    if optimizer is None:
        optimizer = "adam" if stage == "train" and arch and not arch.startswith("zoo:") else "sgd"
    optimizer = optimizer.lower()
    if lr is None:
        lr = 1e-3 if optimizer == "adam" else (0.1 if stage == "train" else 0.01)
    return optimizer, lr


def build_model(job: TrainJob) -> nn.Module:
    """train: a fresh model (seeded); finetune: the checkpoint, with its recorded metadata."""
    if job.stage == "train":
        if not job.arch:
            raise BadInputError("train needs --arch zoo:NAME or --arch MODULE:FACTORY")
        set_seed(job.config.seed)
        model = build_arch(job.arch, job.arch_kwargs)
        meta = get_meta(model)
        meta.arch, meta.arch_kwargs = job.arch, dict(job.arch_kwargs or {})
    else:
        if job.checkpoint is None:
            raise BadInputError("finetune needs a MODEL (a ttsnn bundle, or a state_dict with --arch)")
        model = load_checkpoint(job.checkpoint, job.arch, job.arch_kwargs, job.trust_pickle)
        meta = get_meta(model)
    meta.io = zoo_io(meta.arch, meta.arch_kwargs).merged(meta.io).merged(ModelIO(style=job.style, readout=check_readout(job.readout)))
    return model


def load_teacher(job: TrainJob, student: nn.Module) -> nn.Module | None:
    """The frozen teacher of `finetune --teacher`: a bundle, or a state_dict of `teacher_arch` (by
    default the student's own dense architecture, which a TT bundle records)."""
    if job.teacher is None:
        return None
    if job.stage != "finetune":
        raise BadInputError("--teacher distils into a model being fine-tuned: use it with finetune")
    meta = get_meta(student)
    arch = job.teacher_arch
    kwargs = job.teacher_arch_kwargs
    try:
        teacher = load_checkpoint(job.teacher, arch, kwargs, job.trust_pickle)
    except BadInputError as error:
        if arch is not None or "plain state_dict" not in str(error) or not meta.arch:
            raise
        teacher = load_checkpoint(job.teacher, meta.arch, meta.arch_kwargs, job.trust_pickle)
    teacher.ttsnn_role = "teacher"  # its forward failing says "the teacher's forward (...)" (spiking.runner)
    return teacher.eval()


def record_origin(job: TrainJob, model: nn.Module, teacher: nn.Module | None) -> None:
    """Mark `model` with checksums of the weights this run starts from (the checkpoint's, the
    teacher's), which its resume states record (`resume.model_fingerprint`): resuming then refuses a
    state written while fine-tuning another checkpoint or distilling from another teacher, even one
    of the same architecture. Weights, not file bytes: a bundle saved again with other metadata (or
    the API's temporary copy of a module) is the same start. A checkpoint fine-tuned in place (`-o`
    naming it) changes every epoch, so it is left out."""
    from ttsnn_cli.storage.bundle import state_checksum
    from ttsnn_cli.storage.outputs import same_file
    from ttsnn_cli.train.resume import ORIGIN_ATTRIBUTE

    def checksum(path: Path | None, module: nn.Module | None) -> str | None:
        if path is None or module is None or same_file(path, job.output):
            return None
        return state_checksum(module.state_dict())

    setattr(model, ORIGIN_ATTRIBUTE, {"checkpoint": checksum(job.checkpoint, model),
                                      "teacher": checksum(job.teacher, teacher)})


def run_train_job(job: TrainJob, progress: Progress | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Validate, train (or fine-tune), write the bundle every epoch; the contract's result dict."""
    job.config.validate()
    if job.timesteps is not None and job.timesteps < 1:
        raise BadInputError(f"--timesteps must be >= 1, got {job.timesteps}")
    job.output = check_output_path(job.output, [job.checkpoint, job.teacher], job.force or job.resume)  # `~` expanded
    for side in side_paths(job.output):  # OUT.metrics.jsonl, OUT.resume.pt: --resume continues them
        check_output_path(side, [job.checkpoint, job.teacher], job.force or job.resume)
    logs = EpochLogs(job.log_dir, job.force or job.resume, [job.checkpoint, job.teacher]) if job.log_dir else None
    model = build_model(job)
    teacher = load_teacher(job, model)
    record_origin(job, model, teacher)
    meta = get_meta(model)
    spec = chosen_data(job.data, meta.io.data, str(job.checkpoint or "the model"))  # a recorded module:factory only if trusted
    if not spec:
        raise BadInputError(f"{job.stage} needs --data SPEC ({SPEC_HELP})")
    check_style(job.style)
    timesteps = job.timesteps or meta.io.timesteps or 4
    check_timesteps(timesteps, job.stage)  # before any data is binned into T frames (spiking.budget)
    data = load_data(spec, timesteps=timesteps, augment=True)
    # an own-loop model taking one frame runs its own number of steps: learn it (a conflicting --timesteps is bad input)
    learned = resolve_timesteps(model, tuple(data.input_shape), job.timesteps, timesteps)
    if learned != timesteps:
        timesteps = int(learned)  # type: ignore[arg-type]
        if data.temporal:
            data = load_data(spec, timesteps=timesteps, augment=True)
    job.config.timesteps = timesteps
    # one training step keeps T x batch x every activation for backward: refused here if it cannot fit
    check_run_fits(model, tuple(data.input_shape), timesteps, job.config.batch_size, what=job.stage)
    check_compatible(model, data, timesteps, spec)
    if teacher is not None:
        check_compatible(teacher, data, timesteps, spec)
    meta.io = ModelIO(tuple(data.input_shape), timesteps, spec, meta.io.style, meta.io.readout)
    base_history = list(meta.history)

    def save(trained: nn.Module, history: list[dict[str, Any]]) -> None:
        last = history[-1]
        meta.history = base_history + [{
            "stage": job.stage,
            "data": spec,
            "epochs": last["epoch"],
            "of_epochs": job.config.epochs,
            "test_accuracy": last["test_accuracy"],
            "train_loss": last["train_loss"],
            "options": {k: v for k, v in vars(job.config).items() if k not in ("device", "threads")},
            "teacher": str(job.teacher) if job.teacher else None,
        }]
        save_bundle(job.output, trained, meta)

    result = fit(model, data, job.config, job.output, resume=job.resume, progress=progress, on_epoch=save,
                 teacher=teacher, logs=logs)
    result["data"] = spec
    result["timesteps"] = timesteps
    result["stage"] = job.stage
    result["teacher"] = str(job.teacher) if job.teacher else None
    result["readout"] = meta.io.readout or "spikes"
    return model, result
