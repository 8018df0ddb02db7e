"""The contract and SQLite specifics, on a file in a temporary directory."""

from __future__ import annotations

import os
import sqlite3
import stat
import tempfile
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.trial.unittest import TestCase

from hurricane.model import ReturnedMessage
from hurricane.store.sqlite import SqliteStore

from .contract import T0, StoreContractMixin, message


def _returned() -> ReturnedMessage:
    return ReturnedMessage(raw=b"Subject: x\r\n\r\ny\r\n", mail_from="",
                           rcpt_to="b+x@bounces.example", received_at=T0)


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

    async def _traced(self, synchronous: str) -> tuple[SqliteStore, list[str], int]:
        """A store whose connection reports every statement; a returned message in it."""
        path = os.path.join(tempfile.mkdtemp(), "h.db")
        store = SqliteStore(path, reactor, synchronous=synchronous)
        await store.open()
        self.addCleanup(lambda: Deferred.fromCoroutine(store.close()))
        seen: list[str] = []
        pool = store._pool
        assert pool is not None
        await pool.runInteraction(lambda cursor: cursor.connection.set_trace_callback(
            lambda statement: seen.append(" ".join(statement.split()))))
        bounce_id = await store.store_bounce(_returned())
        return store, seen, bounce_id

    async def test_recording_commits_without_fsync(self) -> None:
        """A transaction of bounce recording alone commits at NORMAL (no fsync; made
        again from the pending message after a power cut), then FULL again; storing
        a returned message (its 250) and anything beside it commits at FULL."""
        store, seen, bounce_id = await self._traced("FULL")
        self.assertNotIn("PRAGMA synchronous = NORMAL", seen)  # the store_bounce
        seen.clear()
        await store.record_bounce(bounce_id, [], "other", None, "{}")
        self.assertEqual(seen[0], "PRAGMA synchronous = NORMAL")
        self.assertEqual(seen[1], "BEGIN IMMEDIATE")
        self.assertEqual(seen[-2:], ["COMMIT", "PRAGMA synchronous = FULL"])
        seen.clear()
        # in flight, then a recording and a stored message together: one durable commit
        await gatherResults([
            Deferred.fromCoroutine(store.store_bounce(_returned())),
            Deferred.fromCoroutine(store.mark_bounce_failed(bounce_id, "x")),
            Deferred.fromCoroutine(store.store_bounce(_returned())),
        ])
        self.assertEqual(seen.count("COMMIT"), 2)
        self.assertNotIn("PRAGMA synchronous = NORMAL", seen)
        pool = store._pool
        assert pool is not None
        self.assertEqual((await pool.runQuery("PRAGMA synchronous"))[0][0], 2)  # FULL

    async def test_recording_never_raises_the_level(self) -> None:
        """A store run at NORMAL or OFF commits recording at its own level."""
        for level in ("NORMAL", "OFF"):
            store, seen, bounce_id = await self._traced(level)
            await store.record_bounce(bounce_id, [], "other", None, "{}")
            self.assertFalse([s for s in seen if s.startswith("PRAGMA synchronous")])

    async def test_files_private(self) -> None:
        """A new store's directory is 0700 and the database, -wal and -shm are 0600."""
        old = os.umask(0o022)
        self.addCleanup(os.umask, old)
        top = tempfile.mkdtemp()
        path = os.path.join(top, "data", "h.db")
        store = SqliteStore(path, reactor)
        await store.open()
        self.addCleanup(lambda: Deferred.fromCoroutine(store.close()))
        self.assertEqual(stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode), 0o700)
        # WAL mode: both files exist while the store is open.
        for name in ("h.db", "h.db-wal", "h.db-shm"):
            self.assertEqual(
                stat.S_IMODE(os.stat(os.path.join(top, "data", name)).st_mode), 0o600, name)

    async def test_wide_files_tightened(self) -> None:
        """A database, -wal and -shm left 0644 by an older version are 0600 after open()."""
        top = tempfile.mkdtemp()
        path = os.path.join(top, "h.db")
        # What an older version left behind: a WAL database, its files 0644.
        old = os.umask(0o022)
        try:
            conn = sqlite3.connect(path)
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("CREATE TABLE t (x)")
            conn.commit()
            keeper = sqlite3.connect(path)  # keeps -wal and -shm when conn closes
            keeper.execute("SELECT * FROM t").fetchall()
            conn.close()
        finally:
            os.umask(old)
        self.addCleanup(keeper.close)
        names = ("h.db", "h.db-wal", "h.db-shm")
        for name in names:
            os.chmod(os.path.join(top, name), 0o644)
        store = SqliteStore(path, reactor)
        await store.open()
        self.addCleanup(lambda: Deferred.fromCoroutine(store.close()))
        for name in names:
            self.assertEqual(
                stat.S_IMODE(os.stat(os.path.join(top, name)).st_mode), 0o600, name)

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

    async def _store(self) -> tuple[SqliteStore, str]:
        path = os.path.join(os.path.join(tempfile.mkdtemp(), "t"), "h.db")
        store = SqliteStore(path, reactor)
        await store.open()
        self.addCleanup(lambda: Deferred.fromCoroutine(store.close()))
        return store, path

    async def test_operations_of_any_kind_share_a_transaction(self) -> None:
        """An enqueue, a claim, a read and a suppression issued together
        run in one transaction after the one in flight, in the order given."""
        store, _ = await self._store()
        first = await store.enqueue(message("a@x.test"), T0)
        before = len(store._txns.batch_sizes)
        calls = [
            Deferred.fromCoroutine(store.enqueue(message("b@y.test"), T0)),
            Deferred.fromCoroutine(store.claim_due(T0 + 1, "node", 60, 10)),
            Deferred.fromCoroutine(store.get_delivery(first.recipients[0].delivery_id)),
            Deferred.fromCoroutine(store.suppress("c@z.test", "manual", T0)),
            Deferred.fromCoroutine(store.claim_due(T0 + 1, "node", 60, 10)),
        ]
        second, claimed, row, added, claimed_again = await gatherResults(calls)
        sizes = store._txns.batch_sizes[before:]
        # Five operations, at most two transactions: whatever was issued
        # while one was in flight shares the next.
        self.assertEqual(sum(sizes), 5)
        self.assertLessEqual(len(sizes), 2)
        # Each operation saw the ones before it in the shared transaction:
        # the second claim never gets a row the first one took.
        self.assertIn("a@x.test", [d.recipient for d in claimed])
        both = [d.delivery_id for d in claimed + claimed_again]
        self.assertEqual(len(both), len(set(both)))
        self.assertEqual(row.recipient, "a@x.test")
        self.assertTrue(added)
        self.assertEqual(len(second.recipients), 1)

    async def test_a_failing_operation_is_rolled_back_alone(self) -> None:
        """One operation of a shared transaction raises: its writes are undone
        and it alone fails; the others commit (seen from another connection)."""
        from hurricane.store.interface import StoreUnavailable

        store, path = await self._store()
        await store.enqueue(message("first@x.test"), T0)  # makes the next ones batch

        async def write_then_fail(txn: Any) -> None:
            await txn.execute("INSERT INTO suppressions (address, reason, created_at) "
                              "VALUES (?, ?, ?)", ("doomed@x.test", "manual", T0))
            raise ValueError("this operation fails after writing")

        self.flushLoggedErrors()
        blocker = Deferred.fromCoroutine(store.enqueue(message("x@x.test"), T0))
        calls = [
            Deferred.fromCoroutine(store.enqueue(message("kept@x.test"), T0)),
            Deferred.fromCoroutine(store._run(write_then_fail)),
            Deferred.fromCoroutine(store.suppress("also-kept@x.test", "manual", T0)),
        ]
        await blocker
        kept, failed, suppressed = await gatherResults(
            [c.addErrback(lambda f: f.value) for c in calls])
        self.assertIsInstance(failed, StoreUnavailable)
        self.assertIn("fails after writing", str(failed))
        self.assertEqual(len(kept.recipients), 1)
        self.assertTrue(suppressed)
        self.assertIn(3, store._txns.batch_sizes)
        self.flushLoggedErrors(ValueError)
        conn = sqlite3.connect(path)
        try:
            addresses = {a for (a,) in conn.execute("SELECT address FROM suppressions")}
            recipients = {r for (r,) in conn.execute("SELECT recipient FROM deliveries")}
        finally:
            conn.close()
        self.assertEqual(addresses, {"also-kept@x.test"})
        self.assertIn("kept@x.test", recipients)

    def _add_rollback_trigger(self, path: str) -> None:
        # SQLite rolls the whole transaction back by itself, as after
        # SQLITE_FULL or an I/O error.
        conn = sqlite3.connect(path)
        try:
            conn.execute("CREATE TRIGGER boom BEFORE INSERT ON suppressions "
                         "WHEN NEW.address = 'boom@x.test' "
                         "BEGIN SELECT RAISE(ROLLBACK, 'boom: disk full'); END")
            conn.commit()
        finally:
            conn.close()

    def _suppressed(self, path: str) -> set[str]:
        conn = sqlite3.connect(path)
        try:
            return {a for (a,) in conn.execute("SELECT address FROM suppressions")}
        finally:
            conn.close()

    async def test_sqlite_rolling_back_by_itself_reports_the_real_error(self) -> None:
        """When SQLite aborts the transaction (disk full, I/O error), callers
        get that error, not our ROLLBACK's 'no transaction is active', alone
        or in a shared transaction, and nothing of the batch is committed."""
        from hurricane.store.interface import StoreUnavailable

        store, path = await self._store()
        self._add_rollback_trigger(path)
        with self.assertRaises(StoreUnavailable) as alone:
            await store.suppress("boom@x.test", "manual", T0)
        self.assertIn("boom: disk full", str(alone.exception))

        # Issued while the enqueue's transaction is still in flight (its
        # caller resumes before the batch is retired): the three share one.
        await store.enqueue(message("first@x.test"), T0)
        calls = [Deferred.fromCoroutine(store.suppress(a, "manual", T0))
                 for a in ("a@x.test", "boom@x.test", "b@x.test")]
        results = await gatherResults([c.addErrback(lambda f: f.value) for c in calls])
        self.assertEqual(store._txns.batch_sizes[-1], 3)
        for r in results:
            self.assertIsInstance(r, StoreUnavailable)
            self.assertIn("boom: disk full", str(r))
        self.assertEqual(self._suppressed(path), set())
        self.flushLoggedErrors()

    async def test_no_write_after_sqlite_rolled_back(self) -> None:
        """A transaction function that swallows the error and writes on gets
        an error instead of autocommitted rows."""
        store, path = await self._store()
        self._add_rollback_trigger(path)

        async def swallow_and_go_on(txn: Any) -> None:
            try:
                await txn.execute("INSERT INTO suppressions (address, reason, created_at) "
                                  "VALUES (?, ?, ?)", ("boom@x.test", "manual", T0))
            except sqlite3.Error:
                pass
            await txn.execute("INSERT INTO suppressions (address, reason, created_at) "
                              "VALUES (?, ?, ?)", ("stray@x.test", "manual", T0))

        from hurricane.store.interface import StoreUnavailable

        with self.assertRaises(StoreUnavailable) as caught:
            await store._run(swallow_and_go_on)
        self.assertIn("rolled back by SQLite", str(caught.exception))
        self.assertEqual(self._suppressed(path), set())
        self.flushLoggedErrors()
