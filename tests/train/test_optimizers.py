"""The update the training commands build (`train.optimizers`): fused on CUDA only, and a fused SGD
whose first step the fp16 loss scaler skips stays exactly where the unfused SGD stays."""

from __future__ import annotations

import pytest
import torch

from ttsnn_cli.train.engine import TrainConfig
from ttsnn_cli.train.optimizers import fusable, make_optimizer


def test_the_update_is_fused_on_cuda_only() -> None:
    """The CPU keeps the unfused update, whose rounding CPU runs' results depend on."""
    cpu = [torch.nn.Parameter(torch.zeros(3))]
    assert not fusable(cpu) and not fusable([])
    for name in ("sgd", "adam"):
        assert make_optimizer(cpu, TrainConfig(optimizer=name)).param_groups[0]["fused"] is None  # type: ignore[arg-type]


def _steps(name: str, fused: bool, device: str, overflow_at: set[int], steps: int = 4) -> list[torch.Tensor]:
    """`steps` scaled steps of a small model, with an infinite gradient planted at `overflow_at`
    (the scaler then skips the step and lowers its scale), on `device`; the weights after."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3)).to(device)
    optimizer = make_optimizer(list(model.parameters()), TrainConfig(optimizer=name, lr=0.05), fused=fused)  # type: ignore[arg-type]
    scaler = torch.amp.GradScaler(device, init_scale=1024.0)
    x = torch.randn(8, 6, device=device)
    for step in range(steps):
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(model(x).square().mean()).backward()
        if step in overflow_at:
            model[0].bias.grad[0] = float("inf")
        scaler.step(optimizer)
        scaler.update()
    return [p.detach().cpu() for p in model.parameters()]


@pytest.mark.parametrize("name", ["sgd", "adam"])
@pytest.mark.parametrize("overflow_at", [{0}, {0, 1}, {2}])
def test_a_fused_update_skips_what_the_scaler_skips(name: str, overflow_at: set[int]) -> None:
    """torch's fused SGD makes its momentum uninitialised on its first step and fills it only if the
    step runs: a skipped first step left garbage for the next (`optimizers._momentum_from_zero`)."""
    unfused = _steps(name, False, "cpu", overflow_at)
    fused = _steps(name, True, "cpu", overflow_at)
    for a, b in zip(unfused, fused):
        assert torch.isfinite(b).all()
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-7)


@pytest.mark.cuda
@pytest.mark.parametrize("name", ["sgd", "adam"])
@pytest.mark.parametrize("overflow_at", [set(), {0}, {2}])
def test_the_fused_update_on_cuda_matches_the_unfused_one(name: str, overflow_at: set[int]) -> None:
    params = [torch.nn.Parameter(torch.zeros(2, device="cuda"))]
    assert fusable(params) and make_optimizer(params, TrainConfig(optimizer=name)).param_groups[0]["fused"]  # type: ignore[arg-type]
    for a, b in zip(_steps(name, False, "cuda", overflow_at), _steps(name, True, "cuda", overflow_at)):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
