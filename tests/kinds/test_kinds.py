"""The layer-kind registry and the per-kind rules every consumer relies on: lookups, growth (with and
without --allow-growth, the same for every kind), eligibility reasons, mode refusals, bundle configs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ttsnn_cli.compress.decompose import CompressConfig, NothingToDecompose, compress_model, plan_layers
from ttsnn_cli.errors import BadInputError
from ttsnn_cli.kinds import (
    DEFAULT_LAYER_TYPES,
    KINDS,
    LayerKind,
    is_tt_layer,
    kind_of,
    layer_type,
    leaf_kind,
    parse_layer_types,
    tt_layer_config,
    tt_layer_from_config,
)
from ttsnn_cli.kinds.conv2d_grouped import TTConv2dGrouped
from ttsnn_cli.layers.conv1d import TTConv1d
from ttsnn_cli.layers.conv2d import TTConv2d
from ttsnn_cli.layers.linear import TTLinear
from ttsnn_cli.maths.ranks import RankSpec


class MyConv(nn.Conv2d):
    """A user subclass: its forward may do more than a Conv2d's, so compress leaves it alone."""


def test_every_kind_answers_for_its_dense_and_tt_layers() -> None:
    assert list(KINDS) == ["conv2d", "conv1d", "linear", "conv2d_grouped"]
    assert all(isinstance(kind, LayerKind) and kind.name == name for name, kind in KINDS.items())
    cases = [
        (nn.Conv2d(4, 6, 3), TTConv2d(4, 6, 3, (2, 2, 2)), "conv2d"),
        (nn.Conv1d(4, 6, 3), TTConv1d(4, 6, 3, (2, 2)), "conv1d"),
        (nn.Linear(8, 4), TTLinear(8, 4, (2, 4), (2, 2), (2,)), "linear"),
        (nn.Conv2d(4, 6, 3, groups=2), TTConv2dGrouped(4, 6, 3, (2, 2, 2), groups=2), "conv2d_grouped"),
    ]
    for dense, tt, name in cases:
        assert kind_of(dense) is kind_of(tt) is KINDS[name]
        assert layer_type(dense) == layer_type(tt) == name
        assert not is_tt_layer(dense) and is_tt_layer(tt)
        assert leaf_kind(dense) is KINDS[name]
    assert leaf_kind(cases[0][1]) is None and leaf_kind(cases[2][1]) is KINDS["linear"]  # cores vs TT-matrix leaf
    assert kind_of(nn.ReLU()) is None and kind_of(nn.BatchNorm2d(3)) is None and layer_type(nn.Identity()) is None


def test_a_subclass_is_counted_but_not_decomposed() -> None:
    conv = MyConv(4, 6, 3)
    assert kind_of(conv) is None and kind_of(conv, exact=False) is KINDS["conv2d"]
    model, result = compress_model(nn.Sequential(conv, nn.Conv2d(4, 6, 3)), CompressConfig(RankSpec("fixed", (2, 2, 2))))
    assert type(model[0]) is MyConv and isinstance(model[1], TTConv2d)
    assert result.layers[0].skipped == "MyConv: not in --layer-types (conv2d,conv1d), stays dense"


def test_parse_layer_types_names_every_kind() -> None:
    assert parse_layer_types(None) == DEFAULT_LAYER_TYPES == ("conv2d", "conv1d")
    assert parse_layer_types("Conv2d, conv2d_grouped,conv2d") == ("conv2d", "conv2d_grouped")
    with pytest.raises(ValueError, match="conv2d, conv1d, linear, conv2d_grouped; got 'conv3d'"):
        parse_layer_types("conv3d")


@pytest.mark.parametrize("layer", [
    TTConv2d(4, 6, (3, 1), (2, 2, 2), stride=(2, 1)), TTConv1d(4, 6, 3, (2, 2), padding=(1, 2)),
    TTLinear(8, 4, (2, 4), (2, 2), (2,), bias=False), TTConv2dGrouped(4, 6, 3, (2, 1, 2), groups=2, padding=(0, 1, 1, 0)),
], ids=["conv2d", "conv1d", "linear", "conv2d_grouped"])
def test_bundle_configs_round_trip_with_their_type(layer: nn.Module) -> None:
    config = tt_layer_config(layer)
    assert config["type"] == layer_type(layer)
    again = tt_layer_from_config(config)
    assert type(again) is type(layer) and tt_layer_config(again) == config
    assert {k: tuple(v.shape) for k, v in again.state_dict().items()} == {k: tuple(v.shape) for k, v in layer.state_dict().items()}


def test_a_config_without_type_is_conv2d_and_an_unknown_type_is_refused() -> None:
    config = tt_layer_config(TTConv2d(4, 6, 3, (2, 2, 2)))
    del config["type"]
    assert isinstance(tt_layer_from_config(config), TTConv2d)
    with pytest.raises(ValueError, match="unknown TT layer type 'conv3d'"):
        tt_layer_from_config({**config, "type": "conv3d"})
    with pytest.raises(ValueError, match="not a TT layer"):
        tt_layer_config(nn.Conv2d(1, 1, 1))


def _growing() -> nn.Sequential:
    """One layer of each kind whose cores at rank 8 (capped) hold more weights than the layer itself."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3), nn.Conv1d(2, 4, 3), nn.Linear(4, 4))


GROWTH = CompressConfig(RankSpec("fixed", (8, 8, 8)), layer_types=("conv2d", "conv1d", "linear"), linear_cores=2)


def test_growth_is_refused_for_every_kind_without_allow() -> None:
    with pytest.raises(NothingToDecompose) as caught:
        compress_model(_growing(), GROWTH)
    reasons = {row["name"]: row["skipped"] for row in caught.value.document["layers"]}
    # one rule and one message for every kind
    assert reasons["0"].startswith("would grow 72 -> ") and "stays dense" in reasons["0"]
    assert reasons["1"].startswith("would grow 24 -> 44 weights at ranks 2,4: stays dense")
    assert reasons["2"].startswith("would grow 16 -> 32 weights at ranks 4: stays dense")
    assert all("--allow-growth" in reason for reason in reasons.values())


def test_allow_growth_decomposes_every_kind_exactly() -> None:
    config = CompressConfig(**{**GROWTH.__dict__, "allow_growth": True})
    model, result = compress_model(_growing(), config)
    assert [type(m) for m in model] == [TTConv2d, TTConv1d, TTLinear]
    assert all(row.skipped is None and row.rel_error < 1e-5 for row in result.layers)
    assert [row.params_after > row.params_before for row in result.layers] == [True, True, True]


@pytest.mark.parametrize("allow", [False, True])
@pytest.mark.parametrize("name,layer,ranks", [
    ("conv2d", nn.Conv2d(1, 8, 3), (1, 3, 8)), ("conv1d", nn.Conv1d(2, 4, 3), (2, 4)), ("linear", nn.Linear(4, 4), (4,)),
    ("conv2d_grouped", nn.Conv2d(2, 8, 3, groups=2), (1, 3, 4)),
])
def test_grows_is_the_same_rule_for_every_kind(name: str, layer: nn.Module, ranks: tuple[int, ...], allow: bool) -> None:
    kind = KINDS[name]
    reason = kind.grows(layer, ranks, 2, allow)
    assert (reason is None) if allow else ("would grow" in reason)  # type: ignore[operator]
    assert kind.grows(layer, (1,) * len(ranks), 2, allow) is None


@pytest.mark.parametrize("layer,types,reason", [
    (nn.Conv2d(4, 4, 1), ("conv2d",), "1x1 conv: already a channel matrix, nothing spatial to split"),
    (nn.Conv1d(4, 4, 1), ("conv1d",), "1-wide conv: already a channel matrix, nothing spatial to split"),
    (nn.Conv2d(4, 4, 3, groups=4), ("conv2d",), "depthwise conv (groups=4): TT cores cannot split channel groups"),
    (nn.Conv2d(4, 8, 3, groups=2), ("conv2d",), "grouped conv (groups=2): TT cores cannot split channel groups"),
    (nn.Conv2d(4, 8, 3, groups=2), ("conv1d",), "Conv2d: not in --layer-types (conv1d), stays dense"),
    (nn.Conv2d(4, 8, 1, groups=2), ("conv2d_grouped",), "1x1 conv: already a channel matrix, nothing spatial to split"),
    (nn.Conv1d(4, 8, 3, groups=2), ("conv1d", "conv2d_grouped"), "grouped conv (groups=2): TT cores cannot split channel groups"),
    (nn.Conv2d(4, 8, 3), ("conv1d",), "Conv2d: not in --layer-types (conv1d), stays dense"),
    (nn.Linear(4, 8), ("conv2d",), "Linear: not in --layer-types (add linear to decompose it as a TT-matrix), stays dense"),
], ids=["1x1", "1-wide", "depthwise", "grouped", "grouped-unselected", "grouped-1x1", "grouped-conv1d", "conv2d-unselected",
        "linear-unselected"])
def test_eligibility_reasons(layer: nn.Module, types: tuple[str, ...], reason: str) -> None:
    chosen, skipped = plan_layers(nn.Sequential(layer), CompressConfig(RankSpec("fixed", (2, 2, 2)), layer_types=types))
    assert chosen == {} and [r.skipped for r in skipped] == [reason]


def test_modes_a_kind_cannot_run_are_refused_in_one_line() -> None:
    assert KINDS["conv1d"].mode_refusal("ptt") and KINDS["conv1d"].mode_refusal("htt") is None
    assert KINDS["conv2d_grouped"].mode_refusal("htt") and KINDS["conv2d"].mode_refusal("ptt") is None
    with pytest.raises(BadInputError, match="layer 0: PTT needs two spatial axes"):
        compress_model(nn.Sequential(nn.Conv1d(4, 6, 3)), CompressConfig(RankSpec("fixed", (2, 2, 2)), mode="ptt"))
