"""An in-memory IOutcomeStore for the unit tests of other components.

Plain dicts, the same semantics as the SQL engines (it passes the same
contract tests), and coroutines that complete immediately, so a test that
drives it with ``Deferred.fromCoroutine`` can use ``successResultOf``. Like
Klein's ``MemorySessionStore``, it is a supported provider of the interface,
not a mock. Two test hooks make calls fail with :class:`StoreUnavailable`:
:meth:`MemoryStore.fail_next` and :meth:`MemoryStore.set_available`.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping, Sequence
from typing import Any

from twisted.logger import Logger
from zope.interface import implementer

from hurricane.address import domain_of, fold
from hurricane.decisions import decide_bounce, suppression_source
from hurricane.model import (
    AttemptResult,
    BounceEvent,
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
    State,
    StoredBounce,
    StoredMessage,
    Summary,
    Suppression,
)
from hurricane.outcome import PENDING_STATES, BounceStatus, Reason, Source, SuppressionSource
from hurricane.store import migrate, reports, txn
from hurricane.store.interface import (
    BounceRecord,
    DeferredQueueDomain,
    IOutcomeStore,
    LateOutcome,
    MailingEntry,
    MailingOutcomes,
    MailingRollup,
    SettleCounts,
    StoreUnavailable,
)
from hurricane.store.sql import GLOBAL_ENTRY_TEXT, SQLITE
from hurricane.store.suppression import (
    GLOBAL,
    ScopedSuppression,
    UnsubscribeOutcome,
    entry_text,
)
from hurricane.streams import DEFAULT_STREAM

__all__ = ["MemoryStore"]

log = Logger()

_PENDING = PENDING_STATES


@dataclasses.dataclass
class _Message:
    message_pk: int
    queue_id: str
    message: NewMessage
    created_at: float


@dataclasses.dataclass
class _Bounce:
    stored: StoredBounce
    analysis: str | None = None
    error: str | None = None


@implementer(IOutcomeStore)
class MemoryStore:
    """IOutcomeStore in dicts; nothing survives the process."""

    def __init__(self, url: str = "memory:") -> None:
        self.url = url
        self._open = False
        self._fail_next = 0
        self._available = True
        self._ids = itertools.count(1)
        self._messages: dict[int, _Message] = {}
        self._queue_ids: set[str] = set()
        self._deliveries: dict[int, Delivery] = {}
        self._priority: dict[int, int] = {}
        self._events: dict[int, list[Event]] = {}
        self._idem: set[tuple[int, str]] = set()
        self._bounces: dict[int, _Bounce] = {}
        self._suppressions: dict[str, Suppression] = {}
        self._scoped: dict[tuple[str, str], ScopedSuppression] = {}
        #: Streams whose complaints suppress globally (the SQL stores honour it).
        self.complaint_global_streams: frozenset[str] = frozenset()
        self._applied: list[str] = []
        self._event_ids = itertools.count(1)
        self._bounce_ids = itertools.count(1)
        self._mailings: dict[str, MailingEntry] = {}
        self._marks: dict[str, int] = {}

    # -- test hooks ---------------------------------------------------------

    def fail_next(self, n: int = 1) -> None:
        """Make the next ``n`` calls raise StoreUnavailable (then work again)."""
        self._fail_next += n

    def set_available(self, available: bool) -> None:
        """Make every call raise StoreUnavailable until set back to True."""
        self._available = available

    def _check(self, need_open: bool = True) -> None:
        if self._fail_next > 0:
            self._fail_next -= 1
            raise StoreUnavailable(f"store {self.url} failed (fail_next)")
        if not self._available:
            raise StoreUnavailable(f"store {self.url} is unavailable (set_available)")
        if need_open and not self._open:
            raise StoreUnavailable(f"store {self.url} is not open")

    # -- lifecycle ----------------------------------------------------------

    async def open(self, *, migrate: bool = True) -> None:
        """Open the store (applies the migration names, for schema_version, unless
        ``migrate`` is False)."""
        self._check(need_open=False)
        self._open = True
        if migrate:
            await self.migrate()

    async def close(self) -> None:
        """Close; the data stays in this object (reopen sees it)."""
        self._open = False

    async def migrate(self) -> list[str]:
        """Record the SQL migrations as applied, so versions agree with SQL engines."""
        self._check()
        names = [m.name for m in migrate.load_migrations(SQLITE) if m.name not in self._applied]
        self._applied.extend(names)
        return names

    async def schema_version(self) -> int:
        """The number of the last applied migration."""
        self._check()
        return max((int(name[:4]) for name in self._applied), default=0)

    # -- submission ---------------------------------------------------------

    async def enqueue(self, message: NewMessage, now: float) -> EnqueueResult:
        """Store a message and one delivery per recipient."""
        txn.prepare_message(message, now)
        self._check()
        queue_id = txn.new_queue_id(now)
        while queue_id in self._queue_ids:
            queue_id = txn.new_queue_id(now)
        self._queue_ids.add(queue_id)
        message_pk = len(self._messages) + 1
        self._messages[message_pk] = _Message(message_pk, queue_id, message, now)
        recipients = []
        for rcpt in message.recipients:
            entry = self._suppressions.get(fold(rcpt.address))
            scoped = None if entry is not None else self._scoped_match(
                rcpt.address, message.stream, message.mailing_id, now)
            state = State.queued if entry is None and scoped is None else State.suppressed
            reason = entry.reason if entry is not None else \
                scoped.reason if scoped is not None else None
            why = GLOBAL_ENTRY_TEXT if entry is not None else \
                entry_text(scoped.scope, scoped.address) if scoped is not None else None
            delivery_id = next(self._ids)
            self._deliveries[delivery_id] = Delivery(
                delivery_id=delivery_id, message_pk=message_pk, queue_id=queue_id,
                sender=message.sender, recipient=rcpt.address,
                domain=domain_of(rcpt.address), state=state, reason=reason, hard=False,
                attempts=0, next_attempt_at=now if state is State.queued else None, code=None,
                status=None, text=why, remote_host=None, mailing_id=message.mailing_id,
                message_id=message.message_id, header_message_id=message.header_message_id,
                orcpt=rcpt.orcpt, created_at=now, updated_at=now, stream=message.stream,
            )
            self._priority[delivery_id] = 0
            kind = EventKind.queued if state is State.queued else EventKind.suppressed
            self._add_event(delivery_id, kind, now, state=state, reason=reason, text=why,
                            source=Source.local.value)
            recipients.append(EnqueuedRecipient(delivery_id, rcpt.address, state, reason))
        return EnqueueResult(queue_id, message_pk, tuple(recipients))

    def _add_event(
        self, delivery_id: int, kind: EventKind, at: float, *, state: State | None = None,
        reason: str | None = None, hard: bool = False, code: int | None = None,
        status: str | None = None, text: str | None = None, remote_host: str | None = None,
        remote_ip: str | None = None, tls: str | None = None, source: str | None = None,
        rule: str | None = None, duration: float | None = None, bounce_id: int | None = None,
        feedback_type: str | None = None, correlation: str | None = None,
        note: str | None = None,
    ) -> int:
        event_id = next(self._event_ids)
        self._events.setdefault(delivery_id, []).append(Event(
            event_id=event_id, delivery_id=delivery_id, kind=kind, at=at, state=state,
            reason=reason, hard=hard, code=code, status=status, text=text,
            remote_host=remote_host, remote_ip=remote_ip, tls=tls, source=source, rule=rule,
            duration=duration, bounce_id=bounce_id, feedback_type=feedback_type,
            correlation=correlation, note=note))
        return event_id

    def _update(self, delivery_id: int, **changes: Any) -> None:
        self._deliveries[delivery_id] = dataclasses.replace(
            self._deliveries[delivery_id], **changes)

    # -- delivery -----------------------------------------------------------

    async def claim_due(self, now: float, owner: str, lease_seconds: float, limit: int,
                        exclude_domains: Sequence[str] = ()) -> list[Delivery]:
        """Lease up to ``limit`` due deliveries for ``owner``."""
        self._check()
        excluded = {d.lower() for d in exclude_domains}
        due = [
            d for d in self._deliveries.values()
            if d.state in _PENDING and d.next_attempt_at is not None
            and d.next_attempt_at <= now and (d.lease_until is None or d.lease_until <= now)
            and d.domain not in excluded
        ]
        due.sort(key=lambda d: (self._priority[d.delivery_id], d.next_attempt_at,
                                d.delivery_id))
        claimed = []
        for d in due[:max(limit, 0)]:
            self._update(d.delivery_id, lease_owner=owner, lease_until=now + lease_seconds)
            claimed.append(self._deliveries[d.delivery_id])
        return claimed

    async def release(self, delivery_ids: Sequence[int], owner: str) -> None:
        """Give back leases held by ``owner``."""
        self._check()
        for delivery_id in delivery_ids:
            d = self._deliveries.get(delivery_id)
            if d is not None and d.lease_owner == owner:
                self._update(delivery_id, lease_owner=None, lease_until=None)

    async def release_owner(self, owner: str) -> int:
        """Give back every lease held by ``owner``."""
        self._check()
        mine = [i for i, d in self._deliveries.items() if d.lease_owner == owner]
        for delivery_id in mine:
            self._update(delivery_id, lease_owner=None, lease_until=None)
        return len(mine)

    async def load_body(self, message_pk: int) -> bytes:
        """The stored message bytes (KeyError when unknown)."""
        self._check()
        return self._messages[message_pk].message.body

    async def record_attempts(self, results: Sequence[AttemptResult]) -> list[int]:
        """Record attempt outcomes; a late result is kept as an event only."""
        txn.check_attempts(results)
        self._check()
        event_ids = []
        for r in results:
            d = self._deliveries.get(r.delivery_id)
            if d is None:
                continue
            state = State(r.state)
            reason = txn.text_of(r.reason)
            event_id = self._add_event(
                r.delivery_id, r.event_kind, r.at, state=state, reason=reason, hard=r.hard,
                code=r.code, status=r.status, text=r.text, remote_host=r.remote_host,
                remote_ip=r.remote_ip, tls=r.tls, source=txn.text_of(r.source), rule=r.rule,
                duration=r.duration)
            event_ids.append(event_id)
            if d.state in _PENDING and (r.owner is None or d.lease_owner == r.owner):
                deferred = state is State.deferred
                self._update(
                    r.delivery_id, state=state, reason=reason, hard=r.hard,
                    attempts=d.attempts + 1, code=r.code, status=r.status, text=r.text,
                    remote_host=r.remote_host,
                    next_attempt_at=r.next_attempt_at if deferred else None,
                    lease_owner=None, lease_until=None, updated_at=r.at,
                    delivered_at=r.at if state is State.delivered else d.delivered_at)
                self._priority[r.delivery_id] = 1 if deferred else 0
            if r.suppress:
                self._suppress(d.recipient, reason or Reason.undefined.value, r.at,
                               SuppressionSource.smtp.value, None, event_id)
        return event_ids

    async def retry_now(self, now: float, queue_id: str | None = None,
                        domain: str | None = None, delivery_id: int | None = None) -> int:
        """Make matching deferred deliveries due now; return how many."""
        self._check()
        count = 0
        for d in list(self._deliveries.values()):
            if d.state is not State.deferred:
                continue
            if queue_id is not None and d.queue_id != queue_id.upper():
                continue
            if domain is not None and d.domain != domain.lower():
                continue
            if delivery_id is not None and d.delivery_id != delivery_id:
                continue
            self._add_event(d.delivery_id, EventKind.retry, now, state=d.state,
                            source=Source.operator.value)
            self._update(d.delivery_id, next_attempt_at=now, updated_at=now)
            count += 1
        return count

    # -- returned mail ------------------------------------------------------

    async def store_bounce(self, message: ReturnedMessage) -> int:
        """Store a returned message as pending; return its id."""
        self._check()
        bounce_id = next(self._bounce_ids)
        envelope = message.envelope()
        self._bounces[bounce_id] = _Bounce(StoredBounce(
            bounce_id=bounce_id, raw=message.raw, mail_from=message.mail_from,
            rcpt_to=envelope[0].address, received_at=message.received_at,
            delivery_id=next((r.delivery_id for r in envelope if r.delivery_id is not None),
                             None),
            status=BounceStatus.pending.value,
            recipients=envelope))
        return bounce_id

    async def pending_bounces(self, limit: int) -> list[int]:
        """Ids of pending returned messages, oldest first."""
        self._check()
        pending = [b.stored for b in self._bounces.values()
                   if b.stored.status == BounceStatus.pending]
        pending.sort(key=lambda b: (b.received_at, b.bounce_id))
        return [b.bounce_id for b in pending[:limit]]

    async def load_bounce(self, bounce_id: int) -> StoredBounce | None:
        """One stored returned message."""
        self._check()
        bounce = self._bounces.get(bounce_id)
        return None if bounce is None else bounce.stored

    async def bounce_analysis(self, bounce_id: int) -> str | None:
        """The analysis JSON recorded for a returned message."""
        self._check()
        bounce = self._bounces.get(bounce_id)
        return None if bounce is None else bounce.analysis

    async def record_bounce(self, bounce_id: int, events: Sequence[BounceEvent], category: str,
                            correlation: str | None, analysis: str) -> list[int]:
        """Record the analysis of a returned message."""
        self._check()
        return self._record_bounce(bounce_id, events, category, correlation, analysis)

    async def record_bounces(self, records: Sequence[BounceRecord]) -> list[list[int]]:
        """Record several analyses at once: one availability check, all or nothing."""
        self._check()
        return [self._record_bounce(r.bounce_id, r.events, r.category, r.correlation,
                                    r.analysis) for r in records]

    def _record_bounce(self, bounce_id: int, events: Sequence[BounceEvent], category: str,
                       correlation: str | None, analysis: str) -> list[int]:
        bounce = self._bounces.get(bounce_id)
        if bounce is not None:
            bounce.stored = dataclasses.replace(bounce.stored, status=BounceStatus.analyzed.value,
                                                category=category, correlation=correlation)
            bounce.analysis, bounce.error = analysis, None
        event_ids = []
        for ev in events:
            d = self._deliveries.get(ev.delivery_id)
            if d is None:
                continue
            idem_key = txn.recorded_idem_key(ev)   # verified apart from unverified
            if idem_key is not None:
                if (ev.delivery_id, idem_key) in self._idem:
                    continue
                self._idem.add((ev.delivery_id, idem_key))
            kind = EventKind(ev.kind)
            decision = decide_bounce(ev, d.state, d.attempts)
            target = decision.target
            reason = txn.text_of(ev.reason)
            event_id = self._add_event(
                ev.delivery_id, kind, ev.at, state=target, reason=reason, hard=decision.hard,
                code=ev.code, status=ev.status, text=ev.text, remote_host=ev.remote_host,
                source=txn.text_of(ev.source), rule=ev.rule, bounce_id=ev.bounce_id,
                feedback_type=ev.feedback_type, correlation=txn.text_of(ev.correlation),
                note=decision.note)
            event_ids.append(event_id)
            if target is State.bounced:
                self._update(ev.delivery_id, state=target, reason=reason, hard=decision.hard,
                             code=ev.code, status=ev.status, text=ev.text,
                             remote_host=ev.remote_host or d.remote_host, bounced_at=ev.at,
                             updated_at=ev.at, next_attempt_at=None, lease_owner=None,
                             lease_until=None)
            elif target is State.complained:
                self._update(ev.delivery_id, state=target, reason=reason, hard=decision.hard,
                             updated_at=ev.at, next_attempt_at=None, lease_owner=None,
                             lease_until=None)
            stream = d.stream or DEFAULT_STREAM
            if decision.suppress and kind is EventKind.complaint and \
                    stream not in self.complaint_global_streams:
                key = (f"stream:{stream}", fold(d.recipient))
                self._scoped.setdefault(key, ScopedSuppression(
                    key[0], key[1], reason or kind.value, ev.at,
                    suppression_source(kind).value, event_id))
            elif decision.suppress:
                self._suppress(d.recipient, reason or kind.value, ev.at,
                               suppression_source(kind).value, None, event_id)
        return event_ids

    async def mark_bounce_failed(self, bounce_id: int, error: str) -> None:
        """Mark a returned message whose analysis failed."""
        self._check()
        bounce = self._bounces.get(bounce_id)
        if bounce is not None:
            bounce.stored = dataclasses.replace(bounce.stored, status=BounceStatus.failed.value)
            bounce.error = error

    async def purge_bounces(self, before: float, now: float, limit: int = 1000) -> int:
        """Drop the raw bytes of finished returned messages received before ``before``."""
        self._check()
        due = sorted((b.stored for b in self._bounces.values()
                      if b.stored.status != BounceStatus.pending and b.stored.purged_at is None
                      and b.stored.received_at < before),
                     key=lambda b: (b.received_at, b.bounce_id))[:max(limit, 0)]
        for stored in due:
            self._bounces[stored.bounce_id].stored = dataclasses.replace(
                stored, raw=b"", purged_at=now)
        return len(due)

    # -- reading ------------------------------------------------------------

    async def get_delivery(self, delivery_id: int) -> Delivery | None:
        """One delivery row, or None."""
        self._check()
        return self._deliveries.get(delivery_id)

    async def find_deliveries(self, *, recipient: str | None = None,
                              queue_id: str | None = None, mailing_id: str | None = None,
                              message_id: str | None = None,
                              header_message_id: str | None = None,
                              since: float | None = None, limit: int = 100) -> list[Delivery]:
        """Deliveries matching every filter, newest first."""
        self._check()

        def same(value: str | None, wanted: str | None) -> bool:
            return wanted is None or (value is not None
                                      and value.lower() == wanted.strip().lower())

        found = [
            d for d in self._deliveries.values()
            if same(d.recipient, recipient) and same(d.queue_id, queue_id)
            and same(d.mailing_id, mailing_id) and same(d.message_id, message_id)
            and same(d.header_message_id, header_message_id)
            and (since is None or d.created_at >= since)
        ]
        found.sort(key=lambda d: (d.created_at, d.delivery_id), reverse=True)
        return found[:limit]

    async def events(self, delivery_id: int) -> list[Event]:
        """Every event of a delivery, in order."""
        self._check()
        return list(self._events.get(delivery_id, []))

    async def events_after(self, after_event_id: int, limit: int) -> list[EventRecord]:
        """Events with ``event_id > after_event_id`` in id order (at most ``limit``)."""
        self._check()
        found = sorted((e for events in self._events.values() for e in events
                        if e.event_id > after_event_id), key=lambda e: e.event_id)
        records = []
        for e in found[:max(limit, 0)]:
            d = self._deliveries[e.delivery_id]
            records.append(EventRecord(
                event=e, queue_id=d.queue_id, recipient=d.recipient, sender=d.sender,
                mailing_id=d.mailing_id, message_id=d.message_id,
                header_message_id=d.header_message_id, delivery_state=d.state.value,
                delivery_created_at=d.created_at))
        return records

    async def outcomes(self, after_delivery_id: int = 0, limit: int = 1000, *,
                       state: str | None = None,
                       mailing_id: str | None = None,
                       stream: str | None = None) -> list[Outcome]:
        """One page of outcome records by delivery id."""
        self._check()
        wanted_state = None if state is None else str(getattr(state, "value", state))
        page = []
        for delivery_id in sorted(self._deliveries):
            if delivery_id <= after_delivery_id:
                continue
            d = self._deliveries[delivery_id]
            if wanted_state is not None and d.state.value != wanted_state:
                continue
            if mailing_id is not None and (
                    d.mailing_id is None or d.mailing_id.lower() != mailing_id.lower()):
                continue
            if stream is not None and (d.stream or DEFAULT_STREAM) != stream:
                continue
            page.append(Outcome(
                queue_id=d.queue_id, delivery_id=d.delivery_id, recipient=d.recipient,
                state=d.state.value, reason=d.reason, hard=d.hard, code=d.code,
                status=d.status, text=d.text, attempts=d.attempts, mailing_id=d.mailing_id,
                message_id=d.message_id, created_at=d.created_at, updated_at=d.updated_at,
                remote_host=d.remote_host, delivered_at=d.delivered_at,
                bounced_at=d.bounced_at, stream=d.stream or DEFAULT_STREAM))
            if len(page) >= limit:
                break
        return page

    async def summary(self, since: float | None = None, until: float | None = None) -> Summary:
        """Counts for deliveries created in [since, until)."""
        self._check()
        counts: dict[tuple[str, str | None], int] = {}
        messages = set()
        for d in self._deliveries.values():
            if (since is not None and d.created_at < since) or (
                    until is not None and d.created_at >= until):
                continue
            messages.add(d.message_pk)
            key = (d.state.value, d.reason)
            counts[key] = counts.get(key, 0) + 1
        return txn.make_summary(len(messages), [(s, r, n) for (s, r), n in counts.items()])

    async def queue_depth(self) -> dict[str, int]:
        """Deliveries per pending state."""
        self._check()
        depth = {s.value: 0 for s in PENDING_STATES}
        for d in self._deliveries.values():
            if d.state in _PENDING:
                depth[d.state.value] += 1
        return depth

    # -- report reads -------------------------------------------------------

    def _in_window(self, since: float | None, until: float | None) -> list[Delivery]:
        return [d for d in self._deliveries.values()
                if (since is None or d.created_at >= since)
                and (until is None or d.created_at < until)]

    async def timeseries(self, since: float, until: float,
                         bucket_seconds: float) -> list[tuple[float, dict[str, int]]]:
        """Deliveries created in [since, until) per time bucket and current state."""
        if bucket_seconds <= 0:
            raise ValueError("bucket_seconds must be positive")
        self._check()
        buckets: dict[int, dict[str, int]] = {}
        for d in self._in_window(since, until):
            counts = buckets.setdefault(int((d.created_at - since) // bucket_seconds), {})
            counts[d.state.value] = counts.get(d.state.value, 0) + 1
        return [(since + n * bucket_seconds, buckets[n]) for n in sorted(buckets)]

    async def top_domains(self, since: float | None, until: float | None,
                          limit: int = 10) -> list[DomainStats]:
        """The destination domains with most deliveries created in the window."""
        self._check()
        domains: dict[str, dict[str, int]] = {}
        for d in self._in_window(since, until):
            counts = domains.setdefault(d.domain, {})
            counts[d.state.value] = counts.get(d.state.value, 0) + 1
        found = [DomainStats(name, sum(c.values()), c) for name, c in domains.items()]
        found.sort(key=lambda s: (-s.total, s.domain))
        return found[:max(0, min(limit, txn.MAX_REPORT_ROWS))]

    async def bounce_reasons(self, since: float | None, until: float | None,
                             limit: int = 50) -> list[ReasonCount]:
        """Failed and bounced deliveries by reason, most first."""
        self._check()
        counts: dict[str, list[int]] = {}
        for d in self._in_window(since, until):
            if d.state in (State.failed, State.bounced):
                pair = counts.setdefault(d.reason or Reason.undefined.value, [0, 0])
                pair[0 if d.state is State.failed else 1] += 1
        found = [ReasonCount(r, s, a) for r, (s, a) in counts.items()]
        found.sort(key=lambda r: (-r.total, r.reason))
        return found[:max(0, min(limit, txn.MAX_REPORT_ROWS))]

    async def deferred_by_domain(self, limit: int = 100) -> list[DeferredDomain]:
        """The deferred queue grouped by destination domain, largest first."""
        self._check()
        groups: dict[str, list[Delivery]] = {}
        for d in self._deliveries.values():
            if d.state is State.deferred:
                groups.setdefault(d.domain, []).append(d)
        found = []
        for name, rows in groups.items():
            due = [d.next_attempt_at for d in rows if d.next_attempt_at is not None]
            found.append(DeferredDomain(
                domain=name, count=len(rows), oldest_created_at=min(d.created_at for d in rows),
                next_attempt_at=min(due) if due else None,
                last_update=max(d.updated_at for d in rows)))
        found.sort(key=lambda g: (-g.count, g.domain))
        return found[:max(0, min(limit, txn.MAX_REPORT_ROWS))]

    async def oldest_pending(self) -> float | None:
        """``created_at`` of the oldest queued or deferred delivery."""
        self._check()
        return min((d.created_at for d in self._deliveries.values() if d.state in _PENDING),
                   default=None)

    async def mailing_summary(self, mailing_id: str) -> Summary:
        """Counts for every delivery of a mailing."""
        self._check()
        wanted = mailing_id.lower()
        counts: dict[tuple[str, str | None], int] = {}
        messages = set()
        for d in self._deliveries.values():
            if d.mailing_id is None or d.mailing_id.lower() != wanted:
                continue
            messages.add(d.message_pk)
            counts[(d.state.value, d.reason)] = counts.get((d.state.value, d.reason), 0) + 1
        return txn.make_summary(len(messages), [(s, r, n) for (s, r), n in counts.items()])

    async def get_message(self, queue_id: str) -> StoredMessage | None:
        """A message's envelope and identifiers by queue id, or None."""
        self._check()
        wanted = queue_id.strip().upper()
        for m in self._messages.values():
            if m.queue_id == wanted:
                msg = m.message
                return StoredMessage(
                    message_pk=m.message_pk, queue_id=m.queue_id, sender=msg.sender,
                    mailing_id=msg.mailing_id, message_id=msg.message_id,
                    header_message_id=msg.header_message_id, size=len(msg.body),
                    source=msg.source, client=msg.client, metadata=dict(msg.metadata),
                    created_at=m.created_at)
        return None

    async def search_deliveries(self, *, recipient: str | None = None,
                                queue_id: str | None = None, mailing_id: str | None = None,
                                message_id: str | None = None, state: str | None = None,
                                domain: str | None = None, since: float | None = None,
                                until: float | None = None,
                                before_delivery_id: int | None = None,
                                limit: int = 50, stream: str | None = None) -> list[Delivery]:
        """One page of deliveries matching every filter, newest first (keyset)."""
        self._check()

        def same(value: str | None, wanted: str | None) -> bool:
            return wanted is None or (value is not None
                                      and value.lower() == wanted.strip().lower())

        wanted_state = None if state is None else str(getattr(state, "value", state))
        found: list[Delivery] = []
        if limit <= 0:
            return found
        for delivery_id in sorted(self._deliveries, reverse=True):
            d = self._deliveries[delivery_id]
            if before_delivery_id is not None and delivery_id >= before_delivery_id:
                continue
            if not (same(d.recipient, recipient) and same(d.queue_id, queue_id)
                    and same(d.mailing_id, mailing_id) and same(d.message_id, message_id)
                    and same(d.domain, domain)
                    and (wanted_state is None or d.state.value == wanted_state)
                    and (since is None or d.created_at >= since)
                    and (until is None or d.created_at < until)
                    and (stream is None or (d.stream or DEFAULT_STREAM) == stream)):
                continue
            found.append(d)
            if len(found) >= min(limit, txn.MAX_REPORT_ROWS):
                break
        return found

    # -- suppression --------------------------------------------------------

    def _suppress(self, address: str, reason: str, now: float, source: str | None,
                  note: str | None, event_id: int | None) -> bool:
        key = fold(address)
        if key in self._suppressions:
            return False
        self._suppressions[key] = Suppression(key, reason, now, source, event_id, note)
        return True

    async def suppress(self, address: str, reason: str, now: float, source: str | None = None,
                       note: str | None = None, event_id: int | None = None) -> bool:
        """Add an address (lower-cased); False when it was already there."""
        self._check()
        return self._suppress(address, reason, now, source, note, event_id)

    async def unsuppress(self, address: str) -> bool:
        """Remove an address; False when it was not there."""
        self._check()
        return self._suppressions.pop(fold(address), None) is not None

    async def get_suppression(self, address: str) -> Suppression | None:
        """The suppression entry of an address, or None."""
        self._check()
        return self._suppressions.get(fold(address))

    async def suppressions(self, after: str | None = None,
                           limit: int = 1000) -> list[Suppression]:
        """One page of the suppression list ordered by address."""
        self._check()
        start = fold(after) if after else ""
        keys = sorted(k for k in self._suppressions if k > start)
        return [self._suppressions[k] for k in keys[:limit]]

    # -- scoped suppression, unsubscribes (issue 20) ------------------------

    def _scoped_match(self, address: str, stream: str | None, mailing_id: str | None,
                      now: float) -> ScopedSuppression | None:
        key = fold(address)
        for scope_key in ((f"stream:{stream or DEFAULT_STREAM}", key),
                          (f"mailing:{mailing_id}" if mailing_id else "", key),
                          ("domain", domain_of(key))):
            entry = self._scoped.get(scope_key)
            if entry is not None and (entry.expires_at is None or entry.expires_at > now):
                return entry
        return None

    async def add_suppression(self, scope: str, address: str, reason: str, now: float,
                              source: str | None = None, note: str | None = None,
                              event_id: int | None = None,
                              expires_at: float | None = None) -> bool:
        """Add an entry of any scope; False when it was already there."""
        self._check()
        if scope == GLOBAL:
            return self._suppress(address, reason, now, source, note, event_id)
        key = fold(address).rpartition("@")[2] if scope == "domain" else fold(address)
        if (scope, key) in self._scoped:
            return False
        self._scoped[(scope, key)] = ScopedSuppression(scope, key, reason, now, source,
                                                       event_id, note, expires_at)
        return True

    async def remove_suppression(self, scope: str, address: str) -> bool:
        """Remove an entry of any scope; False when there was none."""
        self._check()
        if scope == GLOBAL:
            return self._suppressions.pop(fold(address), None) is not None
        key = fold(address).rpartition("@")[2] if scope == "domain" else fold(address)
        return self._scoped.pop((scope, key), None) is not None

    def _as_scoped(self, s: Suppression) -> ScopedSuppression:
        return ScopedSuppression(GLOBAL, s.address, s.reason, s.created_at, s.source,
                                 s.event_id, s.note)

    async def suppression_entries(self, address: str) -> list[ScopedSuppression]:
        """Every entry naming an address or its domain, global first."""
        self._check()
        key = fold(address)
        found = [self._as_scoped(e) for e in [self._suppressions.get(key)] if e is not None]
        return found + sorted((e for (_, a), e in self._scoped.items()
                               if a in (key, domain_of(key))), key=lambda e: e.scope)

    async def list_suppressions(self, scope: str | None = None,
                                after: tuple[str, str] | None = None,
                                limit: int = 1000) -> list[ScopedSuppression]:
        """One page of entries of every scope (or of one), global first."""
        self._check()
        rows = [(0, GLOBAL, k, self._as_scoped(e)) for k, e in self._suppressions.items()]
        rows += [(1, sc, a, e) for (sc, a), e in self._scoped.items()]
        rows = [r for r in sorted(rows, key=lambda r: r[:3])
                if scope is None or r[1] == scope or (scope == "scoped" and r[0] == 1)]
        if after is not None:
            mark = (0 if after[0] == GLOBAL else 1, *after)
            rows = [r for r in rows if r[:3] > mark]
        return [r[3] for r in rows[:limit]]

    async def record_unsubscribe(self, delivery_id: int, stream: str, now: float,
                                 via: str) -> UnsubscribeOutcome:
        """Record a verified unsubscribe (event and stream entry), idempotently."""
        self._check()
        delivery = self._deliveries.get(delivery_id)
        if delivery is None:
            return UnsubscribeOutcome(False, False)
        if (f"stream:{stream}", fold(delivery.recipient)) in self._scoped:
            return UnsubscribeOutcome(True, False)
        event_id = self._add_event(
            delivery_id, EventKind.unsubscribed, now, source=Source.local.value,
            text=f"unsubscribed from stream {stream} ({via})")
        added = await self.add_suppression(f"stream:{stream}", delivery.recipient,
                                           "unsubscribed", now,
                                           SuppressionSource.unsubscribe.value, None, event_id)
        return UnsubscribeOutcome(True, added, event_id)

    async def message_stream(self, delivery_id: int) -> str | None:
        """The stream of a delivery's message (None: the default one)."""
        self._check()
        delivery = self._deliveries.get(delivery_id)
        return None if delivery is None else delivery.stream

    # -- the report's mailings, settling and queue pages (issue 18) ---------

    async def discover_mailings(self, limit: int = 20000) -> int:
        """Register the mailings of messages past the mark (see the interface)."""
        self._check()
        mark = self._marks.get("mailings", 0)
        start = max(0, mark - reports.DISCOVERY_MARGIN)
        rows = [m for pk, m in sorted(self._messages.items())
                if pk > start and m.message.mailing_id is not None]
        rows = rows[:max(0, limit) + reports.DISCOVERY_MARGIN]
        new = 0
        for m in rows:
            mailing_id = m.message.mailing_id
            assert mailing_id is not None
            key = mailing_id.lower()
            if key not in self._mailings:
                self._mailings[key] = MailingEntry(key, mailing_id, m.created_at)
            if m.message_pk > mark:
                new += 1
                self._marks["mailings"] = max(self._marks.get("mailings", 0), m.message_pk)
        return new

    async def mailings(self, before: tuple[float, str] | None = None,
                       limit: int = 25) -> list[MailingEntry]:
        """One page of the registered mailings, newest first."""
        self._check()
        entries = sorted(self._mailings.values(), key=lambda e: (e.first_at, e.mailing_key),
                         reverse=True)
        if before is not None:
            entries = [e for e in entries if (e.first_at, e.mailing_key) < before]
        return entries[:max(0, min(limit, txn.MAX_REPORT_ROWS))]

    def _mailing_deliveries(self, mailing_id: str) -> list[Delivery]:
        wanted = mailing_id.lower()
        return [d for d in self._deliveries.values()
                if d.mailing_id is not None and d.mailing_id.lower() == wanted]

    @staticmethod
    def _settle_counts(rows: Sequence[Delivery], delays: Mapping[str, float],
                       default_delay: float, now: float) -> SettleCounts:
        by_state: dict[str, int] = {}
        settled = 0
        settles: list[float] = []
        for d in rows:
            by_state[d.state.value] = by_state.get(d.state.value, 0) + 1
            if d.state in reports.FINAL_OUTCOME_STATES:
                settled += 1
            elif d.state is State.delivered and d.delivered_at is not None:
                at = d.delivered_at + delays.get(d.domain, default_delay)
                settles.append(at)
                settled += at <= now
        delivered = [d.delivered_at for d in rows if d.delivered_at is not None]
        return SettleCounts(by_state, settled, max(settles) if settles else None,
                            max(delivered) if delivered else None)

    async def mailing_outcomes(self, mailing_id: str, delays: Mapping[str, float],
                               default_delay: float, now: float,
                               domains: int = 0) -> MailingOutcomes | None:
        """A mailing's recipients by state and how far they settled at ``now``."""
        self._check()
        wanted = mailing_id.lower()
        ids = sorted(m.message.mailing_id for m in self._messages.values()
                     if m.message.mailing_id is not None
                     and m.message.mailing_id.lower() == wanted)
        if not ids:
            return None
        delays = {k.lower(): v for k, v in delays.items()}
        rows = self._mailing_deliveries(mailing_id)
        by_domain: dict[str, list[Delivery]] = {}
        for d in rows:
            by_domain.setdefault(d.domain, []).append(d)
        top = sorted(by_domain, key=lambda name: (-len(by_domain[name]), name))
        top = top[:max(0, min(domains, txn.MAX_REPORT_ROWS))]
        return MailingOutcomes(
            mailing_id=ids[0], messages=len(ids),
            first_at=min((d.created_at for d in rows), default=None),
            last_at=max((d.created_at for d in rows), default=None),
            total=self._settle_counts(rows, delays, default_delay, now),
            domains=tuple((name, self._settle_counts(by_domain[name], delays, default_delay,
                                                     now)) for name in top))

    async def save_mailing_rollups(self, rollups: Sequence[MailingRollup]) -> None:
        """Store mailings' figures for the index."""
        self._check()
        for r in rollups:
            known = self._mailings.get(r.mailing_key)
            first_at = known.first_at if known is not None else r.first_at
            mailing_id = known.mailing_id if known is not None else r.mailing_id
            self._mailings[r.mailing_key] = MailingEntry(
                r.mailing_key, mailing_id, first_at,
                dataclasses.replace(r, mailing_id=mailing_id, first_at=first_at))

    def _late(self) -> list[Delivery]:
        return [d for d in self._deliveries.values()
                if d.state in (State.bounced, State.complained) and d.delivered_at is not None]

    @staticmethod
    def _latency(d: Delivery) -> float:
        assert d.delivered_at is not None
        at = d.bounced_at if d.bounced_at is not None else d.updated_at
        return at - d.delivered_at

    async def late_outcomes(self, since: float, limit: int) -> list[LateOutcome]:
        """The most recent late outcomes since ``since``, newest first."""
        self._check()
        found = sorted((d for d in self._late() if d.updated_at >= since),
                       key=lambda d: d.updated_at, reverse=True)
        return [LateOutcome(d.domain, d.state.value, self._latency(d))
                for d in found[:max(0, min(limit, reports.MAX_LATE_SAMPLE))]]

    async def mailing_latencies(self, mailing_id: str,
                                edges: Sequence[float]) -> list[tuple[int, str, int]]:
        """A mailing's late outcomes per delay bucket: (bucket, state, count)."""
        self._check()
        counts: dict[tuple[int, str], int] = {}
        wanted = mailing_id.lower()
        for d in self._late():
            if d.mailing_id is None or d.mailing_id.lower() != wanted:
                continue
            latency = self._latency(d)
            bucket = next((i for i, edge in enumerate(edges) if latency < edge), len(edges))
            counts[(bucket, d.state.value)] = counts.get((bucket, d.state.value), 0) + 1
        return [(b, s, n) for (b, s), n in sorted(counts.items())]

    async def outcome_series(self, since: float, until: float, origin: float,
                             bucket_seconds: float, mailing_id: str | None = None
                             ) -> list[tuple[float, dict[str, int]]]:
        """Deliveries created in [since, until) per bucket from ``origin`` and state."""
        if bucket_seconds <= 0:
            raise ValueError("bucket_seconds must be positive")
        self._check()
        rows = self._in_window(since, until)
        if mailing_id is not None:
            wanted = mailing_id.lower()
            rows = [d for d in rows if d.mailing_id is not None
                    and d.mailing_id.lower() == wanted]
        buckets: dict[int, dict[str, int]] = {}
        for d in rows:
            counts = buckets.setdefault(int((d.created_at - origin) // bucket_seconds), {})
            counts[d.state.value] = counts.get(d.state.value, 0) + 1
        return [(origin + n * bucket_seconds, buckets[n]) for n in sorted(buckets)]

    async def created_span(self, since: float, until: float) -> tuple[float, float] | None:
        """The first and last creation time of deliveries in [since, until)."""
        self._check()
        times = [d.created_at for d in self._in_window(since, until)]
        return (min(times), max(times)) if times else None

    async def mailing_bounce_reasons(self, mailing_id: str,
                                     limit: int = 50) -> list[ReasonCount]:
        """A mailing's failed and bounced recipients by reason, most first."""
        self._check()
        counts: dict[str, list[int]] = {}
        for d in self._mailing_deliveries(mailing_id):
            if d.state in (State.failed, State.bounced):
                pair = counts.setdefault(d.reason or Reason.undefined.value, [0, 0])
                pair[0 if d.state is State.failed else 1] += 1
        found = [ReasonCount(r, s, a) for r, (s, a) in counts.items()]
        found.sort(key=lambda r: (-r.total, r.reason))
        return found[:max(0, min(limit, txn.MAX_REPORT_ROWS))]

    async def deferred_domains(self, limit: int = 100) -> list[DeferredQueueDomain]:
        """The deferred queue by domain, with each one's last error."""
        self._check()
        found = []
        for g in await self.deferred_by_domain(limit):
            last = max((d for d in self._deliveries.values()
                        if d.state is State.deferred and d.domain == g.domain),
                       key=lambda d: (d.updated_at, d.delivery_id))
            found.append(DeferredQueueDomain(
                g.domain, g.count, g.oldest_created_at, g.next_attempt_at, g.last_update,
                last.code, last.status, last.text, last.remote_host))
        return found

    async def suppression_causes(self, event_ids: Sequence[int]) -> dict[int, int]:
        """The delivery of each event id that still exists."""
        self._check()
        wanted = set(event_ids)
        return {e.event_id: e.delivery_id for events in self._events.values() for e in events
                if e.event_id in wanted}

    async def suppression_count(self) -> int:
        """How many addresses are on the suppression list."""
        self._check()
        return len(self._suppressions)
