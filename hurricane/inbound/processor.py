"""From a stored returned message to recorded outcomes.

The bounce listener commits every returned message to the store before it
answers 250, then calls :meth:`BounceProcessor.submit`. From there:

    load_bounce -> analyze (in a worker process, or a thread) -> correlate
                -> events -> record_bounce

Why each step is shaped the way it is:

- Analysis is pure CPU work over hostile input (deep MIME trees, huge
  single-line bodies): it runs off the reactor thread, at most
  ``concurrency`` batches at a time, under the analyzer's own
  size/depth/CPU limits. In worker processes (``[bounce]
  analysis_processes``, :mod:`hurricane.inbound.workers`) it also runs off
  the reactor's GIL, on another core; a worker that dies costs a retry,
  never a message.
- Nothing is lost. A message that correlates to nothing is still recorded
  (``record_bounce`` with no events) so the raw bytes stay for a replay after
  a rule change; one whose analysis blew up is marked ``failed`` (raw kept);
  one caught by a store outage stays ``pending`` and is retried with backoff,
  and ``startService`` resumes every pending message, so a crash between the
  250 and the analysis costs nothing.
- Recording is idempotent: each event carries a key derived from the
  returned message's bytes, the delivery and the recipient, so a remote that
  delivers the same NDR twice, or an operator's replay, counts once.
- The events transcribe the analysis (its reason, ``hard`` and proposed
  suppression; a complaint always proposes it) and nothing more. What an
  event may change (state, reason, ``hard``, the suppression list) is not
  decided here: every store engine asks
  :func:`hurricane.decisions.decide_bounce`, which applies only events whose
  correlation key is verified (our MAC over the delivery), bounces the
  delivery on every ``Action: failed`` (a 4.x.x one is then neither hard nor
  suppressing) and never suppresses for a sender-side reason (the analysis
  does not propose it). The events carry the key.
"""

from __future__ import annotations

import collections
import hashlib
import json
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from twisted.application.service import Service
from twisted.internet.defer import (
    Deferred,
    DeferredLock,
    gatherResults,
    maybeDeferred,
    succeed,
)
from twisted.internet.interfaces import IDelayedCall, IReactorFromThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from hurricane.bounce.analyze import AnalysisLimits
from hurricane.bounce.analyze import analyze as default_analyze
from hurricane.bounce.classify import ReplyClassifier
from hurricane.bounce.model import Analysis, RecipientResult
from hurricane.inbound.correlate import RECIPIENT_WINDOW, Correlation, Match, correlate
from hurricane.inbound.fingerprint import message_fingerprint
from hurricane.inbound.workers import AnalysisProcessPool, PoolUnavailable, WorkerLost
from hurricane.model import BounceEvent, StoredBounce
from hurricane.outcome import Action, BounceStatus, Category, EventKind, Reason, Source
from hurricane.smtp_reply import reply_code
from hurricane.store.interface import BounceRecord, IOutcomeStore, StoreUnavailable
from hurricane.verp import VerpCodec

__all__ = [
    "AnalyzeFunction",
    "BounceProcessor",
    "ProcessResult",
    "Runner",
    "build_events",
    "idempotency_key",
    "message_fingerprint",
    "run_inline",
]

log = Logger()

T = TypeVar("T")


#: The analyzer's signature: ``analyze(raw, envelope_rcpt, *, classifier=, limits=)``
#: (``hurricane.bounce.analyze.analyze``).
AnalyzeFunction = Callable[..., Analysis]


#: Runs ``f(*args, **kwargs)`` somewhere and returns a Deferred of its result.
Runner = Callable[..., "Deferred[Any]"]


def run_inline(f: Callable[..., Any], *args: Any, **kwargs: Any) -> Deferred[Any]:
    """A :data:`Runner` that calls ``f`` at once in the calling thread.

    For tests and command-line tools; the server runs analyses in a thread pool.
    """
    return maybeDeferred(f, *args, **kwargs)


# -- idempotency ------------------------------------------------------------------

def idempotency_key(fingerprint: bytes, delivery_id: int, recipient: str) -> str:
    """The key under which one returned message is recorded once per delivery.

    Args:
        fingerprint: :func:`message_fingerprint` of the returned message.
        delivery_id: the delivery the event is about.
        recipient: the recipient the event is about (compared lower-cased).

    Returns:
        A hex SHA-256.
    """
    h = hashlib.sha256(b"hurricane-bounce-1\0")
    h.update(fingerprint)
    h.update(b"\0%d\0" % delivery_id)
    h.update(recipient.strip().lower().encode("utf-8", "surrogateescape"))
    return h.hexdigest()


# -- events -------------------------------------------------------------------------

#: Longest diagnostic text kept on an event.
MAX_TEXT = 2000

def _permanent(result: RecipientResult) -> bool:
    """Permanent in RFC 3463's sense: a 5.x.x status or 5xx code, not 4.x.x or 4xx.

    Whether the event moves the delivery is :func:`~hurricane.decisions.decide_bounce`'s
    to say: a ``failed`` result is final whatever its class.
    """
    status = result.status or ""
    code = result.code or ""
    if status.startswith("5") or code.startswith("5"):
        return True
    if status.startswith("4") or code.startswith("4"):
        return False
    return True  # Action: failed with no code at all still means "gave up"


def _severity(event: BounceEvent) -> int:
    if event.kind in (EventKind.bounce, EventKind.complaint):
        return 3 if event.permanent or event.final else 2
    return 1 if event.kind is EventKind.delayed else 0


def build_events(
    bounce: StoredBounce,
    analysis: Analysis,
    correlation: Correlation,
    fingerprint: bytes,
) -> list[BounceEvent]:
    """Turn correlated analysis results into events for ``record_bounce``.

    The events transcribe the analysis; what they change is the store's
    :func:`hurricane.decisions.decide_bounce` to say. Category ``bounce``:
    action ``failed`` gives a final ``bounce`` event (``permanent`` for
    5.x.x/5xx, not for 4.x.x), ``delayed`` a ``delayed`` event,
    ``delivered``/``relayed``/``expanded`` a ``relayed`` event. ``feedback``
    gives a ``complaint`` (always proposes suppression), ``autoreply`` an
    ``autoreply`` event (never a failure), ``other`` nothing. Each event
    carries the key that matched it. When one message names the same
    delivery and recipient twice, only the most severe event is kept (they
    would share one idempotency key).

    Args:
        bounce: the stored returned message (its id and received time).
        analysis: the analyzer's answer.
        correlation: results paired with deliveries.
        fingerprint: :func:`message_fingerprint` of the raw message.

    Returns:
        The events, in the analysis's order.
    """
    events: dict[str, BounceEvent] = {}
    for match in correlation.matches:
        event = _event(bounce, analysis.category, match, fingerprint)
        if event is None:
            continue
        assert event.idem_key is not None
        seen = events.get(event.idem_key)
        if seen is None or _severity(event) > _severity(seen):
            events[event.idem_key] = event
    return list(events.values())


def _event(
    bounce: StoredBounce, category: str, match: Match, fingerprint: bytes
) -> BounceEvent | None:
    """One analysis result (or none: a bounce that said nothing readable) as an event."""
    r = match.result
    d = match.delivery
    recipient = r.recipient if r is not None and r.recipient else d.recipient
    try:
        cat = Category(category)
    except ValueError:
        return None  # not a category the analyzer gives: nothing to record
    if cat is Category.other:
        return None
    kind, reason, source = _kind(cat, r)
    if kind is None:
        log.warn(
            "bounce {bounce_id}: unknown action {action!r} for {recipient} ignored",
            bounce_id=bounce.bounce_id, action=r.action if r is not None else None,
            recipient=recipient,
        )
        return None
    idem_key = idempotency_key(fingerprint, d.delivery_id, recipient)
    complaint = kind is EventKind.complaint
    if r is None:
        # A complaint always proposes suppression ("permanent" means no more for it).
        return BounceEvent(
            delivery_id=d.delivery_id, at=bounce.received_at, bounce_id=bounce.bounce_id,
            correlation=match.key, idem_key=idem_key, kind=kind, reason=reason,
            source=source, permanent=complaint, suppress=complaint)
    # What the analysis read and proposes; decide_bounce decides what applies.
    bounced = kind is EventKind.bounce
    failed = bounced and Action.of(r.action) is Action.failed
    return BounceEvent(
        delivery_id=d.delivery_id, at=bounce.received_at, bounce_id=bounce.bounce_id,
        correlation=match.key, idem_key=idem_key, kind=kind, reason=reason, source=source,
        code=reply_code(r.code), status=r.status or None,
        text=(r.diagnostic or "")[:MAX_TEXT] or None, remote_host=r.remote_mta or None,
        rule=r.rule, hard=bounced and bool(r.hard),
        suppress=complaint or (bounced and bool(r.suppress)),
        # "permanent" is the RFC class (5.x.x/5xx); "final" that the reporter gave up
        permanent=complaint or (failed and _permanent(r)), final=failed,
        feedback_type=(r.feedback_type or None) if complaint else None,
    )


def _kind(category: Category, r: RecipientResult | None
          ) -> tuple[EventKind | None, Reason | None, Source]:
    """The event kind, reason and source of one analysis result.

    Returns:
        ``(kind, reason, source)``; kind None: nothing to record.
    """
    source = Source.of(r.source) if r is not None else None
    reason = Reason.of(r.reason) if r is not None else None
    if category is Category.feedback:
        return EventKind.complaint, reason or Reason.feedback, source or Source.arf
    if category is Category.autoreply:
        return EventKind.autoreply, reason or Reason.vacation, source or Source.autoreply
    if r is None:
        # We know a bounce came back for this delivery but not what it says:
        # keep it as information, it moves nothing.
        return EventKind.bounce, Reason.undefined, Source.heuristic
    action = Action.of(r.action)
    if action is Action.failed:
        return EventKind.bounce, reason or Reason.undefined, source or Source.heuristic
    if action is Action.delayed:
        return EventKind.delayed, reason, source or Source.dsn
    if action is not None and action.passed_on:
        return EventKind.relayed, reason, source or Source.dsn
    return None, None, Source.heuristic


# -- the service ----------------------------------------------------------------------


def _analyze_many(
    analyze: AnalyzeFunction, work: list[tuple[bytes, str | None]], kwargs: dict[str, Any]
) -> list[Analysis | BaseException]:
    """Analyze several messages in one call (in a worker thread).

    Exceptions are returned, not raised, so one hostile message fails only
    itself; they are logged on the reactor thread.
    """
    out: list[Analysis | BaseException] = []
    for raw, rcpt in work:
        try:
            out.append(analyze(raw, rcpt, **kwargs))
        except Exception as e:
            out.append(e)
        # Hand the GIL to the reactor between messages. Otherwise this thread
        # keeps it for up to the interpreter's switch interval (5 ms) each
        # time the reactor blocks on a send or poll, which is what a busy
        # SMTP listener does thousands of times a second.
        time.sleep(0)
    return out


async def _gather(coros: list[Coroutine[Any, Any, T]]) -> list[T]:
    """Run coroutines concurrently; their results in order (they must not raise)."""
    if len(coros) == 1:
        return [await coros[0]]
    results: list[T] = await gatherResults([Deferred.fromCoroutine(c) for c in coros])
    return results


@dataclass
class _Analyzed:
    """One analyzed, correlated message waiting to be recorded."""

    bounce: StoredBounce
    analysis: Analysis
    corr: Correlation
    events: list[BounceEvent]
    record: str


@dataclass(frozen=True)
class ProcessResult:
    """What became of one returned message.

    ``status`` is ``analyzed`` (recorded, correlated), ``uncorrelated``
    (recorded with no event), ``failed`` (analysis failed, marked failed),
    ``missing`` (no such bounce), ``skipped`` (already analyzed and not a
    replay), ``purged`` (a replay of a message whose raw bytes the
    retention period dropped) or ``stopped`` (the service stopped first;
    still pending).
    ``retry`` is used internally while the store is unavailable; callers of
    :meth:`BounceProcessor.replay` never see it.
    """

    bounce_id: int
    status: str
    category: str | None = None
    correlation: str | None = None
    event_ids: tuple[int, ...] = ()
    events: int = 0
    error: str | None = None


@dataclass
class _Stats:
    received: int = 0
    analyzed: int = 0
    uncorrelated: int = 0
    failed: int = 0
    retries: int = 0
    replayed: int = 0
    events: int = 0
    by_category: collections.Counter[str] = field(default_factory=collections.Counter)


class BounceProcessor(Service):
    """Analyzes stored returned messages and records their outcomes.

    Args:
        store: the outcome store.
        codec: the VERP codec of the bounce domain (verifies header tokens
            and ENVIDs).
        clock: the reactor's time; also the reactor the thread pool reports
            back to unless ``runner`` is given.
        analyze: the analysis function; defaults to
            ``hurricane.bounce.analyze.analyze``.
        limits: the analyzer's ``AnalysisLimits``; None uses its defaults.
        classifier: the reply classifier to pass to the analyzer; None uses
            its default.
        threadpool: the pool analyses run in (owned by the caller). When
            neither it nor ``runner`` is given, the processor starts its own
            pool of ``concurrency`` threads.
        runner: runs the analysis and returns a Deferred (tests inject
            :func:`run_inline`); overrides ``threadpool``.
        processes: analyses run in these worker processes instead of threads
            (overrides ``threadpool`` and ``runner``; ``analyze``,
            ``limits`` and ``classifier`` are then the pool's own). The
            processor owns it: its workers start with the first analysis and
            stop with the service.
            After a worker died (or passed its deadline) under a batch, each
            of the batch's messages is analyzed once more, alone (nothing
            else in the pool meanwhile), one at a time; a message that takes
            its worker down alone too is marked failed (raw kept for a
            replay), so that a hostile message costs two kills of the
            worker at most (it was four), while every other bounce waits.
            Workers that cannot start count against no message: the
            messages stay pending and are retried with backoff, as in a
            store outage.
        concurrency: analyses in flight at most.
        retry_initial: first wait after a store outage (seconds).
        retry_max: longest wait between attempts during an outage.
        stop_timeout: how long ``stopService`` waits for analyses in flight.
        window: how far back a bare recipient address is matched (seconds).
        max_queued: ids kept in memory at most; beyond that they stay
            pending in the store and are picked up by a later sweep.
        sweep_batch: pending ids read from the store per sweep.
        batch_size: queued messages taken together at most: analyzed in one
            thread-pool hop and recorded in one transaction
            (``record_bounces``). Under load this turns one commit (fsync)
            and one thread hand-off per message into one per batch; when
            idle a message still goes alone, at once.
    """

    name = "bounce-processor"

    def __init__(
        self,
        store: IOutcomeStore,
        codec: VerpCodec,
        clock: IReactorTime,
        *,
        analyze: AnalyzeFunction | None = None,
        limits: AnalysisLimits | None = None,
        classifier: ReplyClassifier | None = None,
        threadpool: ThreadPool | None = None,
        runner: Runner | None = None,
        processes: AnalysisProcessPool | None = None,
        concurrency: int = 2,
        retry_initial: float = 5.0,
        retry_max: float = 300.0,
        stop_timeout: float = 30.0,
        window: float = RECIPIENT_WINDOW,
        max_queued: int = 10_000,
        sweep_batch: int = 1000,
        batch_size: int = 32,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if analyze is None:
            analyze = default_analyze
        self._store = store
        self._codec = codec
        self._clock = clock
        self._analyze = analyze
        self._analyze_kwargs: dict[str, Any] = {}
        if limits is not None:
            self._analyze_kwargs["limits"] = limits
        if classifier is not None:
            self._analyze_kwargs["classifier"] = classifier
        self._own_pool: ThreadPool | None = None
        self._processes = processes
        #: One message analyzed alone at a time after a worker died.
        self._isolating = DeferredLock()
        if processes is not None:
            self._runner: Runner = run_inline  # unused: analyses go to the processes
        else:
            self._runner = self._make_runner(clock, threadpool, runner, concurrency)
        self._concurrency = concurrency
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._stop_timeout = stop_timeout
        self._window = window
        self._max_queued = max_queued
        self._sweep_batch = sweep_batch
        self._batch_size = batch_size
        #: Batches being processed (each holds up to ``batch_size`` messages).
        self._batches = 0

        self._queue: collections.deque[tuple[int, bool]] = collections.deque()
        self._queued: set[int] = set()
        #: Message id -> the Deferred of the batch it is part of.
        self._inflight: dict[int, Deferred[list[ProcessResult]]] = {}
        self._after_inflight: dict[int, bool] = {}  # replays asked while in flight
        self._waiters: dict[int, list[Deferred[ProcessResult]]] = {}
        self._drain_waiters: list[Deferred[None]] = []
        self._pumping = False
        self._stopping = False
        self._backoff = 0  # consecutive store outages
        self._pause: IDelayedCall | None = None
        self._sweep_timer: IDelayedCall | None = None
        self._sweep_backoff = 0
        self._sweep_again = False
        self._sweeping = False
        self._progress = 0  # messages whose status changed since the last sweep
        self._stats = _Stats()

    def _make_runner(
        self,
        clock: IReactorTime,
        threadpool: ThreadPool | None,
        runner: Runner | None,
        concurrency: int,
    ) -> Runner:
        if runner is not None:
            return runner
        if not IReactorFromThreads.providedBy(clock):
            raise TypeError(
                "BounceProcessor needs a reactor (IReactorFromThreads) as clock to use "
                "a thread pool; pass runner= to run analyses some other way"
            )
        reactor: IReactorFromThreads = clock
        if threadpool is None:
            threadpool = self._own_pool = ThreadPool(
                minthreads=0, maxthreads=concurrency, name="hurricane-bounce-analysis"
            )
        pool = threadpool

        def in_pool(f: Callable[..., Any], *args: Any, **kwargs: Any) -> Deferred[Any]:
            return deferToThreadPool(reactor, pool, f, *args, **kwargs)

        return in_pool

    # -- public API --------------------------------------------------------------

    def submit(self, bounce_id: int) -> None:
        """Queue a stored returned message for analysis; never blocks or raises.

        Called by the bounce listener once the message is committed. A message
        already queued or in flight is not queued twice. Before
        ``startService`` the id is only queued.

        Args:
            bounce_id: the id ``store_bounce`` returned.
        """
        try:
            if self._enqueue(bounce_id, replay=False):
                self._stats.received += 1
            self._pump()
        except Exception:
            # The message is committed and pending: the next sweep finds it.
            log.failure("bounce {bounce_id}: could not queue for analysis", bounce_id=bounce_id)

    def replay(self, bounce_id: int) -> Deferred[ProcessResult]:
        """Analyze a stored returned message again (after a rule change).

        Works whatever the message's status. Events already recorded for the
        same message, delivery and recipient are skipped by the store
        (idempotency keys), so a replay never counts twice.

        Args:
            bounce_id: the stored message to re-analyze.

        Returns:
            A Deferred firing with the :class:`ProcessResult` once the
            message has been recorded (after any store outage is over).
        """
        d: Deferred[ProcessResult] = Deferred()
        self._waiters.setdefault(bounce_id, []).append(d)
        self._stats.replayed += 1
        self._enqueue(bounce_id, replay=True)
        self._pump()
        return d

    def stats(self) -> dict[str, Any]:
        """Counters for metrics.

        Returns:
            ``received``, ``analyzed``, ``uncorrelated``, ``failed``,
            ``retries`` (store outages met), ``replayed``, ``events``
            (written), ``queued``, ``in_flight`` and ``by_category`` (a dict).
        """
        s = self._stats
        return {
            "received": s.received,
            "analyzed": s.analyzed,
            "uncorrelated": s.uncorrelated,
            "failed": s.failed,
            "retries": s.retries,
            "replayed": s.replayed,
            "events": s.events,
            "queued": len(self._queue),
            "in_flight": len(self._inflight),
            "by_category": dict(s.by_category),
        }

    # -- service -----------------------------------------------------------------

    def startService(self) -> None:
        """Start analyzing, beginning with every message left pending."""
        super().startService()  # type: ignore[no-untyped-call]
        self._stopping = False
        if self._own_pool is not None:
            self._own_pool.start()
        if self._processes is not None:
            self._processes.restart()
        self._start_sweep()
        self._pump()

    def stopService(self) -> Deferred[None]:
        """Stop taking work; wait (at most ``stop_timeout``) for analyses in flight.

        Queued messages stay pending in the store and are resumed at the next
        start; timers are cancelled.
        """
        super().stopService()  # type: ignore[no-untyped-call]
        self._stopping = True
        for timer in (self._pause, self._sweep_timer):
            if timer is not None and timer.active():
                timer.cancel()
        self._pause = self._sweep_timer = None
        queued = list(self._queue)
        self._queue.clear()
        self._queued.clear()
        self._after_inflight.clear()
        for bounce_id, _ in queued:
            self._resolve(bounce_id, ProcessResult(bounce_id, "stopped"))

        if not self._inflight:
            self._stop_pool(join=True)
            return succeed(None)
        waiting: Deferred[None] = Deferred()
        self._drain_waiters.append(waiting)
        waiting.addTimeout(self._stop_timeout, self._clock)

        def drained(_: None) -> None:
            self._stop_pool(join=True)

        def timed_out(failure: Failure) -> None:
            log.warn(
                "stopping with {count} analyses still running; their messages stay pending",
                count=len(self._inflight), failure=failure,
            )
            # Joining a stuck worker here would make the stop unbounded.
            self._stop_pool(join=False)

        waiting.addCallbacks(drained, timed_out)
        return waiting

    def _stop_pool(self, join: bool) -> None:
        """Stop the pool this processor started (if any).

        Args:
            join: wait for the workers here; otherwise a helper thread does
                (and worker processes are killed: an analysis is stuck).
        """
        if self._processes is not None:
            self._processes.stop(wait=join)
        pool = self._own_pool
        if pool is None or not pool.started:
            return
        if join:
            pool.stop()
        else:
            threading.Thread(
                target=pool.stop, name="hurricane-bounce-pool-stop", daemon=True
            ).start()

    # -- queue -------------------------------------------------------------------

    def _enqueue(self, bounce_id: int, replay: bool) -> bool:
        """Add to the queue; False when it was there already or did not fit."""
        if self._stopping:
            self._resolve(bounce_id, ProcessResult(bounce_id, "stopped"))
            return False
        if bounce_id in self._inflight:
            if replay:
                self._after_inflight[bounce_id] = True
            return False
        if bounce_id in self._queued:
            if replay:  # upgrade the queued entry so an analyzed message is redone
                self._queue = collections.deque(
                    (b, r or b == bounce_id) for b, r in self._queue
                )
            return False
        if len(self._queue) >= self._max_queued and not replay:
            self._sweep_again = True  # still pending in the store
            log.warn(
                "analysis queue full ({size}); bounce {bounce_id} left for a later sweep",
                size=len(self._queue), bounce_id=bounce_id,
            )
            return False
        self._queue.append((bounce_id, replay))
        self._queued.add(bounce_id)
        return True

    def _pump(self) -> None:
        """Start queued work up to the concurrency limit (loop, not recursion)."""
        if self._pumping:
            return
        self._pumping = True
        try:
            while True:
                while (
                    self.running
                    and not self._stopping
                    and self._pause is None
                    and self._queue
                    and self._batches < self._concurrency
                ):
                    # Whatever is waiting goes together (up to batch_size):
                    # one thread hop and one commit for all of it.
                    items: list[tuple[int, bool]] = []
                    while self._queue and len(items) < self._batch_size:
                        bounce_id, replay = self._queue.popleft()
                        self._queued.discard(bounce_id)
                        items.append((bounce_id, replay))
                    self._start(items)
                # a sweep that completes at once refills the queue: go round again
                if not self._maybe_sweep_again():
                    break
        finally:
            self._pumping = False

    def _start(self, items: list[tuple[int, bool]]) -> None:
        d: Deferred[list[ProcessResult]] = Deferred.fromCoroutine(self._process_batch(items))
        if d.called:
            # finished synchronously (in-memory store, inline runner)
            d.addBoth(self._batch_finished, items)
            return
        self._batches += 1
        for bounce_id, _ in items:
            self._inflight[bounce_id] = d
        d.addBoth(self._batch_finished, items, True)

    def _batch_finished(
        self, outcome: list[ProcessResult] | Failure, items: list[tuple[int, bool]],
        counted: bool = False,
    ) -> None:
        if counted:
            self._batches -= 1
        if isinstance(outcome, Failure):
            outcomes: list[ProcessResult | Failure] = [outcome] * len(items)
        else:
            outcomes = list(outcome)
        retries: list[tuple[int, bool]] = []
        causes: list[str] = []
        for (bounce_id, replay), one in zip(items, outcomes, strict=True):
            if self._finished(one, bounce_id, replay):
                retries.append((bounce_id, replay))
                if isinstance(one, ProcessResult) and one.error:
                    causes.append(one.error)
        if retries:
            # store outage: back in front of the queue (in order), pause everything
            for bounce_id, replay in reversed(retries):
                self._queue.appendleft((bounce_id, replay))
                self._queued.add(bounce_id)
            for bounce_id, _ in retries:
                again = self._after_inflight.pop(bounce_id, None)
                if again is not None:
                    self._enqueue(bounce_id, again)  # upgrades the queued entry
            self._back_off(causes[0] if causes else "store unavailable")
        if not self._inflight:
            for w in self._drain_waiters:
                if not w.called:
                    w.callback(None)
            self._drain_waiters = []
        if not self._stopping:
            self._pump()

    def _finished(self, outcome: ProcessResult | Failure, bounce_id: int, replay: bool) -> bool:
        """Settle one message of a finished batch; True when it must be retried."""
        retry = False
        self._inflight.pop(bounce_id, None)
        if isinstance(outcome, Failure):
            # _process handles its own errors; this is a bug in it
            log.failure("bounce {bounce_id}: processing crashed", outcome, bounce_id=bounce_id)
            self._resolve(bounce_id, ProcessResult(bounce_id, "failed", error=str(outcome.value)))
        elif outcome.status == "retry" and self._stopping:
            self._resolve(bounce_id, ProcessResult(bounce_id, "stopped"))
        elif outcome.status == "retry":
            retry = True
        else:
            self._backoff = 0
            if outcome.status in ("analyzed", "uncorrelated", "failed"):
                self._progress += 1
            self._resolve(bounce_id, outcome)
        if not retry:
            again = self._after_inflight.pop(bounce_id, None)
            if again is not None:
                self._enqueue(bounce_id, again)
        return retry

    def _resolve(self, bounce_id: int, outcome: ProcessResult) -> None:
        for w in self._waiters.pop(bounce_id, []):
            w.callback(outcome)

    def _delay(self, attempts: int) -> float:
        return float(min(self._retry_initial * 2 ** max(attempts - 1, 0), self._retry_max))

    def _back_off(self, cause: str = "store unavailable") -> None:
        """Pause all analysis: the store, or the analysis workers, are unavailable."""
        self._stats.retries += 1
        if self._stopping or self._pause is not None:
            return
        self._backoff += 1
        delay = self._delay(self._backoff)
        log.warn(
            "{cause}; analysis paused for {delay} s ({queued} queued)",
            cause=cause, delay=delay, queued=len(self._queue),
        )
        self._pause = self._clock.callLater(delay, self._resume)

    def _resume(self) -> None:
        self._pause = None
        self._pump()

    # -- sweeping pending messages ---------------------------------------------

    def _start_sweep(self) -> None:
        self._sweep_timer = None
        self._sweep_again = False
        self._progress = 0
        self._sweeping = True
        d = Deferred.fromCoroutine(self._sweep())
        d.addErrback(
            lambda f: log.failure("sweeping pending returned messages failed", f)
        )

    async def _sweep(self) -> None:
        """Queue every message left pending (crash, outage, full queue)."""
        try:
            ids = await self._store.pending_bounces(self._sweep_batch)
        except StoreUnavailable:
            self._sweep_backoff += 1
            delay = self._delay(self._sweep_backoff)
            log.warn("store unavailable; resuming pending bounces in {delay} s", delay=delay)
            if not self._stopping:
                self._sweep_timer = self._clock.callLater(delay, self._start_sweep)
            return
        except Exception:
            log.failure("reading pending returned messages failed")
            return
        finally:
            self._sweeping = False
        self._sweep_backoff = 0
        if ids:
            log.info("resuming {count} pending returned messages", count=len(ids))
        for bounce_id in ids:
            if self._enqueue(bounce_id, replay=False):
                self._stats.received += 1
        if len(ids) >= self._sweep_batch:
            self._sweep_again = True
        self._pump()

    def _maybe_sweep_again(self) -> bool:
        """After the queue drained, look for more pending messages.

        Only when the last sweep was cut short and work has been done since,
        so a message the store keeps pending for no reason cannot loop.

        Returns:
            True when a sweep was started.
        """
        if (
            self._sweep_again
            and self._progress
            and self.running
            and not self._stopping
            and not self._queue
            and not self._inflight
            and self._sweep_timer is None
            and not self._sweeping
        ):
            self._start_sweep()
            return True
        return False

    # -- one message ---------------------------------------------------------------

    async def _process_batch(self, items: list[tuple[int, bool]]) -> list[ProcessResult]:
        """Load, analyze (one thread hop), correlate and record (one transaction) a batch.

        Every message gets its own result, as if processed alone: a store
        outage makes it ``retry``, a bug or a broken analysis marks it
        ``failed``; one bad message does not fail the others.
        """
        # Loads, then correlations, run concurrently: the store batches reads
        # issued together into one transaction (one pool-thread hop on SQLite).
        results: dict[int, ProcessResult] = {}
        loaded: list[StoredBounce] = []
        for (bounce_id, _), got in zip(items, await _gather(
                [self._load(bounce_id, replay) for bounce_id, replay in items]), strict=True):
            if isinstance(got, ProcessResult):
                results[bounce_id] = got
            else:
                loaded.append(got)

        analyses = await self._analyze_all(loaded)
        ready: list[_Analyzed] = []
        for bounce, prepared in zip(loaded, await _gather(
                [self._prepare_safe(b, a, fp) for b, (a, fp) in zip(loaded, analyses,
                                                                    strict=True)]),
                                   strict=True):
            if isinstance(prepared, ProcessResult):
                results[bounce.bounce_id] = prepared
            else:
                ready.append(prepared)

        for item, outcome in zip(ready, await self._record_all(ready), strict=True):
            results[item.bounce.bounce_id] = outcome
        return [results[bounce_id] for bounce_id, _ in items]

    async def _load(self, bounce_id: int, replay: bool) -> StoredBounce | ProcessResult:
        """The stored message to analyze, or the result that ends its processing."""
        bounce = await self._settled(bounce_id, self._store.load_bounce(bounce_id))
        if isinstance(bounce, ProcessResult):
            return bounce
        if bounce is None:
            log.warn("bounce {bounce_id}: not in the store", bounce_id=bounce_id)
            return ProcessResult(bounce_id, "missing")
        if bounce.status != BounceStatus.pending and not replay:
            return ProcessResult(bounce_id, "skipped", category=bounce.category)
        if bounce.purged_at is not None:
            # past the retention period: its bytes are gone, its analysis stays
            return ProcessResult(bounce_id, "purged", category=bounce.category)
        return bounce

    async def _settled(self, bounce_id: int, step: Awaitable[T]) -> T | ProcessResult:
        """What ``step`` gives, or the result that ends this message's processing now:
        ``retry`` on a store outage, ``failed`` (marked in the store) on a bug."""
        try:
            return await step
        except StoreUnavailable:
            log.warn("bounce {bounce_id}: store unavailable, will retry", bounce_id=bounce_id)
            return ProcessResult(bounce_id, "retry")
        except Exception as e:
            log.failure("bounce {bounce_id}: processing failed", bounce_id=bounce_id)
            return await self._fail(bounce_id, f"{type(e).__name__}: {e}")

    async def _prepare_safe(self, bounce: StoredBounce, analysis: Analysis | BaseException,
                            fingerprint: bytes | None) -> _Analyzed | ProcessResult:
        """:meth:`_prepare`, with a store outage or a bug turned into this message's result."""
        return await self._settled(bounce.bounce_id,
                                   self._prepare(bounce, analysis, fingerprint))

    async def _analyze_all(
        self, bounces: list[StoredBounce]
    ) -> list[tuple[Analysis | BaseException, bytes | None]]:
        """Analyze in the worker processes or the runner: one hop for the whole
        batch (the hand-off and back costs more than a small analysis).

        Returns:
            Per message, its analysis (or the exception) and its fingerprint
            when the worker computed it (None: the caller does).
        """
        if not bounces:
            return []
        if self._processes is not None:
            return await self._analyze_in_processes(bounces)
        return [(a, None) for a in await self._analyze_in_runner(bounces)]

    async def _analyze_in_runner(
        self, bounces: list[StoredBounce]
    ) -> list[Analysis | BaseException]:
        """Analyze with the runner (threads, or inline in tests)."""
        if len(bounces) == 1:
            # alone: the analyzer itself, so a runner sees the usual call
            bounce = bounces[0]
            try:
                one = await self._runner(
                    self._analyze, bounce.raw, bounce.rcpt_to or None, **self._analyze_kwargs
                )
            except Exception as e:
                return [e]
            return [one]
        try:
            many: list[Analysis | BaseException] = await self._runner(
                _analyze_many, self._analyze, [(b.raw, b.rcpt_to or None) for b in bounces],
                self._analyze_kwargs,
            )
        except Exception as e:
            return [e] * len(bounces)
        return many

    async def _analyze_in_processes(
        self, bounces: list[StoredBounce]
    ) -> list[tuple[Analysis | BaseException, bytes | None]]:
        """Analyze a batch in a worker process; survive a worker's death.

        A dead worker fails the whole call (and every other call in flight in
        the pool); so does one past its deadline (a hang), whose workers the
        pool kills. It may have been killed from outside, or one of these
        messages kills it: each message is then analyzed again alone, one at
        a time across the processor and with nothing else in the pool, so a
        message that kills its worker every time is found and marked failed
        while the others go through. While the service stops, or when the
        workers cannot start at all (:class:`PoolUnavailable`), the batch is
        left pending instead (``_prepare`` turns the exception into a retry).
        """
        assert self._processes is not None
        work = [(b.raw, b.rcpt_to or None) for b in bounces]
        try:
            many: list[tuple[Analysis | BaseException, bytes | None]] = list(
                await self._processes.analyze(work))
        except PoolUnavailable as e:
            return [(e, None)] * len(bounces)
        except WorkerLost as e:
            if self._stopping:
                return [(e, None)] * len(bounces)
            log.warn("{error} under {count} messages; analyzing each alone",
                     error=str(e), count=len(bounces))
        except Exception as e:
            return [(e, None)] * len(bounces)
        else:
            return many
        out: list[tuple[Analysis | BaseException, bytes | None]] = []
        for bounce, item in zip(bounces, work, strict=True):
            one = await self._analyze_alone(bounce.bounce_id, item)
            if isinstance(one[0], PoolUnavailable):
                # no worker can start: do not start one per message
                return out + [one] * (len(bounces) - len(out))
            out.append(one)
        return out

    async def _analyze_alone(
        self, bounce_id: int, item: tuple[bytes, str | None]
    ) -> tuple[Analysis | BaseException, bytes | None]:
        """One message, alone in the pool, once.

        It is here because a worker died (or passed its deadline) under its
        batch. Alone, a second death is this message's doing: it is marked
        failed (raw kept) rather than tried again, since each attempt stalls
        the pool for up to its deadline. Workers that cannot start
        (:class:`PoolUnavailable`), or a stop, leave it pending instead.
        """
        assert self._processes is not None
        await self._isolating.acquire()
        try:
            try:
                [one] = await self._processes.analyze([item], alone=True)
                return one
            except PoolUnavailable as e:
                return e, None
            except WorkerLost as e:
                if self._stopping:
                    return e, None
                log.warn("bounce {bounce_id}: {error} (alone, after its batch)",
                         bounce_id=bounce_id, error=str(e))
                return RuntimeError(
                    f"the analysis worker died on this message twice, in its batch and"
                    f" alone (last: {e})"), None
            except Exception as e:
                return e, None
        finally:
            self._isolating.release()

    async def _prepare(self, bounce: StoredBounce, analysis: Analysis | BaseException,
                       fingerprint: bytes | None = None) -> _Analyzed | ProcessResult:
        """Check an analysis, correlate it and build its events (nothing written yet)."""
        bounce_id = bounce.bounce_id
        if isinstance(analysis, WorkerLost):
            # not analyzed (the service is stopping, or no worker can
            # start): still pending
            return ProcessResult(bounce_id, "retry", error=str(analysis))
        if isinstance(analysis, BaseException):
            log.failure("bounce {bounce_id}: analysis raised",
                        Failure(analysis, type(analysis), analysis.__traceback__),
                        bounce_id=bounce_id)
            return await self._fail(
                bounce_id, f"analysis raised {type(analysis).__name__}: {analysis}")
        if not isinstance(analysis, Analysis):
            return await self._fail(
                bounce_id, f"analysis returned {type(analysis).__name__}, not Analysis"
            )
        if analysis.error and not analysis.results:
            log.warn(
                "bounce {bounce_id}: analysis gave up: {error}",
                bounce_id=bounce_id, error=analysis.error,
            )
            return await self._fail(bounce_id, f"analysis gave up: {analysis.error}")

        now = self._clock.seconds()
        corr = await correlate(
            self._store, self._codec, bounce, analysis, now, window=self._window
        )
        if fingerprint is None:
            fingerprint = message_fingerprint(bounce.raw)
        events = build_events(bounce, analysis, corr, fingerprint)
        record = analysis.to_json()
        record["correlation"] = corr.to_json()
        return _Analyzed(bounce, analysis, corr, events, json.dumps(record, default=str))

    async def _record_all(self, ready: list[_Analyzed]) -> list[ProcessResult]:
        """Record the batch in one transaction; on a non-store error, one by one
        so the message at fault is marked failed and the others still recorded."""
        if not ready:
            return []
        if len(ready) > 1:
            try:
                ids = await self._store.record_bounces([
                    BounceRecord(a.bounce.bounce_id, a.events, a.analysis.category,
                                 a.corr.key, a.record) for a in ready
                ])
            except StoreUnavailable:
                log.warn("{count} bounces: store unavailable, will retry", count=len(ready))
                return [ProcessResult(a.bounce.bounce_id, "retry") for a in ready]
            except Exception as e:
                log.warn("recording {count} bounces together failed ({error}); "
                         "recording them one by one", count=len(ready), error=repr(e))
            else:
                return self._log_recorded([self._recorded(a, event_ids)
                                           for a, event_ids in zip(ready, ids, strict=True)])
        return self._log_recorded([await self._record_one(a) for a in ready])

    def _log_recorded(self, results: list[ProcessResult]) -> list[ProcessResult]:
        """One log line per recorded batch, every message's details in it.

        One event per message cost as much reactor time as recording it.
        The ``messages`` field keeps each message's details for JSON logs.
        """
        done = [r for r in results if r.status in ("analyzed", "uncorrelated")]
        if done:
            log.info(
                "{count} returned messages recorded: {summary}",
                count=len(done),
                summary=", ".join(
                    f"{r.bounce_id} {r.category}/{r.correlation} {len(r.event_ids)}/{r.events}"
                    for r in done),
                messages=[{"bounce_id": r.bounce_id, "category": r.category,
                           "correlation": r.correlation, "written": len(r.event_ids),
                           "built": r.events} for r in done],
            )
        return results

    async def _record_one(self, a: _Analyzed) -> ProcessResult:
        bounce_id = a.bounce.bounce_id
        event_ids = await self._settled(bounce_id, self._store.record_bounce(
            bounce_id, a.events, a.analysis.category, a.corr.key, a.record))
        if isinstance(event_ids, ProcessResult):
            return event_ids
        return self._recorded(a, event_ids)

    def _recorded(self, a: _Analyzed, event_ids: list[int]) -> ProcessResult:
        """Count and log one recorded analysis; its result."""
        analysis, corr = a.analysis, a.corr
        s = self._stats
        s.analyzed += 1
        s.by_category[analysis.category] += 1
        s.events += len(event_ids)
        status = "analyzed" if corr.correlated else "uncorrelated"
        if not corr.correlated and analysis.category != Category.other:
            # "other" (a reply, spam) is expected to match nothing
            s.uncorrelated += 1
        if corr.unmatched:
            log.info("bounce {bounce_id}: {unmatched} results matched no delivery",
                     bounce_id=a.bounce.bounce_id, unmatched=len(corr.unmatched))
        return ProcessResult(
            a.bounce.bounce_id, status, category=analysis.category, correlation=corr.key,
            event_ids=tuple(event_ids), events=len(a.events),
        )

    async def _fail(self, bounce_id: int, error: str) -> ProcessResult:
        """Mark a message failed (raw kept for replay)."""
        try:
            await self._store.mark_bounce_failed(bounce_id, error[:1000])
        except StoreUnavailable:
            log.warn("bounce {bounce_id}: store unavailable, will retry", bounce_id=bounce_id)
            return ProcessResult(bounce_id, "retry")
        except Exception:
            log.failure("bounce {bounce_id}: could not mark it failed", bounce_id=bounce_id)
        self._stats.failed += 1
        return ProcessResult(bounce_id, "failed", error=error)
