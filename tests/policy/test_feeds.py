"""Policy events to the accounting log and to webhooks, from a cursor, in order."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from hurricane.accounting import AccountingService, CursorFile, open_log_file
from hurricane.opsconfig import WebhookConfig
from hurricane.policy.feeds import PolicyFeed, accounting_handler, webhook_handler
from hurricane.policy.providers import PolicyAction
from hurricane.store.policy import PolicyEvent, PolicyStore
from hurricane.store.sqlite import SqliteStore
from tests.store.contract import T0


class _Endpoint:
    """A webhook endpoint that records what it is asked to POST."""

    def __init__(self, **config: Any) -> None:
        self.config = WebhookConfig(url="http://127.0.0.1:1/", **config)
        self.posted: list[list[Any]] = []

    async def post_items(self, items: Sequence[Any]) -> None:
        self.posted.append(list(items))


class PolicyFeedTests(TestCase):
    """The feed over SQLite, its clock a Clock."""

    async def setUp(self) -> None:
        self.tmp = tempfile.mkdtemp()
        store = SqliteStore(os.path.join(self.tmp, "h.db"), reactor)
        await store.open()
        self.addCleanup(lambda: Deferred.fromCoroutine(store.close()))
        self.policy = PolicyStore(store)
        await self.policy.record_actions([
            PolicyAction(T0, "provider", "google", "throttle", "speeding", "rate 6000/min",
                         "rate 4200/min", {"refusals": 1}, T0 + 1),
            PolicyAction(T0 + 1, "mailing", "spring", "hold", "hard_bounce_rate 0.3 > 0.05",
                         "sending", "held", {"decided": 50, "hard": 15}),
            PolicyAction(T0 + 100, "provider", "google", "ramp", "success", "rate 4200/min",
                         "rate 5250/min", {"successes": 20}),
        ], "node-1")
        self.clock = Clock()
        self.clock.advance(T0 + 10)

    async def test_accounting_lines_in_order_from_the_cursor(self) -> None:
        path = os.path.join(self.tmp, "acct.jsonl")
        logfile = open_log_file(path, 0)
        self.addCleanup(logfile.close)
        service = AccountingService(None, self.clock, logfile,  # type: ignore[arg-type]
                                    CursorFile(os.path.join(self.tmp, "c.json")), fsync=False)
        cursor = CursorFile(os.path.join(self.tmp, "p.json"))
        feed = PolicyFeed("policy-accounting", self.policy, self.clock, cursor,
                          accounting_handler(service))
        self.assertFalse(await feed.step())  # two ready, the third is too young
        with open(path) as fp:
            lines = [json.loads(line) for line in fp]
        self.assertEqual([(r["type"], r["action"], r["subject"]) for r in lines],
                         [("policy", "throttle", "google"), ("policy", "hold", "spring")])
        self.assertEqual(lines[1]["evidence"], {"decided": 50, "hard": 15})
        self.assertEqual(lines[0]["node"], "node-1")
        self.assertEqual(cursor.load(), feed.position)
        self.clock.advance(200)
        again = PolicyFeed("policy-accounting", self.policy, self.clock, cursor,
                           accounting_handler(service))  # a restart: from the cursor
        await again.step()
        with open(path) as fp:
            self.assertEqual([json.loads(line)["action"] for line in fp],
                             ["throttle", "hold", "ramp"])

    async def test_webhooks_every_mode_only(self) -> None:
        self.assertIsNone(webhook_handler(_Endpoint(mode="final")))  # type: ignore[arg-type]
        self.assertIsNone(webhook_handler(_Endpoint(  # type: ignore[arg-type]
            mode="every", events=("deferred",))))
        endpoint = _Endpoint(mode="every", events=("policy",))
        handler = webhook_handler(endpoint)  # type: ignore[arg-type]
        assert handler is not None
        feed = PolicyFeed("policy-webhook:x", self.policy, self.clock,
                          CursorFile(os.path.join(self.tmp, "w.json")), handler)
        await feed.step()
        self.assertEqual([[i["action"] for i in batch] for batch in endpoint.posted],
                         [["throttle", "hold"]])

    async def test_failed_batch_is_read_again(self) -> None:
        calls: list[list[PolicyEvent]] = []

        async def flaky(events: Sequence[PolicyEvent]) -> None:
            calls.append(list(events))
            if len(calls) == 1:
                raise OSError("disk full")

        feed = PolicyFeed("p", self.policy, self.clock,
                          CursorFile(os.path.join(self.tmp, "f.json")), flaky)
        with self.assertRaises(OSError):
            await feed.step()
        self.assertEqual(feed.position, 0)
        await feed.step()
        self.assertEqual([len(c) for c in calls], [2, 2])
