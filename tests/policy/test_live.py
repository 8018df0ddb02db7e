"""Closed-loop delivery through real sockets (issue 19), on SQLite and PostgreSQL.

The whole service (``build_service``) runs in the trial reactor against the
smart sink playing a provider:

- a receiver that takes 20 recipients a second and answers 421 4.7.28
  beyond, with the provider configured at 100 a second: the provider's rate
  is cut at the first refusals and every message is delivered, once, with
  few refused attempts;
- a mailing with 30 % unknown users: its breaker holds it before half of it
  is attempted; release sends the rest, nothing lost, nothing sent twice.

Bounded: every wait has a deadline; nothing asserts on time.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from hurricane.demo import Rig
from hurricane.sink.scenario import scenario_from_dict
from tests.e2e.helpers import postgres_url, tmpdir

PROVIDER = {"name": "sinkmail", "domains": ["*.test"], "max_connections": 5,
            "rate_per_minute": 6000}


class ClosedLoopMixin:
    """The scenarios, independent of the store engine."""

    store_url: str = ""
    timeout = 180

    def rig(self: Any, provider: dict[str, Any]) -> Rig:
        return Rig(reactor, tmpdir(self), scenario_from_dict({"provider": provider}),
                   store_url=self.store_url, web=False, delivery={
                       "first_retry": 0.5, "max_retry_interval": 1.0, "max_age": 120.0,
                       "providers": [PROVIDER],
                       "adaptive": {"interval": 0.5, "throttle_pause": 1.0}})

    async def counts(self: Any, rig: Rig, mailing: str) -> Counter[str]:
        found = await rig.store.search_deliveries(mailing_id=mailing, limit=1000)
        return Counter(str(d.state.value) for d in found)

    async def test_rate_limited_receiver(self: Any) -> None:
        rig = self.rig({"rate_limit": 20})
        await rig.start()
        try:
            assert rig.sink is not None and rig.root is not None
            rig.sink.keep = True
            rcpts = [f"r{i}@x.test" for i in range(120)]
            sub = await rig.submit(rcpts, mailing_id="rate-1", connections=4)
            self.assertEqual(sub.accepted, len(rcpts))
            self.assertTrue(await rig.wait_settled(120), "queue did not drain")
            self.assertEqual(await self.counts(rig, "rate-1"), Counter(delivered=120))
            got = Counter(acc.rcpt for acc, _ in rig.sink.accepted)
            self.assertEqual(set(got), set(rcpts))
            self.assertEqual(set(got.values()), {1})  # never twice
            refused = rig.sink.stats.counts["deferred"]["provider-rate"]
            attempts = refused + len(rcpts)
            self.assertGreater(refused, 0)  # the receiver did push back
            self.assertLess(refused / attempts, 0.15, f"{refused} of {attempts} refused")
            ops = rig.root.operations
            assert ops is not None
            (row,) = [r for r in await ops.providers() if r["provider"] == "sinkmail"]
            self.assertLess(row["current_rate_per_minute"], 6000)
            actions = [a["action"] for a in row["recent_actions"]]
            self.assertIn("throttle", actions)
        finally:
            await rig.stop()

    async def test_breaker_holds_then_release_sends_the_rest(self: Any) -> None:
        rig = self.rig({})
        await rig.start()
        try:
            assert rig.sink is not None and rig.root is not None
            rig.sink.keep = True
            rcpts = [f"unknown-{i}@x.test" if i % 10 < 3 else f"r{i}@x.test"
                     for i in range(400)]
            sub = await rig.submit(rcpts, mailing_id="list-1", connections=4)
            self.assertEqual(sub.accepted, len(rcpts))
            self.assertTrue(await rig.wait_settled(60), "queue did not drain")
            counts = await self.counts(rig, "list-1")
            self.assertGreater(counts["held"], 0)
            attempted = sum(n for s, n in counts.items() if s != "held")
            self.assertLess(attempted, len(rcpts) / 2, str(counts))
            ops = rig.root.operations
            assert ops is not None
            hold = (await ops.mailing_hold("list-1")).as_json()
            breaker = hold["breaker"]
            assert isinstance(breaker, dict)
            self.assertEqual(breaker["state"], "held")
            self.assertIn("hard_bounce_rate", breaker["cause"])
            released = await ops.release_mailing("list-1", "test")
            self.assertEqual(released, counts["held"])
            self.assertTrue(await rig.wait_settled(60), "queue did not drain after release")
            counts = await self.counts(rig, "list-1")
            self.assertEqual(counts, Counter(delivered=280, failed=120))
            got = Counter(acc.rcpt for acc, _ in rig.sink.accepted)
            self.assertEqual(len(got), 280)
            self.assertEqual(set(got.values()), {1})  # nothing sent twice
            events = [e.action.action for e in await ops.policy_events(scope="mailing")]
            self.assertEqual(events, ["release", "hold"])
        finally:
            await rig.stop()


class SQLiteClosedLoopTests(ClosedLoopMixin, TestCase):
    """On SQLite."""


class PostgresClosedLoopTests(ClosedLoopMixin, TestCase):
    """On PostgreSQL."""

    def setUp(self) -> None:
        self.store_url = postgres_url(self)
