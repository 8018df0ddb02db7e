"""Scoped suppression, unsubscribes and DNS failures: the store's transactions.

The global list stays in the ``suppressions`` table (one row per address, as
before). Narrower entries live in ``scoped_suppressions`` (migration 0009):

- ``stream:NAME``: one address, for one message stream (an unsubscribe, or a
  complaint about that stream's mail);
- ``mailing:ID``: one address, for one mailing;
- ``domain``: every address of a domain (``address`` is the domain): added
  when a domain's failure to resolve is confirmed over time
  (:func:`dns_failure_txn`), so that one broken resolver answer never
  suppresses real addresses.

An entry may expire (``expires_at``); an expired entry matches nothing.
A recipient matched at enqueue time is recorded ``suppressed`` with the
entry's reason, and its first event's text names the entry
(:func:`entry_text`).

No SQL outside the store package: the statements are here, run by the same
:class:`~hurricane.store.txn.Txn` as every other transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hurricane.address import domain_of, fold
from hurricane.outcome import EventKind, Reason, Source, SuppressionSource
from hurricane.streams import DEFAULT_STREAM

if TYPE_CHECKING:
    from hurricane.store.txn import Row, Txn

__all__ = [
    "DNS_CONFIRM_SECONDS",
    "GLOBAL",
    "SCOPED",
    "ScopedSuppression",
    "SuppressionMatch",
    "UnsubscribeOutcome",
    "add_suppression_txn",
    "dns_failure_txn",
    "entry_text",
    "find_suppressions_txn",
    "list_suppressions_txn",
    "match_scoped_txn",
    "message_stream_txn",
    "parse_scope",
    "record_unsubscribe_txn",
    "remove_suppression_txn",
]

#: The scope of the global list.
GLOBAL = "global"
#: Not a scope: lists every entry that is not global (the report's second table).
SCOPED = "scoped"
#: A second failure to resolve a domain at least this many seconds after the
#: first confirms it (the domain is then suppressed, as one ``domain`` entry).
DNS_CONFIRM_SECONDS = 3600.0
#: A failure this long after the last one starts the count afresh.
DNS_FORGET_SECONDS = 7 * 86400.0

_COLUMNS = "scope, address, reason, created_at, source, event_id, note, expires_at"


@dataclass(frozen=True)
class ScopedSuppression:
    """One suppression entry of any scope.

    Attributes:
        scope: ``global``, ``stream:NAME``, ``mailing:ID`` or ``domain``.
        address: the folded address (the domain for ``domain``).
        reason: why (a reason word, ``unsubscribed``, ``complaint``...).
        created_at: when it was added.
        source: what added it (:class:`~hurricane.outcome.SuppressionSource`).
        event_id: the event that caused it, if any.
        note: an operator's note.
        expires_at: when it stops matching (None: never).
    """

    scope: str
    address: str
    reason: str
    created_at: float
    source: str | None = None
    event_id: int | None = None
    note: str | None = None
    expires_at: float | None = None

    def as_dict(self) -> dict[str, object]:
        """The entry as JSON-ready values."""
        return {"scope": self.scope, "address": self.address, "reason": self.reason,
                "created_at": self.created_at, "source": self.source,
                "event_id": self.event_id, "note": self.note, "expires_at": self.expires_at}


@dataclass(frozen=True)
class SuppressionMatch:
    """The entry that stops one recipient at enqueue time."""

    scope: str
    address: str
    reason: str

    @property
    def text(self) -> str:
        """What the recipient's ``suppressed`` event says."""
        return entry_text(self.scope, self.address)


def entry_text(scope: str, address: str) -> str:
    """The text of a ``suppressed`` event naming the entry that matched."""
    if scope == "domain":
        return f"suppression entry: domain {address}"
    return f"suppression entry: {scope}"


def parse_scope(text: str | None) -> str:
    """A scope as the tools write it, checked and normalised.

    Args:
        text: ``global`` (or None/""), ``stream:NAME``, ``mailing:ID`` or ``domain``.

    Raises:
        ValueError: anything else, saying what is expected.
    """
    from hurricane.streams import valid_stream_name
    from hurricane.verp import valid_identifier

    value = (text or GLOBAL).strip()
    if value in (GLOBAL, "domain"):
        return value
    kind, _, name = value.partition(":")
    if kind == "stream" and valid_stream_name(name):
        return value
    if kind == "mailing" and name and valid_identifier(name):
        return value
    raise ValueError(f"expected a scope: global, stream:NAME, mailing:ID or domain; "
                     f"got {value!r}")


def _entry(row: Row) -> ScopedSuppression:
    return ScopedSuppression(scope=row[0], address=row[1], reason=row[2], created_at=row[3],
                             source=row[4], event_id=None if row[5] is None else int(row[5]),
                             note=row[6], expires_at=row[7])


def _chunks(items: Sequence[str], size: int = 400) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


async def match_scoped_txn(txn: Txn, recipients: Sequence[tuple[str, str | None, str | None]],
                           now: float) -> list[SuppressionMatch | None]:
    """The scoped entry (stream, mailing or domain) stopping each recipient.

    Args:
        recipients: ``(address, stream, mailing_id)`` per recipient; a None
            stream is the default stream.
        now: expired entries do not match.

    Returns:
        One match or None per recipient, in order. A stream or mailing
        entry for the address wins over a domain entry.
    """
    keys = sorted({fold(a) for a, _, _ in recipients} | {domain_of(fold(a))
                                                          for a, _, _ in recipients})
    found: dict[tuple[str, str], str] = {}
    for chunk in _chunks(keys):
        marks = ", ".join(["?"] * len(chunk))
        await txn.execute(
            f"SELECT scope, address, reason FROM scoped_suppressions WHERE address IN ({marks})"
            " AND (expires_at IS NULL OR expires_at > ?)", [*chunk, now])
        found.update(((row[0], row[1]), row[2]) for row in txn.fetchall())
    if not found:
        return [None] * len(recipients)
    out: list[SuppressionMatch | None] = []
    for address, stream, mailing_id in recipients:
        key = fold(address)
        candidates = [(f"stream:{stream or DEFAULT_STREAM}", key)]
        if mailing_id:
            candidates.append((f"mailing:{mailing_id}", key))
        candidates.append(("domain", domain_of(key)))
        match = None
        for scope, addr in candidates:
            reason = found.get((scope, addr))
            if reason is not None:
                match = SuppressionMatch(scope, addr, reason)
                break
        out.append(match)
    return out


async def add_suppression_txn(txn: Txn, scope: str, address: str, reason: str, now: float,
                              source: str | None = None, note: str | None = None,
                              event_id: int | None = None,
                              expires_at: float | None = None) -> bool:
    """Add an entry; False when the address already had one in that scope.

    A ``global`` entry goes to the global list (no expiry there); the
    others to ``scoped_suppressions``.
    """
    key = _key(scope, address)
    if scope == GLOBAL:
        await txn.execute(
            "INSERT INTO suppressions (address, reason, source, event_id, note, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (address) DO NOTHING RETURNING address",
            (key, reason, source, event_id, note, now))
        return txn.fetchone() is not None
    await txn.execute(
        "INSERT INTO scoped_suppressions (scope, address, reason, source, event_id, note,"
        " created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (address, scope) DO NOTHING RETURNING address",
        (scope, key, reason, source, event_id, note, now, expires_at))
    return txn.fetchone() is not None


def _key(scope: str, address: str) -> str:
    key = fold(address)
    if scope == "domain":
        return key.rpartition("@")[2].rstrip(".")
    return key


async def remove_suppression_txn(txn: Txn, scope: str, address: str) -> bool:
    """Remove an entry; False when there was none."""
    key = _key(scope, address)
    if scope == GLOBAL:
        await txn.execute("DELETE FROM suppressions WHERE address = ? RETURNING address",
                          (key,))
    else:
        await txn.execute("DELETE FROM scoped_suppressions WHERE address = ? AND scope = ?"
                          " RETURNING address", (key, scope))
    return txn.fetchone() is not None


async def find_suppressions_txn(txn: Txn, address: str) -> list[ScopedSuppression]:
    """Every entry that names an address (or its domain), global first."""
    key = fold(address)
    await txn.execute("SELECT address, reason, created_at, source, event_id, note"
                      " FROM suppressions WHERE address = ?", (key,))
    out = [ScopedSuppression(GLOBAL, row[0], row[1], row[2], row[3],
                             None if row[4] is None else int(row[4]), row[5])
           for row in txn.fetchall()]
    await txn.execute(f"SELECT {_COLUMNS} FROM scoped_suppressions WHERE address IN (?, ?)"
                      " ORDER BY scope", (key, domain_of(key) if "@" in key else key))
    out += [_entry(row) for row in txn.fetchall()]
    return out


async def list_suppressions_txn(txn: Txn, scope: str | None, after: tuple[str, str] | None,
                                limit: int) -> list[ScopedSuppression]:
    """One page of entries ordered by (scope, address); ``scope`` keeps one scope.

    The global list comes first (by address), then the other entries by
    scope and address; ``after`` is the (scope, address) of the last entry
    of the previous page.
    """
    limit = max(1, min(int(limit), 10_000))
    after_scope, after_address = after or ("", "")
    out: list[ScopedSuppression] = []
    if scope in (None, GLOBAL) and after_scope in ("", GLOBAL):
        start = after_address if after_scope == GLOBAL else ""
        await txn.execute("SELECT address, reason, created_at, source, event_id, note"
                          " FROM suppressions WHERE address > ? ORDER BY address LIMIT ?",
                          (start, limit))
        out += [ScopedSuppression(GLOBAL, row[0], row[1], row[2], row[3],
                                  None if row[4] is None else int(row[4]), row[5])
                for row in txn.fetchall()]
    if scope == GLOBAL or len(out) >= limit:
        return out[:limit]
    if scope in (None, SCOPED):
        begin = (after_scope, after_address) if after_scope != GLOBAL else ("", "")
        await txn.execute(f"SELECT {_COLUMNS} FROM scoped_suppressions"
                          " WHERE scope > ? OR (scope = ? AND address > ?)"
                          " ORDER BY scope, address LIMIT ?",
                          (begin[0], begin[0], begin[1], limit - len(out)))
    else:
        start = after_address if after_scope == scope else ""
        await txn.execute(f"SELECT {_COLUMNS} FROM scoped_suppressions"
                          " WHERE scope = ? AND address > ? ORDER BY address LIMIT ?",
                          (scope, start, limit))
    out += [_entry(row) for row in txn.fetchall()]
    return out[:limit]


async def message_stream_txn(txn: Txn, delivery_id: int) -> str | None:
    """The stream of a delivery's message (None: the default stream, or no such delivery)."""
    await txn.execute("SELECT m.stream FROM deliveries d JOIN messages m"
                      " ON m.message_pk = d.message_pk WHERE d.delivery_id = ?", (delivery_id,))
    row = txn.fetchone()
    return None if row is None else row[0]


@dataclass(frozen=True)
class UnsubscribeOutcome:
    """What an unsubscribe did.

    Attributes:
        known: the delivery exists and is to that recipient.
        added: a new ``stream:NAME`` entry was added (False: it was there).
        event_id: the ``unsubscribed`` event recorded, if any.
    """

    known: bool
    added: bool
    event_id: int | None = None


async def record_unsubscribe_txn(txn: Txn, delivery_id: int, stream: str, now: float,
                                 via: str) -> UnsubscribeOutcome:
    """Record a verified unsubscribe: an ``unsubscribed`` event and a stream entry.

    Idempotent: a second unsubscribe for the same stream records nothing.
    The recipient is the delivery's (the verified token names the delivery);
    a delivery since purged can no longer say whom to suppress: nothing is
    recorded (``known`` False).

    Args:
        delivery_id: from the verified token.
        stream: the stream the token names.
        now: the time.
        via: ``one-click``, ``mailto`` or ``confirm`` (the event's text).
    """
    await txn.execute("SELECT recipient FROM deliveries WHERE delivery_id = ?", (delivery_id,))
    row = txn.fetchone()
    if row is None:
        return UnsubscribeOutcome(False, False)
    recipient = str(row[0])
    scope = f"stream:{stream}"
    await txn.execute("SELECT 1 FROM scoped_suppressions WHERE address = ? AND scope = ?",
                      (fold(recipient), scope))
    if txn.fetchone() is not None:
        return UnsubscribeOutcome(True, False)
    await txn.execute(
        "INSERT INTO events (delivery_id, kind, at, reason, text, source)"
        " VALUES (?, ?, ?, ?, ?, ?) RETURNING event_id",
        (delivery_id, EventKind.unsubscribed.value, now, None,
         f"unsubscribed from stream {stream} ({via})", Source.local.value))
    got = txn.fetchone()
    event_id = None if got is None else int(got[0])
    added = await add_suppression_txn(txn, scope, recipient, "unsubscribed", now,
                                      SuppressionSource.unsubscribe.value, None, event_id)
    return UnsubscribeOutcome(True, added, event_id)


async def dns_failure_txn(txn: Txn, domain: str, now: float, event_id: int | None) -> bool:
    """Note that ``domain`` did not resolve; True when that confirms an earlier failure.

    The first failure (or one after :data:`DNS_FORGET_SECONDS` of quiet) only
    starts the record. A failure at least :data:`DNS_CONFIRM_SECONDS` after
    the first confirms it: the domain gets one ``domain`` entry (lifted with
    ``hurricane suppression remove --scope domain DOMAIN``), citing ``event_id``.
    """
    domain = domain.lower().rstrip(".")
    await txn.execute("SELECT first_at, last_at FROM dns_failures WHERE domain = ?", (domain,))
    row = txn.fetchone()
    if row is None or now - float(row[1]) > DNS_FORGET_SECONDS:
        await txn.execute("DELETE FROM dns_failures WHERE domain = ?", (domain,))
        await txn.execute("INSERT INTO dns_failures (domain, first_at, last_at, failures)"
                          " VALUES (?, ?, ?, 1)", (domain, now, now))
        return False
    await txn.execute("UPDATE dns_failures SET last_at = ?, failures = failures + 1"
                      " WHERE domain = ?", (max(now, float(row[1])), domain))
    if now - float(row[0]) < DNS_CONFIRM_SECONDS:
        return False
    await add_suppression_txn(
        txn, "domain", domain, Reason.hostunknown.value, now, SuppressionSource.dns.value,
        f"did not resolve since {float(row[0]):.0f}, confirmed after "
        f"{now - float(row[0]):.0f} s", event_id)
    return True
