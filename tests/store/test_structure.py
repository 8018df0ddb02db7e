"""The store keeps the shape issue 17 asked for, measured from the code."""

from __future__ import annotations

import ast
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

STORE = Path(__file__).resolve().parents[2] / "hurricane" / "store"

#: STYLE habit 21 and issue 17's targets.
MAX_CLASS_LINES = 450
MAX_FUNCTION_LINES = 100
MAX_MODULE_LINES = 450


def _lines(node: ast.AST) -> int:
    end = getattr(node, "end_lineno", None) or getattr(node, "lineno", 0)
    return int(end) - int(getattr(node, "lineno", 0)) + 1


def _trees() -> list[tuple[str, ast.Module]]:
    return [(str(p.relative_to(STORE)), ast.parse(p.read_text(encoding="utf-8")))
            for p in sorted(STORE.rglob("*.py"))]


class StoreStructureTests(SynchronousTestCase):
    """One implementation of the store operations, split by domain."""

    def test_transaction_modules_are_small(self) -> None:
        """Every module of hurricane/store/txn/ is under 450 lines."""
        modules = sorted((STORE / "txn").glob("*.py"))
        self.assertGreater(len(modules), 5)
        found = [f"{p.name} {len(p.read_text(encoding='utf-8').splitlines())}" for p in modules
                 if len(p.read_text(encoding="utf-8").splitlines()) >= MAX_MODULE_LINES]
        self.assertEqual(found, [])

    def test_no_class_or_function_too_long(self) -> None:
        """No class of the store over 450 lines, no function over 100."""
        found = []
        for name, tree in _trees():
            for node in ast.walk(tree):
                if isinstance(node, ast.ClassDef) and _lines(node) > MAX_CLASS_LINES:
                    found.append(f"{name}:{node.name} {_lines(node)}")
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) \
                        and _lines(node) > MAX_FUNCTION_LINES:
                    found.append(f"{name}:{node.name} {_lines(node)}")
        self.assertEqual(found, [])

    def test_one_implementation_of_the_operations(self) -> None:
        """The memory store defines no store operation of its own: it is the
        SQLite engine (every IOutcomeStore method comes from SqlStore)."""
        from hurricane.store.base import SqlStore
        from hurricane.store.interface import IOutcomeStore
        from hurricane.store.memory import MemoryStore
        from hurricane.store.sqlite import SqliteEngine

        self.assertTrue(issubclass(MemoryStore, SqliteEngine))
        operations = set(IOutcomeStore.names())
        self.assertGreater(len(operations), 30)
        own = {name for cls in MemoryStore.__mro__ if cls not in SqlStore.__mro__
               for name in vars(cls)}
        self.assertEqual(own & operations, set())

    def test_no_sql_constant_patched_by_tests(self) -> None:
        """Tests inject faults through the failing transaction object, never by
        replacing the SQL text of hurricane.store.sql."""
        tests = Path(__file__).resolve().parents[1]
        offenders = []
        for path in sorted(tests.rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                        and node.func.attr == "patch" and node.args \
                        and isinstance(node.args[0], ast.Name) and node.args[0].id == "sql":
                    offenders.append(f"{path.relative_to(tests)}:{node.lineno}")
        self.assertEqual(offenders, [])
