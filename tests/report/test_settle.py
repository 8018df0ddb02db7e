"""hurricane.report.settle: the settling delays and when a mailing's outcome is known."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from hurricane.report.settle import (
    FALLBACK_DELAY,
    LOOKBACK,
    MIN_SAMPLES,
    SAMPLE_SIZE,
    SettleModels,
    build_model,
    quantile,
    settlement,
)
from hurricane.store.interface import LateOutcome, MailingRollup, SettleCounts
from hurricane.store.memory import MemoryStore

from .helpers import T0, run
from .scenario import populate_report


def late(domain: str, *seconds: float) -> list[LateOutcome]:
    """Bounces of ``domain`` after each delay."""
    return [LateOutcome(domain, "bounced", s) for s in seconds]


class QuantileTests(SynchronousTestCase):
    """Nearest-rank quantiles: always a measured value."""

    def test_table(self) -> None:
        """The 99th percentile of 100 values is the 99th; of 50, the largest but none."""
        self.assertEqual(quantile(list(range(1, 101)), 0.99), 99)
        self.assertEqual(quantile(list(range(1, 51)), 0.99), 50)
        self.assertEqual(quantile([5.0], 0.99), 5.0)
        self.assertEqual(quantile([3, 1, 2], 0.5), 2)


class ModelTests(SynchronousTestCase):
    """build_model: per-domain delays where measured, else all providers, else 72 h."""

    def test_fallback_without_samples(self) -> None:
        """Fewer than MIN_SAMPLES late outcomes in all: every domain waits FALLBACK_DELAY."""
        model = build_model(late("a.test", *range(MIN_SAMPLES - 1)))
        self.assertEqual((model.delay("a.test"), model.delay("b.test")),
                         (FALLBACK_DELAY, FALLBACK_DELAY))
        self.assertEqual(model.default_samples, 0)
        self.assertIn("fallback", model.source("b.test"))

    def test_domains_measured_apart(self) -> None:
        """A domain with enough samples has its own 99th percentile; the others share the
        percentile of the whole sample (domain names compared case-insensitively)."""
        fast = late("Fast.test", *[float(s) for s in range(1, 101)])
        slow = late("slow.test", *[1000.0 * s for s in range(1, 101)])
        few = late("few.test", 5e6, 5e6)
        model = build_model(fast + slow + few)
        self.assertEqual(model.delay("fast.test"), 99.0)
        self.assertEqual(model.delay("SLOW.test"), 99_000.0)
        everything = sorted([float(s) for s in range(1, 101)]
                            + [1000.0 * s for s in range(1, 101)] + [5e6, 5e6])
        self.assertEqual(model.delay("few.test"), quantile(everything, 0.99))
        self.assertEqual(model.delay("other.test"), model.default)
        self.assertEqual(model.delays(), {"fast.test": 99.0, "slow.test": 99_000.0})
        self.assertEqual(model.source("fast.test"), "its own: 100 late outcomes")
        self.assertEqual(model.source_short("few.test"), "all providers")

    def test_negative_times_are_zero(self) -> None:
        """Clocks of two nodes may disagree: a negative time counts as zero."""
        model = build_model(late("a.test", *([-5.0] * MIN_SAMPLES)))
        self.assertEqual(model.delay("a.test"), 0.0)


class ModelCacheTests(SynchronousTestCase):
    """SettleModels: one bounded read of the store per TTL."""

    def test_reads_once_per_ttl(self) -> None:
        """The model is read from the most recent SAMPLE_SIZE late outcomes of LOOKBACK,
        and read again only after the TTL."""
        store = MemoryStore()
        run(store.open())
        run(populate_report(store, T0))
        calls = []
        original = store.late_outcomes

        async def counting(since: float, limit: int) -> list[LateOutcome]:
            calls.append((since, limit))
            return await original(since, limit)

        store.late_outcomes = counting  # type: ignore[method-assign]
        clock = Clock()
        clock.advance(T0)
        models = SettleModels(store, clock, ttl=300)
        first = run(models.current())
        self.assertEqual(calls, [(T0 - LOOKBACK, SAMPLE_SIZE)])
        self.assertIn("gmail.test", first.domains)
        self.assertIn("yahoo.test", first.domains)
        self.assertLess(first.delay("gmail.test"), first.delay("yahoo.test"))
        clock.advance(299)
        self.assertIs(run(models.current()), first)
        clock.advance(1)
        run(models.current())
        self.assertEqual(len(calls), 2)


class SettlementTests(SynchronousTestCase):
    """settlement: settled share and done, from fresh counts or a stored rollup."""

    def counts(self, settled: int, settles_at: float | None, **by_state: int) -> SettleCounts:
        """SettleCounts of the given states."""
        return SettleCounts(by_state=by_state, settled=settled, settles_at=settles_at,
                            last_delivered_at=None)

    def test_pending_is_not_done(self) -> None:
        """Anything queued or deferred keeps a mailing open whatever the time."""
        s = settlement(self.counts(3, T0, delivered=3, deferred=1), T0 + 10**6)
        self.assertEqual((s.done, s.pending, s.settled, s.share), (False, 1, 3, 0.75))

    def test_settling_then_done(self) -> None:
        """Before settles_at the share is what was counted; at settles_at it is all."""
        counts = self.counts(1, T0 + 100, delivered=3, failed=1)
        self.assertEqual(settlement(counts, T0 + 99).share, 0.25)
        done = settlement(counts, T0 + 100)
        self.assertEqual((done.done, done.share, done.settles_at), (True, 1.0, T0 + 100))

    def test_nothing_delivered(self) -> None:
        """A mailing whose recipients all failed has settled (nothing can come back)."""
        s = settlement(self.counts(2, None, failed=2), T0)
        self.assertEqual((s.done, s.share), (True, 1.0))

    def test_stored_rollup(self) -> None:
        """A rollup counted earlier is read the same way."""
        rollup = MailingRollup(mailing_key="m", mailing_id="M", first_at=T0, computed_at=T0,
                               last_at=T0, messages=1, by_state={"delivered": 4}, settled=0,
                               settles_at=T0 + 60)
        self.assertEqual(settlement(rollup, T0 + 30).share, 0.0)
        self.assertEqual(settlement(rollup, T0 + 60).share, 1.0)
