"""The training engine: learning, exact resume, cores-only training, losses, options."""

import json

import pytest
import torch
from torch.utils.data import Subset

from ttsnn_cli.compress.decompose import CompressConfig, compress_model
from ttsnn_cli.data import DataBundle, load_data
from ttsnn_cli.errors import BadInputError
from ttsnn_cli.layers.conv2d import TTConv2d
from ttsnn_cli.maths.ranks import parse_rank_spec
from ttsnn_cli.train.engine import TrainConfig, fit, side_paths, trainable_parameters
from ttsnn_cli.zoo import zoo_entry


@pytest.fixture(scope="module")
def small_digits() -> DataBundle:
    full = load_data("digits")
    return DataBundle("digits", Subset(full.train, range(0, 1400, 7)), Subset(full.test, range(0, 360, 5)), (1, 16, 16), 10)


def tiny_model(seed: int = 0):
    torch.manual_seed(seed)
    return zoo_entry("digits_csnn").factory(width=8)


def config(**kw) -> TrainConfig:
    base = dict(epochs=2, batch_size=32, timesteps=2, lr=0.1, seed=3)
    base.update(kw)
    return TrainConfig(**base)


def test_fit_learns_and_writes_logs(tmp_path, small_digits):
    events = []
    out = tmp_path / "m.tt"
    result = fit(tiny_model(), small_digits, config(epochs=3), out, progress=events.append)
    assert result["epochs"] == 3 and result["output"] == str(out)
    assert result["history"][-1]["train_loss"] < result["history"][0]["train_loss"]
    assert result["test_accuracy"] > 15  # 10 classes: above chance after 3 short epochs
    log, state = side_paths(out)
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3]
    assert state.is_file()
    kinds = {e["kind"] for e in events}
    assert kinds == {"epoch_start", "batch", "epoch_end"}


class Killed(Exception):
    pass


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_resume_reproduces_uninterrupted_run(tmp_path, small_digits, optimizer):
    cfg = dict(epochs=3, optimizer=optimizer, lr=0.1 if optimizer == "sgd" else 0.01)
    straight = tiny_model()
    fit(straight, small_digits, config(**cfg), tmp_path / "a.tt")

    resumed_start = tiny_model(seed=99)  # another init: everything must come from the resume state

    def stop_after(n):
        def hook(model, history):
            if len(history) == n:
                raise Killed
        return hook

    with pytest.raises(Killed):
        fit(tiny_model(), small_digits, config(**cfg), tmp_path / "c.tt", on_epoch=stop_after(2))
    # on_epoch raised before the epoch-2 state was saved: the state holds epoch 1
    state = torch.load(side_paths(tmp_path / "c.tt")[1], weights_only=True)
    assert state["epoch"] == 1
    result = fit(resumed_start, small_digits, config(**cfg), tmp_path / "c.tt", resume=True)

    assert result["resumed_from_epoch"] == 1
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed_start.state_dict().items()):
        assert torch.equal(a, b), name
    log = side_paths(tmp_path / "c.tt")[0].read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in log] == [1, 2, 3]


def test_resume_refuses_other_options(tmp_path, small_digits):
    fit(tiny_model(), small_digits, config(epochs=1), tmp_path / "a.tt")
    with pytest.raises(BadInputError, match="other options"):
        fit(tiny_model(), small_digits, config(epochs=1, lr=0.5), tmp_path / "a.tt", resume=True)
    with pytest.raises(BadInputError, match="no resume state"):
        fit(tiny_model(), small_digits, config(epochs=1), tmp_path / "none.tt", resume=True)


def compressed():
    model = tiny_model()
    spec = parse_rank_spec(2, None)
    model, _ = compress_model(model, CompressConfig(ranks=spec, mode="ptt", exclude=[r"stem\.conv"]))
    return model


def test_train_cores_only_touches_cores(tmp_path, small_digits):
    model = compressed()
    assert any(isinstance(m, TTConv2d) for m in model.modules())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fit(model, small_digits, config(epochs=1, train="cores"), tmp_path / "t.tt")
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(".core" in k for k in changed)
    assert not any(k.endswith("weight") and ".core" not in k and "bn" not in k for k in changed)
    with pytest.raises(BadInputError, match="no TT layers"):
        trainable_parameters(tiny_model(), "cores")


@pytest.mark.parametrize("loss", ["ce_rate", "mse_count"])
def test_rate_losses_run(tmp_path, small_digits, loss):
    result = fit(tiny_model(), small_digits, config(epochs=1, loss=loss), tmp_path / "l.tt")
    assert result["train_loss"] is not None


def test_bad_options_are_bad_input(tmp_path, small_digits):
    for bad in (dict(epochs=0), dict(optimizer="rmsprop"), dict(loss="hinge"), dict(device="tpu")):
        with pytest.raises(BadInputError):
            fit(tiny_model(), small_digits, config(**bad), tmp_path / "x.tt")


def test_trains_a_user_sequential_snntorch_model(tmp_path, small_digits):
    """User style B (nn.Sequential + snn.Leaky(init_hidden=True)) runs folded through the runner."""
    from user_nets import sequential_net

    torch.manual_seed(0)
    model = sequential_net()
    result = fit(model, small_digits, config(epochs=1), tmp_path / "u.tt")
    assert result["train_loss"] > 0 and 0 <= result["test_accuracy"] <= 100
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_recomputing_tt_same_gradients_less_saved_memory():
    from ttsnn_cli.spiking.runner import run_timesteps
    from ttsnn_cli.train.memory import recomputing_tt

    model = compressed().train()
    x = torch.rand(2, 4, 1, 16, 16)

    def step():
        saved = []

        def pack(t):
            saved.append(t.numel() * t.element_size())
            return t

        model.zero_grad()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = run_timesteps(model, x).sum()
        loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}, sum(saved)

    torch.manual_seed(0)
    plain, plain_bytes = step()
    torch.manual_seed(0)
    with recomputing_tt(model):
        again, recompute_bytes = step()
    assert all(type(m) is TTConv2d for m in model.modules() if isinstance(m, TTConv2d))  # restored
    for name in plain:
        assert torch.allclose(plain[name], again[name], atol=1e-6), name
    assert recompute_bytes < plain_bytes
