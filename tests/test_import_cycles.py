"""No import cycle inside the hurricane package, measured from the code.

The graph is built with :mod:`ast` from the imports a module runs when it is
imported: its module-level statements, including those under ``if``/``try``
and in class bodies, but not those inside functions (a lazy import, run on
first use, is the accepted way to break a dependency) nor under
``if TYPE_CHECKING:`` (never run). ``from a.b import c`` is an edge to the
module ``a.b.c`` when there is one, else to ``a.b``; the parent packages an
import initialises implicitly are not edges (an ``__init__`` that imports its
own submodules would otherwise be a cycle with each of them).
"""

from __future__ import annotations

import ast
import tempfile
from collections.abc import Iterator
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

ROOT = Path(__file__).resolve().parents[1]


def module_names(root: Path, package: str) -> dict[str, Path]:
    """Every module of ``package`` (under ``root``) by dotted name."""
    found: dict[str, Path] = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_time_statements(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """The statements of ``body`` run at import, recursing into blocks, not functions."""
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        yield node
        if isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                yield from _import_time_statements(node.body)
            yield from _import_time_statements(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody):
                yield from _import_time_statements(block)
            for handler in node.handlers:
                yield from _import_time_statements(handler.body)
        elif isinstance(node, (ast.With, ast.For, ast.While)):
            yield from _import_time_statements(node.body)
        elif isinstance(node, ast.ClassDef):
            yield from _import_time_statements(node.body)


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The modules of ``modules`` that module ``name`` imports when it is imported."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in _import_time_statements(tree.body):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                child = f"{source}.{alias.name}"
                targets.add(child if child in modules else source)
    return {t for t in targets if t in modules and t != name}


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """Module -> the package's modules it imports at import time."""
    modules = module_names(root, package)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a path back to its start) per strongly connected component."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(start: str) -> None:
        # Tarjan's algorithm, iterative (no recursion limit on deep graphs).
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return [_path_through(graph, set(c), c[0]) for c in components]


def _path_through(graph: dict[str, set[str]], members: set[str], start: str) -> list[str]:
    """A cycle from ``start`` back to it inside one component (breadth first)."""
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(graph[node] & members):
                if nxt == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if nxt not in previous:
                    previous[nxt] = node
                    following.append(nxt)
        frontier = following
    raise AssertionError(f"no cycle through {start}")  # pragma: no cover


class ImportCycleTests(SynchronousTestCase):
    """The hurricane package has no import cycle; the detector finds real ones."""

    def test_no_cycle_in_hurricane(self) -> None:
        """No module of hurricane imports, at import time, a module that imports it back."""
        graph = import_graph(ROOT, "hurricane")
        self.assertIn("hurricane.store.factory", graph)
        self.assertIn("hurricane.store.txn.core", graph["hurricane.store.base"])
        self.assertEqual([" -> ".join(c) for c in cycles(graph)], [])

    def _package(self, files: dict[str, str]) -> Path:
        root = Path(tempfile.mkdtemp())
        for name, text in files.items():
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        return root

    def test_detects_a_cycle(self) -> None:
        """a -> b -> c -> a (absolute, relative and from-package forms) is reported."""
        root = self._package({
            "pkg/__init__.py": "",
            "pkg/a.py": "from pkg import b\n",
            "pkg/b.py": "from . import c\n",
            "pkg/sub/__init__.py": "",
            "pkg/c.py": "try:\n    import pkg.sub.d\nexcept ImportError:\n    pass\n",
            "pkg/sub/d.py": "class X:\n    from ..a import thing\n",
        })
        found = cycles(import_graph(root, "pkg"))
        self.assertEqual(found, [["pkg.a", "pkg.b", "pkg.c", "pkg.sub.d", "pkg.a"]])

    def test_lazy_and_type_checking_imports_do_not_count(self) -> None:
        """Imports inside functions and under TYPE_CHECKING make no edge."""
        root = self._package({
            "pkg/__init__.py": "",
            "pkg/a.py": "import pkg.b\n",
            "pkg/b.py": ("from typing import TYPE_CHECKING\n"
                         "if TYPE_CHECKING:\n    from pkg import a\n"
                         "def f():\n    from pkg import a\n    return a\n"),
        })
        graph = import_graph(root, "pkg")
        self.assertEqual(graph["pkg.a"], {"pkg.b"})
        self.assertEqual(graph["pkg.b"], set())
        self.assertEqual(cycles(graph), [])
