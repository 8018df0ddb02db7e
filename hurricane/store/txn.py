"""Transaction functions shared by the SQLite and PostgreSQL engines.

Each ``*_txn`` function (Synapse's naming) receives an open transaction and
does one domain operation with the SQL of :mod:`hurricane.store.sql`. They
are coroutines over the small :class:`Txn` protocol:

- on PostgreSQL, ``Txn.execute`` awaits txpostgres (no threads);
- on SQLite, ``Txn.execute`` runs the statement synchronously in the adbapi
  pool thread and never suspends, so the engine drives the coroutine to its
  end with a single ``send(None)`` (see :func:`run_sync`).

Writing the semantics once keeps the two engines identical, which is what
the contract tests check; only the engine-specific glue (connections,
commit, error mapping) differs.
"""

from __future__ import annotations

import enum
import json
import os
import time
from collections.abc import Awaitable, Callable, Container, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from hurricane.address import domain_of, fold
from hurricane.decisions import decide_bounce, suppression_source
from hurricane.model import (
    AttemptResult,
    BounceEvent,
    CorrelationKey,
    DeferredDomain,
    Delivery,
    DomainStats,
    EnqueuedRecipient,
    EnqueueResult,
    Event,
    EventKind,
    EventRecord,
    NewMessage,
    Outcome,
    ReasonCount,
    ReturnedMessage,
    ReturnedRecipient,
    State,
    StoredBounce,
    StoredMessage,
    Summary,
    Suppression,
)
from hurricane.outcome import ATTEMPT_STATES, PENDING_STATES, Reason, Source, SuppressionSource
from hurricane.store import sql
from hurricane.store.interface import BounceRecord
from hurricane.store.sql import Dialect
from hurricane.store.suppression import (
    GLOBAL,
    add_suppression_txn,
    dns_failure_txn,
    match_scoped_txn,
    message_stream_txn,
)
from hurricane.streams import DEFAULT_STREAM

__all__ = ["Txn", "PreparedMessage", "prepare_message", "new_queue_id", "run_sync",
           "recorded_idem_key"]

T = TypeVar("T")
Row = tuple[Any, ...]


class Txn(Protocol):
    """What a transaction function may do: the engine provides it."""

    dialect: Dialect

    async def execute(self, statement: str, params: Sequence[Any] = (), *,
                      prepare: bool = False) -> None:
        """Run one statement written with ``?`` placeholders.

        ``prepare`` marks a statement run often with this exact text: an
        engine may plan it once per connection (PostgreSQL: PREPARE and
        EXECUTE; SQLite's module caches its statements anyway). Its
        parameters then need types the statement itself determines (a
        bare ``?`` in VALUES is text: CAST it where that matters).
        """

    async def insert_rows(self, table: str, columns: Sequence[str],
                          rows: Sequence[Sequence[Any]]) -> None:
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


TxnFunction = Callable[..., Awaitable[T]]


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


# -- identifiers --------------------------------------------------------------

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


# -- row conversion -----------------------------------------------------------

def _bool(value: Any) -> bool:
    return bool(value)


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def delivery_from_row(row: Row) -> Delivery:
    """A :class:`Delivery` from a row of ``sql.SELECT_DELIVERIES``."""
    return Delivery(
        delivery_id=int(row[0]), message_pk=int(row[1]), queue_id=row[2], sender=row[3],
        recipient=row[4], domain=row[5], state=State(row[6]), reason=row[7],
        hard=_bool(row[8]), attempts=int(row[9]), next_attempt_at=row[10],
        code=_opt_int(row[11]), status=row[12], text=row[13], remote_host=row[14],
        mailing_id=row[15], message_id=row[16], header_message_id=row[17], orcpt=row[18],
        created_at=row[19], updated_at=row[20], delivered_at=row[21], bounced_at=row[22],
        lease_owner=row[23], lease_until=row[24], stream=row[25],
    )


def event_from_row(row: Row) -> Event:
    """An :class:`Event` from a row of ``sql.SELECT_EVENTS``."""
    return Event(
        event_id=int(row[0]), delivery_id=int(row[1]), kind=EventKind(row[2]), at=row[3],
        state=None if row[4] is None else State(row[4]), reason=row[5], hard=_bool(row[6]),
        code=_opt_int(row[7]), status=row[8], text=row[9], remote_host=row[10],
        remote_ip=row[11], tls=row[12], source=row[13], rule=row[14], duration=row[15],
        bounce_id=_opt_int(row[16]), feedback_type=row[17], correlation=row[18],
        note=row[19],
    )


def outcome_from_row(row: Row) -> Outcome:
    """An :class:`Outcome` from a row of ``sql.SELECT_OUTCOMES``."""
    return Outcome(
        queue_id=row[0], delivery_id=int(row[1]), recipient=row[2], state=row[3],
        reason=row[4], hard=_bool(row[5]), code=_opt_int(row[6]), status=row[7],
        text=row[8], attempts=int(row[9]), mailing_id=row[10], message_id=row[11],
        created_at=row[12], updated_at=row[13], remote_host=row[14],
        delivered_at=row[15], bounced_at=row[16], stream=row[17] or DEFAULT_STREAM,
    )


def suppression_from_row(row: Row) -> Suppression:
    """A :class:`Suppression` from a row with ``sql.SUPPRESSION_COLUMNS``."""
    return Suppression(address=row[0], reason=row[1], created_at=row[2], source=row[3],
                       event_id=_opt_int(row[4]), note=row[5])


# -- submission ---------------------------------------------------------------

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


#: Parameters per IN (...) list: below SQLite's historical 999 limit.
_CHUNK = 500


def _chunks(items: Sequence[T], size: int = _CHUNK) -> list[Sequence[T]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


#: Messages per multi-row INSERT (12 parameters each: under SQLite's old 999).
_MESSAGE_CHUNK = 80


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
        for chunk in _chunks(todo, _MESSAGE_CHUNK):
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
            sum(len(p.message.recipients) for p in batch) <= _CTE_RECIPIENTS:
        return await _enqueue_batch_cte(txn, batch)
    # Stream, mailing and domain entries (issue 20): one more look-up.
    scoped = await match_scoped_txn(txn, [
        (r.address, p.message.stream, p.message.mailing_id)
        for p in batch for r in p.message.recipients], batch[0].now if batch else 0.0)
    keys = sorted({fold(r.address) for p in batch for r in p.message.recipients})
    suppressed: dict[str, str] = {}
    for key_chunk in _chunks(keys):
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
    for chunk in _chunks(pks):
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
_CTE_RECIPIENTS = 2000


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
    if len(batch) <= _MESSAGE_CHUNK:
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


async def read_batch_txn(txn: Txn, calls: Sequence[tuple[Callable[..., Any], tuple[Any, ...]]]
                         ) -> list[Any]:
    """Run several read-only transaction functions in one transaction.

    Each ``(func, args)`` is answered as ``func(txn, *args)`` would; their
    results in order. Point reads of one kind (``load_bounce_txn``,
    ``get_delivery_txn``: the bounce processor issues dozens at once) are
    answered together by one ``IN (...)`` query each: on SQLite every
    statement costs a trip through the sqlite3 module with the GIL, on
    PostgreSQL a round trip. The calls are read-only and share one
    transaction, so answering them out of order changes nothing.
    """
    results: list[Any] = [None] * len(calls)
    grouped: dict[Callable[..., Any], list[int]] = {}
    for i, (func, args) in enumerate(calls):
        if func in _POINT_READS and len(args) == 1 and isinstance(args[0], int):
            grouped.setdefault(func, []).append(i)
        else:
            results[i] = await func(txn, *args)
    for func, positions in grouped.items():
        found = await _POINT_READS[func](txn, sorted({calls[i][1][0] for i in positions}))
        for i in positions:
            results[i] = found.get(calls[i][1][0])
    return results


# -- delivery -----------------------------------------------------------------

async def _select_deliveries(txn: Txn, ids: Sequence[int]) -> dict[int, Delivery]:
    found: dict[int, Delivery] = {}
    for chunk in _chunks(ids):
        await txn.execute(
            sql.SELECT_DELIVERIES + f"\nWHERE d.delivery_id IN ({sql.placeholders(len(chunk))})",
            chunk,
        )
        for row in txn.fetchall():
            delivery = delivery_from_row(row)
            found[delivery.delivery_id] = delivery
    return found


async def claim_due_txn(txn: Txn, now: float, owner: str, lease_seconds: float, limit: int,
                        exclude_domains: Sequence[str]) -> list[Delivery]:
    """Lease due deliveries to ``owner``; see IOutcomeStore.claim_due."""
    if limit <= 0:
        return []
    domains = [d.lower() for d in exclude_domains]
    domain_sql = (
        f"\n      AND domain NOT IN ({sql.placeholders(len(domains))})" if domains else ""
    )
    statement = sql.CLAIM_DUE.format(domains=domain_sql, skip_locked=txn.dialect.skip_locked)
    await txn.execute(statement, (now, now, *domains, limit, owner, now + lease_seconds, now))
    ids = [int(row[0]) for row in txn.fetchall()]
    if not ids:
        return []
    found = await _select_deliveries(txn, ids)
    claimed = list(found.values())
    # Same order as the claim: new mail first, then by due time.
    claimed.sort(key=lambda d: (0 if d.attempts == 0 else 1, d.next_attempt_at or 0.0,
                                d.delivery_id))
    return claimed


async def release_txn(txn: Txn, delivery_ids: Sequence[int], owner: str) -> None:
    """Give back leases held by ``owner``."""
    for chunk in _chunks(list(delivery_ids)):
        await txn.execute(sql.RELEASE.format(sql.placeholders(len(chunk))), (*chunk, owner))


async def release_owner_txn(txn: Txn, owner: str) -> int:
    """Give back every lease held by ``owner``; return how many rows."""
    await txn.execute(sql.RELEASE_OWNER, (owner,))
    return max(txn.rowcount, 0)


async def load_body_txn(txn: Txn, message_pk: int) -> bytes | None:
    """The stored bytes of a message, or None."""
    await txn.execute(sql.SELECT_BODY, (message_pk,))
    row = txn.fetchone()
    return None if row is None else bytes(row[0])


async def _suppress(txn: Txn, address: str, reason: str, now: float, source: str | None,
                    note: str | None, event_id: int | None) -> bool:
    await txn.execute(sql.INSERT_SUPPRESSION,
                      (fold(address), reason, source, event_id, note, now))
    return txn.fetchone() is not None


def check_attempts(results: Sequence[AttemptResult]) -> None:
    """Reject results whose state no attempt can produce (a caller's bug).

    Raises:
        ValueError: a result's state is not delivered/deferred/failed/expired.
    """
    for result in results:
        if State(result.state) not in ATTEMPT_STATES:
            raise ValueError(f"an attempt cannot end in state {State(result.state).value!r}")


#: Events per multi-row INSERT (20 parameters each: under SQLite's old 999).
_EVENT_CHUNK = 45


async def record_attempts_txn(txn: Txn, results: Sequence[AttemptResult]) -> list[int]:
    """Record attempt outcomes; see IOutcomeStore.record_attempts.

    Set-based where it can be: one SELECT (FOR UPDATE) for every delivery of
    the batch and one multi-row INSERT per 50 events, then one UPDATE per
    result (each has its own values and lease condition), or, where each
    statement is a round trip (PostgreSQL), one UPDATE ... FROM VALUES per 50
    results. That used to be three statements per result.
    """
    recipients: dict[int, str] = {}
    for chunk in _chunks(sorted({r.delivery_id for r in results})):
        await txn.execute(
            sql.SELECT_DELIVERIES_FOR_WRITE.format(marks=sql.placeholders(len(chunk)),
                                                   for_update=txn.dialect.for_update),
            chunk,
        )
        recipients.update((int(row[0]), row[1]) for row in txn.fetchall())
    # Unknown deliveries (purged, or a caller's bug): nothing to explain.
    known = [r for r in results if r.delivery_id in recipients]

    event_ids: list[int] = []
    for result_chunk in _chunks(known, _EVENT_CHUNK):
        params: list[Any] = []
        for r in result_chunk:
            params += [
                r.delivery_id, r.event_kind.value, r.at, State(r.state).value,
                text_of(r.reason), r.hard, r.code, r.status, r.text, r.remote_host,
                r.remote_ip, r.tls, text_of(r.source), r.rule, r.duration, None, None, None,
                None, None,
            ]
        await txn.execute(sql.insert_events_returning(len(result_chunk)), params)
        got = sorted(int(row[0]) for row in txn.fetchall())
        if len(got) != len(result_chunk):
            raise RuntimeError(f"inserted {len(result_chunk)} events, got {len(got)} ids back")
        event_ids += got

    values = [[
        State(r.state).value, text_of(r.reason), r.hard, r.code, r.status, r.text,
        r.remote_host,
        r.next_attempt_at if State(r.state) is State.deferred else None,
        1 if State(r.state) is State.deferred else 0, r.at,
        r.at if State(r.state) is State.delivered else None, r.delivery_id,
    ] for r in known]
    if txn.dialect.round_trips and len(known) > 1 and \
            len({r.delivery_id for r in known}) == len(known):
        # One statement for all (each result still under its own conditions).
        # A delivery twice in one batch takes the row-by-row path, where the
        # second update sees the first.
        for pair_chunk in _chunks(list(zip(known, values, strict=True)), _EVENT_CHUNK):
            flat: list[Any] = []
            for r, v in pair_chunk:
                flat += [*v, r.owner]
            await txn.execute(sql.record_attempts_from_values(len(pair_chunk)), flat)
    else:
        for r, update in zip(known, values, strict=True):
            statement = sql.RECORD_ATTEMPT
            if r.owner is not None:
                # A node that lost its lease keeps only its event.
                statement += sql.LEASE_HELD_BY
                update.append(r.owner)
            await txn.execute(statement, update)
    for r, event_id in zip(known, event_ids, strict=True):
        if r.suppress and r.reason is Reason.hostunknown and r.source is Source.local:
            # A domain that did not resolve: never the address, and the
            # domain only once confirmed over time (issue 18 item 9).
            await dns_failure_txn(txn, domain_of(recipients[r.delivery_id]), r.at, event_id)
        elif r.suppress:
            await _suppress(txn, recipients[r.delivery_id],
                            text_of(r.reason) or Reason.undefined.value, r.at,
                            SuppressionSource.smtp.value, None, event_id)
    return event_ids


def text_of(word: enum.Enum | str | None) -> str | None:
    """What the SQL stores for a vocabulary word: the member's value (text as it is)."""
    if word is None or isinstance(word, str) and not isinstance(word, enum.Enum):
        return word
    return str(word.value)



async def retry_now_txn(txn: Txn, now: float, queue_id: str | None, domain: str | None,
                        delivery_id: int | None) -> int:
    """Make matching deferred deliveries due now; return how many."""
    where = [f"state = '{State.deferred.value}'"]
    params: list[Any] = []
    if queue_id is not None:
        where.append("message_pk IN (SELECT message_pk FROM messages WHERE queue_id = ?)")
        params.append(queue_id.upper())
    if domain is not None:
        where.append("domain = ?")
        params.append(domain.lower())
    if delivery_id is not None:
        where.append("delivery_id = ?")
        params.append(delivery_id)
    clause = " AND ".join(where)
    await txn.execute(sql.RETRY_EVENTS.format(where=clause), (now, *params))
    await txn.execute(sql.RETRY_NOW.format(where=clause), (now, now, *params))
    return txn.rowcount


# -- returned mail ------------------------------------------------------------

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
        received_at=row[4], delivery_id=_opt_int(row[5]), status=row[6], category=row[7],
        correlation=row[8], recipients=tuple(recipients), purged_at=row[9],
    )


async def _load_bounces(txn: Txn, ids: Sequence[int]) -> dict[int, StoredBounce]:
    found: dict[int, StoredBounce] = {}
    for chunk in _chunks(ids):
        marks = sql.placeholders(len(chunk))
        await txn.execute(sql.SELECT_BOUNCE + f"bounce_id IN ({marks})", chunk)
        rows = txn.fetchall()
        if not rows:
            continue
        await txn.execute(sql.SELECT_BOUNCE_RECIPIENTS.format(marks), chunk)
        envelopes: dict[int, list[ReturnedRecipient]] = {}
        for bounce_id, _, address, delivery_id, per_message in txn.fetchall():
            envelopes.setdefault(int(bounce_id), []).append(
                ReturnedRecipient(address, _opt_int(delivery_id), bool(per_message)))
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
    return (await _load_bounces(txn, [bounce_id])).get(bounce_id)


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


async def record_bounce_txn(txn: Txn, bounce_id: int, events: Sequence[BounceEvent],
                            category: str, correlation: str | None, analysis: str,
                            complaint_global: Container[str] = frozenset()) -> list[int]:
    """Record the analysis of a returned message; see IOutcomeStore.record_bounce.

    A complaint suppresses the address for its message's stream only, unless
    that stream is in ``complaint_global`` (issue 20); a hard bounce globally.
    """
    await txn.execute(sql.MARK_BOUNCE_ANALYZED, (category, correlation, analysis, bounce_id))
    event_ids: list[int] = []
    for ev in events:
        kind = EventKind(ev.kind)
        await txn.execute(
            sql.SELECT_DELIVERY_FOR_WRITE.format(for_update=txn.dialect.for_update),
            (ev.delivery_id,),
        )
        row = txn.fetchone()
        if row is None:
            continue
        recipient, state, attempts = row[0], State(row[1]), int(row[2])
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
        elif target is State.complained:
            await txn.execute(sql.MOVE_TO_COMPLAINED, (
                text_of(ev.reason), decision.hard, ev.at, ev.delivery_id, state.value,
            ))
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
    return [
        await record_bounce_txn(txn, r.bounce_id, list(r.events), r.category, r.correlation,
                                r.analysis, complaint_global)
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


# -- reading ------------------------------------------------------------------

async def get_delivery_txn(txn: Txn, delivery_id: int) -> Delivery | None:
    """One delivery, or None."""
    return (await _select_deliveries(txn, [delivery_id])).get(delivery_id)


#: Point reads that ``read_batch_txn`` answers together: the single-key
#: function -> the same read for many keys (a dict of the rows found).
_ManyRead = Callable[[Txn, Sequence[int]], Awaitable[dict[int, Any]]]
_POINT_READS: dict[Callable[..., Any], _ManyRead] = {
    load_bounce_txn: _load_bounces,
    get_delivery_txn: _select_deliveries,
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
        EventRecord(event=event_from_row(row[:20]), queue_id=row[20], recipient=row[21],
                    sender=row[22], mailing_id=row[23], message_id=row[24],
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


def make_summary(messages: int, counts: Sequence[tuple[str, str | None, int]]) -> Summary:
    """Fold (state, reason, count) rows into a :class:`Summary` (all engines)."""
    by_state: dict[str, int] = {}
    by_reason: dict[str, int] = {}
    for state, reason, count in counts:
        by_state[state] = by_state.get(state, 0) + count
        if reason is not None:
            by_reason[reason] = by_reason.get(reason, 0) + count
    return Summary(
        messages=messages, recipients=sum(by_state.values()), by_state=by_state,
        by_reason=by_reason, sync_failures=by_state.get(State.failed.value, 0),
        async_bounces=by_state.get(State.bounced.value, 0),
        complaints=by_state.get(State.complained.value, 0),
    )


async def summary_txn(txn: Txn, since: float | None, until: float | None) -> Summary:
    """Counts for deliveries created in [since, until)."""
    where = ["1 = 1"]
    params: list[Any] = []
    if since is not None:
        where.append("created_at >= ?")
        params.append(since)
    if until is not None:
        where.append("created_at < ?")
        params.append(until)
    clause = " AND ".join(where)
    await txn.execute(sql.SUMMARY_MESSAGES.format(where=clause), params)
    row = txn.fetchone()
    messages = int(row[0]) if row is not None else 0
    await txn.execute(sql.SUMMARY_COUNTS.format(where=clause), params)
    counts = [(r[0], r[1], int(r[2])) for r in txn.fetchall()]
    return make_summary(messages, counts)


async def queue_depth_txn(txn: Txn) -> dict[str, int]:
    """Deliveries per pending state."""
    depth = {s.value: 0 for s in PENDING_STATES}
    await txn.execute(sql.QUEUE_DEPTH)
    for state, count in txn.fetchall():
        depth[state] = int(count)
    return depth


# -- suppression --------------------------------------------------------------

async def suppress_txn(txn: Txn, address: str, reason: str, now: float, source: str | None,
                       note: str | None, event_id: int | None) -> bool:
    """Add an address; False when it was already there."""
    return await _suppress(txn, address, reason, now, source, note, event_id)


async def unsuppress_txn(txn: Txn, address: str) -> bool:
    """Remove an address; False when it was not there."""
    await txn.execute(sql.DELETE_SUPPRESSION, (fold(address),))
    return bool(txn.fetchall())


async def get_suppression_txn(txn: Txn, address: str) -> Suppression | None:
    """The suppression entry of an address."""
    await txn.execute(sql.SELECT_SUPPRESSION, (fold(address),))
    row = txn.fetchone()
    return None if row is None else suppression_from_row(row)


async def suppressions_txn(txn: Txn, after: str | None, limit: int) -> list[Suppression]:
    """One page of the suppression list by address."""
    await txn.execute(sql.SELECT_SUPPRESSIONS, (fold(after) if after else "", limit))
    return [suppression_from_row(row) for row in txn.fetchall()]


# -- report reads ---------------------------------------------------------------

#: Most rows a report read returns, whatever the caller asks for.
MAX_REPORT_ROWS = 10_000


def _window(since: float | None, until: float | None,
            column: str = "created_at") -> tuple[str, list[Any]]:
    """A WHERE clause (never empty) and its parameters for [since, until)."""
    where = ["1 = 1"]
    params: list[Any] = []
    if since is not None:
        where.append(f"{column} >= ?")
        params.append(since)
    if until is not None:
        where.append(f"{column} < ?")
        params.append(until)
    return " AND ".join(where), params


def _limit(limit: int) -> int:
    return max(0, min(int(limit), MAX_REPORT_ROWS))


async def timeseries_txn(txn: Txn, since: float, until: float,
                         bucket_seconds: float) -> list[tuple[float, dict[str, int]]]:
    """Deliveries created in [since, until) per bucket and current state."""
    if bucket_seconds <= 0:
        raise ValueError("bucket_seconds must be positive")
    where, params = _window(since, until)
    bucket = txn.dialect.floor.format("(created_at - ?) / ?")
    statement = sql.TIMESERIES.format(bucket=bucket, where=where)
    await txn.execute(statement, (since, bucket_seconds, *params,
                                  MAX_REPORT_ROWS * len(sql.ALL_STATES)))
    buckets: dict[int, dict[str, int]] = {}
    for number, state, count in txn.fetchall():
        counts = buckets.setdefault(int(number), {})
        counts[state] = counts.get(state, 0) + int(count)
    return [(since + n * bucket_seconds, buckets[n]) for n in sorted(buckets)]


async def top_domains_txn(txn: Txn, since: float | None, until: float | None,
                          limit: int) -> list[DomainStats]:
    """The destination domains with most deliveries created in the window."""
    where, params = _window(since, until)
    await txn.execute(sql.TOP_DOMAINS.format(where=where), (*params, _limit(limit)))
    found = []
    for row in txn.fetchall():
        by_state = {state: int(n) for state, n in zip(sql.ALL_STATES, row[2:], strict=False) if n}
        found.append(DomainStats(domain=row[0], total=int(row[1]), by_state=by_state))
    return found


async def bounce_reasons_txn(txn: Txn, since: float | None, until: float | None,
                             limit: int) -> list[ReasonCount]:
    """Failed and bounced deliveries created in the window, by reason."""
    where, params = _window(since, until)
    await txn.execute(sql.BOUNCE_REASONS.format(where=where), (*params, _limit(limit) * 2))
    counts: dict[str, list[int]] = {}
    for reason, state, count in txn.fetchall():
        pair = counts.setdefault(reason, [0, 0])
        pair[0 if state == State.failed.value else 1] += int(count)
    found = [ReasonCount(reason, sync, async_) for reason, (sync, async_) in counts.items()]
    found.sort(key=lambda r: (-r.total, r.reason))
    return found[:_limit(limit)]


async def deferred_by_domain_txn(txn: Txn, limit: int) -> list[DeferredDomain]:
    """The deferred queue grouped by destination domain, largest first."""
    await txn.execute(sql.DEFERRED_BY_DOMAIN, (_limit(limit),))
    return [
        DeferredDomain(domain=row[0], count=int(row[1]), oldest_created_at=float(row[2]),
                       next_attempt_at=None if row[3] is None else float(row[3]),
                       last_update=float(row[4]))
        for row in txn.fetchall()
    ]


async def oldest_pending_txn(txn: Txn) -> float | None:
    """Creation time of the oldest queued or deferred delivery."""
    await txn.execute(sql.OLDEST_PENDING)
    row = txn.fetchone()
    return None if row is None or row[0] is None else float(row[0])


async def mailing_summary_txn(txn: Txn, mailing_id: str) -> Summary:
    """Counts for every delivery of a mailing."""
    await txn.execute(sql.MAILING_MESSAGES, (mailing_id,))
    row = txn.fetchone()
    messages = int(row[0]) if row is not None else 0
    await txn.execute(sql.MAILING_COUNTS, (mailing_id,))
    return make_summary(messages, [(r[0], r[1], int(r[2])) for r in txn.fetchall()])


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
    window, window_params = _window(since, until, "d.created_at")
    where.append(window)
    params.extend(window_params)
    if before_delivery_id is not None:
        where.append("d.delivery_id < ?")
        params.append(before_delivery_id)
    statement = (sql.SELECT_DELIVERIES + "\nWHERE " + " AND ".join(where)
                 + "\nORDER BY d.delivery_id DESC LIMIT ?")
    await txn.execute(statement, (*params, _limit(limit)))
    return [delivery_from_row(row) for row in txn.fetchall()]
