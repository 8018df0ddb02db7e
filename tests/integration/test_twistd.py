"""``twistd -n hurricane`` as an operator runs it: start, log listeners, stop on SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

REPO = Path(__file__).resolve().parents[2]
TWISTD = [os.path.join(os.path.dirname(sys.executable), "twistd")]  # this venv's twistd
LISTENING = re.compile(r"(\w+) listening on ([\d.]+):(\d+)")


def start(args: list[str], cwd: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "HURRICANE_CONFIG"}
    return subprocess.Popen(
        [*TWISTD, "-n", "--pidfile=", "hurricane", *args], cwd=cwd, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def wait_for(proc: subprocess.Popen[str], pattern: str, timeout: float = 60) -> list[str]:
    """Read lines until ``pattern`` appears; return every line read."""
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if pattern in line:
            return lines
    raise AssertionError(f"{pattern!r} not seen; output:\n{''.join(lines)}")


class TwistdTests(SynchronousTestCase):
    """The server starts on defaults and on the shipped config, and stops cleanly."""

    def run_server(self, args: list[str], cwd: str,
                   while_running: Callable[[], None] = lambda: None) -> list[str]:
        proc = start(args, cwd)
        self.addCleanup(lambda: proc.poll() is None and proc.kill())
        lines = wait_for(proc, "hurricane started")
        while_running()
        listeners = {(m[1], m[2]) for m in map(LISTENING.search, lines) if m}
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        lines += out.splitlines(keepends=True)
        self.assertEqual(proc.returncode, 0, "".join(lines))
        self.assertIn("hurricane stopped", "".join(lines))
        self.assertNotIn("Traceback", "".join(lines))
        self.assertNotIn("Unhandled error", "".join(lines))
        kinds = {k for k, _ in listeners}
        self.assertTrue({"submission", "bounce"} <= kinds, lines)
        self.assertEqual({host for _, host in listeners}, {"127.0.0.1"})
        return lines

    def test_defaults(self) -> None:
        """With no config: data in ./hurricane-data, VERP key 0600, loopback listeners."""
        cwd = tempfile.mkdtemp()
        self.run_server([], cwd)
        data = Path(cwd, "hurricane-data")
        self.assertTrue((data / "hurricane.db").exists())
        self.assertEqual((data / "verp-keys.json").stat().st_mode & 0o777, 0o600)

    def test_data_private(self) -> None:
        """While it runs: data directory 0700; database, -wal, -shm, keys and JSON log 0600."""
        cwd = tempfile.mkdtemp()
        data = Path(cwd, "hurricane-data")
        Path(cwd, "h.toml").write_text('[server]\njson_log = "hurricane-data/app.json"\n')
        modes: dict[str, int] = {}

        def look() -> None:
            # -wal and -shm exist only while the database is open.
            modes.update({p.name: p.stat().st_mode & 0o777 for p in data.iterdir()})
            modes["."] = data.stat().st_mode & 0o777

        old = os.umask(0o022)  # twistd -n keeps the umask it was started with
        try:
            self.run_server(["--config", "h.toml"], cwd, look)
        finally:
            os.umask(old)
        self.assertEqual(modes.pop("."), 0o700)
        self.assertTrue({"hurricane.db", "hurricane.db-wal", "hurricane.db-shm",
                         "verp-keys.json", "app.json"} <= set(modes), modes)
        self.assertEqual({name: 0o700 if (data / name).is_dir() else 0o600 for name in modes},
                         modes)

    def test_shipped_config(self) -> None:
        """``--config etc/hurricane.toml`` starts too (data under the working directory)."""
        cwd = tempfile.mkdtemp()
        text = (REPO / "etc" / "hurricane.toml").read_text()
        Path(cwd, "hurricane.toml").write_text(
            text.replace('json_log = ""', 'json_log = "log/hurricane.json"'))
        self.run_server(["--config", "hurricane.toml"], cwd)
        self.assertTrue(Path(cwd, "hurricane-data", "hurricane.db").exists())
        # the JSON application log has one structured event per listener
        import json

        events = [json.loads(line) for line in Path(cwd, "log", "hurricane.json").open()]
        listeners = {e.get("kind") for e in events if "listening on" in e.get("log_format", "")}
        self.assertTrue({"submission", "bounce"} <= listeners, listeners)

    def test_bad_config_exits_nonzero(self) -> None:
        """A misspelt key stops twistd with the key's name and no traceback."""
        cwd = tempfile.mkdtemp()
        Path(cwd, "bad.toml").write_text("[bounce]\ndomian = 'x.example'\n")
        proc = start(["--config", "bad.toml"], cwd)
        out, _ = proc.communicate(timeout=60)
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn("[bounce] domian", out)
        self.assertNotIn("Traceback", out)

    def test_unreachable_store_exits_nonzero(self) -> None:
        """A store that cannot be reached names its URL (no password) and exits non-zero."""
        cwd = tempfile.mkdtemp()
        Path(cwd, "pg.toml").write_text(
            '[store]\nurl = "postgresql://hurricane:sekrit@127.0.0.1:1/hurricane"\n')
        proc = start(["--config", "pg.toml"], cwd)
        out, _ = proc.communicate(timeout=60)
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn("127.0.0.1:1/hurricane", out)
        self.assertNotIn("sekrit", out)
        self.assertNotIn("Traceback", out)
