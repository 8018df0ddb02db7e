"""Point and search reads of deliveries, events and messages; read batching."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from hurricane.model import Delivery, Event, EventRecord, Outcome, StoredMessage
from hurricane.store import sql
from hurricane.store.txn.bounces import load_bounce_txn, load_bounces
from hurricane.store.txn.core import (
    ReadCall,
    Txn,
    created_window,
    delivery_from_row,
    event_from_row,
    outcome_from_row,
    report_limit,
)
from hurricane.store.txn.deliveries import get_delivery_txn, select_deliveries
from hurricane.streams import DEFAULT_STREAM

__all__ = ["read_batch_txn", "find_deliveries_txn", "events_txn", "events_after_txn",
           "outcomes_txn", "get_message_txn", "search_deliveries_txn"]


async def read_batch_txn(txn: Txn, calls: Sequence[ReadCall]) -> list[object]:
    """Run several read-only transaction functions in one transaction.

    Each call is answered as ``func(txn, *args)`` would; their results in
    order. Point reads of one kind (``load_bounce_txn``,
    ``get_delivery_txn``: the bounce processor issues dozens at once) are
    answered together by one ``IN (...)`` query each: on SQLite every
    statement costs a trip through the sqlite3 module with the GIL, on
    PostgreSQL a round trip. The calls are read-only and share one
    transaction, so answering them out of order changes nothing.
    """
    results: list[object] = [None] * len(calls)
    grouped: dict[Callable[..., object], dict[int, int]] = {}
    for i, call in enumerate(calls):
        key = call.args[0] if len(call.args) == 1 and not call.kwargs else None
        if call.func in _POINT_READS and isinstance(key, int):
            grouped.setdefault(call.func, {})[i] = key
        else:
            results[i] = await call.func(txn, *call.args, **call.kwargs)
    for func, keys in grouped.items():
        found = await _POINT_READS[func](txn, sorted(set(keys.values())))
        for i, key in keys.items():
            results[i] = found.get(key)
    return results


#: Point reads that ``read_batch_txn`` answers together: the single-key
#: function -> the same read for many keys (a dict of the rows found).
_ManyRead = Callable[[Txn, Sequence[int]], Awaitable[Mapping[int, object]]]


_POINT_READS: dict[Callable[..., object], _ManyRead] = {
    load_bounce_txn: load_bounces,
    get_delivery_txn: select_deliveries,
}


async def find_deliveries_txn(txn: Txn, recipient: str | None, queue_id: str | None,
                              mailing_id: str | None, message_id: str | None,
                              header_message_id: str | None, since: float | None,
                              limit: int) -> list[Delivery]:
    """Deliveries matching every given filter, newest first."""
    where: list[str] = []
    params: list[Any] = []
    if recipient is not None:
        where.append("lower(d.recipient) = lower(?)")
        params.append(recipient.strip())
    if queue_id is not None:
        where.append("m.queue_id = ?")
        params.append(queue_id.strip().upper())
    for column, value in (("mailing_id", mailing_id), ("message_id", message_id),
                          ("header_message_id", header_message_id)):
        if value is not None:
            where.append(f"lower(m.{column}) = lower(?)")
            params.append(value)
    if since is not None:
        where.append("d.created_at >= ?")
        params.append(since)
    statement = sql.SELECT_DELIVERIES
    if where:
        statement += "\nWHERE " + " AND ".join(where)
    statement += "\nORDER BY d.created_at DESC, d.delivery_id DESC LIMIT ?"
    await txn.execute(statement, (*params, limit))
    return [delivery_from_row(row) for row in txn.fetchall()]


async def events_txn(txn: Txn, delivery_id: int) -> list[Event]:
    """Every event of a delivery, in order."""
    await txn.execute(sql.SELECT_EVENTS, (delivery_id,))
    return [event_from_row(row) for row in txn.fetchall()]


async def events_after_txn(txn: Txn, after_event_id: int, limit: int) -> list[EventRecord]:
    """Events with ids above ``after_event_id``, in id order, with their ids."""
    if limit <= 0:
        return []
    await txn.execute(sql.SELECT_EVENTS_AFTER, (after_event_id, limit))
    return [
        EventRecord(event=event_from_row((*row[:20], *row[28:32])), queue_id=row[20],
                    recipient=row[21], sender=row[22], mailing_id=row[23], message_id=row[24],
                    header_message_id=row[25], delivery_state=row[26],
                    delivery_created_at=row[27])
        for row in txn.fetchall()
    ]


async def outcomes_txn(txn: Txn, after_delivery_id: int, limit: int, state: str | None,
                       mailing_id: str | None, stream: str | None = None) -> list[Outcome]:
    """One page of outcome records by delivery id."""
    filters = ""
    params: list[Any] = [after_delivery_id]
    if state is not None:
        filters += " AND d.state = ?"
        params.append(str(getattr(state, "value", state)))
    if mailing_id is not None:
        filters += " AND lower(m.mailing_id) = lower(?)"
        params.append(mailing_id)
    if stream is not None:
        # Messages stored before streams existed are in the default stream.
        filters += " AND COALESCE(m.stream, ?) = ?"
        params += [DEFAULT_STREAM, stream]
    await txn.execute(sql.SELECT_OUTCOMES.format(filters=filters), (*params, limit))
    return [outcome_from_row(row) for row in txn.fetchall()]


async def get_message_txn(txn: Txn, queue_id: str) -> StoredMessage | None:
    """A message's envelope and identifiers by queue id."""
    await txn.execute(sql.SELECT_MESSAGE, (queue_id.strip().upper(),))
    row = txn.fetchone()
    if row is None:
        return None
    try:
        metadata = json.loads(row[9]) if row[9] else {}
    except ValueError:
        metadata = {}
    return StoredMessage(
        message_pk=int(row[0]), queue_id=row[1], sender=row[2], mailing_id=row[3],
        message_id=row[4], header_message_id=row[5], size=int(row[6]), source=row[7],
        client=row[8], metadata=metadata if isinstance(metadata, dict) else {},
        created_at=float(row[10]))


async def search_deliveries_txn(txn: Txn, recipient: str | None, queue_id: str | None,
                                mailing_id: str | None, message_id: str | None,
                                state: str | None, domain: str | None, since: float | None,
                                until: float | None, before_delivery_id: int | None,
                                limit: int, stream: str | None = None) -> list[Delivery]:
    """Deliveries matching every filter, by delivery id descending (keyset)."""
    where: list[str] = []
    params: list[Any] = []
    if recipient is not None:
        where.append("lower(d.recipient) = lower(?)")
        params.append(recipient.strip())
    if queue_id is not None:
        where.append("m.queue_id = ?")
        params.append(queue_id.strip().upper())
    for column, value in (("mailing_id", mailing_id), ("message_id", message_id)):
        if value is not None:
            where.append(f"lower(m.{column}) = lower(?)")
            params.append(value.strip())
    if state is not None:
        where.append("d.state = ?")
        params.append(str(getattr(state, "value", state)))
    if domain is not None:
        where.append("d.domain = ?")
        params.append(domain.strip().lower())
    if stream is not None:
        # Messages stored before streams existed are in the default stream.
        where.append("COALESCE(m.stream, ?) = ?")
        params += [DEFAULT_STREAM, stream]
    window, window_params = created_window(since, until, "d.created_at")
    where.append(window)
    params.extend(window_params)
    if before_delivery_id is not None:
        where.append("d.delivery_id < ?")
        params.append(before_delivery_id)
    statement = (sql.SELECT_DELIVERIES + "\nWHERE " + " AND ".join(where)
                 + "\nORDER BY d.delivery_id DESC LIMIT ?")
    await txn.execute(statement, (*params, report_limit(limit)))
    return [delivery_from_row(row) for row in txn.fetchall()]
