"""The bounce receiver on a StringTransport with the in-memory store."""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from hurricane.config import BounceConfig
from hurricane.inbound.policy import RecipientKind
from hurricane.inbound.server import BounceFactory
from hurricane.store.memory import MemoryStore
from tests.inbound_server.test_policy import CODEC, DOMAIN, FORGED, GOOD, TABLE
from tests.smtpd.helpers import codes, connect, disconnect, keywords, replies

DSN = (b"From: MAILER-DAEMON@mx.example.net\r\nSubject: Undelivered Mail\r\n"
       b"Content-Type: text/plain\r\n\r\n550 5.1.1 user unknown\r\n")


class BounceServerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.store = MemoryStore()
        self.successResultOf(Deferred.fromCoroutine(self.store.open()))
        self.stored: list[int] = []
        self.factory = BounceFactory(BounceConfig(domain=DOMAIN), CODEC, self.store,
                                     "mx.bounces.example.com", self.clock, self.stored.append)
        self.proto, self.t = connect(self.factory, "198.51.100.7")
        self.addCleanup(lambda: self.assertEqual(self.clock.getDelayedCalls(), []))
        self.addCleanup(lambda: None if self.proto._lost else disconnect(self.proto))
        replies(self.t)
        self.proto.dataReceived(b"EHLO mx.example.net\r\n")
        self.ehlo = keywords(replies(self.t))

    def bounce(self, bounce_id: int):
        return self.successResultOf(Deferred.fromCoroutine(self.store.load_bounce(bounce_id)))

    def test_limits_and_no_auth(self) -> None:
        """The EHLO reply advertises 5 MiB, PIPELINING, no AUTH; AUTH is refused."""
        self.assertIn(b"SIZE 5242880", self.ehlo)
        self.assertIn(b"PIPELINING", self.ehlo)
        self.assertFalse(any(k.startswith(b"AUTH") for k in self.ehlo))
        self.proto.dataReceived(b"AUTH PLAIN AGFAYg==\r\n")
        self.assertEqual(codes(replies(self.t)), [b"503 5.5.1"])

    def test_rcpt_table_through_the_protocol(self) -> None:
        """Each RCPT form of the policy table gets the same verdict on the wire."""
        self.proto.dataReceived(b"MAIL FROM:<>\r\n")
        self.assertEqual(codes(replies(self.t)), [b"250 2.1.0"])
        for text, expected in TABLE:
            self.proto.errors = 0
            self.proto.dataReceived(b"RCPT TO:" + text.encode() + b"\r\n")
            (reply,) = codes(replies(self.t))
            if isinstance(expected, RecipientKind):
                self.assertEqual(reply, b"250 2.1.5", text)
            elif isinstance(expected, int):
                self.assertEqual(reply[:3], str(expected).encode(), text)
            else:
                self.assertEqual(reply, f"{expected.code} {expected.status}".encode(), text)

    def test_one_row_per_recipient_then_250(self) -> None:
        """Each accepted recipient is stored with its delivery id before the 250; then on_stored."""
        self.proto.dataReceived(
            b"MAIL FROM:<>\r\nRCPT TO:<" + GOOD.encode() + b">\r\nRCPT TO:<postmaster>\r\n"
            b"RCPT TO:<" + FORGED.encode() + b">\r\nDATA\r\n" + DSN + b".\r\n")
        self.assertEqual(codes(replies(self.t)), [b"250 2.1.0", b"250 2.1.5", b"250 2.1.5",
                                                  b"550 5.1.1", b"354 End", b"250 2.0.0"])
        self.assertEqual(len(self.stored), 2)
        first, second = (self.bounce(i) for i in self.stored)
        self.assertEqual((first.rcpt_to, first.delivery_id, first.mail_from),
                         (GOOD, 42, ""))
        self.assertEqual((second.rcpt_to, second.delivery_id), ("postmaster", None))
        self.assertTrue(first.raw.startswith(b"Received: from mx.example.net ([198.51.100.7])"))
        self.assertTrue(first.raw.endswith(DSN))
        self.assertEqual(first.received_at, 1_700_000_000)

    def test_store_failure_answers_451(self) -> None:
        """StoreUnavailable answers 451 4.3.0, never 550, and nothing reaches on_stored."""
        self.store.set_available(False)
        self.proto.dataReceived(b"MAIL FROM:<>\r\nRCPT TO:<" + GOOD.encode() + b">\r\nDATA\r\n"
                                + DSN + b".\r\n")
        self.assertEqual(codes(replies(self.t))[-1], b"451 4.3.0")
        self.assertEqual(self.stored, [])
        self.store.set_available(True)
        self.proto.dataReceived(b"MAIL FROM:<>\r\nRCPT TO:<" + GOOD.encode() + b">\r\nDATA\r\n"
                                + DSN + b".\r\n")
        self.assertEqual(codes(replies(self.t))[-1], b"250 2.0.0")
        self.assertEqual(len(self.stored), 1)

    def test_store_failure_with_several_recipients_answers_451(self) -> None:
        """With several rows to write, a store outage still answers 451 4.3.0."""
        self.store.set_available(False)
        self.proto.dataReceived(b"MAIL FROM:<>\r\nRCPT TO:<" + GOOD.encode() + b">\r\n"
                                b"RCPT TO:<postmaster>\r\nDATA\r\n" + DSN + b".\r\n")
        self.assertEqual(codes(replies(self.t))[-1], b"451 4.3.0")
        self.assertEqual(self.stored, [])

    def test_bare_lf_normalised(self) -> None:
        """The bounce receiver keeps a returned message with bare LFs, normalised to CRLF."""
        self.proto.dataReceived(b"MAIL FROM:<>\r\nRCPT TO:<postmaster>\r\nDATA\r\n"
                                b"Subject: old mta\n\nbody\n.\nstill body\r\n.\r\n")
        self.assertEqual(codes(replies(self.t))[-1], b"250 2.0.0")
        raw = self.bounce(self.stored[0]).raw
        self.assertTrue(raw.endswith(b"Subject: old mta\r\n\r\nbody\r\n.\r\nstill body\r\n"))

    def test_recipient_and_error_limits(self) -> None:
        """21st recipient gets 452 4.5.3; ten refusals get 421 4.7.0 and a close."""
        self.proto.dataReceived(b"MAIL FROM:<>\r\n" + b"RCPT TO:<postmaster>\r\n" * 21)
        self.assertEqual(codes(replies(self.t))[-1], b"452 4.5.3")
        self.proto.dataReceived(b"RSET\r\nMAIL FROM:<>\r\n" + b"RCPT TO:<x@example.com>\r\n" * 10)
        lines = codes(replies(self.t))
        self.assertEqual(lines[-2:], [b"550 5.7.1", b"421 4.7.0"])
        self.assertTrue(self.t.disconnecting)
