"""The explanation of a refusal in our own session is kept with its event (issue 22 item 6).

On SQLite and PostgreSQL: an attempt's explanation (JSON text,
:func:`hurricane.decisions.explain_reply`) reads back as recorded, the
other attempts read back None, and an event written before migration 0011
added the column stays readable after it (its explanation is None).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from hurricane.bounce.classify import ReplyClassifier
from hurricane.decisions import RecipientAnswer, decide_attempt
from hurricane.model import AttemptResult, EventKind, State
from hurricane.outcome import Phase
from hurricane.smtp_reply import Reply
from hurricane.store import migrate
from hurricane.store.postgres import PostgresStore
from hurricane.store.sqlite import SqliteStore

from .contract import message
from .test_postgres import DSN, PostgresMixin

T0 = 1_800_000_000.0


class ExplanationMixin:
    """The round trips against ``self.store`` (made by :meth:`make_store`)."""

    store: Any
    assertEqual: Any
    assertIsNone: Any

    async def make_store(self, migrated: bool = True) -> Any:
        raise NotImplementedError

    async def delivery(self, store: Any, recipient: str) -> int:
        result = await store.enqueue(message(recipient), T0)
        return int(result.recipients[0].delivery_id)

    async def attempts(self, store: Any, delivery_id: int) -> list[Any]:
        return [e for e in await store.events(delivery_id) if e.kind is EventKind.attempt]

    async def test_refusal_explanation_kept(self) -> None:
        """A blocked refusal's explanation reads back; a delivery's is None."""
        store = await self.make_store()
        refused, delivered = (await self.delivery(store, "a@two.test"),
                              await self.delivery(store, "b@two.test"))
        decision = decide_attempt(RecipientAnswer(Phase.rcpt, Reply.parse(
            550, "5.7.1 Service unavailable; client host [192.0.2.1] blocked using "
            "zen.spamhaus.org")), ReplyClassifier.load(), expired=False)
        await store.record_attempts([
            decision.result(refused, T0 + 1, remote_host="mx.two.test"),
            AttemptResult(delivery_id=delivered, at=T0 + 1, state=State.delivered, code=250)])
        [event] = await self.attempts(store, refused)
        self.assertEqual(json.loads(event.explanation), decision.explanation)
        self.assertEqual((event.code, event.status, event.remote_host), (550, "5.7.1",
                                                                          "mx.two.test"))
        [other] = await self.attempts(store, delivered)
        self.assertIsNone(other.explanation)

    async def test_rows_before_the_migration_stay_readable(self) -> None:
        """An event written before migration 0011 reads back, with no explanation."""
        store = await self.make_store(migrated=False)
        *before, last = migrate.load_migrations(store.dialect)
        self.assertEqual(last.name, "0011_event_explanation")
        for m in before:
            await store._run(migrate.apply_migration_txn, m, time.time())
        did = await self.delivery(store, "old@two.test")

        async def old_insert(txn: Any) -> None:
            await txn.execute(
                "INSERT INTO events (delivery_id, kind, at, state, reason, hard, code, status,"
                " text, source, rule) VALUES (?, 'attempt', ?, 'failed', 'blocked', ?, 550,"
                " '5.7.1', 'go away', 'smtp', NULL)", (did, T0 + 1, False))

        await store._run(old_insert)
        self.assertEqual(await store.migrate(), [last.name])
        [event] = await self.attempts(store, did)
        self.assertEqual((event.reason, event.code, event.text), ("blocked", 550, "go away"))
        self.assertIsNone(event.explanation)


class SqliteExplanationTests(ExplanationMixin, TestCase):
    """On SQLite."""

    async def make_store(self, migrated: bool = True) -> Any:
        store = SqliteStore(os.path.join(tempfile.mkdtemp(), "h.db"), reactor)
        await store.open(migrate=migrated)
        self.addCleanup(lambda: Deferred.fromCoroutine(store.close()))
        return store


class PostgresExplanationTests(PostgresMixin, ExplanationMixin, TestCase):
    """On PostgreSQL."""

    async def make_store(self, migrated: bool = True) -> Any:
        self.make_schema()
        if migrated:
            return await self.open_store()
        store = PostgresStore(DSN, reactor, connect_kwargs={
            "options": f"-c search_path={self.schema}"})
        await store.open(migrate=False)
        self.addCleanup(lambda: Deferred.fromCoroutine(store.close()))
        return store
