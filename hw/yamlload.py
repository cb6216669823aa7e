"""Plain YAML with bounds: the one YAML reader for accelerator files and (ttsnn_cli) recipes.

`yaml.safe_load` builds no objects beyond plain data, but it still lets a few hundred bytes of
anchors and aliases describe a value of billions of nodes (a "billion laughs" bomb), an alias refer
to its own anchor (a recursive value that loops any validator), or nesting deep enough to exhaust
Python's stack. `load_yaml` refuses all three while composing, before any value is built:
at most MAX_NODES nodes once every alias is expanded, at most MAX_DEPTH levels, no recursive alias.
A bomb is answered in milliseconds.
"""

from __future__ import annotations

from typing import Any

import yaml

MAX_NODES = 100_000
MAX_DEPTH = 64


class YAMLLimitError(yaml.YAMLError):
    """The document is too large once aliases are expanded, too deep, or recursive (one line)."""


class _BoundedLoader(yaml.SafeLoader):
    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:  # type: ignore[override]
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise YAMLLimitError(f"nested deeper than {MAX_DEPTH} levels")
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_document(self) -> Any:  # type: ignore[override]
        node = super().compose_document()
        _measure(node, {}, set(), 0)
        return node


def _measure(node: Any, sizes: dict[int, tuple[int, int]], open_nodes: set[int], level: int) -> tuple[int, int]:
    """(expanded node count, depth) of `node`, memoised per node; raises past the bounds."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_nodes:
        raise YAMLLimitError("an alias refers to its own anchor (a recursive value)")
    if level > MAX_DEPTH:
        raise YAMLLimitError(f"nested deeper than {MAX_DEPTH} levels once aliases are expanded")
    open_nodes.add(key)
    if isinstance(node, yaml.SequenceNode):
        children = list(node.value)
    elif isinstance(node, yaml.MappingNode):
        children = [part for pair in node.value for part in pair]
    else:
        children = []
    count, depth = 1, 1
    for child in children:
        child_count, child_depth = _measure(child, sizes, open_nodes, level + 1)
        count += child_count
        depth = max(depth, child_depth + 1)
        if count > MAX_NODES:
            raise YAMLLimitError(f"more than {MAX_NODES:,} values once aliases are expanded (an alias bomb?)")
    if depth > MAX_DEPTH:
        raise YAMLLimitError(f"nested deeper than {MAX_DEPTH} levels once aliases are expanded")
    open_nodes.discard(key)
    sizes[key] = (count, depth)
    return count, depth


def load_yaml(text: str) -> Any:
    """The plain data in one YAML document, within the bounds above (YAMLError otherwise)."""
    loader = _BoundedLoader(text)
    try:
        return loader.get_single_data()
    except RecursionError:
        raise YAMLLimitError("nested too deeply") from None
    finally:
        loader.dispose()
