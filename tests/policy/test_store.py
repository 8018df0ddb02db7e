"""The policy tables (migration 0008) on SQLite and PostgreSQL: provider state
shared between nodes, policy events, and hold / release / cancel of a mailing
that never sends a row twice."""

from __future__ import annotations

import os
import tempfile
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from hurricane.model import AttemptResult
from hurricane.outcome import Reason, State
from hurricane.policy.providers import PolicyAction, ProviderState
from hurricane.store.policy import PolicyStore
from hurricane.store.sqlite import SqliteStore
from tests.store.contract import T0, message
from tests.store.test_postgres import PostgresMixin


def hold_action(mailing: str) -> PolicyAction:
    return PolicyAction(T0, "mailing", mailing, "hold", "hard_bounce_rate 0.3 > 0.05",
                        "sending", "held", {"decided": 10, "hard": 3})


class PolicyStoreMixin:
    """Tests for any SQL engine; ``make_store`` opens one."""

    async def make_store(self) -> Any:
        raise NotImplementedError

    async def test_hold_release_cancel(self) -> None:
        store = await self.make_store()
        policy = PolicyStore(store)
        await store.enqueue(message(*(f"u{i}@example.com" for i in range(10)),
                                    mailing_id="Spring"), T0)
        await store.enqueue(message("x@example.com", mailing_id="other"), T0)
        claimed = await store.claim_due(T0, "node-a", 600, 3)
        mine = [d for d in claimed if d.mailing_id == "Spring"]
        # one claimed row failed hard; one is given back by the pool for the hold
        await store.record_attempts([AttemptResult(
            delivery_id=mine[0].delivery_id, at=T0 + 1, state=State.failed,
            reason=Reason.userunknown, code=550, hard=True, owner="node-a")])
        counts = await policy.mailing_counts("spring")
        self.assertEqual((counts.recipients, counts.decided, counts.hard), (10, 1, 1))
        held = await policy.hold_mailing("SPRING", T0 + 2, "node-a", [mine[1].delivery_id],
                                         hold_action("SPRING"))
        # 10 - 1 failed - 1 still leased (on a connection) = 8
        self.assertEqual(held, 8)
        self.assertEqual(await policy.hold_mailing("spring", T0 + 3, "node-a", [],
                                                   hold_action("spring")), -1)
        record = await policy.breaker("spring")
        assert record is not None
        self.assertEqual((record.state, record.held), ("held", 8))
        self.assertEqual(dict(record.evidence), {"decided": 10, "hard": 3})
        # held rows are never claimed
        due = await store.claim_due(T0 + 10, "node-b", 600, 100)
        self.assertEqual([d.mailing_id for d in due], ["other"])
        # the row on a connection finishes normally
        await store.record_attempts([AttemptResult(
            delivery_id=mine[2].delivery_id, at=T0 + 4, state=State.delivered, owner="node-a")])
        counts = await policy.mailing_counts("Spring")
        self.assertEqual((counts.decided, counts.held), (2, 8))
        release = PolicyAction(T0 + 20, "mailing", "Spring", "release", "operator", "held",
                               "queued", {"held": 8})
        self.assertEqual(await policy.release_mailing("spring", T0 + 20, release), 8)
        again = await store.claim_due(T0 + 20, "node-b", 600, 100)
        ids = sorted(d.delivery_id for d in again)
        self.assertEqual(len(ids), 8)
        self.assertNotIn(mine[0].delivery_id, ids)
        self.assertNotIn(mine[2].delivery_id, ids)  # delivered once, never again
        self.assertEqual((await policy.breaker("spring") or record).state, "released")
        # a released mailing is not held again
        self.assertEqual(await policy.hold_mailing("spring", T0 + 30, "node-b", [],
                                                   hold_action("spring")), -1)
        # cancel: never held -> -1; held -> cancelled, final
        cancel = PolicyAction(T0 + 40, "mailing", "other", "cancel", "operator", "held",
                              "cancelled")
        self.assertEqual(await policy.cancel_mailing("other", T0 + 40, cancel), -1)
        await store.release([d.delivery_id for d in due], "node-b")
        self.assertEqual(await policy.hold_mailing("other", T0 + 41, "node-b", [],
                                                   hold_action("other")), 1)
        self.assertEqual(await policy.cancel_mailing("other", T0 + 42, cancel), 1)
        found = await store.search_deliveries(mailing_id="other", limit=10)
        self.assertEqual([d.state for d in found], [State.cancelled])
        events = await policy.policy_events(scope="mailing", limit=10)
        self.assertEqual([e.action.action for e in events],
                         ["cancel", "hold", "release", "hold"])

    async def test_provider_state_newest_wins_and_nodes(self) -> None:
        store = await self.make_store()
        policy = PolicyStore(store)
        await policy.save_provider_states([ProviderState("google", 3000, 6000, 12.0, 0.0,
                                                         "speeding", 10.0)])
        await policy.save_provider_states([ProviderState("google", 6000, 6000, 0.0, 0.0,
                                                         "stale", 5.0)])
        (stored,) = await policy.provider_states()
        self.assertEqual((stored.rate, stored.cause, stored.paused_until),
                         (3000, "speeding", 12.0))
        self.assertEqual(await policy.heartbeat("a", 100.0, 10.0), 1)
        self.assertEqual(await policy.heartbeat("b", 101.0, 10.0), 2)
        self.assertEqual(await policy.heartbeat("a", 120.0, 10.0), 1)  # b is gone
        await policy.record_actions([PolicyAction(1.0, "provider", "google", "throttle",
                                                  "speeding", "rate 6000/min",
                                                  "rate 3000/min", {"refusals": 1}, 2.0)],
                                    "a")
        (event,) = await policy.policy_events(scope="provider", subject="GOOGLE")
        self.assertEqual((event.node, event.action.after, dict(event.action.evidence)),
                         ("a", "rate 3000/min", {"refusals": 1}))

    async def test_provider_windows_count_sender_side_only(self) -> None:
        store = await self.make_store()
        policy = PolicyStore(store)
        await store.enqueue(message(*(f"u{i}@gmail.com" for i in range(4))), T0)
        rows = await store.claim_due(T0, "n", 600, 10)
        await store.record_attempts([AttemptResult(
            delivery_id=d.delivery_id, at=T0 + 1, state=State.delivered,
            remote_host="ASPMX.l.google.com", owner="n") for d in rows])
        # late outcomes, moved as the bounce processor would
        for d, state, reason in zip(rows, ("bounced", "bounced", "complained"),
                                    ("blocked", "userunknown", "feedback"), strict=False):
            await store._run(_set_state, d.delivery_id, state, reason)  # noqa: SLF001
        (window,) = await policy.provider_windows(T0)
        self.assertEqual((window.domain, window.host, window.deliveries,
                          window.sender_bounces, window.complaints),
                         ("gmail.com", "aspmx.l.google.com", 4, 1, 1))


async def _set_state(txn: Any, delivery_id: int, state: str, reason: str) -> None:
    await txn.execute("UPDATE deliveries SET state = ?, reason = ? WHERE delivery_id = ?",
                      (state, reason, delivery_id))


class SqlitePolicyStoreTests(PolicyStoreMixin, TestCase):
    """On SQLite."""

    async def make_store(self) -> Any:
        store = SqliteStore(os.path.join(tempfile.mkdtemp(), "h.db"), reactor)
        await store.open()
        self.addCleanup(lambda: Deferred.fromCoroutine(store.close()))
        return store


class PostgresPolicyStoreTests(PostgresMixin, PolicyStoreMixin, TestCase):
    """On PostgreSQL."""

    async def make_store(self) -> Any:
        self.make_schema()
        return await self.open_store()
