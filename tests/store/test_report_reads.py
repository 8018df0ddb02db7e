"""The report's store reads of issue 18 (mailings index, settling, queue pages) on every engine.

One mixin (:class:`ReportReadsMixin`, in the style of ``contract.py``) run on
the memory store, SQLite and, where ``HURRICANE_TEST_POSTGRES`` is set,
PostgreSQL, so the three engines give the same answers.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from hurricane.model import AttemptResult, BounceEvent, EventKind, ReturnedMessage, State
from hurricane.store import migrate, sql
from hurricane.store.interface import MailingRollup
from hurricane.store.memory import MemoryStore
from hurricane.store.sqlite import SqliteStore
from hurricane.store.txn import submission

from .contract import T0, message
from .test_postgres import PostgresMixin


class ReportReadsMixin:
    """The new reads, against ``self.store`` (an opened, empty store)."""

    store: Any
    assertEqual: Any
    assertIsNone: Any
    assertTrue: Any
    assertRaises: Any

    async def make_store(self) -> Any:
        """An opened store on empty storage (closed by a cleanup)."""
        raise NotImplementedError

    async def setUp(self) -> None:  # noqa: D102 - trial hook
        self.store = await self.make_store()

    async def mailing(self, mailing_id: str, *recipients: str, at: float = T0) -> list[int]:
        """One message per recipient in a mailing; their delivery ids."""
        ids = []
        for r in recipients:
            result = await self.store.enqueue(message(r, mailing_id=mailing_id), at)
            ids.append(result.recipients[0].delivery_id)
        return ids

    async def attempt(self, delivery_id: int, state: State, at: float, **kw: Any) -> None:
        """Record one attempt."""
        await self.store.record_attempts(
            [AttemptResult(delivery_id=delivery_id, state=state, at=at, **kw)])

    async def bounce(self, delivery_id: int, at: float, kind: EventKind = EventKind.bounce,
                     reason: str = "userunknown") -> None:
        """A verified NDR (or complaint) for a delivery, recorded at ``at``."""
        bounce_id = await self.store.store_bounce(ReturnedMessage(
            b"Subject: x\r\n\r\nx", "", "b@bounce.test", at))
        await self.store.record_bounce(bounce_id, [BounceEvent(
            delivery_id=delivery_id, kind=kind, at=at, bounce_id=bounce_id, reason=reason,
            status="5.1.1", correlation="verp")], "bounce", "verp", "{}")

    # -- mailings index -------------------------------------------------------

    async def test_discover_mailings(self) -> None:
        """New messages register their mailing once (case-insensitively), newest first;
        a second look finds nothing new; the first message's time is the mailing's."""
        await self.mailing("Spring-26", "a@x.test", at=T0)
        await self.mailing("spring-26", "b@x.test", at=T0 + 5)
        await self.store.enqueue(message("c@x.test"), T0 + 6)  # no mailing id
        await self.mailing("Summer", "d@y.test", at=T0 + 10)
        self.assertEqual(await self.store.discover_mailings(100), 3)
        page = await self.store.mailings()
        self.assertEqual([(e.mailing_key, e.mailing_id, e.first_at) for e in page],
                         [("summer", "Summer", T0 + 10), ("spring-26", "Spring-26", T0)])
        self.assertIsNone(page[0].rollup)
        self.assertEqual(await self.store.discover_mailings(100), 0)
        self.assertEqual(len(await self.store.mailings()), 2)
        await self.mailing("Autumn", "e@y.test", at=T0 + 20)
        self.assertEqual(await self.store.discover_mailings(100), 1)
        self.assertEqual([e.mailing_key for e in await self.store.mailings()],
                         ["autumn", "summer", "spring-26"])

    async def test_discover_mailings_in_rounds(self) -> None:
        """A limit smaller than what is new reads it over several calls (each returns
        ``limit`` while more may wait) and registers every mailing."""
        for n in range(5):
            await self.mailing(f"m{n}", f"r{n}@x.test", at=T0 + n)
        counts = []
        for _ in range(4):
            counts.append(await self.store.discover_mailings(2))
        self.assertEqual(sum(counts), 5)
        self.assertEqual([e.mailing_key for e in await self.store.mailings()],
                         ["m4", "m3", "m2", "m1", "m0"])

    async def test_discovery_rereads_a_margin(self) -> None:
        """A message whose key is below the mark (committed late, as PostgreSQL allows)
        is still registered by the next look, within the margin."""
        await self.mailing("first", "a@x.test", at=T0)
        await self.mailing("second", "b@x.test", at=T0 + 1)
        await self.store.discover_mailings(100)
        # Pretend the second message was not visible yet at that look.
        await self.forget_mailing("second")
        self.assertEqual([e.mailing_key for e in await self.store.mailings()], ["first"])
        self.assertEqual(await self.store.discover_mailings(100), 0)
        self.assertEqual([e.mailing_key for e in await self.store.mailings()],
                         ["second", "first"])

    async def forget_mailing(self, key: str) -> None:
        """Remove a registered mailing behind the store's back (engine-specific)."""
        raise NotImplementedError

    async def test_mailings_keyset(self) -> None:
        """Pages of the index follow one another with the last entry as the keyset,
        mailings created at the same time ordered by key."""
        for name, at in (("a", T0), ("b", T0), ("c", T0 + 1), ("d", T0 + 2)):
            await self.mailing(name, f"{name}@x.test", at=at)
        await self.store.discover_mailings(100)
        first = await self.store.mailings(limit=2)
        self.assertEqual([e.mailing_key for e in first], ["d", "c"])
        last = first[-1]
        second = await self.store.mailings(before=(last.first_at, last.mailing_key), limit=2)
        self.assertEqual([e.mailing_key for e in second], ["b", "a"])
        last = second[-1]
        self.assertEqual(await self.store.mailings(before=(last.first_at, last.mailing_key)),
                         [])

    async def test_save_rollups(self) -> None:
        """Saved figures come back with the index entry; saving a mailing the index
        has not seen registers it; saving again replaces the figures, not first_at."""
        await self.mailing("Known", "a@x.test", at=T0)
        await self.store.discover_mailings(100)
        rollup = MailingRollup(
            mailing_key="known", mailing_id="Known", first_at=T0 + 99, computed_at=T0 + 50,
            last_at=T0, messages=1, by_state={"delivered": 1}, settled=0,
            settles_at=T0 + 3600)
        other = MailingRollup(
            mailing_key="other", mailing_id="Other", first_at=T0 + 5, computed_at=T0 + 50,
            last_at=T0 + 5, messages=2, by_state={"queued": 1, "failed": 1}, settled=1,
            settles_at=None)
        await self.store.save_mailing_rollups([rollup, other])
        page = {e.mailing_key: e for e in await self.store.mailings()}
        self.assertEqual(page["known"].first_at, T0)
        got = page["known"].rollup
        self.assertEqual((got.computed_at, got.last_at, got.messages, dict(got.by_state),
                          got.settled, got.settles_at),
                         (T0 + 50, T0, 1, {"delivered": 1}, 0, T0 + 3600))
        self.assertEqual((page["other"].first_at, page["other"].rollup.pending,
                          page["other"].rollup.recipients), (T0 + 5, 1, 2))
        await self.store.save_mailing_rollups([MailingRollup(
            mailing_key="known", mailing_id="Known", first_at=T0, computed_at=T0 + 60,
            last_at=T0, messages=1, by_state={"bounced": 1}, settled=1, settles_at=None)])
        got = {e.mailing_key: e for e in await self.store.mailings()}["known"].rollup
        self.assertEqual((dict(got.by_state), got.settled, got.settles_at),
                         ({"bounced": 1}, 1, None))

    # -- settling ---------------------------------------------------------------

    async def settling_mailing(self) -> list[int]:
        """A mailing in every kind of state, over two domains."""
        ids = await self.mailing("Big-1", "a@gmail.test", "b@gmail.test", "c@gmail.test",
                                 "d@other.test", "e@other.test", "f@other.test", at=T0)
        a, b, c, d, e, f = ids
        await self.attempt(a, State.delivered, T0 + 10)
        await self.attempt(b, State.delivered, T0 + 100)
        await self.attempt(c, State.failed, T0 + 10, code=550, reason="userunknown")
        await self.attempt(d, State.delivered, T0 + 10)
        await self.attempt(e, State.deferred, T0 + 10, code=451, next_attempt_at=T0 + 600)
        await self.attempt(f, State.delivered, T0 + 20)
        await self.bounce(f, T0 + 80)
        return ids

    async def test_mailing_outcomes(self) -> None:
        """Counts by state, settled recipients at a time (final states, and delivered ones
        older than their domain's delay), when the last settles, and per domain."""
        await self.settling_mailing()
        delays = {"GMAIL.test": 1000.0}
        got = await self.store.mailing_outcomes("big-1", delays, 50.0, T0 + 500, domains=5)
        self.assertEqual((got.mailing_id, got.messages, got.first_at, got.last_at),
                         ("Big-1", 6, T0, T0))
        total = got.total
        self.assertEqual(dict(total.by_state),
                         {"delivered": 3, "failed": 1, "deferred": 1, "bounced": 1})
        # failed, bounced, and d (other.test: delivered at +10, +50 <= +500)
        self.assertEqual(total.settled, 3)
        self.assertEqual(total.settles_at, T0 + 1100)
        self.assertEqual(total.last_delivered_at, T0 + 100)
        self.assertEqual((total.recipients, total.pending), (6, 1))
        domains = dict(got.domains)
        self.assertEqual([name for name, _ in got.domains], ["gmail.test", "other.test"])
        self.assertEqual((domains["gmail.test"].settled, domains["gmail.test"].settles_at),
                         (1, T0 + 1100))
        self.assertEqual((domains["other.test"].settled, domains["other.test"].settles_at,
                          domains["other.test"].last_delivered_at), (2, T0 + 60, T0 + 20))
        later = await self.store.mailing_outcomes("BIG-1", delays, 50.0, T0 + 1100)
        self.assertEqual((later.total.settled, later.domains), (5, ()))
        self.assertIsNone(await self.store.mailing_outcomes("nothing", {}, 1.0, T0))

    async def test_late_outcomes(self) -> None:
        """Bounced and complained recipients that were delivered, newest first, with the
        time from delivery to the NDR or complaint; a bounce before any delivery and a
        sync failure are not late outcomes; ``since`` and ``limit`` bound the sample."""
        a, b, c, d = await self.mailing("m", "a@gmail.test", "b@gmail.test", "c@x.test",
                                        "d@x.test", at=T0)
        await self.attempt(a, State.delivered, T0 + 10)
        await self.attempt(b, State.delivered, T0 + 10)
        await self.attempt(c, State.deferred, T0 + 10, next_attempt_at=T0 + 100)
        await self.attempt(d, State.failed, T0 + 10, code=550)
        await self.bounce(a, T0 + 70)
        await self.bounce(b, T0 + 400, kind=EventKind.complaint, reason="feedback")
        await self.bounce(c, T0 + 90)
        found = await self.store.late_outcomes(T0, 10)
        self.assertEqual([(x.domain, x.state, x.seconds) for x in found],
                         [("gmail.test", "complained", 390.0), ("gmail.test", "bounced", 60.0)])
        self.assertEqual(len(await self.store.late_outcomes(T0, 1)), 1)
        self.assertEqual([x.state for x in await self.store.late_outcomes(T0 + 100, 10)],
                         ["complained"])

    async def test_late_outcome_keeps_the_bounce_time(self) -> None:
        """A bounced recipient that complains later keeps its NDR's time as its late outcome."""
        (a,) = await self.mailing("m", "a@x.test", at=T0)
        await self.attempt(a, State.delivered, T0 + 10)
        await self.bounce(a, T0 + 30)
        await self.bounce(a, T0 + 900, kind=EventKind.complaint, reason="feedback")
        found = await self.store.late_outcomes(T0, 10)
        self.assertEqual([(x.state, x.seconds) for x in found], [("complained", 20.0)])

    async def test_mailing_latencies(self) -> None:
        """A mailing's late outcomes per delay bucket and state (other mailings apart)."""
        ids = await self.mailing("M", "a@x.test", "b@x.test", "c@x.test", "d@x.test", at=T0)
        (other,) = await self.mailing("N", "z@x.test", at=T0)
        for delivery_id in (*ids, other):
            await self.attempt(delivery_id, State.delivered, T0)
        await self.bounce(ids[0], T0 + 0.5)
        await self.bounce(ids[1], T0 + 5)
        await self.bounce(ids[2], T0 + 7, kind=EventKind.complaint, reason="feedback")
        await self.bounce(ids[3], T0 + 5000)
        await self.bounce(other, T0 + 5)
        got = await self.store.mailing_latencies("m", [1.0, 10.0, 100.0])
        self.assertEqual(sorted(got), [(0, "bounced", 1), (1, "bounced", 1),
                                       (1, "complained", 1), (3, "bounced", 1)])

    # -- charts and pages ---------------------------------------------------------

    async def test_outcome_series(self) -> None:
        """Buckets counted from the origin, within [since, until), for all mail or one
        mailing."""
        await self.mailing("M", "a@x.test", at=T0 + 1)
        await self.mailing("M", "b@x.test", at=T0 + 12)
        await self.mailing("N", "c@x.test", at=T0 + 13)
        await self.mailing("N", "d@x.test", at=T0 + 40)
        got = await self.store.outcome_series(T0 + 1, T0 + 40, T0, 10.0)
        self.assertEqual(got, [(T0, {"queued": 1}), (T0 + 10, {"queued": 2})])
        got = await self.store.outcome_series(T0, T0 + 100, T0, 10.0, mailing_id="n")
        self.assertEqual(got, [(T0 + 10, {"queued": 1}), (T0 + 40, {"queued": 1})])
        with self.assertRaises(ValueError):
            await self.store.outcome_series(T0, T0 + 1, T0, 0)

    async def test_created_span(self) -> None:
        """The first and last creation inside the window, or None."""
        for n, at in enumerate((T0, T0 + 5, T0 + 30)):
            await self.mailing("m", f"r{n}@x.test", at=at)
        self.assertEqual(await self.store.created_span(T0 + 1, T0 + 30), (T0 + 5, T0 + 5))
        self.assertEqual(await self.store.created_span(T0, T0 + 31), (T0, T0 + 30))
        self.assertIsNone(await self.store.created_span(T0 + 31, T0 + 90))

    async def test_mailing_bounce_reasons(self) -> None:
        """A mailing's sync (failed) and async (bounced) recipients by reason."""
        a, b, c = await self.mailing("M", "a@x.test", "b@x.test", "c@x.test", at=T0)
        (other,) = await self.mailing("N", "z@x.test", at=T0)
        await self.attempt(a, State.failed, T0, code=550, reason="userunknown")
        await self.attempt(other, State.failed, T0, code=550, reason="userunknown")
        await self.attempt(b, State.delivered, T0)
        await self.attempt(c, State.failed, T0, code=550, reason="spamdetected")
        await self.bounce(b, T0 + 5, reason="userunknown")
        got = await self.store.mailing_bounce_reasons("m")
        self.assertEqual([(r.reason, r.synchronous, r.asynchronous) for r in got],
                         [("userunknown", 1, 1), ("spamdetected", 1, 0)])

    async def test_deferred_domains(self) -> None:
        """The deferred queue by domain, largest first, with the reply of the domain's
        most recently updated deferred delivery."""
        a, b, c = await self.mailing("M", "a@slow.test", "b@slow.test", "c@grey.test", at=T0)
        await self.attempt(a, State.deferred, T0 + 10, code=451, status="4.7.1",
                           text="greylisted", remote_host="mx1.slow.test",
                           next_attempt_at=T0 + 300)
        await self.attempt(b, State.deferred, T0 + 20, code=421, text="too many connections",
                           remote_host="mx2.slow.test", next_attempt_at=T0 + 200)
        await self.attempt(c, State.deferred, T0 + 5, code=450, text="try later",
                           next_attempt_at=T0 + 100)
        got = await self.store.deferred_domains(10)
        self.assertEqual([(g.domain, g.count, g.oldest_created_at, g.next_attempt_at,
                           g.last_update, g.code, g.status, g.text, g.remote_host)
                          for g in got],
                         [("slow.test", 2, T0, T0 + 200, T0 + 20, 421, None,
                           "too many connections", "mx2.slow.test"),
                          ("grey.test", 1, T0, T0 + 100, T0 + 5, 450, None, "try later",
                           None)])

    async def test_suppression_causes_and_count(self) -> None:
        """A suppression's event leads to its delivery; the count is the list's size."""
        (a,) = await self.mailing("M", "gone@x.test", at=T0)
        await self.attempt(a, State.failed, T0, code=550, reason="userunknown", hard=True,
                           suppress=True)
        await self.store.suppress("manual@x.test", "operator", T0)
        self.assertEqual(await self.store.suppression_count(), 2)
        entry = await self.store.get_suppression("gone@x.test")
        self.assertEqual(await self.store.suppression_causes([entry.event_id, 999999]),
                         {entry.event_id: a})
        self.assertEqual(await self.store.suppression_causes([]), {})


class MemoryReportReadsTests(ReportReadsMixin, TestCase):
    """The memory store."""

    async def make_store(self) -> Any:
        store = MemoryStore()
        await store.open()
        return store

    async def forget_mailing(self, key: str) -> None:
        self.store.query("DELETE FROM mailings WHERE mailing_key = ?", (key,))


class SqliteReportReadsTests(ReportReadsMixin, TestCase):
    """SQLite."""

    async def make_store(self) -> Any:
        self.path = os.path.join(tempfile.mkdtemp(), "hurricane.db")
        store = SqliteStore(self.path, reactor)
        await store.open()
        self.addCleanup(lambda: Deferred.fromCoroutine(store.close()))
        return store

    async def forget_mailing(self, key: str) -> None:
        conn = sqlite3.connect(self.path)
        try:
            conn.execute("DELETE FROM mailings WHERE mailing_key = ?", (key,))
            conn.commit()
        finally:
            conn.close()


class PostgresReportReadsTests(PostgresMixin, ReportReadsMixin, TestCase):
    """PostgreSQL (``HURRICANE_TEST_POSTGRES``)."""

    async def make_store(self) -> Any:
        self.make_schema()
        return await self.open_store()

    async def forget_mailing(self, key: str) -> None:
        with self.admin.cursor() as cur:
            cur.execute(f"DELETE FROM {self.schema}.mailings WHERE mailing_key = %s", (key,))


class MailingsMigrationTests(TestCase):
    """Migration 0007 registers the mailings of a database that had messages before it."""

    async def test_backfill(self) -> None:
        """An older database's mailings are in the index after the migration, and the
        discovery mark is past its messages."""
        path = os.path.join(tempfile.mkdtemp(), "old.db")
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute(sql.CREATE_SCHEMA_VERSION)
        conn.execute(sql.CREATE_APPLIED_MIGRATIONS)
        for m in migrate.load_migrations(sql.SQLITE):
            if m.number >= 6:
                break
            for statement in m.statements:
                conn.execute(statement)
            conn.execute(sql.INSERT_APPLIED, (m.number, m.name, T0))
        conn.execute(sql.INSERT_SCHEMA_VERSION, (5,))
        for n, mailing_id in enumerate(("Old-A", "old-a", "Old-B", None)):
            conn.execute(
                "INSERT INTO messages (queue_id, sender, mailing_id, size, body, source,"
                " created_at) VALUES (?, '', ?, 1, x'00', 'smtp', ?)",
                (submission.new_queue_id(T0) + str(n), mailing_id, T0 + n))
        conn.close()
        store = SqliteStore(path, reactor)
        await store.open()
        self.addCleanup(lambda: Deferred.fromCoroutine(store.close()))
        self.assertEqual([(e.mailing_key, e.mailing_id, e.first_at)
                          for e in await store.mailings()],
                         [("old-b", "Old-B", T0 + 2), ("old-a", "Old-A", T0)])
        self.assertEqual(await store.discover_mailings(100), 0)

