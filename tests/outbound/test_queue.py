"""OutboundService: claiming, sending, recording, limits and shutdown."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import dkim
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock, deferLater
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from hurricane.bounce.classify import ReplyClassifier
from hurricane.bounce.model import ReplyClass
from hurricane.config import DeliveryConfig, DkimKeyConfig, TlsPolicyConfig
from hurricane.model import AttemptResult, Delivery, NewMessage, NewRecipient, State
from hurricane.outbound import bodies, results
from hurricane.outbound.bodies import BodyCacheSettings
from hurricane.outbound.dialer import Dialer
from hurricane.outbound.dkim import DkimSigner
from hurricane.outbound.interface import ConnectionFailed, OutboundMessage, Reply
from hurricane.outbound.mx import MXResolver
from hurricane.outbound.prepare import header_value
from hurricane.outbound.queue import OutboundService, OutboundSettings
from hurricane.store.interface import StoreUnavailable
from hurricane.store.memory import MemoryStore
from hurricane.verp import VerpCodec, VerpKey, VerpToken

from .fakes import (
    FakeClassifier,
    FakeConnection,
    FakeConnector,
    FakeResolver,
    accept_all,
    reply_all,
)
from .test_dkim import dnsfunc_for, rsa_dns_record, rsa_key_pem

START = 1_700_000_000.0
BODY = (
    b"From: Shop <news@shop.example>\n"
    b"To: someone@example.com\n"
    b"Subject: Spring sale\n"
    b"Message-ID: <m1@shop.example>\n"
    b"Date: Tue, 14 Nov 2023 22:13:20 +0000\n"
    b"\n"
    b"Hello.\n"
)


class CountingStore(MemoryStore):
    """A MemoryStore that counts calls and can fail record_attempts on demand."""

    def __init__(self) -> None:
        super().__init__()
        self.claims: list[tuple[int, tuple[str, ...]]] = []
        self.recorded: list[list[AttemptResult]] = []
        self.record_failures = 0

    async def claim_due(self, now: float, owner: str, lease_seconds: float, limit: int,
                        exclude_domains: Sequence[str] = ()) -> list[Delivery]:
        self.claims.append((limit, tuple(exclude_domains)))
        return await super().claim_due(now, owner, lease_seconds, limit, exclude_domains)

    async def record_attempts(self, results: Sequence[AttemptResult]) -> list[int]:
        if self.record_failures:
            self.record_failures -= 1
            raise StoreUnavailable("record_attempts failed (test)")
        self.recorded.append(list(results))
        return await super().record_attempts(results)


class SchedulerTestCase(SynchronousTestCase):
    """Builds an OutboundService over MemoryStore, a fake DNS and a fake connector."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.store = CountingStore()
        self.successResultOf(Deferred.fromCoroutine(self.store.open()))
        self.dns = FakeResolver()
        self.dns.add_mx("example.com", (10, "mx1.example.com"), (20, "mx2.example.com"))
        self.dns.add_host("mx1.example.com", "192.0.2.1")
        self.dns.add_host("mx2.example.com", "192.0.2.2")
        self.connector = FakeConnector(self.clock)
        self.codec = VerpCodec("bounce.example.net", [VerpKey(0, b"k" * 32, 0.0)],
                               today=lambda: int(self.clock.seconds() // 86400))
        self.classifier: Any = FakeClassifier()
        self.service: OutboundService | None = None

    def tearDown(self) -> None:
        if self.service is not None and self.service.running:
            self.successResultOf(self.service.stopService())
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def start(self, dkim_signer: DkimSigner | None = None, routes: dict[str, str] | None = None,
              wake_delay: float = 0.0, record_delay: float = 0.0,
              body_cache: BodyCacheSettings | None = None,
              **delivery: Any) -> OutboundService:
        settings: dict[str, Any] = {"first_retry": 300, "max_retry_interval": 3600,
                                    "retry_jitter": 0.0, "poll_interval": 5.0}
        settings.update(delivery)
        self.config = DeliveryConfig(**settings)
        self.service = self.build(OutboundSettings(
            node_id="node-1", delivery=self.config, shutdown_grace=10.0, wake_delay=wake_delay,
            record_delay=record_delay, bodies=body_cache or BodyCacheSettings(),
        ), routes, dkim_signer)
        self.service.startService()
        return self.service

    def build(self, settings: OutboundSettings, routes: dict[str, str] | None = None,
              dkim_signer: DkimSigner | None = None) -> OutboundService:
        """An OutboundService over the fakes, with ``settings``."""
        resolver = MXResolver(self.dns, self.clock, routes or {}, 3600, rng=random.Random(0))
        dialer = Dialer(resolver, self.connector, "out.shop.example",
                        settings.delivery.tls_policy)
        return OutboundService(self.store, dialer, self.codec, self.classifier, settings,
                               self.clock, dkim=dkim_signer, rng=random.Random(0))

    def enqueue(self, *recipients: str, mailing_id: str | None = "spring-sale",
                message_id: str | None = "AB12", at: float | None = None,
                body: bytes = BODY, wake: bool = True, hand: bool = False) -> list[int]:
        message = NewMessage(
            sender="news@shop.example",
            recipients=tuple(NewRecipient(r) for r in recipients),
            body=body, mailing_id=mailing_id, message_id=message_id,
        )
        result = self.successResultOf(Deferred.fromCoroutine(
            self.store.enqueue(message, self.clock.seconds() if at is None else at)))
        if self.service is not None and hand:
            self.service.wake(result.message_pk, body)  # as submission does
        elif self.service is not None and wake:
            self.service.wake()  # as the API and the manhole do
        return [r.delivery_id for r in result.recipients]

    def turn(self, seconds: float = 0.0) -> None:
        """Let timers due within ``seconds`` fire."""
        self.clock.advance(seconds)

    def delivery(self, delivery_id: int) -> Delivery:
        d = self.successResultOf(Deferred.fromCoroutine(self.store.get_delivery(delivery_id)))
        assert d is not None
        return d

    def results(self) -> dict[int, AttemptResult]:
        return {r.delivery_id: r for batch in self.store.recorded for r in batch}


class OutcomeTests(SchedulerTestCase):
    """What is recorded for each kind of answer."""

    def test_delivered(self) -> None:
        """A 250 after the dot is recorded delivered with code, text, host, ip, tls, duration."""
        self.connector.send_delay = 2.0
        self.start()
        [did] = self.enqueue("alice@example.com")
        self.turn()
        self.turn(2.0)
        result = self.results()[did]
        self.assertEqual(result.state, State.delivered)
        self.assertEqual((result.code, result.status), (250, "2.0.0"))
        self.assertEqual(result.text, "2.0.0 Ok: queued as X")
        self.assertEqual((result.remote_host, result.remote_ip, result.tls),
                         ("mx1.example.com", "192.0.2.1", "TLSv1.3"))
        self.assertEqual(result.duration, 2.0)
        self.assertEqual(result.owner, "node-1")
        self.assertEqual(self.delivery(did).state, State.delivered)

    def test_failed_with_real_classifier(self) -> None:
        """A 550 5.1.1 is failed userunknown, hard, and the recipient is suppressed."""
        self.classifier = ReplyClassifier.load()
        self.connector.responder = reply_all(
            550, "5.1.1 <bob@example.com>: Recipient address rejected: User unknown", "5.1.1")
        self.start()
        [did] = self.enqueue("bob@example.com")
        self.turn()
        result = self.results()[did]
        self.assertEqual(result.state, State.failed)
        self.assertEqual((result.code, result.status, result.reason, result.hard),
                         (550, "5.1.1", "userunknown", True))
        self.assertTrue(result.suppress)
        self.assertEqual(result.rule, "userunknown.rcpt")
        self.assertIsNotNone(self.successResultOf(Deferred.fromCoroutine(
            self.store.get_suppression("bob@example.com"))))

    def test_refusal_at_rcpt_without_status_code(self) -> None:
        """A bare "User unknown" refusal at RCPT is userunknown: the phase tells the classifier."""
        self.classifier = ReplyClassifier.load()
        self.connector.responder = reply_all(
            550, "<erin@example.com>: Recipient address rejected: User unknown", None, "rcpt")
        self.start()
        [did] = self.enqueue("erin@example.com")
        self.turn()
        result = self.results()[did]
        self.assertEqual((result.state, result.reason, result.hard, result.suppress),
                         (State.failed, "userunknown", True, True))
        # the recorded text is the server's, without the context we added
        self.assertEqual(result.text, "<erin@example.com>: Recipient address rejected: "
                         "User unknown")

    def test_policy_failure_not_suppressed(self) -> None:
        """A 5xx for spam is failed but never suppresses the recipient."""
        self.classifier = ReplyClassifier.load()
        self.connector.responder = reply_all(550, "5.7.1 Message rejected as spam", "5.7.1",
                                             "dot")
        self.start()
        [did] = self.enqueue("carol@example.com")
        self.turn()
        result = self.results()[did]
        self.assertEqual((result.state, result.reason, result.hard, result.suppress),
                         (State.failed, "spamdetected", False, False))

    def test_deferred(self) -> None:
        """A 4xx is deferred with next_attempt_at = now + first_retry (no jitter here)."""
        self.connector.responder = reply_all(451, "4.7.1 Greylisted", "4.7.1")
        self.start()
        [did] = self.enqueue("dave@example.com")
        self.turn()
        result = self.results()[did]
        self.assertEqual((result.state, result.code, result.status), (State.deferred, 451,
                                                                      "4.7.1"))
        self.assertEqual(result.next_attempt_at, START + 300)
        row = self.delivery(did)
        self.assertEqual((row.state, row.attempts, row.next_attempt_at),
                         (State.deferred, 1, START + 300))

    def test_second_deferral_doubles(self) -> None:
        """The second deferral waits twice as long as the first."""
        self.connector.responder = reply_all(451, "4.7.1 Greylisted", "4.7.1")
        self.start()
        [did] = self.enqueue("dave@example.com")
        self.turn()
        self.turn(300)
        self.assertEqual(self.delivery(did).attempts, 2)
        self.assertEqual(self.delivery(did).next_attempt_at, START + 300 + 600)

    def test_5xx_override_to_temporary(self) -> None:
        """A 5xx whose rule says temporary (rate limiting) is deferred, not failed."""
        self.classifier = FakeClassifier({"rate limited": ReplyClass(
            "speeding", False, "5.7.1", False, "speeding.text", permanent=False,
            suppress=False)})
        self.connector.responder = reply_all(550, "5.7.1 rate limited, slow down", "5.7.1")
        self.start()
        [did] = self.enqueue("erin@example.com")
        self.turn()
        result = self.results()[did]
        self.assertEqual((result.state, result.reason, result.rule, result.code),
                         (State.deferred, "speeding", "speeding.text", 550))
        self.assertFalse(result.suppress)

    def test_4xx_override_to_permanent(self) -> None:
        """A 4xx whose rule says permanent (mailbox disabled) is failed."""
        self.classifier = FakeClassifier({"disabled": ReplyClass(
            "suspend", False, "4.2.1", False, "suspend.text", permanent=True, suppress=False)})
        self.connector.responder = reply_all(452, "4.2.1 mailbox disabled", "4.2.1")
        self.start()
        [did] = self.enqueue("frank@example.com")
        self.turn()
        result = self.results()[did]
        self.assertEqual((result.state, result.reason, result.code), (State.failed, "suspend",
                                                                      452))
        self.assertIsNone(result.next_attempt_at)

    def test_expired_by_age(self) -> None:
        """A 4xx for a delivery older than max_age expires: reason expired, last error kept."""
        self.connector.responder = reply_all(451, "4.3.0 try later", "4.3.0")
        self.start(max_age=3600)
        [did] = self.enqueue("gina@example.com", at=START - 3601)
        self.turn()
        result = self.results()[did]
        self.assertEqual((result.state, result.reason, result.code, result.status),
                         (State.expired, "expired", 451, "4.3.0"))
        self.assertEqual(result.text, "4.3.0 try later")
        self.assertFalse(result.suppress)
        self.assertFalse(result.hard)
        self.assertEqual(self.delivery(did).state, State.expired)

    def test_connection_lost_mid_transaction(self) -> None:
        """A recipient with no reply (connection lost) is deferred as networkerror."""

        def lost(conn: FakeConnection, message: OutboundMessage) -> list[Any]:
            from hurricane.outbound.interface import RecipientReply
            conn.closed = True
            return [RecipientReply(r.delivery_id, None, "data", error="connection lost")
                    for r in message.recipients]

        self.connector.responder = lost
        self.start()
        [did] = self.enqueue("hal@example.com")
        self.turn()
        result = self.results()[did]
        self.assertEqual((result.state, result.reason, result.text),
                         (State.deferred, "networkerror", "connection lost"))

    def test_attempt_logged(self) -> None:
        """Every attempt logs one structured line with id, recipient, host, state, code, text."""
        self.start()
        with capturedLogs() as events:
            [did] = self.enqueue("ivy@example.com")
            self.service.wake()  # type: ignore[union-attr]
            self.turn()
        lines = [e for e in events if e.get("log_format", "").startswith("delivery {delivery_id}")]
        self.assertEqual(len(lines), 1)
        event = lines[0]
        self.assertEqual((event["delivery_id"], event["recipient"], event["host"],
                          event["state"], event["code"]),
                         (did, "ivy@example.com", "mx1.example.com", "delivered", 250))


class ConnectionFailureTests(SchedulerTestCase):
    """DNS and connection failures."""

    def test_fallback_to_second_mx(self) -> None:
        """When the first MX refuses the connection, the second one gets the mail."""
        self.connector.failures["192.0.2.1"] = ConnectionFailed("refused", "connect")
        self.start()
        [did] = self.enqueue("jay@example.com")
        self.turn()
        self.assertEqual([a[0] for a in self.connector.attempts],
                         ["mx1.example.com", "mx2.example.com"])
        result = self.results()[did]
        self.assertEqual((result.state, result.remote_host), (State.delivered,
                                                              "mx2.example.com"))

    def test_failed_mx_remembered(self) -> None:
        """After a failure, the next delivery goes to the other MX first."""
        self.connector.failures["192.0.2.1"] = ConnectionFailed("refused", "connect")
        self.start()
        self.enqueue("jay@example.com")
        self.turn()
        self.turn(2.0)  # past the idle grace: the connection to mx2 is closed
        self.assertEqual(self.connector.open_connections(), 0)
        self.connector.attempts.clear()
        self.enqueue("kim@example.com")
        self.service.wake()  # type: ignore[union-attr]
        self.turn()
        self.assertEqual([a[0] for a in self.connector.attempts], ["mx2.example.com"])

    def test_connection_failure_defers_all_with_cause(self) -> None:
        """When every MX fails, every recipient of the domain is deferred with the reply."""
        busy = ConnectionFailed("421 busy", "greeting",
                                Reply(421, "4.7.0", "Too many connections"))
        self.connector.failures["192.0.2.1"] = busy
        self.connector.failures["192.0.2.2"] = busy
        self.classifier = ReplyClassifier.load()
        self.start()
        ids = self.enqueue("a@example.com", "b@example.com") + self.enqueue("c@example.com")
        self.turn()
        results = self.results()
        self.assertEqual(sorted(results), sorted(ids))
        for did in ids:
            r = results[did]
            self.assertEqual((r.state, r.code, r.status, r.reason),
                             (State.deferred, 421, "4.7.0", "toomanyconn"))
            self.assertEqual(r.remote_host, "mx2.example.com")
            self.assertIn("Too many connections", r.text or "")
            self.assertEqual(self.delivery(did).state, State.deferred)
        self.assertEqual(len(self.connector.attempts), 2)  # one round, not one per recipient

    def test_tls_failure_deferred(self) -> None:
        """A TLS policy failure is deferred with the connector's reason."""
        bad = ConnectionFailed("no STARTTLS", "starttls", reason="failedstarttls")
        self.connector.failures["192.0.2.1"] = bad
        self.connector.failures["192.0.2.2"] = bad
        self.start(tls_policy=TlsPolicyConfig(domains={"example.com": "require"}))
        [did] = self.enqueue("a@example.com")
        self.turn()
        r = self.results()[did]
        self.assertEqual((r.state, r.reason, r.code), (State.deferred, "failedstarttls", None))
        self.assertEqual({a[3] for a in self.connector.attempts}, {"require"})

    def test_tls_policy_default(self) -> None:
        """Domains without their own policy get the default."""
        self.start(tls_policy=TlsPolicyConfig(default="verify",
                                              domains={"other.example": "none"}))
        self.enqueue("a@example.com")
        self.turn()
        self.assertEqual(self.connector.attempts[0][3], "verify")

    def test_nxdomain_fails_hostunknown(self) -> None:
        """NXDOMAIN fails every recipient as hostunknown, hard, suppressed."""
        self.dns.nxdomain.add("nowhere.example")
        self.start()
        [did] = self.enqueue("x@nowhere.example")
        self.turn()
        r = self.results()[did]
        self.assertEqual((r.state, r.reason, r.hard, r.suppress, r.status),
                         (State.failed, "hostunknown", True, True, "5.1.2"))
        self.assertEqual(self.connector.attempts, [])

    def test_null_mx_fails(self) -> None:
        """A null MX fails the recipient with status 5.1.10."""
        self.dns.add_mx("nomail.example", (0, "."))
        self.start()
        [did] = self.enqueue("x@nomail.example")
        self.turn()
        self.assertEqual(self.results()[did].status, "5.1.10")

    def test_servfail_defers(self) -> None:
        """SERVFAIL defers the recipients as networkerror."""
        from twisted.names import error
        self.dns.mx["broken.example"] = error.DNSServerError("broken.example")
        self.start()
        [did] = self.enqueue("x@broken.example")
        self.turn()
        r = self.results()[did]
        self.assertEqual((r.state, r.reason), (State.deferred, "networkerror"))

    def test_route_used(self) -> None:
        """A [routes] entry sends the domain to its host and port, skipping MX."""
        self.start(routes={"example.com": "127.0.0.1:2526"})
        self.enqueue("a@example.com")
        self.turn()
        self.assertEqual(self.connector.attempts[0][1:3], ("127.0.0.1", 2526))


class ConnectionUseTests(SchedulerTestCase):
    """Connection reuse and per-destination limits."""

    def test_reuse_within_max_connections(self) -> None:
        """Twenty messages to one domain use at most max_connections_per_destination sessions."""
        self.connector.send_delay = 1.0
        self.start(max_connections_per_destination=3)
        ids = [self.enqueue(f"u{i}@example.com")[0] for i in range(20)]
        self.turn()
        self.assertLessEqual(self.connector.open_connections(), 3)
        stats = self.service.stats()  # type: ignore[union-attr]
        self.assertLessEqual(stats["destinations"]["example.com"]["connections"], 3)
        for _ in range(20):
            self.turn(1.0)
        self.assertLessEqual(len(self.connector.connections), 3)
        self.assertGreater(self.connector.peak_sends, 1)
        self.assertEqual({self.results()[i].state for i in ids}, {State.delivered})
        self.assertTrue(all(c.closed for c in self.connector.connections))

    def test_messages_per_connection(self) -> None:
        """After messages_per_connection transactions the session is replaced."""
        self.start(max_connections_per_destination=1, messages_per_connection=4)
        for i in range(10):
            self.enqueue(f"u{i}@example.com")
        self.turn()
        self.assertEqual([len(c.sent) for c in self.connector.connections], [4, 4, 2])

    def test_rate_limit(self) -> None:
        """rate_per_minute spaces transactions to one destination."""
        self.start(rate_per_minute=60)
        for i in range(3):
            self.enqueue(f"u{i}@example.com")
        self.turn()
        self.assertEqual(len(self.connector.messages), 1)
        self.turn(1.0)
        self.assertEqual(len(self.connector.messages), 2)
        self.turn(1.0)
        self.assertEqual(len(self.connector.messages), 3)

    def test_new_mail_before_retries(self) -> None:
        """Due retries go after new mail, in FIFO order on the connection."""
        self.connector.responder = reply_all(451, "4.7.1 Greylisted", "4.7.1")
        self.start(max_connections_per_destination=1)
        [old] = self.enqueue("old@example.com")
        self.turn()
        self.assertEqual(self.delivery(old).state, State.deferred)
        self.connector.responder = reply_all(250, "ok", None, "dot")
        self.connector.messages.clear()
        self.turn(299)
        new = [self.enqueue(f"new{i}@example.com")[0] for i in range(2)]
        self.turn(1)  # the retry is due now, together with the new mail
        order = [m.recipients[0].delivery_id for _, m in self.connector.messages]
        self.assertEqual(order, [*new, old])

    def test_body_loaded_once(self) -> None:
        """The body of a message with many recipients is loaded once."""
        loads = []
        original = self.store.load_body

        async def load_body(message_pk: int) -> bytes:
            loads.append(message_pk)
            return await original(message_pk)

        self.store.load_body = load_body  # type: ignore[method-assign]
        self.start()
        self.enqueue(*[f"u{i}@example.com" for i in range(5)])
        self.turn()
        self.assertEqual(loads, [1])

    def count_loads(self) -> list[int]:
        loads: list[int] = []
        original = self.store.load_body

        async def load_body(message_pk: int) -> bytes:
            loads.append(message_pk)
            return await original(message_pk)

        self.store.load_body = load_body  # type: ignore[method-assign]
        return loads

    def test_body_handed_by_submission_is_not_read_back(self) -> None:
        """The body handed over with the wake serves the first delivery; a
        retry later reads it from the store, and both send the same bytes."""
        loads = self.count_loads()
        self.connector.responder = reply_all(451, "4.7.1 Greylisted", "4.7.1")
        self.start()
        [did] = self.enqueue("alice@example.com", hand=True)
        self.turn()
        self.assertEqual(loads, [])
        first = self.connector.messages[-1][1]
        self.connector.responder = accept_all
        self.turn(300)  # the retry
        self.assertEqual(loads, [self.delivery(did).message_pk])
        second = self.connector.messages[-1][1]
        self.assertEqual(first.body, second.body)
        self.assertEqual(self.delivery(did).state, State.delivered)

    def test_handed_bodies_are_dropped_when_old(self) -> None:
        """A body nobody took within FRESH_BODY_SECONDS (another node claimed
        the message, say) is dropped at the next claim; its delivery, if it
        comes here later, reads the store."""
        loads = self.count_loads()
        self.start(poll_interval=5.0)
        self.service.wake(999, b"never claimed here")  # type: ignore[union-attr]
        self.assertEqual(self.service.bodies.fresh, [999])  # type: ignore[union-attr]
        self.turn(bodies.FRESH_BODY_SECONDS + 1)  # claims ran meanwhile
        self.assertEqual(self.service.bodies.fresh, [])  # type: ignore[union-attr]
        self.assertEqual(self.service.bodies.fresh_bytes, 0)  # type: ignore[union-attr]
        [did] = self.enqueue("a@example.com")
        self.turn(5.0)
        self.assertEqual(loads, [self.delivery(did).message_pk])

    def test_handed_bodies_are_bounded(self) -> None:
        """Bodies handed over are kept up to FRESH_BODY_BYTES in all, newest
        kept: the older ones are read from the store when their turn comes."""
        loads = self.count_loads()
        self.start(wake_delay=1.0, body_cache=BodyCacheSettings(fresh_bytes=4 * len(BODY) + 10))
        ids = [self.enqueue(f"u{i}@example.com", hand=True)[0] for i in range(6)]
        self.turn(1.0)
        self.assertEqual(sorted(loads), sorted(self.delivery(i).message_pk for i in ids[:2]))
        self.assertEqual({self.delivery(i).state for i in ids}, {State.delivered})


class VerpTests(SchedulerTestCase):
    """Return paths and the token header."""

    def test_per_recipient_senders(self) -> None:
        """Each recipient gets its own transaction and MAIL FROM, decoding to its delivery."""
        self.start()
        ids = self.enqueue("a@example.com", "b@example.com", "c@example.com",
                           mailing_id="Spring-Sale", message_id="AB12")
        self.turn()
        messages = [m for _, m in self.connector.messages]
        self.assertEqual(len(messages), 3)
        for message in messages:
            [rcpt] = message.recipients
            token = self.codec.decode(message.mail_from)
            assert isinstance(token, VerpToken)
            self.assertEqual(token.delivery_id, rcpt.delivery_id)
            self.assertEqual((token.mailing_id, token.message_id), ("spring-sale", "ab12"))
            self.assertEqual(header_value(message.body, b"X-Hurricane-Token"),
                             message.mail_from.encode())
            self.assertEqual(message.envid, message.mail_from)
            self.assertEqual(rcpt.orcpt, f"rfc822;{rcpt.address}")
            self.assertIn(b"From: Shop <news@shop.example>\r\n", message.body)
        self.assertEqual(sorted(m.recipients[0].delivery_id for m in messages), sorted(ids))

    def test_per_message_mode(self) -> None:
        """per-message: one MAIL FROM (the first delivery's) for up to N recipients."""
        self.start(verp="per-message", max_recipients_per_transaction=2)
        ids = self.enqueue("a@example.com", "b@example.com", "c@example.com")
        self.turn()
        messages = [m for _, m in self.connector.messages]
        self.assertEqual([len(m.recipients) for m in messages], [2, 1])
        token = self.codec.decode(messages[0].mail_from)
        assert isinstance(token, VerpToken)
        self.assertEqual(token.delivery_id, ids[0])
        # shared by two recipients: it vouches for the message, not for ids[0]
        self.assertTrue(token.per_message)
        alone = self.codec.decode(messages[1].mail_from)
        assert isinstance(alone, VerpToken)
        self.assertEqual((alone.delivery_id, alone.per_message), (ids[2], False))
        self.assertEqual([r.delivery_id for m in messages for r in m.recipients], ids)
        self.assertEqual({self.results()[i].state for i in ids}, {State.delivered})

    def test_per_message_mixed_replies(self) -> None:
        """In one transaction each recipient is recorded by its own reply."""
        from hurricane.outbound.interface import RecipientReply

        def mixed(conn: FakeConnection, message: OutboundMessage) -> list[RecipientReply]:
            first, second = message.recipients
            return [RecipientReply(first.delivery_id, Reply(250, "2.0.0", "ok"), "dot"),
                    RecipientReply(second.delivery_id, Reply(550, "5.1.1", "no such user"),
                                   "rcpt")]

        self.connector.responder = mixed
        self.start(verp="per-message")
        a, b = self.enqueue("a@example.com", "b@example.com")
        self.turn()
        self.assertEqual(self.results()[a].state, State.delivered)
        self.assertEqual(self.results()[b].state, State.failed)

    def test_idn_recipient_on_wire(self) -> None:
        """An IDN recipient domain goes on the wire in A-label form."""
        self.dns.add_mx("xn--bcher-kva.example", (10, "mx1.example.com"))
        self.start()
        self.enqueue("jörg@bücher.example")
        self.turn()
        [(_, message)] = self.connector.messages
        self.assertEqual(message.recipients[0].address, "jörg@xn--bcher-kva.example")
        self.assertTrue(message.smtputf8)

    def test_dkim_signature_verifies(self) -> None:
        """The bytes on the wire carry a DKIM signature that verifies, token header included."""
        import os
        import tempfile
        fd, path = tempfile.mkstemp()
        os.write(fd, rsa_key_pem())
        os.close(fd)
        self.addCleanup(os.unlink, path)
        signer = DkimSigner.from_config([DkimKeyConfig("shop.example", "s1", path)])
        self.start(dkim_signer=signer)
        self.enqueue("a@example.com", "b@example.com")
        self.turn()
        dnsfunc = dnsfunc_for({"s1._domainkey.shop.example": rsa_dns_record()})
        self.assertEqual(len(self.connector.messages), 2)
        for _, message in self.connector.messages:
            self.assertTrue(message.body.startswith(b"X-Hurricane-Token: "))
            self.assertTrue(dkim.verify(message.body, dnsfunc=dnsfunc))


async def _empty() -> list[Delivery]:
    return []


class LoopTests(SchedulerTestCase):
    """The claim loop: wakes, polling, store errors, capacity."""

    def test_wakes_coalesce(self) -> None:
        """Many wake() calls before the reactor turns make a single claim."""
        self.start()
        self.turn()
        before = len(self.store.claims)
        for _ in range(50):
            self.service.wake()  # type: ignore[union-attr]
        self.turn()
        self.assertEqual(len(self.store.claims), before + 1)

    def test_wake_delay_gathers_submissions_into_one_claim(self) -> None:
        """With a wake delay (the server's WAKE_DELAY), mail committed within
        it is claimed by one claim when it runs out, not one claim each,
        and not before."""
        self.start(wake_delay=0.01, poll_interval=5.0)
        self.turn()
        before = len(self.store.claims)
        for i in range(3):
            self.enqueue(f"u{i}@example.com")
            self.clock.advance(0.002)
        self.assertEqual(len(self.store.claims), before)  # still waiting
        self.assertEqual(self.connector.messages, [])
        self.clock.advance(0.005)  # 10 ms after the first wake
        self.turn()
        self.assertEqual(len(self.store.claims), before + 1)
        self.assertEqual(len(self.connector.messages), 3)

    def test_record_delay_gathers_results_into_one_write(self) -> None:
        """With a record delay (the server's RECORD_DELAY), results finished
        within it are written by one record_attempts call when it runs out,
        not one call each, and not before; the rows stay leased meanwhile."""
        self.connector.send_delay = 0.005
        self.start(record_delay=0.02, poll_interval=5.0)
        self.turn()
        ids = []
        for i in range(3):
            ids += self.enqueue(f"u{i}@example.com")
            self.turn()
            self.clock.advance(0.006)  # each is sent 5 ms after its claim
        self.assertEqual(len(self.connector.messages), 3)
        self.clock.advance(0.006)  # 19 ms after the first result (sent at 5 ms)
        self.assertEqual(self.store.recorded, [])
        self.assertEqual(self.delivery(ids[0]).lease_owner, "node-1")
        self.clock.advance(0.002)
        self.assertEqual([len(batch) for batch in self.store.recorded], [3])
        self.assertEqual({self.delivery(i).state for i in ids}, {State.delivered})

    def test_record_delay_never_holds_more_than_a_batch(self) -> None:
        """A full batch of results (RECORD_BATCH) is written at once, whatever the delay."""
        self.start(record_delay=60.0, poll_interval=5.0, max_in_flight=1000,
                   max_connections_per_destination=1)
        self.enqueue(*(f"u{i}@example.com" for i in range(results.RECORD_BATCH + 5)))
        self.turn()
        self.turn()
        # the full batch went at once, and the write loop took the rest with it
        self.assertEqual([len(batch) for batch in self.store.recorded],
                         [results.RECORD_BATCH, 5])

    def test_stop_writes_results_held_by_the_record_delay(self) -> None:
        """Stopping writes the results still waiting for the record delay at once."""
        self.start(record_delay=60.0, poll_interval=5.0)
        [did] = self.enqueue("alice@example.com")
        self.turn()
        self.assertEqual(self.store.recorded, [])
        self.successResultOf(self.service.stopService())  # type: ignore[union-attr]
        self.assertEqual(self.delivery(did).state, State.delivered)

    def test_failed_claim_waits_for_the_poll_even_after_wakes(self) -> None:
        """A claim that fails (store away) is retried at the poll interval,
        not right away, even when mail woke the service meanwhile."""
        held: list[Deferred[None]] = []

        async def failing_claim(*a: Any, **kw: Any) -> list[Delivery]:
            gate: Deferred[None] = Deferred()
            held.append(gate)
            await gate
            raise StoreUnavailable("store away")

        self.store.claim_due = failing_claim  # type: ignore[method-assign]
        self.start(poll_interval=5.0, wake_delay=0.01)
        self.turn()
        self.assertEqual(len(held), 1)
        self.service.wake()  # type: ignore[union-attr]  # during the claim
        held.pop().callback(None)
        self.clock.advance(1.0)
        self.assertEqual(held, [])  # not retried within a second
        self.clock.advance(4.0)
        self.assertEqual(len(held), 1)  # at the poll interval
        self.flushLoggedErrors(StoreUnavailable)
        self.store.claim_due = lambda *a, **kw: Deferred.fromCoroutine(_empty())  # type: ignore
        held.pop().callback(None)
        self.flushLoggedErrors(StoreUnavailable)

    def test_wake_during_claim_claims_again_at_once(self) -> None:
        """Mail submitted while a claim is running is claimed right after it, not at the
        next poll, and many such wakes still make one more claim."""
        held: list[Deferred[None]] = []
        original = self.store.claim_due

        async def slow_claim(*a: Any, **kw: Any) -> list[Delivery]:
            gate: Deferred[None] = Deferred()
            held.append(gate)
            await gate
            return await original(*a, **kw)

        self.store.claim_due = slow_claim  # type: ignore[method-assign]
        self.start(poll_interval=5.0)
        self.turn()
        self.assertEqual(len(held), 1)
        for i in range(5):
            self.enqueue(f"u{i}@example.com")  # each wakes the service
        held.pop().callback(None)  # the first claim ends (it saw the mail too)
        self.turn()
        self.assertEqual(len(held), 1)  # one more claim at once, not after 5 s
        held.pop().callback(None)
        self.turn()
        self.assertEqual(len(self.connector.messages), 5)
        self.assertEqual(held, [])

    def test_poll_without_wake(self) -> None:
        """Without a wake, due mail is found by the poll timer."""
        self.start(poll_interval=5.0)
        self.turn()
        self.enqueue("a@example.com", wake=False)
        self.turn(4.9)
        self.assertEqual(self.connector.messages, [])
        self.turn(0.1)
        self.assertEqual(len(self.connector.messages), 1)

    def test_store_failure_logged_and_retried(self) -> None:
        """A StoreUnavailable from claim_due is logged and the claim retried after poll_interval."""
        self.enqueue("a@example.com")
        self.start(poll_interval=5.0)  # start-up releases old leases first
        self.store.fail_next(1)  # ...then the first claim fails
        self.turn()
        self.assertEqual(len(self.flushLoggedErrors(StoreUnavailable)), 1)
        self.assertEqual(self.connector.messages, [])
        self.turn(5.0)
        self.assertEqual(len(self.connector.messages), 1)

    def test_restart_takes_back_own_leases(self) -> None:
        """Rows this node leased before a crash are sent at once after a restart."""
        [did] = self.enqueue("a@example.com")
        self.successResultOf(Deferred.fromCoroutine(
            self.store.claim_due(START, "node-1", 600.0, 10)))  # the "crashed" run
        self.start()
        self.turn()
        self.assertEqual(len(self.connector.messages), 1)
        self.assertEqual(self.delivery(did).state, State.delivered)

    def test_record_failure_retried(self) -> None:
        """Results that could not be written are kept and written on the next try."""
        self.store.record_failures = 1
        self.start(poll_interval=5.0)
        [did] = self.enqueue("a@example.com")
        self.turn()
        self.assertEqual(len(self.flushLoggedErrors(StoreUnavailable)), 1)
        self.assertEqual(self.delivery(did).state, State.queued)
        self.turn(5.0)
        self.assertEqual(self.delivery(did).state, State.delivered)
        self.assertEqual(len(self.connector.messages), 1)  # leased: not sent twice

    def test_record_retry_waits_for_the_poll_whatever_finishes_meanwhile(self) -> None:
        """After a failed write, results finishing meanwhile join the retry at
        the poll interval instead of each bringing on another failing write."""
        self.store.record_failures = 10
        writes = []
        original = self.store.record_attempts

        async def counting(results: Sequence[AttemptResult]) -> list[int]:
            writes.append(self.clock.seconds())
            return await original(results)

        self.store.record_attempts = counting  # type: ignore[method-assign]
        self.start(poll_interval=5.0, record_delay=0.02)
        self.enqueue("a@example.com")
        self.turn()
        self.turn(0.02)
        self.assertEqual(len(writes), 1)  # failed
        for i in range(4):
            self.enqueue(f"b{i}@example.com")
            self.turn()
            self.turn(0.5)
        self.assertEqual(len(writes), 1)  # still waiting for the retry
        self.turn(3.0)
        self.assertEqual(len(writes), 2)  # the retry, 5 s after the failure
        self.assertEqual(writes[1] - writes[0], 5.0)
        self.store.record_failures = 0
        self.turn(5.0)
        self.assertEqual(self.delivery(1).state, State.delivered)
        self.flushLoggedErrors(StoreUnavailable)

    def test_results_batched(self) -> None:
        """Results finished in one reactor turn are written in one record_attempts call."""
        self.start()
        self.enqueue(*[f"u{i}@example.com" for i in range(5)])
        self.turn()
        self.assertEqual([len(batch) for batch in self.store.recorded], [5])

    def test_max_in_flight(self) -> None:
        """No more than max_in_flight deliveries are claimed at once."""
        self.connector.send_delay = 1.0
        self.start(max_in_flight=3, max_connections_per_destination=1)
        ids = [self.enqueue(f"u{i}@example.com")[0] for i in range(7)]
        self.turn()
        self.assertEqual(self.service.stats()["in_flight"], 3)  # type: ignore[union-attr]
        for _ in range(10):
            self.turn(1.0)
        self.assertEqual({self.results()[i].state for i in ids}, {State.delivered})
        self.assertTrue(all(limit <= 3 for limit, _ in self.store.claims))

    def test_unwritten_results_hold_their_slots(self) -> None:
        """A delivery whose result is not written yet keeps its slot (max_in_flight
        also bounds what a crash sends twice); the write frees it and claims again."""
        self.start(max_in_flight=3, record_delay=1.0, poll_interval=60.0,
                   max_connections_per_destination=3)
        ids = [self.enqueue(f"u{i}@example.com")[0] for i in range(5)]
        self.turn()
        self.assertEqual(len(self.connector.messages), 3)  # sent, results held 1 s
        self.assertEqual(self.service.stats()["in_flight"], 0)  # type: ignore[union-attr]
        self.clock.advance(0.5)
        self.assertEqual(len(self.connector.messages), 3)  # no slot free before the write
        self.assertEqual(self.store.recorded, [])
        self.clock.advance(0.6)  # the write, then at once the next claim
        self.assertEqual([len(batch) for batch in self.store.recorded], [3])
        self.assertEqual(len(self.connector.messages), 5)
        self.assertTrue(all(limit <= 3 for limit, _ in self.store.claims))
        self.clock.advance(1.1)
        self.assertEqual({self.results()[i].state for i in ids}, {State.delivered})

    def test_room_freed_during_a_claim_is_claimed(self) -> None:
        """Results written while a claim is on its way: the room they free is
        claimed at once, not left idle until the next poll (review repro)."""
        orig_claim, orig_record = self.store.claim_due, self.store.record_attempts
        slow = {"claim": 0.0, "record": 0.0}

        async def claim_due(*a: Any, **kw: Any) -> list[Delivery]:
            if slow["claim"]:
                await deferLater(self.clock, slow["claim"], lambda: None)
            return await orig_claim(*a, **kw)

        async def record_attempts(results: Sequence[AttemptResult]) -> None:
            if slow["record"]:
                await deferLater(self.clock, slow["record"], lambda: None)
            return await orig_record(results)

        self.store.claim_due = claim_due  # type: ignore[method-assign]
        self.store.record_attempts = record_attempts  # type: ignore[method-assign]
        self.start(max_in_flight=4, poll_interval=60.0, max_connections_per_destination=10)
        slow["record"] = 0.5
        self.enqueue("a0@example.com", "a1@example.com")
        self.turn()  # both sent; writing their results takes 0.5 s
        slow["claim"] = 1.0
        self.connector.send_delay = 30.0
        self.enqueue(*(f"b{i}@example.com" for i in range(10)))
        self.turn()  # a claim for the 2 free slots, 1 s long
        self.turn(0.6)  # the results are written meanwhile: 2 more slots
        self.turn(0.5)  # the claim returns its 2
        self.turn(1.1)  # and the freed room is claimed (not at the 60 s poll)
        self.assertEqual(self.service.stats()["in_flight"], 4)  # type: ignore[union-attr]
        slow["claim"] = slow["record"] = 0.0
        for _ in range(6):
            self.turn(31.0)
        self.assertEqual(len(self.connector.messages), 12)

    def test_saturated_domain_excluded(self) -> None:
        """A destination with a long queue here is left out of the next claim."""
        self.start(rate_per_minute=1, lease_seconds=600)
        for i in range(10):
            self.enqueue(f"u{i}@example.com")
        self.turn()
        self.turn(5.0)  # the next poll
        self.assertEqual(self.store.claims[-1][1], ("example.com",))

    def test_body_load_failure_releases(self) -> None:
        """When the body cannot be loaded the lease is given back and no attempt is counted."""
        original = self.store.load_body
        failures = [StoreUnavailable("load_body failed (test)")]

        async def load_body(message_pk: int) -> bytes:
            if failures:
                raise failures.pop()
            return await original(message_pk)

        self.store.load_body = load_body  # type: ignore[method-assign]
        self.start(poll_interval=5.0)
        [did] = self.enqueue("a@example.com")
        self.turn()
        self.assertEqual(len(self.flushLoggedErrors(StoreUnavailable)), 1)
        row = self.delivery(did)
        self.assertEqual((row.state, row.attempts, row.lease_owner), (State.queued, 0, None))
        self.turn(5.0)
        self.assertEqual(self.delivery(did).state, State.delivered)


class IdleGraceTests(SchedulerTestCase):
    """Idle connections wait ``idle_grace`` seconds (2 by default) for more mail."""

    def test_reused_across_short_gap(self) -> None:
        """Mail arriving within the grace period goes on the open connection."""
        self.start(max_connections_per_destination=1)
        self.enqueue("a@example.com")
        self.turn()
        self.assertEqual(self.connector.open_connections(), 1)
        stats = self.service.stats()  # type: ignore[union-attr]
        self.assertEqual(stats["destinations"]["example.com"]["idle"], 1)
        self.turn(1.5)  # shorter than the grace period
        self.enqueue("b@example.com")
        self.turn()
        self.assertEqual(len(self.connector.connections), 1)
        self.assertEqual([len(c.sent) for c in self.connector.connections], [2])
        self.assertEqual(len(self.connector.attempts), 1)
        # the grace period starts again after the second message
        self.turn(1.5)
        self.assertEqual(self.connector.open_connections(), 1)
        self.turn(0.5)
        self.assertEqual(self.connector.open_connections(), 0)
        self.assertEqual(self.clock.getDelayedCalls()[0].func, self.service._claim_tick)  # type: ignore[union-attr]
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)  # only the poll timer

    def test_closed_after_grace(self) -> None:
        """A connection idle for the whole grace period is closed; later mail opens another."""
        self.start(max_connections_per_destination=1)
        self.enqueue("a@example.com")
        self.turn()
        self.turn(1.99)
        self.assertEqual(self.connector.open_connections(), 1)
        self.turn(0.01)
        self.assertEqual(self.connector.open_connections(), 0)
        self.assertEqual(self.service.stats()["destinations"], {})  # type: ignore[union-attr]
        self.enqueue("b@example.com")
        self.turn()
        self.assertEqual([len(c.sent) for c in self.connector.connections], [1, 1])

    def test_configurable_grace(self) -> None:
        """idle_grace is a setting; 0 closes at once as before."""
        self.config = DeliveryConfig(poll_interval=5.0)
        self.service = self.build(OutboundSettings(node_id="node-1", delivery=self.config,
                                                   idle_grace=0))
        self.service.startService()
        self.enqueue("a@example.com")
        self.turn()
        self.assertEqual(self.connector.open_connections(), 0)
        self.enqueue("b@example.com")
        self.turn()
        self.assertEqual(len(self.connector.connections), 2)

    def test_idle_connections_get_new_claims(self) -> None:
        """New claims go to idle connections first; no extra connection is opened."""
        self.connector.send_delay = 1.0
        self.start(max_connections_per_destination=3)
        for i in range(6):
            self.enqueue(f"u{i}@example.com")
        for _ in range(3):
            self.turn(1.0)
        opened = len(self.connector.connections)
        self.assertEqual(opened, 3)
        self.assertEqual(self.service.stats()["destinations"]["example.com"]["idle"], 3)  # type: ignore[union-attr]
        for i in range(3):
            self.enqueue(f"v{i}@example.com")
        self.turn()
        self.assertEqual(self.service.stats()["destinations"]["example.com"]["idle"], 0)  # type: ignore[union-attr]
        self.turn(1.0)
        self.assertEqual(len(self.connector.connections), opened)
        self.assertEqual(len(self.results()), 9)
        self.assertEqual({r.state for r in self.results().values()}, {State.delivered})

    def test_messages_per_connection_still_bounds_reuse(self) -> None:
        """An idle connection that reached messages_per_connection is not kept."""
        self.start(max_connections_per_destination=1, messages_per_connection=2)
        self.enqueue("a@example.com", "b@example.com")
        self.turn()
        self.assertEqual(self.connector.open_connections(), 0)
        self.enqueue("c@example.com")
        self.turn()
        self.assertEqual([len(c.sent) for c in self.connector.connections], [2, 1])

    def test_dead_idle_connection_replaced(self) -> None:
        """A connection the peer dropped while idle is replaced when work comes."""
        self.start(max_connections_per_destination=1)
        self.enqueue("a@example.com")
        self.turn()
        self.connector.connections[0]._usable = False  # the server timed us out
        self.enqueue("b@example.com")
        self.turn()
        self.assertEqual([len(c.sent) for c in self.connector.connections], [1, 1])
        self.assertTrue(self.connector.connections[0].closed)

    def test_stop_closes_idle_connections(self) -> None:
        """stopService closes idle connections at once and leaves no timers."""
        service = self.start()
        self.enqueue("a@example.com", "b@example.com")
        self.turn()
        self.assertGreater(self.connector.open_connections(), 0)
        self.successResultOf(service.stopService())
        self.assertEqual(self.connector.open_connections(), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])


    def test_stop_waits_for_quit(self) -> None:
        """stopService fires only once the idle connections' QUIT has finished."""
        quits: list[Deferred[None]] = []

        async def slow_close(conn: FakeConnection) -> None:
            gate: Deferred[None] = Deferred()
            quits.append(gate)
            await gate
            conn.closed = True

        self.patch(FakeConnection, "close", slow_close)
        service = self.start()
        self.enqueue("a@example.com")
        self.turn()
        d = service.stopService()
        self.assertEqual(len(quits), 1)
        self.assertNoResult(d)
        quits.pop().callback(None)
        self.successResultOf(d)
        self.assertEqual(self.connector.open_connections(), 0)


class StopTests(SchedulerTestCase):
    """stopService."""

    def test_stop_releases_unstarted_and_finishes_in_flight(self) -> None:
        """Stop lets the transaction under way finish, releases the rest, leaves no timers."""
        self.connector.send_delay = 3.0
        self.start(max_connections_per_destination=1)
        ids = [self.enqueue(f"u{i}@example.com")[0] for i in range(3)]
        self.turn()
        service = self.service
        assert service is not None
        d = service.stopService()
        self.assertNoResult(d)
        self.turn(3.0)
        self.successResultOf(d)
        self.assertEqual(self.delivery(ids[0]).state, State.delivered)
        for did in ids[1:]:
            row = self.delivery(did)
            self.assertEqual((row.state, row.lease_owner, row.attempts),
                             (State.queued, None, 0))
        self.assertEqual(len(self.connector.messages), 1)
        self.assertTrue(all(c.closed for c in self.connector.connections))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stop_with_stuck_transaction(self) -> None:
        """A transaction that never ends is abandoned after the grace period, timers cancelled."""
        self.connector.hang_sends = True
        self.start()
        [did] = self.enqueue("a@example.com")
        self.turn()
        service = self.service
        assert service is not None
        d = service.stopService()
        self.turn(10.0)
        self.successResultOf(d)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.delivery(did).lease_owner, "node-1")  # left to expire

    def test_idle_stop(self) -> None:
        """Stopping an idle service fires at once and cancels the poll timer."""
        service = self.start()
        self.turn()
        self.successResultOf(service.stopService())
        self.assertEqual(self.clock.getDelayedCalls(), [])
        service.wake()
        self.assertEqual(self.clock.getDelayedCalls(), [])


