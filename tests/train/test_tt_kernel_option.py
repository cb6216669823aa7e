"""`finetune --tt-kernel`: the TT layers train on the path asked for (`auto` keeps the factored cores
on the CPU), the JSON says how many layers ran each way, and both paths train the same cores to
nearly the same result (the same function, summed in another order)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from ttsnn_cli import compress_model, save_model
from ttsnn_cli.compress.decompose import CompressConfig
from ttsnn_cli.cli.commands import app
from ttsnn_cli.maths.ranks import RankSpec
from ttsnn_cli.storage.bundle import ModelIO, get_meta
from ttsnn_cli.zoo import zoo_entry

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ptt_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = zoo_entry("digits_csnn").factory(width=4)
    meta = get_meta(model)
    meta.arch, meta.arch_kwargs, meta.io = "zoo:digits_csnn", {"width": 4}, ModelIO((1, 16, 16), 2, "digits")
    tt = compress_model(model, CompressConfig(RankSpec("fixed", (4, 4, 4)), mode="ptt", timesteps=2))[0]
    return save_model(tt, tmp_path_factory.mktemp("kernel") / "ptt.tt")


def _finetune(bundle: Path, out: Path, kernel: str | None) -> dict:
    args = ["finetune", str(bundle), "-o", str(out), "--data", "digits", "--epochs", "1", "--batch-size", "128",
            "--timesteps", "2", "--json"] + (["--tt-kernel", kernel] if kernel else [])
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_each_path_is_taken_and_reported(ptt_bundle: Path, tmp_path: Path) -> None:
    auto = _finetune(ptt_bundle, tmp_path / "auto.tt", None)
    assert auto["tt_kernels"] == {"factored": 4, "rebuilt": 0}  # CPU: factored, no timing
    rebuilt = _finetune(ptt_bundle, tmp_path / "rebuilt.tt", "rebuilt")
    assert rebuilt["tt_kernels"] == {"factored": 0, "rebuilt": 4}
    factored = _finetune(ptt_bundle, tmp_path / "factored.tt", "factored")
    assert factored["history"][0]["train_loss"] == auto["history"][0]["train_loss"]  # bitwise: same path
    assert rebuilt["history"][0]["train_loss"] == pytest.approx(factored["history"][0]["train_loss"], rel=1e-3)
    assert abs(rebuilt["test_accuracy"] - factored["test_accuracy"]) <= 3.0


def test_an_unknown_path_is_one_line(ptt_bundle: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["finetune", str(ptt_bundle), "-o", str(tmp_path / "x.tt"), "--data", "digits",
                                      "--tt-kernel", "fused"])
    assert result.exit_code == 3 and len(result.stderr.splitlines()) == 1
    assert "--tt-kernel must be one of auto, factored, rebuilt" in result.stderr
    assert not (tmp_path / "x.tt").exists()


@pytest.mark.cuda
@pytest.mark.parametrize("recompute", [False, True])
def test_auto_on_cuda_times_the_layers_as_they_train(ptt_bundle: Path, tmp_path: Path, recompute: bool,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """On CUDA `auto` times every layer, under `--recompute-tt` in that mode, and reports the timings."""
    from ttsnn_cli.layers.conv2d import TTConv2d
    from ttsnn_cli.train import engine

    modes = []
    real = engine.measure_plan

    def spy(model, *args, **kwargs):
        modes.append({m.recompute for m in model.modules() if isinstance(m, TTConv2d)})
        return real(model, *args, **kwargs)

    monkeypatch.setattr(engine, "measure_plan", spy)
    args = ["finetune", str(ptt_bundle), "-o", str(tmp_path / "a.tt"), "--data", "digits", "--epochs", "1",
            "--timesteps", "2", "--device", "cuda", "--json"] + (["--recompute-tt"] if recompute else [])
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.stderr
    kernels = json.loads(result.stdout)["tt_kernels"]
    assert kernels["factored"] + kernels["rebuilt"] == 4 and len(kernels["layers"]) == 4
    assert modes == [{recompute}]
