"""`--data MODULE:FACTORY`, trusted like `--arch`; the new specs end to end through the CLI and recipes."""

from __future__ import annotations

import itertools
import json
import textwrap

import pytest
import torch
import yaml
from fabricated_data import write_idx_set, write_nmnist
from typer.testing import CliRunner

from ttsnn_cli.cli.commands import app
from ttsnn_cli.data import chosen_data, is_user_spec, load_data
from ttsnn_cli.errors import BadInputError, UserCodeError
from ttsnn_cli.pipeline.recipe import parse_recipe, resolve_data_spec
from ttsnn_cli.storage.trust import trusting

_NAMES = itertools.count()

FACTORIES = '''
import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset
from torch import save  # imported, not defined here: a spec may not name it


class Frames(Dataset):
    def __init__(self, n, shape, classes=3, bad_at=None, label=None):
        self.n, self.shape, self.classes, self.bad_at, self.label = n, shape, classes, bad_at, label

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        shape = (2, 2, 2) if i == self.bad_at else self.shape
        g = torch.Generator().manual_seed(i)
        return torch.rand(shape, generator=g), (self.label if self.label is not None else i % self.classes)


def static():
    return Frames(12, (1, 8, 8)), Frames(6, (1, 8, 8))


def temporal(timesteps, augment):
    assert augment in (True, False)
    return {"train": Frames(8, (timesteps, 2, 6, 6)), "test": Frames(4, (timesteps, 2, 6, 6)), "num_classes": 5}


def numpy_items():
    x = np.zeros((4, 3, 4, 4), dtype=np.uint8)
    return [(x[i], np.int64(i % 2)) for i in range(4)], [(x[0], 1)]


def with_classes():
    train = TensorDataset(torch.rand(4, 1, 4, 4), torch.tensor([0, 1, 0, 1]))
    train.classes = ["a", "b", "c", "d"]
    return train, train


def ragged():
    return Frames(5, (1, 4, 4), bad_at=3), Frames(2, (1, 4, 4))


def bad_label():
    return Frames(3, (1, 4, 4)), Frames(2, (1, 4, 4), label=1.5)


def out_of_range():
    return Frames(3, (1, 4, 4)), Frames(2, (1, 4, 4), label=7), 3


def one_dim():
    return Frames(3, (16,)), Frames(2, (16,))


def not_datasets():
    return 1, 2


def single():
    return Frames(3, (1, 4, 4))


def empty_test():
    return Frames(3, (1, 4, 4)), []


def nan():
    return [(torch.full((1, 2, 2), float("nan")), 0)], [(torch.zeros(1, 2, 2), 0)], 1


def raises():
    raise RuntimeError("the data folder is not mounted")


def exits():
    import sys
    sys.exit(2)
'''


@pytest.fixture
def own(tmp_path, monkeypatch):
    """A fresh module of factories in the current folder (found last on the import path)."""
    name = f"own_data_{next(_NAMES)}"
    (tmp_path / f"{name}.py").write_text(FACTORIES)
    monkeypatch.chdir(tmp_path)
    return name


def test_static_factory(own):
    data = load_data(f"{own}:static", timesteps=3)
    assert (len(data.train), len(data.test)) == (12, 6)
    assert data.input_shape == (1, 8, 8) and data.num_classes == 3 and not data.temporal
    x, y = data.train[4]
    assert x.dtype == torch.float32 and x.shape == (1, 8, 8) and y.dtype == torch.long and int(y) == 1


def test_temporal_factory_gets_timesteps(own):
    data = load_data(f"{own}:temporal", timesteps=3)
    assert data.temporal and data.timesteps == 3 and data.input_shape == (2, 6, 6) and data.num_classes == 5
    assert data.test[0][0].shape == (3, 2, 6, 6)


def test_numpy_items_and_class_attributes(own):
    data = load_data(f"{own}:numpy_items")
    assert data.num_classes == 2 and data.train[1][0].dtype == torch.float32 and int(data.train[1][1]) == 1
    assert load_data(f"{own}:with_classes").num_classes == 4


@pytest.mark.parametrize("factory,match", [
    ("ragged", r"train\[3\] x has shape \[2, 2, 2\], the first item \[1, 4, 4\]"),
    ("bad_label", "must be a whole class number"),
    ("out_of_range", "label 7, outside 0..2"),
    ("nan", r"train\[0\] x holds NaN"),
])
def test_items_are_checked(own, factory, match):
    with pytest.raises(BadInputError, match=match):  # counting the classes reads every item already
        data = load_data(f"{own}:{factory}")
        for split in (data.train, data.test):
            for i in range(len(split)):
                split[i]


@pytest.mark.parametrize("factory,match", [
    ("one_dim", r"x must be \[C, H, W\] .* got shape \[16\]"),
    ("not_datasets", "not a dataset with __len__ and __getitem__"),
    ("single", "it must return \\(train, test\\)"),
    ("raises", "RuntimeError: the data folder is not mounted"),
    ("empty_test", "the test split is empty"),
    ("exits", "sys.exit"),
    ("save", "defined in 'torch.serialization'.*a spec may only name code its own module defines"),
    ("missing", "has no attribute 'missing' \\(from --data"),
])
def test_bad_factories(own, factory, match):
    with pytest.raises(BadInputError, match=match):
        load_data(f"{own}:{factory}")


def test_missing_module_names_the_data_option():
    with pytest.raises(BadInputError, match="cannot import module 'no_such_data_mod' for --data no_such_data_mod:build"):
        load_data("no_such_data_mod:build")


def test_registered_names_win_and_recipes_keep_factories(tmp_path):
    assert is_user_spec("mypkg.data:build") and not is_user_spec("mnist:data") and not is_user_spec("cifar10:x")
    assert resolve_data_spec(tmp_path, "mypkg.data:build") == "mypkg.data:build"
    assert resolve_data_spec(tmp_path, "mnist:d") == f"mnist:{tmp_path / 'd'}"


def test_a_recorded_factory_is_code(monkeypatch):
    monkeypatch.delenv("TTSNN_TRUSTED_ARCH", raising=False)
    with pytest.raises(BadInputError, match="m.tt records data evil:build, which is code.*--data evil:build"):
        chosen_data(None, "evil:build", "m.tt")
    assert chosen_data("digits", "evil:build") == "digits"  # the user's own choice wins
    assert chosen_data(None, "mnist:/d") == "mnist:/d"  # a built-in dataset is data
    with trusting(True):
        assert chosen_data(None, "evil:build") == "evil:build"
    with trusting(["evil:build"]):
        assert chosen_data(None, "evil:build") == "evil:build"
    monkeypatch.setenv("TTSNN_TRUSTED_ARCH", "evil")
    assert chosen_data(None, "evil:build") == "evil:build"


def test_user_code_error_is_typed(own):
    with pytest.raises(UserCodeError):
        load_data(f"{own}:raises")


# ----------------------------------------------------------------------------- end to end
FAST = ["--epochs", "1", "--timesteps", "2", "--batch-size", "8", "--arch-kwargs", '{"width": 4}', "--json"]


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_train_on_mnist_files(tmp_path, one_thread):
    write_idx_set(tmp_path / "mnist", gz=True)
    out = tmp_path / "m.tt"
    result = invoke("train", "--arch", "zoo:digits_csnn", "--data", f"mnist:{tmp_path / 'mnist'}", "-o", out, *FAST)
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["epochs"] == 1 and 0 <= doc["test_accuracy"] <= 100 and out.is_file()


def test_train_on_nmnist_events(tmp_path, one_thread):
    write_nmnist(tmp_path / "nm", per_digit=2, digits=10)
    out = tmp_path / "n.tt"
    result = invoke("train", "--arch", "zoo:digits_csnn", "--data", f"nmnist:{tmp_path / 'nm'}", "-o", out,
                    *FAST[:-3], "--arch-kwargs", '{"width": 4, "in_channels": 2}', "--json")
    if result.exit_code != 0 and "in_channels" in result.stderr:
        pytest.skip("digits_csnn takes no in_channels")
    assert result.exit_code == 0, result.stderr


def test_train_and_finetune_on_own_factory(own, tmp_path, monkeypatch, one_thread):
    (tmp_path / f"{own}_ten.py").write_text(textwrap.dedent(f'''
        from {own} import Frames as _Frames


        def build():
            return _Frames(16, (1, 8, 8), classes=10), _Frames(8, (1, 8, 8), classes=10), 10
    '''))
    monkeypatch.delenv("TTSNN_TRUSTED_ARCH", raising=False)
    spec = f"{own}_ten:build"
    out = tmp_path / "own.tt"
    result = invoke("train", "--arch", "zoo:digits_csnn", "--data", spec, "-o", out, *FAST)
    assert result.exit_code == 0, result.stderr
    tuned = tmp_path / "tuned.tt"
    refused = invoke("finetune", out, "-o", tuned, *FAST[:-3], "--json")  # the bundle records the factory
    assert refused.exit_code == 3 and f"records data {spec}, which is code" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and not tuned.exists()
    named = invoke("finetune", out, "-o", tuned, "--data", spec, *FAST[:-3], "--json")
    assert named.exit_code == 0, named.stderr


@pytest.mark.parametrize("spec,match", [
    ("os:system", "defined in 'posix'.*a spec may only name code its own module defines"),
    ("subprocess:run", "cannot build|--data subprocess:run failed"),
])
def test_data_specs_naming_library_code(tmp_path, spec, match):
    result = invoke("train", "--arch", "zoo:digits_csnn", "--data", spec, "-o", tmp_path / "x.tt", *FAST)
    assert result.exit_code == 3 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert __import__("re").search(match, result.stderr), result.stderr


def test_bad_data_spec_is_one_line(tmp_path):
    result = invoke("train", "--arch", "zoo:digits_csnn", "--data", f"fashion-mnist:{tmp_path}", "-o",
                    tmp_path / "x.tt", *FAST)
    assert result.exit_code == 3 and "no fashion-mnist IDX files" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_recipes_accept_every_spec(tmp_path):
    model = {"arch": "zoo:digits_csnn", "kwargs": {"width": 4}}
    for spec in ("digits", "mnist:d", "fashion-mnist:data/fm", "nmnist:d", "dvsgesture:d", "cifar10dvs:d", "shd:d",
                 "mypkg.data:build"):
        recipe = parse_recipe({"model": model, "data": spec, "train": {"epochs": 1, "data": spec}})
        assert recipe.data == spec
    with pytest.raises(BadInputError, match="data.*unknown dataset 'imagenet'"):
        parse_recipe({"model": model, "data": "imagenet:data/x"})
    with pytest.raises(BadInputError, match="train.data.*needs a folder"):
        parse_recipe({"model": model, "train": {"data": "mnist"}})


def test_run_a_fashion_mnist_recipe(tmp_path, one_thread):
    write_idx_set(tmp_path / "data" / "fm")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "fm", "data": "fashion-mnist:data/fm",
        "model": {"arch": "zoo:digits_csnn", "kwargs": {"width": 4}, "timesteps": 2},
        "train": {"epochs": 1, "batch_size": 8},
        "compress": {"ranks": 2, "exclude": [r"stem\.conv"]},
    }))
    result = invoke("run", recipe, "--out", tmp_path / "out", "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert "train" in doc and "compress" in doc
