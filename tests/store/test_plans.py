"""Query plans of the look-ups a returned message may cause, on both engines.

Bounce correlation by a bare address asks for the newest deliveries to it
since a date, a hundred at most (hurricane/inbound/correlate.py). With only
``lower(recipient)`` indexed, each such question read the address's whole
history and sorted it: a seed address with 30,000 deliveries named 500 times
in one DSN cost 7-16 s (issue 23's second review). Migration 0006 adds
``deliveries_recipient_recent`` so that the LIMIT reads only the rows it
returns; these tests read the engines' own plans for the statement
``find_deliveries`` sends.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from collections.abc import Sequence
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from hurricane.store import sql
from hurricane.store.sqlite import SqliteStore
from hurricane.store.txn import reads

from .test_postgres import PostgresMixin


class _Recorder:
    """A transaction that keeps the statements it is given and finds no rows."""

    def __init__(self, dialect: sql.Dialect) -> None:
        self.dialect = dialect
        self.statements: list[tuple[str, list[Any]]] = []

    async def execute(self, statement: str, params: Sequence[Any] = (), *,
                      prepare: bool = False) -> None:
        self.statements.append((statement, list(params)))

    def fetchall(self) -> list[Any]:
        return []


def recent_statement(dialect: sql.Dialect) -> tuple[str, list[Any]]:
    """What ``find_deliveries(recipient=, since=, limit=100)`` sends, in ``dialect``."""
    recorder = _Recorder(dialect)
    coro = reads.find_deliveries_txn(recorder,  # type: ignore[arg-type]
                                   "Seed@x.test", None, None, None, None, 0.0, 100)
    Deferred.fromCoroutine(coro)
    [(statement, params)] = recorder.statements
    return dialect.convert(statement), params


class SqlitePlanTests(TestCase):
    """SQLite (no ANALYZE statistics, as the server runs it)."""

    async def test_recent_deliveries_read_in_index_order(self) -> None:
        """The recent-deliveries look-up searches deliveries_recipient_recent by address
        and date, and needs no sort."""
        path = os.path.join(tempfile.mkdtemp(), "h.db")
        store = SqliteStore(path, reactor)
        await store.open()
        await store.close()
        statement, params = recent_statement(sql.SQLITE)
        conn = sqlite3.connect(path)
        self.addCleanup(conn.close)
        plan = [row[-1] for row in conn.execute("EXPLAIN QUERY PLAN " + statement, params)]
        self.assertTrue(any("deliveries_recipient_recent" in step and "created_at>?" in step
                            for step in plan), plan)
        self.assertFalse(any("TEMP B-TREE" in step for step in plan), plan)


class PostgresPlanTests(PostgresMixin, TestCase):
    """PostgreSQL, with statistics of a table where an address is one recipient in 51."""

    async def test_recent_deliveries_read_in_index_order(self) -> None:
        """The recent-deliveries look-up scans deliveries_recipient_recent backwards under
        the LIMIT, with no sort and no scan of other addresses' rows."""
        self.make_schema()
        await self.open_store()
        self.admin_sql(
            "INSERT INTO messages (queue_id, sender, size, body, source, created_at)"
            " SELECT 'Q' || i, 'a@s.test', 1, 'x', 'smtp', i FROM generate_series(1, 400) i")
        self.admin_sql(
            "INSERT INTO deliveries (message_pk, recipient, domain, state, attempts,"
            " created_at, updated_at) SELECT message_pk, r, 'x.test', 'delivered', 1,"
            " created_at, created_at FROM messages, (SELECT 'seed@x.test' UNION ALL"
            " SELECT 'r' || j || '@x.test' FROM generate_series(1, 50) j) AS v(r)")
        self.admin_sql("ANALYZE")
        statement, params = recent_statement(sql.POSTGRES)
        with self.admin.cursor() as cur:
            cur.execute(f"SET search_path TO {self.schema}")
            cur.execute("EXPLAIN " + statement, params)
            plan = "\n".join(row[0] for row in cur.fetchall())
        self.assertIn("Index Scan Backward using deliveries_recipient_recent", plan)
        self.assertNotIn("Sort", plan)
        self.assertNotIn("Filter: (lower(", plan)
