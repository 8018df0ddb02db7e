"""The README's "Your first message" section, run as a new user would run it.

The section's blocks carry HTML comments saying what each one is (invisible
on GitHub): ``file NAME`` (write it), ``server PORT...`` (a command that
runs until stopped: start it, wait for its ports), ``run`` (shell commands)
and ``python`` (a script). The default ports the README names (2587, 2525,
8025, 2526) are replaced everywhere by free ones, so that the test runs
next to anything else on the machine; the rest is executed as written,
with this virtualenv's ``hurricane`` and ``twistd`` first on PATH.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from twisted.internet import threads
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from tests.e2e.helpers import tmpdir
from tests.peers import missing_peer
from tests.process import free_port, wait_port

README = Path(__file__).resolve().parents[2] / "README.md"
README_PORTS = ("2587", "2525", "8025", "2526")
_BLOCK = re.compile(r"<!-- first-message: (?P<kind>\w+)(?P<args>[^>]*?) -->\n"
                    r"```\w*\n(?P<body>.*?)^```", re.M | re.S)


def first_message_section() -> str:
    """The text of the section, up to the next section of the same level."""
    text = README.read_text()
    start = text.index("\n## Your first message\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end >= 0 else len(text)]


def wait_server(port: int, proc: subprocess.Popen[str], timeout: float = 60) -> None:
    """Wait until ``port`` accepts connections; fail if ``proc`` exits first."""
    def alive() -> None:
        if proc.poll() is not None:
            output = proc.stdout.read() if proc.stdout is not None else ""
            raise AssertionError(f"exited with {proc.returncode}: {output}")

    wait_port(port, timeout, f"a listener on {port}", alive)


class ReadmeFirstMessageTests(TestCase):
    """Every block of the section works, and the outcomes and report say what it says."""

    timeout = 180

    def test_first_message(self) -> Deferred[None]:
        """Write the file, start the sink and Hurricane, send with swaks and smtplib, read
        the outcomes until final, and open the report's URLs."""
        if shutil.which("swaks") is None:
            missing_peer("swaks is not installed (apt-get install swaks)")
        cwd = tmpdir(self)
        return threads.deferToThread(self.run_section, cwd)

    def run_section(self, cwd: str) -> None:
        section = first_message_section()
        ports = {p: str(free_port()) for p in README_PORTS}

        def local(text: str) -> str:
            for old, new in ports.items():
                text = re.sub(rf"\b{old}\b", new, text)
            return text

        env = {k: v for k, v in os.environ.items() if k != "HURRICANE_CONFIG"}
        env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
        blocks = list(_BLOCK.finditer(section))
        kinds = [b["kind"] for b in blocks]
        self.assertEqual(kinds.count("server"), 2, kinds)
        self.assertIn("python", kinds)
        servers: list[subprocess.Popen[str]] = []
        outputs: list[str] = []
        try:
            for block in blocks:
                kind, args, body = block["kind"], block["args"].split(), local(block["body"])
                if kind == "file":
                    Path(cwd, args[0]).write_text(body)
                elif kind == "server":
                    proc = subprocess.Popen(["bash", "-c", "exec " + body.strip()], cwd=cwd,
                                            env=env, stdout=subprocess.PIPE,
                                            stderr=subprocess.STDOUT, text=True)
                    servers.append(proc)
                    for port in args:
                        wait_server(int(ports[port]), proc)
                elif kind in ("run", "python"):
                    cmd = ["bash", "-euo", "pipefail", "-c", body] if kind == "run" else \
                        [sys.executable, "-c", body]
                    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                                       timeout=60)
                    self.assertEqual(r.returncode, 0, (body, r.stdout, r.stderr))
                    outputs.append(r.stdout)
                else:
                    raise AssertionError(f"unknown block kind {kind!r}")
            records = self.final_outcomes(section, local, cwd, env)
            self.check_report(section, local)
        finally:
            for proc in servers:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    try:
                        proc.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
                if proc.stdout is not None:
                    proc.stdout.close()
        by_recipient = {r["recipient"]: r for r in records}
        self.assertEqual(
            {k: (v["state"], v["reason"], v["mailing_id"], v["message_id"])
             for k, v in by_recipient.items()},
            {"alice@example.test": ("delivered", "delivered", "welcome-1", "alice-1"),
             "unknown-bob@example.test": ("failed", "userunknown", "welcome-1", "bob-1"),
             "late-carol@example.test": ("bounced", "userunknown", "welcome-1", "carol-1")})
        self.assertIn("OK", outputs[0])  # check-config

    def final_outcomes(self, section: str, local: Any, cwd: str,
                       env: dict[str, str]) -> list[dict[str, Any]]:
        """Run the section's outcomes command until every recipient is final (bounded)."""
        (command,) = [line for block in _BLOCK.finditer(section) if block["kind"] == "run"
                      for line in block["body"].splitlines()
                      if line.startswith("hurricane outcomes")]
        deadline = time.monotonic() + 60
        while True:
            r = subprocess.run(["bash", "-c", local(command)], cwd=cwd, env=env,
                               capture_output=True, text=True, timeout=60)
            self.assertEqual(r.returncode, 0, r.stderr)
            records = [json.loads(line) for line in r.stdout.splitlines()]
            if len(records) == 3 and all(x["state"] not in ("queued", "deferred")
                                         for x in records) \
                    and any(x["state"] == "bounced" for x in records):
                return records
            if time.monotonic() > deadline:
                raise AssertionError(f"outcomes not final after 60 s: {r.stdout}")
            time.sleep(0.5)

    def check_report(self, section: str, local: Any) -> None:
        """Every report URL of the section answers 200; the mailing page lists the three."""
        urls = sorted(set(re.findall(r"http://127\.0\.0\.1:8025/(?:[\w/.-]*[\w/])?", section)))
        self.assertGreaterEqual(len(urls), 2, urls)
        for url in urls:
            with urllib.request.urlopen(local(url), timeout=30) as response:
                self.assertEqual(response.status, 200, url)
                page = response.read().decode("utf-8", "replace")
            if "/mailing/" in url:
                for rcpt in ("alice@example.test", "unknown-bob@example.test",
                             "late-carol@example.test"):
                    self.assertIn(rcpt, page)
