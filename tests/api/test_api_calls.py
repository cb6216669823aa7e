"""The API's calls: the CLI's documents, modules taken without saving, nothing printed, nothing
left behind, errors worded with argument names."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import ttsnn_cli
import user_nets
from ttsnn_cli import compress, export, finetune, report, sweep
from ttsnn_cli.api import common
from ttsnn_cli.cli.commands import app
from ttsnn_cli.errors import BadInputError
from ttsnn_cli.kinds import is_tt_layer
from ttsnn_cli.storage.bundle import get_meta

runner = CliRunner()


@pytest.fixture
def temporaries(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The private folders the API makes (each must be gone when its call returns)."""
    made: list[Path] = []
    real = common.make_private_temporary

    def recording(prefix: str) -> Path:
        made.append(real(prefix))
        return made[-1]

    monkeypatch.setattr(common, "make_private_temporary", recording)
    return made


def _without(document: dict, *keys: str) -> dict:
    return {k: v for k, v in document.items() if k not in keys}


def test_compress_and_report_return_the_clis_documents(tmp_path: Path) -> None:
    done = runner.invoke(app, ["compress", "--arch", "zoo:digits_csnn", "--ranks", "4", "-o", str(tmp_path / "cli.tt"),
                               "--json"])
    assert done.exit_code == 0, done.stderr
    model, document = compress(arch="zoo:digits_csnn", ranks=4, output=tmp_path / "api.tt")
    assert document["output"] == str(tmp_path / "api.tt")
    assert _without(document, "output") == _without(json.loads(done.stdout), "output")
    assert any(is_tt_layer(m) for m in model.modules())

    done = runner.invoke(app, ["report", str(tmp_path / "cli.tt"), "--json"])
    assert done.exit_code == 0, done.stderr
    assert json.loads(json.dumps(report(tmp_path / "cli.tt"))) == json.loads(done.stdout)


def test_a_module_is_taken_without_saving_and_nothing_is_printed_or_left(
        temporaries: list[Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("TTSNN_TRUSTED_ARCH")  # a module handed over is trusted by being handed over
    net = user_nets.TutorialNet()
    tt, document = compress(net, ranks=2)
    assert document["output"] is None and any(is_tt_layer(m) for m in tt.modules())
    assert get_meta(tt).arch == "user_nets:TutorialNet" and not hasattr(net, "ttsnn_meta")  # the caller's module untouched
    assert not any(is_tt_layer(m) for m in net.modules())
    with pytest.raises(BadInputError) as refusal:  # an own-loop network does not say what it eats
        report(tt)
    message = str(refusal.value)
    assert "<TutorialNet in memory>" in message and "input_shape=(C, H, W)" in message and "timesteps=T" in message
    assert "--" not in message and "ttsnn-api-" not in message
    document = report(tt, input_shape=(1, 16, 16), timesteps=8)
    assert document["model"] == "<TutorialNet in memory>" and document["ratios"]["weights"] > 1
    assert document["baseline"]["source"] == "user_nets:TutorialNet rebuilt dense"
    assert temporaries and not any(folder.exists() for folder in temporaries)
    assert capsys.readouterr() == ("", "")


def test_a_recorded_architecture_needs_trust_worded_as_arguments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "tt.tt"
    compress(user_nets.tutorial_net(), arch="user_nets:tutorial_net", ranks=2, input_shape=(1, 16, 16), output=path)
    monkeypatch.delenv("TTSNN_TRUSTED_ARCH")
    with pytest.raises(BadInputError) as refusal:
        report(path)
    message = str(refusal.value)
    assert "arch='user_nets:tutorial_net' (or trust_arch=True)" in message and "--" not in message
    assert refusal.value.exit_code == 3
    assert report(path, trust_arch=True)["arch"] == "user_nets:tutorial_net"
    assert report(path, baseline=user_nets.tutorial_net(), trust_arch=True)["baseline"]["source"] == "<TutorialNet in memory>"


def test_a_module_its_class_cannot_rebuild_needs_arch() -> None:
    with pytest.raises(BadInputError, match=r"model= is a plain Sequential.*arch='module:factory'"):
        compress(user_nets.sequential_net(), ranks=2)
    tt, _ = compress(user_nets.sequential_net(), arch="user_nets:sequential_net", ranks=2)
    assert get_meta(tt).arch == "user_nets:sequential_net"


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="unexpected keyword argument 'bogus'"):
        compress(arch="zoo:digits_csnn", ranks=2, bogus=1)
    with pytest.raises(TypeError, match="unexpected keyword argument 'bogus'"):
        finetune(tmp_path / "x.tt", bogus=1)
    with pytest.raises(BadInputError, match=r"^timesteps= must be >= 1, got 0$"):
        compress(arch="zoo:digits_csnn", ranks=2, timesteps=0)
    with pytest.raises(BadInputError, match=r"^input_shape= takes"):
        compress(arch="zoo:digits_csnn", ranks=2, input_shape=(1, 2.5))
    with pytest.raises(BadInputError, match=r"^nothing to export: give onnx=OUT and/or nir=OUT$"):
        export(user_nets.TutorialNet())
    with pytest.raises(BadInputError, match=r"give ranks= \(e.g. ranks=8"):
        compress(arch="zoo:digits_csnn")
    with pytest.raises(BadInputError, match=r"model= takes a torch.nn.Module or a path"):
        report(42)  # type: ignore[arg-type]
    with pytest.raises(BadInputError, match=r"^model= is required"):
        export(None, onnx=tmp_path / "x.onnx")  # type: ignore[arg-type]


def test_stage_names_are_the_functions_and_still_reach_their_subpackages(monkeypatch: pytest.MonkeyPatch) -> None:
    import ttsnn_cli.train.engine as engine
    from ttsnn_cli import train
    from ttsnn_cli.compress import job

    assert callable(train) and ttsnn_cli.train is train and ttsnn_cli.train.engine is engine
    assert ttsnn_cli.compress.job is job and ttsnn_cli.export.job.run_export is not None
    assert "ttsnn report" in (ttsnn_cli.report.__doc__ or "")
    assert "baseline" in inspect.signature(ttsnn_cli.report).parameters
    monkeypatch.setattr("ttsnn_cli.train.engine.MAX_SEED", 5)
    assert engine.MAX_SEED == 5
    for name in ("train", "finetune", "compress", "report", "export", "sweep", "gates_failed"):
        assert name in ttsnn_cli.__all__ and callable(getattr(ttsnn_cli, name))


def test_sweep_takes_a_module(tmp_path: Path) -> None:
    from ttsnn_cli.zoo.digits import digits_csnn

    torch.manual_seed(0)
    dense = digits_csnn(width=8)
    for run in range(2):  # the second run resumes: the same module is the same model
        events: list[dict] = []
        document = sweep(dense, arch="zoo:digits_csnn", arch_kwargs={"width": 8}, data="digits",
                         output=tmp_path / "sweep", targets=[4], methods="budget", train_samples=32, batch_size=32,
                         progress=events.append)
        assert [p["method"] for p in document["points"]] == ["budget"] and document["output"] == str(tmp_path / "sweep")
        assert "ttsnn-api-" not in json.dumps(document)
        assert [e["skipped"] for e in events if e["kind"] == "point"] == [run == 1]


def test_finetune_distils_from_a_module_and_writes_nothing_unasked(temporaries: list[Path], tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    dense = user_nets.TutorialNet(num_steps=2)
    tt, _ = compress(dense, ranks=2, input_shape=(1, 16, 16))
    events: list[dict] = []
    tuned, document = finetune(tt, teacher=dense, data="digits", epochs=1, batch_size=128, optimizer="adam",
                               progress=events.append)
    assert document["output"] is None and document["teacher"] == "<TutorialNet in memory>"
    assert document["epochs"] == 1 and 0 <= document["test_accuracy"] <= 100
    assert [e["epoch"] for e in events if e["kind"] == "epoch_end"] == [1]
    assert any(is_tt_layer(m) for m in tuned.modules())
    assert list(tmp_path.iterdir()) == [] and not any(folder.exists() for folder in temporaries)


class NeedsWidth(torch.nn.Module):
    """A network its class alone cannot rebuild: the constructor needs an argument."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.net = user_nets.sequential_net(channels=width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def test_a_class_that_needs_arguments_says_which_argument_to_pass() -> None:
    with pytest.raises(BadInputError, match=r"cannot build test_api_calls:NeedsWidth.*pass arch='module:factory'"):
        compress(NeedsWidth(4), ranks=2)
