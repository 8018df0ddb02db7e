"""The in-memory store: the SQLite engine on a ``:memory:`` database, run inline.

The unit tests of other components use it (``memory:`` in a configuration
too). It is not a second implementation: it is :class:`SqliteEngine`, the
code of the SQLite file store, with its SQL, migrations and coalesced
transactions, on a private in-memory database. Only the place a transaction
runs differs: on the calling thread, at once, so every call returns an
already-fired Deferred and a test that drives it with
``Deferred.fromCoroutine`` can use ``successResultOf`` under a
``task.Clock``.

The database lives as long as the object: ``close()`` then ``open()`` sees
the same rows. Tests make calls fail with :meth:`MemoryStore.fail_next`
and :meth:`MemoryStore.set_available` (faults armed on the store's
failing transaction object, :mod:`hurricane.store.faults`) and look at rows
no operation returns with :meth:`MemoryStore.query`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from hurricane.store.faults import Fault, fail_transactions
from hurricane.store.sqlite import Operation, OperationResult, SqliteEngine
from hurricane.store.txn.core import Row

__all__ = ["MemoryStore"]


class MemoryStore(SqliteEngine):
    """IOutcomeStore in an in-memory SQLite database; nothing survives the process."""

    def __init__(self, url: str = "memory:") -> None:
        """
        Args:
            url: how to name the store in messages.
        """
        super().__init__(url)
        self._conn: sqlite3.Connection | None = None
        self._unavailable: Fault | None = None

    # -- test hooks ---------------------------------------------------------

    def fail_next(self, n: int = 1) -> None:
        """Make the next ``n`` transactions fail (StoreUnavailable), then work again."""
        if n > 0:
            self.faults.add(fail_transactions(n, message="fail_next"))

    def set_available(self, available: bool) -> None:
        """Make every transaction fail (StoreUnavailable) until set back to True."""
        if available:
            if self._unavailable is not None:
                self.faults.remove(self._unavailable)
                self._unavailable = None
        elif self._unavailable is None:
            self._unavailable = self.faults.add(
                fail_transactions(None, message="unavailable (set_available)"))

    def query(self, statement: str, params: Sequence[Any] = ()) -> list[Row]:
        """Run one SQL statement outside the store's transactions; its rows.

        For tests that look at (or set up) what no store operation returns,
        e.g. the error recorded for a returned message.
        """
        conn = self._connection()
        rows: list[Row] = conn.execute(statement, tuple(params)).fetchall()
        return rows

    # -- engine hooks ---------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            # isolation_level None: the engine issues BEGIN/COMMIT itself.
            conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA foreign_keys = ON")
            self._conn = conn
        return self._conn

    async def _connect(self) -> None:
        self._connection()

    async def _disconnect(self) -> None:
        # The rows stay with this object: a reopened store sees them.
        await self._txns.drain()

    async def _execute_batch(self, calls: list[Operation]) -> list[OperationResult]:
        return self._interaction_batch(self._connection().cursor(), calls)
