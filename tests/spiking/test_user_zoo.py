"""The user-network zoo (tests/user_nets.py) through every stage: execution styles, T learned from an
own-loop model, tuple and batch-first outputs, every encoding, the meta-tensor report path."""

from __future__ import annotations

import json

import pytest
import torch
import user_nets
from typer.testing import CliRunner

from ttsnn_cli.cli.commands import app
from ttsnn_cli.errors import BadInputError
from ttsnn_cli.report.flops import training_flops
from ttsnn_cli.spiking.runner import execution_style, first_output, resolve_timesteps, run_timesteps

SHAPE = (1, 16, 16)
FAST = ["--epochs", "1", "--batch-size", "256", "--lr", "0.05"]


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


STYLES = {
    "tutorial_net": "own_loop",
    "sequence_loop_net": "own_loop",
    "step_net": "stepped",
    "block_seq": "sequential",
    "neuron_seq": "sequential",
}


@pytest.mark.parametrize("factory,style", sorted(STYLES.items()))
def test_detection(factory, style):
    assert execution_style(getattr(user_nets, factory)()) == style


def test_stepped_runs_match_a_hand_written_loop():
    """A class called once per step, and a Sequential of blocks (folded around the blocks), give exactly
    what calling them by hand once per step gives."""
    x = torch.rand(4, 3, *SHAPE)
    for model in (user_nets.step_net(), user_nets.block_seq()):
        model.eval()
        got = run_timesteps(model, x)
        from ttsnn_cli.spiking.state import reset_states

        reset_states(model)
        want = torch.stack([first_output(model(x[t])) for t in range(4)])
        assert torch.allclose(got, want, atol=1e-6)


def test_own_loop_t_is_learned_and_a_conflict_is_bad_input():
    model = user_nets.tutorial_net(num_steps=8)
    assert resolve_timesteps(model, SHAPE, None, 4) == 8
    with pytest.raises(BadInputError, match="own loop of 8 steps, --timesteps 4 conflicts"):
        resolve_timesteps(model, SHAPE, 4, None)
    # a model looping over the sequence it is given runs any T
    assert resolve_timesteps(user_nets.sequence_loop_net(), SHAPE, 6, None) == 6


def test_batch_first_output_comes_back_time_major():
    model = user_nets.sequence_loop_net().eval()
    x = torch.rand(5, 2, *SHAPE)
    out = run_timesteps(model, x)
    assert out.shape == (5, 2, 10)
    assert torch.equal(out, model(x).transpose(0, 1))


def test_rate_input_to_a_one_frame_loop_is_one_clear_error():
    with pytest.raises(BadInputError, match="takes one frame and loops over it itself"):
        run_timesteps(user_nets.tutorial_net(), torch.rand(8, 2, *SHAPE))


@pytest.mark.parametrize("factory", ["tutorial_net", "sequence_loop_net", "step_net", "block_seq"])
def test_flop_counting_on_meta_tensors(factory):
    """FlopCounterMode on a meta copy: no data-dependent Python (the tutorial net crashed here)."""
    model = getattr(user_nets, factory)()
    steps = resolve_timesteps(model, SHAPE, None, 4)
    flops = training_flops(model, SHAPE, steps)
    assert flops["forward"] > 0 and flops["backward"] > 0


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Each style trained one epoch on digits through the CLI (the bundle learns the model's T)."""
    folder = tmp_path_factory.mktemp("zoo")
    bundles = {}
    for factory, extra in (("tutorial_net", []), ("step_net", []), ("block_seq", []),
                           ("sequence_loop_net", ["--encoding", "rate", "--timesteps", "3"])):
        out = folder / f"{factory}.tt"
        result = invoke("train", "--arch", f"user_nets:{factory}", "--data", "digits", "-o", out, *FAST, *extra, "--json")
        assert result.exit_code == 0, (factory, result.stderr)
        bundles[factory] = (out, json.loads(result.stdout))
    return folder, bundles


def test_every_style_trains_and_records_its_t(trained):
    _, bundles = trained
    assert bundles["tutorial_net"][1]["timesteps"] == 8  # its own num_steps, not the default 4
    assert bundles["step_net"][1]["timesteps"] == 4
    assert bundles["sequence_loop_net"][1]["timesteps"] == 3
    for _, doc in bundles.values():
        assert 0 <= doc["test_accuracy"] <= 100


def test_conflicting_timesteps_is_one_line_exit_3(tmp_path):
    result = invoke("train", "--arch", "user_nets:tutorial_net", "--data", "digits", "-o", tmp_path / "x.tt",
                    *FAST, "--timesteps", "4")
    assert result.exit_code == 3
    assert "own loop of 8 steps" in result.stderr and len(result.stderr.strip().splitlines()) == 1


SLOW = pytest.mark.slow


@pytest.mark.parametrize("factory", [pytest.param("tutorial_net", marks=SLOW), "step_net",
                                     pytest.param("block_seq", marks=SLOW)])
def test_compress_finetune_report_export(trained, factory):
    folder, bundles = trained
    dense = bundles[factory][0]
    tt = folder / f"{factory}-htt.tt"
    result = invoke("compress", dense, "--ranks", "2", "--mode", "htt", "-o", tt, "--force", "--json")
    assert result.exit_code == 0, result.stderr
    tuned = folder / f"{factory}-tuned.tt"
    result = invoke("finetune", tt, "--data", "digits", "-o", tuned, *FAST, "--force", "--json")
    assert result.exit_code == 0, result.stderr
    result = invoke("report", tuned, "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["timesteps"] == bundles[factory][1]["timesteps"]
    assert report["synops_per_timestep"]["total"] > 0
    result = invoke("export", tuned, "--onnx", folder / f"{factory}.onnx", "--verify", "--force", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["verified"] is True


def test_style_option_settles_detection(tmp_path):
    """--style is checked, and recorded in the bundle for the next commands."""
    checkpoint = tmp_path / "step.pt"
    torch.save(user_nets.step_net().state_dict(), checkpoint)
    result = invoke("compress", checkpoint, "--arch", "user_nets:step_net", "--ranks", "2", "-o", tmp_path / "a.tt",
                    "--style", "bogus")
    assert result.exit_code == 3 and "--style 'bogus'" in result.stderr
    result = invoke("compress", checkpoint, "--arch", "user_nets:step_net", "--ranks", "2", "-o", tmp_path / "a.tt",
                    "--style", "stepped", "--input-shape", "1,16,16", "--timesteps", "4")
    assert result.exit_code == 0, result.stderr
    from ttsnn_cli.storage.bundle import get_meta
    from ttsnn_cli.storage.load import load_checkpoint

    model = load_checkpoint(tmp_path / "a.tt")
    assert get_meta(model).io.style == "stepped" and execution_style(model) == "stepped"


def test_an_epoch_whose_output_never_spiked_warns_once(tmp_path):
    result = invoke("train", "--arch", "user_nets:neuron_seq", "--arch-kwargs", '{"threshold": 1000000.0}',
                    "--data", "digits", "-o", tmp_path / "silent.tt", *FAST, "--timesteps", "2", "--json")
    assert result.exit_code == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "never spiked" in line]
    assert len(warnings) == 1 and "threshold" in warnings[0]
