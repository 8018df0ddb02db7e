"""Deliveries: claiming due rows, leases, bodies, attempt results, retries."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hurricane.address import domain_of
from hurricane.model import AttemptResult, Delivery, State
from hurricane.outcome import ATTEMPT_STATES, Reason, Source, SuppressionSource
from hurricane.store import sql
from hurricane.store.suppression import dns_failure_txn
from hurricane.store.txn.core import Txn, chunks, delivery_from_row, text_of
from hurricane.store.txn.suppressions import insert_suppression

__all__ = ["select_deliveries", "claim_due_txn", "release_txn", "release_owner_txn",
           "load_body_txn", "check_attempts", "record_attempts_txn", "retry_now_txn",
           "get_delivery_txn"]


async def select_deliveries(txn: Txn, ids: Sequence[int]) -> dict[int, Delivery]:
    """The deliveries of ``ids`` that exist, by id (one query per chunk)."""
    found: dict[int, Delivery] = {}
    for chunk in chunks(ids):
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
    found = await select_deliveries(txn, ids)
    claimed = list(found.values())
    # Same order as the claim: new mail first, then by due time.
    claimed.sort(key=lambda d: (0 if d.attempts == 0 else 1, d.next_attempt_at or 0.0,
                                d.delivery_id))
    return claimed


async def release_txn(txn: Txn, delivery_ids: Sequence[int], owner: str) -> None:
    """Give back leases held by ``owner``."""
    for chunk in chunks(list(delivery_ids)):
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
    for chunk in chunks(sorted({r.delivery_id for r in results})):
        await txn.execute(
            sql.SELECT_DELIVERIES_FOR_WRITE.format(marks=sql.placeholders(len(chunk)),
                                                   for_update=txn.dialect.for_update),
            chunk,
        )
        recipients.update((int(row[0]), row[1]) for row in txn.fetchall())
    # Unknown deliveries (purged, or a caller's bug): nothing to explain.
    known = [r for r in results if r.delivery_id in recipients]

    event_ids: list[int] = []
    for result_chunk in chunks(known, _EVENT_CHUNK):
        params: list[Any] = []
        for r in result_chunk:
            params += [
                r.delivery_id, r.event_kind.value, r.at, State(r.state).value,
                text_of(r.reason), r.hard, r.code, r.status, r.text, r.remote_host,
                r.remote_ip, r.tls, text_of(r.source), r.rule, r.duration, None, None, None,
                None, None, r.source_ip, r.tls_policy_type, r.tls_policy_id, r.tls_result,
                r.explanation,
            ]
        await txn.execute(sql.insert_attempt_events_returning(len(result_chunk)), params)
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
        for pair_chunk in chunks(list(zip(known, values, strict=True)), _EVENT_CHUNK):
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
            await insert_suppression(txn, recipients[r.delivery_id],
                            text_of(r.reason) or Reason.undefined.value, r.at,
                            SuppressionSource.smtp.value, None, event_id)
    return event_ids


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


async def get_delivery_txn(txn: Txn, delivery_id: int) -> Delivery | None:
    """One delivery, or None."""
    return (await select_deliveries(txn, [delivery_id])).get(delivery_id)
