"""The Received header the listeners prepend (RFC 5321 4.4)."""

from __future__ import annotations

import email.utils
import locale

from twisted.trial.unittest import SynchronousTestCase

from hurricane.smtpd.address import Kind, Path, parse_path
from hurricane.smtpd.session import Envelope, Recipient, Session, received_header


def _path(text: str, kind: Kind) -> Path:
    return parse_path(text, kind)[0]


def _envelope(at: float) -> Envelope:
    return Envelope(sender=_path("<a@example.com>", "sender"),
                    recipients=(Recipient(_path("<b@example.net>", "recipient")),),
                    session=Session(peer="192.0.2.7", helo="client.example", esmtp=True),
                    received_at=at)


class ReceivedHeaderTests(SynchronousTestCase):
    def test_date_is_rfc5322_in_english_whatever_the_locale(self) -> None:
        """The date line names the time the final dot arrived, in UTC with English day and
        month names (time.strftime's %a/%b follow LC_TIME; RFC 5322 3.3 wants English)."""
        saved = locale.setlocale(locale.LC_TIME)
        self.addCleanup(locale.setlocale, locale.LC_TIME, saved)
        for name in ("de_DE.UTF-8", "fr_FR.UTF-8", "C.UTF-8"):
            try:
                locale.setlocale(locale.LC_TIME, name)
                break
            except locale.Error:
                continue
        header = received_header(_envelope(1_780_000_000.0), "mx.example.org", 0xABC).decode()
        self.assertTrue(header.startswith(
            "Received: from client.example ([192.0.2.7])\r\n"
            "\tby mx.example.org (Hurricane) with ESMTP id 000000000abc\r\n"
            "\tfor <b@example.net>;\r\n\t"), header)
        date = header.rsplit("\t", 1)[1].strip()
        self.assertEqual(date, "Thu, 28 May 2026 20:26:40 +0000")
        self.assertEqual(email.utils.parsedate_to_datetime(date).timestamp(), 1_780_000_000.0)
