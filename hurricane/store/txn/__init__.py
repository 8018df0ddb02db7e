"""Transaction functions shared by the store engines, one module per domain.

Each ``*_txn`` function receives an open transaction (the :class:`Txn`
protocol of :mod:`hurricane.store.txn.core`) and does one domain operation
with the SQL of :mod:`hurricane.store.sql`; :class:`hurricane.store.base.SqlStore`
runs them on every engine (SQLite file, SQLite in memory, PostgreSQL):

- :mod:`~hurricane.store.txn.submission`: queue ids, the enqueue;
- :mod:`~hurricane.store.txn.deliveries`: claims, leases, bodies, attempt
  results, retries;
- :mod:`~hurricane.store.txn.bounces`: returned mail, its analysis, retention;
- :mod:`~hurricane.store.txn.suppressions`: the suppression list;
- :mod:`~hurricane.store.txn.reads`: point and search reads, read batching;
- :mod:`~hurricane.store.txn.summaries`: counts and report aggregates
  (the report's mailings and settling reads are :mod:`hurricane.store.reports`).
"""

from hurricane.store.txn.core import ReadCall, Row, Txn, TxnCall, run_sync

__all__ = ["ReadCall", "Row", "Txn", "TxnCall", "run_sync"]
