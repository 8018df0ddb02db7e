"""From a stored returned message to recorded outcomes.

The bounce listener commits every returned message to the store before it
answers 250, then calls :meth:`BounceProcessor.submit`. From there:

    intake queue -> load_bounce -> analyze (executor) -> correlate
                 -> events -> record_bounces

One part per job:

- :mod:`hurricane.inbound.intake`: the bounded queue of ids and the
  messages in flight (backpressure: beyond ``max_queued`` ids stay pending
  in the store for a later sweep).
- :mod:`hurricane.inbound.executor`: where analyses run (worker processes,
  threads, or inline), chosen once from configuration; analysis is pure
  CPU work over hostile input, under the analyzer's own limits.
- :mod:`hurricane.inbound.analysis`: one executor hop per batch, and the
  rule for a batch whose worker died or passed its deadline (each message
  once more, alone).
- :mod:`hurricane.inbound.events`: the analysis as events (what they change
  is :func:`hurricane.decisions.decide_bounce`'s to say, in the store).
- :mod:`hurricane.inbound.recorder`: load, correlate and record a batch
  (``RECORD_CHUNK`` messages per transaction).
- This module: the service that pumps batches (at most ``concurrency`` at a
  time), pauses with backoff while the store (or the analysis workers) is
  unavailable, and sweeps the store for messages left pending.

Nothing is lost. A message that correlates to nothing is still recorded (no
events) so the raw bytes stay for a replay after a rule change; one whose
analysis blew up is marked ``failed`` (raw kept); one caught by a store
outage stays ``pending`` and is retried with backoff, and ``startService``
resumes every pending message, so a crash between the 250 and the analysis
costs nothing.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from hurricane.inbound.analysis import AnalysisStage
from hurricane.inbound.correlate import RECIPIENT_WINDOW
from hurricane.inbound.events import build_events, idempotency_key
from hurricane.inbound.executor import (
    AnalyzeFunction,
    CallExecutor,
    Executor,
    Runner,
    run_inline,
)
from hurricane.inbound.fingerprint import message_fingerprint
from hurricane.inbound.intake import Intake, Item
from hurricane.inbound.recorder import Recorder, fresh_bounce
from hurricane.inbound.results import ProcessorStats, ProcessResult, ProcessStatus
from hurricane.model import ReturnedMessage, StoredBounce
from hurricane.store.interface import IOutcomeStore, StoreUnavailable
from hurricane.verp import VerpCodec

__all__ = [
    "AnalyzeFunction",
    "BounceProcessor",
    "ProcessResult",
    "ProcessStatus",
    "ProcessorConfig",
    "Runner",
    "build_events",
    "idempotency_key",
    "message_fingerprint",
    "run_inline",
]

log = Logger()


def _stopped(d: Deferred[None] | None) -> Deferred[None]:
    """An executor's stop as a Deferred (None: it had nothing left to wait for)."""
    return succeed(None) if d is None else d


def _freeze_startup_objects() -> None:
    """Keep the objects of start-up out of every later full garbage collection.

    Modules, classes, configuration and the like live as long as the process;
    a full (generation 2) collection walks all of them, which under a bounce
    flood took ~50 ms each time on the reactor thread (measured with
    ``gc.callbacks`` in bench/inbound.py's server: two per 3,000 returns, every
    SMTP session stalled meanwhile). ``gc.freeze`` moves what exists now to
    the permanent generation (CPython's advice for long-running servers);
    cycles made later are collected as before. Once per process is enough:
    the first start (the processor starts with the server) does it.
    """
    global _frozen
    if not _frozen:
        _frozen = True
        gc.collect()  # start-up garbage is freed, not kept for ever
        gc.freeze()


_frozen = False


@dataclass(frozen=True)
class ProcessorConfig:
    """How the processor paces its work.

    Attributes:
        concurrency: batches in flight at most.
        batch_size: queued messages taken together at most: analyzed in one
            executor hop and recorded in transactions of up to
            ``RECORD_CHUNK`` (``record_bounces``).
            Under load this turns one commit (fsync) and one hand-off per
            message into one per batch; when idle a message still goes
            alone, at once.
        min_batch: queued messages needed to start a batch beside others
            still in flight (a batch starts at once when none is). Each
            batch costs ~1 ms of CPU whatever its size (an executor hop,
            a read and a write transaction, their thread hand-offs, a log
            line): under a steady flood that the processor keeps up with,
            starting one per message or two as they arrive spent more CPU
            on batches than on messages. Messages left queued wait for the
            next batch to finish at most.
        retry_initial: first wait after a store outage (seconds).
        retry_max: longest wait between attempts during an outage.
        stop_timeout: how long ``stopService`` waits for analyses in flight.
        window: how far back a bare recipient address is matched (seconds).
        max_queued: ids kept in memory at most; beyond that they stay
            pending in the store and are picked up by a later sweep.
        sweep_batch: pending ids read from the store per sweep.
        preload_bytes: raw bytes of just-stored messages kept in memory at
            most, so that their analysis need not read them back from the
            store (one store hop per batch fewer); beyond it, or after a
            retry, they are loaded as usual.
    """

    concurrency: int = 2
    batch_size: int = 32
    min_batch: int = 1
    retry_initial: float = 5.0
    retry_max: float = 300.0
    stop_timeout: float = 30.0
    window: float = RECIPIENT_WINDOW
    max_queued: int = 10_000
    sweep_batch: int = 1000
    preload_bytes: int = 32 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if not 1 <= self.min_batch <= self.batch_size:
            raise ValueError("min_batch must be between 1 and batch_size")


class BounceProcessor(Service):
    """Analyzes stored returned messages and records their outcomes.

    Args:
        store: the outcome store.
        codec: the VERP codec of the bounce domain (verifies header tokens
            and ENVIDs).
        clock: the reactor's time (backoff, sweeps, the stop timeout).
        executor: where analyses run; the processor starts and stops it
            with the service. None: inline (tests, tools).
        config: pacing (:class:`ProcessorConfig`).
    """

    name = "bounce-processor"

    def __init__(
        self,
        store: IOutcomeStore,
        codec: VerpCodec,
        clock: IReactorTime,
        executor: Executor | None = None,
        config: ProcessorConfig | None = None,
    ) -> None:
        self._config = config = config if config is not None else ProcessorConfig()
        self._store = store
        self._clock = clock
        self.executor: Executor = executor if executor is not None else CallExecutor()
        self._stats = ProcessorStats()
        self._intake = Intake(config.max_queued)
        self._analysis = AnalysisStage(self.executor, lambda: self._stopping)
        self._recorder = Recorder(store, codec, clock, config.window, self._stats)
        #: Batches being processed (each holds up to ``batch_size`` messages).
        self._batches = 0
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
        #: Just-stored messages in hand (see ``ProcessorConfig.preload_bytes``).
        self._preloaded: dict[int, StoredBounce] = {}
        self._preload_bytes = 0

    # -- public API --------------------------------------------------------------

    def submit(self, bounce_id: int, message: ReturnedMessage | None = None) -> None:
        """Queue a stored returned message for analysis; never blocks or raises.

        Called by the bounce listener once the message is committed. A message
        already queued or in flight is not queued twice. Before
        ``startService`` the id is only queued.

        Args:
            bounce_id: the id ``store_bounce`` returned.
            message: what was stored, when the caller has it in hand: kept
                (up to ``ProcessorConfig.preload_bytes`` in all) so that it
                is not read back from the store.
        """
        try:
            if self._enqueue(bounce_id, replay=False):
                self._stats.received += 1
                if message is not None and \
                        self._preload_bytes + len(message.raw) <= self._config.preload_bytes:
                    self._preloaded[bounce_id] = fresh_bounce(bounce_id, message)
                    self._preload_bytes += len(message.raw)
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
        d = self._intake.wait(bounce_id)
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
            "queued": self._intake.queued,
            "in_flight": self._intake.in_flight,
            "by_category": dict(s.by_category),
        }

    # -- service -----------------------------------------------------------------

    def startService(self) -> None:
        """Start analyzing, beginning with every message left pending."""
        super().startService()  # type: ignore[no-untyped-call]
        _freeze_startup_objects()
        self._stopping = False
        self.executor.start()
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
        self._recorder.flush_log()
        self._preloaded.clear()
        self._preload_bytes = 0
        for bounce_id, _ in self._intake.clear():
            self._intake.resolve(bounce_id, ProcessResult(bounce_id, ProcessStatus.stopped))

        if not self._intake.in_flight:
            return _stopped(self.executor.stop(wait=True))
        waiting: Deferred[None] = Deferred()
        self._drain_waiters.append(waiting)
        waiting.addTimeout(self._config.stop_timeout, self._clock)

        stopped: Deferred[None] = Deferred()

        def drained(_: None) -> None:
            _stopped(self.executor.stop(wait=True)).chainDeferred(stopped)

        def timed_out(failure: Failure) -> None:
            log.warn(
                "stopping with {count} analyses still running; their messages stay pending",
                count=self._intake.in_flight, failure=failure,
            )
            # Joining a stuck worker here would make the stop unbounded: killed.
            _stopped(self.executor.stop(wait=False)).chainDeferred(stopped)

        waiting.addCallbacks(drained, timed_out)
        return stopped

    # -- queue -------------------------------------------------------------------

    def _enqueue(self, bounce_id: int, replay: bool) -> bool:
        """Add to the queue; False when it was there already or did not fit."""
        if self._stopping:
            self._intake.resolve(bounce_id, ProcessResult(bounce_id, ProcessStatus.stopped))
            return False
        added = self._intake.put(bounce_id, replay)
        if added is None:
            self._sweep_again = True  # still pending in the store
            log.warn(
                "analysis queue full ({size}); bounce {bounce_id} left for a later sweep",
                size=self._intake.queued, bounce_id=bounce_id,
            )
            return False
        return added

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
                    and self._intake.queued
                    and self._batches < self._config.concurrency
                    and (not self._batches
                         or self._intake.queued >= self._config.min_batch)
                ):
                    # Whatever is waiting goes together (up to batch_size):
                    # one executor hop for all of it, few commits.
                    self._start(self._intake.take(self._config.batch_size))
                # a sweep that completes at once refills the queue: go round again
                if not self._maybe_sweep_again():
                    break
        finally:
            self._pumping = False

    def _start(self, items: list[Item]) -> None:
        preloaded: dict[int, StoredBounce] = {}
        for bounce_id, replay in items:
            bounce = self._preloaded.pop(bounce_id, None)
            if bounce is not None:
                self._preload_bytes -= len(bounce.raw)
                if not replay:  # a replay reads the store's current row
                    preloaded[bounce_id] = bounce
        d: Deferred[list[ProcessResult]] = Deferred.fromCoroutine(
            self._recorder.process(items, self._analysis.analyze, preloaded))
        if d.called:
            # finished synchronously (in-memory store, inline executor)
            d.addBoth(self._batch_finished, items)
            return
        self._batches += 1
        self._intake.flying(items, d)
        d.addBoth(self._batch_finished, items, True)

    def _batch_finished(
        self, outcome: list[ProcessResult] | Failure, items: list[Item],
        counted: bool = False,
    ) -> None:
        if counted:
            self._batches -= 1
        if isinstance(outcome, Failure):
            outcomes: list[ProcessResult | Failure] = [outcome] * len(items)
        else:
            outcomes = list(outcome)
        retries: list[Item] = []
        again: dict[int, bool] = {}
        causes: list[str] = []
        for (bounce_id, replay), one in zip(items, outcomes, strict=True):
            asked = self._intake.landed(bounce_id)
            if self._finished(one, bounce_id):
                retries.append((bounce_id, replay))
                if isinstance(one, ProcessResult) and one.error:
                    causes.append(one.error)
                if asked is not None:
                    again[bounce_id] = asked
            elif asked is not None:
                self._enqueue(bounce_id, asked)
        if retries:
            # store outage: back in front of the queue (in order), pause everything
            self._intake.put_back(retries)
            for bounce_id, replay in again.items():
                self._enqueue(bounce_id, replay)  # upgrades the queued entry
            self._back_off(causes[0] if causes else "store unavailable")
        if self._stopping:
            self._recorder.flush_log()  # no timer left behind a stopped service
        if not self._intake.in_flight:
            for w in self._drain_waiters:
                if not w.called:
                    w.callback(None)
            self._drain_waiters = []
        if not self._stopping:
            self._pump()

    def _finished(self, outcome: ProcessResult | Failure, bounce_id: int) -> bool:
        """Settle one message of a finished batch; True when it must be retried."""
        if isinstance(outcome, Failure):
            # the recorder handles its own errors; this is a bug in it
            log.failure("bounce {bounce_id}: processing crashed", outcome, bounce_id=bounce_id)
            self._intake.resolve(bounce_id, ProcessResult(
                bounce_id, ProcessStatus.failed, error=str(outcome.value)))
        elif outcome.status is ProcessStatus.retry and self._stopping:
            self._intake.resolve(bounce_id, ProcessResult(bounce_id, ProcessStatus.stopped))
        elif outcome.status is ProcessStatus.retry:
            return True
        else:
            self._backoff = 0
            if outcome.status.progress:
                self._progress += 1
            self._intake.resolve(bounce_id, outcome)
        return False

    def _delay(self, attempts: int) -> float:
        c = self._config
        return float(min(c.retry_initial * 2 ** max(attempts - 1, 0), c.retry_max))

    def _back_off(self, cause: str = "store unavailable") -> None:
        """Pause all analysis: the store, or the analysis workers, are unavailable."""
        self._stats.retries += 1
        if self._stopping or self._pause is not None:
            return
        self._backoff += 1
        delay = self._delay(self._backoff)
        log.warn(
            "{cause}; analysis paused for {delay} s ({queued} queued)",
            cause=cause, delay=delay, queued=self._intake.queued,
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
            ids = await self._store.pending_bounces(self._config.sweep_batch)
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
        if len(ids) >= self._config.sweep_batch:
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
            and not self._intake.queued
            and not self._intake.in_flight
            and self._sweep_timer is None
            and not self._sweeping
        ):
            self._start_sweep()
            return True
        return False
