"""The SQLite engine: the zero-setup default, and the memory store's engine.

:class:`SqliteEngine` is the code both SQLite stores run: the coalesced
transactions below, over one connection. :class:`SqliteStore` puts it on a
file, in an adbapi pool thread; :class:`hurricane.store.memory.MemoryStore`
puts it on a ``:memory:`` database and runs each batch inline.

The file store has one connection in an adbapi pool (``cp_min = cp_max = 1``, as Synapse does),
so every transaction runs in that pool's single thread, one after the other;
WAL so that readers (``hurricane outcomes`` in another process) do not block
the server; foreign keys on; ``synchronous`` FULL by default so that a
committed enqueue survives a power cut, which is what "250 means committed"
promises. A transaction of nothing but the bounce processor's recording (and
reads) commits without that fsync (:data:`REDERIVABLE`).

Every transaction goes through one :class:`hurricane.store.base.GroupCommit`
(:meth:`SqliteEngine._run_txn`): operations of any kind that arrive while a
transaction is in flight (an enqueue, the scheduler's claim, the results of
the deliveries that just finished, the bounce processor's reads) run in the
next transaction together, each under its own SAVEPOINT so that one that
fails is rolled back and reported alone. With a single connection every
transaction costs a hand-off to the pool thread and back plus a commit; an
idle store still runs an operation at once, so nothing waits for a timer.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from twisted.enterprise import adbapi
from twisted.internet.interfaces import IReactorCore
from twisted.logger import Logger

from hurricane.filemodes import create_private_file, tighten
from hurricane.outcome import SqliteSync
from hurricane.store.base import GroupCommit, SqlStore
from hurricane.store.sql import SQLITE
from hurricane.store.txn.core import Row, Txn, TxnCall, run_sync

__all__ = ["REDERIVABLE", "SqliteEngine", "SqliteStore", "prepare_database_files"]

log = Logger()

#: Most operations per coalesced transaction (bounds one commit's latency).
_MAX_OPERATIONS = 64

#: Transaction functions whose writes can be made again from what is durable
#: already: recording the analysis of a stored returned message (or marking
#: it failed). Lost to a power cut, the message is still ``pending`` and the
#: processor's start-up sweep analyzes and records it again (events are
#: idempotent); a process crash loses nothing (WAL). A transaction made of
#: these alone (and reads) commits at ``synchronous = NORMAL`` when the store
#: runs FULL or EXTRA: no fsync of its own, ~200 us of the SQLite thread's
#: CPU per commit (sys time) on the bench machine; the next durable commit's
#: fsync covers its WAL frames too. One beside an enqueue, a stored return
#: or a delivery result shares that transaction's durable commit.
REDERIVABLE = frozenset({
    "record_bounces_txn", "record_bounce_txn", "mark_bounce_failed_txn", "read_batch_txn",
})
T = TypeVar("T")


@dataclass(frozen=True)
class Operation:
    """One transaction function call in a coalesced transaction.

    ``run`` stores its result where its caller will read it (a closure over
    the caller's typed slot), so the batch carries no erased values.
    """

    run: Callable[[Txn], Coroutine[Any, Any, None]]
    name: str


#: What a coalesced operation ended with: None, or the exception it raised.
OperationResult = BaseException | None


def _check_open(conn: sqlite3.Connection) -> None:
    """Fail when SQLite has rolled our transaction back by itself.

    After SQLITE_FULL, an I/O error or a RAISE(ROLLBACK) the connection is
    in autocommit mode: a transaction function that caught the error and
    went on would have its next statements committed one by one, outside
    the batch, while its caller is told the batch failed.
    """
    if not conn.in_transaction:
        raise sqlite3.OperationalError("the transaction was rolled back by SQLite")


#: The files SQLite keeps next to the database (WAL mode, and the rollback
#: journal of a database last used in another mode).
_SIDECARS = ("-wal", "-shm", "-journal")


def prepare_database_files(path: str) -> None:
    """Make the database file and its companions owner-only before SQLite opens them.

    SQLite creates a new database with mode 0644 (less the umask) and gives
    its ``-wal`` and ``-shm`` files the mode of the database file, so the
    database is created here first with mode 0600 (its directory 0700 when
    it is missing); files left wider by an older version are tightened,
    with a warning (:mod:`hurricane.filemodes`).

    Args:
        path: the database file.

    Raises:
        OSError: a file cannot be created or its mode changed.
    """
    create_private_file(path)
    for suffix in _SIDECARS:
        tighten(path + suffix)


class _SqliteTxn:
    """The :class:`hurricane.store.txn.Txn` protocol over a sqlite3 cursor.

    ``execute`` is a coroutine only in form: it runs the statement at once,
    in the pool thread, and never suspends (see :func:`run_sync`).
    """

    dialect = SQLITE

    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor
        self._conn = cursor.connection

    def standalone(self) -> bool:
        """Statements stay in the (coalesced) transaction: no round trips to save."""
        return False

    async def execute(self, statement: str, params: Sequence[Any] = (), *,
                      prepare: bool = False) -> None:
        # ``prepare``: the sqlite3 module caches prepared statements by text.
        _check_open(self._conn)
        self._cursor.execute(statement, tuple(params))

    async def insert_rows(self, table: str, columns: Sequence[str],
                          rows: Sequence[Sequence[Any]]) -> None:
        _check_open(self._conn)
        statement = (f"INSERT INTO {table} ({', '.join(columns)}) "
                     f"VALUES ({', '.join('?' * len(columns))})")
        self._cursor.executemany(statement, rows)

    def fetchone(self) -> Row | None:
        row: Row | None = self._cursor.fetchone()
        return row

    def fetchall(self) -> list[Row]:
        rows: list[Row] = self._cursor.fetchall()
        return rows

    @property
    def rowcount(self) -> int:
        return int(self._cursor.rowcount)


class SqliteEngine(SqlStore):
    """What the SQLite stores share: the coalesced transactions over one connection.

    Subclasses say where a batch runs (:meth:`_execute_batch`): the file
    store in its adbapi pool thread, the memory store inline.
    """

    dialect = SQLITE
    enqueue_in_flight = 1

    def __init__(self, url: str) -> None:
        super().__init__(url)
        #: Every transaction function call, coalesced (see the module doc).
        self._txns: GroupCommit[Operation, OperationResult] = \
            GroupCommit(self._run_batch, max_batch=_MAX_OPERATIONS, max_in_flight=1)

    async def _execute_batch(self, calls: list[Operation]) -> list[OperationResult]:
        """Run :meth:`_interaction_batch` on the connection; its outcomes."""
        raise NotImplementedError

    async def _run_txn(self, call: TxnCall[T]) -> T:
        slot: list[T] = []

        async def run(txn: Txn) -> None:
            slot.append(await call.run(txn))

        error = await self._txns.submit(Operation(run, call.name))
        if error is not None:
            raise error
        return slot[0]

    async def _run_batch(self, calls: list[Operation]) -> list[OperationResult]:
        try:
            return await self._execute_batch(calls)
        except Exception as e:
            # The whole transaction failed (BEGIN, COMMIT or a broken
            # savepoint): every caller gets the error (GroupCommit maps it to
            # StoreUnavailable); say once which operations it took down.
            log.warn("Store {url} failed a transaction of {count} operation(s) ({names}): "
                     "{error}", url=self.url, count=len(calls), error=repr(e),
                     names=", ".join(sorted({op.name for op in calls})))
            raise

    def _interaction_batch(self, cursor: sqlite3.Cursor,
                           calls: list[Operation]) -> list[OperationResult]:
        """Run transaction functions on the connection (the pool thread, or
        inline for the memory store), in one transaction.

        BEGIN IMMEDIATE takes the write lock up front: a deferred transaction
        that reads and then writes can fail with SQLITE_BUSY halfway when
        another process (a CLI command) writes in between. With more than one
        call each runs under a SAVEPOINT: a call that raises is rolled back
        to it and gets its own error; the others commit.
        """
        conn = cursor.connection
        # A cursor of the connection itself: the file store is handed adbapi's
        # Transaction, which forwards every attribute by __getattr__ (~1 us
        # per statement, fetch and check, in the SQLite thread, holding the GIL).
        cursor = conn.cursor()
        cursor.execute("BEGIN IMMEDIATE")
        try:
            if len(calls) == 1:
                try:
                    run_sync(calls[0].run(self.faults.wrap(_SqliteTxn(cursor))))
                except Exception as e:
                    # Alone in its transaction: roll all of it back (unless
                    # SQLite already did: disk full, I/O error...).
                    if conn.in_transaction:
                        cursor.execute("ROLLBACK")
                    return [e]
                _check_open(conn)
                outcomes: list[OperationResult] = [None]
            else:
                outcomes = []
                for op in calls:
                    cursor.execute("SAVEPOINT op")
                    try:
                        run_sync(op.run(self.faults.wrap(_SqliteTxn(cursor))))
                    except Exception as e:
                        if not conn.in_transaction:
                            # SQLite rolled the whole transaction back: every
                            # operation of the batch fails, with this error.
                            raise
                        cursor.execute("ROLLBACK TO op")
                        cursor.execute("RELEASE op")
                        outcomes.append(e)
                    else:
                        _check_open(conn)
                        cursor.execute("RELEASE op")
                        outcomes.append(None)
        except BaseException:
            if conn.in_transaction:
                try:
                    cursor.execute("ROLLBACK")
                except sqlite3.Error:
                    pass  # the connection is gone; the original error says why
            raise
        cursor.execute("COMMIT")
        return outcomes

    def _is_database_error(self, error: BaseException) -> bool:
        return isinstance(error, (sqlite3.Error, OSError))


class SqliteStore(SqliteEngine):
    """IOutcomeStore in one SQLite file."""

    def __init__(self, path: str, reactor: IReactorCore,
                 synchronous: SqliteSync | str = SqliteSync.full, *,
                 busy_timeout: float = 10.0, url: str | None = None) -> None:
        """
        Args:
            path: the database file; its directory is created at open.
            reactor: runs the pool's thread and its callbacks.
            synchronous: SQLite's ``PRAGMA synchronous`` (FULL: durable commits),
                a :class:`~hurricane.outcome.SqliteSync` or its name in any case.
            busy_timeout: seconds to wait for another process's write lock.
            url: how to name the store in messages (default ``sqlite:///path``).

        Raises:
            ValueError: ``synchronous`` is not a SQLite level.
        """
        level = SqliteSync.of(synchronous)
        self.path = os.path.abspath(path)
        super().__init__(url or f"sqlite://{self.path}")
        self._pool_reactor = reactor
        self._synchronous = level
        self._busy_ms = int(busy_timeout * 1000)
        self._pool: adbapi.ConnectionPool | None = None
        #: The connection runs at NORMAL for a rederivable batch (see
        #: :meth:`_interaction_batch`), not yet put back.
        self._relaxed = False

    def _interaction_batch(self, cursor: sqlite3.Cursor,
                           calls: list[Operation]) -> list[OperationResult]:
        """The coalesced transaction; at NORMAL (no fsync) when every call is
        :data:`REDERIVABLE` and the store runs above it.

        SQLite takes the level only outside a transaction: it is set before
        BEGIN and put back after the COMMIT (or the failure). Should putting
        it back fail, ``_relaxed`` stays set and the next transaction puts it
        back first, or fails: no durable commit ever runs at NORMAL.
        """
        durable = self._synchronous
        if self._relaxed:
            cursor.execute(f"PRAGMA synchronous = {durable.value}")
            self._relaxed = False
        if durable not in (SqliteSync.full, SqliteSync.extra) \
                or not all(op.name in REDERIVABLE for op in calls):
            return super()._interaction_batch(cursor, calls)
        cursor.execute(f"PRAGMA synchronous = {SqliteSync.normal.value}")
        self._relaxed = True
        try:
            return super()._interaction_batch(cursor, calls)
        finally:
            try:
                cursor.execute(f"PRAGMA synchronous = {durable.value}")
                self._relaxed = False
            except sqlite3.Error:
                pass  # the batch's own error says why; the next batch retries

    def _on_connect(self, conn: sqlite3.Connection) -> None:
        # Runs in the pool thread for the (one) new connection.
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute(f"PRAGMA synchronous = {self._synchronous.value}")
        conn.execute(f"PRAGMA busy_timeout = {self._busy_ms}")

    async def _connect(self) -> None:
        prepare_database_files(self.path)
        self._pool = adbapi.ConnectionPool(
            "sqlite3", self.path, cp_min=1, cp_max=1, cp_openfun=self._on_connect,
            cp_reactor=self._pool_reactor, check_same_thread=False,
            # We issue BEGIN/COMMIT ourselves: Python's implicit transactions
            # would leave DDL (migrations) outside any transaction.
            isolation_level=None, timeout=self._busy_ms / 1000,
        )
        self._pool.start()
        # Connect now, so that an unusable path fails open() and not the
        # first enqueue.
        await self._pool.runInteraction(lambda cursor: cursor.execute("SELECT 1"))

    async def _disconnect(self) -> None:
        await self._txns.drain()
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    async def _execute_batch(self, calls: list[Operation]) -> list[OperationResult]:
        pool = self._pool
        if pool is None:
            raise sqlite3.ProgrammingError("store is closed")
        outcomes: list[OperationResult] = await pool.runInteraction(
            self._interaction_batch, calls)
        return outcomes
