"""Counts and report aggregates over deliveries (each bounded by a LIMIT)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hurricane.model import DeferredDomain, DomainStats, ReasonCount, State, Summary
from hurricane.outcome import PENDING_STATES
from hurricane.store import sql
from hurricane.store.txn.core import MAX_REPORT_ROWS, Txn, created_window, report_limit

__all__ = ["make_summary", "summary_txn", "queue_depth_txn", "timeseries_txn", "top_domains_txn",
           "bounce_reasons_txn", "deferred_by_domain_txn", "oldest_pending_txn",
           "mailing_summary_txn"]


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


async def timeseries_txn(txn: Txn, since: float, until: float,
                         bucket_seconds: float) -> list[tuple[float, dict[str, int]]]:
    """Deliveries created in [since, until) per bucket and current state."""
    if bucket_seconds <= 0:
        raise ValueError("bucket_seconds must be positive")
    where, params = created_window(since, until)
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
    where, params = created_window(since, until)
    await txn.execute(sql.TOP_DOMAINS.format(where=where), (*params, report_limit(limit)))
    found = []
    for row in txn.fetchall():
        by_state = {state: int(n) for state, n in zip(sql.ALL_STATES, row[2:], strict=False) if n}
        found.append(DomainStats(domain=row[0], total=int(row[1]), by_state=by_state))
    return found


async def bounce_reasons_txn(txn: Txn, since: float | None, until: float | None,
                             limit: int) -> list[ReasonCount]:
    """Failed and bounced deliveries created in the window, by reason."""
    where, params = created_window(since, until)
    await txn.execute(sql.BOUNCE_REASONS.format(where=where), (*params, report_limit(limit) * 2))
    counts: dict[str, list[int]] = {}
    for reason, state, count in txn.fetchall():
        pair = counts.setdefault(reason, [0, 0])
        pair[0 if state == State.failed.value else 1] += int(count)
    found = [ReasonCount(reason, sync, async_) for reason, (sync, async_) in counts.items()]
    found.sort(key=lambda r: (-r.total, r.reason))
    return found[:report_limit(limit)]


async def deferred_by_domain_txn(txn: Txn, limit: int) -> list[DeferredDomain]:
    """The deferred queue grouped by destination domain, largest first."""
    await txn.execute(sql.DEFERRED_BY_DOMAIN, (report_limit(limit),))
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
