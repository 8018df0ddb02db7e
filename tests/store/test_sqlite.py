"""The contract and SQLite specifics, on a file in a temporary directory."""

from __future__ import annotations

import os
import tempfile
import sqlite3
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.trial.unittest import TestCase

from hurricane.store.sqlite import SqliteStore

from .contract import T0, StoreContractMixin, message


class SqliteStoreContractTests(StoreContractMixin, TestCase):
    """SqliteStore passes the IOutcomeStore contract."""

    async def make_store(self) -> Any:
        self.path = os.path.join(os.path.join(tempfile.mkdtemp(), "t"), "sub", "hurricane.db")
        return await self.open_store(self.path)

    async def open_store(self, path: str, **kw: Any) -> Any:
        store = SqliteStore(path, reactor, **kw)
        await store.open()
        self.addCleanup(lambda: Deferred.fromCoroutine(store.close()))
        return store

    async def reopen(self, store: Any) -> Any:
        await store.close()
        return await self.open_store(self.path)

    async def break_store(self, store: Any) -> None:
        # Another process drops the tables under the running store.
        conn = sqlite3.connect(self.path)
        try:
            conn.executescript("PRAGMA foreign_keys = OFF; DROP TABLE events;"
                               " DROP TABLE deliveries; DROP TABLE messages;")
        finally:
            conn.close()

    def make_unreachable_store(self) -> Any:
        # The parent "directory" is a regular file: nothing can be created.
        blocker = os.path.join(tempfile.mkdtemp(), "t")
        with open(blocker, "w"):
            pass
        return SqliteStore(os.path.join(blocker, "hurricane.db"), reactor)


class SqliteSpecificTests(TestCase):
    """What only the SQLite engine promises."""

    async def test_pragmas_and_directory(self) -> None:
        """open() creates the parent directory and sets WAL, foreign keys and synchronous."""
        path = os.path.join(os.path.join(tempfile.mkdtemp(), "t"), "a", "b", "h.db")
        store = SqliteStore(path, reactor, synchronous="NORMAL")
        await store.open()
        self.addCleanup(lambda: Deferred.fromCoroutine(store.close()))
        self.assertTrue(os.path.isfile(path))
        self.assertEqual(store.url, "sqlite://" + os.path.abspath(path))
        pool = store._pool
        assert pool is not None
        rows = await pool.runQuery("PRAGMA journal_mode")
        self.assertEqual(rows[0][0], "wal")
        rows = await pool.runQuery("PRAGMA foreign_keys")
        self.assertEqual(rows[0][0], 1)
        rows = await pool.runQuery("PRAGMA synchronous")
        self.assertEqual(rows[0][0], 1)  # NORMAL

    def test_bad_synchronous(self) -> None:
        """An unknown synchronous level is refused at construction."""
        self.assertRaises(ValueError, SqliteStore, "x.db", reactor, synchronous="SOMETIMES")

    async def test_group_commit_batches(self) -> None:
        """Enqueues arriving while a commit is in flight are committed together."""
        store = SqliteStore(os.path.join(os.path.join(tempfile.mkdtemp(), "t"), "h.db"), reactor)
        await store.open()
        self.addCleanup(lambda: Deferred.fromCoroutine(store.close()))
        calls = [Deferred.fromCoroutine(store.enqueue(message(f"r{i}@x.test"), T0))
                 for i in range(100)]
        results = await gatherResults(calls)
        self.assertEqual(len({r.queue_id for r in results}), 100)
        sizes = store._enqueuer.batch_sizes
        self.assertEqual(sum(sizes), 100)
        # The first call commits alone; the 99 that arrived meanwhile share one.
        self.assertEqual(sizes, [1, 99])

    async def test_close_waits_for_enqueues(self) -> None:
        """close() lets enqueues in flight commit before closing the connection."""
        path = os.path.join(os.path.join(tempfile.mkdtemp(), "t"), "h.db")
        store = SqliteStore(path, reactor)
        await store.open()
        calls = [Deferred.fromCoroutine(store.enqueue(message(), T0)) for _ in range(10)]
        await store.close()
        self.assertEqual(len(await gatherResults(calls)), 10)
        conn = sqlite3.connect(path)
        try:
            self.assertEqual(conn.execute("SELECT COUNT(*) FROM deliveries").fetchone()[0], 10)
        finally:
            conn.close()
