"""Tests of hurricane.inbound.retention: old returned mail loses its raw bytes, on a Clock."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from hurricane.inbound.retention import BounceRetention
from hurricane.model import ReturnedMessage
from hurricane.store.memory import MemoryStore

from .helpers import run

DAY = 86400.0
T0 = 1_800_000_000.0


class RetentionTests(SynchronousTestCase):
    """The periodic purge keeps pending and recent mail, and survives an outage."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(T0)
        self.store = MemoryStore()
        run(self.store.open())
        self.ids = [run(self.store.store_bounce(ReturnedMessage(
            b"raw %d" % i, "", "postmaster", T0 + i * DAY))) for i in range(4)]
        for bounce_id in self.ids[1:]:
            run(self.store.record_bounce(bounce_id, [], "other", None, "{}"))
        self.service = BounceRetention(self.store, self.clock, 10 * DAY, interval=DAY,
                                       batch=1)

    def tearDown(self) -> None:
        if self.service.running:
            self.service.stopService()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def raws(self) -> list[bytes]:
        return [run(self.store.load_bounce(i)).raw for i in self.ids]

    def test_purges_on_schedule(self) -> None:
        """Each day's run drops what passed the period, in batches; pending mail stays."""
        self.service.startService()
        self.assertEqual(self.raws(), [b"raw 0", b"raw 1", b"raw 2", b"raw 3"])
        self.clock.advance(12.5 * DAY)  # one run: received before T0 + 2.5 days
        self.assertEqual(self.raws(), [b"raw 0", b"", b"", b"raw 3"])
        self.assertEqual(self.service.purged, 2)
        self.clock.advance(DAY)
        self.assertEqual(self.raws(), [b"raw 0", b"", b"", b""])
        self.assertEqual(run(self.store.pending_bounces(10)), [self.ids[0]])

    def test_backlog_in_batches(self) -> None:
        """A run after a long pause purges everything due, one batch after another."""
        self.clock.advance(20 * DAY)
        self.service.startService()
        self.assertEqual(self.raws(), [b"raw 0", b"", b"", b""])

    def test_store_outage(self) -> None:
        """A store outage is logged; the next run purges."""
        self.clock.advance(20 * DAY)
        self.store.set_available(False)
        self.service.startService()
        self.assertEqual(len(self.flushLoggedErrors()), 0)
        self.store.set_available(True)
        self.assertEqual(self.raws(), [b"raw 0", b"raw 1", b"raw 2", b"raw 3"])
        self.clock.advance(DAY)
        self.assertEqual(self.raws(), [b"raw 0", b"", b"", b""])

    def test_refuses_zero(self) -> None:
        """Zero retention is "keep for ever": no service is built for it."""
        self.assertRaises(ValueError, BounceRetention, self.store, self.clock, 0)
