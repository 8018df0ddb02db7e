"""The IOutcomeStore contract: one mixin, run against every engine.

An engine's test case mixes :class:`StoreContractMixin` into a trial
``TestCase`` and provides :meth:`StoreContractMixin.make_store` (an opened
store, closed by a cleanup), :meth:`StoreContractMixin.reopen`,
:meth:`StoreContractMixin.break_store` and
:meth:`StoreContractMixin.make_unreachable_store`.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, gatherResults
from zope.interface.verify import verifyObject

from hurricane.model import (
    AttemptResult,
    BounceEvent,
    EventKind,
    NewMessage,
    NewRecipient,
    ReturnedMessage,
    ReturnedRecipient,
    Source,
    State,
)
from hurricane.store import migrate, sql
from hurricane.store.faults import fail_statements
from hurricane.store.interface import BounceRecord, IOutcomeStore, StoreUnavailable
from hurricane.store.txn import submission

T0 = 1_000_000.0


def message(*recipients: str, **fields: Any) -> NewMessage:
    """A small message to ``recipients`` (default one)."""
    rcpts = tuple(NewRecipient(r) for r in (recipients or ("rcpt@example.com",)))
    fields.setdefault("body", b"Subject: hi\r\n\r\nhello\r\n")
    return NewMessage(sender=fields.pop("sender", "app@sender.test"), recipients=rcpts,
                      **fields)


class StoreContractMixin:
    """Contract tests for any IOutcomeStore; see the module docstring."""

    #: False where a transaction runs inline and completes before the next
    #: call is issued (memory): there is never one in flight to join.
    coalesces = True

    # Provided by trial's TestCase.
    assertEqual: Any
    assertTrue: Any
    assertFalse: Any
    assertIsNone: Any
    assertIsNotNone: Any
    assertIn: Any
    assertLess: Any
    assertRaises: Any
    assertGreater: Any
    patch: Any

    async def make_store(self) -> Any:
        """An opened store on fresh, empty storage (closed by a cleanup)."""
        raise NotImplementedError

    async def reopen(self, store: Any) -> Any:
        """Close ``store`` and open a new one on the same storage."""
        raise NotImplementedError

    async def break_store(self, store: Any) -> None:
        """Make the storage under ``store`` fail every later call."""
        raise NotImplementedError

    def make_unreachable_store(self) -> Any:
        """A store (not opened) whose storage cannot be reached."""
        raise NotImplementedError

    async def setUp(self) -> None:  # noqa: D102 - trial hook
        self.store = await self.make_store()

    async def assertUnavailable(self, coro: Any) -> StoreUnavailable:
        """Await ``coro`` and check that it raises StoreUnavailable."""
        try:
            await coro
        except StoreUnavailable as e:
            return e
        raise AssertionError("expected StoreUnavailable")

    async def enqueue_one(self, *recipients: str, now: float = T0, **fields: Any) -> Any:
        """Enqueue one message and return the EnqueueResult."""
        return await self.store.enqueue(message(*recipients, **fields), now)

    async def deliver(self, delivery_id: int, at: float = T0 + 10) -> None:
        """Record a successful attempt."""
        await self.store.record_attempts(
            [AttemptResult(delivery_id=delivery_id, state=State.delivered, at=at, code=250,
                           text="ok")])

    # -- interface and schema -----------------------------------------------

    def test_provides_interface(self) -> None:
        """The store provides every IOutcomeStore method and a redacted url."""
        self.assertTrue(verifyObject(IOutcomeStore, self.store))
        self.assertTrue(self.store.url)

    async def test_schema_version(self) -> None:
        """After open, every migration is applied and migrate() applies nothing more."""
        numbers = [m.number for m in migrate.load_migrations(sql.SQLITE)]
        self.assertEqual(await self.store.schema_version(), max(numbers))
        self.assertEqual(await self.store.migrate(), [])

    async def test_close_twice(self) -> None:
        """close() is safe to call twice, and a closed store is unavailable."""
        await self.store.close()
        await self.store.close()
        await self.assertUnavailable(self.store.queue_depth())

    # -- enqueue ------------------------------------------------------------

    async def test_enqueue(self) -> None:
        """enqueue stores a queued delivery per recipient, due now, with the message's ids."""
        result = await self.enqueue_one(
            "One@Example.COM", "two@example.net", mailing_id="Spring-26", message_id="Ab12",
            header_message_id="x.1@sender.test", metadata={"k": "v"})
        self.assertEqual(len(result.queue_id), 14)
        self.assertTrue(result.queue_id.isalnum() and result.queue_id.isupper())
        self.assertEqual([r.address for r in result.recipients],
                         ["One@Example.COM", "two@example.net"])
        self.assertEqual({r.state for r in result.recipients}, {State.queued})
        ids = [r.delivery_id for r in result.recipients]
        self.assertEqual(len(set(ids)), 2)
        for delivery_id in ids:
            self.assertLess(delivery_id, 2 ** 52)
        d = await self.store.get_delivery(ids[0])
        self.assertEqual((d.queue_id, d.message_pk, d.recipient, d.domain, d.state),
                         (result.queue_id, result.message_pk, "One@Example.COM",
                          "example.com", State.queued))
        self.assertEqual((d.mailing_id, d.message_id, d.header_message_id, d.sender),
                         ("Spring-26", "Ab12", "x.1@sender.test", "app@sender.test"))
        self.assertEqual((d.attempts, d.next_attempt_at, d.created_at, d.hard),
                         (0, T0, T0, False))
        events = await self.store.events(ids[0])
        self.assertEqual([(e.kind, e.state) for e in events],
                         [(EventKind.queued, State.queued)])

    async def test_enqueue_orcpt(self) -> None:
        """The ORCPT an application gave is kept on the delivery."""
        result = await self.store.enqueue(NewMessage(
            "a@s.test", (NewRecipient("r@x.test", orcpt="rfc822;R@x.test"),), b"x"), T0)
        d = await self.store.get_delivery(result.recipients[0].delivery_id)
        self.assertEqual(d.orcpt, "rfc822;R@x.test")

    async def test_enqueue_unique_queue_ids(self) -> None:
        """Every message gets its own queue id and its own delivery ids."""
        results = [await self.enqueue_one() for _ in range(20)]
        self.assertEqual(len({r.queue_id for r in results}), 20)
        self.assertEqual(len({r.recipients[0].delivery_id for r in results}), 20)

    async def test_enqueue_concurrent(self) -> None:
        """Concurrent enqueues (group-committed) each get their own, committed result."""
        calls = [Deferred.fromCoroutine(self.store.enqueue(message(f"r{i}@x.test"), T0 + i))
                 for i in range(30)]
        results = await gatherResults(calls)
        self.assertEqual([r.recipients[0].address for r in results],
                         [f"r{i}@x.test" for i in range(30)])
        for i, r in enumerate(results):
            d = await self.store.get_delivery(r.recipients[0].delivery_id)
            self.assertEqual((d.recipient, d.created_at, d.queue_id),
                             (f"r{i}@x.test", T0 + i, r.queue_id))
        enqueuer = getattr(self.store, "_enqueuer", None)
        if enqueuer is not None and self.coalesces:
            # Calls arriving while a commit is in flight share the next one.
            self.assertGreater(max(enqueuer.batch_sizes), 1)

    async def test_enqueue_suppressed(self) -> None:
        """A suppressed recipient (any case) gets state suppressed, its reason and an event."""
        await self.store.suppress("Gone@Example.com", "userunknown", T0 - 5, source="bounce")
        result = await self.enqueue_one("ok@example.com", "GONE@example.COM")
        ok, gone = result.recipients
        self.assertEqual((ok.state, ok.reason), (State.queued, None))
        self.assertEqual((gone.state, gone.reason), (State.suppressed, "userunknown"))
        d = await self.store.get_delivery(gone.delivery_id)
        self.assertEqual((d.state, d.reason, d.next_attempt_at), (State.suppressed,
                                                                   "userunknown", None))
        events = await self.store.events(gone.delivery_id)
        self.assertEqual([(e.kind, e.state, e.reason) for e in events],
                         [(EventKind.suppressed, State.suppressed, "userunknown")])
        claimed = await self.store.claim_due(T0 + 1, "n1", 60, 10)
        self.assertEqual([c.delivery_id for c in claimed], [ok.delivery_id])

    async def test_enqueue_many_recipients_in_order(self) -> None:
        """Every delivery id names its own recipient, in recipient order, for a
        message of a few hundred recipients, one past 2,000 (PostgreSQL
        enqueues that one step by step rather than in one statement) and
        small ones enqueued together (one group commit), with a suppressed
        recipient among them."""
        await self.store.suppress("r7@x.test", "userunknown", T0 - 5, source="bounce")
        sizes = (300, submission.CTE_RECIPIENTS + 1, 3, 9)
        results = [await self.store.enqueue(message(*(f"r{i}@x.test" for i in range(n))), T0)
                   for n in sizes[:2]]
        results += await gatherResults([Deferred.fromCoroutine(self.store.enqueue(
            message(*(f"r{i}@x.test" for i in range(n))), T0)) for n in sizes[2:]])
        for n, result in zip(sizes, results, strict=True):
            self.assertEqual([r.address for r in result.recipients],
                             [f"r{i}@x.test" for i in range(n)])
            ids = [r.delivery_id for r in result.recipients]
            self.assertEqual(ids, sorted(ids))
            self.assertEqual(result.recipients[7 % n].state,
                             State.suppressed if n > 7 else State.queued)
            for i in {0, 7 % n, n // 2, n - 1}:
                d = await self.store.get_delivery(ids[i])
                self.assertEqual((d.recipient, d.message_pk, d.queue_id),
                                 (f"r{i}@x.test", result.message_pk, result.queue_id))
                self.assertEqual(d.state, result.recipients[i].state)

    async def test_enqueue_queue_id_collision_draws_again(self) -> None:
        """A queue id already taken is drawn again; the message and its
        deliveries end up under the new one, nothing under the old twice."""
        draws = iter(["QAAAAAAAAAAAAA", "QAAAAAAAAAAAAA", "QBBBBBBBBBBBBB"])
        self.patch(submission, "new_queue_id", lambda now=None: next(draws))
        first = await self.enqueue_one("a@x.test")
        second = await self.enqueue_one("b@x.test", "c@x.test")
        self.assertEqual((first.queue_id, second.queue_id),
                         ("QAAAAAAAAAAAAA", "QBBBBBBBBBBBBB"))
        for result in (first, second):
            for r in result.recipients:
                d = await self.store.get_delivery(r.delivery_id)
                self.assertEqual((d.recipient, d.queue_id), (r.address, result.queue_id))
        self.assertEqual((await self.store.summary()).messages, 2)

    async def test_enqueue_no_recipients(self) -> None:
        """A message without recipients is refused before touching the store."""
        with self.assertRaises(ValueError):
            await self.store.enqueue(NewMessage("a@s.test", (), b"x"), T0)

    async def test_enqueue_atomic(self) -> None:
        """An enqueue that fails halfway leaves nothing behind and raises StoreUnavailable."""
        # The events' insert fails, after the message's and the deliveries'
        # (a later statement; on PostgreSQL the one statement holding them all).
        fault = self.store.faults.add(fail_statements("INSERT INTO events"))
        await self.assertUnavailable(self.store.enqueue(message("a@x.test", "b@x.test"), T0))
        self.assertEqual(fault.fired, 1)
        self.assertEqual(await self.store.outcomes(), [])
        self.assertEqual((await self.store.summary()).messages, 0)
        # And the store still works afterwards.
        await self.enqueue_one()
        self.assertEqual(len(await self.store.outcomes()), 1)

    async def test_load_body(self) -> None:
        """load_body returns the stored bytes exactly."""
        body = bytes(range(256)) * 20
        result = await self.enqueue_one(body=body)
        self.assertEqual(await self.store.load_body(result.message_pk), body)

    # -- claiming -----------------------------------------------------------

    async def test_claim_new_before_retries(self) -> None:
        """New mail is claimed before retries, then by due time."""
        retry = (await self.enqueue_one("retry@x.test", now=T0)).recipients[0].delivery_id
        await self.store.claim_due(T0, "n1", 60, 10)
        await self.store.record_attempts([AttemptResult(
            delivery_id=retry, state=State.deferred, at=T0 + 1, code=451, next_attempt_at=T0 + 5,
            owner="n1")])
        late = (await self.enqueue_one("late@x.test", now=T0 + 20)).recipients[0].delivery_id
        early = (await self.enqueue_one("early@x.test", now=T0 + 10)).recipients[0].delivery_id
        claimed = await self.store.claim_due(T0 + 30, "n1", 60, 10)
        self.assertEqual([c.delivery_id for c in claimed], [early, late, retry])
        self.assertEqual({(c.lease_owner, c.lease_until) for c in claimed},
                         {("n1", T0 + 90)})

    async def test_claim_only_due(self) -> None:
        """Deliveries not yet due and deliveries in a final state are not claimed."""
        later = (await self.enqueue_one(now=T0 + 100)).recipients[0].delivery_id
        done = (await self.enqueue_one(now=T0)).recipients[0].delivery_id
        await self.deliver(done, T0 + 1)
        self.assertEqual(await self.store.claim_due(T0 + 50, "n1", 60, 10), [])
        claimed = await self.store.claim_due(T0 + 100, "n1", 60, 10)
        self.assertEqual([c.delivery_id for c in claimed], [later])

    async def test_claim_limit_and_excluded_domains(self) -> None:
        """claim_due honours the limit and skips excluded domains (any case)."""
        await self.enqueue_one("a@slow.test", "b@fast.test", "c@fast.test", "d@fast.test")
        claimed = await self.store.claim_due(T0, "n1", 60, 2, exclude_domains=["SLOW.test"])
        self.assertEqual([c.recipient for c in claimed], ["b@fast.test", "c@fast.test"])
        self.assertEqual(await self.store.claim_due(T0, "n1", 60, 0), [])

    async def test_lease(self) -> None:
        """A leased row is not claimed again until its lease expires; then it is taken over."""
        delivery_id = (await self.enqueue_one()).recipients[0].delivery_id
        self.assertEqual(len(await self.store.claim_due(T0, "n1", 60, 10)), 1)
        self.assertEqual(await self.store.claim_due(T0 + 59, "n2", 60, 10), [])
        taken = await self.store.claim_due(T0 + 61, "n2", 60, 10)
        self.assertEqual([(c.delivery_id, c.lease_owner) for c in taken], [(delivery_id, "n2")])

    async def test_release(self) -> None:
        """release gives back only the owner's leases, and released rows are claimable."""
        delivery_id = (await self.enqueue_one()).recipients[0].delivery_id
        await self.store.claim_due(T0, "n1", 60, 10)
        await self.store.release([delivery_id], "n2")
        self.assertEqual(await self.store.claim_due(T0 + 1, "n2", 60, 10), [])
        await self.store.release([delivery_id], "n1")
        d = await self.store.get_delivery(delivery_id)
        self.assertEqual((d.lease_owner, d.lease_until, d.attempts), (None, None, 0))
        self.assertEqual(len(await self.store.claim_due(T0 + 1, "n2", 60, 10)), 1)

    async def test_release_owner(self) -> None:
        """release_owner frees every lease of one node (after its restart), no one else's."""
        r = await self.enqueue_one("a@x.test", "b@x.test", "c@y.test")
        ids = [x.delivery_id for x in r.recipients]
        claimed = await self.store.claim_due(T0, "n1", 600, 2)
        await self.store.claim_due(T0, "n2", 600, 10)
        self.assertEqual(await self.store.release_owner("n1"), len(claimed))
        self.assertEqual(await self.store.release_owner("n1"), 0)
        again = await self.store.claim_due(T0 + 1, "n1", 600, 10)
        self.assertEqual(sorted(d.delivery_id for d in again),
                         sorted(d.delivery_id for d in claimed))
        self.assertEqual(len(ids), 3)

    # -- attempts -----------------------------------------------------------

    async def test_record_delivered(self) -> None:
        """A 250 moves the row to delivered, stores the reply and clears the lease."""
        delivery_id = (await self.enqueue_one()).recipients[0].delivery_id
        await self.store.claim_due(T0, "n1", 60, 10)
        [event_id] = await self.store.record_attempts([AttemptResult(
            delivery_id=delivery_id, state=State.delivered, at=T0 + 3, code=250, status="2.0.0",
            text="queued as X",
            remote_host="mx.example.com", remote_ip="192.0.2.1", tls="TLSv1.3", duration=0.2,
            owner="n1")])
        d = await self.store.get_delivery(delivery_id)
        self.assertEqual((d.state, d.code, d.status, d.text, d.remote_host, d.attempts),
                         (State.delivered, 250, "2.0.0", "queued as X", "mx.example.com", 1))
        self.assertEqual((d.delivered_at, d.updated_at, d.lease_owner, d.lease_until,
                          d.next_attempt_at), (T0 + 3, T0 + 3, None, None, None))
        event = (await self.store.events(delivery_id))[-1]
        self.assertEqual((event.event_id, event.kind, event.state, event.remote_ip, event.tls,
                          event.duration, event.source),
                         (event_id, EventKind.attempt, State.delivered, "192.0.2.1",
                          "TLSv1.3", 0.2, "smtp"))

    async def test_record_deferred_then_counts(self) -> None:
        """Deferrals set the next due time and count attempts; retries come back due."""
        delivery_id = (await self.enqueue_one()).recipients[0].delivery_id
        for n in range(1, 3):
            [c] = await self.store.claim_due(T0 + 100 * n, "n1", 60, 10)
            await self.store.record_attempts([AttemptResult(
                delivery_id=delivery_id, state=State.deferred, at=T0 + 100 * n + 1, code=451,
                status="4.7.1",
                reason="blocked", next_attempt_at=T0 + 100 * (n + 1), owner="n1")])
            d = await self.store.get_delivery(delivery_id)
            self.assertEqual((d.state, d.attempts, d.next_attempt_at, d.reason, d.lease_owner),
                             (State.deferred, n, T0 + 100 * (n + 1), "blocked", None))
        self.assertEqual(await self.store.queue_depth(), {"queued": 0, "deferred": 1})

    async def test_record_failed_suppresses(self) -> None:
        """A recipient-side hard failure moves to failed and suppresses the address."""
        delivery_id = (await self.enqueue_one("Nobody@Example.com")).recipients[0].delivery_id
        [event_id] = await self.store.record_attempts([AttemptResult(
            delivery_id=delivery_id, state=State.failed, at=T0 + 1, code=550, status="5.1.1",
            reason="userunknown",
            hard=True, suppress=True, rule="smtp-5.1.1")])
        d = await self.store.get_delivery(delivery_id)
        self.assertEqual((d.state, d.reason, d.hard, d.next_attempt_at),
                         (State.failed, "userunknown", True, None))
        entry = await self.store.get_suppression("nobody@example.com")
        self.assertEqual((entry.address, entry.reason, entry.source, entry.event_id),
                         ("nobody@example.com", "userunknown", "smtp", event_id))

    async def test_record_expired(self) -> None:
        """Running out of retries gives state expired, an expired event, and no suppression."""
        delivery_id = (await self.enqueue_one()).recipients[0].delivery_id
        await self.store.record_attempts([AttemptResult(
            delivery_id=delivery_id, state=State.expired, at=T0 + 1, reason="expired",
            source=Source.local)])
        d = await self.store.get_delivery(delivery_id)
        self.assertEqual(d.state, State.expired)
        self.assertEqual((await self.store.events(delivery_id))[-1].kind, EventKind.expired)
        self.assertEqual(await self.store.suppressions(), [])

    async def test_record_rejects_bad_state(self) -> None:
        """An attempt cannot end in queued or bounced: ValueError, nothing recorded."""
        delivery_id = (await self.enqueue_one()).recipients[0].delivery_id
        with self.assertRaises(ValueError):
            await self.store.record_attempts([AttemptResult(delivery_id=delivery_id,
                                                            state=State.bounced, at=T0)])
        self.assertEqual(len(await self.store.events(delivery_id)), 1)

    async def test_late_result_after_lost_lease(self) -> None:
        """A result from a node that lost its lease is kept as an event only."""
        delivery_id = (await self.enqueue_one()).recipients[0].delivery_id
        await self.store.claim_due(T0, "n1", 60, 10)
        await self.store.claim_due(T0 + 61, "n2", 60, 10)
        ids = await self.store.record_attempts([AttemptResult(
            delivery_id=delivery_id, state=State.delivered, at=T0 + 62, code=250, owner="n1")])
        self.assertEqual(len(ids), 1)
        d = await self.store.get_delivery(delivery_id)
        self.assertEqual((d.state, d.attempts, d.lease_owner), (State.queued, 0, "n2"))
        await self.store.record_attempts([AttemptResult(
            delivery_id=delivery_id, state=State.deferred, at=T0 + 63, code=421,
            next_attempt_at=T0 + 500,
            owner="n2")])
        d = await self.store.get_delivery(delivery_id)
        self.assertEqual((d.state, d.attempts, d.lease_owner), (State.deferred, 1, None))
        kinds = [e.kind for e in await self.store.events(delivery_id)]
        self.assertEqual(kinds, [EventKind.queued, EventKind.attempt, EventKind.attempt])

    async def test_record_attempts_mixed_batch(self) -> None:
        """One batch mixing every case moves each row as it would alone: a
        delivered, a deferred with its next time, a hard failure that
        suppresses, a late result from a node that lost its lease, a result
        for a row already final; then a batch with two results for one
        delivery, applied in order. PostgreSQL writes the first batch's
        updates in one statement, the second's row by row."""
        ids = [r.delivery_id for r in (await self.enqueue_one(
            *(f"r{i}@x.test" for i in range(7)))).recipients]
        await self.deliver(ids[4])  # already final
        claimed = await self.store.claim_due(T0, "n1", 60, 10)
        self.assertEqual(len(claimed), 6)
        await self.store.claim_due(T0 + 61, "n2", 60, 1)  # n2 takes one of them over
        taken = (await self.store.get_delivery(ids[0])).lease_owner
        self.assertEqual(taken, "n2")
        at = T0 + 70
        await self.store.record_attempts([
            AttemptResult(delivery_id=ids[0], state=State.delivered, at=at, code=250, owner="n1"),
                           # lost lease
            AttemptResult(delivery_id=ids[1], state=State.delivered, at=at, code=250,
                          status="2.0.0",
                          text="ok", remote_host="mx.x.test", owner="n1"),
            AttemptResult(delivery_id=ids[2], state=State.deferred, at=at, code=451, status="4.7.1",
                          next_attempt_at=T0 + 900, owner="n1"),
            AttemptResult(delivery_id=ids[3], state=State.failed, at=at, code=550, status="5.1.1",
                          reason="userunknown", hard=True, suppress=True, owner="n1"),
            AttemptResult(delivery_id=ids[4], state=State.failed, at=at, code=550),  # final already
            AttemptResult(delivery_id=ids[5], state=State.deferred, at=at, code=421,
                          next_attempt_at=T0 + 800,
                          owner="n1"),
            AttemptResult(delivery_id=ids[6], state=State.failed, at=at, code=554,
                          status="5.7.1"),  # no owner
        ])
        await self.store.record_attempts([
            AttemptResult(delivery_id=ids[5], state=State.deferred, at=at, code=421,
                          next_attempt_at=T0 + 850),
            AttemptResult(delivery_id=ids[5], state=State.delivered, at=at + 1, code=250),
        ])
        got = [await self.store.get_delivery(i) for i in ids]
        self.assertEqual([(d.state, d.attempts) for d in got], [
            (State.queued, 0), (State.delivered, 1), (State.deferred, 1), (State.failed, 1),
            (State.delivered, 1), (State.delivered, 3), (State.failed, 1)])
        self.assertEqual(got[0].lease_owner, "n2")
        self.assertEqual((got[1].code, got[1].status, got[1].text, got[1].remote_host,
                          got[1].delivered_at, got[1].lease_owner),
                         (250, "2.0.0", "ok", "mx.x.test", at, None))
        self.assertEqual((got[2].code, got[2].next_attempt_at, got[2].lease_owner),
                         (451, T0 + 900, None))
        self.assertEqual((got[3].reason, got[3].hard, got[3].next_attempt_at),
                         ("userunknown", True, None))
        self.assertIsNotNone(await self.store.get_suppression("r3@x.test"))
        self.assertEqual((got[4].code, got[4].delivered_at), (250, T0 + 10))
        self.assertEqual((got[5].code, got[5].delivered_at), (250, at + 1))
        self.assertEqual((got[6].code, got[6].status, got[6].lease_owner), (554, "5.7.1", None))
        self.assertEqual([len(await self.store.events(i)) for i in ids], [2, 2, 2, 2, 3, 4, 2])

    async def test_result_after_final_state(self) -> None:
        """A result for a row already final adds an event and moves nothing."""
        delivery_id = (await self.enqueue_one()).recipients[0].delivery_id
        await self.deliver(delivery_id)
        await self.store.record_attempts([AttemptResult(
            delivery_id=delivery_id, state=State.failed, at=T0 + 20, code=550,
            reason="userunknown")])
        d = await self.store.get_delivery(delivery_id)
        self.assertEqual((d.state, d.attempts, d.code), (State.delivered, 1, 250))
        self.assertEqual(len(await self.store.events(delivery_id)), 3)

    async def test_record_unknown_delivery(self) -> None:
        """Results for unknown delivery ids are ignored, the others recorded."""
        delivery_id = (await self.enqueue_one()).recipients[0].delivery_id
        ids = await self.store.record_attempts([
            AttemptResult(delivery_id=delivery_id + 1000, state=State.delivered, at=T0 + 1),
            AttemptResult(delivery_id=delivery_id, state=State.delivered, at=T0 + 1)])
        self.assertEqual(len(ids), 1)
        self.assertEqual((await self.store.get_delivery(delivery_id)).state, State.delivered)

    async def test_record_many_maps_each_event_to_its_result(self) -> None:
        """A large batch (over one multi-row INSERT) returns one event id per
        known result, in the results' order, each event carrying its own
        result's values; a delivery twice in the batch gets both events."""
        ids = [(await self.enqueue_one(f"r{i}@many.test")).recipients[0].delivery_id
               for i in range(60)]
        results = [AttemptResult(delivery_id=d, state=State.deferred, at=T0 + 1, code=400 + i % 10,
                                 text=f"try {i}", next_attempt_at=T0 + 100)
                   for i, d in enumerate(ids)]
        results.insert(7, AttemptResult(delivery_id=ids[0] + 100000, state=State.delivered,
                                        at=T0 + 1))
        results.append(AttemptResult(delivery_id=ids[3], state=State.delivered, at=T0 + 2, code=250,
                                     text="second"))
        event_ids = await self.store.record_attempts(results)
        known = [r for r in results if r.delivery_id != ids[0] + 100000]
        self.assertEqual(len(event_ids), len(known))
        self.assertEqual(event_ids, sorted(event_ids))
        for r, event_id in zip(known, event_ids, strict=True):
            [event] = [e for e in await self.store.events(r.delivery_id)
                       if e.event_id == event_id]
            self.assertEqual((event.code, event.text), (r.code, r.text))
        self.assertEqual((await self.store.get_delivery(ids[3])).state, State.delivered)
        self.assertEqual((await self.store.get_delivery(ids[4])).state, State.deferred)

    async def test_retry_now(self) -> None:
        """retry_now makes matching deferred rows due now and counts them."""
        rows = []
        for rcpt in ("a@one.test", "b@two.test", "c@two.test"):
            rows.append((await self.enqueue_one(rcpt)).recipients[0].delivery_id)
        queued = (await self.enqueue_one("d@two.test")).recipients[0].delivery_id
        await self.store.record_attempts([
            AttemptResult(delivery_id=i, state=State.deferred, at=T0 + 1,
                          next_attempt_at=T0 + 1000) for i in rows])
        self.assertEqual(await self.store.retry_now(T0 + 5, domain="TWO.test"), 2)
        self.assertEqual((await self.store.get_delivery(rows[1])).next_attempt_at, T0 + 5)
        self.assertEqual((await self.store.get_delivery(rows[0])).next_attempt_at, T0 + 1000)
        self.assertEqual((await self.store.get_delivery(queued)).next_attempt_at, T0)
        self.assertEqual((await self.store.events(rows[1]))[-1].kind, EventKind.retry)
        d0 = await self.store.get_delivery(rows[0])
        self.assertEqual(await self.store.retry_now(T0 + 6, queue_id=d0.queue_id.lower()), 1)
        self.assertEqual(await self.store.retry_now(T0 + 7, delivery_id=rows[2]), 1)
        self.assertEqual(await self.store.retry_now(T0 + 8), 3)
        self.assertEqual(await self.store.retry_now(T0 + 8, delivery_id=queued), 0)

    # -- returned mail ------------------------------------------------------

    async def bounce(self, delivery_id: int, kind: EventKind = EventKind.bounce,
                     **fields: Any) -> list[int]:
        """Store a returned message and record one analysed event for it."""
        bounce_id = await self.store.store_bounce(ReturnedMessage(
            b"From: MAILER-DAEMON\r\n\r\nfailed\r\n", "", "b@bounce.test", T0 + 50,
            delivery_id=delivery_id, client="192.0.2.9"))
        fields.setdefault("reason", "userunknown")
        # as the envelope's verified token would have matched it
        fields.setdefault("correlation", "verp")
        event = BounceEvent(delivery_id=delivery_id, kind=kind, at=T0 + 60, bounce_id=bounce_id,
                            **fields)
        return await self.store.record_bounce(bounce_id, [event], "dsn",
                                              fields["correlation"], "{}")

    async def test_bounce_after_delivered(self) -> None:
        """A permanent bounce moves delivered to bounced, with its details."""
        delivery_id = (await self.enqueue_one("X@Example.com")).recipients[0].delivery_id
        await self.deliver(delivery_id)
        [event_id] = await self.bounce(delivery_id, hard=True, suppress=True, code=550,
                                       status="5.1.1", text="no such user",
                                       remote_host="mx.example.com", correlation="verp")
        d = await self.store.get_delivery(delivery_id)
        self.assertEqual((d.state, d.reason, d.hard, d.status, d.text, d.bounced_at,
                          d.delivered_at),
                         (State.bounced, "userunknown", True, "5.1.1", "no such user",
                          T0 + 60, T0 + 10))
        event = (await self.store.events(delivery_id))[-1]
        self.assertEqual((event.event_id, event.kind, event.state, event.correlation,
                          event.source), (event_id, EventKind.bounce, State.bounced, "verp",
                                          "dsn"))
        self.assertIsNotNone(event.bounce_id)
        entry = await self.store.get_suppression("x@example.com")
        self.assertEqual((entry.source, entry.event_id), ("bounce", event_id))

    async def test_bounce_stops_retries(self) -> None:
        """A permanent bounce for a deferred row moves it to bounced and stops retries."""
        delivery_id = (await self.enqueue_one()).recipients[0].delivery_id
        await self.store.record_attempts([AttemptResult(
            delivery_id=delivery_id, state=State.deferred, at=T0 + 1, next_attempt_at=T0 + 100)])
        await self.bounce(delivery_id)
        d = await self.store.get_delivery(delivery_id)
        self.assertEqual((d.state, d.next_attempt_at), (State.bounced, None))
        self.assertEqual(await self.store.claim_due(T0 + 1000, "n1", 60, 10), [])

    async def test_temporary_bounce_is_event_only(self) -> None:
        """A non-permanent bounce adds an event and leaves the state alone."""
        delivery_id = (await self.enqueue_one()).recipients[0].delivery_id
        await self.deliver(delivery_id)
        self.assertEqual(len(await self.bounce(delivery_id, permanent=False)), 1)
        self.assertEqual((await self.store.get_delivery(delivery_id)).state, State.delivered)

    async def test_final_soft_bounce(self) -> None:
        """A final failure with a 4.x.x (the reporter gave up) moves delivered to bounced."""
        delivery_id = (await self.enqueue_one()).recipients[0].delivery_id
        await self.deliver(delivery_id)
        await self.bounce(delivery_id, permanent=False, final=True, reason="mailboxfull",
                          status="4.2.2")
        d = await self.store.get_delivery(delivery_id)
        self.assertEqual((d.state, d.reason, d.hard), (State.bounced, "mailboxfull", False))

    async def test_bounce_analysis(self) -> None:
        """The analysis JSON recorded for a returned message is read back alone."""
        bounce_id = await self.store.store_bounce(ReturnedMessage(
            b"raw", "", "b@bounce.test", T0))
        self.assertIsNone(await self.store.bounce_analysis(bounce_id))
        await self.store.record_bounce(bounce_id, [], "bounce", None, '{"category": "bounce"}')
        self.assertEqual(await self.store.bounce_analysis(bounce_id), '{"category": "bounce"}')
        self.assertIsNone(await self.store.bounce_analysis(bounce_id + 1000))

    async def test_complaint(self) -> None:
        """A complaint moves a delivered row to complained and may suppress."""
        delivery_id = (await self.enqueue_one("c@x.test")).recipients[0].delivery_id
        await self.deliver(delivery_id)
        await self.bounce(delivery_id, EventKind.complaint, reason="feedback",
                          feedback_type="abuse", suppress=True, source=Source.arf)
        d = await self.store.get_delivery(delivery_id)
        self.assertEqual((d.state, d.reason), (State.complained, "feedback"))
        event = (await self.store.events(delivery_id))[-1]
        self.assertEqual((event.kind, event.feedback_type, event.source),
                         (EventKind.complaint, "abuse", "arf"))
        # A complaint suppresses its stream only (issue 20), unless the stream
        # is configured complaint_global.
        self.assertIsNone(await self.store.get_suppression("c@x.test"))
        entries = await self.store.suppression_entries("C@x.test")
        self.assertEqual([(e.scope, e.source, e.event_id) for e in entries],
                         [("stream:transactional", "complaint", event.event_id)])
        self.store.complaint_global_streams = frozenset({"transactional"})
        other = (await self.enqueue_one("g@x.test")).recipients[0].delivery_id
        await self.deliver(other)
        await self.bounce(other, EventKind.complaint, reason="feedback",
                          feedback_type="abuse", suppress=True, source=Source.arf)
        self.assertEqual((await self.store.get_suppression("g@x.test")).source, "complaint")

    async def test_complaint_about_undelivered_mail(self) -> None:
        """A complaint for a failed delivery is an event only: that mail never arrived."""
        delivery_id = (await self.enqueue_one("f@x.test")).recipients[0].delivery_id
        await self.store.record_attempts([AttemptResult(
            delivery_id=delivery_id, state=State.failed, at=T0 + 10, code=550, text="no",
            reason="filtered")])
        await self.bounce(delivery_id, EventKind.complaint, reason="feedback",
                          feedback_type="abuse", source=Source.arf)
        d = await self.store.get_delivery(delivery_id)
        self.assertEqual(d.state, State.failed)
        self.assertEqual((await self.store.events(delivery_id))[-1].kind, EventKind.complaint)

    async def test_informational_events(self) -> None:
        """Delayed, auto-reply and relayed reports add events and never change the state."""
        delivery_id = (await self.enqueue_one()).recipients[0].delivery_id
        await self.deliver(delivery_id)
        for kind, reason in ((EventKind.delayed, "expired"), (EventKind.autoreply, "vacation"),
                             (EventKind.relayed, "delivered")):
            self.assertEqual(len(await self.bounce(delivery_id, kind, reason=reason)), 1)
        d = await self.store.get_delivery(delivery_id)
        self.assertEqual((d.state, d.reason), (State.delivered, None))
        events = (await self.store.events(delivery_id))[-3:]
        self.assertEqual([(e.kind, e.state) for e in events],
                         [(EventKind.delayed, None), (EventKind.autoreply, None),
                          (EventKind.relayed, None)])

    async def test_idempotent_idem_key(self) -> None:
        """An event recorded twice under one idem_key is recorded once."""
        delivery_id = (await self.enqueue_one()).recipients[0].delivery_id
        await self.deliver(delivery_id)
        self.assertEqual(len(await self.bounce(delivery_id, idem_key="k1")), 1)
        self.assertEqual(await self.bounce(delivery_id, idem_key="k1"), [])
        self.assertEqual(len(await self.bounce(delivery_id, EventKind.delayed,
                                               idem_key="k2")), 1)
        kinds = [e.kind for e in await self.store.events(delivery_id)]
        self.assertEqual(kinds.count(EventKind.bounce), 1)

    async def test_unverified_copy_never_cancels_a_verified_one(self) -> None:
        """An unverified event recorded first under an idem_key does not make the verified
        event with that key a no-op: it is recorded and applied; each is still recorded
        once."""
        delivery_id = (await self.enqueue_one("k@idem.test")).recipients[0].delivery_id
        await self.deliver(delivery_id)
        self.assertEqual(len(await self.bounce(delivery_id, idem_key="k", hard=True,
                                               suppress=True, correlation="recipient")), 1)
        self.assertEqual((await self.store.get_delivery(delivery_id)).state, State.delivered)
        self.assertEqual(len(await self.bounce(delivery_id, idem_key="k", hard=True,
                                               suppress=True, correlation="verp")), 1)
        self.assertEqual((await self.store.get_delivery(delivery_id)).state, State.bounced)
        self.assertIsNotNone(await self.store.get_suppression("k@idem.test"))
        for key in ("verp", "header-token", "recipient", "message-id"):
            self.assertEqual(await self.bounce(delivery_id, idem_key="k", correlation=key), [])
        events = [e for e in await self.store.events(delivery_id) if e.kind is EventKind.bounce]
        self.assertEqual([(e.correlation, e.state) for e in events],
                         [("recipient", None), ("verp", State.bounced)])

    async def test_weak_correlation_changes_nothing(self) -> None:
        """A bounce or complaint matched by a weak key is recorded, not applied, in every state."""
        delivered = (await self.enqueue_one("d@weak.test")).recipients[0].delivery_id
        await self.deliver(delivered)
        deferred = (await self.enqueue_one("e@weak.test")).recipients[0].delivery_id
        await self.store.record_attempts([AttemptResult(
            delivery_id=deferred, state=State.deferred, at=T0 + 1, code=451, text="later",
            next_attempt_at=T0 + 100)])
        queued = (await self.enqueue_one("q@weak.test")).recipients[0].delivery_id
        before = {i: await self.store.get_delivery(i) for i in (delivered, deferred, queued)}
        for key in (None, "recipient", "orcpt", "message-id", "sibling", "message-token", "x"):
            for delivery_id in before:
                await self.bounce(delivery_id, hard=True, suppress=True, code=550,
                                  status="5.1.1", text="forged", correlation=key)
                await self.bounce(delivery_id, EventKind.complaint, reason="feedback",
                                  suppress=True, source=Source.arf, correlation=key)
        for delivery_id, row in before.items():
            self.assertEqual(await self.store.get_delivery(delivery_id), row)
            events = [e for e in await self.store.events(delivery_id)
                      if e.kind in (EventKind.bounce, EventKind.complaint)]
            self.assertEqual(len(events), 14)
            self.assertEqual({(e.state, e.note) for e in events},
                             {(None, "recorded, not applied: unverified correlation")})
            self.assertIn("forged", [e.text for e in events])
        self.assertEqual(await self.store.suppressions(), [])
        # the deferred one is still due for its retry, the queued one for its first try
        claimed = {d.delivery_id for d in await self.store.claim_due(T0 + 200, "n1", 60, 10)}
        self.assertEqual(claimed, {deferred, queued})

    async def test_verified_keys_apply(self) -> None:
        """Each verified key (verp, header-token, envid) moves the state and suppresses."""
        for i, key in enumerate(("verp", "header-token", "envid")):
            delivery_id = (await self.enqueue_one(f"v{i}@ok.test")).recipients[0].delivery_id
            await self.deliver(delivery_id)
            await self.bounce(delivery_id, hard=True, suppress=True, correlation=key)
            self.assertEqual((await self.store.get_delivery(delivery_id)).state, State.bounced)
            event = (await self.store.events(delivery_id))[-1]
            self.assertEqual((event.state, event.note, event.correlation),
                             (State.bounced, None, key))
            self.assertIsNotNone(await self.store.get_suppression(f"v{i}@ok.test"))

    async def test_unsent_delivery_not_bounced(self) -> None:
        """A delivery never attempted cannot have bounced, even by a verified key."""
        delivery_id = (await self.enqueue_one()).recipients[0].delivery_id
        await self.bounce(delivery_id)
        self.assertEqual((await self.store.get_delivery(delivery_id)).state, State.queued)
        self.assertIsNone((await self.store.events(delivery_id))[-1].state)

    async def test_pending_bounces(self) -> None:
        """Stored returned messages stay pending, oldest first, until analyzed or failed."""
        ids = []
        for n in (3, 1, 2):
            ids.append(await self.store.store_bounce(ReturnedMessage(
                b"raw %d" % n, "", "b@bounce.test", T0 + n)))
        self.assertEqual(await self.store.pending_bounces(10), [ids[1], ids[2], ids[0]])
        await self.store.record_bounce(ids[1], [], "unknown", None, '{"x": 1}')
        await self.store.mark_bounce_failed(ids[2], "RecursionError")
        self.assertEqual(await self.store.pending_bounces(10), [ids[0]])
        stored = await self.store.load_bounce(ids[1])
        self.assertEqual((stored.status, stored.category, stored.raw, stored.received_at),
                         ("analyzed", "unknown", b"raw 1", T0 + 1))
        self.assertEqual((await self.store.load_bounce(ids[2])).status, "failed")
        self.assertIsNone(await self.store.load_bounce(ids[0] + 1000))

    async def test_bounce_envelope(self) -> None:
        """One stored message keeps each envelope recipient with its token's delivery and scope."""
        envelope = (ReturnedRecipient("postmaster@bounce.test"),
                    ReturnedRecipient("hxx@bounce.test", 42, per_message=True),
                    ReturnedRecipient("abuse@bounce.test"),
                    ReturnedRecipient("hyy@bounce.test", 43))
        bounce_id = await self.store.store_bounce(ReturnedMessage(
            b"one copy", "", "ignored@bounce.test", T0, recipients=envelope))
        single = await self.store.store_bounce(ReturnedMessage(
            b"r", "", "b@bounce.test", T0, delivery_id=7))
        stored = await self.store.load_bounce(bounce_id)
        self.assertEqual((stored.raw, stored.recipients, stored.envelope(), stored.rcpt_to,
                          stored.delivery_id, stored.purged_at),
                         (b"one copy", envelope, envelope, "postmaster@bounce.test", 42, None))
        # many loads at once map their envelopes back to the right message
        both = await gatherResults([Deferred.fromCoroutine(self.store.load_bounce(i))
                                    for i in (single, bounce_id)])
        self.assertEqual([b.recipients for b in both],
                         [(ReturnedRecipient("b@bounce.test", 7),), envelope])

    async def test_purge_bounces(self) -> None:
        """Retention drops the raw bytes of old finished messages only, keeping their analysis."""
        d = (await self.enqueue_one("p@x.test")).recipients[0].delivery_id
        await self.deliver(d)
        ids = [await self.store.store_bounce(ReturnedMessage(
            b"raw %d" % i, "", "b@bounce.test", T0 + i, delivery_id=d)) for i in range(5)]
        analyzed, failed, pending, recent, second = ids
        [event_id] = await self.store.record_bounce(analyzed, [BounceEvent(
            delivery_id=d, kind=EventKind.bounce, at=T0 + 60, bounce_id=analyzed,
            correlation="verp",
            reason="userunknown")], "bounce", "verp", '{"kept": true}')
        await self.store.mark_bounce_failed(failed, "gave up")
        await self.store.record_bounce(recent, [], "other", None, "{}")
        await self.store.record_bounce(second, [], "other", None, "{}")
        # received before T0 + 3.5: analyzed, failed, pending (never), recent
        self.assertEqual(await self.store.purge_bounces(T0 + 3.5, T0 + 100, limit=2), 2)
        self.assertEqual(await self.store.purge_bounces(T0 + 3.5, T0 + 101), 1)
        self.assertEqual(await self.store.purge_bounces(T0 + 3.5, T0 + 102), 0)
        got = {i: await self.store.load_bounce(i) for i in ids}
        self.assertEqual([(got[i].raw, got[i].purged_at) for i in ids],
                         [(b"", T0 + 100), (b"", T0 + 100), (b"raw 2", None),
                          (b"", T0 + 101), (b"raw 4", None)])
        self.assertEqual((got[analyzed].status, got[analyzed].category,
                          got[analyzed].recipients[0].delivery_id),
                         ("analyzed", "bounce", d))
        self.assertEqual((await self.store.events(d))[-1].event_id, event_id)
        self.assertEqual(await self.store.pending_bounces(10), [pending])

    async def test_bounce_for_unknown_delivery(self) -> None:
        """A bounce event for an unknown delivery is skipped; the message is analyzed."""
        bounce_id = await self.store.store_bounce(ReturnedMessage(b"r", "", "b@x", T0))
        ids = await self.store.record_bounce(
            bounce_id, [BounceEvent(delivery_id=99999, kind=EventKind.bounce, at=T0)], "dsn",
                                    None, "{}")
        self.assertEqual(ids, [])
        self.assertEqual((await self.store.load_bounce(bounce_id)).status, "analyzed")

    async def test_store_bounce_concurrent(self) -> None:
        """Concurrent store_bounce calls (group-committed) each get their own id, stored."""
        calls = [Deferred.fromCoroutine(self.store.store_bounce(ReturnedMessage(
            b"raw %d" % i, "", f"b{i}@bounce.test", T0 + i))) for i in range(30)]
        ids = await gatherResults(calls)
        self.assertEqual(len(set(ids)), 30)
        for i, bounce_id in enumerate(ids):
            stored = await self.store.load_bounce(bounce_id)
            self.assertEqual((stored.raw, stored.rcpt_to, stored.status, stored.recipients),
                             (b"raw %d" % i, f"b{i}@bounce.test", "pending",
                              (ReturnedRecipient(f"b{i}@bounce.test"),)))
        self.assertEqual(await self.store.pending_bounces(100), ids)
        bouncer = getattr(self.store, "_bouncer", None)
        if bouncer is not None and self.coalesces:
            # Calls arriving while a commit is in flight share the next one.
            self.assertGreater(max(bouncer.batch_sizes), 1)

    async def test_store_bounce_batch_failure(self) -> None:
        """A failed group commit fails every store_bounce of its batch with StoreUnavailable."""
        fault = self.store.faults.add(fail_statements("INSERT INTO bounces", times=None))
        calls = [Deferred.fromCoroutine(self.assertUnavailable(self.store.store_bounce(
            ReturnedMessage(b"raw %d" % i, "", "b@bounce.test", T0 + i)))) for i in range(5)]
        errors = await gatherResults(calls)
        self.assertEqual(len(errors), 5)
        self.assertGreater(fault.fired, 0)
        self.store.faults.remove(fault)
        self.assertEqual(await self.store.pending_bounces(10), [])
        # And the store still works afterwards.
        bounce_id = await self.store.store_bounce(ReturnedMessage(b"ok", "", "b@x", T0))
        self.assertEqual(await self.store.pending_bounces(10), [bounce_id])

    async def test_concurrent_reads(self) -> None:
        """Reads issued together (batched in one transaction) each get their own answer."""
        rows = [(await self.enqueue_one(f"r{i}@x.test", body=b"body %d" % i)) for i in range(6)]
        bounce_id = await self.store.store_bounce(ReturnedMessage(b"raw", "", "b@x", T0))
        calls = [Deferred.fromCoroutine(self.store.get_delivery(r.recipients[0].delivery_id))
                 for r in rows]
        calls += [Deferred.fromCoroutine(self.store.load_body(r.message_pk)) for r in rows]
        calls.append(Deferred.fromCoroutine(self.store.find_deliveries(recipient="r3@x.test")))
        calls.append(Deferred.fromCoroutine(self.store.load_bounce(bounce_id)))
        calls.append(Deferred.fromCoroutine(self.store.get_delivery(999999)))
        out = await gatherResults(calls)
        self.assertEqual([d.recipient for d in out[:6]], [f"r{i}@x.test" for i in range(6)])
        self.assertEqual(out[6:12], [b"body %d" % i for i in range(6)])
        self.assertEqual([d.recipient for d in out[12]], ["r3@x.test"])
        self.assertEqual(out[13].raw, b"raw")
        self.assertIsNone(out[14])
        reader = getattr(self.store, "_reader", None)
        if reader is not None and self.coalesces:
            self.assertGreater(max(reader.batch_sizes), 1)

    async def test_concurrent_point_reads(self) -> None:
        """Many load_bounce/get_delivery reads at once (answered by one query each) map back.

        Repeated and unknown keys included, interleaved with another read.
        """
        rows = [(await self.enqueue_one(f"p{i}@x.test")) for i in range(5)]
        delivery_ids = [r.recipients[0].delivery_id for r in rows]
        bounce_ids = [await self.store.store_bounce(ReturnedMessage(
            b"raw %d" % i, "", f"b{i}@bounce.test", T0 + i, delivery_id=delivery_ids[i]))
            for i in range(5)]
        keys: list[tuple[str, int]] = []
        for i in (3, 0, 4, 3, 1, 2):
            keys += [("bounce", bounce_ids[i]), ("delivery", delivery_ids[i])]
        keys += [("bounce", max(bounce_ids) + 100), ("delivery", max(delivery_ids) + 100)]
        calls = []
        for kind, key in keys:
            read = self.store.load_bounce if kind == "bounce" else self.store.get_delivery
            calls.append(Deferred.fromCoroutine(read(key)))
        calls.insert(3, Deferred.fromCoroutine(self.store.find_deliveries(recipient="p2@x.test")))
        out = await gatherResults(calls)
        self.assertEqual([d.recipient for d in out.pop(3)], ["p2@x.test"])
        for (kind, key), got in zip(keys[:-2], out[:-2], strict=True):
            i = (bounce_ids if kind == "bounce" else delivery_ids).index(key)
            if kind == "bounce":
                self.assertEqual((got.bounce_id, got.raw, got.rcpt_to, got.delivery_id),
                                 (key, b"raw %d" % i, f"b{i}@bounce.test", delivery_ids[i]))
            else:
                self.assertEqual((got.delivery_id, got.recipient), (key, f"p{i}@x.test"))
        self.assertEqual(out[-2:], [None, None])

    async def test_record_bounces(self) -> None:
        """record_bounces applies each record as record_bounce would, in order."""
        a = (await self.enqueue_one("a@x.test")).recipients[0].delivery_id
        b = (await self.enqueue_one("b@x.test")).recipients[0].delivery_id
        await self.deliver(a)
        await self.deliver(b)
        bounce_ids = [await self.store.store_bounce(ReturnedMessage(
            b"r%d" % i, "", "b@bounce.test", T0 + 50 + i)) for i in range(3)]
        records = [
            BounceRecord(bounce_ids[0], [BounceEvent(
                delivery_id=a, kind=EventKind.bounce, at=T0 + 60, reason="userunknown", hard=True,
                suppress=True,
                bounce_id=bounce_ids[0], idem_key="ka", correlation="verp")], "bounce", "verp",
                '{"n": 0}'),
            BounceRecord(bounce_ids[1], [BounceEvent(
                delivery_id=b, kind=EventKind.complaint, at=T0 + 61, reason="feedback",
                suppress=True,
                bounce_id=bounce_ids[1], idem_key="kb", correlation="header-token")],
                "feedback", "header-token", '{"n": 1}'),
            # the same event as the first record: skipped by its idem_key
            BounceRecord(bounce_ids[2], [BounceEvent(
                delivery_id=a, kind=EventKind.bounce, at=T0 + 62, reason="userunknown",
                bounce_id=bounce_ids[2],
                idem_key="ka", correlation="verp")], "bounce", "verp", '{"n": 2}'),
        ]
        ids = await self.store.record_bounces(records)
        self.assertEqual([len(x) for x in ids], [1, 1, 0])
        self.assertEqual((await self.store.get_delivery(a)).state, State.bounced)
        self.assertEqual((await self.store.get_delivery(b)).state, State.complained)
        self.assertEqual(await self.store.pending_bounces(10), [])
        self.assertEqual([(await self.store.load_bounce(i)).category for i in bounce_ids],
                         ["bounce", "feedback", "bounce"])
        self.assertEqual((await self.store.get_suppression("a@x.test")).event_id, ids[0][0])
        self.assertEqual(await self.store.record_bounces([]), [])

    async def test_record_bounces_same_delivery_as_one_by_one(self) -> None:
        """Several reports about one delivery in one batch end as recorded one by one:
        each meets the state the one before left (the batch reads its deliveries once)."""

        async def run(batch: bool) -> list[Any]:
            # another address each time: the first run suppresses its own
            a = (await self.enqueue_one(f"a{batch}@x.test")).recipients[0].delivery_id
            await self.deliver(a)
            bounce_ids = [await self.store.store_bounce(ReturnedMessage(
                b"s%d" % i, "", "b@bounce.test", T0 + 50 + i)) for i in range(3)]
            events = [
                BounceEvent(delivery_id=a, kind=EventKind.delayed, at=T0 + 60,
                            bounce_id=bounce_ids[0], idem_key=f"d{batch}",
                            correlation="verp"),
                BounceEvent(delivery_id=a, kind=EventKind.bounce, at=T0 + 61,
                            reason="userunknown", hard=True, suppress=True, final=True,
                            permanent=True, bounce_id=bounce_ids[1], idem_key=f"b{batch}",
                            correlation="verp"),
                BounceEvent(delivery_id=a, kind=EventKind.complaint, at=T0 + 62,
                            reason="feedback", suppress=True, bounce_id=bounce_ids[2],
                            idem_key=f"c{batch}", correlation="verp"),
            ]
            records = [BounceRecord(b, [ev], "bounce", "verp", "{}")
                       for b, ev in zip(bounce_ids, events, strict=True)]
            if batch:
                await self.store.record_bounces(records)
            else:
                for r in records:
                    await self.store.record_bounce(r.bounce_id, list(r.events), r.category,
                                                   r.correlation, r.analysis)
            d = await self.store.get_delivery(a)
            return [d.state, d.reason, d.hard] + [
                (e.kind, e.state, e.reason, e.hard, e.note)
                for e in await self.store.events(a) if e.bounce_id is not None]

        self.assertEqual(await run(True), await run(False))

    async def test_record_bounces_atomic(self) -> None:
        """A record_bounces that fails leaves every message pending and raises StoreUnavailable."""
        a = (await self.enqueue_one("a@x.test")).recipients[0].delivery_id
        await self.deliver(a)
        first = await self.store.store_bounce(ReturnedMessage(b"r1", "", "b@x", T0 + 50))
        second = await self.store.store_bounce(ReturnedMessage(b"r2", "", "b@x", T0 + 51))
        # The second record's event insert fails, after the first was applied.
        fault = self.store.faults.add(fail_statements(sql.INSERT_EVENT_IDEMPOTENT))
        await self.assertUnavailable(self.store.record_bounces([
            BounceRecord(first, [], "other", None, "{}"),
            BounceRecord(second, [BounceEvent(delivery_id=a, kind=EventKind.bounce, at=T0 + 60,
                                              correlation="verp")], "bounce", "verp", "{}"),
        ]))
        self.assertEqual(fault.fired, 1)
        self.assertEqual(await self.store.pending_bounces(10), [first, second])
        self.assertEqual((await self.store.get_delivery(a)).state, State.delivered)

    # -- reading ------------------------------------------------------------

    async def test_get_delivery_unknown(self) -> None:
        """get_delivery returns None for an unknown id."""
        self.assertIsNone(await self.store.get_delivery(424242))

    async def test_get_deliveries(self) -> None:
        """get_deliveries gives the rows get_delivery would, by id; unknown ids are left out."""
        result = await self.enqueue_one("a@example.com", "b@example.com")
        ids = [r.delivery_id for r in result.recipients]
        found = await self.store.get_deliveries([*ids, 424242])
        self.assertEqual(found, {i: await self.store.get_delivery(i) for i in ids})
        self.assertEqual(await self.store.get_deliveries([]), {})

    async def test_find_deliveries(self) -> None:
        """find_deliveries matches every filter case-insensitively, newest first."""
        a = await self.enqueue_one("Pat@Example.com", now=T0, mailing_id="Spring-26",
                                   message_id="M-1", header_message_id="A.1@s.test")
        b = await self.enqueue_one("pat@example.com", now=T0 + 10, mailing_id="spring-26")
        await self.enqueue_one("other@example.com", now=T0 + 20)
        found = await self.store.find_deliveries(recipient="PAT@example.COM")
        self.assertEqual([d.queue_id for d in found], [b.queue_id, a.queue_id])
        found = await self.store.find_deliveries(mailing_id="SPRING-26", since=T0 + 5)
        self.assertEqual([d.queue_id for d in found], [b.queue_id])
        for kw in ({"queue_id": a.queue_id.lower()}, {"message_id": "m-1"},
                   {"header_message_id": "a.1@S.TEST"}):
            found = await self.store.find_deliveries(**kw)
            self.assertEqual([d.queue_id for d in found], [a.queue_id], kw)
        self.assertEqual(len(await self.store.find_deliveries(limit=2)), 2)

    async def test_events_after(self) -> None:
        """events_after pages the event feed by id with each delivery's ids and state."""
        self.assertEqual(await self.store.events_after(0, 10), [])
        r = await self.enqueue_one("a@x.test", "b@x.test", mailing_id="Mx", message_id="M-1",
                                   header_message_id="h.1@s.test")
        a, b = [x.delivery_id for x in r.recipients]
        await self.deliver(a)
        first = await self.store.events_after(0, 2)
        self.assertEqual([(e.event.delivery_id, e.event.kind) for e in first],
                         [(a, EventKind.queued), (b, EventKind.queued)])
        rest = await self.store.events_after(first[-1].event.event_id, 10)
        self.assertEqual([(e.event.delivery_id, e.event.kind) for e in rest],
                         [(a, EventKind.attempt)])
        record = rest[0]
        self.assertEqual((record.queue_id, record.recipient, record.sender, record.mailing_id,
                          record.message_id, record.header_message_id,
                          record.delivery_state, record.event.code),
                         (r.queue_id, "a@x.test", "app@sender.test", "Mx", "M-1",
                          "h.1@s.test", "delivered", 250))
        # The current state of the delivery, also on its older events.
        self.assertEqual(first[0].delivery_state, "delivered")
        ids = [e.event.event_id for e in first + rest]
        self.assertEqual(ids, sorted(ids))
        self.assertEqual(await self.store.events_after(ids[-1], 10), [])
        self.assertEqual(await self.store.events_after(0, 0), [])

    # -- report reads -------------------------------------------------------

    async def report_fixture(self) -> Any:
        """Deliveries over two hours and three domains in every final state."""
        r1 = await self.enqueue_one("a@one.test", "b@one.test", "c@two.test", now=T0,
                                    mailing_id="Spring-26")
        r2 = await self.enqueue_one("d@one.test", "e@three.test", now=T0 + 3600,
                                    mailing_id="spring-26")
        await self.enqueue_one("f@two.test", now=T0 + 7200)
        a, b, c = [x.delivery_id for x in r1.recipients]
        d, e = [x.delivery_id for x in r2.recipients]
        await self.store.record_attempts([
            AttemptResult(delivery_id=a, state=State.delivered, at=T0 + 1, code=250),
            AttemptResult(delivery_id=b, state=State.failed, at=T0 + 1, code=550,
                          reason="userunknown"),
            AttemptResult(delivery_id=c, state=State.delivered, at=T0 + 1, code=250),
            AttemptResult(delivery_id=d, state=State.deferred, at=T0 + 3601, code=451,
                          next_attempt_at=T0 + 4000),
            AttemptResult(delivery_id=e, state=State.deferred, at=T0 + 3601, code=421,
                          next_attempt_at=T0 + 5000),
        ])
        await self.bounce(c, reason="userunknown")
        return r1, r2

    async def test_timeseries(self) -> None:
        """timeseries counts deliveries per bucket of creation time and current state."""
        await self.report_fixture()
        series = await self.store.timeseries(T0, T0 + 7200, 3600)
        self.assertEqual(series, [
            (T0, {"delivered": 1, "failed": 1, "bounced": 1}),
            (T0 + 3600, {"deferred": 2}),
        ])
        self.assertEqual(await self.store.timeseries(T0 + 9000, T0 + 9900, 60), [])
        try:
            await self.store.timeseries(T0, T0 + 10, 0)
        except ValueError:
            pass
        else:
            raise AssertionError("expected ValueError")

    async def test_top_domains(self) -> None:
        """top_domains ranks destination domains by deliveries, with counts per state."""
        await self.report_fixture()
        top = await self.store.top_domains(T0, T0 + 7201, limit=2)
        self.assertEqual([(t.domain, t.total) for t in top], [("one.test", 3), ("two.test", 2)])
        self.assertEqual(top[0].by_state, {"delivered": 1, "failed": 1, "deferred": 1})
        self.assertEqual(top[1].by_state, {"bounced": 1, "queued": 1})
        self.assertEqual(len(await self.store.top_domains(None, None, limit=10)), 3)

    async def test_bounce_reasons(self) -> None:
        """bounce_reasons splits each reason into synchronous and asynchronous failures."""
        await self.report_fixture()
        reasons = await self.store.bounce_reasons(T0, T0 + 10)
        self.assertEqual([(r.reason, r.synchronous, r.asynchronous, r.total) for r in reasons],
                         [("userunknown", 1, 1, 2)])

    async def test_deferred_by_domain(self) -> None:
        """deferred_by_domain groups the deferred queue by domain, and oldest_pending finds
        the oldest pending delivery."""
        self.assertIsNone(await self.store.oldest_pending())
        await self.report_fixture()
        groups = await self.store.deferred_by_domain()
        self.assertEqual(
            [(g.domain, g.count, g.oldest_created_at, g.next_attempt_at) for g in groups],
            [("one.test", 1, T0 + 3600, T0 + 4000), ("three.test", 1, T0 + 3600, T0 + 5000)])
        self.assertEqual(len(await self.store.deferred_by_domain(limit=1)), 1)
        self.assertEqual(await self.store.oldest_pending(), T0 + 3600)

    async def test_mailing_summary(self) -> None:
        """mailing_summary counts every delivery of a mailing, ids compared case-insensitively."""
        await self.report_fixture()
        s = await self.store.mailing_summary("SPRING-26")
        self.assertEqual((s.messages, s.recipients), (2, 5))
        self.assertEqual(s.by_state, {"delivered": 1, "failed": 1, "bounced": 1, "deferred": 2})
        self.assertEqual((s.sync_failures, s.async_bounces), (1, 1))
        self.assertEqual((await self.store.mailing_summary("nope")).recipients, 0)

    async def test_get_message(self) -> None:
        """get_message returns a message's envelope, identifiers and metadata by queue id."""
        r = await self.enqueue_one("a@x.test", mailing_id="Mx", message_id="M-1",
                                   header_message_id="h@s.test", metadata={"k": "v"},
                                   body=b"12345", source="api", client="127.0.0.1")
        m = await self.store.get_message(r.queue_id.lower())
        self.assertEqual((m.queue_id, m.message_pk, m.sender, m.mailing_id, m.message_id,
                          m.header_message_id, m.size, m.source, m.client, m.metadata,
                          m.created_at),
                         (r.queue_id, r.message_pk, "app@sender.test", "Mx", "M-1",
                          "h@s.test", 5, "api", "127.0.0.1", {"k": "v"}, T0))
        self.assertIsNone(await self.store.get_message("AAAAAAAAAAAAAA"))

    async def test_search_deliveries(self) -> None:
        """search_deliveries filters and pages newest first with a keyset."""
        r1, r2 = await self.report_fixture()
        everything = await self.store.search_deliveries(limit=100)
        ids = [d.delivery_id for d in everything]
        self.assertEqual(ids, sorted(ids, reverse=True))
        self.assertEqual(len(ids), 6)
        page1 = await self.store.search_deliveries(limit=4)
        page2 = await self.store.search_deliveries(before_delivery_id=page1[-1].delivery_id,
                                                   limit=4)
        self.assertEqual([d.delivery_id for d in page1 + page2], ids)
        found = await self.store.search_deliveries(domain="ONE.test", state="deferred")
        self.assertEqual([d.recipient for d in found], ["d@one.test"])
        found = await self.store.search_deliveries(mailing_id="SPRING-26", since=T0,
                                                   until=T0 + 1)
        self.assertEqual([d.recipient for d in found], ["c@two.test", "b@one.test",
                                                        "a@one.test"])
        found = await self.store.search_deliveries(queue_id=r2.queue_id.lower())
        self.assertEqual(len(found), 2)
        found = await self.store.search_deliveries(recipient="A@ONE.test")
        self.assertEqual([d.queue_id for d in found], [r1.queue_id])
        self.assertEqual(await self.store.search_deliveries(message_id="none"), [])
        self.assertEqual(await self.store.search_deliveries(limit=0), [])

    async def test_outcomes_paging(self) -> None:
        """outcomes pages by delivery id and filters by state and mailing id."""
        r1 = await self.enqueue_one("a@x.test", "b@x.test", "c@x.test", mailing_id="Mx")
        await self.enqueue_one("d@x.test", "e@x.test")
        await self.deliver(r1.recipients[1].delivery_id)
        page1 = await self.store.outcomes(limit=2)
        page2 = await self.store.outcomes(after_delivery_id=page1[-1].delivery_id, limit=2)
        page3 = await self.store.outcomes(after_delivery_id=page2[-1].delivery_id, limit=2)
        records = page1 + page2 + page3
        self.assertEqual([o.recipient for o in records],
                         ["a@x.test", "b@x.test", "c@x.test", "d@x.test", "e@x.test"])
        first = records[1].as_dict()
        self.assertEqual((first["queue_id"], first["state"], first["code"], first["attempts"],
                          first["mailing_id"], first["hard"]),
                         (r1.queue_id, "delivered", 250, 1, "Mx", False))
        delivered = await self.store.outcomes(state="delivered")
        self.assertEqual([o.recipient for o in delivered], ["b@x.test"])
        self.assertEqual(len(await self.store.outcomes(mailing_id="mX")), 3)

    async def test_summary(self) -> None:
        """summary counts messages, recipients, states, reasons and failure sources."""
        await self.store.suppress("s@x.test", "userunknown", T0)
        r = await self.enqueue_one("a@x.test", "b@x.test", "c@x.test", "d@x.test", "s@x.test",
                                   now=T0)
        await self.enqueue_one("late@x.test", now=T0 + 100)
        a, b, c, d, _ = [x.delivery_id for x in r.recipients]
        await self.store.record_attempts([
            AttemptResult(delivery_id=a, state=State.delivered, at=T0 + 1, code=250),
            AttemptResult(delivery_id=b, state=State.failed, at=T0 + 1, code=550,
                          reason="userunknown", hard=True),
            AttemptResult(delivery_id=c, state=State.delivered, at=T0 + 1, code=250),
            AttemptResult(delivery_id=d, state=State.delivered, at=T0 + 1, code=250)])
        await self.bounce(c, reason="mailboxfull")
        await self.bounce(d, EventKind.complaint, reason="feedback")
        s = await self.store.summary(since=T0, until=T0 + 50)
        self.assertEqual((s.messages, s.recipients), (1, 5))
        self.assertEqual(s.by_state, {"delivered": 1, "failed": 1, "bounced": 1,
                                      "complained": 1, "suppressed": 1})
        self.assertEqual(s.by_reason, {"userunknown": 2, "mailboxfull": 1, "feedback": 1})
        self.assertEqual((s.sync_failures, s.async_bounces, s.complaints), (1, 1, 1))
        everything = await self.store.summary()
        self.assertEqual((everything.messages, everything.recipients), (2, 6))

    async def test_queue_depth(self) -> None:
        """queue_depth counts queued and deferred rows."""
        self.assertEqual(await self.store.queue_depth(), {"queued": 0, "deferred": 0})
        r = await self.enqueue_one("a@x.test", "b@x.test", "c@x.test")
        await self.store.record_attempts([AttemptResult(
            delivery_id=r.recipients[0].delivery_id, state=State.deferred, at=T0 + 1,
            next_attempt_at=T0 + 9)])
        self.assertEqual(await self.store.queue_depth(), {"queued": 2, "deferred": 1})

    # -- suppression --------------------------------------------------------

    async def test_suppression_crud(self) -> None:
        """Suppressions are lower-cased, unique, paged by address and removable."""
        self.assertTrue(await self.store.suppress("B@X.test", "userunknown", T0,
                                                  source="operator", note="by hand"))
        self.assertFalse(await self.store.suppress("b@x.TEST", "hasmoved", T0 + 1))
        for address in ("a@x.test", "c@x.test", "a.b@x.test"):
            await self.store.suppress(address, "feedback", T0)
        entry = await self.store.get_suppression("b@X.Test")
        self.assertEqual((entry.address, entry.reason, entry.source, entry.note,
                          entry.created_at), ("b@x.test", "userunknown", "operator",
                                              "by hand", T0))
        page1 = await self.store.suppressions(limit=2)
        page2 = await self.store.suppressions(after=page1[-1].address, limit=10)
        self.assertEqual([s.address for s in page1 + page2],
                         ["a.b@x.test", "a@x.test", "b@x.test", "c@x.test"])
        self.assertTrue(await self.store.unsuppress("B@x.test"))
        self.assertFalse(await self.store.unsuppress("b@x.test"))
        self.assertIsNone(await self.store.get_suppression("b@x.test"))

    # -- failures and durability ---------------------------------------------

    async def test_store_failure(self) -> None:
        """When the storage fails, calls raise StoreUnavailable (never another error)."""
        await self.enqueue_one()
        await self.break_store(self.store)
        await self.assertUnavailable(self.store.enqueue(message(), T0))
        await self.assertUnavailable(self.store.claim_due(T0, "n1", 60, 10))
        await self.assertUnavailable(self.store.record_attempts(
            [AttemptResult(delivery_id=1, state=State.delivered, at=T0)]))

    async def test_open_unreachable(self) -> None:
        """open() on unreachable storage raises StoreUnavailable naming the URL."""
        store = self.make_unreachable_store()
        error = await self.assertUnavailable(store.open())
        self.assertIn(store.url, str(error))
        await store.close()

    async def test_reopen_keeps_everything(self) -> None:
        """A reopened store has every message, delivery, event, bounce and suppression."""
        r = await self.enqueue_one("a@x.test", "b@x.test", body=b"kept")
        a, b = [x.delivery_id for x in r.recipients]
        await self.deliver(a)
        await self.store.suppress("z@x.test", "userunknown", T0)
        bounce_id = await self.store.store_bounce(ReturnedMessage(b"raw", "", "b@x", T0))
        before = (await self.store.outcomes(), await self.store.events(a),
                  await self.store.suppressions())
        self.store = await self.reopen(self.store)
        after = (await self.store.outcomes(), await self.store.events(a),
                 await self.store.suppressions())
        self.assertEqual(before, after)
        self.assertEqual(await self.store.load_body(r.message_pk), b"kept")
        self.assertEqual(await self.store.pending_bounces(10), [bounce_id])
        self.assertEqual([c.delivery_id for c in
                          await self.store.claim_due(T0 + 1, "n1", 60, 10)], [b])
        again = await self.enqueue_one()
        self.assertGreater(again.recipients[0].delivery_id, b)
