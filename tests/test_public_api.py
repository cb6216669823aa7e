"""The public API: `from ttsnn_cli import ...` is enough to write one's own training loop."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import snntorch as snn
import torch
from torch import nn

import ttsnn_cli
from ttsnn_cli import (
    CompressConfig,
    ModelIO,
    compress_model,
    encode,
    load_model,
    reset_states,
    run_timesteps,
    save_model,
)


def test_every_declared_name_resolves() -> None:
    for name in ttsnn_cli.__all__:
        assert getattr(ttsnn_cli, name) is not None, name


def test_importing_the_package_loads_nothing_heavy() -> None:
    """The console script installs its signal handlers before torch is imported."""
    code = "import sys, ttsnn_cli; print(sorted(m for m in ('torch', 'tensorly', 'typer') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def _tutorial_net() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(2, 8, 3, padding=1), snn.Leaky(beta=0.9, init_hidden=True),
        nn.Conv2d(8, 8, 3, padding=1), snn.Leaky(beta=0.9, init_hidden=True),
        nn.AvgPool2d(2), nn.Flatten(), nn.Linear(8 * 4 * 4, 3), snn.Leaky(beta=0.9, init_hidden=True, output=True),
    )


def test_a_users_own_loop_over_a_compressed_model(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    torch.manual_seed(0)
    model = _tutorial_net()
    model, result = compress_model(model, CompressConfig(ranks=4))  # as --ranks 4
    assert result.totals["decomposed_layers"] == 2
    images, labels = torch.rand(6, 2, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2])
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(5):
        reset_states(model)
        output = run_timesteps(model, encode(images, timesteps=4))  # [T, B, classes]
        loss = nn.functional.cross_entropy(output.mean(0), labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    path = save_model(model, tmp_path / "mine.tt", arch="test_public_api:_tutorial_net",
                      io=ModelIO((2, 8, 8), 4, None))
    again = load_model(path, arch="test_public_api:_tutorial_net")  # naming the code is trusting it
    model.eval()
    again.eval()
    with torch.no_grad():
        torch.testing.assert_close(run_timesteps(again, encode(images, 4)), run_timesteps(model, encode(images, 4)))
