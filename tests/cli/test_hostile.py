"""Hostile and broken inputs across every command: exit 3, one stderr line, nothing created or lost.

A catalogue of bad files and options, each run through the CLI (CliRunner; a sample also as real
processes through the console entry point). Every case asserts:
- the exit code (3: bad input; a few are usage errors, 2, checked for one line too);
- exactly one line on stderr, no traceback;
- no file created, changed or removed in the work folder (outputs never half-written, inputs intact).
`python tests/cli/test_hostile.py` prints the count of cases by kind (model files, options, accelerator
YAML, recipes, outputs, data, and the kinds of issue 25: resume states, rank methods, teachers, export,
resources, environment; `Case.env` sets environment variables for a case).
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[2]
ZOO = "zoo:digits_csnn"
KW = '{"width": 4}'
TRAIN = ["--epochs", "1", "--timesteps", "2", "--batch-size", "256"]


@dataclass(frozen=True)
class Case:
    kind: str
    name: str
    args: Callable[[Path], list[str]]  # builds its files in the folder, returns the command line
    code: int = 3
    real_process: bool = False  # also run through `python -m ttsnn_cli`
    env: tuple[tuple[str, str], ...] = ()  # environment variables set for the case (`{t}`: the work folder)


def _write(path: Path, content: bytes | str) -> Path:
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def _bundle_with(tmp: Path, change: Callable[[dict], None], name: str = "bad.tt") -> Path:
    bundle = torch.load(tmp / "dense.tt", weights_only=True)
    change(bundle)
    torch.save(bundle, tmp / name)
    return tmp / name


def _set(key: str, value: object) -> Callable[[dict], None]:
    return lambda bundle: bundle.__setitem__(key, value)


def _nested(section: str, key: str, value: object) -> Callable[[dict], None]:
    return lambda bundle: bundle[section].__setitem__(key, value)


def _recipe(tmp: Path, body: str, name: str = "r.yaml") -> Path:
    return _write(tmp / name, body)


def _fifo(tmp: Path, name: str = "fifo") -> Path:
    path = tmp / name
    if not path.exists():
        os.mkfifo(path)
    return path


def _locked(tmp: Path) -> Path:
    path = tmp / "locked.tt"
    path.write_bytes((tmp / "dense.tt").read_bytes())
    path.chmod(0)
    return path


def _cifar(tmp: Path, data: object, labels: object) -> str:
    import pickle

    import numpy as np

    folder = tmp / "cifar"
    folder.mkdir(exist_ok=True)
    batch = {b"data": np.asarray(data), b"labels": labels}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(pickle.dumps(batch))
    return f"cifar10:{folder}"


def _ncaltech(tmp: Path, content: bytes) -> str:
    folder = tmp / "nc" / "Caltech101" / "cls"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "a.bin").write_bytes(content)
    return f"ncaltech101:{tmp / 'nc'}"


BAD_FILES: dict[str, Callable[[Path], Path]] = {
    "missing": lambda t: t / "nope.tt",
    "empty": lambda t: _write(t / "e.tt", b""),
    "text-t": lambda t: _write(t / "t.tt", "t"),
    "text-sentence": lambda t: _write(t / "s.tt", "this is not a checkpoint"),
    "random-bytes": lambda t: _write(t / "r.tt", bytes((i * 97 + 13) % 256 for i in range(4096))),
    "truncated": lambda t: _write(t / "tr.tt", (t / "dense.tt").read_bytes()[:700]),
    "folder": lambda t: t,
    "fifo": _fifo,
    "device": lambda t: Path("/dev/zero"),
    "unreadable": _locked,
    "pickle-with-code": lambda t: _write(t / "p.tt", b"cos\nsystem\n(S'true'\ntR."),
    "exploit-os-system": lambda t: _bundle_with(t, _set("arch", {"spec": "os:system", "kwargs": {"command": f"touch {t}/PWNED"}})),
    "user-arch-untrusted": lambda t: _bundle_with(t, _set("arch", {"spec": "user_nets:sequential_net", "kwargs": {}})),
    "format-version-str": lambda t: _bundle_with(t, _set("format_version", "1")),
    "format-version-future": lambda t: _bundle_with(t, _set("format_version", 99)),
    "input-shape-strings": lambda t: _bundle_with(t, _nested("io", "input_shape", ["a", "b"])),
    "input-shape-zero": lambda t: _bundle_with(t, _nested("io", "input_shape", [1, 0, 16])),
    "timesteps-bool": lambda t: _bundle_with(t, _nested("io", "timesteps", True)),
    "tt-string": lambda t: _bundle_with(t, _set("tt", "stt")),
    "history-int": lambda t: _bundle_with(t, _set("history", 7)),
    "state-string": lambda t: _bundle_with(t, lambda b: b["state_dict"].__setitem__("x", "s")),
    "state-missing": lambda t: _bundle_with(t, lambda b: b.pop("state_dict")),
    "checksum": lambda t: _bundle_with(t, _set("state_sha256", "0" * 64)),
    "kwargs-negative-width": lambda t: _bundle_with(t, _nested("arch", "kwargs", {"width": -1})),
    "kwargs-huge-width": lambda t: _bundle_with(t, _nested("arch", "kwargs", {"width": 10**12})),
    "kwargs-tensor": lambda t: _bundle_with(t, _nested("arch", "kwargs", {"width": torch.ones(1)})),
    "kwargs-nan": lambda t: _bundle_with(t, _nested("arch", "kwargs", {"width": float("nan")})),
    "spec-garbage": lambda t: _bundle_with(t, _nested("arch", "spec", "x; rm -rf /")),
    "plain-list": lambda t: (torch.save([1, 2, 3], t / "l.pt"), t / "l.pt")[1],
}

# a model file is read by every command that loads one
MODEL_COMMANDS: dict[str, Callable[[Path, Path], list[str]]] = {
    "inspect": lambda t, m: ["inspect", str(m)],
    "compress": lambda t, m: ["compress", str(m), "--ranks", "2", "-o", str(t / "out.tt")],
    "report": lambda t, m: ["report", str(m)],
    "export": lambda t, m: ["export", str(m), "--onnx", str(t / "out.onnx")],
    "finetune": lambda t, m: ["finetune", str(m), "--data", "digits", "-o", str(t / "out.tt"), *TRAIN],
    "sweep": lambda t, m: ["sweep", str(m), "--data", "digits", "-o", str(t / "sweep"), "--targets", "4", "--methods", "budget"],
}

CASES: list[Case] = []
for file_name, make in BAD_FILES.items():
    for command, build in MODEL_COMMANDS.items():
        CASES.append(Case("model-file", f"{command}-{file_name}",
                          lambda t, make=make, build=build: build(t, make(t)),
                          real_process=command == "inspect" and file_name in ("text-t", "exploit-os-system", "fifo")))

OPTION_CASES = {
    "train-timesteps-0": ["train", "--arch", ZOO, "--arch-kwargs", KW, "--data", "digits", "-o", "{t}/o.tt", "--timesteps", "0"],
    "train-lr-inf": ["train", "--arch", ZOO, "--data", "digits", "-o", "{t}/o.tt", "--lr", "inf"],
    "train-lr-nan": ["train", "--arch", ZOO, "--data", "digits", "-o", "{t}/o.tt", "--lr", "nan"],
    "train-lr-negative": ["train", "--arch", ZOO, "--data", "digits", "-o", "{t}/o.tt", "--lr", "-1"],
    "train-momentum-negative": ["train", "--arch", ZOO, "--data", "digits", "-o", "{t}/o.tt", "--momentum", "-1"],
    "train-adam-beta-1": ["train", "--arch", ZOO, "--data", "digits", "-o", "{t}/o.tt", "--optimizer", "adam", "--momentum", "1"],
    "train-weight-decay-negative": ["train", "--arch", ZOO, "--data", "digits", "-o", "{t}/o.tt", "--weight-decay", "-1"],
    "train-weight-decay-nan": ["train", "--arch", ZOO, "--data", "digits", "-o", "{t}/o.tt", "--weight-decay", "nan"],
    "train-device-meta": ["train", "--arch", ZOO, "--data", "digits", "-o", "{t}/o.tt", "--device", "meta"],
    "train-device-garbage": ["train", "--arch", ZOO, "--data", "digits", "-o", "{t}/o.tt", "--device", "gpu0"],
    "train-device-cuda-99": ["train", "--arch", ZOO, "--data", "digits", "-o", "{t}/o.tt", "--device", "cuda:99"],
    "train-seed-negative": ["train", "--arch", ZOO, "--data", "digits", "-o", "{t}/o.tt", "--seed", "-1"],
    "train-seed-65-bits": ["train", "--arch", ZOO, "--data", "digits", "-o", "{t}/o.tt", "--seed", str(2**64)],
    "train-lr-diverges": ["train", "--arch", ZOO, "--arch-kwargs", KW, "--data", "digits", "-o", "{t}/o.tt", *TRAIN,
                          "--lr", "1e38"],
    "train-epochs-0": ["train", "--arch", ZOO, "--data", "digits", "-o", "{t}/o.tt", "--epochs", "0"],
    "train-batch-0": ["train", "--arch", ZOO, "--data", "digits", "-o", "{t}/o.tt", "--batch-size", "0"],
    "train-optimizer": ["train", "--arch", ZOO, "--data", "digits", "-o", "{t}/o.tt", "--optimizer", "lbfgs"],
    "train-num-classes-0": ["train", "--arch", ZOO, "--arch-kwargs", '{"num_classes": 0}', "--data", "digits", "-o", "{t}/o.tt"],
    "train-kwargs-nan": ["train", "--arch", ZOO, "--arch-kwargs", '{"width": NaN}', "--data", "digits", "-o", "{t}/o.tt"],
    "train-kwargs-deep": ["train", "--arch", ZOO, "--arch-kwargs", "[" * 50000 + "]" * 50000, "--data", "digits", "-o", "{t}/o.tt"],
    "train-kwargs-unknown": ["train", "--arch", ZOO, "--arch-kwargs", '{"depth": 3}', "--data", "digits", "-o", "{t}/o.tt"],
    "train-arch-garbage": ["train", "--arch", "not a spec", "--data", "digits", "-o", "{t}/o.tt"],
    "train-arch-missing-module": ["train", "--arch", "no_such_module_xyz:build", "--data", "digits", "-o", "{t}/o.tt"],
    "train-data-unknown": ["train", "--arch", ZOO, "--data", "mnist", "-o", "{t}/o.tt"],
    "train-data-missing-dir": ["train", "--arch", ZOO, "--data", "cifar10:{t}/none", "-o", "{t}/o.tt"],
    "compress-timesteps-0": ["compress", "--arch", ZOO, "--ranks", "2", "-o", "{t}/o.tt", "--timesteps", "0"],
    "compress-seed-negative": ["compress", "--arch", ZOO, "--ranks", "2", "-o", "{t}/o.tt", "--seed", "-5"],
    "compress-input-shape-letters": ["compress", "--arch", ZOO, "--ranks", "2", "-o", "{t}/o.tt", "--input-shape", "a,b"],
    "compress-input-shape-zero": ["compress", "--arch", ZOO, "--ranks", "2", "-o", "{t}/o.tt", "--input-shape", "1,0,8"],
    "compress-input-shape-rank-6": ["compress", "--arch", ZOO, "--ranks", "2", "-o", "{t}/o.tt", "--input-shape", "1,2,3,4,5,6"],
    "compress-ranks-zero": ["compress", "--arch", ZOO, "--ranks", "0", "-o", "{t}/o.tt"],
    "compress-ranks-garbage": ["compress", "--arch", ZOO, "--ranks", "x,y", "-o", "{t}/o.tt"],
    "compress-rank-method-nan": ["compress", "--arch", ZOO, "--rank-method", "energy:nan", "-o", "{t}/o.tt"],
    "compress-include-bad-regex": ["compress", "--arch", ZOO, "--ranks", "2", "--include", "(", "-o", "{t}/o.tt"],
    "report-gate-nan": ["report", "{t}/tt.tt", "--min-param-reduction", "nan"],
    "report-gate-inf": ["report", "{t}/tt.tt", "--max-energy-ratio", "inf"],
    "report-gate-negative": ["report", "{t}/tt.tt", "--min-mac-reduction", "-1"],
    "report-timesteps-0": ["report", "{t}/tt.tt", "--timesteps", "0"],
    "report-data-samples-0": ["report", "{t}/tt.tt", "--data-samples", "0"],
    "report-input-shape-bad": ["report", "{t}/tt.tt", "--input-shape", "0,1"],
    "report-input-shape-wrong-for-model": ["report", "{t}/tt.tt", "--input-shape", "3,5,5"],
    "report-accel-missing": ["report", "{t}/tt.tt", "--accel", "{t}/none.yaml"],
    "export-batch-0": ["export", "{t}/tt.tt", "--onnx", "{t}/o.onnx", "--batch", "0"],
    "export-timesteps-0": ["export", "{t}/tt.tt", "--onnx", "{t}/o.onnx", "--timesteps", "0"],
    "export-input-shape-wrong-for-model": ["export", "{t}/tt.tt", "--onnx", "{t}/o.onnx", "--input-shape", "3,5,5"],
    "export-nothing": ["export", "{t}/tt.tt"],
    "sweep-timesteps-0": ["sweep", "{t}/dense.tt", "--data", "digits", "-o", "{t}/sw", "--timesteps", "0"],
    "sweep-targets-garbage": ["sweep", "{t}/dense.tt", "--data", "digits", "-o", "{t}/sw", "--targets", "x"],
    "sweep-lr-nan": ["sweep", "{t}/dense.tt", "--data", "digits", "-o", "{t}/sw", "--lr", "nan"],
    "sweep-out-is-file": ["sweep", "{t}/dense.tt", "--data", "digits", "-o", "{t}/dense.tt"],
    "export-same-file": ["export", "{t}/tt.tt", "--onnx", "{t}/o.x", "--nir", "{t}/o.x"],
}
for name, argv in OPTION_CASES.items():
    CASES.append(Case("option", name, lambda t, argv=argv: [a.replace("{t}", str(t)) for a in argv],
                      real_process=name in ("train-timesteps-0", "train-device-meta", "train-lr-diverges")))

ACCEL = {
    "clock-inf": "name: x\nclock_hz: .inf\nenergy: {preset: sata}\n",
    "clock-nan": "name: x\nclock_hz: .nan\nenergy: {preset: sata}\n",
    "rows-bool": "name: x\narray: {rows: true}\nenergy: {preset: sata}\n",
    "unknown-key": "name: x\nbogus: 1\nenergy: {preset: sata}\n",
    "not-yaml": "name: [x\n",
    "top-list": "- 1\n- 2\n",
    "binary": "\udcff".encode("utf-8", "surrogateescape").decode("latin-1"),
    "bomb": "a: &a [1,1,1,1,1,1,1,1,1,1]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
            "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\nname: *e\n",
    "deep": "name: " + "[" * 3000 + "]" * 3000 + "\n",
}
for name, body in ACCEL.items():
    CASES.append(Case("accelerator-yaml", name,
                      lambda t, body=body: ["report", str(t / "tt.tt"), "--accel", str(_write(t / "a.yaml", body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body))]))
CASES.append(Case("accelerator-yaml", "fifo", lambda t: ["report", str(t / "tt.tt"), "--accel", str(_fifo(t, "a.yaml"))]))

RECIPES = {
    "ranks-true": "model: {arch: zoo:digits_csnn}\ncompress: {ranks: true}\n",
    "epochs-string": "data: digits\nmodel: {arch: zoo:digits_csnn}\ntrain: {epochs: '3'}\n",
    "lr-inf": "data: digits\nmodel: {arch: zoo:digits_csnn}\ntrain: {lr: .inf}\n",
    "gate-nan": "model: {arch: zoo:digits_csnn}\ncompress: {ranks: 2}\nreport: {gates: {min_param_reduction: .nan}}\n",
    "layer-name-matches-nothing": "model: {arch: zoo:digits_csnn, kwargs: {width: 4}}\ncompress: {ranks: 2, layers: {no_such_layer: 3}}\n",
    "unknown-key": "model: {arch: zoo:digits_csnn}\ncompress: {rank: 2}\n",
    "kwargs-tag": "model: {arch: zoo:digits_csnn, kwargs: !!python/object/apply:os.system [touch PWNED]}\ncompress: {ranks: 2}\n",
    "arch-garbage": "model: {arch: 'os.system(1)'}\ncompress: {ranks: 2}\n",
    "kwargs-width-negative": "model: {arch: zoo:digits_csnn, kwargs: {width: -1}}\ncompress: {ranks: 2}\n",
    "seed-huge": "data: digits\nmodel: {arch: zoo:digits_csnn}\ntrain: {seed: 36893488147419103232}\n",
    "momentum-2": "data: digits\nmodel: {arch: zoo:digits_csnn}\ntrain: {momentum: 2}\n",
    "device-meta": "data: digits\nmodel: {arch: zoo:digits_csnn}\ntrain: {device: meta}\n",
    "input-shape-negative": "model: {arch: zoo:digits_csnn, input_shape: [1, -1, 16]}\ncompress: {ranks: 2}\n",
    "bomb": "a: &a [1,1,1,1,1,1,1,1,1,1]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
            "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\n"
            "model: {arch: zoo:digits_csnn, kwargs: {x: *e}}\ncompress: {ranks: 2}\n",
    "recursive-alias": "model: &m {arch: zoo:digits_csnn, kwargs: {x: *m}}\ncompress: {ranks: 2}\n",
    "deep": "model: " + "{a: " * 2000 + "1" + "}" * 2000 + "\n",
    "not-a-mapping": "- 1\n",
    "not-utf8": "model: {arch: '\udcff'}\n",
    "checkpoint-missing": "model: {arch: zoo:digits_csnn, checkpoint: nope.pt}\ncompress: {ranks: 2}\n",
    "checkpoint-garbage": "model: {arch: zoo:digits_csnn, checkpoint: t.tt}\ncompress: {ranks: 2}\n",
    "no-stage": "model: {arch: zoo:digits_csnn}\n",
}
for name, body in RECIPES.items():
    def _run_recipe(t: Path, body: str = body, name: str = name) -> list[str]:
        if name == "checkpoint-garbage":
            _write(t / "t.tt", "t")
        path = _write(t / "r.yaml", body.encode("utf-8", "surrogateescape"))
        return ["run", str(path), "--out", str(t / "run")]
    CASES.append(Case("recipe", name, _run_recipe, real_process=name == "bomb"))
CASES.append(Case("recipe", "fifo", lambda t: ["run", str(_fifo(t, "r.yaml")), "--out", str(t / "run")]))
CASES.append(Case("recipe", "folder", lambda t: ["run", str(t), "--out", str(t / "run")]))
CASES.append(Case("recipe", "compress-recipe-bomb", lambda t: ["compress", "--recipe", str(_recipe(t, RECIPES["bomb"])), "-o", str(t / "o.tt")]))


def _long_name(t: Path) -> str:
    return str(t / ("n" * 250 + ".tt"))


OUTPUTS = {
    "compress-existing": lambda t: ["compress", "--arch", ZOO, "--ranks", "2", "-o", str(_write(t / "old.tt", "keep"))],
    "compress-onto-input": lambda t: ["compress", str(t / "dense.tt"), "--ranks", "2", "-o", str(t / "dense.tt")],
    "compress-folder": lambda t: ["compress", "--arch", ZOO, "--ranks", "2", "-o", str(t)],
    "compress-device-force": lambda t: ["compress", "--arch", ZOO, "--ranks", "2", "-o", "/dev/null", "--force"],
    "compress-fifo-force": lambda t: ["compress", "--arch", ZOO, "--ranks", "2", "-o", str(_fifo(t)), "--force"],
    "compress-no-folder": lambda t: ["compress", "--arch", ZOO, "--ranks", "2", "-o", str(t / "none" / "o.tt")],
    "compress-name-too-long": lambda t: ["compress", "--arch", ZOO, "--ranks", "2", "-o", _long_name(t)],
    "compress-read-only-folder": lambda t: ["compress", "--arch", ZOO, "--ranks", "2", "-o", str(_read_only(t) / "o.tt")],
    "train-existing-metrics": lambda t: ["train", "--arch", ZOO, "--arch-kwargs", KW, "--data", "digits", *TRAIN,
                                         "-o", str((_write(t / "w.tt.metrics.jsonl", "keep"), t / "w.tt")[1])],
    "train-existing-resume": lambda t: ["train", "--arch", ZOO, "--arch-kwargs", KW, "--data", "digits", *TRAIN,
                                        "-o", str((_write(t / "w.tt.resume.pt", "keep"), t / "w.tt")[1])],
    "train-name-too-long": lambda t: ["train", "--arch", ZOO, "--arch-kwargs", KW, "--data", "digits", *TRAIN,
                                      "-o", str(t / ("n" * 235 + ".tt"))],
    "report-plot-onto-input": lambda t: ["report", str(t / "tt.tt"), "--plot", str(t / "tt.tt")],
    "report-plot-onto-input-force": lambda t: ["report", str(t / "tt.tt"), "--plot", str(t / "tt.tt"), "--force"],
    "report-plot-existing": lambda t: ["report", str(t / "tt.tt"), "--plot", str(_write(t / "p.png", "keep"))],
    "report-plot-device": lambda t: ["report", str(t / "tt.tt"), "--plot", "/dev/null", "--force"],
    "export-existing": lambda t: ["export", str(t / "tt.tt"), "--onnx", str(_write(t / "o.onnx", "keep"))],
    "export-nir-existing": lambda t: ["export", str(t / "tt.tt"), "--nir", str(_write(t / "o.nir", "keep"))],
    "export-onto-input": lambda t: ["export", str(t / "tt.tt"), "--onnx", str(t / "tt.tt")],
    "export-fifo-force": lambda t: ["export", str(t / "tt.tt"), "--onnx", str(_fifo(t)), "--force"],
    "run-out-is-file": lambda t: ["run", str(_recipe(t, "model: {arch: zoo:digits_csnn}\ncompress: {ranks: 2}\n")),
                                  "--out", str(_write(t / "f", "keep"))],
    "run-out-not-empty": lambda t: ["run", str(_recipe(t, "model: {arch: zoo:digits_csnn}\ncompress: {ranks: 2}\n")),
                                    "--out", str(t)],
}
for name, build in OUTPUTS.items():
    CASES.append(Case("output", name, build, real_process=name == "compress-device-force"))

DATA = {
    "cifar-pixel-256": lambda t: _cifar(t, [[256] * 3072] * 2, [1, 2]),
    "cifar-no-rows": lambda t: _cifar(t, [], []),
    "cifar-label-out-of-range": lambda t: _cifar(t, [[1] * 3072] * 2, [1, 10]),
    "cifar-wrong-width": lambda t: _cifar(t, [[1] * 100] * 2, [1, 2]),
    "cifar-labels-strings": lambda t: _cifar(t, [[1] * 3072] * 2, ["a", "b"]),
    "ncaltech-not-5-bytes": lambda t: _ncaltech(t, b"\x01\x02\x03"),
    "ncaltech-empty": lambda t: _ncaltech(t, b""),
}
for name, build in DATA.items():
    CASES.append(Case("data", name, lambda t, build=build: ["train", "--arch", ZOO, "--arch-kwargs", KW, "--data", build(t),
                                                            "-o", str(t / "o.tt"), *TRAIN]))
CASES.append(Case("resume-state", "resume-garbage", lambda t: ["train", "--arch", ZOO, "--arch-kwargs", KW, "--data", "digits", *TRAIN,
                                                       "-o", str((_write(t / "g.tt.resume.pt", "garbage"), t / "g.tt")[1]), "--resume"]))
CASES.append(Case("resume-state", "resume-wrong-structure", lambda t: ["train", "--arch", ZOO, "--arch-kwargs", KW, "--data", "digits", *TRAIN,
                                                               "-o", str((torch.save({"epoch": "x"}, t / "h.tt.resume.pt"), t / "h.tt")[1]), "--resume"]))



# ------------------------------------------------------------------------------- issue 25's kinds
def _state(t: Path, change: Callable[[dict], object], model: str = "dense.tt", extra: tuple[str, ...] = ()) -> list[str]:
    """`finetune MODEL --resume` over a real resume state (the `models` fixture's) changed by `change`."""
    state = torch.load(t / "ft.resume", weights_only=True)
    change(state)
    torch.save(state, t / "r.tt.resume.pt")
    return ["finetune", str(t / model), "--data", "digits", *TRAIN, *extra, "-o", str(t / "r.tt"), "--resume"]


def _group(key: str, value: object) -> Callable[[dict], object]:
    return lambda state: state["optimizer"]["param_groups"][0].__setitem__(key, value)


def _schedule(key: str, value: object) -> Callable[[dict], object]:
    return lambda state: state["scheduler"].__setitem__(key, value)


def _momentum(state: dict) -> None:
    first = min(state["optimizer"]["state"])
    state["optimizer"]["state"][first]["momentum_buffer"] = torch.zeros(7)


def _state_path(t: Path, make: Callable[[Path], object]) -> list[str]:
    make(t / "r.tt.resume.pt")
    return ["finetune", str(t / "dense.tt"), "--data", "digits", *TRAIN, "-o", str(t / "r.tt"), "--resume"]


RESUME: dict[str, Callable[[Path], list[str]]] = {
    "lr-string": lambda t: _state(t, _group("lr", "x")),
    "lr-nan": lambda t: _state(t, _group("lr", float("nan"))),
    "momentum-other": lambda t: _state(t, _group("momentum", 0.1)),
    "tmax-0": lambda t: _state(t, _schedule("T_max", 0)),
    "tmax-string": lambda t: _state(t, _schedule("T_max", "x")),
    "last-epoch-negative": lambda t: _state(t, _schedule("last_epoch", -1)),
    "scheduler-swaps-optimizer": lambda t: _state(t, _schedule("optimizer", "x")),
    "momentum-buffer-shape": lambda t: _state(t, _momentum),
    "history-missing": lambda t: _state(t, lambda s: s.pop("history")),
    "epoch-beyond": lambda t: _state(t, lambda s: s.__setitem__("epoch", 9)),
    "model-nan": lambda t: _state(t, lambda s: s["model"].__setitem__("fc.bias", torch.full((10,), float("nan")))),
    "config-tensor": lambda t: _state(t, lambda s: s.__setitem__("config", torch.ones(3))),
    "empty-dict": lambda t: _state(t, lambda s: s.clear()),
    "no-fingerprint": lambda t: _state(t, lambda s: s.pop("fingerprint")),
    "other-kwargs": lambda t: _state(t, lambda s: s["fingerprint"].__setitem__("arch_kwargs", '{"width": 8}')),
    "other-model": lambda t: _state(t, lambda s: None, model="tt.tt"),
    "other-checkpoint": lambda t: _state(t, lambda s: s["fingerprint"].__setitem__("origin", {"checkpoint": "0" * 64, "teacher": None})),
    "other-options": lambda t: _state(t, lambda s: None, extra=("--lr", "0.5")),
    "fifo": lambda t: _state_path(t, lambda p: os.mkfifo(p)),
    "folder": lambda t: _state_path(t, lambda p: p.mkdir()),
    "a-bundle": lambda t: _state_path(t, lambda p: p.write_bytes((t / "dense.tt").read_bytes())),
}
for name, build in RESUME.items():
    CASES.append(Case("resume-state", name, build, real_process=name == "tmax-0"))


def _state_dict(t: Path) -> str:
    torch.save(torch.load(t / "dense.tt", weights_only=True)["state_dict"], t / "sd.pt")
    return str(t / "sd.pt")


RANK_METHODS: dict[str, Callable[[Path], list[str]]] = {
    "sensitivity-no-data-fresh-zoo": lambda t: ["compress", "--arch", ZOO, "--rank-method", "sensitivity:2", "-o", str(t / "o.tt")],
    "sensitivity-no-data-state-dict": lambda t: ["compress", _state_dict(t), "--arch", ZOO, "--arch-kwargs", KW,
                                                 "--rank-method", "sensitivity:2", "-o", str(t / "o.tt")],
}
for name, method, extra in (
    ("sensitivity-0", "sensitivity:0", ["--data", "digits"]), ("sensitivity-inf", "sensitivity:inf", ["--data", "digits"]),
    ("sensitivity-negative", "sensitivity:-3", ["--data", "digits"]), ("sensitivity-1e400", "sensitivity:1e400", ["--data", "digits"]),
    ("sensitivity-no-number", "sensitivity", []), ("sensitivity-calib-0", "sensitivity:3", ["--data", "digits", "--calib-samples", "0"]),
    ("sensitivity-data-unknown", "sensitivity:3", ["--data", "nodata"]),
    ("sensitivity-data-missing-dir", "sensitivity:3", ["--data", "cifar10:{t}/none"]),
    ("budget-0", "budget:0", []), ("budget-half", "budget:0.5", []), ("budget-inf", "budget:inf", []),
    ("budget-letters", "budget:abc", []), ("uniform-half", "uniform:0.5", []), ("energy-2", "energy:2", []),
    ("energy-0", "energy:0", []), ("energy-negative", "energy:-1", []), ("vbmf-argument", "vbmf:2", []),
    ("unknown-method", "magic:2", []), ("ranks-and-budget", "budget:4", ["--ranks", "2"]), ("empty", "", []),
):
    RANK_METHODS[name] = lambda t, method=method, extra=extra: ["compress", str(t / "dense.tt"), "--rank-method", method,
                                                                *[a.replace("{t}", str(t)) for a in extra], "-o", str(t / "o.tt")]
for name, build in RANK_METHODS.items():
    CASES.append(Case("rank-method", name, build))


def _teacher_bundle(t: Path, change: Callable[[dict], None]) -> Path:
    """A teacher bundle: the dense model with `change` applied."""
    return _bundle_with(t, change, "teacher.tt")


TEACHER_FILES = ["missing", "empty", "text-t", "random-bytes", "truncated", "folder", "fifo", "device", "unreadable",
                 "pickle-with-code", "exploit-os-system", "user-arch-untrusted", "checksum", "plain-list",
                 "kwargs-huge-width", "spec-garbage"]
TEACHERS: dict[str, Callable[[Path], Path | str]] = {name: BAD_FILES[name] for name in TEACHER_FILES}
def _five_classes(t: Path) -> Path:
    from ttsnn_cli import save_model
    from ttsnn_cli.storage.trust import build_arch

    save_model(build_arch(ZOO, {"width": 4, "num_classes": 5}), t / "t5.tt", arch=ZOO, arch_kwargs={"width": 4, "num_classes": 5})
    return t / "t5.tt"


TEACHERS["other-classes"] = _five_classes
TEACHERS["state-dict-other-width"] = lambda t: (torch.save(torch.load(t / "tt.tt", weights_only=True)["state_dict"], t / "tsd.pt"), t / "tsd.pt")[1]
TEACHERS["spec-walks-into-torch"] = lambda t: _teacher_bundle(t, _set("arch", {"spec": "user_nets:torch.save", "kwargs": {"obj": 1, "f": f"{t}/PWNED"}}))
for name, make in TEACHERS.items():
    CASES.append(Case("teacher", name, lambda t, make=make: ["finetune", str(t / "dense.tt"), "--teacher", str(make(t)),
                                                              "--data", "digits", *TRAIN, "-o", str(t / "o.tt")],
                      env=(("TTSNN_TRUSTED_ARCH", "user_nets"),) if name == "spec-walks-into-torch" else ()))

EXPORTS: dict[str, Callable[[Path], list[str]]] = {
    "onnx-dangling-link": lambda t: ["export", str(t / "tt.tt"), "--onnx", str((os.symlink(t / "none" / "x.onnx", t / "d.onnx"), t / "d.onnx")[1])],
    "onnx-link-to-stdout-force": lambda t: ["export", str(t / "tt.tt"), "--onnx", str((os.symlink("/dev/stdout", t / "s.onnx"), t / "s.onnx")[1]), "--force"],
    "nir-is-a-folder": lambda t: ["export", str(t / "tt.tt"), "--nir", str(t)],
    "onnx-no-folder": lambda t: ["export", str(t / "tt.tt"), "--onnx", str(t / "none" / "o.onnx")],
    "batch-negative": lambda t: ["export", str(t / "tt.tt"), "--onnx", str(t / "o.onnx"), "--batch", "-1"],
    "batch-huge": lambda t: ["export", str(t / "tt.tt"), "--onnx", str(t / "o.onnx"), "--batch", "100000"],
    "timesteps-300-unrolled": lambda t: ["export", str(t / "tt.tt"), "--onnx", str(t / "o.onnx"), "--timesteps", "300"],
    "input-shape-letters": lambda t: ["export", str(t / "tt.tt"), "--onnx", str(t / "o.onnx"), "--input-shape", "a,b,c"],
    "onnx-onto-nir": lambda t: ["export", str(t / "tt.tt"), "--onnx", str(t / "o.x"), "--nir", str(t / "o.x")],
    "onnx-name-too-long": lambda t: ["export", str(t / "tt.tt"), "--onnx", str(t / ("n" * 250 + ".onnx"))],
}
for name, build in EXPORTS.items():
    CASES.append(Case("export", name, build))


def _io(t: Path, key: str, value: object, name: str) -> str:
    return str(_bundle_with(t, _nested("io", key, value), name))


def _expanded(bundle: dict) -> None:
    bundle["state_dict"]["fc.weight"] = torch.zeros(1).expand(10**9)


RESOURCES: dict[str, Callable[[Path], list[str]]] = {
    "report-timesteps-1m": lambda t: ["report", _io(t, "timesteps", 1_000_000, "t1m.tt")],
    "report-input-30000-square": lambda t: ["report", _io(t, "input_shape", [1, 30000, 30000], "big.tt")],
    "inspect-expanded-tensor": lambda t: ["inspect", str(_bundle_with(t, _expanded, "exp.tt"))],
    "export-timesteps-100000": lambda t: ["export", str(t / "tt.tt"), "--onnx", str(t / "o.onnx"), "--timesteps", "100000"],
    "export-input-30000-square": lambda t: ["export", str(t / "tt.tt"), "--onnx", str(t / "o.onnx"), "--input-shape", "1,30000,30000"],
    "ncaltech-200-mb-event-file": lambda t: ["train", "--arch", ZOO, "--arch-kwargs", KW, "--data", _ncaltech_sparse(t, 200_000_000),
                                             "-o", str(t / "o.tt"), *TRAIN],
    "cifar-shared-rows-pickle": lambda t: ["train", "--arch", ZOO, "--arch-kwargs", '{"width": 4, "in_channels": 3}',
                                           "--data", _cifar_shared_rows(t), "-o", str(t / "o.tt"), *TRAIN],
    "zoo-width-over-cap": lambda t: ["compress", "--arch", ZOO, "--arch-kwargs", '{"width": 5000}', "--ranks", "2", "-o", str(t / "o.tt")],
}
for name, build in RESOURCES.items():
    CASES.append(Case("resources", name, build))


def _ncaltech_sparse(t: Path, size: int) -> str:
    folder = t / "nc" / "Caltech101" / "cls"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "a.bin", "wb") as handle:
        handle.truncate(size)  # sparse: costs no disk
    return f"ncaltech101:{t / 'nc'}"


def _cifar_shared_rows(t: Path) -> str:
    """A small pickle whose rows are one list shared 200,000 times: gigabytes once made an array."""
    import pickle

    folder = t / "cifar-shared"
    folder.mkdir(exist_ok=True)
    row = [0] * 3072
    batch = pickle.dumps({b"data": [row] * 200_000, b"labels": [0] * 200_000})
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(batch)
    return f"cifar10:{folder}"


ENVIRONMENT: dict[str, tuple[dict[str, str], Callable[[Path], list[str]]]] = {
    "trusted-module-walks-into-torch": ({"TTSNN_TRUSTED_ARCH": "user_nets"}, lambda t: ["inspect", str(_bundle_with(
        t, _set("arch", {"spec": "user_nets:torch.save", "kwargs": {"obj": 1, "f": f"{t}/PWNED"}})))]),
    "trusted-module-walks-into-os": ({"TTSNN_TRUSTED_ARCH": "user_nets"}, lambda t: ["inspect", str(_bundle_with(
        t, _set("arch", {"spec": "user_nets:os.system", "kwargs": {"command": f"touch {t}/PWNED"}})))]),
    "trusted-module-walks-into-snntorch": ({"TTSNN_TRUSTED_ARCH": "user_nets"}, lambda t: ["inspect", str(_bundle_with(
        t, _set("arch", {"spec": "user_nets:snn.Leaky", "kwargs": {"beta": 0.5}})))]),
    "trusted-star-os-system": ({"TTSNN_TRUSTED_ARCH": "*"}, lambda t: ["inspect", str(_bundle_with(
        t, _set("arch", {"spec": "os:system", "kwargs": {"command": f"touch {t}/PWNED"}})))]),
    "trusted-os-module": ({"TTSNN_TRUSTED_ARCH": "os"}, lambda t: ["report", str(_bundle_with(
        t, _set("arch", {"spec": "os:system", "kwargs": {"command": f"touch {t}/PWNED"}})))]),
    "trusted-garbage": ({"TTSNN_TRUSTED_ARCH": ",,::,*x"}, lambda t: ["inspect", str(_bundle_with(
        t, _set("arch", {"spec": "user_nets:sequential_net", "kwargs": {}})))]),
    "named-arch-walks-into-torch": ({}, lambda t: ["inspect", str(_bundle_with(
        t, _set("arch", {"spec": "user_nets:torch.save", "kwargs": {"obj": 1, "f": f"{t}/PWNED"}}))),
        "--arch", "user_nets:torch.save"]),
    "native-off-bad-input-still-one-line": ({"TTSNN_NATIVE": "0"}, lambda t: ["inspect", str(t / "nope.tt")]),
    "cc-missing-bad-input-still-one-line": ({"CC": "/nonexistent/cc"}, lambda t: ["report", str(t / "tt.tt"), "--timesteps", "0"]),
    "tmpdir-a-file": ({"TMPDIR": "{t}/dense.tt"}, lambda t: ["inspect", str(_write(t / "g.tt", "garbage"))]),
    "keep-freed-memory-garbage": ({"TTSNN_KEEP_FREED_MEMORY": "\x01 no"}, lambda t: ["inspect", str(t / "nope.tt")]),
}
for name, (variables, build) in ENVIRONMENT.items():
    CASES.append(Case("environment", name, build, env=tuple(variables.items()),
                      real_process=name in ("tmpdir-a-file", "keep-freed-memory-garbage")))


def _read_only(t: Path) -> Path:
    folder = t / "ro"
    folder.mkdir(exist_ok=True)
    folder.chmod(0o555)
    return folder


# ------------------------------------------------------------------------------------- running
@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """A dense zoo bundle, a TT bundle and a resume state, as bytes (copied per case)."""
    from ttsnn_cli import save_model
    from ttsnn_cli.compress.decompose import CompressConfig, compress_model
    from ttsnn_cli.maths.ranks import RankSpec
    from ttsnn_cli.storage.bundle import ModelIO
    from ttsnn_cli.storage.trust import build_arch

    folder = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    dense = build_arch(ZOO, {"width": 4})
    save_model(dense, folder / "dense.tt", arch=ZOO, arch_kwargs={"width": 4}, io=ModelIO((1, 16, 16), 2, "digits"))
    tt, _ = compress_model(build_arch(ZOO, {"width": 4}), CompressConfig(ranks=RankSpec("fixed", (2, 2, 2))))
    save_model(tt, folder / "tt.tt", arch=ZOO, arch_kwargs={"width": 4}, io=ModelIO((1, 16, 16), 2, "digits"))
    # a real resume state of `finetune dense.tt ... -o ft.tt` (TRAIN options): the resume-state cases change it
    from ttsnn_cli.cli.commands import app

    done = CliRunner().invoke(app, ["finetune", str(folder / "dense.tt"), "--data", "digits", *TRAIN, "-o", str(folder / "ft.tt")])
    assert done.exit_code == 0, done.stderr
    (folder / "ft.tt.resume.pt").rename(folder / "ft.resume")
    return {name: (folder / name).read_bytes() for name in ("dense.tt", "tt.tt", "ft.resume")}


def _snapshot(folder: Path) -> dict[str, tuple[int, int, int]]:
    found = {}
    for root, dirs, files in os.walk(folder):
        for name in files + dirs:
            path = Path(root) / name
            info = path.lstat()
            found[str(path.relative_to(folder))] = (info.st_mode, info.st_size, info.st_mtime_ns)
    return found


def _prepare(tmp_path: Path, models: dict[str, bytes], monkeypatch: pytest.MonkeyPatch) -> Path:
    work = tmp_path / "w"
    work.mkdir()
    for name, data in models.items():
        (work / name).write_bytes(data)
    monkeypatch.chdir(work)
    monkeypatch.setenv("TTSNN_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.delenv("TTSNN_TRUSTED_ARCH", raising=False)
    return work


def _case_env(case: Case, work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in case.env:
        monkeypatch.setenv(name, value.replace("{t}", str(work)))


def _restore_permissions(work: Path) -> None:
    for root, dirs, files in os.walk(work):
        for name in dirs + files:
            path = Path(root) / name
            if not path.is_symlink() and stat.S_ISDIR(path.lstat().st_mode) or path.is_file():
                path.chmod(0o755 if path.is_dir() else 0o644)


def check(case: Case, code: int, stderr: str, before: dict, after: dict, work: Path) -> list[str]:
    """What misbehaved (empty when the case behaved)."""
    problems = []
    if code != case.code:
        problems.append(f"exit {code}, expected {case.code}")
    lines = stderr.strip("\n").splitlines()
    if case.args.__name__ == "_run_recipe" or (lines and lines[0].startswith("ttsnn run ")):
        # `run` reports its stages on stderr as it goes (by design): the error is its one last line
        errors = [line for line in lines if line.startswith("error:")]
        if len(errors) != 1 or not lines[-1].startswith("error:"):
            problems.append(f"{len(errors)} error lines")
    elif len(lines) != 1:
        problems.append(f"{len(lines)} stderr lines")
    if "Traceback" in stderr:
        problems.append("traceback")
    if before != after:
        changed = sorted(set(before.items()) ^ set(after.items()))
        problems.append(f"files changed: {[c[0] for c in changed][:4]}")
    if (work / "PWNED").exists():
        problems.append("ran code from a file")
    return problems


@pytest.mark.parametrize("case", CASES, ids=[f"{c.kind}:{c.name}" for c in CASES])
def test_hostile_input(case: Case, tmp_path: Path, models: dict[str, bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    from ttsnn_cli.cli.commands import app

    if os.geteuid() == 0 and case.name.endswith(("unreadable", "read-only-folder")):
        pytest.skip("root reads and writes regardless of permissions")
    work = _prepare(tmp_path, models, monkeypatch)
    _case_env(case, work, monkeypatch)
    args = case.args(work)
    before = _snapshot(work)
    try:
        result = CliRunner().invoke(app, args)
        after = _snapshot(work)
    finally:
        _restore_permissions(work)
    problems = check(case, result.exit_code, result.stderr, before, after, work)
    assert not problems, f"{case.kind}:{case.name}: {problems}; stderr: {result.stderr[:500]!r}"


REAL = [c for c in CASES if c.real_process]
#: real processes cost a torch import each: these three run by default, the rest with -m slow
FAST_REAL = {"inspect-text-t", "inspect-exploit-os-system", "bomb"}


@pytest.mark.parametrize("case", [pytest.param(c, marks=() if c.name in FAST_REAL else pytest.mark.slow) for c in REAL],
                         ids=[f"{c.kind}:{c.name}" for c in REAL])
def test_hostile_input_real_process(case: Case, tmp_path: Path, models: dict[str, bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    """The same through `python -m ttsnn_cli` (the console entry point, real stderr, no terminal)."""
    work = _prepare(tmp_path, models, monkeypatch)
    _case_env(case, work, monkeypatch)
    args = case.args(work)
    before = _snapshot(work)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]), "COLUMNS": "40"}
    done = subprocess.run([sys.executable, "-m", "ttsnn_cli", *args], capture_output=True, text=True, env=env,
                          cwd=work, timeout=300)
    after = _snapshot(work)
    problems = check(case, done.returncode, done.stderr, before, after, work)
    assert not problems, f"{case.kind}:{case.name}: {problems}; stderr: {done.stderr[:500]!r}"


if __name__ == "__main__":
    counts = Counter(case.kind for case in CASES)
    for kind, count in sorted(counts.items()):
        print(f"{kind:18s} {count}")
    print(f"{'total':18s} {len(CASES)} ({len(REAL)} also as real processes)")
