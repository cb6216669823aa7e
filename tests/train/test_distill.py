"""engine/distill.py and `finetune --teacher`: the loss formula, a frozen eval-mode teacher, the
weight's two ends (a = 0 is exactly plain fine-tuning), and the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import Subset
from typer.testing import CliRunner

from ttsnn_cli.cli.commands import app
from ttsnn_cli.compress.decompose import CompressConfig, compress_model
from ttsnn_cli.data import DataBundle, load_data
from ttsnn_cli.maths.ranks import parse_rank_spec
from ttsnn_cli.storage.bundle import get_meta, save_bundle
from ttsnn_cli.train.distill import distillation_term
from ttsnn_cli.train.engine import TrainConfig, fit
from ttsnn_cli.zoo import zoo_entry

pytestmark = pytest.mark.usefixtures("one_thread")


def test_distillation_term_is_hintons_kl_and_zero_on_agreement() -> None:
    torch.manual_seed(0)
    student, teacher = torch.randn(3, 5, 10, requires_grad=True), torch.randn(3, 5, 10)
    t = 3.0
    p = F.softmax(teacher.mean(0) / t, -1)
    q = F.softmax(student.mean(0) / t, -1)
    expected = (p * (p.log() - q.log())).sum(-1).mean() * t * t
    value = distillation_term(student, teacher, t)
    assert torch.allclose(value, expected, atol=1e-6)
    value.backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert distillation_term(teacher, teacher, t).abs() < 1e-6


@pytest.fixture(scope="module")
def small_digits() -> DataBundle:
    full = load_data("digits")
    return DataBundle("digits", Subset(full.train, range(0, 1400, 14)), Subset(full.test, range(0, 360, 9)), (1, 16, 16), 10)


def _pair():
    torch.manual_seed(0)
    dense = zoo_entry("digits_csnn").factory(width=4)
    torch.manual_seed(0)
    student = zoo_entry("digits_csnn").factory(width=4)
    student.load_state_dict(dense.state_dict())
    student, _ = compress_model(student, CompressConfig(ranks=parse_rank_spec(2, None), exclude=[r"stem\.conv"]))
    return dense, student


def _config(**kw) -> TrainConfig:
    return TrainConfig(**{"epochs": 1, "batch_size": 25, "timesteps": 2, "lr": 0.05, "seed": 1, **kw})


def test_teacher_stays_frozen_and_weight_zero_is_plain_finetuning(tmp_path: Path, small_digits) -> None:
    teacher, student = _pair()
    teacher.train()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    result = fit(student, small_digits, _config(distill_weight=0.0), tmp_path / "a.tt", teacher=teacher)
    assert result["distilled"] and not teacher.training
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())  # BN stats too
    assert all(not p.requires_grad for p in teacher.parameters())
    _, plain = _pair()
    fit(plain, small_digits, _config(distill_weight=0.0), tmp_path / "b.tt")
    assert all(torch.equal(a, b) for a, b in zip(student.state_dict().values(), plain.state_dict().values()))
    _, distilled = _pair()
    fit(distilled, small_digits, _config(distill_weight=1.0), tmp_path / "c.tt", teacher=_pair()[0])
    assert not all(torch.equal(a, b) for a, b in zip(distilled.state_dict().values(), plain.state_dict().values()))


def test_finetune_teacher_through_the_cli(tmp_path: Path) -> None:
    dense, student = _pair()
    torch.save(dense.state_dict(), tmp_path / "dense.pt")
    meta = get_meta(student)
    meta.arch, meta.arch_kwargs = "zoo:digits_csnn", {"width": 4}
    save_bundle(tmp_path / "tt.tt", student, meta)
    runner = CliRunner()
    args = ["finetune", str(tmp_path / "tt.tt"), "--data", "digits", "--epochs", "1", "--timesteps", "2",
            "--batch-size", "128", "--teacher", str(tmp_path / "dense.pt"), "--distill-weight", "0.7",
            "--distill-temperature", "2", "--json"]
    result = runner.invoke(app, [*args, "-o", str(tmp_path / "out.tt")])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["distilled"] and document["config"]["distill_weight"] == 0.7
    assert document["teacher"] == str(tmp_path / "dense.pt")
    wrong = zoo_entry("digits_csnn").factory(width=4, num_classes=3)
    torch.save(wrong.state_dict(), tmp_path / "wrong.pt")
    bad = runner.invoke(app, [*args[:-1], "--teacher", str(tmp_path / "wrong.pt"), "--teacher-arch", "zoo:digits_csnn",
                              "--teacher-arch-kwargs", '{"width": 4, "num_classes": 3}', "-o", str(tmp_path / "x.tt")])
    assert bad.exit_code == 3 and "3 outputs" in bad.stderr and not (tmp_path / "x.tt").exists()
    weight = runner.invoke(app, [*args[:-1], "--distill-weight", "1.5", "-o", str(tmp_path / "y.tt")])
    assert weight.exit_code == 3 and "--distill-weight" in weight.stderr


def test_recipe_teacher_source_is_the_compress_input(tmp_path: Path) -> None:
    from ttsnn_cli.errors import BadInputError
    from ttsnn_cli.pipeline.recipe import parse_recipe
    from ttsnn_cli.pipeline.run import RunContext
    from ttsnn_cli.pipeline.stages.train import teacher_path

    context = RunContext(out_dir=tmp_path, base_dir=tmp_path)
    with pytest.raises(BadInputError, match="source"):
        teacher_path("source", context)
    (tmp_path / "dense.tt").write_bytes(b"x")
    context.dense_path = tmp_path / "dense.tt"
    assert teacher_path("source", context) == tmp_path / "dense.tt"
    assert teacher_path("other.tt", context) == tmp_path / "other.tt"
    recipe = parse_recipe({"model": {"arch": "zoo:digits_csnn"},
                           "finetune": {"teacher": "source", "distill_weight": 0.3, "distill_temperature": 2}})
    assert recipe.finetune.teacher == "source" and recipe.finetune.distill_weight == 0.3
    with pytest.raises(BadInputError, match="distill_weight"):
        parse_recipe({"model": {"arch": "zoo:digits_csnn"}, "finetune": {"distill_weight": 2}})
