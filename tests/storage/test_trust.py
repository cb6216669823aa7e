"""The trust boundary (ttsnn_cli.storage.load): a bundle is data; every bad file is one BadInputError."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import user_nets
from typer.testing import CliRunner

from ttsnn_cli import save_model
from ttsnn_cli.cli.commands import app
from ttsnn_cli.errors import BadInputError
from ttsnn_cli.pipeline.recipe import load_recipe
from ttsnn_cli.storage.load import load_checkpoint, read_checkpoint, trusting
from ttsnn_cli.storage.read import holds_code
from ttsnn_cli.storage.trust import build_arch, parse_arch_kwargs

ROOT = Path(__file__).resolve().parents[2]
TESTS = Path(__file__).resolve().parents[1]
ARCH = "user_nets:sequential_net"
runner = CliRunner()


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def untrusted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TTSNN_TRUSTED_ARCH", raising=False)


@pytest.fixture
def user_bundle(tmp_path: Path) -> Path:
    path = tmp_path / "user.tt"
    save_model(user_nets.sequential_net(), path, arch=ARCH)
    return path


def _exploit_bundle(tmp_path: Path, marker: Path) -> Path:
    """The classic attack: a plain dict that passes weights_only and names os:system."""
    from ttsnn_cli.storage.bundle import FORMAT, state_checksum

    state = user_nets.sequential_net().state_dict()
    bundle = {"format": FORMAT, "format_version": 1, "ttsnn_version": "0",
              "arch": {"spec": "os:system", "kwargs": {"command": f"touch {marker}"}},
              "tt": None, "io": None, "state_dict": state, "state_sha256": state_checksum(state),
              "source": None, "history": []}
    path = tmp_path / "evil.tt"
    torch.save(bundle, path)
    return path


def test_a_bundle_naming_os_system_never_runs(tmp_path: Path, untrusted: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "PWNED"
    evil = _exploit_bundle(tmp_path, marker)
    for args in (("inspect", evil), ("compress", evil, "--ranks", "2", "-o", tmp_path / "o.tt"), ("report", evil),
                 ("export", evil, "--onnx", tmp_path / "o.onnx"),
                 ("finetune", evil, "--data", "digits", "-o", tmp_path / "f.tt", "--epochs", "1")):
        result = invoke(*args)
        assert result.exit_code == 3, (args, result.stderr)
        assert "os:system" in result.stderr and "trust" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert not marker.exists()
    with pytest.raises(BadInputError, match="trust"):
        load_checkpoint(evil)
    assert not marker.exists()


def test_recorded_user_arch_needs_trust(user_bundle: Path, untrusted: None) -> None:
    with pytest.raises(BadInputError, match=f"records architecture {ARCH}.*--arch {ARCH}.*TTSNN_TRUSTED_ARCH"):
        load_checkpoint(user_bundle)
    assert load_checkpoint(user_bundle, ARCH) is not None  # the user names it
    assert load_checkpoint(user_bundle, trust_arch=True) is not None
    with trusting([ARCH]):
        assert load_checkpoint(user_bundle) is not None
    assert invoke("inspect", user_bundle).exit_code == 3
    assert invoke("inspect", user_bundle, "--arch", ARCH).exit_code == 0
    assert invoke("inspect", user_bundle, "--trust-arch").exit_code == 0


@pytest.mark.parametrize("entry", ["user_nets", ARCH, "*"])
def test_trusted_list_in_the_environment(user_bundle: Path, monkeypatch: pytest.MonkeyPatch, entry: str) -> None:
    monkeypatch.setenv("TTSNN_TRUSTED_ARCH", f"other_pkg, {entry}")
    assert load_checkpoint(user_bundle) is not None


def test_a_trusted_module_does_not_trust_its_namesakes(user_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TTSNN_TRUSTED_ARCH", "user_net")  # a prefix of user_nets, not its parent
    with pytest.raises(BadInputError, match="trust"):
        load_checkpoint(user_bundle)


def _rewrite(path: Path, change) -> Path:
    bundle = torch.load(path, weights_only=True)
    change(bundle)
    torch.save(bundle, path)
    return path


@pytest.mark.parametrize("field,value,named", [
    ("format_version", "1", "format_version"),
    ("format_version", 99, "newer ttsnn"),
    ("io", {"input_shape": ["a", "b"]}, "io.input_shape.0"),
    ("io", {"timesteps": True}, "io.timesteps"),
    ("tt", "stt", "tt"),
    ("history", 7, "history"),
    ("state_dict", {"0.weight": "not a tensor"}, "state_dict.0.weight"),
    ("arch", {"spec": "zoo:digits_csnn", "kwargs": {"width": float("nan")}}, "arch.kwargs"),
    ("arch", {"spec": "zoo:digits_csnn", "kwargs": {"width": torch.zeros(1)}}, "arch.kwargs"),
    ("arch", {"spec": "zoo:digits_csnn", "kwargs": {"width": -1}}, "width must be a whole number"),
    ("arch", {"spec": "zoo:digits_csnn", "kwargs": {"width": 10**9}}, "width must be a whole number"),
    ("arch", {"spec": "os.system; rm", "kwargs": {}}, "arch.spec"),
    ("state_sha256", "0" * 64, "checksum"),
])
def test_every_bundle_field_is_validated(user_bundle: Path, field: str, value: object, named: str) -> None:
    _rewrite(user_bundle, lambda b: b.__setitem__(field, value))
    with pytest.raises(BadInputError, match=named):
        load_checkpoint(user_bundle)


def test_crafted_tt_config_is_refused_before_allocating(tmp_path: Path) -> None:
    from ttsnn_cli import compress_model
    from ttsnn_cli.compress.decompose import CompressConfig
    from ttsnn_cli.maths.ranks import RankSpec

    model, _ = compress_model(user_nets.sequential_net(), CompressConfig(ranks=RankSpec("fixed", (2, 2, 2))))
    path = tmp_path / "tt.tt"
    save_model(model, path, arch=ARCH)
    name = next(iter(torch.load(path, weights_only=True)["tt"]["layers"]))
    _rewrite(path, lambda b: b["tt"]["layers"][name].update(ranks=[10**6, 10**6, 10**6]))
    started = time.process_time()
    with pytest.raises(BadInputError, match=f"tt.layers.{name}"):
        load_checkpoint(path)
    assert time.process_time() - started < 5
    _rewrite(path, lambda b: b["tt"]["layers"][name].update(ranks="x"))
    with pytest.raises(BadInputError, match=f"tt.layers.{name}"):
        load_checkpoint(path)


@pytest.mark.parametrize("content", [b"t", b"this is not a checkpoint", bytes(range(256)) * 4, b"PK\x03\x04junk",
                                     pickle.dumps([1, 2, 3])[:-1]])
def test_garbage_is_not_a_checkpoint_and_gets_no_pickle_advice(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(BadInputError, match="not a readable PyTorch checkpoint") as caught:
        read_checkpoint(path, trust_pickle=True)
    assert "--trust-pickle" not in str(caught.value)
    assert not holds_code(content)


class _Exits:
    def __reduce__(self):
        return (sys.exit, (0,))


def test_pickle_advice_only_for_code_and_trusted_code_failing_is_bad_input(tmp_path: Path) -> None:
    path = tmp_path / "exits.pt"
    torch.save({"state_dict": _Exits()}, path)
    assert holds_code(path.read_bytes())
    with pytest.raises(BadInputError, match="--trust-pickle"):
        read_checkpoint(path)
    with pytest.raises(BadInputError, match="called sys.exit"):
        read_checkpoint(path, trust_pickle=True)


def test_unreadable_and_special_files(tmp_path: Path) -> None:
    locked = tmp_path / "locked.pt"
    torch.save({"a": torch.zeros(1)}, locked)
    locked.chmod(0)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    try:
        if os.geteuid() != 0:
            with pytest.raises(BadInputError, match="permission denied"):
                read_checkpoint(locked)
            result = invoke("inspect", locked)
            assert result.exit_code == 3 and len(result.stderr.splitlines()) == 1
        with pytest.raises(BadInputError, match="not a regular file"):
            read_checkpoint(fifo)  # would block forever if opened
        with pytest.raises(BadInputError, match="folder"):
            read_checkpoint(tmp_path)
    finally:
        locked.chmod(0o644)


def test_user_code_failing_anyhow_is_bad_input_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "exits_at_import.py").write_text("import sys\nsys.exit(0)\n")
    (tmp_path / "raises_in_factory.py").write_text(
        "def build(width=1):\n    raise ValueError(f'width {width} is wrong')\n"
        "def base(**kw):\n    raise BaseException('odd')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(BadInputError, match="importing 'exits_at_import'.*sys.exit"):
        build_arch("exits_at_import:build")
    with pytest.raises(BadInputError, match="raises_in_factory:build.*ValueError: width -1 is wrong"):
        build_arch("raises_in_factory:build", {"width": -1})
    with pytest.raises(BadInputError, match="BaseException: odd"):
        build_arch("raises_in_factory:base")
    result = invoke("train", "--arch", "exits_at_import:build", "--data", "digits", "-o", tmp_path / "x.tt")
    assert result.exit_code == 3 and "exits_at_import" in result.stderr and not (tmp_path / "x.tt").exists()


@pytest.mark.parametrize("text,match", [('{"a": NaN}', "NaN"), ('{"a": Infinity}', "Infinity"),
                                        ("[" * 100000 + "]" * 100000, "nested"), ('{"a": ' * 50 + "1" + "}" * 50, "deeper")])
def test_arch_kwargs_are_plain_bounded_json(text: str, match: str) -> None:
    with pytest.raises(BadInputError, match=match):
        parse_arch_kwargs(text)


BOMB = ('a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n'
        'c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n'
        'f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\ng: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\nh: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]\n')


@pytest.mark.parametrize("body,match", [
    ("model: {arch: zoo:digits_csnn, kwargs: {x: *h}}\n", "alias bomb"),
    ("model: &m {arch: zoo:digits_csnn, kwargs: {x: *m}}\n", "recursive|undefined|alias"),
    ("model: " + "[" * 5000 + "]" * 5000 + "\n", "deeper|nested"),
])
def test_yaml_bombs_answer_fast(tmp_path: Path, body: str, match: str) -> None:
    recipe = tmp_path / "bomb.yaml"
    recipe.write_text(BOMB + body)
    started = time.process_time()  # CPU time: the answer's cost, whatever else the machine runs
    with pytest.raises(BadInputError, match=match):
        load_recipe(recipe)
    assert time.process_time() - started < 1.0


def test_exploit_and_bomb_as_real_processes(tmp_path: Path) -> None:
    """Through the console entry point: one line, exit 3, nothing run, fast."""
    marker = tmp_path / "PWNED"
    evil = _exploit_bundle(tmp_path, marker)
    recipe = tmp_path / "bomb.yaml"
    recipe.write_text(BOMB + "model: {arch: zoo:digits_csnn, kwargs: {x: *h}}\ncompress: {ranks: 2}\n")
    env = {k: v for k, v in os.environ.items() if k != "TTSNN_TRUSTED_ARCH"}
    env["PYTHONPATH"] = str(ROOT)
    for args in (["inspect", str(evil)], ["run", str(recipe), "--out", str(tmp_path / "r")]):
        done = subprocess.run([sys.executable, "-m", "ttsnn_cli", *args], capture_output=True, text=True,
                              env=env, cwd=tmp_path, timeout=120)
        assert done.returncode == 3, done.stderr
        assert len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr
    assert not marker.exists() and not (tmp_path / "r").exists()
