"""``hurricane analyze`` starts light: no reactor, store, configuration or web modules.

Issue 22 item 7: the analyzer is compared with Sisimai as a whole process,
start-up included, so the command must import only the analyzer. Checked by
the modules a fresh interpreter holds after the command ran (no clock).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

from twisted.trial.unittest import SynchronousTestCase

PROBE = """
import contextlib, io, json, sys
import hurricane.cli
with contextlib.redirect_stdout(io.StringIO()):
    code = hurricane.cli.main(["analyze", "--json", sys.argv[1]])
print(json.dumps([code, sorted(sys.modules)]))
"""

DSN = (b"From: MAILER-DAEMON@mx.example.net\r\nTo: news@example.com\r\n"
       b"Subject: Undelivered Mail Returned to Sender\r\n\r\n"
       b"<erin@example.net>: host mx.example.net[192.0.2.1] said: 550 5.1.1 User unknown "
       b"(in reply to RCPT TO command)\r\n")


class AnalyzeImportsTests(SynchronousTestCase):
    """The modules ``hurricane analyze`` loads."""

    def test_only_the_analyzer(self) -> None:
        """No Twisted, store, configuration, report, inbound or outbound module is imported."""
        with tempfile.NamedTemporaryFile(suffix=".eml", delete=False) as fp:
            fp.write(DSN)
        self.addCleanup(os.unlink, fp.name)
        out = subprocess.run([sys.executable, "-c", PROBE, fp.name], capture_output=True,
                             text=True, timeout=120, check=True).stdout
        code, modules = json.loads(out)
        self.assertEqual(code, 0)
        heavy = [m for m in modules if m.split(".")[0] == "twisted"
                 or m.startswith(("hurricane.store", "hurricane.config", "hurricane.report",
                                  "hurricane.inbound", "hurricane.outbound", "hurricane.app"))]
        self.assertEqual(heavy, [])
        self.assertIn("hurricane.bounce.analyze", modules)


CONSOLE_PROBE = """
import contextlib, io, json, sys
import hurricane.cli
sys.argv = ["hurricane", "analyze", "--json", sys.argv[1]]
with contextlib.redirect_stdout(io.StringIO()) as out:
    code = hurricane.cli.main()
print(json.dumps([code, sorted(sys.modules),
                  sorted({type(sys.modules[m]).__name__ for m in hurricane.cli._ANALYZE_DEFERS}),
                  json.loads(out.getvalue())["category"]]))
"""


class ConsoleStartTests(SynchronousTestCase):
    """``hurricane analyze`` run as a command: typing, inspect, socket... are not imported."""

    def test_deferred(self) -> None:
        with tempfile.NamedTemporaryFile(suffix=".eml", delete=False) as fp:
            fp.write(DSN)
        self.addCleanup(os.unlink, fp.name)
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
        out = subprocess.run([sys.executable, "-c", CONSOLE_PROBE, fp.name], capture_output=True,
                             text=True, timeout=120, check=True, env=env).stdout
        code, modules, deferred_types, category = json.loads(out)
        self.assertEqual((code, category), (0, "bounce"))
        self.assertNotIn("typing", modules)
        self.assertNotIn("ast", modules)
        # read without argparse (gettext, locale), RFC 2047 without email.header, the
        # packaged rules checked without hashlib (OpenSSL): ~45 M instructions of start-up
        for name in ("argparse", "gettext", "email.header", "email", "hashlib"):
            self.assertNotIn(name, modules)
        self.assertEqual(deferred_types, ["_DeferredModule"])

    def test_deferred_module_loads_on_use(self) -> None:
        """A deferred module is the real one as soon as anything reads from it."""
        import json.tool  # noqa: F401  (a module to defer again)

        from hurricane import cli
        saved = sys.modules.pop("json.tool")
        self.addCleanup(sys.modules.__setitem__, "json.tool", saved)
        cli._defer_import("json.tool")
        stub = sys.modules["json.tool"]
        self.assertIsInstance(stub, cli._DeferredModule)
        self.assertTrue(callable(stub.main))     # loads it
        self.assertIsNot(sys.modules["json.tool"], stub)
        self.assertTrue(callable(stub.main))     # and keeps answering

    def test_command_output_and_status(self) -> None:
        """Run as a command (python -m hurricane.cli): every line is out, and the
        exit status is the command's."""
        with tempfile.NamedTemporaryFile(suffix=".eml", delete=False) as fp:
            fp.write(DSN)
        self.addCleanup(os.unlink, fp.name)
        cmd = [sys.executable, "-m", "hurricane.cli", "analyze", "--json"]
        p = subprocess.run(cmd + [fp.name] * 300, capture_output=True, text=True, timeout=120)
        self.assertEqual(p.returncode, 0, p.stderr)
        lines = p.stdout.splitlines()
        self.assertEqual(len(lines), 300)
        self.assertEqual({json.loads(line)["category"] for line in lines}, {"bounce"})
        p = subprocess.run(cmd + [fp.name, fp.name + ".missing"], capture_output=True,
                           text=True, timeout=120)
        self.assertEqual((p.returncode, len(p.stdout.splitlines())), (1, 1))
        self.assertIn("No such file", p.stderr)
