"""Forged reports change no outcome: the processor and the store, with the real analyzer."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from hurricane.decisions import NOT_APPLIED
from hurricane.model import Delivery, EventKind, State
from hurricane.webhooks import webhook_type

from .helpers import BOUNCE_DOMAIN, World, arf, dsn, run

POSTMASTER = "postmaster@" + BOUNCE_DOMAIN
FEEDBACK = "fbl@" + BOUNCE_DOMAIN


class ForgedReportTests(SynchronousTestCase):
    """Reports matched only by weak keys are recorded, never applied."""

    def setUp(self) -> None:
        self.w = World()
        [self.delivered] = self.w.send(["victim@example.net"])
        [self.deferred] = self.w.send(["waiting@example.net"], state=State.deferred)
        [self.queued] = self.w.send(["fresh@example.net"], state=State.queued)
        self.p = self.w.processor()
        self.p.startService()

    def tearDown(self) -> None:
        self.successResultOf(self.p.stopService())
        self.assertEqual(self.w.clock.getDelayedCalls(), [])

    def process(self, raw: bytes, rcpt: str) -> int:
        bid = self.w.receive(raw, rcpt, verified=rcpt not in (POSTMASTER, FEEDBACK))
        self.p.submit(bid)
        self.assertEqual(self.w.bounce(bid).status, "analyzed")
        return bid

    def records(self, delivery: Delivery) -> list[Any]:
        """The event feed records of a delivery's bounce and complaint events."""
        return [r for r in run(self.w.store.events_after(0, 10_000))
                if r.event.delivery_id == delivery.delivery_id
                and r.event.kind in (EventKind.bounce, EventKind.complaint)]

    def assertUnchanged(self, *rows: Delivery) -> None:
        """Each delivery is exactly as it was, and nobody is suppressed."""
        for row in rows:
            self.assertEqual(self.w.delivery(row.delivery_id), row)
        self.assertEqual(run(self.w.store.suppressions()), [])

    def test_forged_dsn_to_postmaster(self) -> None:
        """A 5.1.1 DSN to postmaster naming delivered, deferred and queued recipients moves none."""
        bid = self.process(dsn("victim@example.net", extra_recipients=[
            ("waiting@example.net", "failed", "5.1.1"),
            ("fresh@example.net", "failed", "5.1.1")]), POSTMASTER)
        self.assertUnchanged(self.delivered, self.deferred, self.queued)
        for row in (self.delivered, self.deferred):
            [record] = self.records(row)
            self.assertEqual((record.event.correlation, record.event.state, record.event.note,
                              record.event.bounce_id), ("recipient", None, NOT_APPLIED, bid))
            self.assertEqual(webhook_type(record), ("bounced", False))
        # never sent: not even a hint can be about it
        self.assertEqual(self.records(self.queued), [])
        # the deferred one is still due for its retry
        due = run(self.w.store.claim_due(self.w.clock.seconds() + 3600, "n", 60, 10))
        self.assertIn(self.deferred.delivery_id, [d.delivery_id for d in due])

    def test_forged_arf_to_feedback(self) -> None:
        """An ARF report to the feedback address without our token complains about no one."""
        self.process(arf("victim@example.net"), FEEDBACK)
        self.assertUnchanged(self.delivered)
        [record] = self.records(self.delivered)
        self.assertEqual((record.event.kind, record.event.note), (EventKind.complaint,
                                                                  NOT_APPLIED))
        self.assertEqual(webhook_type(record), ("complained", False))

    def test_forged_message_id(self) -> None:
        """Our Message-ID in a forged report is a hint: recorded, not applied."""
        [row] = self.w.send(["reader@example.net"], header_message_id="news-1@example.org")
        self.process(dsn("reader@example.net", message_id="news-1@example.org"), POSTMASTER)
        self.assertUnchanged(row)
        self.assertEqual(self.records(row)[0].event.correlation, "message-id")

    def test_verified_arf_by_header_token(self) -> None:
        """A feedback loop returning the original with our token header still complains."""
        self.process(arf("victim@example.net", token=self.w.token(self.delivered)), FEEDBACK)
        row = self.w.delivery(self.delivered.delivery_id)
        self.assertEqual((row.state, row.reason), (State.complained, "feedback"))
        [record] = self.records(self.delivered)
        self.assertEqual(webhook_type(record), ("complained", True))
        # A complaint stops its stream (issue 20), not every stream.
        self.assertIsNone(run(self.w.store.get_suppression("victim@example.net")))
        entries = run(self.w.store.suppression_entries("victim@example.net"))
        self.assertEqual([(e.scope, e.source) for e in entries],
                         [("stream:transactional", "complaint")])

    def test_verified_complaint_to_verp(self) -> None:
        """A complaint sent to the delivery's own VERP address complains."""
        self.process(arf("victim@example.net"), self.w.token(self.delivered))
        self.assertEqual(self.w.delivery(self.delivered.delivery_id).state, State.complained)

    def test_verified_dsn_to_verp(self) -> None:
        """A DSN to the VERP address of the deferred delivery bounces it and stops retries."""
        self.process(dsn("waiting@example.net"), self.w.token(self.deferred))
        row = self.w.delivery(self.deferred.delivery_id)
        self.assertEqual((row.state, row.reason, row.next_attempt_at),
                         (State.bounced, "userunknown", None))
        [record] = self.records(self.deferred)
        self.assertEqual(webhook_type(record), ("bounced", True))
