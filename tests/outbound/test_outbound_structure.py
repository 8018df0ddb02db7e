"""The outbound package keeps the shape issue 17 asked for, measured from the code."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

PACKAGE = Path(__file__).resolve().parents[2] / "hurricane" / "outbound"

#: STYLE habit 21 and issue 17's targets.
MAX_CLASS_LINES = 450
MAX_FUNCTION_LINES = 100
MAX_PARAMETERS = 8


def _modules() -> list[tuple[str, ast.Module]]:
    return [(p.name, ast.parse(p.read_text(encoding="utf-8")))
            for p in sorted(PACKAGE.glob("*.py"))]


def _lines(node: ast.AST) -> int:
    return (node.end_lineno or node.lineno) - node.lineno + 1  # type: ignore[attr-defined]


class OutboundStructureTests(SynchronousTestCase):
    """Sizes and the typing of hurricane/outbound."""

    def test_no_class_over_450_lines(self) -> None:
        """Every class of the package is at most 450 lines."""
        found = [f"{name}:{n.name} {_lines(n)}" for name, tree in _modules()
                 for n in ast.walk(tree)
                 if isinstance(n, ast.ClassDef) and _lines(n) > MAX_CLASS_LINES]
        self.assertEqual(found, [])

    def test_no_function_over_100_lines(self) -> None:
        """Every function of the package is at most 100 lines."""
        found = [f"{name}:{n.name} {_lines(n)}" for name, tree in _modules()
                 for n in ast.walk(tree)
                 if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
                 and _lines(n) > MAX_FUNCTION_LINES]
        self.assertEqual(found, [])

    def test_short_constructor_argument_lists(self) -> None:
        """No constructor takes more than 8 arguments (settings are grouped instead)."""
        found = []
        for name, tree in _modules():
            for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
                for fn in cls.body:
                    if isinstance(fn, ast.FunctionDef) and fn.name == "__init__":
                        a = fn.args
                        count = len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs) - 1
                        if count > MAX_PARAMETERS:
                            found.append(f"{name}:{cls.name} {count}")
        self.assertEqual(found, [])

    def test_no_any(self) -> None:
        """The package's edges are typed: the word Any appears nowhere in its code."""
        found = [p.name for p in PACKAGE.glob("*.py")
                 if re.search(r"\bAny\b", p.read_text(encoding="utf-8"))]
        self.assertEqual(found, [])
