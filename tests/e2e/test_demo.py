"""``hurricane demo --recipients 200 --no-wait`` in a subprocess: it finishes and summarises."""

from __future__ import annotations

import re
import subprocess

from twisted.internet import threads
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from tests.e2e.helpers import HURRICANE


class DemoCommandTests(TestCase):
    """The one-command demo, as a user runs it."""

    timeout = 120

    def test_demo_no_wait(self) -> Deferred[None]:
        """The demo sends 200 recipients, drains, and prints states, reasons and sync/async."""
        def run() -> subprocess.CompletedProcess[str]:
            return subprocess.run([HURRICANE, "demo", "--recipients", "200", "--no-wait"],
                                  capture_output=True, text=True, timeout=110)

        def check(proc: subprocess.CompletedProcess[str]) -> None:
            out = proc.stdout
            self.assertEqual(proc.returncode, 0, out + proc.stderr)
            self.assertIn("Mailing of 200 recipients (200 accepted at submission)", out)
            self.assertNotIn("timed out", out)
            states = {m[0]: int(m[1]) for m in
                      re.findall(r"^  (delivered|failed|bounced|complained|expired|deferred"
                                 r"|queued)\s+(\d+)$", out, re.M)}
            self.assertEqual(sum(states.values()), 200, out)
            self.assertGreater(states["delivered"], 150)
            self.assertGreater(states["failed"], 0)
            self.assertEqual(states.get("deferred", 0) + states.get("queued", 0), 0)
            self.assertIn("synchronous failures", out)
            self.assertIn("asynchronous bounces", out)
            self.assertRegex(out, r"accepted\s+accept \d+")

        return threads.deferToThread(run).addCallback(check)
