"""Bounce bombs sent to a running bounce receiver: stored whole, analysed within budget."""

from __future__ import annotations

import json
import time

from tests.hardening.harness import BOUNCE_DOMAIN, RawSMTP, wait_until
from tests.hardening.live import LiveServerTestCase
from tests.hardening.test_attack_live import ehlo

HEAD = b"From: MAILER-DAEMON@remote.test\r\nSubject: Undelivered Mail Returned to Sender\r\n"


def deep_mime(depth: int) -> bytes:
    """``depth`` nested multiparts."""
    parts = b"".join(b"Content-Type: multipart/mixed; boundary=\"b%d\"\r\n\r\n--b%d\r\n" % (i, i)
                     for i in range(depth))
    return HEAD + b"MIME-Version: 1.0\r\n" + parts + b"\r\nx\r\n"


def many_parts(count: int) -> bytes:
    """One multipart with ``count`` small parts."""
    body = b"".join(b"--p\r\nContent-Type: text/plain\r\n\r\npart %d 550 5.1.1 unknown\r\n" % i
                    for i in range(count))
    return (HEAD + b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"p\"\r\n\r\n"
            + body + b"--p--\r\n")


def long_lines(total: int, width: int = 60_000) -> bytes:
    """A text body of lines of ``width`` octets (just under the 64 KiB DATA line limit)."""
    line = (b"550 5.1.1 <u@x.test> user unknown " * (width // 34 + 1))[:width] + b"\r\n"
    return HEAD + b"Content-Type: text/plain\r\n\r\n" + line * (total // len(line))


def bad_charsets() -> bytes:
    """Unknown, lying and mixed charsets, broken encoded-words and transfer encodings."""
    return (HEAD.replace(b"Subject: Undelivered", b"Subject: =?x-unknown?B?!!!?= =?utf-8?Q?=ZZ?="
                                                    b" Undelivered")
            + b"MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status;"
              b" boundary=\"c\"\r\n\r\n"
              b"--c\r\nContent-Type: text/plain; charset=x-no-such-charset\r\n"
              b"Content-Transfer-Encoding: quoted-printable\r\n\r\n=E9=\xff\xfe 550 =\r\n"
              b"--c\r\nContent-Type: text/plain; charset=utf-7\r\n"
              b"Content-Transfer-Encoding: base64\r\n\r\n!!!not base64!!!\r\n"
              b"--c\r\nContent-Type: message/delivery-status; charset=\"\xc3\x28\"\r\n\r\n"
              b"Final-Recipient: rfc822; \xff\xfe@x.test\r\nStatus: 9.9.9.9\r\nAction: \x00\r\n"
              b"--c--\r\n")


class BounceBombTests(LiveServerTestCase):
    """Each bomb gets 250, is stored byte for byte, and is analysed (or given up) in budget."""

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
            code, lines = c.reply()
            return code
        finally:
            c.close()

    def test_bombs(self) -> None:
        """Deep MIME, 5,000 parts, 4 MiB of long lines, bad charsets: stored, analysed or marked."""
        bombs = {
            "deep": deep_mime(2000),
            "parts": many_parts(5000),
            "lines": long_lines(4 * 1024 * 1024),
            "charsets": bad_charsets(),
        }
        before = {b["bounce_id"] for b in self.reader.bounces()}
        started = time.monotonic()
        for name, data in bombs.items():
            self.assertEqual(self._send(data), 250, name)
        # the listener stays responsive while analysis runs
        c = RawSMTP(self.server.bounce_port)
        try:
            ehlo(c)
            t = time.monotonic()
            self.assertEqual(c.command(b"NOOP")[0], 250)
            self.assertLess(time.monotonic() - t, 5)
        finally:
            c.close()

        def done() -> list[dict] | None:
            rows = [b for b in self.reader.bounces() if b["bounce_id"] not in before]
            if len(rows) == len(bombs) and all(b["status"] != "pending" for b in rows):
                return rows
            return None

        # 2 s CPU each, run two at a time: far less than this
        rows = wait_until(done, 60, "the analysis of every bomb", 0.2)
        self.assertLess(time.monotonic() - started, 60)
        by_name = {}
        for row in rows:
            for name, data in bombs.items():
                body = data if data.endswith(b"\r\n") else data + b"\r\n"
                if row["raw"].endswith(body):
                    by_name[name] = row  # raw kept byte for byte after our Received header
        self.assertEqual(set(by_name), set(bombs))
        analysis = {}
        for name, row in by_name.items():
            [(text,)] = self.reader.query("SELECT analysis FROM bounces WHERE bounce_id = ?",
                                          (row["bounce_id"],))
            analysis[name] = json.loads(text) if text else {}
            self.assertIn(row["status"], ("analyzed", "uncorrelated", "failed"), name)
        self.assertEqual(analysis["deep"].get("error"), "too-deep", analysis["deep"])
        self.assertIn(analysis["parts"].get("error"), ("too-many-parts", None),
                      analysis["parts"].get("error"))
        self.assertTrue(self.server.alive())
