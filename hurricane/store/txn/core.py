"""The transaction protocol and what every domain module of the store shares.

Each ``*_txn`` function (Synapse's naming) receives an open transaction and
does one domain operation with the SQL of :mod:`hurricane.store.sql`. They
are coroutines over the small :class:`Txn` protocol:

- on PostgreSQL, ``Txn.execute`` awaits txpostgres (no threads);
- on SQLite, ``Txn.execute`` runs the statement synchronously (in the adbapi
  pool thread, or inline for the memory store) and never suspends, so the
  engine drives the coroutine to its end with a single ``send(None)`` (see
  :func:`run_sync`).

Writing the semantics once keeps the engines identical, which is what the
contract tests check; only the engine-specific glue (connections, commit,
error mapping) differs. This module holds the protocol, the bound calls the
engines run, row conversions and the chunking and window helpers.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from hurricane.model import Delivery, Event, EventKind, Outcome, State, Suppression
from hurricane.store.sql import Dialect
from hurricane.streams import DEFAULT_STREAM

__all__ = ["Row", "Txn", "TxnCall", "ReadCall", "name_of", "run_sync", "as_bool", "opt_int",
           "delivery_from_row", "event_from_row", "outcome_from_row", "suppression_from_row",
           "CHUNK", "chunks", "text_of", "MAX_REPORT_ROWS", "created_window", "report_limit"]


T = TypeVar("T")
#: One result row, as the DB-API module returns it.
Row = tuple[Any, ...]


class Txn(Protocol):
    """What a transaction function may do: the engine provides it."""

    dialect: Dialect

    async def execute(self, statement: str, params: Sequence[object] = (), *,
                      prepare: bool = False) -> None:
        """Run one statement written with ``?`` placeholders.

        ``prepare`` marks a statement run often with this exact text: an
        engine may plan it once per connection (PostgreSQL: PREPARE and
        EXECUTE; SQLite's module caches its statements anyway). Its
        parameters then need types the statement itself determines (a
        bare ``?`` in VALUES is text: CAST it where that matters).
        """

    async def insert_rows(self, table: str, columns: Sequence[str],
                          rows: Sequence[Sequence[object]]) -> None:
        """Insert many rows at once (executemany or multi-row VALUES)."""

    def fetchone(self) -> Row | None:
        """The next row of the last statement."""

    def fetchall(self) -> list[Row]:
        """The remaining rows of the last statement."""

    @property
    def rowcount(self) -> int:
        """Rows changed by the last statement."""

    def standalone(self) -> bool:
        """Ask to run each following statement as its own transaction.

        For a transaction function whose every statement is atomic by itself
        and leaves the store consistent whatever follows: where statements
        are round trips (PostgreSQL), no BEGIN and COMMIT are then sent.
        Only honoured before the first statement.

        Returns:
            True when the engine does so.
        """


@dataclass(frozen=True)
class TxnCall(Generic[T]):
    """A transaction function with its arguments bound: what an engine runs."""

    #: ``func(txn, *args)`` for the bound function and arguments.
    run: Callable[[Txn], Awaitable[T]]
    #: The transaction function's name (for logs).
    name: str


@dataclass(frozen=True)
class ReadCall:
    """A read-only transaction function call, batched with others by
    :func:`read_batch_txn` (which may answer point reads together)."""

    func: Callable[..., Awaitable[object]]
    args: tuple[object, ...]
    kwargs: Mapping[str, object]


def name_of(func: Callable[..., object]) -> str:
    """The name of a transaction function, for logs."""
    return str(getattr(func, "__name__", "?"))


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Drive a transaction coroutine whose awaits never suspend.

    Args:
        coro: a ``*_txn`` coroutine running over a synchronous :class:`Txn`.

    Returns:
        Its result.

    Raises:
        RuntimeError: the coroutine awaited something asynchronous (a bug).
    """
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coro.close()
    raise RuntimeError("a transaction function suspended on a synchronous connection")


def as_bool(value: object) -> bool:
    return bool(value)


def opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def delivery_from_row(row: Row) -> Delivery:
    """A :class:`Delivery` from a row of ``sql.SELECT_DELIVERIES``."""
    return Delivery(
        delivery_id=int(row[0]), message_pk=int(row[1]), queue_id=row[2], sender=row[3],
        recipient=row[4], domain=row[5], state=State(row[6]), reason=row[7],
        hard=as_bool(row[8]), attempts=int(row[9]), next_attempt_at=row[10],
        code=opt_int(row[11]), status=row[12], text=row[13], remote_host=row[14],
        mailing_id=row[15], message_id=row[16], header_message_id=row[17], orcpt=row[18],
        created_at=row[19], updated_at=row[20], delivered_at=row[21], bounced_at=row[22],
        lease_owner=row[23], lease_until=row[24], stream=row[25],
    )


def event_from_row(row: Row) -> Event:
    """An :class:`Event` from a row of ``sql.SELECT_EVENTS``."""
    return Event(
        event_id=int(row[0]), delivery_id=int(row[1]), kind=EventKind(row[2]), at=row[3],
        state=None if row[4] is None else State(row[4]), reason=row[5], hard=as_bool(row[6]),
        code=opt_int(row[7]), status=row[8], text=row[9], remote_host=row[10],
        remote_ip=row[11], tls=row[12], source=row[13], rule=row[14], duration=row[15],
        bounce_id=opt_int(row[16]), feedback_type=row[17], correlation=row[18],
        note=row[19], **_transport_of(row[20:24]),
        explanation=row[24] if len(row) > 24 else None,
    )


def _transport_of(row: Row) -> dict[str, str | None]:
    """An attempt's transport columns (migration 0010, issue 21), when the row has them."""
    if len(row) < 4:
        return {}
    return {"source_ip": row[0], "tls_policy_type": row[1], "tls_policy_id": row[2],
            "tls_result": row[3]}


def outcome_from_row(row: Row) -> Outcome:
    """An :class:`Outcome` from a row of ``sql.SELECT_OUTCOMES``."""
    return Outcome(
        queue_id=row[0], delivery_id=int(row[1]), recipient=row[2], state=row[3],
        reason=row[4], hard=as_bool(row[5]), code=opt_int(row[6]), status=row[7],
        text=row[8], attempts=int(row[9]), mailing_id=row[10], message_id=row[11],
        created_at=row[12], updated_at=row[13], remote_host=row[14],
        delivered_at=row[15], bounced_at=row[16], stream=row[17] or DEFAULT_STREAM,
        source_ip=row[18],
    )


def suppression_from_row(row: Row) -> Suppression:
    """A :class:`Suppression` from a row with ``sql.SUPPRESSION_COLUMNS``."""
    return Suppression(address=row[0], reason=row[1], created_at=row[2], source=row[3],
                       event_id=opt_int(row[4]), note=row[5])


#: Parameters per IN (...) list: below SQLite's historical 999 limit.
CHUNK = 500


def chunks(items: Sequence[T], size: int = CHUNK) -> list[Sequence[T]]:
    """``items`` in slices of at most ``size`` (one IN (...) list each)."""
    return [items[i:i + size] for i in range(0, len(items), size)]


def text_of(word: enum.Enum | str | None) -> str | None:
    """What the SQL stores for a vocabulary word: the member's value (text as it is)."""
    if word is None or isinstance(word, str) and not isinstance(word, enum.Enum):
        return word
    return str(word.value)


#: Most rows a report read returns, whatever the caller asks for.
MAX_REPORT_ROWS = 10_000


def created_window(since: float | None, until: float | None,
                   column: str = "created_at") -> tuple[str, list[object]]:
    """A WHERE clause (never empty) and its parameters for [since, until)."""
    where = ["1 = 1"]
    params: list[object] = []
    if since is not None:
        where.append(f"{column} >= ?")
        params.append(since)
    if until is not None:
        where.append(f"{column} < ?")
        params.append(until)
    return " AND ".join(where), params


def report_limit(limit: int) -> int:
    """A caller's row limit, clamped to [0, MAX_REPORT_ROWS]."""
    return max(0, min(int(limit), MAX_REPORT_ROWS))
