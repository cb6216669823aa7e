"""Hostile data files and factories as real `ttsnn train` processes: exit 3, one stderr line, no traceback,
and no output. The headers below promise gigabytes: a reader that allocated what they claim would be
killed or fail with MemoryError (exit 1) instead of exiting 3 in seconds."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from fabricated_data import AEDAT31_HEADER, idx_bytes, nmnist_bytes, write_dvsgesture, write_idx_set, write_nmnist, write_shd

ROOT = Path(__file__).resolve().parents[2]


def _idx_huge_header(t: Path) -> str:
    write_idx_set(t / "m")
    (t / "m" / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + struct.pack(">III", 60000, 65535, 65535))
    return f"mnist:{t / 'm'}"


def _idx_gzip_bomb(t: Path) -> str:
    write_idx_set(t / "m")
    (t / "m" / "train-images-idx3-ubyte").unlink()
    engine, chunk = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS), b"\x00" * (1 << 20)
    parts = [engine.compress(idx_bytes([[[0]]]))] + [engine.compress(chunk) for _ in range(1025)] + [engine.flush()]
    (t / "m" / "train-images-idx3-ubyte.gz").write_bytes(b"".join(parts))  # 1 MB inflating past 1 GiB
    return f"mnist:{t / 'm'}"


def _nmnist_off_sensor(t: Path) -> str:
    write_nmnist(t / "n", per_digit=1, digits=10)
    for f in (t / "n").rglob("*.bin"):
        f.write_bytes(nmnist_bytes([(200, 200, 1, 5)]))
    return f"nmnist:{t / 'n'}"


def _gesture_huge_packet(t: Path) -> str:
    folder = write_dvsgesture(t)
    for f in folder.glob("*.aedat"):
        f.write_bytes(AEDAT31_HEADER + struct.pack("<hhiiiiii", 1, 1, 8, 4, 0, 2**31 - 1, 2**31 - 1, 0))
    return f"dvsgesture:{t}"


def _shd_not_hdf5(t: Path) -> str:
    (t / "shd_train.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\xff" * 600)
    write_shd(t / "shd_test.h5", [([0.1], [1], 0)])
    return f"shd:{t}"


def _factory_exits(t: Path) -> str:
    (t / "exiting_data.py").write_text("import sys\n\ndef build():\n    sys.exit('bye')\n")
    return "exiting_data:build"


def _factory_imported_name(t: Path) -> str:
    (t / "sneaky_data.py").write_text("from os import system\n")
    return "sneaky_data:system"


CASES = {
    "idx-header-promises-gigabytes": _idx_huge_header,
    "idx-gzip-bomb": _idx_gzip_bomb,
    "nmnist-events-off-sensor": _nmnist_off_sensor,
    "aedat-packet-promises-16GB": _gesture_huge_packet,
    "shd-corrupt-hdf5": _shd_not_hdf5,
    "factory-calls-sys-exit": _factory_exits,
    "factory-names-imported-os-system": _factory_imported_name,
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_data(name, tmp_path):
    spec = CASES[name](tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "ttsnn_cli", "train", "--arch", "zoo:digits_csnn", "--arch-kwargs", '{"width": 4, "in_channels": 2}',
         "--data", spec, "--epochs", "1", "--timesteps", "2", "--batch-size", "4", "-o", str(tmp_path / "o.tt")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 3, result.stderr
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert not (tmp_path / "o.tt").exists()
