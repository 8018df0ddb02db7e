"""Hostile returned mail through a running bounce listener: analyzed, and nothing waits on it."""

from __future__ import annotations

import json

from tests.bounce import hostile
from tests.hardening.harness import BOUNCE_DOMAIN, RawSMTP, wait_until
from tests.hardening.live import LiveServerTestCase
from tests.hardening.test_attack_live import ehlo


def wrapped(data: bytes, width: int = 990, fold: bool = False) -> bytes:
    """``data`` with a line break every ``width`` octets (SMTP's DATA takes lines of at
    most 64 KiB), or a header fold (line break and a blank) if ``fold``."""
    sep = b"\r\n " if fold else b"\r\n"
    return sep.join(data[i:i + width] for i in range(0, len(data), width))


def ordinary_dsn(n: int) -> bytes:
    """A plain DSN for one recipient."""
    return (b"From: MAILER-DAEMON@remote.test\r\nSubject: Undelivered Mail Returned to Sender\r\n"
            b"MIME-Version: 1.0\r\n"
            b"Content-Type: multipart/report; report-type=delivery-status; boundary=\"d\"\r\n\r\n"
            b"--d\r\nContent-Type: text/plain\r\n\r\n<u%d@remote.test>: 550 5.1.1 unknown\r\n"
            b"--d\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; remote.test"
            b"\r\n\r\nFinal-Recipient: rfc822; u%d@remote.test\r\nAction: failed\r\n"
            b"Status: 5.1.1\r\n\r\n--d--\r\n" % (n, n))


class HostileMailLiveTests(LiveServerTestCase):
    """The review's hostile messages go through the listener and the analysis worker."""

    timeout = 180

    def _send(self, data: bytes) -> int:
        c = RawSMTP(self.server.bounce_port, timeout=60)
        try:
            ehlo(c)
            self.assertEqual(c.command(b"MAIL FROM:<>")[0], 250)
            self.assertEqual(c.command(f"RCPT TO:<postmaster@{BOUNCE_DOMAIN}>".encode())[0], 250)
            self.assertEqual(c.command(b"DATA")[0], 354)
            stuffed = b"\r\n".join(b"." + ln if ln.startswith(b".") else ln
                                   for ln in data.split(b"\r\n"))
            c.send(stuffed + (b"" if stuffed.endswith(b"\r\n") else b"\r\n") + b".\r\n")
            return c.reply()[0]
        finally:
            c.close()

    def test_hostile_messages_do_not_stall_the_worker(self) -> None:
        """The review's messages (262 KB of "<" in HTML, then as a message, a token line of
        16,384 "@", 40,000 encoded words, 49 nested multiparts) sent before five ordinary
        DSNs: all are analyzed, none fails, and no analysis worker is killed or dies
        (before the fix the first one killed the only worker four times, ~50 s)."""
        log_start = len(self.server.log_text())
        before = {b["bounce_id"] for b in self.reader.bounces()}
        words = b"=?utf-8?q?caf=C3=A9?= " * 40_000
        messages = [
            hostile.HEAD + b"Content-Type: text/html\r\n\r\n" + wrapped(b"<" * 262_144),
            wrapped(b"<" * 262_144),
            hostile.build("token-at-space", 16_384 + 300),
            hostile.HEAD.replace(b"Subject:", b"X-Subject:") + b"Subject: "
            + wrapped(words, 66 * 22, fold=True) + b"\r\n\r\n" + hostile.NOTE,
            hostile.build("nested-multipart", 4_900_000),
        ]
        messages += [ordinary_dsn(n) for n in range(5)]
        for data in messages:
            self.assertEqual(self._send(data), 250)

        def done() -> list[dict] | None:
            rows = [b for b in self.reader.bounces() if b["bounce_id"] not in before]
            if len(rows) == len(messages) and all(b["status"] != "pending" for b in rows):
                return rows
            return None

        rows = wait_until(done, 120, "the analysis of every message", 0.2)
        log = self.server.log_text()[log_start:]
        self.assertNotIn("did not finish within", log)
        self.assertNotIn("analysis worker died", log)
        self.assertNotIn("killing its workers", log)
        for row in rows:
            self.assertNotEqual(row["status"], "failed", row["bounce_id"])
            [(text,)] = self.reader.query("SELECT analysis FROM bounces WHERE bounce_id = ?",
                                          (row["bounce_id"],))
            analysis = json.loads(text) if text else {}
            self.assertIn(analysis.get("error"), (None, "over-budget"), analysis.get("error"))
        self.assertTrue(self.server.alive())
