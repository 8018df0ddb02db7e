"""One SMTP transaction is one stored message and one analysis, from the listener to the events."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from hurricane.bounce.analyze import analyze
from hurricane.config import BounceConfig
from hurricane.inbound.server import STORED_LOG_DELAY, BounceFactory
from hurricane.model import ReturnedMessage, State
from tests.smtpd.helpers import codes, connect, disconnect, replies

from .helpers import BOUNCE_DOMAIN, World, dsn, run


class TransactionTests(SynchronousTestCase):
    """The bounce listener feeding the processor, on a StringTransport and a MemoryStore."""

    def setUp(self) -> None:
        self.w = World()
        self.analyses: list[str | None] = []

        def counting(raw: bytes, rcpt: str | None = None, **kwargs: Any) -> Any:
            self.analyses.append(rcpt)
            return analyze(raw, rcpt, **kwargs)

        self.p = self.w.processor(analyze=counting)
        self.p.startService()
        self.stored: list[int] = []

        def on_stored(bounce_id: int, message: ReturnedMessage) -> None:
            self.stored.append(bounce_id)
            self.p.submit(bounce_id, message)

        factory = BounceFactory(BounceConfig(domain=BOUNCE_DOMAIN), self.w.codec, self.w.store,
                                "mx." + BOUNCE_DOMAIN, self.w.clock, on_stored)
        self.proto, self.t = connect(factory, "198.51.100.7")
        replies(self.t)
        self.proto.dataReceived(b"EHLO mx.example.net\r\n")
        replies(self.t)

    def tearDown(self) -> None:
        if not self.proto.lost:
            disconnect(self.proto)
        self.successResultOf(self.p.stopService())
        self.w.clock.advance(STORED_LOG_DELAY)  # the last "stored" log line
        self.assertEqual(self.w.clock.getDelayedCalls(), [])

    def send(self, rcpts: list[str], data: bytes) -> list[bytes]:
        self.proto.dataReceived(b"MAIL FROM:<>\r\n" + b"".join(
            b"RCPT TO:<" + r.encode() + b">\r\n" for r in rcpts) + b"DATA\r\n"
            + data.replace(b"\r\n.", b"\r\n..") + b".\r\n")
        return codes(replies(self.t))

    def test_twenty_postmasters(self) -> None:
        """20 x RCPT TO postmaster with one message: one stored copy, one analysis."""
        [victim] = self.w.send(["victim@example.net"])
        reply = self.send([f"postmaster@{BOUNCE_DOMAIN}"] * 20, dsn("victim@example.net"))
        self.assertEqual(reply[-1], b"250 2.0.0")
        self.assertEqual(len(self.stored), 1)
        self.assertEqual(self.w.store.query("SELECT COUNT(*) FROM bounces"), [(1,)])
        self.assertEqual(len(self.analyses), 1)
        # and, matched only by the bare address, it changed nothing
        self.assertEqual(self.w.delivery(victim.delivery_id).state, State.delivered)

    def test_two_verp_recipients(self) -> None:
        """One DSN to two verified return paths: one copy, each delivery bounced by its result."""
        a, b = self.w.send(["a@example.net"]) + self.w.send(["b@example.net"])
        reply = self.send([self.w.token(a), self.w.token(b), f"postmaster@{BOUNCE_DOMAIN}"],
                          dsn("a@example.net", extra_recipients=[
                              ("b@example.net", "failed", "5.1.1")]))
        self.assertEqual(reply[-1], b"250 2.0.0")
        self.assertEqual(len(self.analyses), 1)
        [bounce_id] = self.stored
        self.assertEqual([r.delivery_id for r in self.w.bounce(bounce_id).recipients],
                         [a.delivery_id, b.delivery_id, None])
        for row in (a, b):
            self.assertEqual(self.w.delivery(row.delivery_id).state, State.bounced)
            self.assertEqual(self.w.events(row.delivery_id)[-1].correlation, "verp")

    def test_purged_replay(self) -> None:
        """A replay of a message past its retention is refused as purged, nothing re-recorded."""
        [row] = self.w.send(["c@example.net"])
        self.send([self.w.token(row)], dsn("c@example.net"))
        [bounce_id] = self.stored
        events = len(self.w.events(row.delivery_id))
        now = self.w.clock.seconds()
        self.assertEqual(run(self.w.store.purge_bounces(now + 1, now + 1)), 1)
        result = self.successResultOf(self.p.replay(bounce_id))
        self.assertEqual(result.status, "purged")
        self.assertEqual(len(self.w.events(row.delivery_id)), events)
        self.assertEqual(len(self.analyses), 1)
