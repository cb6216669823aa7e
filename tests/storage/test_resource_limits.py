"""Work that would need more memory (or time) than the machine has is refused before it allocates.

Each hostile input of issue 25's "Hangs and memory" is crafted here in a few kilobytes: a bundle
recording 1,000,000 timesteps or a 30000x30000 input, a stride-0 weight, a zoo model whose kwargs
multiply into gigabytes, an unrolled export over hundreds of steps, an oversized N-Caltech101
recording, a CIFAR pickle whose shared nested lists expand to gigabytes. Each must be one stderr
line and exit 3 (never a hang, a MemoryError or an internal error). The subprocess test measures
the peak resident memory of all of them together.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from ttsnn_cli.cli.commands import app
from ttsnn_cli.errors import BadInputError
from ttsnn_cli.export.job import MAX_UNROLLED_OPS
from ttsnn_cli.host.memory import LIMIT_ENV, check_fits, human_bytes, machine_memory
from ttsnn_cli.spiking.budget import MAX_TIMESTEPS, check_run_fits, check_sizes, step_cost
from ttsnn_cli.storage.bundle import get_meta, make_bundle, state_checksum
from ttsnn_cli.storage.trust import build_arch
from ttsnn_cli.zoo import MAX_ZOO_VALUES, zoo_values

runner = CliRunner()
GB = 1 << 30


def _bundle(**changes: Any) -> dict[str, Any]:
    """A valid digits_csnn bundle (width 4: tiny), with top-level or `io` fields changed."""
    model = build_arch("zoo:digits_csnn", {"width": 4})
    meta = get_meta(model)
    meta.arch, meta.arch_kwargs = "zoo:digits_csnn", {"width": 4}
    bundle = make_bundle(model)
    for key, value in changes.items():
        if key in ("timesteps", "input_shape"):
            bundle["io"][key] = value
        else:
            bundle[key] = value
    return bundle


def _save(path: Path, bundle: dict[str, Any]) -> Path:
    torch.save(bundle, path)
    return path


def _refused(args: list[str], *needles: str) -> str:
    """Run the CLI: exit 3, exactly one stderr line holding every needle, no traceback."""
    result = runner.invoke(app, args)
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 3, (result.exit_code, result.output)
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# ---------------------------------------------------------------------------------- host facts
def test_machine_memory_is_a_positive_bound_and_env_lowers_it(monkeypatch: pytest.MonkeyPatch) -> None:
    assert machine_memory() > 64 << 20
    monkeypatch.setenv(LIMIT_ENV, "100")
    assert machine_memory() == 100 << 20
    with pytest.raises(BadInputError, match="more than the 105 MB"):
        check_fits(200 << 20, "a test")
    check_fits(50 << 20, "a test")
    monkeypatch.setenv(LIMIT_ENV, "lots")
    with pytest.raises(BadInputError, match=LIMIT_ENV):
        machine_memory()


def test_human_bytes() -> None:
    assert human_bytes(3.84e12) == "3.8 TB" and human_bytes(640e6) == "640 MB" and human_bytes(12) == "12 bytes"


# ------------------------------------------------------------------------ case 1: io sizes, report
def test_step_cost_measures_one_step_on_meta() -> None:
    model = build_arch("zoo:digits_csnn", {"width": 4})
    cost = step_cost(model, (1, 16, 16))
    assert cost is not None and cost.activations > 4 * 16 * 16 and cost.ops > 10
    assert all(p.device.type == "cpu" for p in model.parameters())  # the model itself is untouched
    assert step_cost(model, (3, 5)) is None  # a shape the model cannot eat: the caller's checks speak


def test_run_estimate_scales_with_timesteps_and_respects_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    model = build_arch("zoo:digits_csnn", {"width": 4})
    check_run_fits(model, (1, 16, 16), 4)  # the real size fits anywhere
    monkeypatch.setenv(LIMIT_ENV, "1")
    with pytest.raises(BadInputError, match="T=4000"):
        check_run_fits(model, (1, 16, 16), 4000)
    with pytest.raises(BadInputError, match="timesteps"):
        check_sizes((1, 16, 16), MAX_TIMESTEPS + 1)


def test_report_refuses_a_bundle_recording_a_million_timesteps(tmp_path: Path) -> None:
    path = _save(tmp_path / "t.tt", _bundle(timesteps=1_000_000))
    _refused(["report", str(path), "--json"], "1000000 timesteps", f"{MAX_TIMESTEPS:,}")
    ok = _save(tmp_path / "ok.tt", _bundle())
    _refused(["report", str(ok), "--timesteps", "1000000", "--json"], "1000000 timesteps")


def test_report_refuses_a_huge_input_shape_before_allocating(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _save(tmp_path / "s.tt", _bundle(input_shape=[1, 30000, 30000]))
    line = _refused(["report", str(path), "--json"], "[1, 30000, 30000]", "memory")
    assert "TB" in line or "GB" in line
    ok = _save(tmp_path / "ok.tt", _bundle())
    _refused(["report", str(ok), "--input-shape", "1,30000,30000", "--json"], "30000")  # the option's own cap
    monkeypatch.setenv(LIMIT_ENV, "2048")  # a 2 GB machine: an input the option admits, activations that do not fit
    _refused(["report", str(ok), "--input-shape", "1,4000,4000", "--json"], "[1, 4000, 4000]", "memory", "2.1 GB")


def test_report_of_the_same_bundle_at_its_real_size_still_runs(tmp_path: Path) -> None:
    ok = _save(tmp_path / "ok.tt", _bundle())
    result = runner.invoke(app, ["report", str(ok), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["timesteps"] == 4


def test_training_sizes_are_bounded_before_data_or_model_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "o.tt"
    base = ["train", "--arch", "zoo:digits_csnn", "--arch-kwargs", '{"width": 4}', "--data", "digits", "-o", str(out)]
    _refused([*base, "--timesteps", "1000000"], "train", "1000000 timesteps")
    monkeypatch.setenv(LIMIT_ENV, "64")  # a 64 MB machine: the input fits, T=200 x batch 64 of activations not
    _refused([*base, "--timesteps", "200", "--batch-size", "64"], "train at T=200, batch 64", "memory")
    assert not out.exists()


def test_compress_of_a_bundle_recording_a_million_timesteps_is_refused(tmp_path: Path) -> None:
    path = _save(tmp_path / "t.tt", _bundle(timesteps=1_000_000))
    _refused(["compress", str(path), "--ranks", "2", "-o", str(tmp_path / "c.tt")], "compress", "1000000 timesteps")
    assert not (tmp_path / "c.tt").exists()


def test_a_sweep_of_a_bundle_recording_a_million_timesteps_is_refused_before_its_folder(tmp_path: Path) -> None:
    path = _save(tmp_path / "t.tt", _bundle(timesteps=1_000_000))
    out = tmp_path / "sweep"
    _refused(["sweep", str(path), "--data", "digits", "-o", str(out), "--targets", "2", "--methods", "budget"],
             "sweep", "1000000 timesteps")
    assert not out.exists()


# ------------------------------------------------------------------ case 2: stride-0 weights
def test_checksum_refuses_an_expanded_tensor_without_materialising_it() -> None:
    huge = torch.zeros(1).expand(1 << 20, 1 << 20)  # claims 4 TiB over 4 bytes
    with pytest.raises(ValueError, match="expanded or overlapping"):
        state_checksum({"w": huge})
    dense = torch.arange(12.0).reshape(3, 4)
    assert state_checksum({"w": dense.t()}) == state_checksum({"w": dense.t().contiguous()})  # views of enough storage


def test_inspect_refuses_a_bundle_holding_a_stride0_weight(tmp_path: Path) -> None:
    bundle = _bundle()
    bundle["state_dict"]["conv3.weight"] = torch.zeros(1).expand(*bundle["state_dict"]["conv3.weight"].shape)
    bundle["state_dict"]["fc.weight"] = torch.zeros(1).expand(30000, 30000)
    path = _save(tmp_path / "e.tt", bundle)
    assert path.stat().st_size < 100_000
    _refused(["inspect", str(path)], "expanded or overlapping")


# -------------------------------------------------------------------- case 3: honest zoo caps
def test_zoo_size_is_counted_before_building() -> None:
    model = build_arch("zoo:digits_csnn", {})
    values = sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers())
    assert zoo_values("digits_csnn", {}) == values
    every_size_at_its_cap = {"in_channels": 4096, "num_classes": 4096}
    assert zoo_values("ms_resnet34", every_size_at_its_cap) <= MAX_ZOO_VALUES
    assert zoo_values("digits_csnn", {"width": 2048}) > MAX_ZOO_VALUES


def test_a_wide_zoo_bundle_is_refused_before_it_is_built(tmp_path: Path) -> None:
    bundle = _bundle()
    bundle["arch"]["kwargs"] = {"width": 2048}
    path = _save(tmp_path / "w.tt", bundle)
    _refused(["inspect", str(path)], "zoo:digits_csnn", f"{MAX_ZOO_VALUES:,}")
    _refused(["compress", "--arch", "zoo:digits_csnn", "--arch-kwargs", '{"width": 2048}', "--ranks", "4",
              "-o", str(tmp_path / "c.tt")],
             f"{MAX_ZOO_VALUES:,}")
    assert not (tmp_path / "c.tt").exists()


# ---------------------------------------------------------------------- case 4: unrolled export
def test_export_refuses_an_unrolled_graph_too_large_to_trace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ok = _save(tmp_path / "ok.tt", _bundle())
    line = _refused(["export", str(ok), "--onnx", str(tmp_path / "m.onnx"), "--timesteps", "300"],
                    "--mode step", f"{MAX_UNROLLED_OPS:,}", "--timesteps")
    assert "T=300" in line and not (tmp_path / "m.onnx").exists()
    _refused(["export", str(ok), "--onnx", str(tmp_path / "m.onnx"), "--timesteps", "100000"], "100000 timesteps")
    monkeypatch.setenv(LIMIT_ENV, "2048")
    _refused(["export", str(ok), "--onnx", str(tmp_path / "m.onnx"), "--mode", "step", "--input-shape", "1,4000,4000"],
             "memory")
    assert not (tmp_path / "m.onnx").exists()


# ------------------------------------------------------------------------ case 5: event files
def _ncaltech(tmp_path: Path, size: int) -> Path:
    folder = tmp_path / "nc" / "Caltech101" / "cls"
    folder.mkdir(parents=True)
    for name in ("a.bin", "b.bin"):
        with open(folder / name, "wb") as handle:
            handle.truncate(size)  # sparse: no disk, no memory, until someone reads it
    return tmp_path / "nc"


def test_an_oversized_ncaltech_recording_is_refused_unread(tmp_path: Path) -> None:
    from ttsnn_cli.data.ncaltech import MAX_EVENTS, read_events

    root = _ncaltech(tmp_path, 200 << 20)
    with pytest.raises(BadInputError, match=f"more than the {MAX_EVENTS:,}"):
        read_events(root / "Caltech101" / "cls" / "a.bin")
    ok = _save(tmp_path / "ok.tt", _bundle())
    _refused(["report", str(ok), "--data", f"ncaltech101:{root}", "--json"], "events", f"{MAX_EVENTS:,}")


def test_ncaltech_chunked_decode_matches_the_format(tmp_path: Path) -> None:
    from ttsnn_cli.data.ncaltech import read_events

    # x=3, y=4, polarity 1, t=0x012345; then an overflow marker (y=240); then x=5, y=6, p=0, t=7
    events = bytes([3, 4, 0x80 | 0x01, 0x23, 0x45, 0, 240, 0, 0, 0, 5, 6, 0, 0, 7])
    path = tmp_path / "events.bin"
    path.write_bytes(events)
    ev = read_events(path)
    assert ev["x"].tolist() == [3, 5] and ev["y"].tolist() == [4, 6] and ev["p"].tolist() == [1, 0]
    assert ev["t"].tolist() == [0x012345, 7 + (1 << 13)]


# ------------------------------------------------------------------------- case 6: CIFAR pickles
def _cifar(tmp_path: Path, batch: dict[bytes, Any]) -> Path:
    folder = tmp_path / "cifar"
    folder.mkdir()
    content = pickle.dumps(batch)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(content)
    return folder


def test_a_nested_list_cifar_pickle_is_refused_before_numpy_expands_it(tmp_path: Path) -> None:
    from ttsnn_cli.data.cifar import read_batch

    row = [0] * 3072
    shared = [[row] * 1000] * 1000  # 3 billion pixels described by a few kilobytes of pickle memo
    folder = _cifar(tmp_path, {b"data": shared, b"labels": [0] * 10})
    assert (folder / "test_batch").stat().st_size < 20_000
    with pytest.raises(BadInputError, match="must be a numpy array"):
        read_batch(folder / "test_batch", "labels")
    ok = _save(tmp_path / "ok.tt", _bundle())
    _refused(["report", str(ok), "--data", f"cifar10:{folder}", "--json"], "numpy array")


def test_cifar_labels_are_checked_item_by_item(tmp_path: Path) -> None:
    from ttsnn_cli.data.cifar import read_batch

    folder = _cifar(tmp_path, {b"data": np.zeros((2, 3072), np.uint8), b"labels": [1, [[0] * 10] * 10]})
    with pytest.raises(BadInputError, match="item 1 is a list"):
        read_batch(folder / "test_batch", "labels")
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1, 2]}))
    images, labels = read_batch(folder / "test_batch", "labels")
    assert images.shape == (2, 3, 32, 32) and labels.tolist() == [1, 2]


# ------------------------------------------------------------------- all of them, memory measured
_MEASURE = r"""
import json, resource, sys
from typer.testing import CliRunner
from ttsnn_cli.cli.commands import app
runner = CliRunner()
cases = json.loads(sys.argv[1])
runner.invoke(app, ["inspect", cases.pop(0)[1]])  # warm up: every import and lazy kernel loaded
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
codes = {}
for name, *args in cases:
    result = runner.invoke(app, args)
    codes[name] = [result.exit_code, len(result.stderr.strip().splitlines())]
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"codes": codes, "rise_kb": peak - base}))
"""


@pytest.mark.slow
def test_every_hostile_size_stays_within_a_bounded_memory(tmp_path: Path) -> None:
    ok = _save(tmp_path / "ok.tt", _bundle())
    t = _save(tmp_path / "t.tt", _bundle(timesteps=1_000_000))
    s = _save(tmp_path / "s.tt", _bundle(input_shape=[1, 30000, 30000]))
    expanded = _bundle()
    expanded["state_dict"]["fc.weight"] = torch.zeros(1).expand(30000, 30000)  # 3.6 GB if materialised
    e = _save(tmp_path / "e.tt", expanded)
    wide = _bundle()
    wide["arch"]["kwargs"] = {"width": 2048}
    w = _save(tmp_path / "w.tt", wide)
    nc = _ncaltech(tmp_path, 200 << 20)
    cifar = _cifar(tmp_path, {b"data": [[[0] * 3072] * 300] * 300, b"labels": [0]})  # 2.2 GB as int64
    onnx = str(tmp_path / "m.onnx")
    cases = [
        ["warm", str(ok)],
        ["timesteps", "report", str(t), "--json"],
        ["shape", "report", str(s), "--json"],
        ["expanded", "inspect", str(e)],
        ["wide", "inspect", str(w)],
        ["export-300", "export", str(ok), "--onnx", onnx, "--timesteps", "300"],
        ["export-100000", "export", str(ok), "--onnx", onnx, "--timesteps", "100000"],
        ["ncaltech", "report", str(ok), "--data", f"ncaltech101:{nc}", "--json"],
        ["cifar", "report", str(ok), "--data", f"cifar10:{cifar}", "--json"],
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", _MEASURE, json.dumps([[str(c) for c in case] for case in cases])],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert all(code == [3, 1] for code in result["codes"].values()), result
    assert result["rise_kb"] * 1024 < 0.5 * GB, result  # each case would take gigabytes if it allocated
    assert not Path(onnx).exists()

