"""The report's reads of issue 18: the mailings index, settling, the deferred queue pages.

SQL text and ``*_txn`` functions in the style of :mod:`hurricane.store.sql`
and :mod:`hurricane.store.txn`, kept in a module of their own: they only add
to the store (new statements over migration 0007's ``mailings`` and
``report_marks`` tables and its partial indexes), and change nothing the
engines already do. Each one is bounded on a large store (docs/report.md):

- registering mailings reads only the messages stored since the last look
  (by primary key, over a covering partial index);
- the index reads one stored row per mailing it shows;
- a mailing's figures are aggregates over that mailing's deliveries only
  (the mailing id index, then the deliveries of its messages);
- the settling sample is the most recent late outcomes, read from a
  partial index holding only them.

State words come from :class:`hurricane.model.State` (STYLE.md habit 18):
the SQL text is built once, at import.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hurricane.model import ReasonCount, State
from hurricane.store import sql
from hurricane.store.interface import (
    DeferredQueueDomain,
    LateOutcome,
    MailingEntry,
    MailingOutcomes,
    MailingRollup,
    SettleCounts,
)
from hurricane.store.txn.core import MAX_REPORT_ROWS, Row, Txn

__all__ = ["DISCOVERY_MARGIN", "FINAL_OUTCOME_STATES", "MAX_LATE_SAMPLE", "STATE_COLUMNS",
           "created_span_txn", "deferred_domains_txn", "discover_mailings_txn",
           "late_outcomes_txn", "mailing_bounce_reasons_txn", "mailing_latencies_txn",
           "mailing_outcomes_txn", "mailings_txn", "outcome_series_txn",
           "save_mailing_rollups_txn", "suppression_causes_txn", "suppression_count_txn"]


def _words(*states: State) -> str:
    """States as a SQL list of literals: ``'bounced', 'complained'`` (no user input)."""
    return ", ".join(f"'{s.value}'" for s in states)


#: States no later event moves: a recipient in one of them has its final
#: outcome. (Delivered is final only once late bounces became improbable:
#: the settling delay.)
FINAL_OUTCOME_STATES = (State.failed, State.expired, State.suppressed, State.bounced,
                        State.complained, State.cancelled)
#: The late outcomes: the remote accepted, then an NDR or a complaint came.
LATE_STATES = (State.bounced, State.complained)
#: The mailings table has a count column per state, named as the state.
STATE_COLUMNS = tuple(s.value for s in State)
#: Message keys re-read below the discovery mark: on PostgreSQL a message may
#: commit after messages with larger keys (keys are drawn at INSERT, rows
#: become visible at COMMIT), so the mark is never trusted to the last key.
#: Group commit keeps a few hundred messages in flight per node; this covers
#: far more than that, and re-reading a known mailing changes nothing.
DISCOVERY_MARGIN = 5000
#: Most late outcomes one sample reads.
MAX_LATE_SAMPLE = 50_000
#: Mailings per multi-row INSERT (3 parameters each).
_MAILING_CHUNK = 300
#: Parameters per IN (...) list: below SQLite's historical 999 limit.
_CHUNK = 500
_MAILINGS_MARK = "mailings"

_FINAL = _words(*FINAL_OUTCOME_STATES)
_LATE = _words(*LATE_STATES)
_DELIVERED = _words(State.delivered)
_DEFERRED = _words(State.deferred)

# -- SQL ----------------------------------------------------------------------

SELECT_REPORT_MARK = "SELECT value FROM report_marks WHERE name = ?"

UPSERT_REPORT_MARK = """
INSERT INTO report_marks (name, value) VALUES (?, ?)
ON CONFLICT (name) DO UPDATE SET value = excluded.value"""

# New messages with a mailing id, by primary key (the covering partial index
# messages_mailing_discovery: no body is read).
SELECT_NEW_MAILING_MESSAGES = """
SELECT message_pk, mailing_id, created_at FROM messages
WHERE mailing_id IS NOT NULL AND message_pk > ?
ORDER BY message_pk LIMIT ?"""

_REGISTER_MAILINGS = """
INSERT INTO mailings (mailing_key, mailing_id, first_at) VALUES {}
ON CONFLICT (mailing_key) DO NOTHING"""


def register_mailings(n: int) -> str:
    """A multi-row INSERT of ``n`` (mailing key, mailing id, first_at) rows, known ones kept."""
    return _REGISTER_MAILINGS.format(", ".join(["(?, ?, ?)"] * n))


#: The stored figures of a mailing, in the order of SELECT_MAILINGS after
#: mailing_key, mailing_id and first_at.
ROLLUP_COLUMNS = ("computed_at", "last_at", "messages", *STATE_COLUMNS, "settled",
                  "settles_at")

SELECT_MAILINGS = (
    "SELECT mailing_key, mailing_id, first_at, " + ", ".join(ROLLUP_COLUMNS)
    + "\nFROM mailings\nWHERE {where}\nORDER BY first_at DESC, mailing_key DESC LIMIT ?"
)

# Saving a mailing's figures registers it too (its page may be opened before
# the index has seen it); the first_at of a known mailing is kept.
SAVE_MAILING_ROLLUP = (
    "INSERT INTO mailings (mailing_key, mailing_id, first_at, " + ", ".join(ROLLUP_COLUMNS)
    + ")\nVALUES (" + sql.placeholders(3 + len(ROLLUP_COLUMNS))
    + ")\nON CONFLICT (mailing_key) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in ROLLUP_COLUMNS)
)

MAILING_MESSAGE_COUNT = """
SELECT COUNT(*), MIN(mailing_id) FROM messages WHERE lower(mailing_id) = lower(?)"""


def settle_delay(domains: int) -> str:
    """The settling delay of a delivery row ``d`` as SQL: ``domains`` (domain,
    seconds) parameter pairs, then the default for every other domain."""
    whens = "".join(" WHEN ? THEN CAST(? AS DOUBLE PRECISION)" for _ in range(domains))
    default = "CAST(? AS DOUBLE PRECISION)"
    return f"CASE d.domain{whens} ELSE {default} END" if domains else default


# One mailing's deliveries with each one's settling delay; {delay} is
# settle_delay(n). The outer queries count per state (and per domain).
_MAILING_ROWS = """
SELECT d.domain, d.state, d.created_at, d.delivered_at, {delay} AS delay
FROM messages m JOIN deliveries d ON d.message_pk = m.message_pk
WHERE lower(m.mailing_id) = lower(?)"""

_SETTLED = (
    f"SUM(CASE WHEN {{p}}state IN ({_FINAL}) THEN 1\n"
    f"           WHEN {{p}}state = {_DELIVERED} AND {{p}}delivered_at + {{p}}delay <= ?"
    " THEN 1 ELSE 0 END),\n"
    f"  MAX(CASE WHEN {{p}}state = {_DELIVERED} THEN {{p}}delivered_at + {{p}}delay END)"
)

# Per state: count, first and last creation, last delivery, recipients
# settled at the given time (a final state, or delivered longer ago than
# the delay), and when the last delivered recipient settles.
MAILING_STATE_COUNTS = (
    "SELECT state, COUNT(*), MIN(created_at), MAX(created_at), MAX(delivered_at),\n  "
    + _SETTLED.format(p="") + "\nFROM (" + _MAILING_ROWS + ") x\nGROUP BY state"
)

# The same per (domain, state) for the mailing's largest domains.
MAILING_DOMAIN_COUNTS = (
    "WITH x AS (" + _MAILING_ROWS + "),\n"
    "top AS (SELECT domain FROM x GROUP BY domain ORDER BY COUNT(*) DESC, domain LIMIT ?)\n"
    "SELECT x.domain, x.state, COUNT(*), MAX(x.delivered_at),\n  " + _SETTLED.format(p="x.")
    + "\nFROM x JOIN top ON top.domain = x.domain\nGROUP BY x.domain, x.state"
)

# The most recent late outcomes, newest first: the partial index
# deliveries_late_outcomes (its predicate spelled as the migration does).
# A complained row's updated_at is when the complaint was recorded; a
# bounced one's bounced_at when the NDR was (it stays when a complaint follows).
LATE_OUTCOMES = f"""
SELECT domain, state, COALESCE(bounced_at, updated_at) - delivered_at FROM deliveries
WHERE state IN ({_LATE}) AND delivered_at IS NOT NULL AND updated_at >= ?
ORDER BY updated_at DESC LIMIT ?"""


def latency_bucket(edges: int) -> str:
    """The bucket number of a late outcome's delay among ``edges`` upper edges (parameters):
    0 below the first edge, ``edges`` at or above the last."""
    whens = "".join(f" WHEN lat < CAST(? AS DOUBLE PRECISION) THEN {i}" for i in range(edges))
    return f"CASE{whens} ELSE {edges} END"


# One mailing's late outcomes per delay bucket and state; {{bucket}} is
# latency_bucket(n).
MAILING_LATENCIES = f"""
SELECT {{bucket}} AS bucket, state, COUNT(*) FROM (
    SELECT d.state, COALESCE(d.bounced_at, d.updated_at) - d.delivered_at AS lat
    FROM messages m JOIN deliveries d ON d.message_pk = m.message_pk
    WHERE lower(m.mailing_id) = lower(?) AND d.state IN ({_LATE})
      AND d.delivered_at IS NOT NULL) x
GROUP BY 1, state ORDER BY 1"""

# Deliveries created in [since, until) per bucket counted from an origin
# and current state, for all mail ({join} empty) or one mailing.
OUTCOME_SERIES = """
SELECT {bucket} AS bucket, d.state, COUNT(*) FROM deliveries d{join}
WHERE d.created_at >= ? AND d.created_at < ?{mailing}
GROUP BY 1, d.state ORDER BY 1 LIMIT ?"""

OUTCOME_SERIES_JOIN = " JOIN messages m ON m.message_pk = d.message_pk"
OUTCOME_SERIES_MAILING = " AND lower(m.mailing_id) = lower(?)"

# The first and last creation in a window: one end of deliveries_created
# each ({order} ASC or DESC; MIN and MAX in one statement make SQLite read
# the whole range).
CREATED_END = """
SELECT created_at FROM deliveries WHERE created_at >= ? AND created_at < ?
ORDER BY created_at {order} LIMIT 1"""

MAILING_BOUNCE_REASONS = f"""
SELECT COALESCE(d.reason, 'undefined'), d.state, COUNT(*)
FROM messages m JOIN deliveries d ON d.message_pk = m.message_pk
WHERE lower(m.mailing_id) = lower(?) AND d.state IN ({_words(State.failed, State.bounced)})
GROUP BY 1, d.state ORDER BY 3 DESC LIMIT ?"""

# The deferred queue by domain with the last error of each: the reply of
# its most recently updated deferred delivery (the partial index
# deliveries_deferred_domain narrows each look-up to the domain's rows).
DEFERRED_DOMAINS = f"""
SELECT g.domain, g.n, g.oldest, g.next_at, g.last_update, d.code, d.status, d.text,
       d.remote_host
FROM (SELECT domain, COUNT(*) AS n, MIN(created_at) AS oldest,
             MIN(next_attempt_at) AS next_at, MAX(updated_at) AS last_update
      FROM deliveries WHERE state = {_DEFERRED}
      GROUP BY domain ORDER BY 2 DESC, domain LIMIT ?) g
LEFT JOIN deliveries d ON d.delivery_id = (
    SELECT d2.delivery_id FROM deliveries d2
    WHERE d2.state = {_DEFERRED} AND d2.domain = g.domain
    ORDER BY d2.updated_at DESC, d2.delivery_id DESC LIMIT 1)
ORDER BY g.n DESC, g.domain"""

SELECT_EVENT_DELIVERIES = "SELECT event_id, delivery_id FROM events WHERE event_id IN ({})"

COUNT_SUPPRESSIONS = "SELECT COUNT(*) FROM suppressions"

# -- transaction functions ----------------------------------------------------


def _limit(limit: int, most: int = MAX_REPORT_ROWS) -> int:
    return max(0, min(int(limit), most))


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> list[Sequence[Any]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


async def discover_mailings_txn(txn: Txn, limit: int) -> int:
    """Register new mailings from messages past the mark; see IOutcomeStore.discover_mailings."""
    await txn.execute(SELECT_REPORT_MARK, (_MAILINGS_MARK,))
    row = txn.fetchone()
    mark = int(row[0]) if row is not None else 0
    await txn.execute(SELECT_NEW_MAILING_MESSAGES,
                      (max(0, mark - DISCOVERY_MARGIN), max(0, int(limit)) + DISCOVERY_MARGIN))
    seen: dict[str, tuple[str, float]] = {}
    last = mark
    new = 0
    for message_pk, mailing_id, created_at in txn.fetchall():
        key = str(mailing_id).lower()
        if key not in seen or float(created_at) < seen[key][1]:
            seen[key] = (mailing_id, float(created_at))
        if int(message_pk) > mark:
            new += 1
            last = max(last, int(message_pk))
    for chunk in _chunks(sorted(seen.items()), _MAILING_CHUNK):
        params: list[object] = []
        for key, (mailing_id, first_at) in chunk:
            params += [key, mailing_id, first_at]
        await txn.execute(register_mailings(len(chunk)), params)
    if last > mark:
        await txn.execute(UPSERT_REPORT_MARK, (_MAILINGS_MARK, last))
    return new


def _rollup_from_row(row: Row) -> MailingRollup | None:
    """The stored figures of a SELECT_MAILINGS row (None: never computed)."""
    values = dict(zip(ROLLUP_COLUMNS, row[3:], strict=True))
    if values["computed_at"] is None:
        return None
    by_state = {s: int(values[s]) for s in STATE_COLUMNS if values[s]}
    settles_at = values["settles_at"]
    return MailingRollup(
        mailing_key=row[0], mailing_id=row[1], first_at=float(row[2]),
        computed_at=float(values["computed_at"]),
        last_at=None if values["last_at"] is None else float(values["last_at"]),
        messages=int(values["messages"] or 0), by_state=by_state,
        settled=int(values["settled"] or 0),
        settles_at=None if settles_at is None else float(settles_at))


async def mailings_txn(txn: Txn, before: tuple[float, str] | None,
                       limit: int) -> list[MailingEntry]:
    """One page of registered mailings, newest first (keyset on first_at, key)."""
    where, params = "1 = 1", []
    if before is not None:
        # The first term lets both engines seek in mailings_newest.
        where = "first_at <= ? AND (first_at < ? OR mailing_key < ?)"
        params = [before[0], before[0], before[1]]
    await txn.execute(SELECT_MAILINGS.format(where=where), (*params, _limit(limit)))
    return [MailingEntry(mailing_key=row[0], mailing_id=row[1], first_at=float(row[2]),
                         rollup=_rollup_from_row(row)) for row in txn.fetchall()]


def _delay_params(delays: Mapping[str, float], default_delay: float) -> tuple[str, list[object]]:
    """``settle_delay`` for ``delays`` and its parameters."""
    params: list[object] = []
    for domain, seconds in sorted(delays.items()):
        params += [domain.lower(), float(seconds)]
    params.append(float(default_delay))
    return settle_delay(len(delays)), params


def _settle_counts(rows: Sequence[Row]) -> SettleCounts:
    """Fold (state, count, last delivered, settled, settles at) rows into SettleCounts."""
    by_state: dict[str, int] = {}
    settled = 0
    settles: list[float] = []
    delivered: list[float] = []
    for state, count, last_delivered, settled_n, settles_at in rows:
        by_state[state] = by_state.get(state, 0) + int(count)
        settled += int(settled_n or 0)
        if settles_at is not None:
            settles.append(float(settles_at))
        if last_delivered is not None:
            delivered.append(float(last_delivered))
    return SettleCounts(by_state=by_state, settled=settled,
                        settles_at=max(settles) if settles else None,
                        last_delivered_at=max(delivered) if delivered else None)


async def mailing_outcomes_txn(txn: Txn, mailing_id: str, delays: Mapping[str, float],
                               default_delay: float, now: float,
                               domains: int) -> MailingOutcomes | None:
    """A mailing's recipients by state and settling; see IOutcomeStore.mailing_outcomes."""
    await txn.execute(MAILING_MESSAGE_COUNT, (mailing_id,))
    row = txn.fetchone()
    if row is None or not row[0]:
        return None
    messages, exact_id = int(row[0]), str(row[1])
    delay, delay_params = _delay_params(delays, default_delay)
    await txn.execute(MAILING_STATE_COUNTS.format(delay=delay),
                      (now, *delay_params, mailing_id))
    rows = txn.fetchall()
    first = [float(r[2]) for r in rows if r[2] is not None]
    last = [float(r[3]) for r in rows if r[3] is not None]
    total = _settle_counts([(r[0], r[1], r[4], r[5], r[6]) for r in rows])
    by_domain: list[tuple[str, SettleCounts]] = []
    if domains > 0:
        await txn.execute(MAILING_DOMAIN_COUNTS.format(delay=delay),
                          (*delay_params, mailing_id, _limit(domains), now))
        grouped: dict[str, list[Row]] = {}
        for domain, state, count, last_delivered, settled, settles_at in txn.fetchall():
            grouped.setdefault(domain, []).append(
                (state, count, last_delivered, settled, settles_at))
        by_domain = [(domain, _settle_counts(r)) for domain, r in grouped.items()]
        by_domain.sort(key=lambda item: (-item[1].recipients, item[0]))
    return MailingOutcomes(mailing_id=exact_id, messages=messages,
                           first_at=min(first) if first else None,
                           last_at=max(last) if last else None, total=total,
                           domains=tuple(by_domain))


async def save_mailing_rollups_txn(txn: Txn, rollups: Sequence[MailingRollup]) -> None:
    """Store mailings' figures (upsert by mailing key)."""
    for r in rollups:
        counts = [r.by_state.get(s, 0) for s in STATE_COLUMNS]
        await txn.execute(SAVE_MAILING_ROLLUP, (
            r.mailing_key, r.mailing_id, r.first_at, r.computed_at, r.last_at, r.messages,
            *counts, r.settled, r.settles_at))


async def late_outcomes_txn(txn: Txn, since: float, limit: int) -> list[LateOutcome]:
    """The most recent late outcomes, newest first."""
    await txn.execute(LATE_OUTCOMES, (since, _limit(limit, MAX_LATE_SAMPLE)))
    return [LateOutcome(domain=row[0], state=row[1], seconds=float(row[2]))
            for row in txn.fetchall()]


async def mailing_latencies_txn(txn: Txn, mailing_id: str,
                                edges: Sequence[float]) -> list[tuple[int, str, int]]:
    """A mailing's late outcomes per delay bucket and state."""
    statement = MAILING_LATENCIES.format(bucket=latency_bucket(len(edges)))
    await txn.execute(statement, (*[float(e) for e in edges], mailing_id))
    return [(int(b), state, int(n)) for b, state, n in txn.fetchall()]


async def outcome_series_txn(txn: Txn, since: float, until: float, origin: float,
                             bucket_seconds: float, mailing_id: str | None
                             ) -> list[tuple[float, dict[str, int]]]:
    """Deliveries created in [since, until) per bucket from ``origin`` and state."""
    if bucket_seconds <= 0:
        raise ValueError("bucket_seconds must be positive")
    bucket = txn.dialect.floor.format("(d.created_at - ?) / ?")
    statement = OUTCOME_SERIES.format(
        bucket=bucket, join=OUTCOME_SERIES_JOIN if mailing_id is not None else "",
        mailing=OUTCOME_SERIES_MAILING if mailing_id is not None else "")
    params: list[object] = [origin, bucket_seconds, since, until]
    if mailing_id is not None:
        params.append(mailing_id)
    await txn.execute(statement, (*params, MAX_REPORT_ROWS * len(STATE_COLUMNS)))
    buckets: dict[int, dict[str, int]] = {}
    for number, state, count in txn.fetchall():
        counts = buckets.setdefault(int(number), {})
        counts[state] = counts.get(state, 0) + int(count)
    return [(origin + n * bucket_seconds, buckets[n]) for n in sorted(buckets)]


async def created_span_txn(txn: Txn, since: float, until: float) -> tuple[float, float] | None:
    """First and last creation time in [since, until)."""
    ends = []
    for order in ("ASC", "DESC"):
        await txn.execute(CREATED_END.format(order=order), (since, until))
        row = txn.fetchone()
        if row is None:
            return None
        ends.append(float(row[0]))
    return ends[0], ends[1]


async def mailing_bounce_reasons_txn(txn: Txn, mailing_id: str,
                                     limit: int) -> list[ReasonCount]:
    """A mailing's failed and bounced recipients by reason, most first."""
    await txn.execute(MAILING_BOUNCE_REASONS, (mailing_id, _limit(limit) * 2))
    counts: dict[str, list[int]] = {}
    for reason, state, count in txn.fetchall():
        pair = counts.setdefault(reason, [0, 0])
        pair[0 if state == State.failed.value else 1] += int(count)
    found = [ReasonCount(reason, sync, async_) for reason, (sync, async_) in counts.items()]
    found.sort(key=lambda r: (-r.total, r.reason))
    return found[:_limit(limit)]


async def deferred_domains_txn(txn: Txn, limit: int) -> list[DeferredQueueDomain]:
    """The deferred queue by domain, largest first, each with its last error."""
    await txn.execute(DEFERRED_DOMAINS, (_limit(limit),))
    return [
        DeferredQueueDomain(domain=row[0], count=int(row[1]), oldest_created_at=float(row[2]),
                            next_attempt_at=None if row[3] is None else float(row[3]),
                            last_update=float(row[4]), code=_opt_int(row[5]), status=row[6],
                            text=row[7], remote_host=row[8])
        for row in txn.fetchall()
    ]


async def suppression_causes_txn(txn: Txn, event_ids: Sequence[int]) -> dict[int, int]:
    """The delivery of each event id that exists."""
    found: dict[int, int] = {}
    for chunk in _chunks(sorted({int(e) for e in event_ids})):
        await txn.execute(SELECT_EVENT_DELIVERIES.format(sql.placeholders(len(chunk))), chunk)
        found.update((int(e), int(d)) for e, d in txn.fetchall())
    return found


async def suppression_count_txn(txn: Txn) -> int:
    """Addresses on the suppression list."""
    await txn.execute(COUNT_SUPPRESSIONS)
    row = txn.fetchone()
    return int(row[0]) if row is not None else 0
