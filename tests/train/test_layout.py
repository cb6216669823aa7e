"""train.layout: conv weights held in the activations' memory format while a model trains."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ttsnn_cli.train import engine
from ttsnn_cli.train.layout import match_weights_to_activations, restore_weights, weights_in_activation_format
from ttsnn_cli.zoo.msresnet import MSResNet


def _msresnet() -> MSResNet:
    torch.manual_seed(0)
    return MSResNet((1, 1, 1, 1), in_channels=3, num_classes=5, channels=(16, 16, 32, 32))


def _channels_last(weight: torch.Tensor) -> bool:
    return weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()


def test_only_3x3_weights_of_convs_reading_16_channels_of_a_channels_last_model_convert() -> None:
    model = _msresnet()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    changed = match_weights_to_activations(model)
    converted = {n for n, p in model.named_parameters() if _channels_last(p)}
    assert converted == {f"layer{i}.0.conv{j}.weight" for i in range(1, 5) for j in (1, 2)}
    assert model.stem.conv.weight.is_contiguous()  # reads 3 channels
    assert len(changed) == len(converted)
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())  # a layout, not a value
    restore_weights(changed)
    assert all(p.is_contiguous() for p in model.parameters())


def test_a_model_that_runs_nchw_is_left_alone() -> None:
    plain = nn.Sequential(nn.Conv2d(32, 32, 3))
    model = _msresnet()
    model.channels_last = False
    narrow_stem = MSResNet((1, 1, 1, 1), in_channels=3, num_classes=5, channels=(8, 16, 32, 32))  # runs NCHW
    assert not narrow_stem.runs_channels_last
    assert match_weights_to_activations(plain, model, narrow_stem, None) == []


def test_the_layout_comes_back_when_the_run_fails_and_the_parameters_stay_the_same_objects() -> None:
    model = _msresnet()
    params = list(model.parameters())
    with pytest.raises(RuntimeError), weights_in_activation_format(model):
        assert _channels_last(model.layer1[0].conv1.weight)
        raise RuntimeError("interrupted")
    assert all(p.is_contiguous() for p in model.parameters())
    assert all(a is b for a, b in zip(params, model.parameters()))


def test_fit_trains_with_the_weights_relaid_and_returns_them_as_they_were(monkeypatch: pytest.MonkeyPatch) -> None:
    model, teacher = _msresnet(), _msresnet()
    seen = {}

    def training(student, data, config, output, resume, progress, on_epoch, teacher_model, logs=None):
        seen["student"] = _channels_last(student.layer1[0].conv1.weight)
        seen["teacher"] = _channels_last(teacher_model.layer1[0].conv1.weight)
        return {"epochs": 0}

    monkeypatch.setattr(engine, "_fit", training)
    assert engine.fit(model, None, engine.TrainConfig(), "out.pt", teacher=teacher) == {"epochs": 0}
    assert seen == {"student": True, "teacher": True}
    assert all(p.is_contiguous() for m in (model, teacher) for p in m.parameters())
