"""`state.fixed_structure`: inside a training loop the walks of a model's modules that resetting and
folding time make every step are made once, and give what the walk gives."""

from __future__ import annotations

import pytest
import snntorch as snn
import torch
from torch import nn

from ttsnn_cli.compress.decompose import CompressConfig, compress_model
from ttsnn_cli.maths.ranks import RankSpec
from ttsnn_cli.spiking.runner import run_timesteps
from ttsnn_cli.spiking.state import fixed_structure, reset_states, time_folded
from ttsnn_cli.zoo.msresnet import MSResNet


def _htt_net() -> nn.Module:
    torch.manual_seed(0)
    dense = MSResNet((1, 1, 1, 1), in_channels=1, num_classes=5, channels=(8, 8, 16, 16))
    model, _ = compress_model(dense, CompressConfig(RankSpec("fixed", (3, 3, 3)), mode="htt", timesteps=4))
    return model


def _no_walks(monkeypatch: pytest.MonkeyPatch, model: nn.Module) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("walked the modules")
    monkeypatch.setattr(model, "modules", refuse)


def test_inside_the_block_nothing_is_walked_and_the_results_are_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _htt_net()
    x = torch.rand(4, 2, 1, 12, 12)
    reference = run_timesteps(model, x, fold=True)
    with fixed_structure(model):
        _no_walks(monkeypatch, model)
        inside = run_timesteps(model, x, fold=True)
        per_step = run_timesteps(model, x, fold=False)  # HTT counts its steps from each reset
    monkeypatch.undo()
    torch.testing.assert_close(inside, reference, rtol=0, atol=0)
    torch.testing.assert_close(per_step, run_timesteps(model, x, fold=False), rtol=0, atol=0)


def test_reset_and_folding_reach_every_part_with_the_walk_made_once() -> None:
    model = nn.Sequential(nn.Linear(3, 4), snn.Leaky(beta=0.5, init_hidden=True), nn.Linear(4, 2),
                          snn.Synaptic(alpha=0.5, beta=0.5, init_hidden=True))
    tt = _htt_net()
    with fixed_structure(model, tt):
        model(torch.rand(2, 3))
        assert model[1].mem.numel() and model[3].syn.numel()
        reset_states(model)
        assert model[1].mem.numel() == 0 and model[3].syn.numel() == 0 and model[3].mem.numel() == 0
        layers = [m for m in tt.modules() if hasattr(m, "folded_timesteps")]
        with time_folded(tt, 4):
            assert layers and all(m.folded_timesteps == 4 for m in layers)
        assert all(m.folded_timesteps is None for m in layers)


def test_outside_the_block_a_changed_model_is_walked_again() -> None:
    model = nn.Sequential(nn.Linear(3, 4), snn.Leaky(beta=0.5, init_hidden=True))
    with fixed_structure(model):
        pass
    model.append(snn.Leaky(beta=0.5, init_hidden=True))
    model(torch.rand(2, 3))
    reset_states(model)
    assert model[2].mem.numel() == 0
    other = nn.Sequential(snn.Leaky(beta=0.5, init_hidden=True))
    with fixed_structure(model):
        other(torch.rand(2, 3))
        reset_states(other)  # a model the block does not name is walked as before
        assert other[0].mem.numel() == 0
