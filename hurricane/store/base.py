"""What the SQL engines share: the IOutcomeStore methods and group commit.

An engine subclass provides :meth:`SqlStore._connect`, :meth:`SqlStore._disconnect`
and :meth:`SqlStore._run_txn` (run one ``*_txn`` function of
:mod:`hurricane.store.txn` in a transaction). Everything else (migrations at
open, error mapping to :class:`StoreUnavailable`, group commit of enqueues)
lives here once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, TypeVar

from twisted.internet.defer import CancelledError, Deferred, DeferredList
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

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
    StoredBounce,
    StoredMessage,
    Summary,
    Suppression,
)
from hurricane.store import migrate, reports, suppression, txn
from hurricane.store.interface import (
    BounceRecord,
    DeferredQueueDomain,
    IOutcomeStore,
    LateOutcome,
    MailingEntry,
    MailingOutcomes,
    MailingRollup,
    StoreError,
    StoreUnavailable,
)
from hurricane.store.sql import Dialect
from hurricane.store.suppression import ScopedSuppression, UnsubscribeOutcome

__all__ = ["GroupCommit", "SqlStore"]

log = Logger()

T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[T, R]):
    """Gather items that arrive while a commit is in flight into one transaction.

    The first item starts a transaction at once (no added latency when the
    store is idle); items arriving while up to ``max_in_flight`` transactions
    are running wait and go together into the next one. Each caller gets its
    own result; a failed transaction fails every item of that batch.
    DESIGN.md: one commit costs 50-85 µs of reactor time, a batched row ~6 µs.
    """

    def __init__(self, commit: Callable[[list[T]], Any], *, max_batch: int = 256,
                 max_in_flight: int = 1) -> None:
        """
        Args:
            commit: coroutine function committing a batch, returning one
                result per item, in order.
            max_batch: most items per transaction (bounds latency).
            max_in_flight: batches committed concurrently (1 for SQLite's
                single connection; more for PostgreSQL's pool).
        """
        self._commit = commit
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._pending: list[tuple[T, Deferred[R]]] = []
        self._in_flight: set[Deferred[None]] = set()
        #: Sizes of committed batches, for tests and the manhole.
        self.batch_sizes: list[int] = []

    async def submit(self, item: T) -> R:
        """Commit ``item`` with whatever else is waiting; return its result."""
        d: Deferred[R] = Deferred()
        self._pending.append((item, d))
        self._kick()
        return await d

    def _kick(self) -> None:
        while self._pending and len(self._in_flight) < self._max_in_flight:
            batch = self._pending[:self._max_batch]
            del self._pending[:self._max_batch]
            running = Deferred.fromCoroutine(self._run(batch))
            # The coroutine may already be done (a synchronous failure).
            if not running.called:
                self._in_flight.add(running)
                running.addBoth(self._finished, running)

    def _finished(self, result: object, running: Deferred[None]) -> None:
        self._in_flight.discard(running)
        self._kick()

    async def _run(self, batch: list[tuple[T, Deferred[R]]]) -> None:
        if len(self.batch_sizes) < 10000:
            self.batch_sizes.append(len(batch))
        try:
            results = await self._commit([item for item, _ in batch])
        except BaseException as e:
            # Every caller gets an answer, even for KeyboardInterrupt and the
            # like (which then go on up): a caller left waiting would be an
            # SMTP session with neither 250 nor 451.
            error = e if isinstance(e, StoreError) else StoreUnavailable(
                f"{type(e).__name__}: {e}" if isinstance(e, Exception) else repr(e))
            for _, d in batch:
                d.errback(error)
            if not isinstance(e, Exception):
                raise
        else:
            if len(results) != len(batch):
                # A commit function that answers for fewer items than it was
                # given would leave callers waiting for ever (an SMTP session
                # paused with neither 250 nor 451): fail them all instead.
                error = StoreUnavailable(
                    f"group commit returned {len(results)} results for {len(batch)} items")
                log.error("{error}", error=str(error))
                for _, d in batch:
                    d.errback(error)
                return
            for (_, d), result in zip(batch, results, strict=True):
                d.callback(result)

    async def drain(self) -> None:
        """Wait until nothing is pending or in flight."""
        while self._in_flight or self._pending:
            await DeferredList(list(self._in_flight))
            self._kick()


@implementer(IOutcomeStore)
class SqlStore:
    """IOutcomeStore over SQL; engines subclass it."""

    dialect: Dialect
    #: Group commit concurrency (see GroupCommit).
    enqueue_in_flight = 1

    def __init__(self, url: str, reactor: IReactorTime) -> None:
        """
        Args:
            url: the store URL with any password removed (for messages).
            reactor: provides the clock for bookkeeping timestamps.
        """
        self.url = url
        self._reactor = reactor
        self._open = False
        #: Streams whose complaints suppress globally (``complaint_global``).
        self.complaint_global_streams: frozenset[str] = frozenset()
        self._enqueuer: GroupCommit[txn.PreparedMessage, EnqueueResult] = GroupCommit(
            self._enqueue_batch, max_in_flight=self.enqueue_in_flight)
        # Returned messages are committed before their 250 like submissions:
        # the same group commit, so concurrent bounce sessions share one fsync.
        self._bouncer: GroupCommit[ReturnedMessage, int] = GroupCommit(
            self._store_bounce_batch, max_in_flight=self.enqueue_in_flight)
        # Point reads issued together (the bounce processor correlating a
        # batch, outbound workers loading bodies) share one transaction: on
        # SQLite each transaction is a hand-off to the pool thread and back,
        # which costs more than the SELECT.
        self._reader: GroupCommit[tuple[Callable[..., Any], tuple[Any, ...]], Any] = \
            GroupCommit(self._read_batch, max_in_flight=1)

    # -- engine hooks -------------------------------------------------------

    async def _connect(self) -> None:
        raise NotImplementedError

    async def _disconnect(self) -> None:
        raise NotImplementedError

    async def _run_txn(self, func: Callable[..., Any], *args: Any) -> Any:
        """Run ``func(txn, *args)`` in one transaction; return its result."""
        raise NotImplementedError

    def _is_database_error(self, error: BaseException) -> bool:
        """True for errors of the database or its connection (expected)."""
        raise NotImplementedError

    # -- plumbing -----------------------------------------------------------

    async def _run(self, func: Callable[..., Any], *args: Any) -> Any:
        """Run a transaction function, mapping every failure to StoreUnavailable."""
        if not self._open:
            raise StoreUnavailable(f"store {self.url} is not open")
        try:
            return await self._run_txn(func, *args)
        except (StoreError, CancelledError):
            raise
        except Exception as e:
            if self._is_database_error(e):
                log.warn("Store {url} failed in {operation}: {error}", url=self.url,
                         operation=getattr(func, "__name__", "?"), error=repr(e))
            else:
                # Not the database: a bug. Still 451 for the client (a retry
                # may succeed after a fix), but loudly.
                log.failure("Unexpected error in store {url} ({operation})", url=self.url,
                            operation=getattr(func, "__name__", "?"))
            raise StoreUnavailable(f"store {self.url}: {e}") from e

    async def _read(self, func: Callable[..., Any], *args: Any) -> Any:
        """Run a read-only transaction function, batched with concurrent reads."""
        if not self._open:
            raise StoreUnavailable(f"store {self.url} is not open")
        return await self._reader.submit((func, args))

    async def _read_batch(self, calls: list[tuple[Callable[..., Any], tuple[Any, ...]]]
                          ) -> list[Any]:
        results: list[Any] = await self._run(txn.read_batch_txn, calls)
        return results

    # -- lifecycle ----------------------------------------------------------

    async def open(self, *, migrate: bool = True) -> None:
        """Connect and, unless ``migrate`` is False, apply pending migrations.

        Raises StoreUnavailable naming the URL.
        """
        try:
            await self._connect()
            self._open = True
            if migrate:
                await self.migrate()
        except Exception as e:
            self._open = False
            try:
                await self._disconnect()
            except Exception:
                log.failure("Closing {url} after a failed open", url=self.url)
            if isinstance(e, StoreUnavailable) and self.url in str(e):
                raise
            raise StoreUnavailable(f"cannot open store {self.url}: {e}") from e

    async def close(self) -> None:
        """Close every connection (after committing enqueues in flight). Idempotent."""
        if not self._open:
            return
        await self._enqueuer.drain()
        await self._bouncer.drain()
        await self._reader.drain()
        self._open = False
        await self._disconnect()

    async def migrate(self) -> list[str]:
        """Apply pending numbered migrations; return the names applied."""
        applied = await self._run(migrate.applied_txn)
        done: list[str] = []
        for migration in migrate.load_migrations(self.dialect):
            if migration.name in applied:
                continue
            if await self._run(migrate.apply_migration_txn, migration, time.time()):
                log.info("Applied migration {name} to {url}", name=migration.name, url=self.url)
                done.append(migration.name)
        return done

    async def schema_version(self) -> int:
        """The number of the last applied migration (0 for an empty database)."""
        return int(await self._run(migrate.schema_version_txn))

    # -- submission ---------------------------------------------------------

    async def enqueue(self, message: NewMessage, now: float) -> EnqueueResult:
        """Durably store a message and its delivery rows (group commit)."""
        prepared = txn.prepare_message(message, now)
        if not self._open:
            raise StoreUnavailable(f"store {self.url} is not open")
        result: EnqueueResult = await self._enqueuer.submit(prepared)
        return result

    async def _enqueue_batch(self, batch: list[txn.PreparedMessage]) -> list[EnqueueResult]:
        results: list[EnqueueResult] = await self._run(txn.enqueue_batch_txn, batch)
        return results

    # -- delivery -----------------------------------------------------------

    async def claim_due(self, now: float, owner: str, lease_seconds: float, limit: int,
                        exclude_domains: Sequence[str] = ()) -> list[Delivery]:
        """Lease up to ``limit`` due deliveries for ``owner``."""
        result: list[Delivery] = await self._run(
            txn.claim_due_txn, now, owner, lease_seconds, limit, tuple(exclude_domains))
        return result

    async def release(self, delivery_ids: Sequence[int], owner: str) -> None:
        """Give back leases held by ``owner``."""
        if delivery_ids:
            await self._run(txn.release_txn, list(delivery_ids), owner)

    async def release_owner(self, owner: str) -> int:
        """Give back every lease held by ``owner``."""
        count: int = await self._run(txn.release_owner_txn, owner)
        return count

    async def load_body(self, message_pk: int) -> bytes:
        """The stored message bytes.

        Raises:
            KeyError: no such message.
        """
        body: bytes | None = await self._read(txn.load_body_txn, message_pk)
        if body is None:
            raise KeyError(message_pk)
        return body

    async def record_attempts(self, results: Sequence[AttemptResult]) -> list[int]:
        """Record attempt outcomes in one transaction; return the event ids."""
        txn.check_attempts(results)
        if not results:
            return []
        ids: list[int] = await self._run(txn.record_attempts_txn, list(results))
        return ids

    async def retry_now(self, now: float, queue_id: str | None = None,
                        domain: str | None = None, delivery_id: int | None = None) -> int:
        """Make matching deferred deliveries due now; return how many."""
        return int(await self._run(txn.retry_now_txn, now, queue_id, domain, delivery_id))

    # -- returned mail ------------------------------------------------------

    async def store_bounce(self, message: ReturnedMessage) -> int:
        """Durably store a received message (status ``pending``); return its id.

        Group commit: messages arriving while a commit is in flight go into
        the next transaction together; a failed batch fails each of its
        callers with StoreUnavailable (none of them got a 250).
        """
        if not self._open:
            raise StoreUnavailable(f"store {self.url} is not open")
        bounce_id: int = await self._bouncer.submit(message)
        return bounce_id

    async def _store_bounce_batch(self, batch: list[ReturnedMessage]) -> list[int]:
        ids: list[int] = await self._run(txn.store_bounces_txn, batch)
        return ids

    async def pending_bounces(self, limit: int) -> list[int]:
        """Ids of stored returned messages not yet analyzed, oldest first."""
        ids: list[int] = await self._run(txn.pending_bounces_txn, limit)
        return ids

    async def load_bounce(self, bounce_id: int) -> StoredBounce | None:
        """One stored returned message with its raw bytes."""
        bounce: StoredBounce | None = await self._read(txn.load_bounce_txn, bounce_id)
        return bounce

    async def bounce_analysis(self, bounce_id: int) -> str | None:
        """The analysis JSON recorded for a returned message."""
        analysis: str | None = await self._read(txn.bounce_analysis_txn, bounce_id)
        return analysis

    async def record_bounce(self, bounce_id: int, events: Sequence[BounceEvent], category: str,
                            correlation: str | None, analysis: str) -> list[int]:
        """Record the analysis of a returned message in one transaction."""
        ids: list[int] = await self._run(txn.record_bounce_txn, bounce_id, list(events),
                                         category, correlation, analysis,
                                         self.complaint_global_streams)
        return ids

    async def record_bounces(self, records: Sequence[BounceRecord]) -> list[list[int]]:
        """Record several analyses in one transaction (one commit for the batch)."""
        if not records:
            return []
        ids: list[list[int]] = await self._run(txn.record_bounces_txn, list(records),
                                               self.complaint_global_streams)
        return ids

    async def mark_bounce_failed(self, bounce_id: int, error: str) -> None:
        """Mark a returned message whose analysis failed (kept for replay)."""
        await self._run(txn.mark_bounce_failed_txn, bounce_id, error)

    async def purge_bounces(self, before: float, now: float, limit: int = 1000) -> int:
        """Drop the raw bytes of finished returned messages received before ``before``."""
        return int(await self._run(txn.purge_bounces_txn, before, now, limit))

    # -- reading ------------------------------------------------------------

    async def get_delivery(self, delivery_id: int) -> Delivery | None:
        """One delivery row, or None."""
        delivery: Delivery | None = await self._read(txn.get_delivery_txn, delivery_id)
        return delivery

    async def find_deliveries(self, *, recipient: str | None = None,
                              queue_id: str | None = None, mailing_id: str | None = None,
                              message_id: str | None = None,
                              header_message_id: str | None = None,
                              since: float | None = None, limit: int = 100) -> list[Delivery]:
        """Deliveries matching every given filter, newest first."""
        found: list[Delivery] = await self._read(
            txn.find_deliveries_txn, recipient, queue_id, mailing_id, message_id,
            header_message_id, since, limit)
        return found

    async def events(self, delivery_id: int) -> list[Event]:
        """Every event of a delivery, in order."""
        events: list[Event] = await self._run(txn.events_txn, delivery_id)
        return events

    async def events_after(self, after_event_id: int, limit: int) -> list[EventRecord]:
        """Events with ``event_id > after_event_id`` in id order (at most ``limit``)."""
        records: list[EventRecord] = await self._run(txn.events_after_txn, after_event_id,
                                                     limit)
        return records

    async def outcomes(self, after_delivery_id: int = 0, limit: int = 1000, *,
                       state: str | None = None,
                       mailing_id: str | None = None,
                       stream: str | None = None) -> list[Outcome]:
        """One page of outcome records ordered by delivery id (keyset paging)."""
        page: list[Outcome] = await self._run(txn.outcomes_txn, after_delivery_id, limit,
                                              state, mailing_id, stream)
        return page

    async def summary(self, since: float | None = None, until: float | None = None) -> Summary:
        """Counts by state and reason for deliveries created in the window."""
        summary: Summary = await self._run(txn.summary_txn, since, until)
        return summary

    async def queue_depth(self) -> dict[str, int]:
        """Number of deliveries per pending state (queued, deferred)."""
        depth: dict[str, int] = await self._run(txn.queue_depth_txn)
        return depth

    # -- report reads -------------------------------------------------------

    async def timeseries(self, since: float, until: float,
                         bucket_seconds: float) -> list[tuple[float, dict[str, int]]]:
        """Deliveries created in [since, until) per time bucket and current state."""
        if bucket_seconds <= 0:
            raise ValueError("bucket_seconds must be positive")
        series: list[tuple[float, dict[str, int]]] = await self._run(
            txn.timeseries_txn, since, until, bucket_seconds)
        return series

    async def top_domains(self, since: float | None, until: float | None,
                          limit: int = 10) -> list[DomainStats]:
        """The destination domains with most deliveries created in the window."""
        found: list[DomainStats] = await self._run(txn.top_domains_txn, since, until, limit)
        return found

    async def bounce_reasons(self, since: float | None, until: float | None,
                             limit: int = 50) -> list[ReasonCount]:
        """Failed and bounced deliveries by reason, most first."""
        found: list[ReasonCount] = await self._run(txn.bounce_reasons_txn, since, until,
                                                   limit)
        return found

    async def deferred_by_domain(self, limit: int = 100) -> list[DeferredDomain]:
        """The deferred queue grouped by destination domain, largest first."""
        found: list[DeferredDomain] = await self._run(txn.deferred_by_domain_txn, limit)
        return found

    async def oldest_pending(self) -> float | None:
        """``created_at`` of the oldest queued or deferred delivery."""
        oldest: float | None = await self._run(txn.oldest_pending_txn)
        return oldest

    async def mailing_summary(self, mailing_id: str) -> Summary:
        """Counts for every delivery of a mailing."""
        summary: Summary = await self._run(txn.mailing_summary_txn, mailing_id)
        return summary

    async def get_message(self, queue_id: str) -> StoredMessage | None:
        """A message's envelope and identifiers by queue id, or None."""
        found: StoredMessage | None = await self._run(txn.get_message_txn, queue_id)
        return found

    async def search_deliveries(self, *, recipient: str | None = None,
                                queue_id: str | None = None, mailing_id: str | None = None,
                                message_id: str | None = None, state: str | None = None,
                                domain: str | None = None, since: float | None = None,
                                until: float | None = None,
                                before_delivery_id: int | None = None,
                                limit: int = 50, stream: str | None = None) -> list[Delivery]:
        """One page of deliveries matching every filter, newest first (keyset)."""
        found: list[Delivery] = await self._run(
            txn.search_deliveries_txn, recipient, queue_id, mailing_id, message_id, state,
            domain, since, until, before_delivery_id, limit, stream)
        return found

    # -- suppression --------------------------------------------------------

    async def suppress(self, address: str, reason: str, now: float, source: str | None = None,
                       note: str | None = None, event_id: int | None = None) -> bool:
        """Add an address (lower-cased); return False when it was already there."""
        return bool(await self._run(txn.suppress_txn, address, reason, now, source, note,
                                    event_id))

    async def unsuppress(self, address: str) -> bool:
        """Remove an address; return False when it was not there."""
        return bool(await self._run(txn.unsuppress_txn, address))

    async def get_suppression(self, address: str) -> Suppression | None:
        """The suppression entry of an address, or None."""
        entry: Suppression | None = await self._run(txn.get_suppression_txn, address)
        return entry

    async def suppressions(self, after: str | None = None,
                           limit: int = 1000) -> list[Suppression]:
        """One page of the suppression list ordered by address."""
        page: list[Suppression] = await self._run(txn.suppressions_txn, after, limit)
        return page

    # -- scoped suppression, unsubscribes (issue 20) ------------------------

    async def add_suppression(self, scope: str, address: str, reason: str, now: float,
                              source: str | None = None, note: str | None = None,
                              event_id: int | None = None,
                              expires_at: float | None = None) -> bool:
        """Add an entry of any scope; False when it was already there."""
        return bool(await self._run(suppression.add_suppression_txn, scope, address, reason,
                                    now, source, note, event_id, expires_at))

    async def remove_suppression(self, scope: str, address: str) -> bool:
        """Remove an entry of any scope; False when there was none."""
        return bool(await self._run(suppression.remove_suppression_txn, scope, address))

    async def suppression_entries(self, address: str) -> list[ScopedSuppression]:
        """Every entry naming an address or its domain, global first."""
        found: list[ScopedSuppression] = await self._run(suppression.find_suppressions_txn,
                                                         address)
        return found

    async def list_suppressions(self, scope: str | None = None,
                                after: tuple[str, str] | None = None,
                                limit: int = 1000) -> list[ScopedSuppression]:
        """One page of entries of every scope (or of one), global first."""
        page: list[ScopedSuppression] = await self._run(
            suppression.list_suppressions_txn, scope, after, limit)
        return page

    async def record_unsubscribe(self, delivery_id: int, stream: str, now: float,
                                 via: str) -> UnsubscribeOutcome:
        """Record a verified unsubscribe (event and stream entry), idempotently."""
        done: UnsubscribeOutcome = await self._run(
            suppression.record_unsubscribe_txn, delivery_id, stream, now, via)
        return done

    async def message_stream(self, delivery_id: int) -> str | None:
        """The stream of a delivery's message (None: the default one)."""
        stream: str | None = await self._run(suppression.message_stream_txn, delivery_id)
        return stream

    # -- the report's mailings, settling and queue pages (issue 18) ---------

    async def discover_mailings(self, limit: int = 20000) -> int:
        """Register the mailings of the messages stored since the last call."""
        return int(await self._run(reports.discover_mailings_txn, limit))

    async def mailings(self, before: tuple[float, str] | None = None,
                       limit: int = 25) -> list[MailingEntry]:
        """One page of the registered mailings, newest first, with their stored figures."""
        page: list[MailingEntry] = await self._run(reports.mailings_txn, before, limit)
        return page

    async def mailing_outcomes(self, mailing_id: str, delays: Mapping[str, float],
                               default_delay: float, now: float,
                               domains: int = 0) -> MailingOutcomes | None:
        """A mailing's recipients by state and how far they settled at ``now``."""
        found: MailingOutcomes | None = await self._run(
            reports.mailing_outcomes_txn, mailing_id, dict(delays), default_delay, now, domains)
        return found

    async def save_mailing_rollups(self, rollups: Sequence[MailingRollup]) -> None:
        """Store mailings' figures for the index."""
        if rollups:
            await self._run(reports.save_mailing_rollups_txn, list(rollups))

    async def late_outcomes(self, since: float, limit: int) -> list[LateOutcome]:
        """The most recent late outcomes since ``since``, newest first."""
        found: list[LateOutcome] = await self._run(reports.late_outcomes_txn, since, limit)
        return found

    async def mailing_latencies(self, mailing_id: str,
                                edges: Sequence[float]) -> list[tuple[int, str, int]]:
        """A mailing's late outcomes per delay bucket: (bucket, state, count)."""
        found: list[tuple[int, str, int]] = await self._run(
            reports.mailing_latencies_txn, mailing_id, list(edges))
        return found

    async def outcome_series(self, since: float, until: float, origin: float,
                             bucket_seconds: float, mailing_id: str | None = None
                             ) -> list[tuple[float, dict[str, int]]]:
        """Deliveries created in [since, until) per bucket from ``origin`` and state."""
        if bucket_seconds <= 0:
            raise ValueError("bucket_seconds must be positive")
        series: list[tuple[float, dict[str, int]]] = await self._run(
            reports.outcome_series_txn, since, until, origin, bucket_seconds, mailing_id)
        return series

    async def created_span(self, since: float, until: float) -> tuple[float, float] | None:
        """The first and last creation time of deliveries in [since, until)."""
        span: tuple[float, float] | None = await self._run(reports.created_span_txn, since, until)
        return span

    async def mailing_bounce_reasons(self, mailing_id: str,
                                     limit: int = 50) -> list[ReasonCount]:
        """A mailing's failed and bounced recipients by reason, most first."""
        found: list[ReasonCount] = await self._run(reports.mailing_bounce_reasons_txn, mailing_id,
                                                   limit)
        return found

    async def deferred_domains(self, limit: int = 100) -> list[DeferredQueueDomain]:
        """The deferred queue by domain, with each one's last error."""
        found: list[DeferredQueueDomain] = await self._run(reports.deferred_domains_txn, limit)
        return found

    async def suppression_causes(self, event_ids: Sequence[int]) -> dict[int, int]:
        """The delivery of each event id that still exists."""
        if not event_ids:
            return {}
        found: dict[int, int] = await self._run(reports.suppression_causes_txn, list(event_ids))
        return found

    async def suppression_count(self) -> int:
        """How many addresses are on the suppression list."""
        return int(await self._run(reports.suppression_count_txn))
