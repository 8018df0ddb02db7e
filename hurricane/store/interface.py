"""The storage interface: Hurricane's domain operations, no SQL.

Every method is a coroutine (``async def``); Twisted callers wrap it with
``Deferred.fromCoroutine``. Engines: ``memory`` (tests: the SQLite engine on
an in-memory database, run inline), ``sqlite`` (the zero-setup default) and
``postgres`` (production; several nodes may share one database). All three
are :class:`hurricane.store.base.SqlStore`, one implementation of these
operations, and pass ``tests/store/contract.py`` unchanged.

Errors: any failure to reach or write the database raises
:class:`StoreUnavailable` (a :class:`StoreError`); callers turn it into an SMTP
451 or an HTTP 503, never a permanent refusal, and the reactor keeps running.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from zope.interface import Attribute, Interface

from hurricane.model import (
    AttemptResult,
    BounceEvent,
    DeferredDomain,
    Delivery,
    DomainStats,
    EnqueueResult,
    Event,
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
from hurricane.store.suppression import ScopedSuppression, UnsubscribeOutcome


@dataclass(frozen=True)
class BounceRecord:
    """The analysis of one returned message, as ``record_bounces`` takes it.

    The fields are the arguments of :meth:`IOutcomeStore.record_bounce`.
    """

    bounce_id: int
    events: Sequence[BounceEvent]
    category: str
    correlation: str | None
    analysis: str


class _StateCounts:
    """Totals of a ``by_state`` count (recipients per state), shared by the reads
    that return one."""

    by_state: Mapping[str, int]

    @property
    def recipients(self) -> int:
        """Every recipient counted."""
        return sum(self.by_state.values())

    @property
    def pending(self) -> int:
        """Recipients still queued or deferred."""
        return sum(self.by_state.get(s.value, 0) for s in (State.queued, State.deferred))


@dataclass(frozen=True)
class SettleCounts(_StateCounts):
    """Recipients of a mailing (or of one of its domains) by state, and how far they settled.

    Attributes:
        by_state: recipients per state (states with none are absent).
        settled: recipients with a final outcome at the time asked about: a
            final state (failed, expired, suppressed, bounced, complained),
            or delivered longer ago than their domain's settling delay.
        settles_at: when the last delivered recipient settles (its
            ``delivered_at`` plus its domain's delay); None when none is delivered.
        last_delivered_at: the latest ``delivered_at`` (any state).
    """

    by_state: Mapping[str, int]
    settled: int
    settles_at: float | None
    last_delivered_at: float | None


@dataclass(frozen=True)
class MailingOutcomes:
    """What :meth:`IOutcomeStore.mailing_outcomes` computes for one mailing.

    Attributes:
        mailing_id: the mailing id as one of its messages carries it.
        messages: messages of the mailing.
        first_at: creation of its first delivery.
        last_at: creation of its last delivery.
        total: every recipient.
        domains: the largest destination domains, most recipients first.
    """

    mailing_id: str
    messages: int
    first_at: float | None
    last_at: float | None
    total: SettleCounts
    domains: tuple[tuple[str, SettleCounts], ...] = ()


@dataclass(frozen=True)
class MailingRollup(_StateCounts):
    """A mailing's figures as the mailings index keeps them (computed at ``computed_at``).

    ``by_state``, ``settled`` and ``settles_at`` are those of
    :attr:`MailingOutcomes.total` at that time.
    """

    mailing_key: str
    mailing_id: str
    first_at: float
    computed_at: float
    last_at: float | None
    messages: int
    by_state: Mapping[str, int]
    settled: int
    settles_at: float | None


@dataclass(frozen=True)
class MailingEntry:
    """One mailing of the index: registered when its first message was seen.

    Attributes:
        mailing_key: the mailing id lower-cased (mailing ids compare so).
        mailing_id: the id as a message carried it.
        first_at: creation of its first message.
        rollup: its figures as last computed (None: not yet).
    """

    mailing_key: str
    mailing_id: str
    first_at: float
    rollup: MailingRollup | None = None


@dataclass(frozen=True)
class LateOutcome:
    """One late outcome: the remote accepted, then an NDR or a complaint came.

    Attributes:
        domain: the recipient's domain.
        state: ``bounced`` or ``complained``.
        seconds: from ``delivered_at`` to the NDR (or the complaint).
    """

    domain: str
    state: str
    seconds: float


@dataclass(frozen=True)
class DeferredQueueDomain:
    """The deferred deliveries to one domain and the last error among them.

    The last error is the last reply of the domain's most recently updated
    deferred delivery (code, enhanced status, text, remote host).
    """

    domain: str
    count: int
    oldest_created_at: float
    next_attempt_at: float | None
    last_update: float
    code: int | None = None
    status: str | None = None
    text: str | None = None
    remote_host: str | None = None


class StoreError(Exception):
    """Base class of every error the store raises."""


class StoreUnavailable(StoreError):
    """The database could not be reached or could not commit; try again later."""


class StoreConfigError(StoreError):
    """The store URL or its options are wrong (names the URL, without password)."""


class IOutcomeStore(Interface):
    """Durable queue, outcome records, returned messages and the suppression list."""

    complaint_global_streams = Attribute(
        "frozenset of stream names whose complaints suppress in every stream "
        "([[streams]] complaint_global); other complaints suppress their stream only")

    url = Attribute("The store URL with any password removed, for messages and logs.")

    async def open(*, migrate: bool = True) -> None:
        """Connect and, unless ``migrate`` is False, apply pending migrations.

        ``migrate=False`` is for tools that must see the schema as it is
        (``hurricane migrate`` reports "0 -> 5", ``check-config --connect``
        reports the version without changing it). Raises StoreUnavailable
        naming the URL.
        """

    async def close() -> None:
        """Close every connection. Safe to call twice."""

    async def migrate() -> list[str]:
        """Apply pending numbered migrations; return the names applied (may be empty)."""

    async def schema_version() -> int:
        """The number of the last applied migration (0 for an empty database)."""

    # -- submission ---------------------------------------------------------

    async def enqueue(message: NewMessage, now: float) -> EnqueueResult:
        """Durably store a message and one delivery row per recipient, atomically.

        Recipients on the suppression list (compared case-insensitively) get
        state ``suppressed`` with the suppression's reason and a ``suppressed``
        event instead of being queued. The others are ``queued`` and due at
        ``now``. When this returns, everything is committed: the caller may
        answer 250. Concurrent calls may be committed together (group commit).
        """

    # -- delivery -----------------------------------------------------------

    async def claim_due(
        now: float,
        owner: str,
        lease_seconds: float,
        limit: int,
        exclude_domains: Sequence[str] = (),
    ) -> list[Delivery]:
        """Lease up to ``limit`` due deliveries (queued/deferred, due, unleased or
        lease expired) for ``owner`` until ``now + lease_seconds``.

        New mail (no attempt yet) comes before retries, then by due time. On
        PostgreSQL rows are taken with ``FOR UPDATE SKIP LOCKED`` so two nodes
        never claim the same row.
        """

    async def release(delivery_ids: Sequence[int], owner: str) -> None:
        """Give back leases held by ``owner`` without recording an attempt."""

    async def release_owner(owner: str) -> int:
        """Give back every lease ``owner`` holds; return how many.

        A node calls this at start-up with its stable node id: whatever it
        had claimed before a crash is due again at once instead of waiting
        for the leases to expire.
        """

    async def load_body(message_pk: int) -> bytes:
        """The stored message bytes."""

    async def record_attempts(results: Sequence[AttemptResult]) -> list[int]:
        """Record attempt outcomes in one transaction; return the event ids.

        Each result appends an ``attempt`` event (``expired`` event for state
        ``expired``), increments ``attempts``, stores the last code / status /
        text / remote host, clears the lease and moves the state, but only when
        the delivery is still pending and the lease (if ``owner`` is given) is
        still the writer's: a late result from a node that lost its lease is
        kept as an event only. ``suppress`` adds the recipient to the
        suppression list with the reason.
        """

    async def retry_now(
        now: float, queue_id: str | None = None, domain: str | None = None,
        delivery_id: int | None = None,
    ) -> int:
        """Make matching deferred deliveries due now; return how many."""

    # -- returned mail ------------------------------------------------------

    async def store_bounce(message: ReturnedMessage) -> int:
        """Durably store a received message (status ``pending``); return its id.

        One stored message per SMTP transaction: the raw bytes once, and
        every envelope recipient (``message.envelope()``) with the delivery
        its verified token names, read back in ``StoredBounce.recipients``.
        """

    async def pending_bounces(limit: int) -> list[int]:
        """Ids of stored returned messages not yet analyzed, oldest first."""

    async def load_bounce(bounce_id: int) -> StoredBounce | None:
        """One stored returned message with its raw bytes."""

    async def bounce_analysis(bounce_id: int) -> str | None:
        """The analysis JSON recorded for a returned message (None: not analyzed, or none).

        The recipient page reads each event's evidence and decision from it
        (docs/bounce-reasons.md) without loading the raw message.
        """

    async def record_bounce(
        bounce_id: int,
        events: Sequence[BounceEvent],
        category: str,
        correlation: str | None,
        analysis: str,
    ) -> list[int]:
        """Record the analysis of a returned message in one transaction.

        Marks the returned message ``analyzed`` with its category, correlation
        key and the analysis JSON, then applies each event: an event whose
        ``idem_key`` was already recorded for that delivery, by an event as
        verified as itself, is skipped (an unverified event never makes a
        verified one with its key a no-op); what
        the others change is :func:`hurricane.decisions.decide_bounce`'s to
        say, in every engine. Matched by a verified key, ``bounce`` with
        ``permanent`` or ``final`` moves a sent queued, deferred or delivered
        row to ``bounced`` (with reason, the decided hard, codes, text,
        ``bounced_at``), ``complaint`` moves a delivered or bounced row to
        ``complained``, and a decided suppression adds the recipient to the
        suppression list citing the event. Matched by a weak key, the event is
        recorded with the note "recorded, not applied: unverified correlation"
        and changes nothing.
        ``delayed``, ``autoreply`` and ``relayed`` only add an event. Returns
        the ids of the events written (skipped duplicates are not listed).
        """

    async def record_bounces(records: Sequence[BounceRecord]) -> list[list[int]]:
        """Record the analyses of several returned messages in one transaction.

        Each record is applied exactly as :meth:`record_bounce` would, in
        order (a later record sees what an earlier one changed). Either all
        are written or none (StoreUnavailable). Returns, per record, the ids
        of the events written. One commit for many messages: the bounce
        processor's batches cost one fsync instead of one each.
        """

    async def mark_bounce_failed(bounce_id: int, error: str) -> None:
        """Mark a returned message whose analysis failed (kept for replay)."""

    async def purge_bounces(before: float, now: float, limit: int = 1000) -> int:
        """Drop the raw bytes of finished returned messages received before ``before``.

        Retention (``[bounce] retention``): up to ``limit`` messages whose
        status is ``analyzed`` or ``failed`` and whose bytes are still kept,
        oldest first, get an empty ``raw`` and ``purged_at = now``; their
        analysis, recipients and events stay. Pending messages are never
        purged. Returns how many were purged (call again while it returns
        ``limit``).
        """

    # -- reading ------------------------------------------------------------

    async def get_delivery(delivery_id: int) -> Delivery | None:
        """One delivery row, or None."""

    async def get_deliveries(delivery_ids: Sequence[int]) -> dict[int, Delivery]:
        """The delivery rows of ``delivery_ids`` that exist, by id (one read)."""

    async def find_deliveries(
        *,
        recipient: str | None = None,
        queue_id: str | None = None,
        mailing_id: str | None = None,
        message_id: str | None = None,
        header_message_id: str | None = None,
        since: float | None = None,
        limit: int = 100,
    ) -> list[Delivery]:
        """Deliveries matching every given filter (addresses and ids compared
        case-insensitively), newest first."""

    async def events(delivery_id: int) -> list[Event]:
        """Every event of a delivery, in order."""

    async def events_after(after_event_id: int, limit: int) -> list[EventRecord]:
        """Up to ``limit`` events with ``event_id > after_event_id``, in id order.

        Each comes with its delivery's recipient, sender, current state and
        its message's identifiers: the feed webhooks and the accounting log
        follow, keeping the last event id they handled.
        """

    async def outcomes(
        after_delivery_id: int = 0,
        limit: int = 1000,
        *,
        state: str | None = None,
        mailing_id: str | None = None,
        stream: str | None = None,
    ) -> list[Outcome]:
        """One page of outcome records ordered by delivery id (keyset paging)."""

    async def summary(since: float | None = None, until: float | None = None) -> Summary:
        """Counts by state and reason for deliveries created in the window."""

    async def queue_depth() -> dict[str, int]:
        """Number of deliveries per pending state (queued, deferred)."""

    # -- report reads (bounded, index-backed) ------------------------------

    async def timeseries(since: float, until: float,
                         bucket_seconds: float) -> list[tuple[float, dict[str, int]]]:
        """Deliveries created in [since, until) counted per time bucket and current state.

        Returns (bucket start, {state: count}) for the non-empty buckets, in
        time order. Raises ValueError when ``bucket_seconds`` is not positive.
        """

    async def top_domains(since: float | None, until: float | None,
                          limit: int = 10) -> list[DomainStats]:
        """The destination domains with most deliveries created in the window."""

    async def bounce_reasons(since: float | None, until: float | None,
                             limit: int = 50) -> list[ReasonCount]:
        """Failed (synchronous) and bounced (asynchronous) deliveries by reason, most first."""

    async def deferred_by_domain(limit: int = 100) -> list[DeferredDomain]:
        """The deferred queue grouped by destination domain, largest first."""

    async def oldest_pending() -> float | None:
        """``created_at`` of the oldest queued or deferred delivery (None when none)."""

    async def mailing_summary(mailing_id: str) -> Summary:
        """Counts for every delivery of a mailing (id compared case-insensitively)."""

    async def get_message(queue_id: str) -> StoredMessage | None:
        """A message's envelope and identifiers (no body) by queue id, or None."""

    async def search_deliveries(
        *,
        recipient: str | None = None,
        queue_id: str | None = None,
        mailing_id: str | None = None,
        message_id: str | None = None,
        state: str | None = None,
        domain: str | None = None,
        since: float | None = None,
        until: float | None = None,
        before_delivery_id: int | None = None,
        limit: int = 50,
        stream: str | None = None,
    ) -> list[Delivery]:
        """One page of deliveries matching every filter, newest (highest id) first.

        Keyset paging: pass the last delivery id of a page as
        ``before_delivery_id`` to get the next one.
        """

    # -- suppression --------------------------------------------------------

    async def suppress(
        address: str, reason: str, now: float, source: str | None = None,
        note: str | None = None, event_id: int | None = None,
    ) -> bool:
        """Add an address (lower-cased); return False when it was already there."""

    async def unsuppress(address: str) -> bool:
        """Remove an address; return False when it was not there."""

    async def get_suppression(address: str) -> Suppression | None:
        """The suppression entry of an address, or None."""

    async def suppressions(after: str | None = None, limit: int = 1000) -> list[Suppression]:
        """One page of the suppression list ordered by address."""

    # -- scoped suppression, unsubscribes (issue 20) ------------------------

    async def add_suppression(scope: str, address: str, reason: str, now: float,
                              source: str | None = None, note: str | None = None,
                              event_id: int | None = None,
                              expires_at: float | None = None) -> bool:
        """Add an entry: scope ``global``, ``stream:NAME``, ``mailing:ID`` or
        ``domain`` (address = the domain); False when it was already there."""

    async def remove_suppression(scope: str, address: str) -> bool:
        """Remove an entry of any scope; False when there was none."""

    async def suppression_entries(address: str) -> list[ScopedSuppression]:
        """Every entry naming an address or its domain, global first."""

    async def list_suppressions(scope: str | None = None, after: tuple[str, str] | None = None,
                                limit: int = 1000) -> list[ScopedSuppression]:
        """One page of entries of every scope (or one): global by address, then
        the others by (scope, address); ``after`` is the last (scope, address)."""

    async def record_unsubscribe(delivery_id: int, stream: str, now: float,
                                 via: str) -> UnsubscribeOutcome:
        """Record a verified unsubscribe: an ``unsubscribed`` event on the
        delivery and a ``stream:NAME`` entry for its recipient; a repeat
        records nothing, an unknown delivery nothing at all."""

    async def message_stream(delivery_id: int) -> str | None:
        """The stream of a delivery's message (None: the default one)."""

    # -- the report's mailings, settling and queue pages (issue 18) ---------

    async def discover_mailings(limit: int = 20000) -> int:
        """Register the mailings of the messages stored since the last call.

        Reads up to ``limit`` messages that carry a mailing id, past the mark
        the previous call left (by ``message_pk``, from a margin below it: on
        PostgreSQL a smaller key may commit after a larger one), registers
        each mailing id not known yet (case-insensitively) with the creation
        time of its first message, and moves the mark. Returns how many
        messages past the old mark were read: call again while it returns
        ``limit``.
        """

    async def mailings(before: tuple[float, str] | None = None,
                       limit: int = 25) -> list[MailingEntry]:
        """One page of the registered mailings, newest first, with their stored figures.

        Keyset: pass the last entry's ``(first_at, mailing_key)`` as ``before``.
        """

    async def mailing_outcomes(mailing_id: str, delays: Mapping[str, float],
                               default_delay: float, now: float,
                               domains: int = 0) -> MailingOutcomes | None:
        """A mailing's recipients by state and how far they settled at ``now``.

        A delivered recipient has settled when its ``delivered_at`` plus the
        settling delay of its domain (``delays``, else ``default_delay``) is
        at or before ``now``. ``domains`` > 0 adds the same for the mailing's
        largest domains. None when no message carries the mailing id.
        """

    async def save_mailing_rollups(rollups: Sequence[MailingRollup]) -> None:
        """Store mailings' figures for the index (registering a mailing not yet known)."""

    async def late_outcomes(since: float, limit: int) -> list[LateOutcome]:
        """Up to ``limit`` of the most recent late outcomes updated since ``since``.

        Bounced and complained deliveries that had been delivered, newest
        first, with the time from acceptance to the NDR or complaint.
        """

    async def mailing_latencies(mailing_id: str, edges: Sequence[float]
                                ) -> list[tuple[int, str, int]]:
        """A mailing's late outcomes per delay bucket: (bucket, state, count).

        Bucket ``i`` holds delays below ``edges[i]`` (and at or above the
        edge before); bucket ``len(edges)`` those at or above the last edge.
        """

    async def outcome_series(since: float, until: float, origin: float, bucket_seconds: float,
                             mailing_id: str | None = None
                             ) -> list[tuple[float, dict[str, int]]]:
        """Deliveries created in [since, until) per bucket and current state.

        Buckets are counted from ``origin`` (``origin + n * bucket_seconds``),
        so a chart can align them to round times; ``mailing_id`` keeps one
        mailing's. Only the non-empty buckets, in time order. Raises
        ValueError when ``bucket_seconds`` is not positive.
        """

    async def created_span(since: float, until: float) -> tuple[float, float] | None:
        """The first and last creation time of deliveries in [since, until); None if none."""

    async def mailing_bounce_reasons(mailing_id: str, limit: int = 50) -> list[ReasonCount]:
        """A mailing's failed (synchronous) and bounced (asynchronous) recipients by reason."""

    async def deferred_domains(limit: int = 100) -> list[DeferredQueueDomain]:
        """The deferred queue by destination domain, largest first, with each one's last error."""

    async def suppression_causes(event_ids: Sequence[int]) -> dict[int, int]:
        """The delivery of each event id that still exists (suppressions cite their event)."""

    async def suppression_count() -> int:
        """How many addresses are on the suppression list."""
