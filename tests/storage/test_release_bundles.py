"""Bundles written by release 0.1.0 load and compute exactly as that release computed them.

`release_bundles/` holds what `ttsnn compress` of release 0.1.0 wrote (zoo and user networks; STT,
PTT and HTT; Conv2d, Conv1d and TT-matrix Linear layers), and, beside each, that release's own
`ttsnn inspect --json` and `ttsnn report --json`. `outputs.pt` fingerprints every TT layer's output
and the model's output on a fixed seeded input (sum, absolute sum, sum of squares, first 32 values),
as that release's `load_model` + `run_timesteps` produced them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from ttsnn_cli import load_model, run_timesteps
from ttsnn_cli.cli.commands import app
from ttsnn_cli.storage.bundle import get_meta

RELEASE = Path(__file__).resolve().parent / "release_bundles"
BUNDLES = ["digits_stt", "digits_ptt", "digits_htt", "audio_stt", "mlp_linear", "seq_ptt"]
EXPECTED = torch.load(RELEASE / "outputs.pt", weights_only=True)


def _fingerprint(t: torch.Tensor) -> torch.Tensor:
    t = t.double().flatten()
    return torch.cat([torch.stack([t.sum(), t.abs().sum(), (t * t).sum()]), t[:32]])


@pytest.mark.parametrize("name", BUNDLES)
def test_a_release_bundle_computes_what_that_release_computed(name: str) -> None:
    model = load_model(RELEASE / f"{name}.tt")
    model.eval()
    io = get_meta(model).io
    x = torch.rand(io.timesteps, 2, *io.input_shape, generator=torch.Generator().manual_seed(1)) * 3
    seen: dict[str, list[torch.Tensor]] = {}
    layers = {n for n, m in model.named_modules() if type(m).__name__.startswith("TT")}
    hooks = [m.register_forward_hook(lambda mod, args, y, n=n: seen.setdefault(n, []).append(y.detach().clone()))
             for n, m in model.named_modules() if n in layers]
    with torch.no_grad():
        output = run_timesteps(model, x)
    for hook in hooks:
        hook.remove()
    expected_layers = {k.split("/layer/")[1] for k in EXPECTED if k.startswith(f"{name}/layer/")}
    assert set(seen) == expected_layers
    torch.testing.assert_close(_fingerprint(output), EXPECTED[f"{name}/output"], rtol=1e-5, atol=1e-5)
    for layer, outputs in seen.items():
        got = _fingerprint(torch.cat([t.flatten() for t in outputs]))
        torch.testing.assert_close(got, EXPECTED[f"{name}/layer/{layer}"], rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("name", BUNDLES)
@pytest.mark.parametrize("command", ["inspect", "report"])
def test_inspect_and_report_of_a_release_bundle_say_what_that_release_said(
        name: str, command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copy(RELEASE / f"{name}.tt", tmp_path / f"{name}.tt")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, [command, f"{name}.tt", "--json"])
    assert result.exit_code == 0, result.output
    got = json.loads(result.stdout)
    expected = json.loads((RELEASE / f"{name}.{command}.json").read_text())
    assert _close(got, expected)


def _close(got: object, expected: object, where: str = "") -> bool:
    """Equal documents, floats to 1e-9 relative."""
    if isinstance(expected, dict):
        assert isinstance(got, dict) and set(got) == set(expected), f"{where}: keys {sorted(got)} != {sorted(expected)}"
        return all(_close(got[k], expected[k], f"{where}.{k}") for k in expected)
    if isinstance(expected, list):
        assert isinstance(got, list) and len(got) == len(expected), where
        return all(_close(g, e, f"{where}[{i}]") for i, (g, e) in enumerate(zip(got, expected)))
    if isinstance(expected, float):
        assert got == pytest.approx(expected, rel=1e-9), where
        return True
    assert got == expected, f"{where}: {got!r} != {expected!r}"
    return True
