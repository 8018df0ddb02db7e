"""Tests for hurricane.inbound.processor: from a stored returned message to outcomes."""

from __future__ import annotations

import queue
import threading
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from hurricane.bounce.analyze import AnalysisLimits
from hurricane.bounce.model import Analysis
from hurricane.inbound.executor import ThreadExecutor
from hurricane.inbound.processor import (
    BounceProcessor,
    ProcessorConfig,
    ProcessResult,
    run_inline,
)
from hurricane.inbound.recorder import RECORDED_LOG_DELAY
from hurricane.model import EventKind, State
from hurricane.store.interface import StoreUnavailable

from .helpers import (
    BOUNCE_DOMAIN,
    World,
    arf,
    autoreply,
    dsn,
    fake_analyze,
    free_text,
    result,
    run,
)


def release_held(held: list[tuple[Deferred[Any], Any, tuple[Any, ...], dict[str, Any]]]
                 ) -> None:
    """Run every call a held runner kept, in order, including those they add."""
    while held:
        d, f, a, kw = held.pop(0)
        d.callback(f(*a, **kw))


class _Base(SynchronousTestCase):
    """A world with one delivered message and a started processor."""

    def setUp(self) -> None:
        self.w = World()
        [self.d] = self.w.send(["alice@example.net"], header_message_id="m1@example.org")
        self.token = self.w.token(self.d)

    def start(self, **kwargs: Any) -> BounceProcessor:
        p = self.w.processor(**kwargs)
        p.startService()
        self.addCleanup(self.stop, p)
        return p

    def stop(self, p: BounceProcessor) -> None:
        if p.running:
            self.successResultOf(p.stopService())
        self.assertEqual(self.w.clock.getDelayedCalls(), [])

    def kinds(self, delivery_id: int) -> list[EventKind]:
        return [e.kind for e in self.w.events(delivery_id)]


class OutcomeTests(_Base):
    """What each kind of returned message does to a delivery (real analyzer)."""

    def test_delivered_then_bounced(self) -> None:
        """A hard DSN for a delivered message bounces it with reason, codes and suppression."""
        p = self.start()
        bid = self.w.receive(dsn("alice@example.net", token=self.token), self.token)
        p.submit(bid)
        row = self.w.delivery(self.d.delivery_id)
        self.assertEqual(row.state, State.bounced)
        self.assertEqual((row.reason, row.hard, row.code, row.status),
                         ("userunknown", True, 550, "5.1.1"))
        self.assertEqual(row.bounced_at, self.w.clock.seconds())
        ev = self.w.events(self.d.delivery_id)[-1]
        self.assertEqual(ev.kind, EventKind.bounce)
        self.assertEqual((ev.source, ev.correlation, ev.bounce_id), ("dsn", "verp", bid))
        self.assertEqual(ev.remote_host, "mx.example.net")
        self.assertIn("User unknown", ev.text)
        self.assertTrue(ev.rule and ev.rule.startswith("userunknown."), ev.rule)
        sup = run(self.w.store.get_suppression("alice@example.net"))
        self.assertEqual((sup.reason, sup.source), ("userunknown", "bounce"))
        stored = self.w.bounce(bid)
        self.assertEqual((stored.status, stored.category, stored.correlation),
                         ("analyzed", "bounce", "verp"))
        self.assertEqual(p.stats()["analyzed"], 1)
        self.assertEqual(p.stats()["by_category"], {"bounce": 1})

    def test_deferred_bounce_stops_retries(self) -> None:
        """A hard DSN for a deferred delivery moves it to bounced, so it is never claimed again."""
        [d] = self.w.send(["bob@example.net"], state=State.deferred)
        tok = self.w.token(d)
        p = self.start()
        p.submit(self.w.receive(dsn("bob@example.net", token=tok), tok))
        row = self.w.delivery(d.delivery_id)
        self.assertEqual(row.state, State.bounced)
        self.assertIsNone(row.next_attempt_at)
        due = run(self.w.store.claim_due(self.w.clock.seconds() + 86400, "n", 60, 100))
        self.assertNotIn(d.delivery_id, [x.delivery_id for x in due])

    def test_arf_complaint(self) -> None:
        """An ARF report to the feedback address marks the delivery complained and suppresses it."""
        p = self.start()
        bid = self.w.receive(arf("alice@example.net", token=self.token),
                             "fbl@" + BOUNCE_DOMAIN, verified=False)
        p.submit(bid)
        row = self.w.delivery(self.d.delivery_id)
        self.assertEqual(row.state, State.complained)
        ev = self.w.events(self.d.delivery_id)[-1]
        self.assertEqual((ev.kind, ev.feedback_type, ev.correlation, ev.source),
                         (EventKind.complaint, "abuse", "header-token", "arf"))
        # A complaint stops its stream (issue 20), not every stream.
        entries = run(self.w.store.suppression_entries("alice@example.net"))
        self.assertEqual([(e.scope, e.source) for e in entries],
                         [("stream:transactional", "complaint")])
        self.assertEqual(p.stats()["by_category"], {"feedback": 1})

    def test_autoreply_event_only(self) -> None:
        """An out-of-office reply adds an autoreply event and leaves the delivery delivered."""
        p = self.start()
        p.submit(self.w.receive(autoreply("alice@example.net", to=self.token), self.token))
        row = self.w.delivery(self.d.delivery_id)
        self.assertEqual(row.state, State.delivered)
        self.assertEqual(self.kinds(self.d.delivery_id)[-1], EventKind.autoreply)
        ev = self.w.events(self.d.delivery_id)[-1]
        self.assertEqual((ev.reason, ev.source), ("vacation", "autoreply"))
        self.assertIsNone(run(self.w.store.get_suppression("alice@example.net")))

    def test_delayed_dsn_event_only(self) -> None:
        """A "delayed" DSN adds a delayed event and never turns a delivery into a failure."""
        p = self.start()
        p.submit(self.w.receive(
            dsn("alice@example.net", action="delayed", status="4.2.2"), self.token))
        self.assertEqual(self.w.delivery(self.d.delivery_id).state, State.delivered)
        ev = self.w.events(self.d.delivery_id)[-1]
        self.assertEqual((ev.kind, ev.status, ev.code), (EventKind.delayed, "4.2.2", 451))
        self.assertIsNone(run(self.w.store.get_suppression("alice@example.net")))

    def test_same_message_twice_one_event(self) -> None:
        """The same returned message received twice (new Received line, CRLF vs LF) counts once."""
        p = self.start()
        raw = dsn("alice@example.net", token=self.token)
        again = (b"Received: from mx.example.net by bounce.example.com; later\r\n" + raw)
        p.submit(self.w.receive(raw, self.token))
        p.submit(self.w.receive(again.replace(b"\r\n", b"\n"), self.token))
        self.assertEqual(self.kinds(self.d.delivery_id).count(EventKind.bounce), 1)
        self.assertEqual(p.stats()["analyzed"], 2)
        self.assertEqual(p.stats()["events"], 1)

    def test_spam_rejection_does_not_suppress(self) -> None:
        """A 5.7.1 spam rejection bounces the delivery but never suppresses the recipient."""
        p = self.start()
        p.submit(self.w.receive(free_text(
            "alice@example.net", "550 5.7.1 Message rejected as spam by content filter",
            to=self.token), self.token))
        row = self.w.delivery(self.d.delivery_id)
        self.assertEqual((row.state, row.reason, row.hard), (State.bounced, "spamdetected", False))
        self.assertEqual(self.w.events(self.d.delivery_id)[-1].source, "heuristic")
        self.assertIsNone(run(self.w.store.get_suppression("alice@example.net")))

    def test_policy_rejection_does_not_suppress(self) -> None:
        """A 5.7.1 policy rejection never suppresses the recipient."""
        p = self.start()
        p.submit(self.w.receive(free_text(
            "alice@example.net", "550 5.7.1 rejected by policy", to=self.token), self.token))
        self.assertEqual(self.w.delivery(self.d.delivery_id).reason, "policyviolation")
        self.assertIsNone(run(self.w.store.get_suppression("alice@example.net")))

    def test_temporary_failure_is_not_permanent(self) -> None:
        """An Action: failed with a 4.x.x status is final: bounced, never hard or suppressed.

        (Until issue 22 it moved nothing and left the recipient delivered; but
        the reporter gave up: the message will not arrive.)
        """
        analysis = Analysis("bounce", (result("alice@example.net", code="452", status="4.2.2",
                                              reason="mailboxfull", hard=True, suppress=True),))
        p = self.start(analyze=fake_analyze(analysis))
        p.submit(self.w.receive(b"x", self.token))
        row = self.w.delivery(self.d.delivery_id)
        self.assertEqual((row.state, row.reason, row.hard), (State.bounced, "mailboxfull", False))
        self.assertEqual(self.kinds(self.d.delivery_id)[-1], EventKind.bounce)
        self.assertIsNone(run(self.w.store.get_suppression("alice@example.net")))

    def test_other_category_records_nothing(self) -> None:
        """A message of category other is marked analyzed with no event."""
        p = self.start()
        bid = self.w.receive(b"Subject: hello\r\n\r\nJust saying hi.\r\n", self.token)
        p.submit(bid)
        stored = self.w.bounce(bid)
        self.assertEqual((stored.status, stored.category), ("analyzed", "other"))
        self.assertEqual(self.kinds(self.d.delivery_id)[-1], EventKind.attempt)

    def test_uncorrelated_recorded_for_replay(self) -> None:
        """A bounce that correlates to nothing is still recorded, with no event and no key."""
        p = self.start()
        bid = self.w.receive(dsn("stranger@example.net"), "postmaster@" + BOUNCE_DOMAIN,
                             verified=False)
        p.submit(bid)
        stored = self.w.bounce(bid)
        self.assertEqual((stored.status, stored.category, stored.correlation),
                         ("analyzed", "bounce", None))
        self.assertEqual(p.stats()["uncorrelated"], 1)
        self.assertEqual(self.w.bounce(bid).raw, stored.raw)

    def test_limits_and_classifier_forwarded(self) -> None:
        """The configured analysis limits and classifier reach the analyzer."""
        seen: dict[str, Any] = {}

        def analyze(raw: bytes, envelope_rcpt: str | None = None, **kw: Any) -> Analysis:
            seen.update(kw, rcpt=envelope_rcpt)
            return Analysis("other")

        limits = AnalysisLimits(max_bytes=1000)
        p = self.start(analyze=analyze, limits=limits, classifier="clf")  # type: ignore[arg-type]
        p.submit(self.w.receive(b"x", self.token))
        self.assertEqual(seen, {"limits": limits, "classifier": "clf", "rcpt": self.token})


class FailureTests(_Base):
    """Store outages and analyzer failures lose nothing."""

    def test_store_failure_stays_pending_and_retried(self) -> None:
        """A store outage leaves the bounce pending and retries it after a backoff."""
        p = self.start(retry_initial=5.0)
        bid = self.w.receive(dsn("alice@example.net"), self.token)
        self.w.store.set_available(False)
        p.submit(bid)
        self.w.store.set_available(True)
        self.assertEqual(self.w.bounce(bid).status, "pending")
        self.assertEqual(p.stats()["queued"], 1)
        self.assertEqual(len(self.w.clock.getDelayedCalls()), 1)
        self.w.clock.advance(5)
        self.assertEqual(self.w.bounce(bid).status, "analyzed")
        self.assertEqual(self.w.delivery(self.d.delivery_id).state, State.bounced)
        self.assertEqual(p.stats()["retries"], 1)

    def test_backoff_grows_and_caps(self) -> None:
        """Consecutive outages double the wait up to retry_max, and one success resets it."""
        p = self.start(retry_initial=1.0, retry_max=4.0)
        bid = self.w.receive(dsn("alice@example.net"), self.token)
        self.w.store.set_available(False)
        p.submit(bid)
        waits = []
        for _ in range(4):
            [call] = self.w.clock.getDelayedCalls()
            waits.append(call.getTime() - self.w.clock.seconds())
            self.w.clock.advance(waits[-1])
        self.assertEqual(waits, [1.0, 2.0, 4.0, 4.0])
        self.w.store.set_available(True)
        self.w.clock.advance(4.0)
        self.assertEqual(self.w.bounce(bid).status, "analyzed")
        self.w.clock.advance(RECORDED_LOG_DELAY)  # the "recorded" line is written
        self.assertEqual(self.w.clock.getDelayedCalls(), [])

    def test_outage_pauses_every_message(self) -> None:
        """During an outage one timer holds the whole queue; all messages go through afterwards."""
        [d2] = self.w.send(["bob@example.net"])
        p = self.start(concurrency=1)
        b1 = self.w.receive(dsn("alice@example.net"), self.token)
        b2 = self.w.receive(dsn("bob@example.net"), self.w.token(d2))
        self.w.store.fail_next(1)
        p.submit(b1)
        p.submit(b2)
        self.assertEqual(len(self.w.clock.getDelayedCalls()), 1)
        self.assertEqual(self.w.bounce(b2).status, "pending")
        self.w.clock.advance(5)
        self.assertEqual([self.w.bounce(b).status for b in (b1, b2)], ["analyzed", "analyzed"])

    def test_analyzer_exception_marks_failed(self) -> None:
        """An analyzer that raises marks the bounce failed, keeps its bytes, and logs."""

        def broken(raw: bytes, envelope_rcpt: str | None = None, **kw: Any) -> Analysis:
            raise RuntimeError("rule engine exploded")

        p = self.start(analyze=broken)
        bid = self.w.receive(dsn("alice@example.net"), self.token)
        p.submit(bid)
        stored = self.w.bounce(bid)
        self.assertEqual(stored.status, "failed")
        self.assertEqual(stored.raw, dsn("alice@example.net"))
        self.assertIn("rule engine exploded", self.w.bounce_error(bid))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(p.stats()["failed"], 1)
        self.assertEqual(self.w.delivery(self.d.delivery_id).state, State.delivered)

    def test_analysis_gave_up_marks_failed(self) -> None:
        """An analysis that hit its limits with no result marks the bounce failed for replay."""
        p = self.start(analyze=fake_analyze(Analysis("other", error="over-budget")))
        bid = self.w.receive(b"x", self.token)
        p.submit(bid)
        self.assertEqual(self.w.bounce(bid).status, "failed")
        self.assertIn("over-budget", self.w.bounce_error(bid))

    def test_unexpected_store_error_marks_failed(self) -> None:
        """A bug-class exception while recording marks the bounce failed instead of retrying."""
        p = self.start()
        bid = self.w.receive(dsn("alice@example.net"), self.token)
        real = self.w.store.record_bounce

        async def bad(*a: Any, **kw: Any) -> list[int]:
            raise ValueError("bad row")

        self.w.store.record_bounce = bad  # type: ignore[method-assign]
        p.submit(bid)
        self.w.store.record_bounce = real  # type: ignore[method-assign]
        self.assertEqual(self.w.bounce(bid).status, "failed")
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_mark_failed_outage_retried(self) -> None:
        """When marking the failure meets an outage, the bounce stays pending and is retried."""
        calls = []

        def flaky(raw: bytes, envelope_rcpt: str | None = None, **kw: Any) -> Analysis:
            calls.append(1)
            if len(calls) == 1:
                self.w.store.fail_next(1)  # the next store call is mark_bounce_failed
                raise RuntimeError("first run fails")
            return Analysis("other")

        p = self.start(analyze=flaky)
        bid = self.w.receive(b"x", self.token)
        p.submit(bid)
        self.assertEqual(self.w.bounce(bid).status, "pending")
        self.w.clock.advance(5)
        self.assertEqual(self.w.bounce(bid).status, "analyzed")
        self.flushLoggedErrors(RuntimeError)

    def test_missing_bounce(self) -> None:
        """Submitting an id the store does not know is logged and forgotten."""
        p = self.start()
        p.submit(999)
        self.assertEqual(p.stats()["analyzed"], 0)
        self.assertEqual(p.stats()["queued"], 0)


class ServiceTests(_Base):
    """Start, stop, resume, concurrency and replay."""

    def test_startup_resumes_pending(self) -> None:
        """Messages stored but not analyzed before a crash are analyzed at start-up."""
        bid = self.w.receive(dsn("alice@example.net"), self.token)
        p = self.start()
        self.assertEqual(self.w.bounce(bid).status, "analyzed")
        self.assertEqual(self.w.delivery(self.d.delivery_id).state, State.bounced)
        self.assertEqual(p.stats()["received"], 1)

    def test_startup_with_store_down(self) -> None:
        """When the store is down at start-up, the resume sweep is retried later."""
        bid = self.w.receive(dsn("alice@example.net"), self.token)
        self.w.store.set_available(False)
        self.start(retry_initial=2.0)
        self.w.store.set_available(True)
        self.assertEqual(self.w.bounce(bid).status, "pending")
        self.w.clock.advance(2)
        self.assertEqual(self.w.bounce(bid).status, "analyzed")

    def test_sweep_in_batches(self) -> None:
        """More pending messages than one sweep reads are all resumed, batch after batch."""
        ids = [self.w.receive(autoreply("alice@example.net", to=self.token), self.token)
               for _ in range(5)]
        self.start(sweep_batch=2)
        self.assertEqual({self.w.bounce(b).status for b in ids}, {"analyzed"})

    def test_submit_before_start(self) -> None:
        """A message submitted before startService is analyzed once the service starts."""
        p = self.w.processor()
        bid = self.w.receive(dsn("alice@example.net"), self.token)
        p.submit(bid)
        self.assertEqual(self.w.bounce(bid).status, "pending")
        p.startService()
        self.addCleanup(self.stop, p)
        self.assertEqual(self.w.bounce(bid).status, "analyzed")
        self.assertEqual(p.stats()["received"], 1)

    def test_concurrency_bounded(self) -> None:
        """No more than ``concurrency`` analyses run at once; the rest wait their turn."""
        pending: list[tuple[Deferred[Any], Any, tuple[Any, ...]]] = []

        def runner(f: Any, *a: Any, **kw: Any) -> Deferred[Any]:
            d: Deferred[Any] = Deferred()
            pending.append((d, f, a))
            return d

        p = self.start(runner=runner, concurrency=2,
                       analyze=fake_analyze(Analysis("other")))
        ids = [self.w.receive(b"x%d" % i, self.token) for i in range(5)]
        for b in ids:
            p.submit(b)
        self.assertEqual(len(pending), 2)
        self.assertEqual(p.stats()["in_flight"], 2)
        self.assertEqual(p.stats()["queued"], 3)
        while pending:
            d, f, a = pending.pop(0)
            d.callback(f(*a))
        self.assertEqual({self.w.bounce(b).status for b in ids}, {"analyzed"})
        self.assertEqual(p.stats()["in_flight"], 0)

    def test_submit_never_blocks(self) -> None:
        """submit returns before the analysis has finished when it runs elsewhere."""
        held: list[Deferred[Any]] = []

        def runner(f: Any, *a: Any, **kw: Any) -> Deferred[Any]:
            held.append(Deferred())
            return held[-1]

        p = self.start(runner=runner)
        bid = self.w.receive(b"x", self.token)
        p.submit(bid)
        self.assertEqual(self.w.bounce(bid).status, "pending")
        held[0].callback(Analysis("other"))
        self.assertEqual(self.w.bounce(bid).status, "analyzed")

    def test_duplicate_submit_processed_once(self) -> None:
        """The same id submitted twice while queued is analyzed once."""
        calls = []

        def analyze(raw: bytes, envelope_rcpt: str | None = None, **kw: Any) -> Analysis:
            calls.append(raw)
            return Analysis("other")

        p = self.w.processor(analyze=analyze)
        bid = self.w.receive(b"x", self.token)
        p.submit(bid)
        p.submit(bid)
        p.startService()
        self.addCleanup(self.stop, p)
        self.assertEqual(len(calls), 1)

    def test_stop_waits_for_in_flight(self) -> None:
        """stopService fires only when the analysis in flight has been recorded."""
        held: list[Deferred[Any]] = []

        def runner(f: Any, *a: Any, **kw: Any) -> Deferred[Any]:
            held.append(Deferred())
            return held[-1]

        p = self.start(runner=runner)
        bid = self.w.receive(b"x", self.token)
        p.submit(bid)
        stopped = p.stopService()
        self.assertNoResult(stopped)
        held[0].callback(Analysis("other"))
        self.successResultOf(stopped)
        self.assertEqual(self.w.bounce(bid).status, "analyzed")
        self.assertEqual(self.w.clock.getDelayedCalls(), [])

    def test_stop_is_bounded(self) -> None:
        """stopService gives up on a stuck analysis after stop_timeout; it stays pending."""
        held: list[Deferred[Any]] = []

        def runner(f: Any, *a: Any, **kw: Any) -> Deferred[Any]:
            held.append(Deferred())
            return held[-1]

        p = self.start(runner=runner, stop_timeout=10.0)
        bid = self.w.receive(b"x", self.token)
        p.submit(bid)
        stopped = p.stopService()
        self.w.clock.advance(10)
        self.successResultOf(stopped)
        self.assertEqual(self.w.bounce(bid).status, "pending")
        self.assertEqual(self.w.clock.getDelayedCalls(), [])
        held[0].callback(Analysis("other"))  # finishing late does no harm

    def test_stop_cancels_retry_timer(self) -> None:
        """stopService during an outage cancels the retry timer; the message stays pending."""
        p = self.start()
        bid = self.w.receive(b"x", self.token)
        self.w.store.set_available(False)
        p.submit(bid)
        self.w.store.set_available(True)
        self.assertEqual(len(self.w.clock.getDelayedCalls()), 1)
        self.successResultOf(p.stopService())
        self.assertEqual(self.w.clock.getDelayedCalls(), [])
        self.assertEqual(self.w.bounce(bid).status, "pending")

    def test_queue_overflow_swept_later(self) -> None:
        """Ids beyond max_queued stay pending in the store and are picked up by a later sweep."""
        held: list[tuple[Deferred[Any], Any, tuple[Any, ...]]] = []

        def runner(f: Any, *a: Any, **kw: Any) -> Deferred[Any]:
            d: Deferred[Any] = Deferred()
            held.append((d, f, a))
            return d

        p = self.start(runner=runner, concurrency=1, max_queued=1,
                       analyze=fake_analyze(Analysis("other")))
        ids = [self.w.receive(b"x%d" % i, self.token) for i in range(4)]
        for b in ids:
            p.submit(b)
        self.assertEqual(p.stats()["queued"], 1)
        while held:
            d, f, a = held.pop(0)
            d.callback(f(*a))
        self.assertEqual({self.w.bounce(b).status for b in ids}, {"analyzed"})

    def test_replay_is_idempotent(self) -> None:
        """Replaying an analyzed bounce re-records it without counting its events twice."""
        p = self.start()
        bid = self.w.receive(dsn("alice@example.net"), self.token)
        p.submit(bid)
        before = self.w.events(self.d.delivery_id)
        outcome = self.successResultOf(p.replay(bid))
        self.assertIsInstance(outcome, ProcessResult)
        self.assertEqual((outcome.status, outcome.category, outcome.event_ids),
                         ("analyzed", "bounce", ()))
        self.assertEqual(outcome.events, 1)
        self.assertEqual(self.w.events(self.d.delivery_id), before)
        self.assertEqual(p.stats()["replayed"], 1)

    def test_replay_failed_after_fix(self) -> None:
        """A bounce whose analysis failed is analyzed by a replay once the analyzer works."""
        state = {"broken": True}

        def analyze(raw: bytes, envelope_rcpt: str | None = None, **kw: Any) -> Analysis:
            if state["broken"]:
                raise RuntimeError("bad rule")
            return Analysis("bounce", (result("alice@example.net"),))

        p = self.start(analyze=analyze)
        bid = self.w.receive(b"x", self.token)
        p.submit(bid)
        self.assertEqual(self.w.bounce(bid).status, "failed")
        self.flushLoggedErrors(RuntimeError)
        state["broken"] = False
        outcome = self.successResultOf(p.replay(bid))
        self.assertEqual(outcome.status, "analyzed")
        self.assertEqual(len(outcome.event_ids), 1)
        self.assertEqual(self.w.delivery(self.d.delivery_id).state, State.bounced)

    def test_replay_while_in_flight(self) -> None:
        """A replay asked while the same bounce is being analyzed runs after it, not beside it."""
        held: list[tuple[Deferred[Any], Any, tuple[Any, ...]]] = []

        def runner(f: Any, *a: Any, **kw: Any) -> Deferred[Any]:
            d: Deferred[Any] = Deferred()
            held.append((d, f, a))
            return d

        p = self.start(runner=runner, analyze=fake_analyze(Analysis("other")))
        bid = self.w.receive(b"x", self.token)
        p.submit(bid)
        replayed = p.replay(bid)
        self.assertEqual(len(held), 1)
        d, f, a = held.pop()
        d.callback(f(*a))
        self.assertEqual(len(held), 1)
        d, f, a = held.pop()
        d.callback(f(*a))
        self.assertEqual(self.successResultOf(replayed).status, "analyzed")

    def test_replay_after_stop(self) -> None:
        """A replay asked of a stopped processor fires at once with status stopped."""
        p = self.start()
        self.successResultOf(p.stopService())
        self.assertEqual(self.successResultOf(p.replay(1)).status, "stopped")

    def test_needs_reactor_for_threads(self) -> None:
        """Without a runner, the clock must be a reactor that threads can report back to."""
        self.assertRaises(TypeError, ThreadExecutor, Clock(),
                          analyze=fake_analyze(Analysis("other")))

    def test_run_inline(self) -> None:
        """run_inline calls the function at once and wraps its result or exception."""
        self.assertEqual(self.successResultOf(run_inline(lambda x: x + 1, 1)), 2)
        self.failureResultOf(run_inline(lambda: 1 / 0), ZeroDivisionError)

    def test_stats_shape(self) -> None:
        """stats() gives flat counters plus a by-category dict."""
        p = self.start()
        self.assertEqual(set(p.stats()), {
            "received", "analyzed", "uncorrelated", "failed", "retries", "replayed", "events",
            "queued", "in_flight", "by_category"})
        self.assertEqual(p.stats()["by_category"], {})



@implementer(IReactorFromThreads)
class _ThreadClock(Clock):
    """A fake clock that threads can report back to (calls queued for the test thread)."""

    def __init__(self) -> None:
        super().__init__()
        self.from_threads: queue.Queue[tuple[Any, tuple[Any, ...], dict[str, Any]]] = queue.Queue()

    def callFromThread(self, callable: Any, *args: object, **kwargs: object) -> None:
        self.from_threads.put((callable, args, kwargs))

    def run_one(self) -> None:
        f, args, kwargs = self.from_threads.get(timeout=10)
        f(*args, **kwargs)


class ThreadPoolTests(SynchronousTestCase):
    """Analyses run in a thread pool, never on the reactor thread."""

    def setUp(self) -> None:
        self.w = World()
        [self.d] = self.w.send(["alice@example.net"])
        self.clock = _ThreadClock()
        self.clock.advance(self.w.clock.seconds())
        self.threads: list[int] = []

    def analyze(self, raw: bytes, envelope_rcpt: str | None = None, **kw: Any) -> Analysis:
        self.threads.append(threading.get_ident())
        return Analysis("bounce", (result("alice@example.net"),))

    def test_injected_pool(self) -> None:
        """With an injected pool the analysis runs in one of its threads."""
        pool = ThreadPool(1, 1, name="test-bounce")
        pool.start()
        self.addCleanup(pool.stop)
        p = BounceProcessor(self.w.store, self.w.codec, self.clock,
                            ThreadExecutor(self.clock, pool, analyze=self.analyze))
        p.startService()
        bid = self.w.receive(b"x", self.w.token(self.d))
        p.submit(bid)
        self.clock.run_one()
        self.assertNotEqual(self.threads, [threading.get_ident()])
        self.assertEqual(self.w.bounce(bid).status, "analyzed")
        self.successResultOf(p.stopService())

    def test_own_pool(self) -> None:
        """Without a pool the processor runs its own, started and stopped with the service."""
        executor = ThreadExecutor(self.clock, threads=1, analyze=self.analyze)
        p = BounceProcessor(self.w.store, self.w.codec, self.clock, executor)
        p.startService()
        bid = self.w.receive(b"x", self.w.token(self.d))
        p.submit(bid)
        self.clock.run_one()
        self.assertEqual(len(self.threads), 1)
        self.assertNotEqual(self.threads[0], threading.get_ident())
        self.assertEqual(self.w.delivery(self.d.delivery_id).state, State.bounced)
        self.successResultOf(p.stopService())
        assert executor.own_pool is not None
        self.assertFalse(executor.own_pool.started)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stuck_analysis_does_not_block_stop(self) -> None:
        """A stuck analysis in the processor's own pool cannot hold stopService past its bound."""
        release = threading.Event()

        def stuck(raw: bytes, envelope_rcpt: str | None = None, **kw: Any) -> Analysis:
            release.wait(10)
            return Analysis("other")

        p = BounceProcessor(self.w.store, self.w.codec, self.clock,
                            ThreadExecutor(self.clock, analyze=stuck),
                            ProcessorConfig(stop_timeout=5.0))
        p.startService()
        bid = self.w.receive(b"x", self.w.token(self.d))
        p.submit(bid)
        stopped = p.stopService()
        self.clock.advance(5)
        self.successResultOf(stopped)
        release.set()
        self.clock.run_one()  # the late result arrives; the message was still recorded
        self.assertEqual(self.w.bounce(bid).status, "analyzed")
        self.assertEqual(self.clock.getDelayedCalls(), [])


class ForgedReportTests(_Base):
    """A report matched only by recipient address cannot suppress anyone."""

    def test_recipient_match_records_but_does_not_suppress(self) -> None:
        """A hard DSN to postmaster naming our recipient, with no token, suppresses nothing."""
        p = self.start()
        postmaster = "postmaster@" + BOUNCE_DOMAIN
        bid = self.w.receive(dsn("alice@example.net"), postmaster, verified=False)
        p.submit(bid)
        ev = self.w.events(self.d.delivery_id)[-1]
        self.assertEqual((ev.kind, ev.correlation), (EventKind.bounce, "recipient"))
        self.assertIsNone(run(self.w.store.get_suppression("alice@example.net")))


class BatchTests(_Base):
    """Messages waiting together are analyzed in one hop and recorded in one transaction."""

    def held_runner(self) -> tuple[Any, list[tuple[Deferred[Any], Any, tuple[Any, ...],
                                                   dict[str, Any]]]]:
        held: list[tuple[Deferred[Any], Any, tuple[Any, ...], dict[str, Any]]] = []

        def runner(f: Any, *a: Any, **kw: Any) -> Deferred[Any]:
            d: Deferred[Any] = Deferred()
            held.append((d, f, a, kw))
            return d

        return runner, held

    def count_record_calls(self) -> tuple[list[int], list[int]]:
        """Wrap record_bounce(s); return the lists of single calls and batch sizes."""
        singles: list[int] = []
        batches: list[int] = []
        store = self.w.store
        one, many = store.record_bounce, store.record_bounces

        async def record_bounce(bounce_id: int, *a: Any) -> list[int]:
            singles.append(bounce_id)
            return await one(bounce_id, *a)

        async def record_bounces(records: Any) -> list[list[int]]:
            batches.append(len(records))
            return await many(records)

        store.record_bounce = record_bounce  # type: ignore[method-assign]
        store.record_bounces = record_bounces  # type: ignore[method-assign]
        return singles, batches

    def test_waiting_messages_share_one_hop_and_one_transaction(self) -> None:
        """While one analysis runs, the next ones queue and then go together."""
        runner, held = self.held_runner()
        singles, batches = self.count_record_calls()
        senders = self.w.send([f"r{i}@example.net" for i in range(5)])
        p = self.start(runner=runner, concurrency=1)
        first = self.w.receive(dsn("alice@example.net"), self.token)
        p.submit(first)
        others = []
        for i, d in enumerate(senders):
            others.append(self.w.receive(dsn(f"r{i}@example.net"), self.w.token(d)))
            p.submit(others[-1])
        self.assertEqual(len(held), 1)  # the first alone, the others wait
        self.assertEqual(p.stats()["queued"], 5)
        d, f, a, kw = held.pop()
        d.callback(f(*a, **kw))
        self.assertEqual(singles, [first])
        self.assertEqual(len(held), 1)  # the five in one hop
        self.assertEqual(p.stats()["in_flight"], 5)
        d, f, a, kw = held.pop()
        d.callback(f(*a, **kw))
        self.assertEqual(batches, [5])
        self.assertEqual({self.w.bounce(b).status for b in [first, *others]}, {"analyzed"})
        self.assertEqual({self.w.delivery(x.delivery_id).state for x in senders},
                         {State.bounced})
        self.assertEqual(p.stats()["analyzed"], 6)

    def test_start_freezes_the_objects_of_start_up(self) -> None:
        """After the first start, what start-up made is out of full collections."""
        import gc

        self.start()
        self.assertGreater(gc.get_freeze_count(), 0)

    def large_batch(self, arrive: bool) -> tuple[list[int], list[Any], list[Any]]:
        """RECORD_CHUNK + 3 returns in one hop (one more arriving meanwhile when
        ``arrive``); the record_bounces batch sizes, the deliveries, the log events."""
        from hurricane.inbound.recorder import RECORD_CHUNK

        runner, held = self.held_runner()
        singles, batches = self.count_record_calls()
        count = RECORD_CHUNK + 3
        senders = self.w.send([f"r{i}@example.net" for i in range(count + 1)])
        p = self.start(runner=runner, concurrency=1)
        first = self.w.receive(dsn("alice@example.net"), self.token)
        p.submit(first)
        others = [self.w.receive(dsn(f"r{i}@example.net"), self.w.token(d))
                  for i, d in enumerate(senders[:count])]
        for b in others:
            p.submit(b)
        d, f, a, kw = held.pop()
        d.callback(f(*a, **kw))
        self.assertEqual(singles, [first])
        self.assertEqual(len(held), 1)  # the others in one hop
        if arrive:
            p.submit(self.w.receive(dsn(f"r{count}@example.net"), self.w.token(senders[-1])))
        d, f, a, kw = held.pop()
        self.w.clock.advance(RECORDED_LOG_DELAY)  # the first message's line
        with capturedLogs() as events:
            d.callback(f(*a, **kw))
            self.w.clock.advance(RECORDED_LOG_DELAY)
        recorded = [e for e in events if "returned messages recorded" in
                    e.get("log_format", "")]
        self.assertEqual([e["count"] for e in recorded], [count])  # one line for the batch
        release_held(held)
        return batches, senders, recorded

    def test_a_large_batch_is_recorded_in_chunks_while_returns_arrive(self) -> None:
        """One hop for the batch, but at most RECORD_CHUNK messages per recording
        transaction while returns keep arriving (a long one would hold the
        listener's commits)."""
        from hurricane.inbound.recorder import RECORD_CHUNK

        batches, senders, _ = self.large_batch(arrive=True)
        self.assertEqual(batches[:2], [RECORD_CHUNK, 3])
        self.assertEqual({self.w.delivery(x.delivery_id).state for x in senders},
                         {State.bounced})

    def test_a_large_batch_with_nothing_arriving_goes_in_one_transaction(self) -> None:
        """No return arrived meanwhile (the end of a flood): one transaction, one commit."""
        from hurricane.inbound.recorder import RECORD_CHUNK

        batches, senders, _ = self.large_batch(arrive=False)
        self.assertEqual(batches, [RECORD_CHUNK + 3])
        self.assertEqual({self.w.delivery(x.delivery_id).state for x in senders[:-1]},
                         {State.bounced})

    def test_batch_size_bounds_a_batch(self) -> None:
        """No batch is larger than batch_size."""
        runner, held = self.held_runner()
        p = self.start(runner=runner, concurrency=1, batch_size=2,
                       analyze=fake_analyze(Analysis("other")))
        ids = [self.w.receive(b"x%d" % i, self.token) for i in range(5)]
        for b in ids:
            p.submit(b)
        sizes = []
        while held:
            d, f, a, kw = held.pop(0)
            sizes.append(len(a[1]) if len(a) > 1 and isinstance(a[1], list) else 1)
            d.callback(f(*a, **kw))
        self.assertEqual(sizes, [1, 2, 2])
        self.assertEqual({self.w.bounce(b).status for b in ids}, {"analyzed"})

    def test_min_batch_beside_a_batch_in_flight(self) -> None:
        """Beside a batch in flight, another starts only with min_batch messages
        queued; alone, a message starts at once; what is left goes when a
        batch finishes."""
        runner, held = self.held_runner()
        p = self.start(runner=runner, concurrency=4, min_batch=3,
                       analyze=fake_analyze(Analysis("other")))
        ids = [self.w.receive(b"x%d" % i, self.token) for i in range(6)]
        p.submit(ids[0])
        self.assertEqual(len(held), 1)  # nothing in flight: at once
        p.submit(ids[1])
        p.submit(ids[2])
        self.assertEqual((len(held), p.stats()["queued"]), (1, 2))
        p.submit(ids[3])  # three queued: a second batch
        self.assertEqual((len(held), p.stats()["queued"]), (2, 0))
        p.submit(ids[4])
        p.submit(ids[5])
        self.assertEqual((len(held), p.stats()["queued"]), (2, 2))
        sizes = []
        while held:
            d, f, a, kw = held.pop(0)
            sizes.append(len(a[1]) if len(a) > 1 and isinstance(a[1], list) else 1)
            d.callback(f(*a, **kw))
        # the two left went with the next batch to finish, not stranded
        self.assertEqual(sizes, [1, 3, 2])
        self.assertEqual({self.w.bounce(b).status for b in ids}, {"analyzed"})
        self.assertEqual(p.stats()["queued"], 0)

    def test_min_batch_is_checked(self) -> None:
        """min_batch outside 1..batch_size is refused."""
        from hurricane.inbound.processor import ProcessorConfig

        with self.assertRaises(ValueError):
            ProcessorConfig(min_batch=0)
        with self.assertRaises(ValueError):
            ProcessorConfig(batch_size=4, min_batch=5)

    def test_one_bad_message_fails_alone(self) -> None:
        """An analysis that raises inside a batch marks that message failed only."""

        def analyze(raw: bytes, envelope_rcpt: str | None = None, **kw: Any) -> Analysis:
            if raw == b"bad":
                raise RuntimeError("rule engine exploded")
            return Analysis("other")

        runner, held = self.held_runner()
        p = self.start(runner=runner, concurrency=1, analyze=analyze)
        ids = [self.w.receive(raw, self.token) for raw in (b"a", b"b", b"bad", b"c")]
        for b in ids:
            p.submit(b)
        release_held(held)
        self.assertEqual([self.w.bounce(b).status for b in ids],
                         ["analyzed", "analyzed", "failed", "analyzed"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_batch_outage_retries_every_message(self) -> None:
        """A store outage at recording leaves the whole batch pending, retried in order."""
        runner, held = self.held_runner()
        p = self.start(runner=runner, concurrency=1, retry_initial=5.0,
                       analyze=fake_analyze(Analysis("other")))
        ids = [self.w.receive(b"x%d" % i, self.token) for i in range(4)]
        for b in ids:
            p.submit(b)
        d, f, a, kw = held.pop(0)
        d.callback(f(*a, **kw))  # the first, alone
        d, f, a, kw = held.pop(0)
        real = self.w.store.record_bounces

        async def down(records: Any) -> list[list[int]]:
            self.w.store.record_bounces = real  # type: ignore[method-assign]
            raise StoreUnavailable("down (test)")

        self.w.store.record_bounces = down  # type: ignore[method-assign]
        d.callback(f(*a, **kw))
        self.assertEqual([self.w.bounce(b).status for b in ids],
                         ["analyzed", "pending", "pending", "pending"])
        self.assertEqual(p.stats()["queued"], 3)
        self.w.clock.advance(5)
        d, f, a, kw = held.pop(0)
        self.assertEqual(len(a[1]), 3)
        d.callback(f(*a, **kw))
        self.assertEqual({self.w.bounce(b).status for b in ids}, {"analyzed"})

    def test_batch_record_bug_falls_back_to_one_by_one(self) -> None:
        """A non-store error from record_bounces records the messages one by one."""
        runner, held = self.held_runner()
        p = self.start(runner=runner, concurrency=1, analyze=fake_analyze(Analysis("other")))

        async def broken(records: Any) -> list[list[int]]:
            raise ValueError("bad batch")

        self.w.store.record_bounces = broken  # type: ignore[method-assign]
        ids = [self.w.receive(b"x%d" % i, self.token) for i in range(3)]
        for b in ids:
            p.submit(b)
        release_held(held)
        self.assertEqual({self.w.bounce(b).status for b in ids}, {"analyzed"})
