"""storage.load / storage.bundle: safe loading, every bad file, exact round trips."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch
import user_nets

from ttsnn_cli import compress_model, load_model, save_model
from ttsnn_cli.compress.decompose import CompressConfig
from ttsnn_cli.errors import BadInputError
from ttsnn_cli.maths.ranks import RankSpec
from ttsnn_cli.storage.bundle import ModelIO
from ttsnn_cli.storage.load import load_checkpoint
from ttsnn_cli.storage.trust import build_arch, parse_arch_kwargs

ARCH = "user_nets:sequential_net"


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


@pytest.mark.parametrize(
    "content,match",
    [
        (None, "does not exist"),
        (b"", "is empty"),
        (b"just some text\n", "not a PyTorch checkpoint|not a readable"),
    ],
)
def test_bad_files_are_one_line_errors(tmp_path: Path, content: bytes | None, match: str) -> None:
    path = tmp_path / "bad.pt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(BadInputError, match=match):
        load_checkpoint(path, ARCH)


def test_truncated_checkpoint(tmp_path: Path, seq_checkpoint: Path) -> None:
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(seq_checkpoint.read_bytes()[:300])
    with pytest.raises(BadInputError, match="truncated or corrupt"):
        load_checkpoint(truncated, ARCH)


def test_malicious_pickle_is_refused_without_trust(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": Evil()}, path)
    with pytest.raises(BadInputError, match="--trust-pickle"):
        load_checkpoint(path, ARCH)
    raw = tmp_path / "raw.pkl"
    raw.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(BadInputError):
        load_checkpoint(raw, ARCH)


def test_trusted_pickled_module_loads(tmp_path: Path) -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3))
    path = tmp_path / "module.pt"
    torch.save(model, path)
    with pytest.raises(BadInputError, match="--trust-pickle"):
        load_checkpoint(path)
    loaded = load_checkpoint(path, trust_pickle=True)
    assert torch.equal(loaded[0].weight, model[0].weight)


def test_keys_and_shapes_that_do_not_fit_are_summarised(tmp_path: Path) -> None:
    state = user_nets.sequential_net(channels=4).state_dict()
    path = tmp_path / "other.pt"
    torch.save(state, path)
    with pytest.raises(BadInputError, match="shape mismatch"):
        load_checkpoint(path, ARCH)
    state = user_nets.sequential_net().state_dict()
    state["extra.weight"] = torch.zeros(1)
    del state["0.bias"]
    torch.save(state, path)
    with pytest.raises(BadInputError, match=r"1 missing key\(s\) \(0.bias\), 1 unexpected key\(s\) \(extra.weight\)"):
        load_checkpoint(path, ARCH)


def test_not_a_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "list.pt"
    torch.save([1, 2, 3], path)
    with pytest.raises(BadInputError, match="no state_dict"):
        load_checkpoint(path, ARCH)


@pytest.mark.parametrize(
    "arch,match",
    [
        ("no_such_module_xyz:build", "cannot import module"),
        ("user_nets:missing_factory", "has no attribute"),
        ("user_nets", "MODULE:FACTORY"),
        ("zoo:nonexistent", "unknown zoo model"),
        ("user_nets:not_a_module", "not a torch.nn.Module"),
    ],
)
def test_bad_arch_specs(arch: str, match: str) -> None:
    with pytest.raises(BadInputError, match=match):
        build_arch(arch)


def test_bad_arch_kwargs() -> None:
    with pytest.raises(BadInputError, match="not valid JSON"):
        parse_arch_kwargs("{channels: 3")
    with pytest.raises(BadInputError, match="JSON object"):
        parse_arch_kwargs("[1, 2]")
    with pytest.raises(BadInputError, match="cannot build"):
        build_arch(ARCH, {"no_such_kwarg": 1})


def test_state_dict_under_a_wrapper_key(loop_checkpoint: Path) -> None:
    model = load_checkpoint(loop_checkpoint, "user_nets:loop_net")
    assert model.ttsnn_meta.source["sha256"]


@pytest.mark.parametrize("mode", ["stt", "ptt", "htt"])
def test_bundle_round_trip_rebuilds_the_exact_module(tmp_path: Path, seq_checkpoint: Path, mode: str) -> None:
    model = load_checkpoint(seq_checkpoint, ARCH, {})
    model.ttsnn_meta.io = ModelIO((1, 16, 16), 5, "digits")
    compress_model(model, CompressConfig(RankSpec("fixed", (2, 2, 2)), mode=mode, timesteps=5))
    path = save_model(model, tmp_path / "model.tt")
    with pytest.raises(BadInputError, match="exists"):
        save_model(model, path)
    loaded = load_model(path)
    assert type(loaded.get_submodule("2")).__name__ == "TTConv2d"
    assert loaded.get_submodule("2").mode == mode
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    assert loaded.ttsnn_meta.io == ModelIO((1, 16, 16), 5, "digits")
    # loadable with weights_only=True: nothing but plain data and tensors
    raw = torch.load(path, weights_only=True)
    assert raw["tt"]["mode"] == mode and raw["arch"]["spec"] == ARCH


def test_corrupted_bundle_weights_are_detected(tmp_path: Path, seq_checkpoint: Path) -> None:
    model = load_checkpoint(seq_checkpoint, ARCH)
    path = save_model(model, tmp_path / "dense.tt")
    raw = torch.load(path, weights_only=True)
    raw["state_dict"]["0.weight"][0, 0, 0, 0] += 1
    torch.save(raw, path)
    with pytest.raises(BadInputError, match="checksum"):
        load_model(path)


def test_outputs_get_ordinary_file_permissions(tmp_path: Path, seq_checkpoint: Path) -> None:
    """mkstemp makes owner-only files; a saved bundle must be as readable as any file the user writes."""
    model = load_checkpoint(seq_checkpoint, ARCH)
    path = save_model(model, tmp_path / "perm.tt")
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    assert path.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777
