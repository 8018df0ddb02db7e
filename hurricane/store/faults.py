"""Fault injection through a failing transaction object.

Tests make the store fail the way a database does (mid-transaction, on one
statement, or for a while) without patching SQL text or private names: every
engine hands its ``*_txn`` functions the :class:`hurricane.store.txn.Txn` it
gets from :meth:`Faults.wrap`, which is the engine's own object while no
fault is armed and a :class:`FailingTxn` around it otherwise. A
:class:`FailingTxn` raises :class:`InjectedFault` *before* sending the
statement a fault picks, so everything the transaction wrote until then is
rolled back by the engine's ordinary error path, exactly as after a
statement the server refused.

Two kinds of fault:

- :func:`fail_statements`: the statements whose text matches a predicate
  (after ``skip`` of them went through), ``times`` of them;
- :func:`fail_transactions`: the next ``times`` transactions (None: every
  one until the fault is removed), at their first statement, which is how
  the memory store's ``fail_next`` and ``set_available`` work.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from hurricane.store.sql import Dialect
from hurricane.store.txn.core import Row, Txn

__all__ = ["Fault", "Faults", "FailingTxn", "InjectedFault", "containing", "fail_statements",
           "fail_transactions"]


class InjectedFault(Exception):
    """The error a :class:`FailingTxn` raises in place of a statement.

    The store reports it as it reports a database error: StoreUnavailable to
    the caller, a warning in the log.
    """


@dataclass
class Fault:
    """When a :class:`FailingTxn` raises.

    Attributes:
        match: the statements concerned (all when None).
        skip: matching statements (or transactions) let through first.
        times: how many times it fires (None: until removed).
        per_transaction: count transactions, firing at their first statement,
            instead of statements.
        message: the text of the :class:`InjectedFault`.
    """

    match: Callable[[str], bool] | None = None
    skip: int = 0
    times: int | None = 1
    per_transaction: bool = False
    message: str = "injected fault"
    #: How many times it fired so far.
    fired: int = 0

    @property
    def spent(self) -> bool:
        """True once it fired ``times`` times."""
        return self.times is not None and self.fired >= self.times

    def fires(self, statement: str, first: bool) -> bool:
        """Whether this statement (``first`` of its transaction) must fail; counts it."""
        if self.spent or (self.per_transaction and not first):
            return False
        if self.match is not None and not self.match(statement):
            return False
        if self.skip > 0:
            self.skip -= 1
            return False
        self.fired += 1
        return True


def containing(text: str) -> Callable[[str], bool]:
    """A predicate: the statement contains ``text`` (whitespace-insensitive)."""
    wanted = " ".join(text.split())
    return lambda statement: wanted in " ".join(statement.split())


def fail_statements(match: Callable[[str], bool] | str | None = None, *, skip: int = 0,
                    times: int | None = 1, message: str = "injected fault") -> Fault:
    """A fault on the statements ``match`` picks (a predicate, or text they contain)."""
    predicate = containing(match) if isinstance(match, str) else match
    return Fault(predicate, skip=skip, times=times, message=message)


def fail_transactions(times: int | None = 1, *, message: str = "injected fault") -> Fault:
    """A fault failing the next ``times`` transactions (None: all) at their first statement."""
    return Fault(None, times=times, per_transaction=True, message=message)


class Faults:
    """The faults armed on one store (its ``faults`` attribute)."""

    def __init__(self) -> None:
        self._armed: list[Fault] = []

    def add(self, fault: Fault) -> Fault:
        """Arm ``fault``; return it (to remove it later)."""
        self._armed.append(fault)
        return fault

    def remove(self, fault: Fault) -> None:
        """Disarm ``fault`` (no error when it is not armed)."""
        if fault in self._armed:
            self._armed.remove(fault)

    def clear(self) -> None:
        """Disarm every fault."""
        self._armed.clear()

    @property
    def armed(self) -> Sequence[Fault]:
        """The faults armed and not spent."""
        return [f for f in self._armed if not f.spent]

    def wrap(self, txn: Txn) -> Txn:
        """The transaction object to hand to a ``*_txn`` function."""
        if not self._armed:
            return txn  # the hot path: nothing armed, nothing allocated
        self._armed = [f for f in self._armed if not f.spent]
        return FailingTxn(txn, self) if self._armed else txn

    def check(self, statement: str, first: bool) -> None:
        """Raise :class:`InjectedFault` when an armed fault picks this statement."""
        for fault in self._armed:
            if fault.fires(statement, first):
                raise InjectedFault(fault.message)


class FailingTxn:
    """A :class:`~hurricane.store.txn.Txn` that fails where its faults say."""

    def __init__(self, inner: Txn, faults: Faults) -> None:
        self._inner = inner
        self._faults = faults
        self._first = True
        self.dialect: Dialect = inner.dialect

    def _check(self, statement: str) -> None:
        first, self._first = self._first, False
        self._faults.check(statement, first)

    async def execute(self, statement: str, params: Sequence[Any] = (), *,
                      prepare: bool = False) -> None:
        self._check(statement)
        await self._inner.execute(statement, params, prepare=prepare)

    async def insert_rows(self, table: str, columns: Sequence[str],
                          rows: Sequence[Sequence[Any]]) -> None:
        self._check(f"INSERT INTO {table} ({', '.join(columns)})")
        await self._inner.insert_rows(table, columns, rows)

    def fetchone(self) -> Row | None:
        return self._inner.fetchone()

    def fetchall(self) -> list[Row]:
        return self._inner.fetchall()

    @property
    def rowcount(self) -> int:
        return self._inner.rowcount

    def standalone(self) -> bool:
        return self._inner.standalone()
