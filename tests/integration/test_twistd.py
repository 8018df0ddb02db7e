"""``twistd -n hurricane`` as an operator runs it: start, log listeners, stop on SIGTERM."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from tests.process import listeners, read_log, start_twistd, stop_process, wait_started

REPO = Path(__file__).resolve().parents[2]


def run_to_exit(args: list[str], cwd: str, timeout: float = 60) -> tuple[int, str]:
    """Run ``twistd -n hurricane ARGS`` expecting it to stop by itself: status, output."""
    log_path = os.path.join(cwd, "twistd.log")
    proc = start_twistd(args, cwd, log_path)
    try:
        proc.wait(timeout)
    finally:
        stop_process(proc, 5)
    return proc.returncode, read_log(log_path)


class TwistdTests(SynchronousTestCase):
    """The server starts on defaults and on the shipped config, and stops cleanly."""

    def run_server(self, args: list[str], cwd: str,
                   while_running: Callable[[], None] = lambda: None) -> list[str]:
        log_path = os.path.join(cwd, "twistd.log")
        proc = start_twistd(args, cwd, log_path, self)
        text = wait_started(proc, log_path)
        while_running()
        found = {(kind, host) for kind, host, _ in listeners(text)}
        status = stop_process(proc, 60)
        lines = read_log(log_path).splitlines(keepends=True)
        self.assertEqual(status, 0, "".join(lines))
        self.assertIn("hurricane stopped", "".join(lines))
        self.assertNotIn("Traceback", "".join(lines))
        self.assertNotIn("Unhandled error", "".join(lines))
        kinds = {k for k, _ in found}
        self.assertTrue({"submission", "bounce"} <= kinds, lines)
        self.assertEqual({host for _, host in found}, {"127.0.0.1"})
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
        status, out = run_to_exit(["--config", "bad.toml"], cwd)
        self.assertNotEqual(status, 0)
        self.assertIn("[bounce] domian", out)
        self.assertNotIn("Traceback", out)

    def test_unreachable_store_exits_nonzero(self) -> None:
        """A store that cannot be reached names its URL (no password) and exits non-zero."""
        cwd = tempfile.mkdtemp()
        Path(cwd, "pg.toml").write_text(
            '[store]\nurl = "postgresql://hurricane:sekrit@127.0.0.1:1/hurricane"\n')
        status, out = run_to_exit(["--config", "pg.toml"], cwd)
        self.assertNotEqual(status, 0)
        self.assertIn("127.0.0.1:1/hurricane", out)
        self.assertNotIn("sekrit", out)
        self.assertNotIn("Traceback", out)
