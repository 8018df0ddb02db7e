"""Scoped suppression on SQLite, PostgreSQL and the memory store."""

from __future__ import annotations

import os
import tempfile
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from hurricane.store.memory import MemoryStore
from hurricane.store.postgres import PostgresStore
from hurricane.store.sqlite import SqliteStore
from tests.store.test_postgres import DSN, PostgresMixin

from .suppression_contract import DnsConfirmationMixin, ScopedSuppressionMixin


class SqliteScopedTests(DnsConfirmationMixin, TestCase):
    """SQLite."""

    async def make_store(self) -> Any:
        store = SqliteStore(os.path.join(tempfile.mkdtemp(), "h.db"), reactor)
        await store.open()
        self.addCleanup(lambda: Deferred.fromCoroutine(store.close()))
        return store


class PostgresScopedTests(PostgresMixin, DnsConfirmationMixin, TestCase):
    """PostgreSQL: the one-statement enqueue applies the scoped entries too."""

    async def make_store(self) -> Any:
        self.make_schema()
        store = PostgresStore(DSN, reactor, connect_kwargs={
            "options": f"-c search_path={self.schema}"})
        await store.open()
        self.addCleanup(lambda: Deferred.fromCoroutine(store.close()))
        return store


class MemoryScopedTests(ScopedSuppressionMixin, TestCase):
    """The memory store (until it is replaced by SQLite in memory)."""

    async def make_store(self) -> Any:
        store = MemoryStore()
        await store.open()
        return store
