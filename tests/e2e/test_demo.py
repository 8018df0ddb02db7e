"""``hurricane demo`` in a subprocess: it finishes, summarises, and says where its data is."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading

from twisted.internet import threads
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from tests.e2e.helpers import HURRICANE, tmpdir


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class DemoCommandTests(TestCase):
    """The one-command demo, as a user runs it."""

    timeout = 400  # the watchdog (240 s) and the stop (120 s) below fit inside it

    def test_demo_no_wait(self) -> Deferred[None]:
        """The demo sends 200 recipients, drains, prints states, reasons (without
        'delivered') and the side-by-side count that matches the sink's, and says where
        its data is."""
        data = os.path.join(tmpdir(self), "demo")

        def run() -> subprocess.CompletedProcess[str]:
            return subprocess.run([HURRICANE, "demo", "--recipients", "200", "--no-wait",
                                   "--data-dir", data],
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
            self.assertRegex(out, r"synchronous failures \(refused during SMTP\)\s+\d+\s+\d+")
            self.assertRegex(out, r"asynchronous bounces \(DSN / NDR later\)\s+\d+\s+\d+")
            self.assertRegex(out, r"auto-replies \(RFC 3834; stay delivered\)\s+\d+\s+\d+")
            self.assertRegex(out, r"unsubscribes \(one-click POST or mailto\)\s+\d+\s+\d+")
            self.assertIn("Hurricane's count matches the sink's on every line.", out)
            reasons = out.split("  reason", 1)[1].split("\n\n", 1)[0]
            self.assertNotIn("delivered", reasons)
            self.assertRegex(out, r"accepted\s+accept \d+")
            self.assertIn(f"The demo's data is kept in {data}", out)
            self.assertIn(f"hurricane outcomes --config {data}/hurricane.toml", out)
            self.assertTrue(os.path.exists(os.path.join(data, "hurricane.db")))

        return threads.deferToThread(run).addCallback(check)

    def test_ctrl_c_says_where_the_data_is(self) -> Deferred[None]:
        """Ctrl-C while the report is up stops the demo, which names the temporary data
        directory it keeps and the command to read it."""
        def run() -> str:
            # A user's terminal delivers Ctrl-C to a process whose SIGINT is at
            # its default; an ignored SIGINT is inherited across exec, so the
            # child starts with the default whatever this test process has.
            parent_sigint = signal.getsignal(signal.SIGINT)
            proc = subprocess.Popen([HURRICANE, "demo", "--recipients", "50"],
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True, preexec_fn=_default_sigint)
            # A blocking readline cannot check a deadline: a timer kills the demo
            # if it has not reached its report within 240 s (a loaded CI machine),
            # so the test fails with the output so far instead of hanging.
            watchdog = threading.Timer(240, proc.kill)
            watchdog.start()
            try:
                assert proc.stdout is not None
                lines = []
                while True:
                    line = proc.stdout.readline()
                    if not line:
                        break
                    lines.append(line)
                    if "Ctrl-C to stop" in line:
                        proc.send_signal(signal.SIGINT)
                        break
                try:
                    rest, _ = proc.communicate(timeout=120)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    rest, _ = proc.communicate()
                    rest += ("\n[the demo did not stop within 120 s of Ctrl-C; killed; "
                             f"SIGINT in the test process: {parent_sigint!r}]")
                return "".join(lines) + rest
            finally:
                watchdog.cancel()
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()

        def check(out: str) -> None:
            m = re.search(r"Stopped\. The demo's data is kept in (\S+):", out)
            self.assertIsNotNone(m, out)
            assert m is not None
            data = m[1]
            self.addCleanup(__import__("shutil").rmtree, data, True)
            self.assertTrue(os.path.exists(os.path.join(data, "hurricane.db")), out)
            self.assertIn(f"hurricane outcomes --config {data}/hurricane.toml", out)

        return threads.deferToThread(run).addCallback(check)
