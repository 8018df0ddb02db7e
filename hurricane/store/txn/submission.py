"""Submission: queue ids and the (group-committed) enqueue of messages."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Container, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from hurricane.address import domain_of, fold
from hurricane.model import EnqueuedRecipient, EnqueueResult, NewMessage, State
from hurricane.store import sql
from hurricane.store.suppression import match_scoped_txn
from hurricane.store.txn.core import Row, Txn, chunks
from hurricane.streams import DEFAULT_STREAM

__all__ = ["QUEUE_ID_LENGTH", "new_queue_id", "PreparedMessage", "prepare_message",
           "MESSAGE_CHUNK", "enqueue_batch_txn", "CTE_RECIPIENTS", "enqueue_txn"]


_B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


#: 2024-01-01T00:00:00Z: queue ids count seconds from here (32 bits: 136 years).
_EPOCH = 1704067200


QUEUE_ID_LENGTH = 14


def new_queue_id(now: float | None = None) -> str:
    """A new queue id: 14 upper-case RFC 4648 base32 characters (70 bits).

    The first 32 bits are seconds since 2024 (ids sort roughly by time, which
    helps reading logs), the other 38 are random, so that nodes sharing one
    database need no coordination; the unique index catches the rare
    collision and the caller draws again.
    """
    seconds = int((time.time() if now is None else now) - _EPOCH) & 0xFFFFFFFF
    value = (seconds << 38) | int.from_bytes(os.urandom(5), "big") >> 2
    return "".join(_B32[(value >> shift) & 31] for shift in range(65, -1, -5))


@dataclass(frozen=True)
class PreparedMessage:
    """A message with everything that can fail outside the database done.

    Prepared on the caller's side before it joins a group commit, so that a
    bad message (metadata that is not JSON) fails alone, not its batch.
    """

    message: NewMessage
    metadata_json: str
    now: float


def prepare_message(message: NewMessage, now: float) -> PreparedMessage:
    """Validate and serialise a message for :func:`enqueue_txn`.

    Raises:
        ValueError: no recipients, or metadata that JSON cannot encode.
    """
    if not message.recipients:
        raise ValueError("a message needs at least one recipient")
    try:
        metadata_json = json.dumps(message.metadata, sort_keys=True)
    except (TypeError, ValueError) as e:
        raise ValueError(f"message metadata is not JSON-serialisable: {e}") from e
    return PreparedMessage(message, metadata_json, now)


#: Messages per multi-row INSERT (12 parameters each: under SQLite's old 999).
MESSAGE_CHUNK = 80


def _draws(batch: Sequence[PreparedMessage], stored: Container[int]
           ) -> Iterator[dict[str, int]]:
    """Fresh queue ids for the messages not yet ``stored``, a chunk at a time.

    A collision (unique index, ON CONFLICT DO NOTHING) stores no row for
    that message, so the next round draws it again; eight rounds at most.
    """
    for _ in range(8):
        todo = [i for i in range(len(batch)) if i not in stored]
        if not todo:
            return
        for chunk in chunks(todo, MESSAGE_CHUNK):
            yield {new_queue_id(batch[i].now): i for i in chunk}


def _message_params(queue_id: str, prepared: PreparedMessage) -> list[Any]:
    """The 12 parameters of one message's row (``sql._MESSAGE_VALUES``)."""
    m = prepared.message
    return [queue_id, m.sender, m.mailing_id, m.message_id, m.header_message_id,
            len(m.body), m.body, m.source, m.client, prepared.metadata_json, prepared.now,
            m.stream]


async def enqueue_batch_txn(txn: Txn, batch: Sequence[PreparedMessage]) -> list[EnqueueResult]:
    """Store several messages, their delivery rows and first events.

    Set-based, so that a group commit costs a few statements per batch rather
    than per message: one suppression look-up, multi-row inserts for
    messages and deliveries, one INSERT ... SELECT for the events and one
    SELECT for the new delivery ids. Where statements are round trips
    (PostgreSQL), all of that is one statement (:func:`_enqueue_batch_cte`).
    """
    if txn.dialect.round_trips and \
            sum(len(p.message.recipients) for p in batch) <= CTE_RECIPIENTS:
        return await _enqueue_batch_cte(txn, batch)
    # Stream, mailing and domain entries (issue 20): one more look-up.
    scoped = await match_scoped_txn(txn, [
        (r.address, p.message.stream, p.message.mailing_id)
        for p in batch for r in p.message.recipients], batch[0].now if batch else 0.0)
    keys = sorted({fold(r.address) for p in batch for r in p.message.recipients})
    suppressed: dict[str, str] = {}
    for key_chunk in chunks(keys):
        await txn.execute(sql.SELECT_SUPPRESSED_IN.format(sql.placeholders(len(key_chunk))),
                          key_chunk)
        suppressed.update((row[0], row[1]) for row in txn.fetchall())
    # What stops each recipient, in batch order: (reason, the event's text).
    stops: list[tuple[str, str] | None] = []
    position = 0
    for p in batch:
        for r in p.message.recipients:
            reason = suppressed.get(fold(r.address))
            match = scoped[position]
            position += 1
            stops.append((reason, sql.GLOBAL_ENTRY_TEXT) if reason is not None else
                         (match.reason, match.text) if match is not None else None)

    # Messages, each under a queue id drawn until unique (see _draws).
    message_pks: dict[int, tuple[str, int]] = {}
    for drawn in _draws(batch, message_pks):
        params: list[Any] = []
        for queue_id, i in drawn.items():
            params += _message_params(queue_id, batch[i])
        await txn.execute(sql.insert_messages(len(drawn)), params)
        for message_pk, queue_id in txn.fetchall():
            message_pks[drawn[queue_id]] = (queue_id, int(message_pk))
    if len(message_pks) < len(batch):  # pragma: no cover - 38 random bits, 8 times
        raise RuntimeError("could not allocate unique queue ids")

    rows = []
    stop_of = iter(stops)
    for i, prepared in enumerate(batch):
        message_pk, now = message_pks[i][1], prepared.now
        for recipient in prepared.message.recipients:
            stop = next(stop_of)
            state = State.queued if stop is None else State.suppressed
            rows.append((
                message_pk, recipient.address, domain_of(recipient.address), state.value,
                None if stop is None else stop[0], now if state is State.queued else None,
                recipient.orcpt, now, now, None if stop is None else stop[1],
            ))
    await txn.insert_rows("deliveries", sql.DELIVERY_INSERT_COLUMNS, rows)
    pks = [pk for _, pk in message_pks.values()]
    ids: dict[int, list[int]] = {pk: [] for pk in pks}
    for chunk in chunks(pks):
        marks = sql.placeholders(len(chunk))
        await txn.execute(sql.INSERT_ENQUEUE_EVENTS.format(marks), chunk)
        # Rows were inserted in recipient order, so ascending ids map back
        # to recipients by position within each message.
        await txn.execute(sql.SELECT_DELIVERY_IDS_OF_MESSAGES.format(marks), chunk)
        for delivery_id, message_pk in txn.fetchall():
            ids[int(message_pk)].append(int(delivery_id))

    results = []
    stop_of = iter(stops)
    for i, prepared in enumerate(batch):
        queue_id, message_pk = message_pks[i]
        recipients = []
        for delivery_id, recipient in zip(ids[message_pk], prepared.message.recipients,
                                          strict=True):
            stop = next(stop_of)
            state = State.queued if stop is None else State.suppressed
            recipients.append(EnqueuedRecipient(delivery_id, recipient.address, state,
                                                None if stop is None else stop[0]))
        results.append(EnqueueResult(queue_id, message_pk, tuple(recipients)))
    return results


#: Recipients in one batch at most for the one-statement enqueue; a larger
#: batch (a message to thousands) takes the step-by-step path.
CTE_RECIPIENTS = 2000


async def _enqueue_batch_cte(txn: Txn, batch: Sequence[PreparedMessage]
                             ) -> list[EnqueueResult]:
    """:func:`enqueue_batch_txn` as one statement per chunk of messages.

    Where the engine allows INSERT ... RETURNING inside WITH (PostgreSQL), the
    suppression look-up, the messages, the deliveries and their first
    events are one round trip instead of five. Same rows, same results.
    """
    # One statement stores whole messages (the message, its deliveries and
    # their events) or none: when the batch is one statement it needs no
    # transaction block. A larger batch keeps it: its callers all get the
    # same answer, and chunks committed one by one before a failing one
    # would be delivered and, answered 451, submitted again. (A queue-id
    # redraw is a second statement after a committed first: a failure
    # exactly then makes duplicates, never a loss.)
    if len(batch) <= MESSAGE_CHUNK:
        txn.standalone()
    results: dict[int, EnqueueResult] = {}
    for drawn in _draws(batch, results):
        keys = sorted({k for i in drawn.values() for r in batch[i].message.recipients
                       for k in (fold(r.address), domain_of(fold(r.address)))})
        messages: list[Any] = []
        recipients: list[Any] = []
        for queue_id, i in drawn.items():
            m, now = batch[i].message, batch[i].now
            messages += _message_params(queue_id, batch[i])
            stream_scope = f"stream:{m.stream or DEFAULT_STREAM}"
            mailing_scope = f"mailing:{m.mailing_id}" if m.mailing_id else None
            for position, r in enumerate(m.recipients):
                recipients += [queue_id, position, r.address, domain_of(r.address),
                               fold(r.address), r.orcpt, now, stream_scope, mailing_scope]
        # Prepared: PostgreSQL parses and plans this CTE in ~0.6 ms,
        # longer than it takes to run it; each batch shape is parsed
        # once per connection (and, after five runs, planned once).
        await txn.execute(
            sql.enqueue_cte(len(keys), len(drawn), len(recipients) // 9),
            [*keys, *keys, batch[0].now, *messages, *recipients], prepare=True)
        rows: dict[str, list[Row]] = {}
        for row in txn.fetchall():  # in delivery id order: recipient order
            rows.setdefault(row[1], []).append(row)
        for queue_id, got in rows.items():
            i = drawn[queue_id]
            recipients_out = tuple(
                EnqueuedRecipient(int(delivery_id), r.address, State(state), reason)
                for (delivery_id, _, _, state, reason), r in zip(
                    got, batch[i].message.recipients, strict=True))
            results[i] = EnqueueResult(queue_id, int(got[0][2]), recipients_out)
    if len(results) < len(batch):  # pragma: no cover - 38 random bits, 8 times
        raise RuntimeError("could not allocate unique queue ids")
    return [results[i] for i in range(len(batch))]


async def enqueue_txn(txn: Txn, prepared: PreparedMessage) -> EnqueueResult:
    """Store one message (a batch of one)."""
    return (await enqueue_batch_txn(txn, [prepared]))[0]
