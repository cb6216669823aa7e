"""Full-rank agreement of a trained SpikingJelly network with its TT compression (docs/networks.md#spikingjelly).

    PYTHONPATH=tests/sj python benchmarks/sj_agreement.py [--epochs 3] [--lr 0.01]

Needs SpikingJelly (`pip install --no-deps spikingjelly==2.0.0 loguru`). Trains the SEW/MS-ResNet-style
network of tests/sj/sj_nets.py (`sew_ms_net`, multi-step mode, T = 4) densely on digits with `ttsnn train`,
compresses it in memory at full rank (`compress_model`, ranks capped at their maximum, --allow-growth),
and compares, over the digits test split, every SpikingJelly neuron's spikes and the outputs of the two.
Prints one JSON document.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import tempfile
from pathlib import Path

import torch
from typer.testing import CliRunner

from ttsnn_cli import CompressConfig, compress_model, load_model, run_timesteps
from ttsnn_cli.cli.commands import app
from ttsnn_cli.data import encode
from ttsnn_cli.data.digits import digits_tensors
from ttsnn_cli.spiking.state import is_neuron

T = 4


def _spikes(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    record: list[torch.Tensor] = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: record.append(out.detach().clone()))
             for m in model.modules() if is_neuron(m)]
    with torch.no_grad():
        y = run_timesteps(model.eval(), x)
    for hook in hooks:
        hook.remove()
    return y, record


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=0.01)
    args = parser.parse_args()
    torch.set_num_threads(1)
    os.environ["TTSNN_TRUSTED_ARCH"] = ",".join(filter(None, [os.environ.get("TTSNN_TRUSTED_ARCH"), "sj_nets"]))
    with tempfile.TemporaryDirectory() as folder:
        dense_path = Path(folder) / "dense.ttsnn"
        result = CliRunner().invoke(app, ["train", "--arch", "sj_nets:sew_ms_net", "--data", "digits", "--epochs",
                                          str(args.epochs), "--lr", str(args.lr), "--timesteps", str(T), "-o",
                                          str(dense_path), "--json"])
        assert result.exit_code == 0, result.stderr
        dense = load_model(dense_path).eval()
    compressed, report = compress_model(copy.deepcopy(dense), CompressConfig(ranks=4096, allow_growth=True))
    _, _, x_test, y_test = digits_tensors()
    x = encode(x_test, T)
    want, dense_spikes = _spikes(dense, x)
    got, tt_spikes = _spikes(compressed, x)
    total = sum(s.numel() for s in dense_spikes)
    equal = sum(int((a == b).sum()) for a, b in zip(dense_spikes, tt_spikes))
    print(json.dumps({
        "decomposed_layers": [r.name for r in report.layers if r.skipped is None],
        "max_layer_rel_error": max(r.rel_error for r in report.layers if r.skipped is None),
        "spikes_compared": total,
        "spike_rate": sum(float(s.sum()) for s in dense_spikes) / total,
        "spike_agreement": equal / total,
        "max_output_diff": float((want - got).abs().max()),
        "dense_accuracy": float((want.mean(0).argmax(1) == y_test).float().mean()) * 100,
        "tt_accuracy": float((got.mean(0).argmax(1) == y_test).float().mean()) * 100,
        "prediction_agreement": float((want.mean(0).argmax(1) == got.mean(0).argmax(1)).float().mean()),
    }, indent=2))


if __name__ == "__main__":
    main()
