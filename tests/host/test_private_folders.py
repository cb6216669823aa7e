"""Private folders (ttsnn_cli.host.private): a shared TMPDIR can neither swap what ttsnn builds nor
redirect what it logs."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from ttsnn_cli.host import private

NOBODY = 65534
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="making a folder another user owns needs root")


@pytest.fixture
def temporary_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Point the temporary folder (TMPDIR, cached by tempfile) and the cache folder into tmp_path."""
    def use(tmp: Path, cache: Path) -> None:
        monkeypatch.setattr(tempfile, "tempdir", str(tmp))
        monkeypatch.setenv("TMPDIR", str(tmp))
        monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    return use


def test_a_folder_others_may_write_is_safe_only_when_sticky(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    assert not private.is_safe_base(shared)
    shared.chmod(0o1777)
    assert private.is_safe_base(shared)
    shared.chmod(0o755)
    assert private.is_safe_base(shared)


def test_a_safe_folder_below_an_unsafe_one_is_unsafe(tmp_path: Path) -> None:
    (tmp_path / "open").mkdir()
    (tmp_path / "open").chmod(0o777)  # whoever may write here may rename "inner" away
    inner = tmp_path / "open" / "inner"
    inner.mkdir(mode=0o700)
    assert not private.is_safe_base(inner)


def test_a_link_is_judged_by_where_it_leads(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    (tmp_path / "link").symlink_to(shared)
    assert not private.is_safe_base(tmp_path / "link")


@as_root
def test_a_folder_another_user_owns_is_unsafe(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o755)
    os.chown(theirs, NOBODY, NOBODY)
    assert not private.is_safe_base(theirs)


def test_an_unsafe_tmpdir_sends_builds_to_the_cache_folder(tmp_path: Path, temporary_folder) -> None:
    shared, cache = tmp_path / "shared", tmp_path / "cache"
    shared.mkdir()
    shared.chmod(0o777)
    temporary_folder(shared, cache)
    made = private.make_private_temporary("ttsnn-test-")
    assert made.parent == cache.resolve() and (made.stat().st_mode & 0o777) == 0o700
    assert list(shared.iterdir()) == []


def test_no_safe_folder_at_all_is_an_oserror(tmp_path: Path, temporary_folder) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    temporary_folder(shared, shared / "cache")  # the cache folder inherits the unsafe parent
    with pytest.raises(OSError, match="only this user"):
        private.make_private_temporary("ttsnn-test-")


def test_a_planted_link_in_place_of_the_log_folder_is_passed_over(tmp_path: Path, temporary_folder) -> None:
    base, cache, victim = tmp_path / "tmp", tmp_path / "cache", tmp_path / "victim"
    base.mkdir(mode=0o1777)
    base.chmod(0o1777)
    victim.mkdir()
    (base / f"ttsnn-logs-{os.geteuid()}").symlink_to(victim)
    temporary_folder(base, cache)
    folder = private.private_folder("ttsnn-logs")
    assert folder.parent == cache.resolve() and private.is_private(folder)
    private.write_private_file(folder, "a.log", "text")
    assert list(victim.iterdir()) == []


def test_a_log_folder_readable_by_others_is_not_private(tmp_path: Path, temporary_folder) -> None:
    base = tmp_path / "tmp"
    base.mkdir()
    (base / f"ttsnn-logs-{os.geteuid()}").mkdir(mode=0o755)
    (base / f"ttsnn-logs-{os.geteuid()}").chmod(0o755)
    temporary_folder(base, tmp_path / "cache")
    assert private.private_folder("ttsnn-logs").parent == (tmp_path / "cache").resolve()


def test_a_private_file_is_new_and_never_written_through_a_link(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep")
    (tmp_path / "x.log").symlink_to(victim)
    with pytest.raises(OSError):
        private.write_private_file(tmp_path, "x.log", "overwrite")
    assert victim.read_text() == "keep"
    written = private.write_private_file(tmp_path, "y.log", "text")
    assert (written.stat().st_mode & 0o777) == 0o600


def test_an_internal_error_log_lands_in_a_private_folder_not_in_a_planted_one(tmp_path: Path) -> None:
    """As a real process: the log folder a shared TMPDIR holds is a link to the victim's folder."""
    base, victim = tmp_path / "tmp", tmp_path / "victim"
    base.mkdir()
    base.chmod(0o1777)
    victim.mkdir()
    (base / f"ttsnn-logs-{os.geteuid()}").symlink_to(victim)
    script = ("import sys\nsys.argv = ['ttsnn']\n"
              "from ttsnn_cli.cli.common import _log_internal_error\n"
              "try:\n    raise RuntimeError('boom')\nexcept RuntimeError:\n    print(_log_internal_error())\n")
    env = {k: v for k, v in os.environ.items() if k != "TTSNN_LOG_DIR"}
    env.update(TMPDIR=str(base), XDG_CACHE_HOME=str(tmp_path / "cache"))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    log = Path(done.stdout.strip())
    assert log.parent.parent == (tmp_path / "cache").resolve() and "boom" in log.read_text()
    assert list(victim.iterdir()) == []
