"""DestinationPool alone: queues, workers, connection reuse, limits, idle dismissal."""

from __future__ import annotations

import random
from collections.abc import Iterable

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import SynchronousTestCase

from hurricane.decisions import Attempt, LocalFailure, SessionFailure
from hurricane.model import Delivery, State
from hurricane.outbound.dialer import Dialer
from hurricane.outbound.interface import ConnectionFailed, ISMTPConnection
from hurricane.outbound.mx import MXResolver
from hurricane.outbound.pool import (
    DestinationKey,
    DestinationLimits,
    DestinationPool,
    PoolSettings,
)
from hurricane.outcome import Reason

from .fakes import FakeConnector, FakeResolver


def delivery(delivery_id: int, domain: str = "example.com", message_pk: int | None = None,
             ) -> Delivery:
    """A claimed row to ``domain``."""
    return Delivery(
        delivery_id=delivery_id, message_pk=message_pk or delivery_id, queue_id=f"Q{delivery_id}",
        sender="s@shop.example", recipient=f"u{delivery_id}@{domain}", domain=domain,
        state=State.queued, reason=None, hard=False, attempts=0, next_attempt_at=None,
        code=None, status=None, text=None, remote_host=None, mailing_id=None, message_id=None,
        header_message_id=None, orcpt=None, created_at=0.0, updated_at=0.0,
    )


class FakeDispatch:
    """Records transactions (each takes ``delay`` seconds) and failures."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.delay = 0.0
        self.sent: list[tuple[ISMTPConnection, list[int]]] = []
        self.failed: list[tuple[list[int], Attempt, str | None]] = []
        self.raises: Exception | None = None

    async def send(self, conn: ISMTPConnection, batch: list[Delivery]) -> bool:
        self.sent.append((conn, [d.delivery_id for d in batch]))
        if self.delay:
            await deferLater(self.clock, self.delay, lambda: None)
        if self.raises is not None:
            raise self.raises
        return True

    def fail(self, batch: Iterable[Delivery], attempt: Attempt, *, host: str | None = None,
             ip: str | None = None) -> None:
        self.failed.append(([d.delivery_id for d in batch], attempt, host))


class PoolTests(SynchronousTestCase):
    """The pool over a fake DNS, a fake connector and a fake dispatch."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.dns = FakeResolver()
        self.dns.add_mx("example.com", (10, "mx1.example.com"))
        self.dns.add_host("mx1.example.com", "192.0.2.1")
        self.connector = FakeConnector(self.clock)
        self.dispatch = FakeDispatch(self.clock)
        self.settled = 0

    def pool(self, **kw: object) -> DestinationPool:
        resolver = MXResolver(self.dns, self.clock, {}, 3600, rng=random.Random(0))
        limits = kw.pop("limits", DestinationLimits())
        settings = PoolSettings(limits=limits, **kw)  # type: ignore[arg-type]

        def settled() -> None:
            self.settled += 1

        self.subject = DestinationPool(Dialer(resolver, self.connector, "out.example"),
                                       self.dispatch, self.clock, settings, on_settled=settled)
        return self.subject

    def tearDown(self) -> None:
        self.subject.stop()
        self.successResultOf(self.subject.close_all())
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_one_connection_carries_the_queue(self) -> None:
        """With one connection allowed, three deliveries go one per transaction on it, FIFO."""
        pool = self.pool(limits=DestinationLimits(max_connections=1))
        pool.add([delivery(1), delivery(2), delivery(3)])
        self.assertEqual([ids for _, ids in self.dispatch.sent], [[1], [2], [3]])
        self.assertEqual(len(self.connector.connections), 1)
        self.assertEqual(pool.stats()["example.com"]["idle"], 1)

    def test_idle_connection_reused_then_dismissed(self) -> None:
        """Work within idle_grace goes on the idle connection; after it, it closes."""
        pool = self.pool(idle_grace=2.0)
        pool.add([delivery(1)])
        self.clock.advance(1.5)
        pool.add([delivery(2)])
        self.assertEqual(len(self.connector.connections), 1)
        self.clock.advance(2.0)
        self.assertEqual(self.connector.open_connections(), 0)
        self.assertEqual(pool.stats(), {})
        self.assertFalse(pool.busy)
        self.assertGreater(self.settled, 0)

    def test_more_connections_once_one_works(self) -> None:
        """A slow destination gets up to max_connections, the first one first."""
        self.dispatch.delay = 1.0
        pool = self.pool(limits=DestinationLimits(max_connections=3))
        pool.add([delivery(i) for i in range(1, 7)])
        self.assertEqual(len(self.connector.connections), 3)
        self.clock.advance(1.0)
        self.clock.advance(1.0)
        self.assertEqual(sorted(i for _, ids in self.dispatch.sent for i in ids),
                         list(range(1, 7)))

    def test_limits_per_key(self) -> None:
        """A limits function gives each destination its own limits (issue 19's seam)."""
        resolver = MXResolver(self.dns, self.clock, {}, 3600, rng=random.Random(0))
        self.dispatch.delay = 1.0

        def limits(key: DestinationKey) -> DestinationLimits:
            return DestinationLimits(max_connections=1 if key.domain == "example.com" else 5)

        self.subject = DestinationPool(Dialer(resolver, self.connector, "out.example"),
                                       self.dispatch, self.clock, PoolSettings(),
                                       limits_for=limits)
        self.subject.add([delivery(i) for i in range(1, 5)])
        self.assertEqual(len(self.connector.connections), 1)
        for _ in range(4):
            self.clock.advance(1.0)

    def test_messages_per_connection(self) -> None:
        """A connection that carried messages_per_connection transactions is replaced."""
        pool = self.pool(limits=DestinationLimits(max_connections=1, messages_per_connection=2))
        pool.add([delivery(i) for i in range(1, 6)])
        self.assertEqual([len([s for s in self.dispatch.sent if s[0] is c])
                          for c in self.connector.connections], [2, 2, 1])

    def test_rate(self) -> None:
        """rate_per_minute spaces transactions and keeps one connection."""
        pool = self.pool(limits=DestinationLimits(rate_per_minute=60))
        pool.add([delivery(i) for i in range(1, 4)])
        self.assertEqual(len(self.dispatch.sent), 1)
        self.clock.advance(1.0)
        self.assertEqual(len(self.dispatch.sent), 2)
        self.clock.advance(1.0)
        self.assertEqual(len(self.dispatch.sent), 3)
        self.assertEqual(len(self.connector.connections), 1)

    def test_per_message_batches(self) -> None:
        """per-message: recipients of one message share a transaction, up to the limit."""
        pool = self.pool(per_message=True, max_recipients_per_transaction=2)
        pool.add([delivery(1, message_pk=9), delivery(2, message_pk=8),
                  delivery(3, message_pk=9), delivery(4, message_pk=9)])
        self.assertEqual([ids for _, ids in self.dispatch.sent], [[1, 3], [2], [4]])

    def test_saturated_and_take_back(self) -> None:
        """A long queue is saturated; take_back returns the newest waiting rows."""
        self.dispatch.delay = 100.0
        pool = self.pool(limits=DestinationLimits(max_connections=1, rate_per_minute=1),
                         lease_seconds=600)
        pool.add([delivery(i) for i in range(1, 11)])
        self.assertEqual(pool.saturated(), ["example.com"])  # half a lease: 5 at 1/min
        self.assertEqual(pool.waiting(), 9)
        self.assertEqual(pool.domains(), ["example.com"])
        self.assertEqual([d.delivery_id for d in pool.take_back(2)], [10, 9])
        self.assertEqual(pool.waiting(), 7)
        self.assertEqual(len(pool.stop()), 7)
        self.clock.advance(100.0)

    def test_dns_failure_fails_the_queue(self) -> None:
        """NXDOMAIN hands every queued delivery to dispatch.fail, permanent."""
        self.dns.nxdomain.add("nowhere.example")
        pool = self.pool()
        pool.add([delivery(1, "nowhere.example"), delivery(2, "nowhere.example")])
        [(ids, attempt, host)] = self.dispatch.failed
        self.assertEqual((ids, host), ([1, 2], None))
        assert isinstance(attempt, LocalFailure)
        self.assertEqual((attempt.reason, attempt.permanent), (Reason.hostunknown, True))

    def test_connection_failure_fails_the_queue_with_the_host(self) -> None:
        """Every address failing hands the queue to dispatch.fail with the last host."""
        self.connector.failures["192.0.2.1"] = ConnectionFailed("refused", "connect")
        pool = self.pool()
        pool.add([delivery(1)])
        [(ids, attempt, host)] = self.dispatch.failed
        self.assertEqual((ids, host), ([1], "mx1.example.com"))
        self.assertIsInstance(attempt, SessionFailure)

    def test_dispatch_error_fails_the_batch(self) -> None:
        """A dispatch that raises fails its batch as systemerror; the pool goes on."""
        self.dispatch.raises = RuntimeError("bug")
        pool = self.pool()
        pool.add([delivery(1), delivery(2)])
        self.flushLoggedErrors(RuntimeError)
        self.assertEqual([(ids, a.reason) for ids, a, _ in self.dispatch.failed],  # type: ignore[union-attr]
                         [([1], Reason.systemerror), ([2], Reason.systemerror)])

    def test_stop_returns_unstarted_and_dismisses_idle(self) -> None:
        """stop() hands back what did not start and closes idle connections."""
        self.dispatch.delay = 5.0
        pool = self.pool(limits=DestinationLimits(max_connections=1))
        pool.add([delivery(1), delivery(2)])
        unstarted = pool.stop()
        self.assertEqual([d.delivery_id for d in unstarted], [2])
        self.assertTrue(pool.busy)
        self.clock.advance(5.0)
        self.assertFalse(pool.busy)
        self.assertEqual(self.connector.open_connections(), 0)

    def test_abandon_cancels_stuck_workers(self) -> None:
        """abandon() cancels workers that never finish."""
        self.connector.hang_sends = True
        held: list[Deferred[None]] = []

        async def hang(conn: ISMTPConnection, batch: list[Delivery]) -> bool:
            gate: Deferred[None] = Deferred()
            held.append(gate)
            await gate
            return True

        pool = self.pool()
        self.dispatch.send = hang  # type: ignore[method-assign]
        pool.add([delivery(1)])
        pool.stop()
        self.assertEqual(pool.abandon(), 1)
        self.assertFalse(pool.busy)
