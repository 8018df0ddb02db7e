"""Returned mail: storing it before the 250, its analysis, retention."""

from __future__ import annotations

from collections.abc import Container, Iterable, Sequence
from typing import Any

from hurricane.decisions import decide_bounce, suppression_source
from hurricane.model import (
    BounceEvent,
    CorrelationKey,
    EventKind,
    ReturnedMessage,
    ReturnedRecipient,
    State,
    StoredBounce,
)
from hurricane.store import sql
from hurricane.store.interface import BounceRecord
from hurricane.store.suppression import GLOBAL, add_suppression_txn, message_stream_txn
from hurricane.store.txn.core import Txn, chunks, opt_int, text_of
from hurricane.streams import DEFAULT_STREAM

__all__ = ["store_bounce_txn", "store_bounces_txn", "pending_bounces_txn", "load_bounces",
           "bounce_analysis_txn", "load_bounce_txn", "recorded_idem_key", "record_bounce_txn",
           "record_bounces_txn", "mark_bounce_failed_txn", "purge_bounces_txn"]


async def store_bounce_txn(txn: Txn, message: ReturnedMessage) -> int:
    """Store a returned message as pending; return its id."""
    return (await store_bounces_txn(txn, [message]))[0]


async def store_bounces_txn(txn: Txn, messages: Sequence[ReturnedMessage]) -> list[int]:
    """Store several returned messages as pending (one group commit); their ids in order.

    One INSERT per message (the raw bytes once, whatever the number of
    recipients), then one multi-row INSERT for every envelope recipient of
    the batch: the statements are cheap, the commit (fsync) is what the
    batch saves.
    """
    ids: list[int] = []
    recipients: list[tuple[Any, ...]] = []
    for message in messages:
        envelope = message.envelope()
        first = envelope[0]
        await txn.execute(sql.INSERT_BOUNCE, (
            message.received_at, message.mail_from, first.address,
            next((r.delivery_id for r in envelope if r.delivery_id is not None), None),
            message.client, message.raw,
        ))
        row = txn.fetchone()
        assert row is not None
        bounce_id = int(row[0])
        ids.append(bounce_id)
        recipients += [(bounce_id, position, r.address, r.delivery_id, bool(r.per_message))
                       for position, r in enumerate(envelope)]
    await txn.insert_rows("bounce_recipients", sql.BOUNCE_RECIPIENT_COLUMNS, recipients)
    return ids


async def pending_bounces_txn(txn: Txn, limit: int) -> list[int]:
    """Ids of returned messages not analyzed yet, oldest first."""
    await txn.execute(sql.SELECT_PENDING_BOUNCES, (limit,))
    return [int(row[0]) for row in txn.fetchall()]


def _stored_bounce(row: Sequence[Any], recipients: Sequence[ReturnedRecipient]
                   ) -> StoredBounce:
    return StoredBounce(
        bounce_id=int(row[0]), raw=bytes(row[1]), mail_from=row[2], rcpt_to=row[3],
        received_at=row[4], delivery_id=opt_int(row[5]), status=row[6], category=row[7],
        correlation=row[8], recipients=tuple(recipients), purged_at=row[9],
    )


async def load_bounces(txn: Txn, ids: Sequence[int]) -> dict[int, StoredBounce]:
    """The stored returned messages of ``ids`` that exist, by id (one query per chunk)."""
    found: dict[int, StoredBounce] = {}
    for chunk in chunks(ids):
        marks = sql.placeholders(len(chunk))
        await txn.execute(sql.SELECT_BOUNCE + f"bounce_id IN ({marks})", chunk)
        rows = txn.fetchall()
        if not rows:
            continue
        await txn.execute(sql.SELECT_BOUNCE_RECIPIENTS.format(marks), chunk)
        envelopes: dict[int, list[ReturnedRecipient]] = {}
        for bounce_id, _, address, delivery_id, per_message in txn.fetchall():
            envelopes.setdefault(int(bounce_id), []).append(
                ReturnedRecipient(address, opt_int(delivery_id), bool(per_message)))
        for row in rows:
            bounce = _stored_bounce(row, envelopes.get(int(row[0]), ()))
            found[bounce.bounce_id] = bounce
    return found


async def bounce_analysis_txn(txn: Txn, bounce_id: int) -> str | None:
    """The analysis JSON of one returned message (None when there is none)."""
    await txn.execute(sql.SELECT_BOUNCE_ANALYSIS, (bounce_id,))
    row = txn.fetchone()
    return None if row is None or row[0] is None else str(row[0])


async def load_bounce_txn(txn: Txn, bounce_id: int) -> StoredBounce | None:
    """One stored returned message."""
    return (await load_bounces(txn, [bounce_id])).get(bounce_id)


def recorded_idem_key(event: BounceEvent) -> str | None:
    """The key an event is recorded once under, per delivery, in every engine.

    An event matched by a weak key changes nothing; one matched by a verified
    key may. Were both recorded under one key, whichever came first would make
    the other a no-op, so a copy of a report sent to postmaster (or a forgery
    with the same bytes) recorded first would silently cancel the real,
    verified one (issue 23's second review). Unverified events get a key of
    their own; verified ones keep the key as given, so a replay of a message
    recorded before this change still counts once.
    """
    if event.idem_key is None or CorrelationKey.is_verified(event.correlation):
        return event.idem_key
    return event.idem_key + "/unverified"


#: What recording reads of a delivery: its recipient, state and attempts.
_Target = tuple[str, State, int]


async def _deliveries_for_write(txn: Txn, ids: Iterable[int]) -> dict[int, _Target]:
    """The deliveries of ``ids`` that exist, read (locked on PostgreSQL) at once."""
    found: dict[int, _Target] = {}
    for chunk in chunks(sorted(set(ids))):
        await txn.execute(sql.SELECT_BOUNCE_TARGETS_FOR_WRITE.format(
            marks=sql.placeholders(len(chunk)), for_update=txn.dialect.for_update), chunk)
        for delivery_id, recipient, state, attempts in txn.fetchall():
            found[int(delivery_id)] = (recipient, State(state), int(attempts))
    return found


async def record_bounce_txn(txn: Txn, bounce_id: int, events: Sequence[BounceEvent],
                            category: str, correlation: str | None, analysis: str,
                            complaint_global: Container[str] = frozenset(),
                            targets: dict[int, _Target] | None = None) -> list[int]:
    """Record the analysis of a returned message; see IOutcomeStore.record_bounce.

    A complaint suppresses the address for its message's stream only, unless
    that stream is in ``complaint_global`` (issue 20); a hard bounce globally.

    ``targets``: the deliveries the events name, as :func:`_deliveries_for_write`
    read them for a whole batch (one statement, not one per event); kept up
    to date here as events move them, so that each event meets its
    delivery's state as if read just before it.
    """
    await txn.execute(sql.MARK_BOUNCE_ANALYZED, (category, correlation, analysis, bounce_id))
    if targets is None:
        targets = await _deliveries_for_write(txn, (ev.delivery_id for ev in events))
    event_ids: list[int] = []
    for ev in events:
        kind = EventKind(ev.kind)
        target_row = targets.get(ev.delivery_id)
        if target_row is None:
            continue
        recipient, state, attempts = target_row
        decision = decide_bounce(ev, state, attempts)
        target = decision.target
        await txn.execute(sql.INSERT_EVENT_IDEMPOTENT, (
            ev.delivery_id, kind.value, ev.at, text_of(target), text_of(ev.reason),
            decision.hard, ev.code, ev.status, ev.text, ev.remote_host, None, None,
            text_of(ev.source), ev.rule, None, ev.bounce_id, ev.feedback_type,
            text_of(ev.correlation), recorded_idem_key(ev), decision.note,
        ))
        event_row = txn.fetchone()
        if event_row is None:
            continue  # already recorded under this idem_key
        event_id = int(event_row[0])
        event_ids.append(event_id)
        if target is State.bounced:
            await txn.execute(sql.MOVE_TO_BOUNCED, (
                text_of(ev.reason), decision.hard, ev.code, ev.status, ev.text, ev.remote_host,
                ev.at, ev.at, ev.delivery_id, state.value,
            ))
            targets[ev.delivery_id] = (recipient, target, attempts)
        elif target is State.complained:
            await txn.execute(sql.MOVE_TO_COMPLAINED, (
                text_of(ev.reason), decision.hard, ev.at, ev.delivery_id, state.value,
            ))
            targets[ev.delivery_id] = (recipient, target, attempts)
        if decision.suppress:
            scope = GLOBAL
            if kind is EventKind.complaint:
                stream = await message_stream_txn(txn, ev.delivery_id) or DEFAULT_STREAM
                scope = GLOBAL if stream in complaint_global else f"stream:{stream}"
            await add_suppression_txn(txn, scope, recipient, text_of(ev.reason) or kind.value,
                                      ev.at, suppression_source(kind).value, None, event_id)
    return event_ids


async def record_bounces_txn(txn: Txn, records: Sequence[BounceRecord],
                             complaint_global: Container[str] = frozenset()) -> list[list[int]]:
    """Record several analyses in one transaction; see IOutcomeStore.record_bounces.

    Applied in order, so two reports about one delivery end as they would one
    by one.
    """
    targets = await _deliveries_for_write(
        txn, (ev.delivery_id for r in records for ev in r.events))
    return [
        await record_bounce_txn(txn, r.bounce_id, list(r.events), r.category, r.correlation,
                                r.analysis, complaint_global, targets)
        for r in records
    ]


async def mark_bounce_failed_txn(txn: Txn, bounce_id: int, error: str) -> None:
    """Mark a returned message whose analysis failed."""
    await txn.execute(sql.MARK_BOUNCE_FAILED, (error, bounce_id))


async def purge_bounces_txn(txn: Txn, before: float, now: float, limit: int) -> int:
    """Drop the raw bytes of up to ``limit`` finished returned messages received
    before ``before``; see IOutcomeStore.purge_bounces."""
    if limit <= 0:
        return 0
    txn.standalone()  # one statement: atomic by itself
    await txn.execute(sql.PURGE_BOUNCES, (b"", now, before, limit))
    return max(txn.rowcount, 0)
