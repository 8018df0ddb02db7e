"""The submission listener on a StringTransport with the in-memory store."""

from __future__ import annotations

import base64
import dataclasses
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from hurricane import passwords
from hurricane.config import SubmissionConfig
from hurricane.credentials import SecretVerifier
from hurricane.model import State
from hurricane.passwords import hash_password
from hurricane.store.memory import MemoryStore
from hurricane.submission.auth import build_portal
from hurricane.submission.server import SubmissionFactory, SubmissionProtocol
from tests.pools import Pbkdf2Recorder, QueuedRunner
from tests.smtpd.helpers import codes, connect, disconnect, keywords, replies

OUTSIDE = "203.0.113.5"
USERS = {"alice": hash_password("s3cret", iterations=1000)}


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


class _Base(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.store = MemoryStore()
        self.successResultOf(Deferred.fromCoroutine(self.store.open()))
        self.woken = 0
        #: (message key, body) handed to the scheduler by each wake
        self.handed: list[tuple[int, bytes | None]] = []
        self.config = SubmissionConfig()
        self.protos: list[SubmissionProtocol] = []
        self.addCleanup(lambda: self.assertEqual(self.clock.getDelayedCalls(), []))
        self.addCleanup(self._disconnect_all)

    def _disconnect_all(self) -> None:
        for proto in self.protos:
            if not proto.lost:
                disconnect(proto)

    def wake(self, message_pk: int, body: bytes | None) -> None:
        self.woken += 1
        self.handed.append((message_pk, body))

    def factory(self, tls: bool = False, users: dict[str, str] | None = USERS,
                **config: object) -> SubmissionFactory:
        self.config = dataclasses.replace(SubmissionConfig(), **config)
        portal = build_portal(users) if users else None
        return SubmissionFactory(self.config, self.store, "submit.test.example", self.clock,
                                 self.wake, object() if tls else None, portal)

    def start(self, ip: str = OUTSIDE, tls: bool = False, factory: SubmissionFactory | None = None,
              **config: object):
        self.fact = factory or self.factory(tls=tls, **config)
        proto, t = connect(self.fact, ip=ip, tls=tls)
        self.protos.append(proto)
        replies(t)
        proto.dataReceived(b"EHLO app.example\r\n")
        self.ehlo = keywords(replies(t))
        return proto, t

    def deliveries(self) -> list:
        return self.successResultOf(Deferred.fromCoroutine(
            self.store.find_deliveries(limit=1000)))


class RelayTests(_Base):
    #: RCPT forms a relay prober tries; none may be accepted without AUTH.
    PROBES = [
        b"<victim@example.com>",
        b"<victim@submit.test.example>",
        b"<postmaster@submit.test.example>",
        b"<postmaster>",
        b"<@submit.test.example:victim@example.com>",
        b"<@a.example,@b.example:victim@example.com>",
        b"<victim%example.com@submit.test.example>",
        b"<example.com!victim@submit.test.example>",
        b"<example.com!victim>",
        b'<"victim@example.com">',
        b'<"victim"@example.com>',
        b"<victim@[192.0.2.1]>",
        b"<victim@[IPv6:2001:db8::1]>",
        b"<victim@example.com.>",
        b"<victim@example.com",
        b"victim@example.com",
        b"<>",
        b"<VICTIM@EXAMPLE.COM>",
        b"<victim@localhost>",
        b"< victim@example.com>",
    ]

    def test_relay_probes_from_untrusted_client_are_refused(self) -> None:
        """Without AUTH from a non-trusted address, no RCPT form is ever accepted."""
        proto, t = self.start()
        proto.dataReceived(b"MAIL FROM:<spammer@example.net>\r\n")
        self.assertEqual(codes(replies(t)), [b"250 2.1.0"])
        for probe in self.PROBES:
            proto.errors = 0
            proto.dataReceived(b"RCPT TO:" + probe + b"\r\n")
            (reply,) = codes(replies(t))
            self.assertIn(reply[:3], (b"550", b"553", b"501"), probe)
            if reply[:3] == b"550":
                self.assertEqual(reply, b"550 5.7.1", probe)
        proto.errors = 0
        proto.dataReceived(b"DATA\r\n")
        self.assertEqual(codes(replies(t)), [b"554 5.5.1"])
        self.assertEqual(self.deliveries(), [])

    def test_trusted_network_relays(self) -> None:
        """A client in trusted_networks may relay without AUTH; the 250 names the queue id."""
        proto, t = self.start(ip="127.0.0.1")
        proto.dataReceived(b"MAIL FROM:<app@example.org>\r\nRCPT TO:<a@example.com>\r\n"
                           b"RCPT TO:<b@example.com>\r\nDATA\r\n"
                           b"Subject: hi\r\n\r\nhello\r\n.\r\n")
        lines = replies(t)
        self.assertEqual(codes(lines)[:3], [b"250 2.1.0", b"250 2.1.5", b"250 2.1.5"])
        self.assertTrue(lines[-1].startswith(b"250 2.0.0 Ok: queued as "))
        queue_id = lines[-1].rsplit(b" ", 1)[1].decode()
        found = self.deliveries()
        self.assertEqual(sorted(d.recipient for d in found), ["a@example.com", "b@example.com"])
        self.assertEqual({d.queue_id for d in found}, {queue_id})
        self.assertEqual(self.woken, 1)
        # the scheduler gets the body exactly as stored, for the first delivery
        [(message_pk, body)] = self.handed
        self.assertEqual({d.message_pk for d in found}, {message_pk})
        self.assertEqual(body, self.successResultOf(Deferred.fromCoroutine(
            self.store.load_body(message_pk))))

    def test_no_body_handed_when_every_recipient_is_suppressed(self) -> None:
        """Nothing will be sent: the scheduler is woken without the body."""
        self.successResultOf(Deferred.fromCoroutine(self.store.suppress(
            "gone@example.com", "userunknown", 0.0, source="bounce")))
        proto, t = self.start(ip="127.0.0.1")
        proto.dataReceived(b"MAIL FROM:<app@example.org>\r\nRCPT TO:<gone@example.com>\r\n"
                           b"DATA\r\nSubject: hi\r\n\r\nhello\r\n.\r\n")
        self.assertTrue(replies(t)[-1].startswith(b"250 2.0.0"))
        [(_, body)] = self.handed
        self.assertIsNone(body)

    def test_require_auth_refuses_trusted_networks(self) -> None:
        """With require_auth, even a trusted client gets 550 5.7.1 until it authenticates."""
        proto, t = self.start(ip="127.0.0.1", require_auth=True)
        proto.dataReceived(b"MAIL FROM:<app@example.org>\r\nRCPT TO:<a@example.com>\r\n")
        self.assertEqual(codes(replies(t)), [b"250 2.1.0", b"550 5.7.1"])
        proto.dataReceived(b"RSET\r\nAUTH PLAIN " + b64(b"\0alice\0s3cret") + b"\r\n"
                           b"MAIL FROM:<app@example.org>\r\nRCPT TO:<a@example.com>\r\n")
        self.assertEqual(codes(replies(t)), [b"250 2.0.0", b"235 2.7.0", b"250 2.1.0",
                                             b"250 2.1.5"])

    def test_null_sender_and_malformed_addresses(self) -> None:
        """MAIL FROM:<> is allowed; malformed addresses get 501/553 and the session goes on."""
        proto, t = self.start(ip="127.0.0.1")
        proto.dataReceived(b"MAIL FROM:<bad address@example.org>\r\nMAIL FROM:<a@b@c>\r\n"
                           b"MAIL FROM:\r\nMAIL FROM:<local-only>\r\nMAIL FROM:<>\r\n"
                           b"RCPT TO:<no good@example.com>\r\nRCPT TO:<>\r\n"
                           b"RCPT TO:<a@example.com>\r\n")
        self.assertEqual(codes(replies(t)), [b"553 5.1.7", b"553 5.1.7", b"501 5.5.4",
                                             b"553 5.1.7", b"250 2.1.0", b"553 5.1.3",
                                             b"553 5.1.3", b"250 2.1.5"])


class AuthTests(_Base):
    def test_auth_offered_on_loopback_without_tls(self) -> None:
        """A loopback client sees AUTH PLAIN LOGIN without STARTTLS."""
        self.start(ip="127.0.0.1")
        self.assertIn(b"AUTH PLAIN LOGIN", self.ehlo)

    def test_auth_needs_tls_elsewhere(self) -> None:
        """Off loopback, AUTH is not offered in clear text and is refused with 538 5.7.11."""
        proto, t = self.start(tls=True)
        self.assertNotIn(b"AUTH PLAIN LOGIN", self.ehlo)
        self.assertIn(b"STARTTLS", self.ehlo)
        proto.dataReceived(b"AUTH PLAIN " + b64(b"\0alice\0s3cret") + b"\r\n")
        self.assertEqual(codes(replies(t)), [b"538 5.7.11"])
        proto.dataReceived(b"STARTTLS\r\n")
        replies(t)
        proto.dataReceived(b"EHLO app.example\r\n")
        self.assertIn(b"AUTH PLAIN LOGIN", keywords(replies(t)))
        proto.dataReceived(b"AUTH PLAIN " + b64(b"\0alice\0s3cret") + b"\r\n")
        self.assertEqual(codes(replies(t)), [b"235 2.7.0"])
        proto.dataReceived(b"MAIL FROM:<app@example.org>\r\nRCPT TO:<a@example.com>\r\n")
        self.assertEqual(codes(replies(t)), [b"250 2.1.0", b"250 2.1.5"])

    def _slow_portal_session(self):
        """A session whose portal answers later; writes are recorded."""
        pending: list[Deferred] = []

        class SlowPortal:
            def login(self, credentials, mind, *interfaces):
                d: Deferred = Deferred()
                pending.append(d)
                return d

        fact = self.factory()
        fact.portal = SlowPortal()  # type: ignore[assignment]
        proto, t = self.start(ip="127.0.0.1", factory=fact)
        writes: list[bytes] = []
        write = t.write
        t.write = lambda data: (writes.append(data), write(data))
        proto.dataReceived(b"AUTH PLAIN " + b64(b"\0alice\0s3cret") + b"\r\n"
                           b"MAIL FROM:<app@example.org>\r\nNOOP\r\n")
        self.assertEqual(writes, [])
        return pending[0], proto, t, writes

    def test_auth_reply_and_pipelined_replies_in_one_write(self) -> None:
        """A login answered later: 235 and the replies to the commands pipelined
        behind AUTH (RFC 4954 initial response) leave in one write."""
        login, proto, t, writes = self._slow_portal_session()

        class User:
            name = "alice"

        login.callback((None, User(), lambda: None))
        self.assertEqual(len(writes), 1)
        self.assertEqual(codes(replies(t)), [b"235 2.7.0", b"250 2.1.0", b"250 2.0.0"])
        self.assertEqual(proto.session.user, "alice")

    def test_auth_refusal_later_in_one_write(self) -> None:
        """A refusal answered later: 535 and the replies behind it in one write."""
        from twisted.cred.error import UnauthorizedLogin

        login, proto, t, writes = self._slow_portal_session()
        login.errback(UnauthorizedLogin())
        self.assertEqual(len(writes), 1)
        self.assertEqual(codes(replies(t))[0], b"535 5.7.8")
        self.assertIsNone(proto.session.user)

    def test_auth_login_and_plain_challenge(self) -> None:
        """AUTH LOGIN and AUTH PLAIN without initial response work step by step."""
        proto, t = self.start(ip="127.0.0.1")
        proto.dataReceived(b"AUTH LOGIN\r\n")
        self.assertEqual(replies(t), [b"334 VXNlcm5hbWU6"])
        proto.dataReceived(b64(b"alice") + b"\r\n")
        self.assertEqual(replies(t), [b"334 UGFzc3dvcmQ6"])
        proto.dataReceived(b64(b"s3cret") + b"\r\n")
        self.assertEqual(codes(replies(t)), [b"235 2.7.0"])
        self.assertEqual(proto.session.user, "alice")
        proto2, t2 = self.start(ip="127.0.0.1", factory=self.fact)
        proto2.dataReceived(b"AUTH PLAIN\r\n")
        self.assertEqual(replies(t2), [b"334 "])
        proto2.dataReceived(b"*\r\n")
        self.assertEqual(codes(replies(t2)), [b"501 5.7.0"])

    def test_auth_failures_close_and_block(self) -> None:
        """max_auth_failures failures get 421 and close; the address is then blocked a while."""
        proto, t = self.start(tls=True, auth_block_seconds=600, idle_timeout=3600.0)
        proto.dataReceived(b"STARTTLS\r\n")
        proto.dataReceived(b"EHLO app.example\r\n")
        replies(t)
        for _ in range(3):
            proto.dataReceived(b"AUTH PLAIN " + b64(b"\0alice\0wrong") + b"\r\n")
        self.assertEqual(codes(replies(t)), [b"535 5.7.8", b"535 5.7.8", b"535 5.7.8",
                                             b"421 4.7.0"])
        self.assertTrue(t.disconnecting)
        disconnect(proto)
        proto2, t2 = self.start(tls=True, factory=self.fact)
        proto2.dataReceived(b"STARTTLS\r\n")
        proto2.dataReceived(b"EHLO app.example\r\n")
        replies(t2)
        proto2.dataReceived(b"AUTH PLAIN " + b64(b"\0alice\0s3cret") + b"\r\n")
        self.assertEqual(codes(replies(t2)), [b"454 4.7.0"])
        self.clock.advance(601)
        proto2.dataReceived(b"AUTH PLAIN " + b64(b"\0alice\0s3cret") + b"\r\n")
        self.assertEqual(codes(replies(t2)), [b"235 2.7.0"])

    def test_unknown_user_and_bad_encoding(self) -> None:
        """An unknown user fails like a wrong password; undecodable base64 gets 501."""
        proto, t = self.start(ip="127.0.0.1")
        proto.dataReceived(b"AUTH PLAIN " + b64(b"\0mallory\0s3cret") + b"\r\n"
                           b"AUTH PLAIN !!notbase64\r\n"
                           b"AUTH PLAIN " + b64(b"bob\0alice\0s3cret") + b"\r\n")
        self.assertEqual(codes(replies(t)), [b"535 5.7.8", b"501 5.5.2", b"535 5.7.8"])

    def test_no_users_no_auth(self) -> None:
        """Without configured users AUTH is neither offered nor accepted."""
        proto, t = self.start(ip="127.0.0.1", factory=self.factory(users=None))
        self.assertFalse(any(k.startswith(b"AUTH") for k in self.ehlo))
        proto.dataReceived(b"AUTH PLAIN " + b64(b"\0alice\0s3cret") + b"\r\n")
        self.assertEqual(codes(replies(t)), [b"503 5.5.1"])


class AuthPoolTests(_Base):
    """AUTH hashes in the verifier's pool, never on the reactor thread, and alike for all names."""

    def pooled(self, max_pending: int = 32) -> tuple[SubmissionFactory, QueuedRunner]:
        pool = QueuedRunner()
        fact = self.factory()
        fact.portal = build_portal(USERS, SecretVerifier(pool, max_pending=max_pending))
        return fact, pool

    def test_hash_waits_for_the_pool(self) -> None:
        """AUTH queues the pbkdf2 and answers when the pool is done; nothing hashes inline."""
        fact, pool = self.pooled()
        recorder = Pbkdf2Recorder()
        self.patch(passwords, "hashlib", recorder)
        proto, t = self.start(ip="127.0.0.1", factory=fact)
        proto.dataReceived(b"AUTH PLAIN " + b64(b"\0alice\0s3cret") + b"\r\n")
        self.assertEqual(replies(t), [])
        self.assertEqual((recorder.calls, len(pool.jobs)), ([], 1))
        pool.run_all()
        self.assertEqual(codes(replies(t)), [b"235 2.7.0"])

    def test_unknown_user_costs_a_hash(self) -> None:
        """An unknown name runs one pbkdf2 of the users' iteration count, like a wrong password."""
        fact, pool = self.pooled()
        recorder = Pbkdf2Recorder()
        self.patch(passwords, "hashlib", recorder)
        proto, t = self.start(ip="127.0.0.1", factory=fact)
        proto.dataReceived(b"AUTH PLAIN " + b64(b"\0mallory\0s3cret") + b"\r\n")
        pool.run_all()
        proto.dataReceived(b"AUTH PLAIN " + b64(b"\0alice\0wrong") + b"\r\n")
        pool.run_all()
        self.assertEqual(codes(replies(t)), [b"535 5.7.8", b"535 5.7.8"])
        self.assertEqual([iterations for _, iterations in recorder.calls], [1000, 1000])

    def test_busy_is_temporary(self) -> None:
        """With the pool's queue full, AUTH gets 454 at once and it is not a failure."""
        fact, pool = self.pooled(max_pending=1)
        first, t1 = self.start(ip="127.0.0.1", factory=fact)
        first.dataReceived(b"AUTH PLAIN " + b64(b"\0alice\0s3cret") + b"\r\n")
        second, t2 = self.start(ip="127.0.0.1", factory=fact)
        second.dataReceived(b"AUTH PLAIN " + b64(b"\0alice\0s3cret") + b"\r\n")
        self.assertEqual(codes(replies(t2)), [b"454 4.7.0"])
        self.assertEqual(second.auth_failures, 0)
        pool.run_all()
        self.assertEqual(codes(replies(t1)), [b"235 2.7.0"])


class ConcurrentAuthTests(_Base):
    """AUTH guesses are counted while they wait for the pool, across connections."""

    def pooled(self) -> tuple[SubmissionFactory, QueuedRunner]:
        pool = QueuedRunner()
        fact = self.factory(max_auth_failures=3, max_connections_per_ip=10)
        fact.portal = build_portal(USERS, SecretVerifier(pool))
        return fact, pool

    def test_guesses_in_flight_count(self) -> None:
        """Five connections guessing at once with max_auth_failures = 3: three guesses
        reach the pool, the other two get 454 unverified (seven were verified before)."""
        fact, pool = self.pooled()
        conns = [self.start(ip="127.0.0.1", factory=fact) for _ in range(5)]
        for i, (proto, _t) in enumerate(conns):
            proto.dataReceived(b"AUTH PLAIN " + b64(b"\0alice\0wrong-%d" % i) + b"\r\n")
        self.assertEqual(len(pool.jobs), 3)
        self.assertEqual([codes(replies(t)) for _, t in conns[3:]], [[b"454 4.7.0"]] * 2)
        pool.run_all()
        for _proto, t in conns[:3]:
            self.assertEqual(codes(replies(t)), [b"535 5.7.8", b"421 4.7.0"])
        self.assertTrue(fact.throttle.is_blocked("127.0.0.1"))

    def test_success_in_flight_not_a_failure(self) -> None:
        """A right password waiting for the pool counts until answered, then not at all."""
        fact, pool = self.pooled()
        proto, t = self.start(ip="127.0.0.1", factory=fact)
        proto.dataReceived(b"AUTH PLAIN " + b64(b"\0alice\0s3cret") + b"\r\n")
        self.assertEqual(fact.throttle.retry_after("127.0.0.1"), 0.0)
        pool.run_all()
        self.assertEqual(codes(replies(t)), [b"235 2.7.0"])
        for i in range(2):
            other, t2 = self.start(ip="127.0.0.1", factory=fact)
            other.dataReceived(b"AUTH PLAIN " + b64(b"\0alice\0x%d" % i) + b"\r\n")
            pool.run_all()
            self.assertEqual(codes(replies(t2)), [b"535 5.7.8"])
        self.assertFalse(fact.throttle.is_blocked("127.0.0.1"))

    def test_verified_password_while_blocked(self) -> None:
        """A blocked address is refused pbkdf2 work, not a password verified before:
        that one gets 235 with no hashing; others, right or wrong, get 454."""
        users = {**USERS, "bob": hash_password("b0b", iterations=1000)}
        pool = QueuedRunner()
        fact = self.factory(max_auth_failures=3, max_connections_per_ip=10)
        fact.portal = build_portal(users, SecretVerifier(pool))
        proto, t = self.start(ip="127.0.0.1", factory=fact)
        proto.dataReceived(b"AUTH PLAIN " + b64(b"\0alice\0s3cret") + b"\r\n")
        pool.run_all()
        self.assertEqual(codes(replies(t)), [b"235 2.7.0"])
        for i in range(3):
            other, t2 = self.start(ip="127.0.0.1", factory=fact)
            other.dataReceived(b"AUTH PLAIN " + b64(b"\0alice\0x%d" % i) + b"\r\n")
            pool.run_all()
        self.assertTrue(fact.throttle.is_blocked("127.0.0.1"))
        for credentials, expected in ((b"\0alice\0s3cret", b"235 2.7.0"),
                                      (b"\0bob\0b0b", b"454 4.7.0"),
                                      (b"\0alice\0guess", b"454 4.7.0"),
                                      (b"\0ghost\0s3cret", b"454 4.7.0")):
            proto, t = self.start(ip="127.0.0.1", factory=fact)
            proto.dataReceived(b"AUTH PLAIN " + b64(credentials) + b"\r\n")
            self.assertEqual(codes(replies(t)), [expected], credentials)
        self.assertEqual(pool.jobs, [])


class MessageTests(_Base):
    def send(self, message: bytes, proto=None, t=None) -> list[bytes]:
        if proto is None:
            proto, t = self.start(ip="127.0.0.1")
        proto.dataReceived(b"MAIL FROM:<app@example.org>\r\nRCPT TO:<a@example.com>\r\n"
                           b"DATA\r\n" + message + b".\r\n")
        return replies(t)

    def body(self) -> bytes:
        (delivery,) = self.deliveries()
        return self.successResultOf(Deferred.fromCoroutine(
            self.store.load_body(delivery.message_pk)))

    def test_identifiers_recorded_and_removed(self) -> None:
        """X-Hurricane-* headers are stored as ids and cut from the bytes; the rest is kept."""
        lines = self.send(b"From: App <app@example.org>\r\nX-Hurricane-Mailing-Id: Spring-Sale\r\n"
                          b"Subject:  keep   this\r\n\tfolded\r\nX-Hurricane-Message-Id: M-1\r\n"
                          b"Message-ID: <abc@app.example>\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000"
                          b"\r\n\r\nX-Hurricane-Mailing-Id: in body stays\r\n")
        self.assertTrue(lines[-1].startswith(b"250 2.0.0 Ok: queued as "))
        (delivery,) = self.deliveries()
        self.assertEqual((delivery.mailing_id, delivery.message_id, delivery.header_message_id),
                         ("Spring-Sale", "M-1", "abc@app.example"))
        body = self.body()
        self.assertIn(b"\r\nFrom: App <app@example.org>\r\nSubject:  keep   this\r\n\tfolded\r\n"
                      b"Message-ID: <abc@app.example>\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000"
                      b"\r\n\r\nX-Hurricane-Mailing-Id: in body stays\r\n", body)
        self.assertTrue(body.startswith(b"Received: from app.example ([127.0.0.1])"))

    def test_near_miss_header_warned(self) -> None:
        """X-Mailing-Id is not read: the message is queued without a mailing id, and a
        warning names the header and the one meant, in the log and in the 250 reply."""
        from twisted.logger import LogLevel, capturedLogs

        with capturedLogs() as events:
            lines = self.send(b"X-Mailing-Id: spring\r\nSubject: s\r\n\r\nhi\r\n")
        self.assertRegex(lines[-1], rb"^250 2\.0\.0 Ok: queued as \S+ \(ignored X-Mailing-Id: "
                                    rb"Hurricane reads X-Hurricane-Mailing-Id\)$")
        (delivery,) = self.deliveries()
        self.assertIsNone(delivery.mailing_id)
        warnings = [e for e in events if e["log_level"] is LogLevel.warn]
        self.assertEqual(len(warnings), 1)
        self.assertEqual((warnings[0]["header"], warnings[0]["expected"],
                          warnings[0]["queue_id"]),
                         ("X-Mailing-Id", "X-Hurricane-Mailing-Id", delivery.queue_id))

    def test_message_id_and_date_added(self) -> None:
        """A message without Message-ID and Date gets both."""
        self.send(b"Subject: bare\r\n\r\nhi\r\n")
        body = self.body()
        self.assertRegex(body, rb"\r\nMessage-ID: <[0-9a-f]+@submit\.test\.example>\r\n")
        self.assertRegex(body, rb"\r\nDate: \w{3}, \d\d \w{3} 2023 [\d:]{8} \+0000\r\n\r\nhi")
        (delivery,) = self.deliveries()
        self.assertTrue(delivery.header_message_id.endswith("@submit.test.example"))

    def test_bad_identifier_refused(self) -> None:
        """A bad identifier header gets 550 5.6.0 naming the header; nothing is queued."""
        for header, name in [
            (b"X-Hurricane-Mailing-Id: has space\r\n", b"X-Hurricane-Mailing-Id"),
            (b"X-Hurricane-Message-Id: " + b"m" * 31 + b"\r\n", b"X-Hurricane-Message-Id"),
            (b"X-Hurricane-Mailing-Id: " + b"a" * 20 + b"\r\nX-Hurricane-Message-Id: "
             + b"b" * 20 + b"\r\n", b"together"),
            (b"X-Hurricane-Mailing-Id: a\r\nX-Hurricane-Mailing-Id: b\r\n",
             b"more than once"),
        ]:
            lines = self.send(b"Subject: x\r\n" + header + b"\r\nbody\r\n")
            self.assertTrue(lines[-1].startswith(b"550 5.6.0"), lines[-1])
            self.assertIn(name, lines[-1])
        self.assertEqual(self.deliveries(), [])
        self.assertEqual(self.woken, 0)

    def test_store_failure_answers_451(self) -> None:
        """StoreUnavailable at enqueue answers 451 4.3.0 and does not wake the scheduler."""
        proto, t = self.start(ip="127.0.0.1")
        self.store.fail_next()
        lines = self.send(b"Subject: x\r\n\r\nbody\r\n", proto, t)
        self.assertEqual(codes(lines)[-1], b"451 4.3.0")
        self.assertEqual(self.woken, 0)
        lines = self.send(b"Subject: x\r\n\r\nbody\r\n", proto, t)
        self.assertEqual(codes(lines)[-1], b"250 2.0.0")

    def test_bare_lf_refused(self) -> None:
        """Submission refuses a body with a bare LF (550 5.6.2) rather than guess."""
        lines = self.send(b"Subject: x\r\n\r\nbody\nmore\r\n")
        self.assertEqual(codes(lines)[-1], b"550 5.6.2")

    def test_suppressed_recipient_still_250(self) -> None:
        """A suppressed recipient is recorded as such by the store; the reply is still 250."""
        self.successResultOf(Deferred.fromCoroutine(
            self.store.suppress("a@example.com", "userunknown", 1.0)))
        lines = self.send(b"Subject: x\r\n\r\nbody\r\n")
        self.assertEqual(codes(lines)[-1], b"250 2.0.0")
        (delivery,) = self.deliveries()
        self.assertEqual(delivery.state, State.suppressed)


class ConnectionLimitTests(_Base):
    """Trusted networks and authenticated clients are exempt from the per-address limit."""

    def open(self, fact: SubmissionFactory, ip: str) -> tuple[Any, StringTransport, bytes]:
        """Connect a client at ``ip``; the protocol, its transport and its greeting's code."""
        proto, t = connect(fact, ip=ip)
        self.protos.append(proto)
        first = replies(t)[0][:3]
        if first != b"220":
            disconnect(proto)
        return proto, t, first

    def auth(self, proto: Any, t: StringTransport, password: bytes = b"s3cret") -> bytes:
        """EHLO and AUTH PLAIN as alice; the AUTH reply's code."""
        proto.dataReceived(b"EHLO app.example\r\n")
        replies(t)
        proto.dataReceived(b"AUTH PLAIN " + b64(b"\0alice\0" + password) + b"\r\n")
        return codes(replies(t))[0][:3]

    def test_trusted_pool_greeted(self) -> None:
        """50 simultaneous connections from 127.0.0.1 (trusted) are all greeted."""
        fact = self.factory()
        self.assertEqual(fact.config.max_connections_per_ip, 20)
        greetings = [self.open(fact, "127.0.0.1")[2] for _ in range(50)]
        self.assertEqual(greetings, [b"220"] * 50)
        self.assertEqual(fact.connections.count(), 50)
        self.assertEqual(fact.connections.count("127.0.0.1"), 0)

    def test_untrusted_limited(self) -> None:
        """From an address outside trusted_networks the 21st connection gets 421 4.7.0."""
        fact = self.factory()
        greetings = [self.open(fact, OUTSIDE)[2] for _ in range(21)]
        self.assertEqual(greetings, [b"220"] * 20 + [b"421"])
        # the trusted pool next to it is not affected
        self.assertEqual(self.open(fact, "127.0.0.1")[2], b"220")

    def test_global_cap_holds(self) -> None:
        """max_connections still bounds trusted connections, and everyone else with them."""
        fact = self.factory(max_connections=30)
        greetings = [self.open(fact, "127.0.0.1")[2] for _ in range(31)]
        self.assertEqual(greetings, [b"220"] * 30 + [b"421"])
        self.assertEqual(self.open(fact, OUTSIDE)[2], b"421")
        disconnect(self.protos[0])
        self.assertEqual(self.open(fact, OUTSIDE)[2], b"220")

    def test_require_auth_keeps_exemption(self) -> None:
        """With require_auth, trusted hosts must AUTH to send but their pools are not capped."""
        fact = self.factory(require_auth=True)
        greetings = [self.open(fact, "127.0.0.1")[2] for _ in range(30)]
        self.assertEqual(greetings, [b"220"] * 30)

    def test_authenticated_stops_counting(self) -> None:
        """Past the limit, a new connection is admitted once an earlier one authenticated."""
        # 127.0.0.2 is loopback (AUTH offered without TLS) but not trusted here.
        fact = self.factory(trusted_networks=(), max_connections_per_ip=2)
        ip = "127.0.0.2"
        first, t1, _ = self.open(fact, ip)
        self.open(fact, ip)
        self.assertEqual(self.open(fact, ip)[2], b"421")
        self.assertEqual(self.auth(first, t1), b"235")
        self.assertEqual(fact.connections.count(ip), 1)
        self.assertEqual(self.open(fact, ip)[2], b"220")
        self.assertEqual(self.open(fact, ip)[2], b"421")
        # the authenticated connection sends, and leaves without freeing a slot twice
        first.dataReceived(b"MAIL FROM:<app@example.org>\r\nRCPT TO:<a@example.com>\r\n")
        self.assertEqual(codes(replies(t1)), [b"250 2.1.0", b"250 2.1.5"])
        self._disconnect_all()
        self.assertEqual((fact.connections.count(), fact.connections.count(ip)), (0, 0))

    def test_failed_auth_still_counts(self) -> None:
        """A connection whose AUTH failed still counts against its address."""
        fact = self.factory(trusted_networks=(), max_connections_per_ip=1)
        proto, t, _ = self.open(fact, "127.0.0.2")
        self.assertEqual(self.auth(proto, t, b"wrong"), b"535")
        self.assertEqual(self.open(fact, "127.0.0.2")[2], b"421")
