"""The bounce receiver on a StringTransport with the in-memory store."""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from hurricane.config import BounceConfig
from hurricane.inbound.policy import RecipientKind
from hurricane.inbound.server import STORED_LOG_DELAY, BounceFactory
from hurricane.model import ReturnedMessage, ReturnedRecipient
from hurricane.store.memory import MemoryStore
from tests.inbound.test_policy import CODEC, DOMAIN, FORGED, GOOD, TABLE
from tests.smtpd.helpers import codes, connect, disconnect, keywords, replies

DSN = (b"From: MAILER-DAEMON@mx.example.net\r\nSubject: Undelivered Mail\r\n"
       b"Content-Type: text/plain\r\n\r\n550 5.1.1 user unknown\r\n")


class BounceServerTests(SynchronousTestCase):
    def keep(self, bounce_id: int, message: ReturnedMessage) -> None:
        """on_stored: the id, and the message it was stored from."""
        self.stored.append(bounce_id)
        self.messages.append(message)

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.store = MemoryStore()
        self.successResultOf(Deferred.fromCoroutine(self.store.open()))
        self.stored: list[int] = []
        self.messages: list[ReturnedMessage] = []
        self.factory = BounceFactory(BounceConfig(domain=DOMAIN), CODEC, self.store,
                                     "mx.bounces.example.com", self.clock, self.keep)
        self.proto, self.t = connect(self.factory, "198.51.100.7")
        self.addCleanup(lambda: self.assertEqual(self.clock.getDelayedCalls(), []))
        # the last "stored" log line
        self.addCleanup(self.clock.advance, STORED_LOG_DELAY)
        self.addCleanup(lambda: None if self.proto.lost else disconnect(self.proto))
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

    def test_one_copy_per_transaction_then_250(self) -> None:
        """The message is stored once, with every accepted recipient, before the 250."""
        self.proto.dataReceived(
            b"MAIL FROM:<>\r\nRCPT TO:<" + GOOD.encode() + b">\r\nRCPT TO:<postmaster>\r\n"
            b"RCPT TO:<" + FORGED.encode() + b">\r\nDATA\r\n" + DSN + b".\r\n")
        self.assertEqual(codes(replies(self.t)), [b"250 2.1.0", b"250 2.1.5", b"250 2.1.5",
                                                  b"550 5.1.1", b"354 End", b"250 2.0.0"])
        (bounce_id,) = self.stored
        bounce = self.bounce(bounce_id)
        self.assertEqual((bounce.rcpt_to, bounce.delivery_id, bounce.mail_from),
                         (GOOD, 42, ""))
        self.assertEqual(bounce.recipients, (ReturnedRecipient(GOOD, 42),
                                             ReturnedRecipient("postmaster")))
        self.assertTrue(bounce.raw.startswith(b"Received: from mx.example.net ([198.51.100.7])"))
        self.assertTrue(bounce.raw.endswith(DSN))
        self.assertEqual(bounce.received_at, 1_700_000_000)
        # on_stored gets the very message stored: the processor analyzes it
        # from that copy instead of reading it back
        (message,) = self.messages
        self.assertEqual((message.raw, message.envelope()), (bounce.raw, bounce.envelope()))

    def test_messages_stored_together_log_one_line(self) -> None:
        """Messages stored within STORED_LOG_DELAY are logged in one line, each with
        its id, recipients and client."""
        from twisted.logger import capturedLogs

        other, other_t = connect(self.factory, "198.51.100.8")
        self.addCleanup(lambda: None if other.lost else disconnect(other))
        replies(other_t)
        other.dataReceived(b"EHLO mx.example.org\r\n")
        with capturedLogs() as events:
            for proto in (self.proto, other):
                proto.dataReceived(b"MAIL FROM:<>\r\nRCPT TO:<" + GOOD.encode()
                                   + b">\r\nDATA\r\n" + DSN + b".\r\n")
            self.assertEqual(len(self.stored), 2)
            self.assertFalse([e for e in events if "stored" in e.get("log_format", "")])
            self.clock.advance(STORED_LOG_DELAY)
        (line,) = [e for e in events if "stored" in e.get("log_format", "")]
        self.assertEqual(line["count"], 2)
        self.assertEqual([m["bounce_id"] for m in line["messages"]], self.stored)
        self.assertEqual([m["client"] for m in line["messages"]],
                         ["[198.51.100.7] helo=mx.example.net",
                          "[198.51.100.8] helo=mx.example.org"])
        self.assertIn(f"{self.stored[0]} for 1 recipient(s) from [198.51.100.7]",
                      line["summary"])

    def test_twenty_postmasters_one_copy(self) -> None:
        """Twenty RCPTs of postmaster (any spelling) with one message: one recipient, one copy."""
        spellings = [b"<postmaster>", b"<Postmaster@" + DOMAIN.upper().encode() + b">",
                     b"<POSTMASTER@" + DOMAIN.encode() + b">", b"<postmaster@" + DOMAIN.encode()
                     + b">"]
        self.proto.dataReceived(b"MAIL FROM:<>\r\n" + b"".join(
            b"RCPT TO:" + spellings[i % 4] + b"\r\n" for i in range(20))
            + b"DATA\r\n" + DSN + b".\r\n")
        self.assertEqual(codes(replies(self.t)), [b"250 2.1.0"] + [b"250 2.1.5"] * 20
                         + [b"354 End", b"250 2.0.0"])
        (bounce_id,) = self.stored
        self.assertEqual([r.address for r in self.bounce(bounce_id).recipients], ["postmaster"])
        self.assertEqual(self.store.query("SELECT COUNT(*) FROM bounces"), [(1,)])

    def test_same_token_twice(self) -> None:
        """A VERP address named twice (in another case) is one recipient."""
        self.proto.dataReceived(b"MAIL FROM:<>\r\nRCPT TO:<" + GOOD.encode() + b">\r\n"
                                b"RCPT TO:<" + GOOD.upper().encode() + b">\r\nDATA\r\n"
                                + DSN + b".\r\n")
        self.assertEqual(codes(replies(self.t))[-1], b"250 2.0.0")
        (bounce_id,) = self.stored
        self.assertEqual(self.bounce(bounce_id).recipients, (ReturnedRecipient(GOOD, 42),))

    def test_per_message_token_kept(self) -> None:
        """A shared (per-message) token is stored as such, for the correlation to weigh."""
        shared = CODEC.encode(43, per_message=True)
        self.proto.dataReceived(b"MAIL FROM:<>\r\nRCPT TO:<" + shared.encode() + b">\r\n"
                                b"DATA\r\n" + DSN + b".\r\n")
        self.assertEqual(codes(replies(self.t))[-1], b"250 2.0.0")
        (bounce_id,) = self.stored
        self.assertEqual(self.bounce(bounce_id).recipients,
                         (ReturnedRecipient(shared, 43, per_message=True),))

    def test_postmaster_and_feedback_capped(self) -> None:
        """Postmaster and feedback recipients past the cap get 452 4.5.3; VERP ones do not count."""
        factory = BounceFactory(
            BounceConfig(domain=DOMAIN, max_postmaster_recipients=3,
                         feedback_addresses=("abuse", "fbl", "spam", "junk")),
            CODEC, self.store, "mx.bounces.example.com", self.clock, self.keep)
        proto, t = connect(factory, "198.51.100.8")
        self.addCleanup(lambda: None if proto.lost else disconnect(proto))
        replies(t)
        local = [b"postmaster", b"abuse", b"fbl", b"spam", b"junk"]
        proto.dataReceived(b"EHLO x\r\nMAIL FROM:<>\r\n" + b"".join(
            b"RCPT TO:<" + name + b"@" + DOMAIN.encode() + b">\r\n" for name in local)
            + b"RCPT TO:<" + GOOD.encode() + b">\r\nDATA\r\n" + DSN + b".\r\n")
        self.assertEqual(codes(replies(t))[2:], [b"250 2.1.5"] * 3 + [b"452 4.5.3"] * 2
                         + [b"250 2.1.5", b"354 End", b"250 2.0.0"])
        (bounce_id,) = self.stored
        self.assertEqual([r.delivery_id for r in self.bounce(bounce_id).recipients],
                         [None, None, None, 42])

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
        self.proto.dataReceived(b"MAIL FROM:<>\r\n" + b"".join(
            b"RCPT TO:<" + CODEC.encode(i).encode() + b">\r\n" for i in range(21)))
        self.assertEqual(codes(replies(self.t))[-1], b"452 4.5.3")
        self.proto.dataReceived(b"RSET\r\nMAIL FROM:<>\r\n" + b"RCPT TO:<x@example.com>\r\n" * 10)
        lines = codes(replies(self.t))
        self.assertEqual(lines[-2:], [b"550 5.7.1", b"421 4.7.0"])
        self.assertTrue(self.t.disconnecting)
