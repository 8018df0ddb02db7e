"""The store's side of closed-loop delivery (issue 19): provider state, policy
events, live nodes, and the breaker per mailing (hold, release, cancel).

Transaction functions (``*_txn``) in the style of :mod:`hurricane.store.txn`,
and :class:`PolicyStore`, which runs them on an SQL store (SQLite or
PostgreSQL: the tables come from migration 0008). A memory store has no
policy store: :func:`policy_store` answers None and the features that need
one are off.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hurricane.outcome import PENDING_STATES, EventKind, State, sql_list
from hurricane.policy.providers import SENDER_SIDE_LATE, PolicyAction, ProviderState
from hurricane.store.base import SqlStore
from hurricane.store.txn import Txn

__all__ = ["BreakerRecord", "MailingCounts", "PolicyEvent", "PolicyStore", "ProviderWindow",
           "policy_store"]

_PENDING = sql_list(PENDING_STATES)
_HELD = f"'{State.held.value}'"
#: Rows one policy read returns at most.
MAX_ROWS = 5000
#: Parameters per IN (...) list.
_CHUNK = 500

_MAILING_ROWS = """
    SELECT d.delivery_id FROM deliveries d JOIN messages m ON m.message_pk = d.message_pk
    WHERE lower(m.mailing_id) = lower(?)"""


@dataclass(frozen=True)
class PolicyEvent:
    """A stored policy action."""

    event_id: int
    node: str | None
    action: PolicyAction


@dataclass(frozen=True)
class MailingCounts:
    """A mailing's recipients for its breaker.

    Attributes:
        recipients: all of them.
        decided: with an outcome (not queued, deferred or held).
        hard: refused or bounced hard.
        complaints: complained.
        held: held now.
    """

    recipients: int
    decided: int
    hard: int
    complaints: int
    held: int

    def as_json(self) -> dict[str, int]:
        """The counts as a JSON object."""
        return {"recipients": self.recipients, "decided": self.decided, "hard": self.hard,
                "complaints": self.complaints, State.held.value: self.held}


@dataclass(frozen=True)
class BreakerRecord:
    """A mailing whose breaker tripped: ``held``, ``released`` or ``cancelled``."""

    mailing_id: str
    state: str
    cause: str
    evidence: Mapping[str, int]
    held_at: float
    held: int
    changed_at: float


@dataclass(frozen=True)
class ProviderWindow:
    """Recent deliveries of one (domain, MX host) pair and their late outcomes."""

    domain: str
    host: str | None
    deliveries: int
    sender_bounces: int
    complaints: int


def _evidence(text: str | None) -> dict[str, int]:
    try:
        data = json.loads(text or "{}")
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): int(v) for k, v in data.items() if isinstance(v, int)}


# -- provider state --------------------------------------------------------------

async def save_provider_states_txn(txn: Txn, states: Sequence[ProviderState]) -> None:
    """Store provider states; a row newer than the one given is kept."""
    for s in states:
        await txn.execute(
            "INSERT INTO provider_state (provider, rate, ceiling, paused_until, suspended_until,"
            " cause, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (provider) DO UPDATE SET rate = excluded.rate,"
            " ceiling = excluded.ceiling, paused_until = excluded.paused_until,"
            " suspended_until = excluded.suspended_until, cause = excluded.cause,"
            " updated_at = excluded.updated_at"
            " WHERE provider_state.updated_at < excluded.updated_at",
            (s.provider, s.rate, s.ceiling, s.paused_until, s.suspended_until, s.cause,
             s.updated_at))


async def provider_states_txn(txn: Txn) -> list[ProviderState]:
    """Every stored provider state."""
    await txn.execute("SELECT provider, rate, ceiling, paused_until, suspended_until, cause,"
                      " updated_at FROM provider_state ORDER BY provider LIMIT ?", (MAX_ROWS,))
    return [ProviderState(r[0], float(r[1]), float(r[2]), float(r[3]), float(r[4]), r[5],
                          float(r[6])) for r in txn.fetchall()]


async def heartbeat_txn(txn: Txn, node: str, now: float, alive: float) -> int:
    """Say ``node`` is alive; return how many nodes were seen within ``alive`` seconds."""
    await txn.execute("INSERT INTO policy_nodes (node_id, seen_at) VALUES (?, ?)"
                      " ON CONFLICT (node_id) DO UPDATE SET seen_at = excluded.seen_at",
                      (node, now))
    await txn.execute("SELECT COUNT(*) FROM policy_nodes WHERE seen_at >= ?", (now - alive,))
    row = txn.fetchone()
    return max(1, int(row[0]) if row else 1)


# -- policy events ----------------------------------------------------------------

async def record_actions_txn(txn: Txn, actions: Sequence[PolicyAction], node: str | None
                             ) -> None:
    """Store policy actions as events."""
    for a in actions:
        await txn.execute(
            "INSERT INTO policy_events (at, scope, subject, action, cause, before, after,"
            " evidence, until, node) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (a.at, a.scope, a.subject, a.action, a.cause, a.before, a.after,
             json.dumps(dict(a.evidence), sort_keys=True), a.until, node))


async def policy_events_txn(txn: Txn, after: int, limit: int, scope: str | None,
                            subject: str | None) -> list[PolicyEvent]:
    """Policy events after id ``after`` (oldest first), or the newest ``limit``
    of a scope/subject when ``after`` is negative (newest first)."""
    where = "WHERE policy_event_id > ?"
    params: list[object] = [max(0, after)]
    if scope is not None:
        where += " AND scope = ?"
        params.append(scope)
    if subject is not None:
        where += " AND lower(subject) = lower(?)"
        params.append(subject)
    order = "DESC" if after < 0 else "ASC"
    await txn.execute(
        "SELECT policy_event_id, at, scope, subject, action, cause, before, after, evidence,"
        f" until, node FROM policy_events {where} ORDER BY policy_event_id {order} LIMIT ?",
        (*params, max(1, min(limit, MAX_ROWS))))
    return [PolicyEvent(int(r[0]), r[10], PolicyAction(
        float(r[1]), r[2], r[3], r[4], r[5], r[6], r[7], _evidence(r[8]),
        None if r[9] is None else float(r[9]))) for r in txn.fetchall()]


# -- late outcomes per provider -----------------------------------------------------

async def provider_windows_txn(txn: Txn, since: float) -> list[ProviderWindow]:
    """Deliveries accepted since ``since`` per (domain, MX host), with the late
    bounces among them that blame the sender, and the complaints."""
    sender = sql_list(sorted(SENDER_SIDE_LATE, key=lambda r: r.value))
    await txn.execute(
        "SELECT domain, lower(remote_host), COUNT(*),"
        f" SUM(CASE WHEN state = '{State.bounced.value}' AND reason IN ({sender})"
        " THEN 1 ELSE 0 END),"
        f" SUM(CASE WHEN state = '{State.complained.value}' THEN 1 ELSE 0 END)"
        " FROM deliveries WHERE delivered_at IS NOT NULL AND delivered_at >= ?"
        " GROUP BY domain, lower(remote_host) ORDER BY 3 DESC LIMIT ?",
        (since, MAX_ROWS))
    return [ProviderWindow(r[0], r[1], int(r[2]), int(r[3] or 0), int(r[4] or 0))
            for r in txn.fetchall()]


# -- the breaker per mailing ----------------------------------------------------------

async def mailing_counts_txn(txn: Txn, mailing_id: str) -> MailingCounts:
    """A mailing's recipients by what its breaker looks at."""
    undecided = f"{_PENDING}, {_HELD}"
    await txn.execute(
        "SELECT COUNT(*),"
        f" SUM(CASE WHEN d.state NOT IN ({undecided}) THEN 1 ELSE 0 END),"
        f" SUM(CASE WHEN d.hard AND d.state IN ('{State.failed.value}',"
        f" '{State.bounced.value}') THEN 1 ELSE 0 END),"
        f" SUM(CASE WHEN d.state = '{State.complained.value}' THEN 1 ELSE 0 END),"
        f" SUM(CASE WHEN d.state = {_HELD} THEN 1 ELSE 0 END)"
        " FROM deliveries d JOIN messages m ON m.message_pk = d.message_pk"
        " WHERE lower(m.mailing_id) = lower(?)", (mailing_id,))
    row = txn.fetchone() or (0, 0, 0, 0, 0)
    return MailingCounts(*(int(v or 0) for v in row))


async def breaker_txn(txn: Txn, mailing_id: str) -> BreakerRecord | None:
    """The breaker record of a mailing, if it ever tripped."""
    await txn.execute("SELECT mailing_id, state, cause, evidence, held_at, held, changed_at"
                      " FROM mailing_breakers WHERE mailing_key = lower(?)", (mailing_id,))
    r = txn.fetchone()
    if r is None:
        return None
    return BreakerRecord(r[0], r[1], r[2], _evidence(r[3]), float(r[4]), int(r[5]),
                         float(r[6]))


async def breakers_txn(txn: Txn, limit: int) -> list[BreakerRecord]:
    """The mailings whose breaker tripped, newest first."""
    await txn.execute("SELECT mailing_id, state, cause, evidence, held_at, held, changed_at"
                      " FROM mailing_breakers ORDER BY held_at DESC LIMIT ?",
                      (max(1, min(limit, MAX_ROWS)),))
    return [BreakerRecord(r[0], r[1], r[2], _evidence(r[3]), float(r[4]), int(r[5]),
                          float(r[6])) for r in txn.fetchall()]


async def hold_mailing_txn(txn: Txn, mailing_id: str, now: float, owner: str,
                           given_back: Sequence[int], action: PolicyAction) -> int:
    """Trip a mailing's breaker: its pending rows nobody is sending move to ``held``.

    Rows leased to another node, or being sent here, are left to finish
    (they are on a connection already); ``given_back`` are rows this node
    took out of its queues for the hold, released first (so that they come
    again when the mailing is not held). A mailing whose breaker tripped
    before (held, released or cancelled) is not held again.

    Returns:
        rows held (-1 when the breaker had tripped before).
    """
    for start in range(0, len(given_back), _CHUNK):
        chunk = list(given_back[start:start + _CHUNK])
        await txn.execute("UPDATE deliveries SET lease_owner = NULL, lease_until = NULL"
                          f" WHERE delivery_id IN ({', '.join('?' * len(chunk))})"
                          " AND lease_owner = ?", (*chunk, owner))
    await txn.execute("SELECT state FROM mailing_breakers WHERE mailing_key = lower(?)"
                      + txn.dialect.for_update, (mailing_id,))
    if txn.fetchone() is not None:
        return -1
    await txn.execute(
        f"UPDATE deliveries SET state = {_HELD}, lease_owner = NULL, lease_until = NULL,"
        f" updated_at = ? WHERE state IN ({_PENDING})"
        " AND (lease_until IS NULL OR lease_until <= ?)"
        f" AND delivery_id IN ({_MAILING_ROWS})", (now, now, mailing_id))
    held = max(txn.rowcount, 0)
    await txn.execute(
        "INSERT INTO mailing_breakers (mailing_key, mailing_id, state, cause, evidence,"
        " held_at, held, changed_at) VALUES (lower(?), ?, ?, ?, ?, ?, ?, ?)",
        (mailing_id, mailing_id, State.held.value, action.cause,
         json.dumps(dict(action.evidence), sort_keys=True), now, held, now))
    await record_actions_txn(txn, [action], owner)
    return held


async def hold_rows_txn(txn: Txn, mailing_id: str, ids: Sequence[int], owner: str,
                        now: float) -> int:
    """Hold rows of a held mailing that ``owner`` claimed after the hold (mail
    submitted since, rows another node gave back). When the mailing is not
    held any more (released meanwhile), the rows' leases are given back instead.

    Returns:
        rows held, -1 when the mailing is not held.
    """
    await txn.execute("SELECT state FROM mailing_breakers WHERE mailing_key = lower(?)"
                      + txn.dialect.for_update, (mailing_id,))
    row = txn.fetchone()
    held = row is not None and row[0] == State.held.value
    count = 0
    for start in range(0, len(ids), _CHUNK):
        chunk = list(ids[start:start + _CHUNK])
        marks = ", ".join("?" * len(chunk))
        if held:
            await txn.execute(
                f"UPDATE deliveries SET state = {_HELD}, lease_owner = NULL, lease_until = NULL,"
                f" updated_at = ? WHERE delivery_id IN ({marks}) AND lease_owner = ?"
                f" AND state IN ({_PENDING})", (now, *chunk, owner))
            count += max(txn.rowcount, 0)
        else:
            await txn.execute("UPDATE deliveries SET lease_owner = NULL, lease_until = NULL"
                              f" WHERE delivery_id IN ({marks}) AND lease_owner = ?",
                              (*chunk, owner))
    if not held:
        return -1
    await txn.execute("UPDATE mailing_breakers SET held = held + ? WHERE mailing_key = lower(?)",
                      (count, mailing_id))
    return count


async def release_mailing_txn(txn: Txn, mailing_id: str, now: float,
                              action: PolicyAction) -> int:
    """Send a held mailing's recipients after all; its breaker stays off.

    Returns:
        rows released (-1: the mailing's breaker never tripped).
    """
    return await _end_hold(txn, mailing_id, now, action, "released")


async def cancel_mailing_txn(txn: Txn, mailing_id: str, now: float,
                             action: PolicyAction) -> int:
    """Move a held mailing's recipients to the final state ``cancelled``.

    Returns:
        rows cancelled (-1: the mailing's breaker never tripped).
    """
    return await _end_hold(txn, mailing_id, now, action, State.cancelled.value)


async def _end_hold(txn: Txn, mailing_id: str, now: float, action: PolicyAction,
                    state: str) -> int:
    await txn.execute("SELECT state FROM mailing_breakers WHERE mailing_key = lower(?)"
                      + txn.dialect.for_update, (mailing_id,))
    if txn.fetchone() is None:
        return -1
    if state == "released":
        # due now, new mail first; a row tried before goes back as deferred
        await txn.execute(
            f"UPDATE deliveries SET state = CASE WHEN attempts > 0"
            f" THEN '{State.deferred.value}' ELSE '{State.queued.value}' END,"
            " next_attempt_at = ?, updated_at = ?"
            f" WHERE state = {_HELD} AND delivery_id IN ({_MAILING_ROWS})",
            (now, now, mailing_id))
    else:
        await txn.execute(
            f"UPDATE deliveries SET state = '{State.cancelled.value}', next_attempt_at = NULL,"
            f" updated_at = ? WHERE state = {_HELD} AND delivery_id IN ({_MAILING_ROWS})",
            (now, mailing_id))
    moved = max(txn.rowcount, 0)
    await txn.execute("UPDATE mailing_breakers SET state = ?, changed_at = ?"
                      " WHERE mailing_key = lower(?)", (state, now, mailing_id))
    await record_actions_txn(txn, [action], None)
    return moved


async def mailings_with_outcomes_txn(txn: Txn, after_event_id: int, limit: int
                                     ) -> tuple[list[str], int]:
    """Mailings that had a late bounce or complaint after event ``after_event_id``.

    Returns:
        their ids, and the last event id read.
    """
    kinds = sql_list([EventKind.bounce, EventKind.complaint])
    await txn.execute(
        "SELECT e.event_id, m.mailing_id FROM events e"
        " JOIN deliveries d ON d.delivery_id = e.delivery_id"
        " JOIN messages m ON m.message_pk = d.message_pk"
        f" WHERE e.event_id > ? AND e.kind IN ({kinds}) AND m.mailing_id IS NOT NULL"
        " ORDER BY e.event_id LIMIT ?", (after_event_id, max(1, limit)))
    rows = txn.fetchall()
    last = max((int(r[0]) for r in rows), default=after_event_id)
    return sorted({str(r[1]) for r in rows}), last


async def last_event_id_txn(txn: Txn) -> int:
    """The newest event id (0 for none)."""
    await txn.execute("SELECT MAX(event_id) FROM events")
    row = txn.fetchone()
    return int(row[0]) if row and row[0] is not None else 0


class PolicyStore:
    """The policy transactions, run on one SQL store.

    Args:
        store: an open SQLite or PostgreSQL store (migration 0008 applied).
    """

    def __init__(self, store: SqlStore) -> None:
        self._store = store

    async def _call(self, func: Any, *args: Any) -> Any:
        # SqlStore's own transaction runner: every failure is StoreUnavailable.
        return await self._store._run(func, *args)  # noqa: SLF001 (our own class)

    async def save_provider_states(self, states: Sequence[ProviderState]) -> None:
        """Store provider states (the newest wins)."""
        await self._call(save_provider_states_txn, list(states))

    async def provider_states(self) -> list[ProviderState]:
        """Every stored provider state."""
        found: list[ProviderState] = await self._call(provider_states_txn)
        return found

    async def heartbeat(self, node: str, now: float, alive: float) -> int:
        """Say ``node`` is alive; return the live node count."""
        count: int = await self._call(heartbeat_txn, node, now, alive)
        return count

    async def record_actions(self, actions: Sequence[PolicyAction], node: str | None) -> None:
        """Store policy actions as events."""
        if actions:
            await self._call(record_actions_txn, list(actions), node)

    async def policy_events(self, *, after: int = -1, limit: int = 100,
                            scope: str | None = None, subject: str | None = None
                            ) -> list[PolicyEvent]:
        """Policy events (see :func:`policy_events_txn`)."""
        found: list[PolicyEvent] = await self._call(policy_events_txn, after, limit, scope,
                                                    subject)
        return found

    async def provider_windows(self, since: float) -> list[ProviderWindow]:
        """Recent deliveries and late outcomes per (domain, MX host)."""
        found: list[ProviderWindow] = await self._call(provider_windows_txn, since)
        return found

    async def mailing_counts(self, mailing_id: str) -> MailingCounts:
        """A mailing's counts for its breaker."""
        counts: MailingCounts = await self._call(mailing_counts_txn, mailing_id)
        return counts

    async def breaker(self, mailing_id: str) -> BreakerRecord | None:
        """A mailing's breaker record."""
        found: BreakerRecord | None = await self._call(breaker_txn, mailing_id)
        return found

    async def breakers(self, limit: int = 100) -> list[BreakerRecord]:
        """Tripped breakers, newest first."""
        found: list[BreakerRecord] = await self._call(breakers_txn, limit)
        return found

    async def hold_mailing(self, mailing_id: str, now: float, owner: str,
                           given_back: Sequence[int], action: PolicyAction) -> int:
        """Trip a mailing's breaker (see :func:`hold_mailing_txn`)."""
        held: int = await self._call(hold_mailing_txn, mailing_id, now, owner,
                                     list(given_back), action)
        return held

    async def hold_rows(self, mailing_id: str, ids: Sequence[int], owner: str,
                        now: float) -> int:
        """Hold rows claimed after the hold (see :func:`hold_rows_txn`)."""
        held: int = await self._call(hold_rows_txn, mailing_id, list(ids), owner, now)
        return held

    async def release_mailing(self, mailing_id: str, now: float, action: PolicyAction) -> int:
        """Release a held mailing (see :func:`release_mailing_txn`)."""
        moved: int = await self._call(release_mailing_txn, mailing_id, now, action)
        return moved

    async def cancel_mailing(self, mailing_id: str, now: float, action: PolicyAction) -> int:
        """Cancel a held mailing (see :func:`cancel_mailing_txn`)."""
        moved: int = await self._call(cancel_mailing_txn, mailing_id, now, action)
        return moved

    async def mailings_with_outcomes(self, after_event_id: int, limit: int = 1000
                                     ) -> tuple[list[str], int]:
        """Mailings with late outcomes after an event id."""
        found: tuple[list[str], int] = await self._call(mailings_with_outcomes_txn,
                                                        after_event_id, limit)
        return found

    async def last_event_id(self) -> int:
        """The newest event id."""
        last: int = await self._call(last_event_id_txn)
        return last


def policy_store(store: object) -> PolicyStore | None:
    """The policy store of an outcome store (None for the memory store)."""
    return PolicyStore(store) if isinstance(store, SqlStore) else None
