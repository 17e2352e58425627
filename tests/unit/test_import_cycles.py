"""No import cycles inside app/: modules that import each other can only be read, tested
and changed together. Every import counts, also one inside a function or under
TYPE_CHECKING: it is a dependency all the same."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.unit import source_tree

ROOT = Path(__file__).resolve().parents[2]


def module_name(path: Path, root: Path) -> str:
    """``app.files.fetch`` for root/app/files/fetch.py, ``app.files`` for its __init__."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(source: str, importer: str, is_package: bool, modules: set[str]) -> set[str]:
    """The modules of ``modules`` that ``source`` (the module ``importer``) imports;
    ``from package import name`` names the submodule when there is one."""
    found = set()
    for node in ast.walk(source_tree.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the importer's package, up level - 1
                package = importer.split(".")[:len(importer.split(".")) - (not is_package)]
                up = package[:len(package) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            found |= {f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                      for alias in node.names}
    return (found & modules) - {importer}


def import_graph(root: Path, package: str = "app") -> dict[str, set[str]]:
    """Each module of ``package`` under ``root``, and the modules of it that it imports."""
    paths = sorted((root / package).rglob("*.py"))
    modules = {module_name(path, root): path for path in paths}
    return {name: imported(path.read_text(encoding="utf-8"), name,
                           path.name == "__init__.py", set(modules))
            for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per group of modules that reach each other (a strongly connected
    component), as ``[a, b, ..., a]``: the shortest one through the group's first module."""
    found = []
    for group in _strongly_connected(graph):
        if len(group) > 1:
            first = min(group)
            found.append(_shortest_cycle(graph, first, group))
    return sorted(found)


def _strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's algorithm; the graph of app/ is small enough to recurse."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group, member = set(), ""
            while member != node:
                member = stack.pop()
                group.add(member)
            groups.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def _shortest_cycle(graph: dict[str, set[str]], first: str, group: set[str]) -> list[str]:
    """Breadth first from ``first`` inside ``group`` until an edge leads back to it."""
    paths = [[first]]
    while paths:
        path = paths.pop(0)
        for target in sorted(graph[path[-1]] & group):
            if target == first:
                return [*path, first]
            if target not in path:
                paths.append([*path, target])
    raise AssertionError(f"{sorted(group)} is no cycle")


def test_no_module_of_app_imports_itself_through_others():
    found = cycles(import_graph(ROOT))
    assert not found, "import cycles in app/:\n" + "\n".join(" -> ".join(c) for c in found)


def test_the_check_names_each_cycle_and_follows_every_kind_of_import(tmp_path):
    sources = {
        "app/__init__.py": "",
        "app/a.py": "from app.pkg import b\nimport os\n",
        "app/pkg/__init__.py": "",
        "app/pkg/b.py": "def later():\n    from app.c import thing\n",
        "app/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import app.a\n",
        "app/pkg/d.py": "from .e import thing\n",
        "app/pkg/e.py": "from . import d\n",
        "app/f.py": "from app.a import thing\nfrom app.pkg import d\n",  # into cycles: none
    }
    for name, text in sources.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert cycles(import_graph(tmp_path)) == [
        ["app.a", "app.pkg.b", "app.c", "app.a"],
        ["app.pkg.d", "app.pkg.e", "app.pkg.d"],
    ]
