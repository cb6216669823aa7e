"""The API takes every option the CLI takes, under the option's name, with the CLI's defaults:
checked against the real typer commands, so an option added to a command (or a default changed)
that the API misses fails here."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import pytest
import typer

import ttsnn_cli
from ttsnn_cli.api import common, compression, exporting, reporting, sweeping, training
from ttsnn_cli.cli.commands import app
from ttsnn_cli.compress.job import CompressJob
from ttsnn_cli.export.job import ExportJob
from ttsnn_cli.pipeline.sweep import SweepJob
from ttsnn_cli.report.job import ReportJob
from ttsnn_cli.train.engine import TrainConfig
from ttsnn_cli.train.job import default_optimizer

COMMANDS = typer.main.get_command(app).commands  # type: ignore[attr-defined]

#: command -> (API function, what its **options reach, the job fields the API sets itself)
API = {
    "compress": (ttsnn_cli.compress, [CompressJob], compression._OWN),
    "train": (ttsnn_cli.train, None, ()),
    "finetune": (ttsnn_cli.finetune, None, ()),
    "report": (ttsnn_cli.report, [ReportJob], reporting._OWN),
    "export": (ttsnn_cli.export, [ExportJob], exporting._OWN),
    "sweep": (ttsnn_cli.sweep, [SweepJob], sweeping._OWN),
}
#: CLI options with no argument, and why: the document is the return value; recipes are `ttsnn run`'s
NOT_ARGUMENTS = {"json", "recipe"}


def accepted(command: str) -> set[str]:
    function, targets, own = API[command]
    names = set(inspect.signature(function).parameters) - {"options"}
    if targets is None:
        return names | set(training.train_option_names())
    return names | {f.name for t in targets for f in dataclasses.fields(t)} - set(own)


@pytest.mark.parametrize("command", sorted(API))
def test_every_cli_option_is_an_argument(command: str) -> None:
    missing = []
    for param in COMMANDS[command].params:
        if param.param_type_name == "argument":
            name = "model"  # CHECKPOINT / MODEL: the first argument
        else:
            name = common.argument_name(max(param.opts, key=len))
        if name not in NOT_ARGUMENTS and name not in accepted(command):
            missing.append(name)
    assert not missing, f"ttsnn {command} options the API does not take: {missing}"


@pytest.mark.parametrize("stage", ["train", "finetune"])
def test_training_defaults_are_the_clis(stage: str) -> None:
    job = training.build_train_job(stage, Path("out.tt"), {})
    config_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    job_fields = {f.name for f in dataclasses.fields(job)}
    for param in COMMANDS[stage].params:
        if param.name in config_fields and param.name != "timesteps":
            value = getattr(job.config, param.name)
        elif param.name in job_fields and param.name not in ("output", "checkpoint"):
            value = getattr(job, param.name)
        else:
            continue
        default = param.default
        if param.name in ("optimizer", "lr") and default is None:  # left to follow the architecture
            default = dict(zip(("optimizer", "lr"), default_optimizer(stage, None)))[param.name]
        if param.name == "arch_kwargs":
            continue  # JSON text on the command line, a dict here
        assert value == default, f"{stage} {param.name}: API {value!r}, CLI {default!r}"


#: CLI options whose unset value (None: "not given", for recipes to fill) the command turns into a default
UNSET_MEANS = {("compress", "mode"): "stt"}


@pytest.mark.parametrize("command", ["compress", "report", "export", "sweep"])
def test_explicit_defaults_are_the_clis(command: str) -> None:
    signature = inspect.signature(API[command][0]).parameters
    for param in COMMANDS[command].params:
        name = common.argument_name(max(param.opts, key=len)) if param.param_type_name == "option" else None
        if name not in signature or signature[name].default is inspect.Parameter.empty:
            continue
        api, cli = signature[name].default, param.default
        cli = getattr(cli, "value", cli)  # enums
        if command == "sweep" and name in ("targets", "methods"):
            api = ",".join(f"{v:g}" if isinstance(v, float | int) else v for v in api)
        cli = UNSET_MEANS.get((command, name), cli)
        if isinstance(cli, list) and api is None:
            api = []
        assert api == cli, f"{command} {name}: API {api!r}, CLI {cli!r}"


def test_training_options_pass_through_by_name() -> None:
    """A field the training job gains is an argument at once; paths arrive as Paths, as the CLI's do."""
    job = training.build_train_job("finetune", Path("out.tt"), {"epochs": 3, "resume": True, "optimizer": "Adam",
                                                                 "arch_kwargs": '{"width": 8}'})
    assert (job.config.epochs, job.resume, job.config.optimizer, job.arch_kwargs) == (3, True, "adam", {"width": 8})
    assert job.config.lr == default_optimizer("finetune", None, "adam")[1]
    # an unset optimiser follows the architecture, as `ttsnn train --arch` does
    for arch in ("zoo:digits_csnn", "mynets:build"):
        job = training.build_train_job("train", Path("out.tt"), {"arch": arch})
        assert (job.config.optimizer, job.config.lr) == default_optimizer("train", arch)
    assert training.build_train_job("train", Path("out.tt"), {"arch": "m:f", "lr": 0.5}).config.lr == 0.5
    with pytest.raises(TypeError, match="unexpected keyword argument 'epoch'.*epochs"):
        training.build_train_job("train", Path("out.tt"), {"epoch": 3})
    if any(f.name == "log_dir" for f in dataclasses.fields(type(job))):
        job = training.build_train_job("train", Path("out.tt"), {"log_dir": "logs"})
        assert job.log_dir == Path("logs")
