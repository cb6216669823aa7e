"""The output rule set (`storage.outputs`): races, stale temporaries, full disk, read-only folders, signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ttsnn_cli.errors import BadInputError
from ttsnn_cli.storage.outputs import atomic_output, atomic_write_bytes, check_output_path, json_ready, standard_json

ROOT = Path(__file__).resolve().parents[2]


def _mount_tmpfs(folder: Path, *options: str) -> bool:
    folder.mkdir(exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(("size=64k", *options)), "tmpfs", str(folder)],
                          capture_output=True)
    return done.returncode == 0


@pytest.fixture
def small_disk(tmp_path: Path):
    folder = tmp_path / "small"
    if os.geteuid() != 0 or not _mount_tmpfs(folder):
        pytest.skip("needs root and tmpfs to make a 64 KiB filesystem")
    yield folder
    subprocess.run(["umount", str(folder)], check=False)


@pytest.fixture
def read_only(tmp_path: Path):
    folder = tmp_path / "ro"
    if os.geteuid() != 0 or not _mount_tmpfs(folder, "ro"):
        pytest.skip("needs root and tmpfs to make a read-only filesystem")
    yield folder
    subprocess.run(["umount", str(folder)], check=False)


def test_two_writers_without_force_exactly_one_wins(tmp_path: Path) -> None:
    out = tmp_path / "same.tt"
    check_output_path(out)  # both writers passed the check while the name was free...
    out.write_bytes(b"the other writer's file")  # ...and the other one published first
    with pytest.raises(BadInputError, match="appeared while ttsnn was writing"):
        atomic_write_bytes(out, b"mine")
    assert out.read_bytes() == b"the other writer's file"
    assert [p.name for p in tmp_path.iterdir()] == ["same.tt"]  # no temporary left


def test_two_real_processes_race_for_one_name(tmp_path: Path) -> None:
    """Two `compress -o same.tt` started together: one exit 0, the other exit 3 (or both refused
    before work if one finished first), never both 0."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "ttsnn_cli", "compress", "--arch", "zoo:digits_csnn", "--arch-kwargs",
               '{"width": 4}', "--ranks", "2", "-o", str(tmp_path / "same.tt")]
    procs = [subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 3], results
    loser = next(err for code, err in results if code == 3)
    assert len(loser.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["same.tt"]


def test_force_replaces_and_later_writes_of_the_same_output_replace(tmp_path: Path) -> None:
    out = tmp_path / "w.tt"
    check_output_path(out)
    atomic_write_bytes(out, b"epoch 1")
    atomic_write_bytes(out, b"epoch 2")  # the same run saving again
    assert out.read_bytes() == b"epoch 2"
    check_output_path(out, force=True)
    atomic_write_bytes(out, b"forced")
    assert out.read_bytes() == b"forced"


def test_stale_temporaries_of_dead_writers_are_removed(tmp_path: Path) -> None:
    out = tmp_path / "m.tt"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".m.tt.{dead.stdout.strip()}-0badc0de.tmp"
    legacy = tmp_path / ".m.tt.k2j4h5g6.tmp"  # mkstemp's name, from before pids were recorded
    live = tmp_path / f".m.tt.{os.getppid()}-12345678.tmp"  # a running process's file is left alone
    other = tmp_path / ".n.tt.1-12345678.tmp"
    for path in (stale, legacy, live, other):
        path.write_bytes(b"x" * 1000)
    atomic_write_bytes(out, b"new")
    assert not stale.exists() and not legacy.exists() and live.exists() and other.exists()


@pytest.mark.parametrize("target", ["/dev/null", "fifo", "folder"])
def test_non_regular_outputs_refused_even_with_force(tmp_path: Path, target: str) -> None:
    if target == "fifo":
        path = tmp_path / "fifo"
        os.mkfifo(path)
    elif target == "folder":
        path = tmp_path
    else:
        path = Path(target)
    with pytest.raises(BadInputError):
        check_output_path(path, force=True)


def test_name_too_long_for_the_temporary_is_refused_first(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="too long"):
        check_output_path(tmp_path / ("a" * 240 + ".tt"))
    check_output_path(tmp_path / ("a" * 200 + ".tt"))


def test_full_disk_is_one_line_and_leaves_nothing(small_disk: Path) -> None:
    out = small_disk / "big.tt"
    check_output_path(out)
    with pytest.raises(BadInputError, match="disk is full"):
        atomic_write_bytes(out, b"x" * 1_000_000)
    assert list(small_disk.iterdir()) == []


def test_full_disk_through_the_cli(small_disk: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "ttsnn_cli", "compress", "--arch", "zoo:digits_csnn", "--ranks", "32",
                           "-o", str(small_disk / "m.tt")],  # a 155 kB bundle on a 64 kB disk
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 3, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "disk is full" in done.stderr
    assert list(small_disk.iterdir()) == []


def test_read_only_folder_is_refused_before_work(read_only: Path) -> None:
    with pytest.raises(BadInputError, match="not writable"):
        check_output_path(read_only / "m.tt")


_WRITER = """
import sys, time
from ttsnn_cli.cli.entry import install_signal_handlers
from ttsnn_cli.errors import Interrupted
from ttsnn_cli.storage.outputs import atomic_output
install_signal_handlers()
try:
    with atomic_output(sys.argv[1]) as temporary:
        temporary.write_bytes(b"half" * 1000)
        print("writing", flush=True)
        time.sleep(60)
except Interrupted as stop:
    sys.exit(stop.exit_code)
"""


@pytest.mark.parametrize("signum,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signals_remove_the_temporary(tmp_path: Path, signum: int, code: int) -> None:
    out = tmp_path / "o.tt"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(out)], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "writing"
    assert any(p.name.endswith(".tmp") for p in tmp_path.iterdir())
    proc.send_signal(signum)
    assert proc.wait(timeout=30) == code
    assert list(tmp_path.iterdir()) == []


def _wait_for_torch(pid: int, timeout: float = 60) -> None:
    """Until the process maps libtorch: the interpreter has started and ttsnn's entry point runs
    (interrupting Python's own start-up, before any ttsnn code, is out of ttsnn's hands)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if "libtorch" in Path(f"/proc/{pid}/maps").read_text():
                return
        except OSError:
            return
        time.sleep(0.005)


@pytest.mark.parametrize("delay", [0.0, 1.0, pytest.param(0.3, marks=pytest.mark.slow), pytest.param(3.0, marks=pytest.mark.slow)])
def test_ctrl_c_at_any_moment_is_one_line_and_130(tmp_path: Path, delay: float) -> None:
    """SIGINT while torch is being imported, or while a model is built: exit 130, one line."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "ttsnn_cli", "compress", "--arch", "zoo:ms_resnet34", "--ranks", "2",
                             "-o", str(tmp_path / "o.tt")], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            text=True, env=env)
    _wait_for_torch(proc.pid)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("finished before the signal")
    assert proc.returncode == 130, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and "interrupted" in err
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())


def test_json_is_always_standard() -> None:
    document = {"a": float("nan"), "b": [float("inf"), -float("inf"), 1.5], "p": Path("/x"), "t": (1, 2)}
    assert json_ready(document) == {"a": None, "b": [None, None, 1.5], "p": "/x", "t": [1, 2]}
    assert "NaN" not in standard_json(document) and "Infinity" not in standard_json(document)


def test_atomic_output_cleans_up_on_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        with atomic_output(tmp_path / "x") as temporary:
            temporary.write_bytes(b"partial")
            raise RuntimeError("writer failed")
    assert list(tmp_path.iterdir()) == []


def test_signals_after_the_command_finished_change_nothing(monkeypatch) -> None:
    """Once the exit code is decided, SIGINT/SIGTERM are ignored: Python restores the default
    handlers while it shuts down, and a Ctrl-C then would kill a finished command (exit -2)."""
    from ttsnn_cli.cli import commands, entry

    monkeypatch.setattr(commands, "app", lambda standalone_mode: 0)
    monkeypatch.setattr(entry, "keep_freed_memory", lambda: None)  # process-wide: not in the test runner
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        with pytest.raises(SystemExit) as stop:
            entry.main()
        assert stop.value.code == 0
        assert all(signal.getsignal(signum) == signal.SIG_IGN for signum in before)
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)
