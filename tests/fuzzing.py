"""The property-based fuzz tests' common form: each reader's property becomes two tests, a few
examples in the default run and a campaign of FUZZ_EXAMPLES (2,000 by default) under `-m fuzz`;
and the byte mutation the readers of files are fuzzed with."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

CAMPAIGN = int(os.environ.get("FUZZ_EXAMPLES", "2000"))

Properties = dict[str, tuple[Callable[[Any], None], SearchStrategy]]


@st.composite
def mutated(draw: st.DrawFn, original: bytes, longest_delete: int) -> bytes:
    """A genuine file after 1-8 flips, cuts, insertions or deletions (of up to `longest_delete` bytes):
    close enough to valid that a reader gets past its first checks."""
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[at] ^= draw(st.integers(1, 255))
        elif kind == "cut":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif data:
            del data[at : at + draw(st.integers(1, longest_delete))]
    return bytes(data)


def _property_test(name: str, check: Callable[[Any], None], strategy: SearchStrategy, examples: int,
                   marks: list[Any]) -> Callable[..., None]:
    @pytest.mark.parametrize("_", [name], ids=[name])
    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
    @given(value=strategy)
    def test(_: str, value: Any) -> None:
        check(value)

    for mark in marks:
        test = mark(test)
    return test


def property_tests(properties: Properties, small: int, prefix: str = "") -> dict[str, Callable[..., None]]:
    """`test_<prefix>reader_<name>` (`small` examples) and `test_<prefix>campaign_<name>` (marked
    fuzz) for every property; a test module adds them with `globals().update(...)`."""
    tests: dict[str, Callable[..., None]] = {}
    for name, (check, strategy) in properties.items():
        key = name.replace("-", "_")
        tests[f"test_{prefix}reader_{key}"] = _property_test(name, check, strategy, small, [])
        tests[f"test_{prefix}campaign_{key}"] = _property_test(name, check, strategy, CAMPAIGN, [pytest.mark.fuzz])
    return tests
