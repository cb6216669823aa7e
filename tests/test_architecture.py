"""The package's shape, read from its own source: layers of concern that import only downward.

Every import counts, those inside functions too (a lazy import is still a dependency). The order
below is the dependency order of the subpackages, lowest first; each `__init__.py` says the same in
words ("May import: ...").
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ttsnn_cli"

# Lowest first. A module may import its own subpackage and anything earlier in this list; `hw`
# (the accelerator model, beside the package) imports nothing of ttsnn_cli.
ORDER = ("errors", "_version", "host", "maths", "spiking", "layers", "zoo", "kinds", "storage", "data", "compress",
         "train", "report", "export", "pipeline", "api", "cli")
TOP_LEVEL = {"__init__", "__main__", "_version", "errors"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every ttsnn_cli module or package this file imports, anywhere in it."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.split(".")[0] != "ttsnn_cli":
                continue
            found.add(module)
            for alias in node.names:  # `from ttsnn_cli.x import y` may name a submodule y
                if (PACKAGE.parent / (module + "." + alias.name).replace(".", "/")).with_suffix(".py").exists() or \
                        (PACKAGE.parent / (module + "." + alias.name).replace(".", "/") / "__init__.py").exists():
                    found.add(module + "." + alias.name)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "ttsnn_cli"}
    return found


SOURCES = sorted(p for p in PACKAGE.rglob("*.py"))
GRAPH = {_module_name(p): _imports(p) for p in SOURCES}


def _concern(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_the_top_level_holds_only_the_api_main_version_and_errors() -> None:
    top = {p.stem for p in PACKAGE.glob("*.py")}
    assert top <= TOP_LEVEL, f"modules at the top level besides the public API: {sorted(top - TOP_LEVEL)}"
    subpackages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert subpackages == set(ORDER) - {"errors", "_version"}, "every subpackage has its place in ORDER"


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if _concern(m) not in (None, "__main__")))
def test_nothing_imports_upward(module: str) -> None:
    own = ORDER.index(_concern(module))
    upward = sorted(d for d in GRAPH[module] if _concern(d) and ORDER.index(_concern(d)) > own)
    assert not upward, f"{module} ({ORDER[own]}) imports from a later concern: {upward}"


def test_no_import_circle() -> None:
    """Between modules (a package's `__init__` counts as one), following every import."""
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for dep in sorted(GRAPH.get(module, ())):
            if dep not in GRAPH or dep == module:
                continue
            if state.get(dep) == 1:
                cycle = path[path.index(dep):] + [dep]
                raise AssertionError("import circle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep)
        path.pop()
        state[module] = 2

    for module in GRAPH:
        if module not in state and module != "ttsnn_cli":  # the public API imports lazily from everywhere
            visit(module)


def test_only_the_cli_imports_the_cli() -> None:
    outside = sorted(m for m, deps in GRAPH.items()
                     if _concern(m) not in ("cli", "__main__") and any(_concern(d) == "cli" for d in deps))
    assert outside == []


@pytest.mark.parametrize("package", [p for p in ORDER if (PACKAGE / p / "__init__.py").exists()])
def test_each_subpackage_says_what_it_owns_and_may_import(package: str) -> None:
    doc = ast.get_docstring(ast.parse((PACKAGE / package / "__init__.py").read_text())) or ""
    assert "May import" in doc or "may import" in doc.lower(), f"ttsnn_cli/{package}/__init__.py"


def test_hw_imports_nothing_of_the_package() -> None:
    hw = PACKAGE.parent / "hw"
    for path in hw.rglob("*.py"):
        tree = ast.parse(path.read_text())
        named = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)] + \
            [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        assert not [m for m in named if m and m.split(".")[0] == "ttsnn_cli"], path
