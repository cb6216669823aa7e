"""The user-network zoo (tests/user_nets.py) through every stage, as a user runs it: the table of
network x stage -> works / refused (reason).

    PYTHONPATH=tests python benchmarks/user_zoo.py [--only NAME ...]

Each network starts from a state_dict of fresh weights (plus its factory, `--arch user_nets:...`),
then: compress (STT, rank 2), finetune (1 epoch on digits), report, export ONNX unrolled and step
(each verified in onnxruntime) and NIR. The later commands pass `--trust-arch`, as the user who named
the factory must: the bundles record user code, which ttsnn imports only when trusted. NIR files are re-simulated by snntorch's importer in
tests/export/test_nir_resim.py. Prints a markdown table; a cell is `ok` or the one-line refusal.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from typer.testing import CliRunner

from ttsnn_cli.cli.commands import app
from ttsnn_cli.storage.trust import build_arch

NETS = {  # name: (factory spec, kwargs, extra finetune options[, extra compress options])
    "tutorial (own loop, Leaky subtract, maxpool, T=8)": ("user_nets:tutorial_net", {}, []),
    "sequence loop (own loop on x[T], Synaptic, batch-first, rate)": ("user_nets:sequence_loop_net", {},
                                                                     ["--encoding", "rate"]),
    "stepped class (Leaky zero, maxpool, (spk, mem))": ("user_nets:step_net", {}, []),
    "Sequential of blocks (BN, avgpool)": ("user_nets:block_seq", {}, []),
    "Sequential Leaky subtract, avgpool": ("user_nets:neuron_seq", {"kind": "leaky"}, []),
    "Sequential Leaky zero, maxpool": ("user_nets:neuron_seq", {"kind": "leaky", "reset": "zero", "pool": "max"}, []),
    "Sequential Leaky none": ("user_nets:neuron_seq", {"kind": "leaky", "reset": "none"}, []),
    "Sequential Synaptic": ("user_nets:neuron_seq", {"kind": "synaptic"}, []),
    "Sequential Alpha": ("user_nets:neuron_seq", {"kind": "alpha"}, []),
    "Sequential Lapicque": ("user_nets:neuron_seq", {"kind": "lapicque"}, []),
    "Sequential RLeaky (conv recurrence)": ("user_nets:neuron_seq", {"kind": "rleaky"}, []),
    "Sequential RSynaptic (conv recurrence)": ("user_nets:neuron_seq", {"kind": "rsynaptic"}, []),
    "MLP RLeaky (linear recurrence, TT-matrix Linears)": ("user_nets:neuron_mlp", {"kind": "rleaky"}, [],
                                                          ["--layer-types", "conv2d,linear"]),
    "zoo digits_csnn (multistep)": ("zoo:digits_csnn", {"width": 4}, []),
}
STAGES = ("compress", "finetune", "report", "onnx unrolled", "onnx step", "nir")


def _cell(result) -> str:
    if result.exit_code == 0:
        return "ok"
    lines = (result.stderr or "").strip().splitlines()
    return f"refused (exit {result.exit_code}): {(lines[-1] if lines else '')[:160].removeprefix('error: ')}"


def run_network(name: str, folder: Path) -> dict[str, str]:
    spec, kwargs, extra, *compress_extra = NETS[name]
    invoke = lambda *args: CliRunner().invoke(app, [str(a) for a in args])  # noqa: E731
    arch = ["--arch", spec, "--arch-kwargs", json.dumps(kwargs)]
    dense = folder / "dense.pt"
    torch.manual_seed(0)
    torch.save(build_arch(spec, kwargs).state_dict(), dense)
    cells: dict[str, str] = {}
    tt = folder / "tt.tt"
    result = invoke("compress", dense, *arch, "--ranks", "2", "--input-shape", "1,16,16", "-o", tt, "--json",
                    *(compress_extra[0] if compress_extra else []))
    cells["compress"] = _cell(result)
    if result.exit_code:
        return cells
    tuned = folder / "tuned.tt"
    result = invoke("finetune", tt, "--data", "digits", "--epochs", "1", "--batch-size", "256", "--lr", "0.05",
                    "-o", tuned, *extra, "--json", "--trust-arch")
    cells["finetune"] = _cell(result)
    model = tuned if result.exit_code == 0 else tt
    cells["report"] = _cell(invoke("report", model, "--json", "--trust-arch"))
    cells["onnx unrolled"] = _cell(invoke("export", model, "--onnx", folder / "u.onnx", "--verify", "--json",
                                          "--trust-arch"))
    cells["onnx step"] = _cell(invoke("export", model, "--onnx", folder / "s.onnx", "--mode", "step", "--verify",
                                      "--json", "--trust-arch"))
    cells["nir"] = _cell(invoke("export", model, "--nir", folder / "m.nir", "--json", "--trust-arch"))
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", help="substrings of network names to run")
    args = parser.parse_args()
    torch.set_num_threads(1)
    names = [n for n in NETS if not args.only or any(o in n for o in args.only)]
    print("| network | " + " | ".join(STAGES) + " |")
    print("|---|" + "---|" * len(STAGES))
    for name in names:
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as folder:
            cells = run_network(name, Path(folder))
        row = [cells.get(stage, "not run (compress refused)") for stage in STAGES]
        print(f"| {name} | " + " | ".join(row) + " |", flush=True)
        print(f"  ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
