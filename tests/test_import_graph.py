"""No import cycle in zoo_core: between its modules, and between its top-level rooms.

Every import counts, also one inside a function: a lazy import hides a cycle from Python's
import machinery but not from a reader, who still has to know both modules to change either.
The graph is read from the source with ``ast``; nothing is imported.

    python tests/test_import_graph.py     # prints every cycle (strongly connected component)
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = "zoo_core"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE


def module_files(root: Path = ROOT, package: str = PACKAGE) -> dict[str, Path]:
    """Dotted module name -> source file; a package is named by its ``__init__.py``."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join([package, *parts])] = path
    return found


def _is_package(name: str, files: dict[str, Path]) -> bool:
    return files[name].name == "__init__.py"


def _resolve(name: str, files: dict[str, Path]) -> str | None:
    """The longest known module that ``name`` starts with (``a.b.func`` -> ``a.b``), inside the package only."""
    while name:
        if name in files:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str, files: dict[str, Path]) -> set[str]:
    """The modules of the package that ``module`` imports anywhere in its source."""
    tree = ast.parse(files[module].read_text(), filename=str(files[module]))
    # the package a relative import starts from: the module itself when it is a package's __init__
    here = module if _is_package(module, files) else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            # `from pkg import sub` imports the submodule sub; `from pkg import name` depends on pkg
            targets = [
                f"{source}.{alias.name}" if f"{source}.{alias.name}" in files else source for alias in node.names
            ]
        else:
            continue
        for target in targets:
            resolved = _resolve(target, files)
            if resolved and resolved != module:
                found.add(resolved)
    return found


def import_graph(files: dict[str, Path] | None = None) -> dict[str, set[str]]:
    files = files or module_files()
    return {module: imports_of(module, files) for module in files}


def room_of(module: str) -> str:
    """The top-level module or subpackage of zoo_core a module belongs to (the package itself: ``zoo_core``)."""
    parts = module.split(".")
    return ".".join(parts[:2])


def room_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    rooms: dict[str, set[str]] = {}
    for module, targets in graph.items():
        edges = rooms.setdefault(room_of(module), set())
        edges.update(room_of(t) for t in targets if room_of(t) != room_of(module))
    return rooms


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def cycle_path(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """One concrete cycle through the component's first node, for the failure message."""
    members, start = set(component), component[0]
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for target in sorted(graph[node] & members):
            if target == start:
                return paths[node] + [start]
            if target not in paths:
                paths[target] = paths[node] + [target]
                queue.append(target)
    return component


def _describe(graph: dict[str, set[str]], found: list[list[str]]) -> str:
    return "\n".join(
        " -> ".join(cycle_path(graph, component)) + f"   (all of: {', '.join(component)})" for component in found
    )


# --- the graph reader itself, on a throw-away package -------------------------------------------------------------


def _write_package(tmp_path: Path, sources: dict[str, str]) -> dict[str, Path]:
    for name, text in sources.items():
        path = tmp_path / "pkg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return module_files(tmp_path / "pkg", "pkg")


def test_the_reader_sees_every_kind_of_import(tmp_path):
    files = _write_package(
        tmp_path,
        {
            "__init__.py": "from .a import f\n__version__ = '1'\n",
            "a.py": "def f():\n    from .sub import deep\n    from . import b\n",
            "b.py": "import pkg.sub.deep\nfrom pkg import __version__\nimport os\n",
            "sub/__init__.py": "",
            "sub/deep.py": "from ..a import f\nfrom .. import c\n",
            "c.py": "from .sub.deep import thing\n",
        },
    )
    graph = import_graph(files)
    assert graph["pkg"] == {"pkg.a"}
    assert graph["pkg.a"] == {"pkg.sub.deep", "pkg.b"}  # inside a function, and `from . import b`
    assert graph["pkg.b"] == {"pkg.sub.deep", "pkg"}  # `from pkg import __version__` is the package itself
    assert graph["pkg.sub.deep"] == {"pkg.a", "pkg.c"}
    assert graph["pkg.sub"] == set()
    assert cycles(graph) == [["pkg", "pkg.a", "pkg.b", "pkg.c", "pkg.sub.deep"]]
    assert cycle_path(graph, cycles(graph)[0])[0] == cycle_path(graph, cycles(graph)[0])[-1] == "pkg"
    assert room_graph(graph)["pkg.sub"] == {"pkg.a", "pkg.c"}


def test_the_reader_finds_no_cycle_in_a_chain(tmp_path):
    files = _write_package(
        tmp_path,
        {"__init__.py": "", "a.py": "from . import b\n", "b.py": "from .c import x\n", "c.py": "import json\n"},
    )
    assert cycles(import_graph(files)) == []


# --- zoo_core -------------------------------------------------------------------------------------------------------


def test_no_import_cycle_between_modules():
    graph = import_graph()
    found = cycles(graph)
    assert not found, "import cycles in zoo_core (imports inside functions count):\n" + _describe(graph, found)


def test_no_import_cycle_between_rooms():
    """Rooms: the top-level modules and subpackages (data, components, engine, hub, ...)."""
    graph = room_graph(import_graph())
    found = cycles(graph)
    assert not found, "import cycles between the rooms of zoo_core:\n" + _describe(graph, found)


if __name__ == "__main__":
    modules = import_graph()
    for title, graph in (("modules", modules), ("rooms", room_graph(modules))):
        found = cycles(graph)
        print(f"{title}: {len(found)} cycle(s)")
        if found:
            print(_describe(graph, found))
    sys.exit(0)
