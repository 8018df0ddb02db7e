"""The package type-checks (``mypy --strict``, mypy_zope plugin) and the tree lints clean.

The project's style guide asks for strict typing, relaxed per module only
where a module subclasses Twisted's untyped bases; ``[tool.mypy]`` in
pyproject.toml holds that configuration, and this test holds the code to it
in every CI run. mypy, mypy-zope and ruff are pinned in the ``test`` extra,
so a new release of a tool does not change the verdict; the libraries'
annotations (Twisted, zope.interface, pyOpenSSL, stubs) are not pinned, and
a release of one of them can still bring new findings, which is when they
should be looked at.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

REPO = Path(__file__).resolve().parents[1]


class StrictTypesTests(SynchronousTestCase):
    def test_package_and_plugin_pass_mypy_strict(self) -> None:
        """No mypy error in hurricane/ or the twistd plugin, under pyproject's settings."""
        with tempfile.TemporaryDirectory() as cache:
            proc = subprocess.run(
                [sys.executable, "-m", "mypy", "--cache-dir", cache, "hurricane",
                 "twisted/plugins/hurricane_plugin.py"],
                cwd=REPO, capture_output=True, text=True, timeout=600,
            )
        self.assertEqual(proc.returncode, 0, proc.stdout[-6000:] + proc.stderr[-2000:])
        self.assertIn("Success: no issues found", proc.stdout)


class LintTests(SynchronousTestCase):
    def test_tree_is_ruff_clean(self) -> None:
        """No ruff finding under pyproject's [tool.ruff] rules (ruff pinned in the test extra)."""
        proc = subprocess.run(
            [sys.executable, "-m", "ruff", "check", "--no-cache", "hurricane", "tests",
             "twisted", "bench"],
            cwd=REPO, capture_output=True, text=True, timeout=300,
        )
        self.assertEqual(proc.returncode, 0, proc.stdout[-6000:] + proc.stderr[-2000:])
