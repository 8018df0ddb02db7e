"""The wheel ships the twistd plugin correctly and nothing it must not."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

REPO = Path(__file__).resolve().parents[1]


class WheelTests(SynchronousTestCase):
    """Build the wheel once and inspect it."""

    wheel: Path
    tmp: str

    @classmethod
    def setUpClass(cls) -> None:
        cls.tmp = tempfile.mkdtemp()
        # A stray dropin.cache in the tree must not reach the wheel.
        (REPO / "twisted" / "plugins" / "dropin.cache").write_bytes(b"stale")
        subprocess.run(
            [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", cls.tmp,
             str(REPO)],
            check=True, capture_output=True, timeout=300,
        )
        (cls.wheel,) = Path(cls.tmp).glob("hurricane-*.whl")

    @classmethod
    def tearDownClass(cls) -> None:
        (REPO / "twisted" / "plugins" / "dropin.cache").unlink(missing_ok=True)

    def names(self) -> list[str]:
        with zipfile.ZipFile(self.wheel) as z:
            return z.namelist()

    def test_plugin_shipped_without_package_markers(self) -> None:
        """The plugin module is in the wheel; twisted/__init__.py and dropin.cache are not."""
        names = self.names()
        self.assertIn("twisted/plugins/hurricane_plugin.py", names)
        self.assertNotIn("twisted/__init__.py", names)
        self.assertNotIn("twisted/plugins/__init__.py", names)
        self.assertFalse([n for n in names if n.endswith("dropin.cache")])
        self.assertFalse([n for n in names if n.startswith("twisted/") and
                          n != "twisted/plugins/hurricane_plugin.py"])

    def test_package_data(self) -> None:
        """Migrations and the analyzer's rule table are package data."""
        names = self.names()
        self.assertTrue([n for n in names if n.startswith("hurricane/store/migrations/")
                         and n.endswith(".sql")])
        self.assertIn("hurricane/cli.py", names)
        self.assertTrue([n for n in names if n.endswith("entry_points.txt")])

    def test_unit_documentation_shipped(self) -> None:
        """Every file:///opt/hurricane/... page the systemd unit's Documentation= names is
        in the wheel's data, so a virtualenv at /opt/hurricane has it; and so are the
        files docs/production.md installs from (etc/...)."""
        unit = (REPO / "etc" / "hurricane.service").read_text()
        docs = [line.split("=", 1)[1].strip() for line in unit.splitlines()
                if line.startswith("Documentation=")]
        self.assertTrue(docs)
        data = {n.split(".data/data/", 1)[1] for n in self.names() if ".data/data/" in n}
        for url in docs:
            self.assertTrue(url.startswith("file:///opt/hurricane/"), url)
            self.assertIn(url.removeprefix("file:///opt/hurricane/"), data)
        guide = (REPO / "docs" / "production.md").read_text()
        names = set(re.findall(r"(?<![/\w.])(etc/[\w-]+\.(?:toml|service))", guide))
        self.assertIn("etc/hurricane.service", names)
        for name in names:
            self.assertIn(f"share/doc/hurricane/{name}", data, name)

    def test_installed_wheel_registers_plugin(self) -> None:
        """Installed from the wheel, twistd lists hurricane when run from another directory."""
        target = os.path.join(self.tmp, "site")
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-compile",
             "--target", target, str(self.wheel)],
            check=True, capture_output=True, timeout=300,
        )
        env = dict(os.environ, PYTHONPATH=target)
        out = subprocess.run(
            [sys.executable, "-c",
             "import sys; from twisted.scripts.twistd import run; sys.argv=['twistd','--help'];"
             " run()"],
            cwd=tempfile.mkdtemp(), env=env, capture_output=True, text=True, timeout=120,
        )
        self.assertIn("hurricane", out.stdout)
        where = subprocess.run(
            [sys.executable, "-c", "import hurricane; print(hurricane.__file__)"],
            cwd=tempfile.mkdtemp(), env=env, capture_output=True, text=True, timeout=60,
        )
        self.assertTrue(where.stdout.strip().startswith(target), where.stdout)
