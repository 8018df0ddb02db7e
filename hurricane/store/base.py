"""What every engine shares: the IOutcomeStore methods and group commit.

Every store (SQLite file, SQLite in memory, PostgreSQL) is a :class:`SqlStore`:
one implementation of the operations, each a ``*_txn`` function of the
domain modules of :mod:`hurricane.store.txn`. An engine subclass provides
:meth:`SqlStore._connect`, :meth:`SqlStore._disconnect` and
:meth:`SqlStore._run_txn` (run one bound call in a transaction, on the
transaction object ``self.faults.wrap`` gives it). Everything else
(migrations at open, error mapping to :class:`StoreUnavailable`, group
commit of enqueues) lives here once.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Concatenate, Generic, ParamSpec, TypeVar, cast

from twisted.internet.defer import CancelledError, Deferred, DeferredList
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
from hurricane.store import migrate, reports
from hurricane.store.faults import Faults, InjectedFault
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
from hurricane.store.scoped import ScopedSuppressionMethods
from hurricane.store.sql import Dialect
from hurricane.store.transport import TransportStoreMixin
from hurricane.store.txn import (
    bounces,
    core,
    deliveries,
    reads,
    submission,
    summaries,
    suppressions,
)

__all__ = ["GroupCommit", "SqlStore"]

log = Logger()

T = TypeVar("T")
R = TypeVar("R")
P = ParamSpec("P")



class GroupCommit(Generic[T, R]):
    """Gather items that arrive while a commit is in flight into one transaction.

    The first item starts a transaction at once (no added latency when the
    store is idle); items arriving while up to ``max_in_flight`` transactions
    are running wait and go together into the next one. Each caller gets its
    own result; a failed transaction fails every item of that batch.
    DESIGN.md: one commit costs 50-85 µs of reactor time, a batched row ~6 µs.
    """

    def __init__(self, commit: Callable[[list[T]], Awaitable[Sequence[R]]], *, max_batch: int = 256,
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
class SqlStore(TransportStoreMixin, ScopedSuppressionMethods):
    """IOutcomeStore over SQL; engines subclass it."""

    dialect: Dialect
    #: Group commit concurrency (see GroupCommit).
    enqueue_in_flight = 1

    def __init__(self, url: str) -> None:
        """
        Args:
            url: the store URL with any password removed (for messages).
        """
        self.url = url
        self._open = False
        #: Streams whose complaints suppress globally (``complaint_global``).
        self.complaint_global_streams: frozenset[str] = frozenset()
        #: Faults armed by tests: the engines run every transaction function
        #: on ``faults.wrap(txn)`` (see :mod:`hurricane.store.faults`).
        self.faults = Faults()
        self._enqueuer: GroupCommit[submission.PreparedMessage, EnqueueResult] = GroupCommit(
            self._enqueue_batch, max_in_flight=self.enqueue_in_flight)
        # Returned messages are committed before their 250 like submissions:
        # the same group commit, so concurrent bounce sessions share one fsync.
        self._bouncer: GroupCommit[ReturnedMessage, int] = GroupCommit(
            self._store_bounce_batch, max_in_flight=self.enqueue_in_flight)
        # Point reads issued together (the bounce processor correlating a
        # batch, outbound workers loading bodies) share one transaction: on
        # SQLite each transaction is a hand-off to the pool thread and back,
        # which costs more than the SELECT.
        self._reader: GroupCommit[core.ReadCall, object] = \
            GroupCommit(self._read_batch, max_in_flight=1)

    @property
    def is_open(self) -> bool:
        """True between a successful open() and close()."""
        return self._open

    # -- engine hooks -------------------------------------------------------

    async def _connect(self) -> None:
        raise NotImplementedError

    async def _disconnect(self) -> None:
        raise NotImplementedError

    async def _run_txn(self, call: core.TxnCall[T]) -> T:
        """Run ``call(txn)`` in one transaction; return its result."""
        raise NotImplementedError

    def _is_database_error(self, error: BaseException) -> bool:
        """True for errors of the database or its connection (expected)."""
        raise NotImplementedError

    # -- plumbing -----------------------------------------------------------

    async def _run(self, func: Callable[Concatenate[core.Txn, P], Awaitable[T]],
                   *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``func(txn, *args, **kwargs)`` in a transaction, mapping every
        failure to StoreUnavailable; the result has ``func``'s type."""
        if not self._open:
            raise StoreUnavailable(f"store {self.url} is not open")
        async def bound(t: core.Txn) -> T:
            return await func(t, *args, **kwargs)

        try:
            return await self._run_txn(core.TxnCall(bound, core.name_of(func)))
        except (StoreError, CancelledError):
            raise
        except Exception as e:
            if isinstance(e, InjectedFault) or self._is_database_error(e):
                log.warn("Store {url} failed in {operation}: {error}", url=self.url,
                         operation=core.name_of(func), error=repr(e))
            else:
                # Not the database: a bug. Still 451 for the client (a retry
                # may succeed after a fix), but loudly.
                log.failure("Unexpected error in store {url} ({operation})", url=self.url,
                            operation=core.name_of(func))
            raise StoreUnavailable(f"store {self.url}: {e}") from e

    async def _read(self, func: Callable[Concatenate[core.Txn, P], Awaitable[T]],
                    *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a read-only transaction function, batched with concurrent reads."""
        if not self._open:
            raise StoreUnavailable(f"store {self.url} is not open")
        result = await self._reader.submit(core.ReadCall(func, args, kwargs))
        # The one place types are erased: reads of every kind share a batch
        # (read_batch_txn answers each call as ``func`` would).
        return cast(T, result)

    async def _read_batch(self, calls: list[core.ReadCall]) -> list[object]:
        return await self._run(reads.read_batch_txn, calls)

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
        prepared = submission.prepare_message(message, now)
        if not self._open:
            raise StoreUnavailable(f"store {self.url} is not open")
        result: EnqueueResult = await self._enqueuer.submit(prepared)
        return result

    async def _enqueue_batch(self, batch: list[submission.PreparedMessage]) -> list[EnqueueResult]:
        return await self._run(submission.enqueue_batch_txn, batch)

    # -- delivery -----------------------------------------------------------

    async def claim_due(self, now: float, owner: str, lease_seconds: float, limit: int,
                        exclude_domains: Sequence[str] = ()) -> list[Delivery]:
        """Lease up to ``limit`` due deliveries for ``owner``."""
        return await self._run(
            deliveries.claim_due_txn, now, owner, lease_seconds, limit, tuple(exclude_domains))

    async def release(self, delivery_ids: Sequence[int], owner: str) -> None:
        """Give back leases held by ``owner``."""
        if delivery_ids:
            await self._run(deliveries.release_txn, list(delivery_ids), owner)

    async def release_owner(self, owner: str) -> int:
        """Give back every lease held by ``owner``."""
        return await self._run(deliveries.release_owner_txn, owner)

    async def load_body(self, message_pk: int) -> bytes:
        """The stored message bytes.

        Raises:
            KeyError: no such message.
        """
        body = await self._read(deliveries.load_body_txn, message_pk)
        if body is None:
            raise KeyError(message_pk)
        return body

    async def record_attempts(self, results: Sequence[AttemptResult]) -> list[int]:
        """Record attempt outcomes in one transaction; return the event ids."""
        deliveries.check_attempts(results)
        if not results:
            return []
        return await self._run(deliveries.record_attempts_txn, list(results))

    async def retry_now(self, now: float, queue_id: str | None = None,
                        domain: str | None = None, delivery_id: int | None = None) -> int:
        """Make matching deferred deliveries due now; return how many."""
        return int(await self._run(deliveries.retry_now_txn, now, queue_id, domain, delivery_id))

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
        return await self._run(bounces.store_bounces_txn, batch)

    async def pending_bounces(self, limit: int) -> list[int]:
        """Ids of stored returned messages not yet analyzed, oldest first."""
        return await self._run(bounces.pending_bounces_txn, limit)

    async def load_bounce(self, bounce_id: int) -> StoredBounce | None:
        """One stored returned message with its raw bytes."""
        return await self._read(bounces.load_bounce_txn, bounce_id)

    async def bounce_analysis(self, bounce_id: int) -> str | None:
        """The analysis JSON recorded for a returned message."""
        return await self._read(bounces.bounce_analysis_txn, bounce_id)

    async def record_bounce(self, bounce_id: int, events: Sequence[BounceEvent], category: str,
                            correlation: str | None, analysis: str) -> list[int]:
        """Record the analysis of a returned message in one transaction."""
        return await self._run(bounces.record_bounce_txn, bounce_id, list(events),
                               category, correlation, analysis,
                               self.complaint_global_streams)

    async def record_bounces(self, records: Sequence[BounceRecord]) -> list[list[int]]:
        """Record several analyses in one transaction (one commit for the batch)."""
        if not records:
            return []
        return await self._run(bounces.record_bounces_txn, list(records),
                               self.complaint_global_streams)

    async def mark_bounce_failed(self, bounce_id: int, error: str) -> None:
        """Mark a returned message whose analysis failed (kept for replay)."""
        await self._run(bounces.mark_bounce_failed_txn, bounce_id, error)

    async def purge_bounces(self, before: float, now: float, limit: int = 1000) -> int:
        """Drop the raw bytes of finished returned messages received before ``before``."""
        return int(await self._run(bounces.purge_bounces_txn, before, now, limit))

    # -- reading ------------------------------------------------------------

    async def get_delivery(self, delivery_id: int) -> Delivery | None:
        """One delivery row, or None."""
        return await self._read(deliveries.get_delivery_txn, delivery_id)

    async def get_deliveries(self, delivery_ids: Sequence[int]) -> dict[int, Delivery]:
        """The delivery rows of ``delivery_ids`` that exist, by id (one read)."""
        return await self._read(deliveries.select_deliveries, list(delivery_ids))

    async def find_deliveries(self, *, recipient: str | None = None,
                              queue_id: str | None = None, mailing_id: str | None = None,
                              message_id: str | None = None,
                              header_message_id: str | None = None,
                              since: float | None = None, limit: int = 100) -> list[Delivery]:
        """Deliveries matching every given filter, newest first."""
        return await self._read(
            reads.find_deliveries_txn, recipient, queue_id, mailing_id, message_id,
            header_message_id, since, limit)

    async def events(self, delivery_id: int) -> list[Event]:
        """Every event of a delivery, in order."""
        return await self._run(reads.events_txn, delivery_id)

    async def events_after(self, after_event_id: int, limit: int) -> list[EventRecord]:
        """Events with ``event_id > after_event_id`` in id order (at most ``limit``)."""
        return await self._run(reads.events_after_txn, after_event_id,
                                                     limit)

    async def outcomes(self, after_delivery_id: int = 0, limit: int = 1000, *,
                       state: str | None = None,
                       mailing_id: str | None = None,
                       stream: str | None = None) -> list[Outcome]:
        """One page of outcome records ordered by delivery id (keyset paging)."""
        return await self._run(reads.outcomes_txn, after_delivery_id, limit,
                               state, mailing_id, stream)

    async def summary(self, since: float | None = None, until: float | None = None) -> Summary:
        """Counts by state and reason for deliveries created in the window."""
        return await self._run(summaries.summary_txn, since, until)

    async def queue_depth(self) -> dict[str, int]:
        """Number of deliveries per pending state (queued, deferred)."""
        return await self._run(summaries.queue_depth_txn)

    # -- report reads -------------------------------------------------------

    async def timeseries(self, since: float, until: float,
                         bucket_seconds: float) -> list[tuple[float, dict[str, int]]]:
        """Deliveries created in [since, until) per time bucket and current state."""
        if bucket_seconds <= 0:
            raise ValueError("bucket_seconds must be positive")
        return await self._run(
            summaries.timeseries_txn, since, until, bucket_seconds)

    async def top_domains(self, since: float | None, until: float | None,
                          limit: int = 10) -> list[DomainStats]:
        """The destination domains with most deliveries created in the window."""
        return await self._run(summaries.top_domains_txn, since, until, limit)

    async def bounce_reasons(self, since: float | None, until: float | None,
                             limit: int = 50) -> list[ReasonCount]:
        """Failed and bounced deliveries by reason, most first."""
        return await self._run(summaries.bounce_reasons_txn, since, until,
                                                   limit)

    async def deferred_by_domain(self, limit: int = 100) -> list[DeferredDomain]:
        """The deferred queue grouped by destination domain, largest first."""
        return await self._run(summaries.deferred_by_domain_txn, limit)

    async def oldest_pending(self) -> float | None:
        """``created_at`` of the oldest queued or deferred delivery."""
        return await self._run(summaries.oldest_pending_txn)

    async def mailing_summary(self, mailing_id: str) -> Summary:
        """Counts for every delivery of a mailing."""
        return await self._run(summaries.mailing_summary_txn, mailing_id)

    async def get_message(self, queue_id: str) -> StoredMessage | None:
        """A message's envelope and identifiers by queue id, or None."""
        return await self._run(reads.get_message_txn, queue_id)

    async def search_deliveries(self, *, recipient: str | None = None,
                                queue_id: str | None = None, mailing_id: str | None = None,
                                message_id: str | None = None, state: str | None = None,
                                domain: str | None = None, since: float | None = None,
                                until: float | None = None,
                                before_delivery_id: int | None = None,
                                limit: int = 50, stream: str | None = None) -> list[Delivery]:
        """One page of deliveries matching every filter, newest first (keyset)."""
        return await self._run(
            reads.search_deliveries_txn, recipient, queue_id, mailing_id, message_id, state,
            domain, since, until, before_delivery_id, limit, stream)

    # -- suppression --------------------------------------------------------

    async def suppress(self, address: str, reason: str, now: float, source: str | None = None,
                       note: str | None = None, event_id: int | None = None) -> bool:
        """Add an address (lower-cased); return False when it was already there."""
        return bool(await self._run(suppressions.suppress_txn, address, reason, now, source, note,
                                    event_id))

    async def unsuppress(self, address: str) -> bool:
        """Remove an address; return False when it was not there."""
        return bool(await self._run(suppressions.unsuppress_txn, address))

    async def get_suppression(self, address: str) -> Suppression | None:
        """The suppression entry of an address, or None."""
        return await self._run(suppressions.get_suppression_txn, address)

    async def suppressions(self, after: str | None = None,
                           limit: int = 1000) -> list[Suppression]:
        """One page of the suppression list ordered by address."""
        return await self._run(suppressions.suppressions_txn, after, limit)

    # -- the report's mailings, settling and queue pages (issue 18) ---------

    async def discover_mailings(self, limit: int = 20000) -> int:
        """Register the mailings of the messages stored since the last call."""
        return int(await self._run(reports.discover_mailings_txn, limit))

    async def mailings(self, before: tuple[float, str] | None = None,
                       limit: int = 25) -> list[MailingEntry]:
        """One page of the registered mailings, newest first, with their stored figures."""
        return await self._run(reports.mailings_txn, before, limit)

    async def mailing_outcomes(self, mailing_id: str, delays: Mapping[str, float],
                               default_delay: float, now: float,
                               domains: int = 0) -> MailingOutcomes | None:
        """A mailing's recipients by state and how far they settled at ``now``."""
        return await self._run(
            reports.mailing_outcomes_txn, mailing_id, dict(delays), default_delay, now, domains)

    async def save_mailing_rollups(self, rollups: Sequence[MailingRollup]) -> None:
        """Store mailings' figures for the index."""
        if rollups:
            await self._run(reports.save_mailing_rollups_txn, list(rollups))

    async def late_outcomes(self, since: float, limit: int) -> list[LateOutcome]:
        """The most recent late outcomes since ``since``, newest first."""
        return await self._run(reports.late_outcomes_txn, since, limit)

    async def mailing_latencies(self, mailing_id: str,
                                edges: Sequence[float]) -> list[tuple[int, str, int]]:
        """A mailing's late outcomes per delay bucket: (bucket, state, count)."""
        return await self._run(
            reports.mailing_latencies_txn, mailing_id, list(edges))

    async def outcome_series(self, since: float, until: float, origin: float,
                             bucket_seconds: float, mailing_id: str | None = None
                             ) -> list[tuple[float, dict[str, int]]]:
        """Deliveries created in [since, until) per bucket from ``origin`` and state."""
        if bucket_seconds <= 0:
            raise ValueError("bucket_seconds must be positive")
        return await self._run(
            reports.outcome_series_txn, since, until, origin, bucket_seconds, mailing_id)

    async def created_span(self, since: float, until: float) -> tuple[float, float] | None:
        """The first and last creation time of deliveries in [since, until)."""
        return await self._run(reports.created_span_txn, since, until)

    async def mailing_bounce_reasons(self, mailing_id: str,
                                     limit: int = 50) -> list[ReasonCount]:
        """A mailing's failed and bounced recipients by reason, most first."""
        return await self._run(reports.mailing_bounce_reasons_txn, mailing_id,
                                                   limit)

    async def deferred_domains(self, limit: int = 100) -> list[DeferredQueueDomain]:
        """The deferred queue by domain, with each one's last error."""
        return await self._run(reports.deferred_domains_txn, limit)

    async def suppression_causes(self, event_ids: Sequence[int]) -> dict[int, int]:
        """The delivery of each event id that still exists."""
        if not event_ids:
            return {}
        return await self._run(reports.suppression_causes_txn, list(event_ids))

    async def suppression_count(self) -> int:
        """How many addresses are on the suppression list."""
        return int(await self._run(reports.suppression_count_txn))
