"""Mail to u-TOKEN@BOUNCE-DOMAIN: a verified token unsubscribes; a forged one is refused at
RCPT without touching the store."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from hurricane.config import BounceConfig
from hurricane.inbound.server import BounceFactory
from hurricane.model import NewMessage, NewRecipient
from hurricane.store.memory import MemoryStore
from hurricane.unsubscribe import UnsubscribeCodec, Unsubscriber
from hurricane.verp import VerpKey
from tests.inbound.test_policy import CODEC, DOMAIN, GOOD
from tests.smtpd.helpers import codes, connect, disconnect, replies

T0 = 1_700_000_000.0
UNSUB = UnsubscribeCodec(DOMAIN, [VerpKey(0, b"u" * 32, 0.0)], today=int(T0 // 86400))
DSN = b"Subject: Undelivered\r\n\r\n550 5.1.1 user unknown\r\n"


class _Watch:
    """A store wrapper that records every call made to it."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        self.calls.append(name)
        return getattr(self.store, name)


class MailtoTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(T0)
        self.memory = MemoryStore()
        self.successResultOf(Deferred.fromCoroutine(self.memory.open()))
        result = self.successResultOf(Deferred.fromCoroutine(self.memory.enqueue(
            NewMessage("app@shop.test", (NewRecipient("r@x.test"),), b"Subject: x\r\n\r\n",
                       stream="news"), T0)))
        self.delivery_id = result.recipients[0].delivery_id
        self.store = _Watch(self.memory)
        self.stored: list[int] = []
        self.factory = BounceFactory(BounceConfig(domain=DOMAIN), CODEC, self.store,  # type: ignore[arg-type]
                                     "mx.bounces.example.com", self.clock,
                                     lambda bounce_id, message: self.stored.append(bounce_id))
        self.factory.unsubscriber = Unsubscriber(UNSUB, self.store, self.clock)  # type: ignore[arg-type]
        self.proto, self.t = connect(self.factory, "198.51.100.7")
        self.addCleanup(lambda: None if self.proto.lost else disconnect(self.proto))
        replies(self.t)
        self.proto.dataReceived(b"EHLO mx.example.net\r\n")
        replies(self.t)

    def entries(self) -> list[tuple[str, str]]:
        found = self.successResultOf(Deferred.fromCoroutine(
            self.memory.suppression_entries("r@x.test")))
        return [(e.scope, e.reason) for e in found]

    def test_verified_token_unsubscribes_without_storing_a_bounce(self) -> None:
        token = UNSUB.encode(self.delivery_id, "news")
        self.proto.dataReceived(b"MAIL FROM:<r@x.test>\r\nRCPT TO:<u-" + token.upper().encode()
                                + b"@" + DOMAIN.encode() + b">\r\nDATA\r\n"
                                b"Subject: unsubscribe\r\n\r\n.\r\n")
        self.assertEqual(codes(replies(self.t)),
                         [b"250 2.1.0", b"250 2.1.5", b"354 End", b"250 2.0.0"])
        self.assertEqual(self.entries(), [("stream:news", "unsubscribed")])
        self.assertEqual(self.stored, [])

    def test_forged_token_refused_at_rcpt_store_untouched(self) -> None:
        token = UNSUB.encode(self.delivery_id, "news")
        forged = token[:4] + ("a" if token[4] != "a" else "b") + token[5:]
        self.proto.dataReceived(b"MAIL FROM:<r@x.test>\r\nRCPT TO:<u-" + forged.encode()
                                + b"@" + DOMAIN.encode() + b">\r\n")
        self.assertEqual(codes(replies(self.t)), [b"250 2.1.0", b"550 5.1.1"])
        self.assertEqual(self.store.calls, [])
        self.assertEqual(self.entries(), [])

    def test_with_a_returned_message_both_happen(self) -> None:
        """A transaction to a VERP address and an unsubscribe address does both."""
        token = UNSUB.encode(self.delivery_id, "news")
        self.proto.dataReceived(b"MAIL FROM:<>\r\nRCPT TO:<" + GOOD.encode() + b">\r\n"
                                b"RCPT TO:<u-" + token.encode() + b"@" + DOMAIN.encode()
                                + b">\r\nDATA\r\n" + DSN + b".\r\n")
        self.assertEqual(codes(replies(self.t)), [b"250 2.1.0", b"250 2.1.5", b"250 2.1.5",
                                                  b"354 End", b"250 2.0.0"])
        self.assertEqual(len(self.stored), 1)
        self.assertEqual(self.entries(), [("stream:news", "unsubscribed")])
