"""Dispatcher and AttemptJudge alone: what goes on the wire, what is recorded."""

from __future__ import annotations

import random
from collections.abc import Sequence

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from hurricane.decisions import LocalFailure, RecipientAnswer
from hurricane.model import AttemptResult, Delivery, State
from hurricane.outbound.bodies import BodyCache
from hurricane.outbound.dispatch import AttemptJudge, Dispatcher
from hurricane.outbound.interface import (
    OutboundMessage,
    RecipientReply,
    Reply,
    SessionInfo,
)
from hurricane.outbound.retry import RetryPolicy
from hurricane.outcome import Phase, Reason
from hurricane.verp import VerpCodec, VerpKey, VerpToken

from .fakes import FakeClassifier, FakeConnection, FakeConnector
from .test_pool import delivery

BODY = b"From: a@shop.example\nSubject: hi\n\nHello.\n"


class Bodies:
    """Every message has BODY; ``fail`` makes loading fail."""

    fail = False

    async def load_body(self, message_pk: int) -> bytes:
        if self.fail:
            raise OSError("disk (test)")
        return BODY


class DispatcherTests(SynchronousTestCase):
    """One transaction per batch, each recipient recorded through finish()."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.source = Bodies()
        self.codec = VerpCodec("bounce.example.net", [VerpKey(0, b"k" * 32, 0.0)],
                               today=lambda: 1)
        judge = AttemptJudge(FakeClassifier(), RetryPolicy(300, 3600, 0.0), 3600.0, "node-1",
                             random.Random(0))
        self.finished: list[tuple[int, AttemptResult]] = []
        self.given_back: list[tuple[list[int], str]] = []

        def finish(d: Delivery, result: AttemptResult) -> None:
            self.finished.append((d.delivery_id, result))

        async def give_back(batch: Sequence[Delivery], why: str) -> None:
            self.given_back.append(([d.delivery_id for d in batch], why))

        self.dispatcher = Dispatcher(BodyCache(self.source, self.clock), self.codec, judge,
                                     self.clock, finish, give_back)
        self.connector = FakeConnector(self.clock)
        self.conn = FakeConnection(self.connector, SessionInfo("mx.example.com", "192.0.2.1", 25,
                                                               tls="TLSv1.3"))

    def send(self, batch: list[Delivery]) -> bool:
        return self.successResultOf(Deferred.fromCoroutine(self.dispatcher.send(self.conn,
                                                                                batch)))

    def test_one_recipient(self) -> None:
        """One delivery: its own VERP sender, token header, ORCPT, delivered with the facts."""
        self.connector.send_delay = 2.0
        d = Deferred.fromCoroutine(self.dispatcher.send(self.conn, [delivery(7)]))
        self.clock.advance(2.0)
        self.assertTrue(self.successResultOf(d))
        [message] = self.conn.sent
        token = self.codec.decode(message.mail_from)
        assert isinstance(token, VerpToken)
        self.assertEqual((token.delivery_id, token.per_message), (7, False))
        header = b"X-Hurricane-Token: " + message.mail_from.encode()
        self.assertTrue(message.body.startswith(header))
        self.assertEqual(message.recipients[0].orcpt, "rfc822;u7@example.com")
        [(did, result)] = self.finished
        self.assertEqual((did, result.state, result.remote_host, result.remote_ip, result.tls,
                          result.duration, result.owner),
                         (7, State.delivered, "mx.example.com", "192.0.2.1", "TLSv1.3", 2.0,
                          "node-1"))

    def test_shared_return_path_is_per_message(self) -> None:
        """Several recipients share one MAIL FROM marked per-message."""
        self.send([delivery(1, message_pk=5), delivery(2, message_pk=5)])
        token = self.codec.decode(self.conn.sent[0].mail_from)
        assert isinstance(token, VerpToken)
        self.assertEqual((token.delivery_id, token.per_message), (1, True))
        self.assertEqual([did for did, _ in self.finished], [1, 2])

    def test_missing_reply_is_deferred(self) -> None:
        """A recipient the connection gave no reply for is deferred as networkerror."""
        def one_reply(conn: FakeConnection, message: OutboundMessage) -> list[RecipientReply]:
            first = message.recipients[0]
            return [RecipientReply(first.delivery_id, Reply(250, "2.0.0", "ok"), Phase.dot)]

        self.connector.responder = one_reply
        self.send([delivery(1, message_pk=5), delivery(2, message_pk=5)])
        results = dict(self.finished)
        self.assertEqual(results[1].state, State.delivered)
        self.assertEqual((results[2].state, results[2].text),
                         (State.deferred, "no reply for this recipient"))

    def test_send_raising_makes_the_connection_unusable(self) -> None:
        """A connection whose send() raises: every recipient deferred, False returned."""
        def broken(conn: FakeConnection, message: OutboundMessage) -> list[RecipientReply]:
            raise RuntimeError("client bug")

        self.connector.responder = broken
        self.assertFalse(self.send([delivery(1)]))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(self.finished[0][1].state, State.deferred)

    def test_body_unavailable_gives_the_leases_back(self) -> None:
        """A body that cannot be loaded: nothing sent, nothing recorded, leases returned."""
        self.source.fail = True
        self.assertTrue(self.send([delivery(1)]))
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        self.assertEqual((self.conn.sent, self.finished), ([], []))
        self.assertEqual(self.given_back, [([1], "body unavailable")])

    def test_identifiers_that_cannot_make_a_return_path(self) -> None:
        """Identifiers too long for a return path fail permanently as mailererror, unsent."""
        row = delivery(1)
        row = Delivery(**{**row.__dict__, "mailing_id": "m" * 80})
        self.assertTrue(self.send([row]))
        self.assertEqual(self.conn.sent, [])
        [(_, result)] = self.finished
        self.assertEqual((result.state, result.reason), (State.failed, Reason.mailererror))

    def test_fail_records_each_with_the_host(self) -> None:
        """fail() judges every delivery by the same attempt, with the host given."""
        self.dispatcher.fail([delivery(1), delivery(2)],
                             LocalFailure(Reason.networkerror, "down"), host="mx", ip="192.0.2.9")
        self.assertEqual([(d, r.state, r.remote_host, r.remote_ip) for d, r in self.finished],
                         [(1, State.deferred, "mx", "192.0.2.9"),
                          (2, State.deferred, "mx", "192.0.2.9")])


class AttemptJudgeTests(SynchronousTestCase):
    """decide_attempt's decision plus the retry time; nothing decided here."""

    def judge(self) -> AttemptJudge:
        return AttemptJudge(FakeClassifier(), RetryPolicy(300, 3600, 0.0), 3600.0, "n",
                            random.Random(0))

    def test_retry_time_doubles_with_attempts(self) -> None:
        """A deferral's next attempt follows the retry policy from the attempts made."""
        row = Delivery(**{**delivery(1).__dict__, "attempts": 1, "created_at": 900.0})
        result = self.judge().judge(row, RecipientAnswer(Phase.rcpt, Reply(451, "4.7.1", "later")),
                                    1000.0)
        self.assertEqual((result.state, result.next_attempt_at), (State.deferred, 1600.0))

    def test_expired_by_age(self) -> None:
        """Past max_age a temporary failure expires, with no next attempt."""
        row = delivery(1)  # created at 0
        result = self.judge().judge(row, LocalFailure(Reason.networkerror, "down"), 5000.0)
        self.assertEqual((result.state, result.next_attempt_at), (State.expired, None))
