"""The package layers of medtl, written down once, and a check that imports respect them.

A module may import its own package and the packages of *lower* layers, never a higher
layer nor another package of its own layer; and no set of modules may import each other
in a loop (imports inside functions count: a loop hidden in a function is still a loop).
``docs/architecture.md`` draws the same layers; a test below keeps the two alike.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "medtl"

#: Lowest first. Each item: the packages (or top-level modules) of one layer.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("medtl.kernel",),
    ("medtl.config", "medtl.layout"),
    ("medtl.io",),
    ("medtl.preprocess", "medtl.models", "medtl.split", "medtl.demo"),
    ("medtl.shift",),
    ("medtl.provenance",),
    ("medtl.train", "medtl.evaluate"),
    ("medtl.postprocess", "medtl.trust"),
    ("medtl.predict", "medtl.export"),
    ("medtl.report",),
    ("medtl.checks", "medtl.cli"),
    ("medtl.__main__",),
)


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _unit(module: str) -> str:
    """The layer entry a module belongs to (the longest matching prefix)."""
    matches = [u for layer in LAYERS for u in layer if module == u or module.startswith(u + ".")]
    return max(matches, key=len) if matches else ""


LEVEL = {unit: i for i, layer in enumerate(LAYERS) for unit in layer}


def _resolve(name: str) -> str | None:
    """The medtl module an imported name refers to (a module, or the module defining it)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str) -> dict[str, int]:
    """The medtl modules ``module`` imports (anywhere in it), with the line of each."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    found: dict[str, int] = {}
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            names = [f"{base}.{a.name}" for a in node.names] or [base]
        for name in names:
            target = _resolve(name) if name.startswith("medtl") else None
            if target and target != module and not module.startswith(target + "."):
                found.setdefault(target, node.lineno)
    return found


GRAPH = {m: imports_of(m) for m in MODULES}


def test_every_module_has_a_layer():
    homeless = [m for m in MODULES if m != "medtl" and not _unit(m)]
    assert not homeless, f"modules in no layer (add them to LAYERS): {homeless}"


def against_layers(graph: dict[str, dict[str, int]]) -> list[str]:
    """Each import of ``graph`` that points upward or sideways, as ``module:line imports x``."""
    wrong = []
    for module, targets in graph.items():
        src = _unit(module)
        for target, line in targets.items():
            dst = _unit(target)
            if target == "medtl" or src == dst or not src:
                continue
            if LEVEL[dst] >= LEVEL[src]:
                how = "sideways" if LEVEL[dst] == LEVEL[src] else "upward"
                wrong.append(f"{module}:{line} imports {target} ({how})")
    return wrong


def test_imports_point_down_the_layers():
    wrong = against_layers(GRAPH)
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def _loops(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_loops():
    loops = _loops(GRAPH)
    assert not loops, "modules that import each other in a loop: " + "; ".join(
        " <-> ".join(c) for c in loops
    )


def test_the_loop_finder_finds_a_loop():
    graph = {"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}
    assert _loops(graph) == [["a", "b", "c"]]
    assert _loops({"a": {"b": 1}, "b": {}}) == []


def test_an_upward_or_sideways_import_is_caught():
    graph = {
        "medtl.io.ingest": {"medtl.train.loop": 3, "medtl.kernel.errors": 4},
        "medtl.models.describe": {"medtl.split.folds": 7, "medtl.models.stages": 8},
        "medtl.report.build": {"medtl.evaluate.comparisons": 9},
    }
    assert against_layers(graph) == [
        "medtl.io.ingest:3 imports medtl.train.loop (upward)",
        "medtl.models.describe:7 imports medtl.split.folds (sideways)",
    ]
    assert _resolve("medtl.kernel.errors.InputError") == "medtl.kernel.errors"


def test_the_architecture_doc_draws_these_layers():
    doc = (ROOT / "docs" / "architecture.md").read_text()
    block = re.search(r"<!-- layers -->\n```text\n(.*?)```", doc, re.S)
    assert block, "docs/architecture.md lost its layers block (<!-- layers --> then ```text)"
    drawn = [
        tuple(sorted(f"medtl.{p.strip()}" for p in line.split("·")[-1].split(",")))
        for line in block.group(1).strip().splitlines()[::-1]
    ]
    assert drawn == [tuple(sorted(layer)) for layer in LAYERS]


@pytest.mark.parametrize("unit", [u for layer in LAYERS for u in layer])
def test_each_layer_entry_exists(unit):
    assert unit in MODULES, f"{unit} is named in LAYERS but no such module exists"


def test_tests_import_their_helpers_as_a_package():
    """Test helpers are imported as ``tests.support…``, never put on ``sys.path`` by hand."""
    pattern = "sys.path." + "insert"  # spelled in two parts so this file does not match
    hand_made = [
        str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("*.py") if pattern in p.read_text()
    ]
    assert not hand_made, f"{pattern} in {hand_made}: import from tests.support instead"
