"""The PostgreSQL engine: txpostgres (async psycopg2, no threads).

Kept thin on purpose (txpostgres's last release is from 2019): a small pool
of :class:`txpostgres.txpostgres.Connection` objects, our own BEGIN/COMMIT
around the shared ``*_txn`` functions, and dead-connection handling:

- a connection that fails with a connection-level error (server restarted,
  ``pg_terminate_backend``) fails the call in flight with StoreUnavailable
  and is dropped from the pool;
- an idle connection the server closed is noticed by the reactor (txpostgres
  keeps every connection registered as a reader) and dropped at the next
  checkout;
- a missing connection is opened on demand, so later calls reconnect by
  themselves, with no timer left behind (tests end with an empty reactor).

We do not use txpostgres's own ``ConnectionPool``: it falls back to the
global reactor and never replaces a dead connection.
"""

from __future__ import annotations

import itertools
import re
from collections import deque
from collections.abc import Sequence
from typing import Any, TypeVar

import psycopg2
from twisted.internet import main
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorCore
from twisted.logger import Logger
from txpostgres import txpostgres
from txpostgres.reconnection import ConnectionDead

from hurricane.store.base import SqlStore
from hurricane.store.sql import POSTGRES
from hurricane.store.txn.core import Row, TxnCall
from hurricane.store.urls import redact_url

__all__ = ["PostgresStore"]

T = TypeVar("T")

log = Logger()


class _Connection(txpostgres.Connection):  # type: ignore[misc]
    """A txpostgres connection that dies quietly when the server goes away.

    txpostgres raises from ``doRead`` when an idle connection is closed by
    the server; the reactor would log that as an unhandled error. We turn it
    into an ordinary lost connection: the pool sees it closed and replaces it.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Statement text -> the name it is prepared under on this connection.
        self.prepared: dict[str, str] = {}

    def doRead(self) -> object:
        try:
            txpostgres.Connection.doRead(self)
        except psycopg2.Error as e:
            log.warn("PostgreSQL connection lost while idle: {error}", error=str(e).strip())
            return main.CONNECTION_LOST
        return None

    @property
    def dead(self) -> bool:
        """True once the underlying psycopg2 connection is closed."""
        conn = self._connection
        return conn is None or bool(conn.closed)


class _Pool:
    """At most ``size`` connections, opened on demand, replaced when dead."""

    def __init__(self, reactor: IReactorCore, dsn: str, connect_kwargs: dict[str, Any],
                 size: int) -> None:
        self._reactor = reactor
        self._dsn = dsn
        self._kwargs = connect_kwargs
        self._size = size
        self._idle: list[_Connection] = []
        self._count = 0
        self._waiting: deque[Deferred[None]] = deque()
        self._closed = False

    async def acquire(self) -> _Connection:
        """A live connection for the caller's exclusive use until release()."""
        while True:
            if self._closed:
                raise ConnectionDead("pool is closed")
            while self._idle:
                conn = self._idle.pop()
                if not conn.dead:
                    return conn
                self._drop(conn)
            if self._count < self._size:
                self._count += 1
                conn = _Connection(reactor=self._reactor)
                try:
                    await conn.connect(self._dsn, **self._kwargs)
                except BaseException:
                    self._drop(conn, counted=True)
                    raise
                return conn
            waiter: Deferred[None] = Deferred()
            self._waiting.append(waiter)
            await waiter

    def release(self, conn: _Connection, broken: bool = False) -> None:
        """Give a connection back; a broken or dead one is closed and forgotten."""
        if broken or conn.dead or self._closed:
            self._drop(conn)
        else:
            self._idle.append(conn)
            self._wake()

    def _drop(self, conn: _Connection, counted: bool = True) -> None:
        if counted:
            self._count -= 1
        try:
            if conn._connection is not None:
                conn.close()
        except Exception:
            pass  # already gone: closing is best effort
        self._wake()

    def _wake(self) -> None:
        if self._waiting:
            self._waiting.popleft().callback(None)

    def close(self) -> None:
        """Close idle connections; busy ones are closed when released."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            self._drop(conn)
        while self._waiting:
            self._waiting.popleft().callback(None)


#: Statements prepared per connection at most (each shape of a batched
#: statement is one); later shapes run unprepared.
MAX_PREPARED = 64
#: Larger statements are not prepared: a big batch is rare, PostgreSQL plans
#: it afresh each time anyway (its custom plans win), and its cached plan
#: would hold megabytes per connection.
MAX_PREPARED_PARAMETERS = 256

_names = itertools.count(1)


def _numbered(statement: str) -> str:
    """``%s`` markers as ``$1``, ``$2``... (``%%`` stays: psycopg2 makes it ``%``)."""
    count = itertools.count(1)
    return re.sub(r"%(%|s)", lambda m: "%%" if m.group(1) == "%" else f"${next(count)}",
                  statement)


class _PgTxn:
    """The :class:`hurricane.store.txn.Txn` protocol over a txpostgres cursor."""

    dialect = POSTGRES

    def __init__(self, cursor: Any, prepared: dict[str, str] | None = None) -> None:
        self._cursor = cursor
        #: The connection's prepared statements; None: never prepare.
        self._prepared = prepared
        #: Whether BEGIN has been sent (it rides on the first statement).
        self.begun = False
        #: Whether each statement runs as its own transaction (no BEGIN).
        self._standalone = False

    def standalone(self) -> bool:
        """Run each following statement as its own transaction, if none was sent yet.

        The connection is in autocommit mode (psycopg2's asynchronous
        connections always are): without BEGIN, a statement commits by itself,
        durably, when it completes, and neither BEGIN nor COMMIT costs a round
        trip.
        """
        if self.begun:
            return False
        self._standalone = True
        return True

    async def _send(self, statement: str, params: Sequence[object]) -> None:
        if not self.begun and not self._standalone:
            # One round trip less per transaction: psycopg2 sends both in one
            # simple-protocol Query; results and rowcount are the last
            # statement's. If the statement fails, the block is open and
            # aborted, and the caller's ROLLBACK closes it.
            self.begun = True
            statement = "BEGIN; " + statement
        await self._cursor.execute(statement, params)

    async def execute(self, statement: str, params: Sequence[object] = (), *,
                      prepare: bool = False) -> None:
        text = POSTGRES.convert(statement)
        cache = self._prepared
        if not prepare or cache is None:
            await self._send(text, tuple(params))
            return
        values = tuple(params)
        arguments = f" ({', '.join(['%s'] * len(values))})" if values else ""
        name = cache.get(text)
        if name is not None:
            await self._send(f"EXECUTE {name}{arguments}", values)
            return
        if len(cache) >= MAX_PREPARED or len(values) > MAX_PREPARED_PARAMETERS:
            await self._send(text, values)
            return
        # PREPARE rides on the first execution: no round trip of its own.
        # A PREPARE outlives a failed EXECUTE in the same query (and any
        # rollback), so the name is kept before sending: the next call
        # reuses it. If the PREPARE itself failed, that EXECUTE finds no such
        # statement (26000), which clears the cache.
        name = f"hurricane_{next(_names)}"
        cache[text] = name
        await self._send(f"PREPARE {name} AS {_numbered(text)}; EXECUTE {name}{arguments}",
                         values)

    async def insert_rows(self, table: str, columns: Sequence[str],
                          rows: Sequence[Sequence[object]]) -> None:
        # psycopg2 has no executemany on asynchronous connections: one
        # multi-row VALUES per chunk, one round trip.
        group = "(" + ", ".join(["%s"] * len(columns)) + ")"
        for start in range(0, len(rows), 500):
            chunk = rows[start:start + 500]
            statement = (f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
                         + ", ".join([group] * len(chunk)))
            await self._send(statement, [v for row in chunk for v in row])

    def fetchone(self) -> Row | None:
        row: Row | None = self._cursor.fetchone()
        return row

    def fetchall(self) -> list[Row]:
        rows: list[Row] = self._cursor.fetchall()
        return rows

    @property
    def rowcount(self) -> int:
        return int(self._cursor.rowcount)


#: SQLSTATEs of a prepared statement that cannot run: invalid_sql_statement_name
#: (EXECUTE of a name not prepared here) and feature_not_supported ("cached
#: plan must not change result type", after a migration altered a column).
_STALE_STATEMENT = frozenset({"26000", "0A000"})

#: Errors after which a connection is not trusted any more.
_CONNECTION_ERRORS = (psycopg2.OperationalError, psycopg2.InterfaceError, ConnectionDead)


class PostgresStore(SqlStore):
    """IOutcomeStore in PostgreSQL; several nodes may share one database."""

    dialect = POSTGRES

    def __init__(self, dsn: str, reactor: IReactorCore, pool_size: int = 4, *,
                 enqueue_concurrency: int = 1, prepared_statements: bool = True,
                 connect_kwargs: dict[str, Any] | None = None, url: str | None = None) -> None:
        """
        Args:
            dsn: a libpq connection string or ``postgresql://`` URI.
            reactor: watches the connections' sockets.
            pool_size: most connections this node opens.
            enqueue_concurrency: group-commit batches in flight at once. One
                gives the largest batches, which measured fastest (a batch
                is a few statements whatever its size); the other
                connections serve claims and reads meanwhile.
            connect_kwargs: more ``psycopg2.connect`` keywords (e.g. ``options``).
            url: how to name the store in messages (must not hold a password).
            prepared_statements: run the statements marked ``prepare`` (the
                enqueue) as server-side prepared statements, planned once per
                connection. Turn off behind PgBouncer in transaction pooling,
                which may run each transaction on another server connection.
        """
        if pool_size < 1:
            raise ValueError("pool_size must be at least 1")
        if not 1 <= enqueue_concurrency <= pool_size:
            raise ValueError("enqueue_concurrency must be between 1 and pool_size")
        self.enqueue_in_flight = enqueue_concurrency
        super().__init__(url or redact_url(dsn))
        self._pg_reactor = reactor
        self._dsn = dsn
        self._connect_kwargs = dict(connect_kwargs or {})
        self._pool_size = pool_size
        self._prepare = bool(prepared_statements)
        self._pool: _Pool | None = None

    async def _connect(self) -> None:
        self._pool = _Pool(self._pg_reactor, self._dsn, self._connect_kwargs, self._pool_size)
        # Check out one connection now, so an unreachable server fails open().
        conn = await self._pool.acquire()
        self._pool.release(conn)

    async def _disconnect(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    async def _run_txn(self, call: TxnCall[T]) -> T:
        pool = self._pool
        if pool is None:
            raise ConnectionDead("store is closed")
        conn = await pool.acquire()
        broken = False
        try:
            cursor = conn.cursor()
            txn = _PgTxn(cursor, conn.prepared if self._prepare else None)
            try:
                result = await call.run(self.faults.wrap(txn))
                if txn.begun:
                    await cursor.execute("COMMIT")
            except BaseException:
                if txn.begun and not conn.dead:
                    try:
                        await cursor.execute("ROLLBACK")
                    except Exception:
                        broken = True
                raise
            return result
        except _CONNECTION_ERRORS:
            broken = True
            raise
        except psycopg2.Error as e:
            if e.pgcode in _STALE_STATEMENT:
                # Prepared statements gone (DISCARD ALL, a pooler that moved
                # us to another server connection) or made stale by a schema
                # change: prepare again next time.
                conn.prepared.clear()
            raise
        finally:
            pool.release(conn, broken=broken)

    def _is_database_error(self, error: BaseException) -> bool:
        return isinstance(error, (psycopg2.Error, ConnectionDead, OSError))
