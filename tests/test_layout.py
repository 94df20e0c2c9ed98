"""The package's import structure: layers from the front ends down to the ground, no import cycles.

Every ``import biounet...`` statement counts, those inside functions too (a lazy import hides a cycle, it
does not remove it); only the imports under ``if TYPE_CHECKING:`` are left out, since they never run.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "biounet"

# Lowest first. A module may import its own package and the packages of lower layers, never a higher layer
# nor another package of its own layer.
LAYERS: list[tuple[str, ...]] = [
    ("errors", "atomic", "configs", "geometry", "_version", "optional", "pretrained", "interrupts"),
    ("models",),
    ("io",),
    ("data",),
    ("augment", "losses"),
    ("infer",),
    ("metrics",),
    ("training",),
    ("planning",),
    ("export",),
    ("workflows",),
    ("cli", "napari"),
    ("__main__", "__init__"),
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def unit(module: str) -> str:
    """The layer unit a module belongs to: its top-level package or ground module under ``biounet``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def imports(path: Path) -> set[str]:
    """The biounet modules a file imports (``from biounet.x import y`` gives ``biounet.x.y`` when that is a
    module, else ``biounet.x``)."""
    tree = ast.parse(path.read_text(), str(path))
    skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and is_type_checking(node)
               for child in node.body for n in ast.walk(child)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("biounet"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("biounet"):
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if candidate in MODULES else node.module)
    return {m for m in found if m in MODULES}


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}
GRAPH = {name: imports(path) for name, path in MODULES.items()}


def test_every_unit_has_a_layer() -> None:
    assert {unit(m) for m in MODULES} <= set(RANK), "add new packages to LAYERS"


def test_imports_run_down_the_layers() -> None:
    assert upward_imports(GRAPH) == []


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Imports into a higher layer, or into another package of the same layer (ground modules may import each
    other: they are single modules, and the cycle check covers them)."""
    return [f"{a} -> {b}" for a, targets in graph.items() for b in targets
            if unit(a) != unit(b) and unit(a) != "__init__"
            and (RANK[unit(b)] > RANK[unit(a)] or RANK[unit(b)] == RANK[unit(a)] > 0)]


def test_no_import_cycles() -> None:
    assert import_cycles(GRAPH) == []


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for name in sorted(graph):
        if name not in index:
            visit(name)
    return cycles


def test_the_checks_fail_on_the_old_layout() -> None:
    """The checks on the import graph this layout replaced, where they must fail: checkpoint loading read
    packages through a module that imported the predictor, which imported checkpoint loading."""
    old = {"biounet.infer.predict": {"biounet.models.checkpoint"},
           "biounet.models.checkpoint": {"biounet.models.bioimageio"},
           "biounet.models.bioimageio": {"biounet.infer.predict", "biounet.models.checkpoint"},
           "biounet.io.store": {"biounet.infer.blocks"}, "biounet.infer.blocks": set()}
    assert import_cycles(old) == [["biounet.infer.predict", "biounet.models.bioimageio",
                                   "biounet.models.checkpoint"]]
    assert sorted(upward_imports(old)) == ["biounet.io.store -> biounet.infer.blocks",
                                           "biounet.models.bioimageio -> biounet.infer.predict"]
    # The real graph is read: the predictor's import of checkpoints is among its edges.
    assert "biounet.models.checkpoint" in GRAPH["biounet.infer.predict"]


@pytest.mark.parametrize("module", ["biounet", "biounet.metrics", "biounet.metrics.evaluate", "biounet.io.readers",
                                    "biounet.data.labels"])
def test_numpy_only_modules_leave_torch_out(module: str) -> None:
    code = f"import sys, {module}; assert 'torch' not in sys.modules, sorted(sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
