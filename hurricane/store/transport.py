"""The store's part of issue 21: sending pools, warm-up, MTA-STS and TLS reports.

SQL text and ``*_txn`` functions over migration 0010 (the transport columns
of ``events``, ``mta_sts_policies``, ``source_first_use``), kept in a module
of their own in the style of :mod:`hurricane.store.reports`. Each read is
bounded: by a LIMIT, and by a day (or a window) over a partial index.

:class:`ITransportStore` is what the outbound side and the TLS report need;
:class:`~hurricane.store.base.SqlStore` provides it (its methods call these
functions).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from hurricane.model import EventKind, State
from hurricane.store.txn.core import Txn

__all__ = ["MAX_TRANSPORT_ROWS", "FirstUse", "ISourceOutcomes", "ITransportStore",
           "SourceCount", "StoredStsPolicy", "TlsAttemptCount", "TransportStoreMixin",
           "first_uses_txn", "load_sts_policy_txn",
           "save_sts_policy_txn", "save_warmup_txn", "source_outcomes_txn", "tls_attempts_txn"]

#: Rows one transport read returns at most.
MAX_TRANSPORT_ROWS = 10_000


@dataclass(frozen=True)
class StoredStsPolicy:
    """An MTA-STS policy as the store keeps it (the text is kept for the TLS report)."""

    domain: str
    policy_id: str
    mode: str
    mx: tuple[str, ...]
    max_age: float
    policy: str
    fetched_at: float
    expires_at: float


@dataclass(frozen=True)
class FirstUse:
    """An address's warm-up with a provider: its first use, and what it sent on
    its day of use ``day`` (1 = the day of first use; 0 = nothing counted)."""

    address: str
    provider: str
    first_at: float
    day: int = 0
    sent: int = 0


@dataclass(frozen=True)
class TlsAttemptCount:
    """Attempts of one day with the same domain, policy, result and hosts."""

    domain: str
    policy_type: str
    policy_id: str | None
    result: str
    remote_host: str | None
    remote_ip: str | None
    source_ip: str | None
    count: int


@dataclass(frozen=True)
class SourceCount:
    """What happened to mail sent from one source address: ``what`` is an
    attempt's state (delivered, deferred, failed), or ``bounced`` or
    ``complained`` for deliveries whose late outcome came in the window,
    counted for the address of their accepted attempt."""

    source_ip: str
    what: str
    count: int


@runtime_checkable
class ITransportStore(Protocol):
    """What pools, MTA-STS and the TLS report keep in the store."""

    async def save_sts_policy(self, policy: StoredStsPolicy) -> None:
        """Keep (replace) a domain's MTA-STS policy."""

    async def load_sts_policy(self, domain: str) -> StoredStsPolicy | None:
        """A domain's kept MTA-STS policy, expired or not."""

    async def tls_attempts(self, since: float, until: float,
                           domain: str | None = None) -> list[TlsAttemptCount]:
        """Attempts with a TLS result in [since, until), grouped."""

    async def source_outcomes(self, since: float, until: float) -> list[SourceCount]:
        """Outcomes per source address in [since, until)."""

    async def first_uses(self) -> list[FirstUse]:
        """Every address's first use per provider, with its day's count."""

    async def save_warmup(self, rows: Sequence[FirstUse]) -> None:
        """Keep first uses and day counts (a first use already kept stays)."""

    async def tlsrpt_day(self) -> int:
        """The last day (a date ordinal) whose TLS reports were sent, 0 for none."""

    async def set_tlsrpt_day(self, day: int) -> None:
        """Remember that ``day``'s TLS reports were sent."""


@runtime_checkable
class ISourceOutcomes(Protocol):
    """The report's read of outcomes per source address."""

    async def source_outcomes(self, since: float, until: float) -> list[SourceCount]:
        """Outcomes per source address in [since, until)."""


# -- SQL ----------------------------------------------------------------------

UPSERT_STS_POLICY = """
INSERT INTO mta_sts_policies (domain, policy_id, mode, mx, max_age, policy, fetched_at,
                              expires_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (domain) DO UPDATE SET policy_id = excluded.policy_id, mode = excluded.mode,
    mx = excluded.mx, max_age = excluded.max_age, policy = excluded.policy,
    fetched_at = excluded.fetched_at, expires_at = excluded.expires_at"""

SELECT_STS_POLICY = """
SELECT domain, policy_id, mode, mx, max_age, policy, fetched_at, expires_at
FROM mta_sts_policies WHERE domain = ?"""

SELECT_TLS_ATTEMPTS = """
SELECT d.domain, e.tls_policy_type, e.tls_policy_id, e.tls_result, e.remote_host,
       e.remote_ip, e.source_ip, COUNT(*)
FROM events e JOIN deliveries d ON d.delivery_id = e.delivery_id
WHERE e.at >= ? AND e.at < ? AND e.tls_result IS NOT NULL{domain}
GROUP BY d.domain, e.tls_policy_type, e.tls_policy_id, e.tls_result, e.remote_host,
         e.remote_ip, e.source_ip
ORDER BY 1, 2, 3, 4, 5, 6, 7 LIMIT ?"""

SELECT_SOURCE_ATTEMPTS = """
SELECT source_ip, state, COUNT(*) FROM events
WHERE source_ip IS NOT NULL AND at >= ? AND at < ?
GROUP BY source_ip, state ORDER BY 1, 2 LIMIT ?"""

# A bounced or complained delivery counts for the address that sent its
# accepted attempt; read through migration 0007's deliveries_late_outcomes
# (its predicate spelled as the migration does), so only late outcomes are read.
SELECT_SOURCE_LATE = f"""
SELECT a.source_ip, d.state, COUNT(*) FROM deliveries d
JOIN events a ON a.delivery_id = d.delivery_id AND a.kind = '{EventKind.attempt.value}'
    AND a.state = '{State.delivered.value}' AND a.source_ip IS NOT NULL
WHERE d.state IN ('{State.bounced.value}', '{State.complained.value}')
    AND d.delivered_at IS NOT NULL AND d.updated_at >= ? AND d.updated_at < ?
GROUP BY a.source_ip, d.state ORDER BY 1, 2 LIMIT ?"""

SELECT_FIRST_USES = """
SELECT address, provider, first_at, count_day, count_sent FROM source_first_use
ORDER BY 1, 2 LIMIT ?"""

UPSERT_WARMUP = """
INSERT INTO source_first_use (address, provider, first_at, count_day, count_sent)
VALUES (?, ?, ?, ?, ?)
ON CONFLICT (address, provider) DO UPDATE SET count_day = excluded.count_day,
    count_sent = excluded.count_sent"""


SELECT_MARK = "SELECT value FROM report_marks WHERE name = ?"
UPSERT_MARK = """
INSERT INTO report_marks (name, value) VALUES (?, ?)
ON CONFLICT (name) DO UPDATE SET value = excluded.value"""
#: report_marks' name for the last day whose TLS reports were sent.
TLSRPT_MARK = "tlsrpt"


# -- transactions ---------------------------------------------------------------

async def save_sts_policy_txn(txn: Txn, p: StoredStsPolicy) -> None:
    """Keep a domain's policy (the MX patterns one per line)."""
    await txn.execute(UPSERT_STS_POLICY, (p.domain.lower(), p.policy_id, p.mode,
                                          "\n".join(p.mx), p.max_age, p.policy, p.fetched_at,
                                          p.expires_at))


async def load_sts_policy_txn(txn: Txn, domain: str) -> StoredStsPolicy | None:
    """A domain's kept policy, or None."""
    await txn.execute(SELECT_STS_POLICY, (domain.lower(),))
    row = txn.fetchone()
    if row is None:
        return None
    return StoredStsPolicy(row[0], row[1], row[2], tuple(m for m in row[3].split("\n") if m),
                           float(row[4]), row[5], float(row[6]), float(row[7]))


async def tls_attempts_txn(txn: Txn, since: float, until: float,
                           domain: str | None) -> list[TlsAttemptCount]:
    """Attempts with a TLS result in [since, until), by domain, policy, result and hosts."""
    params: list[object] = [since, until]
    where = ""
    if domain is not None:
        where = " AND d.domain = ?"
        params.append(domain.lower())
    params.append(MAX_TRANSPORT_ROWS)
    await txn.execute(SELECT_TLS_ATTEMPTS.format(domain=where), params)
    return [TlsAttemptCount(r[0], r[1] or "no-policy-found", r[2], r[3], r[4], r[5], r[6],
                            int(r[7])) for r in txn.fetchall()]


async def source_outcomes_txn(txn: Txn, since: float, until: float) -> list[SourceCount]:
    """Attempts by state, and later bounces and complaints, per source address."""
    found: list[SourceCount] = []
    for statement in (SELECT_SOURCE_ATTEMPTS, SELECT_SOURCE_LATE):
        await txn.execute(statement, (since, until, MAX_TRANSPORT_ROWS))
        found += [SourceCount(r[0], r[1], int(r[2])) for r in txn.fetchall()]
    return found


async def first_uses_txn(txn: Txn) -> list[FirstUse]:
    """Every kept first use, with its day's count."""
    await txn.execute(SELECT_FIRST_USES, (MAX_TRANSPORT_ROWS,))
    return [FirstUse(r[0], r[1], float(r[2]), int(r[3]), int(r[4])) for r in txn.fetchall()]


async def save_warmup_txn(txn: Txn, rows: Sequence[FirstUse]) -> None:
    """Keep first uses (the first one stays) and day counts (the last one wins)."""
    for r in rows:
        await txn.execute(UPSERT_WARMUP, (r.address, r.provider, r.first_at, r.day, r.sent))


async def get_mark_txn(txn: Txn, name: str) -> int:
    """A mark of report_marks (migration 0007), 0 when unset."""
    await txn.execute(SELECT_MARK, (name,))
    row = txn.fetchone()
    return 0 if row is None else int(row[0])


async def set_mark_txn(txn: Txn, name: str, value: int) -> None:
    """Set a mark of report_marks."""
    await txn.execute(UPSERT_MARK, (name, value))


class TransportStoreMixin:
    """:class:`ITransportStore` for :class:`~hurricane.store.base.SqlStore`
    (which provides ``_run``: one transaction, failures as StoreUnavailable)."""

    _run: Callable[..., Awaitable[Any]]

    async def save_sts_policy(self, policy: StoredStsPolicy) -> None:
        """Keep (replace) a domain's MTA-STS policy."""
        await self._run(save_sts_policy_txn, policy)

    async def load_sts_policy(self, domain: str) -> StoredStsPolicy | None:
        """A domain's kept MTA-STS policy, expired or not."""
        found: StoredStsPolicy | None = await self._run(load_sts_policy_txn, domain)
        return found

    async def tls_attempts(self, since: float, until: float,
                           domain: str | None = None) -> list[TlsAttemptCount]:
        """Attempts with a TLS result in [since, until), grouped (the TLS report)."""
        found: list[TlsAttemptCount] = await self._run(tls_attempts_txn, since, until, domain)
        return found

    async def source_outcomes(self, since: float, until: float) -> list[SourceCount]:
        """Outcomes per source address in [since, until)."""
        found: list[SourceCount] = await self._run(source_outcomes_txn, since, until)
        return found

    async def first_uses(self) -> list[FirstUse]:
        """Every address's first use per provider, with its day's count."""
        found: list[FirstUse] = await self._run(first_uses_txn)
        return found

    async def save_warmup(self, rows: Sequence[FirstUse]) -> None:
        """Keep first uses and day counts (a first use already kept stays)."""
        await self._run(save_warmup_txn, list(rows))

    async def tlsrpt_day(self) -> int:
        """The last day (a date ordinal) whose TLS reports were sent, 0 for none."""
        return int(await self._run(get_mark_txn, TLSRPT_MARK))

    async def set_tlsrpt_day(self, day: int) -> None:
        """Remember that ``day``'s TLS reports were sent."""
        await self._run(set_mark_txn, TLSRPT_MARK, day)
