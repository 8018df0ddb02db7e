"""The store side of processing a batch: load, correlate, build events, record.

Every message gets its own :class:`ProcessResult`, as if processed alone: a
store outage makes it ``retry``, a bug or a broken analysis marks it
``failed`` (raw kept); one bad message does not fail the others. Nothing is
lost: a message that correlates to nothing is still recorded (no events) so
the raw bytes stay for a replay after a rule change.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from hurricane.bounce.model import Analysis
from hurricane.inbound.analysis_worker import Analyzed
from hurricane.inbound.correlate import Correlation, correlate
from hurricane.inbound.events import build_events
from hurricane.inbound.fingerprint import message_fingerprint
from hurricane.inbound.results import ProcessorStats, ProcessResult, ProcessStatus
from hurricane.inbound.workers import WorkerLost
from hurricane.model import BounceEvent, Delivery, ReturnedMessage, StoredBounce
from hurricane.outcome import BounceStatus, Category
from hurricane.store.interface import BounceRecord, IOutcomeStore, StoreUnavailable
from hurricane.verp import VerpCodec

__all__ = ["RECORDED_LOG_DELAY", "RECORD_CHUNK", "Prepared", "Recorder", "fresh_bounce",
           "gather"]

log = Logger()

T = TypeVar("T")

#: Most messages recorded in one transaction. The store commits every write
#: of the server in one queue (SQLite: one connection), so a returned
#: message's 250 waits for the transaction in flight: recording a whole batch
#: (32 messages, ~12 ms on the bench machine) at once held the bounce
#: listener's commits that long. Sixteen halve that wait; fewer would make
#: a batch's recording a longer row of commits, which fell behind the
#: listener under load in bench/inbound.py runs (with 4 clearly, with 8 by a
#: few percent). Only while returns keep arriving: otherwise in one.
RECORD_CHUNK = 16

#: How long "recorded" log lines are gathered into one (seconds).
RECORDED_LOG_DELAY = 0.1


async def gather(coros: list[Coroutine[Any, Any, T]]) -> list[T]:
    """Run coroutines concurrently; their results in order (they must not raise)."""
    if len(coros) == 1:
        return [await coros[0]]
    results: list[T] = await gatherResults([Deferred.fromCoroutine(c) for c in coros])
    return results


@dataclass
class Prepared:
    """One analyzed, correlated message waiting to be recorded."""

    bounce: StoredBounce
    analysis: Analysis
    corr: Correlation
    events: list[BounceEvent]
    record: str


class Recorder:
    """Loads, correlates and records returned messages in the store.

    Args:
        store: the outcome store.
        codec: verifies header tokens and ENVIDs (correlation).
        clock: the time of the correlation window.
        window: how far back a bare recipient address is matched (seconds).
        stats: the processor's counters, updated here.
    """

    def __init__(self, store: IOutcomeStore, codec: VerpCodec, clock: IReactorTime,
                 window: float, stats: ProcessorStats) -> None:
        self._store = store
        self._codec = codec
        self._clock = clock
        self._window = window
        self._stats = stats
        #: Recorded since the last "recorded" log line (see :meth:`_log_recorded`).
        self._to_log: list[ProcessResult] = []
        self._log_timer: IDelayedCall | None = None

    async def load(self, bounce_id: int, replay: bool) -> StoredBounce | ProcessResult:
        """The stored message to analyze, or the result that ends its processing."""
        bounce = await self.settled(bounce_id, self._store.load_bounce(bounce_id))
        if isinstance(bounce, ProcessResult):
            return bounce
        if bounce is None:
            log.warn("bounce {bounce_id}: not in the store", bounce_id=bounce_id)
            return ProcessResult(bounce_id, ProcessStatus.missing)
        if bounce.status != BounceStatus.pending and not replay:
            return ProcessResult(bounce_id, ProcessStatus.skipped, category=bounce.category)
        if bounce.purged_at is not None:
            # past the retention period: its bytes are gone, its analysis stays
            return ProcessResult(bounce_id, ProcessStatus.purged, category=bounce.category)
        return bounce

    async def settled(self, bounce_id: int, step: Awaitable[T]) -> T | ProcessResult:
        """What ``step`` gives, or the result that ends this message's processing now:
        ``retry`` on a store outage, ``failed`` (marked in the store) on a bug."""
        try:
            return await step
        except StoreUnavailable:
            log.warn("bounce {bounce_id}: store unavailable, will retry", bounce_id=bounce_id)
            return ProcessResult(bounce_id, ProcessStatus.retry)
        except Exception as e:
            log.failure("bounce {bounce_id}: processing failed", bounce_id=bounce_id)
            return await self.fail(bounce_id, f"{type(e).__name__}: {e}")

    async def prepare(self, bounce: StoredBounce, analyzed: Analyzed,
                      known: Mapping[int, Delivery | None] | None = None
                      ) -> Prepared | ProcessResult:
        """:meth:`_prepare`, with a store outage or a bug turned into this message's result."""
        return await self.settled(bounce.bounce_id, self._prepare(bounce, analyzed, known))

    async def known_deliveries(self, bounces: list[StoredBounce]
                               ) -> dict[int, Delivery | None]:
        """The deliveries the envelopes of ``bounces`` name, read together.

        ``bounces``: those whose analysis is to be correlated. Correlation
        starts from them (the verified envelope); read for the
        whole batch before it, each message's correlation runs to its end
        without waiting on the store, instead of every message suspending
        on its own read and resuming from it. Empty when the store cannot
        answer: correlation then asks, and meets the outage, itself.
        """
        ids = sorted({r.delivery_id for b in bounces for r in b.envelope()
                      if r.delivery_id is not None})
        if not ids:
            return {}
        try:
            found = await self._store.get_deliveries(ids)
        except Exception:
            return {}
        return {i: found.get(i) for i in ids}

    async def _prepare(self, bounce: StoredBounce, analyzed: Analyzed,
                       known: Mapping[int, Delivery | None] | None = None
                       ) -> Prepared | ProcessResult:
        """Check an analysis, correlate it and build its events (nothing written yet)."""
        bounce_id = bounce.bounce_id
        analysis, fingerprint, encoded = analyzed
        if isinstance(analysis, WorkerLost):
            # not analyzed (the service is stopping, or no worker can
            # start): still pending
            return ProcessResult(bounce_id, ProcessStatus.retry, error=str(analysis))
        if isinstance(analysis, BaseException):
            log.failure("bounce {bounce_id}: analysis raised",
                        Failure(analysis, type(analysis), analysis.__traceback__),
                        bounce_id=bounce_id)
            return await self.fail(
                bounce_id, f"analysis raised {type(analysis).__name__}: {analysis}")
        if not isinstance(analysis, Analysis):
            return await self.fail(
                bounce_id, f"analysis returned {type(analysis).__name__}, not Analysis")
        if analysis.error and not analysis.results:
            log.warn("bounce {bounce_id}: analysis gave up: {error}",
                     bounce_id=bounce_id, error=analysis.error)
            return await self.fail(bounce_id, f"analysis gave up: {analysis.error}")

        now = self._clock.seconds()
        corr = await correlate(self._store, self._codec, bounce, analysis, now,
                               window=self._window, known=known)
        if fingerprint is None:
            fingerprint = message_fingerprint(bounce.raw)
        events = build_events(bounce, analysis, corr, fingerprint)
        return Prepared(bounce, analysis, corr, events, _record(analysis, encoded, corr))

    async def record_all(self, ready: list[Prepared], chunked: bool = True
                         ) -> list[ProcessResult]:
        """Record the batch, :data:`RECORD_CHUNK` messages per transaction
        (``chunked``; else in one); on a non-store error, one by one so the
        message at fault is marked failed and the others still recorded. One
        log line for the batch."""
        size = RECORD_CHUNK if chunked else max(len(ready), 1)
        results: list[ProcessResult] = []
        for start in range(0, len(ready), size):
            results += await self._record_chunk(ready[start:start + size])
        return self._log_recorded(results)

    async def _record_chunk(self, ready: list[Prepared]) -> list[ProcessResult]:
        """Record messages in one transaction (see :meth:`record_all`)."""
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
                return [ProcessResult(a.bounce.bounce_id, ProcessStatus.retry) for a in ready]
            except Exception as e:
                log.warn("recording {count} bounces together failed ({error}); "
                         "recording them one by one", count=len(ready), error=repr(e))
            else:
                return [self._recorded(a, event_ids)
                        for a, event_ids in zip(ready, ids, strict=True)]
        return [await self._record_one(a) for a in ready]

    def _log_recorded(self, results: list[ProcessResult]) -> list[ProcessResult]:
        """Log the recorded messages of a batch, in one line with those recorded
        within :data:`RECORDED_LOG_DELAY` of them, every message's details in it.

        One event per message cost as much reactor time as recording it; one
        per batch, with batches of a few messages under a flood, still ~50 us
        of the reactor's CPU and a wait for the GIL after each line written
        (as the listener's "stored" lines, which are gathered the same way).
        The ``messages`` field keeps each message's details for JSON logs.
        """
        self._to_log += [r for r in results
                         if r.status in (ProcessStatus.analyzed, ProcessStatus.uncorrelated)]
        if self._to_log and self._log_timer is None:
            self._log_timer = self._clock.callLater(RECORDED_LOG_DELAY, self.flush_log)
        return results

    def flush_log(self) -> None:
        """Write the "recorded" line of the messages not logged yet (at stop: now)."""
        if self._log_timer is not None and self._log_timer.active():
            self._log_timer.cancel()
        self._log_timer = None
        done, self._to_log = self._to_log, []
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

    async def _record_one(self, a: Prepared) -> ProcessResult:
        bounce_id = a.bounce.bounce_id
        event_ids = await self.settled(bounce_id, self._store.record_bounce(
            bounce_id, a.events, a.analysis.category, a.corr.key, a.record))
        if isinstance(event_ids, ProcessResult):
            return event_ids
        return self._recorded(a, event_ids)

    def _recorded(self, a: Prepared, event_ids: list[int]) -> ProcessResult:
        """Count and log one recorded analysis; its result."""
        analysis, corr = a.analysis, a.corr
        s = self._stats
        s.analyzed += 1
        s.by_category[analysis.category] += 1
        s.events += len(event_ids)
        status = ProcessStatus.analyzed if corr.correlated else ProcessStatus.uncorrelated
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

    async def fail(self, bounce_id: int, error: str) -> ProcessResult:
        """Mark a message failed (raw kept for replay)."""
        try:
            await self._store.mark_bounce_failed(bounce_id, error[:1000])
        except StoreUnavailable:
            log.warn("bounce {bounce_id}: store unavailable, will retry", bounce_id=bounce_id)
            return ProcessResult(bounce_id, ProcessStatus.retry)
        except Exception:
            log.failure("bounce {bounce_id}: could not mark it failed", bounce_id=bounce_id)
        self._stats.failed += 1
        return ProcessResult(bounce_id, ProcessStatus.failed, error=error)

    async def process(
        self, items: list[tuple[int, bool]],
        analyze: Callable[[list[StoredBounce]], Awaitable[list[Analyzed]]],
        preloaded: dict[int, StoredBounce] | None = None,
    ) -> list[ProcessResult]:
        """Load, analyze (one executor hop), correlate and record a batch
        (``RECORD_CHUNK`` messages per transaction).

        Args:
            items: (id, replay) per message.
            analyze: the analysis stage.
            preloaded: messages already in hand (the listener's copy of one
                it just stored, pending by construction): not read back.
        """
        preloaded = preloaded or {}
        arrived = self._stats.received
        # Loads, then correlations, run concurrently: the store batches reads
        # issued together into one transaction (one pool-thread hop on SQLite).
        results: dict[int, ProcessResult] = {}
        to_load = [(bounce_id, replay) for bounce_id, replay in items
                   if bounce_id not in preloaded]
        got = dict(zip((bounce_id for bounce_id, _ in to_load), await gather(
            [self.load(bounce_id, replay) for bounce_id, replay in to_load]), strict=True)
        ) if to_load else {}
        loaded: list[StoredBounce] = []
        for bounce_id, _ in items:
            one = preloaded.get(bounce_id) or got[bounce_id]
            if isinstance(one, ProcessResult):
                results[bounce_id] = one
            else:
                loaded.append(one)
        analyses = await analyze(loaded)
        known = await self.known_deliveries([
            b for b, a in zip(loaded, analyses, strict=True)
            if isinstance(a.result, Analysis) and (a.result.results or not a.result.error)])
        ready: list[Prepared] = []
        for bounce, prepared in zip(loaded, await gather(
                [self.prepare(b, a, known) for b, a in zip(loaded, analyses, strict=True)]),
                                    strict=True):
            if isinstance(prepared, ProcessResult):
                results[bounce.bounce_id] = prepared
            else:
                ready.append(prepared)
        # In chunks while returns keep arriving (their 250s wait for the
        # transaction in flight); the last batch of a flood, or one alone,
        # in one transaction: nobody waits, and one commit ends it sooner.
        chunked = self._stats.received != arrived
        for item, outcome in zip(ready, await self.record_all(ready, chunked), strict=True):
            results[item.bounce.bounce_id] = outcome
        return [results[bounce_id] for bounce_id, _ in items]


def _record(analysis: Analysis, encoded: str | None, corr: Correlation) -> str:
    """What the store keeps of an analysis: its JSON object plus ``correlation``.

    ``encoded`` is :func:`encode_analysis` of it when the executor computed
    it (off the reactor): only the correlation is encoded here and spliced
    in as the last member, which gives the very text of encoding the whole.
    """
    if encoded is None or not encoded.endswith("}") or encoded == "{}":
        record = analysis.to_json()
        record["correlation"] = corr.to_json()
        return json.dumps(record, default=str)
    return encoded[:-1] + ', "correlation": ' + json.dumps(corr.to_json(), default=str) + "}"


def fresh_bounce(bounce_id: int, message: ReturnedMessage) -> StoredBounce:
    """The stored message as ``load_bounce`` would read it back right after ``store_bounce``.

    Same fields as the store writes them (``store_bounces_txn``): the first
    envelope recipient's address, the first delivery any recipient names,
    every recipient, status pending.
    """
    envelope = message.envelope()
    return StoredBounce(
        bounce_id=bounce_id, raw=message.raw, mail_from=message.mail_from,
        rcpt_to=envelope[0].address, received_at=message.received_at,
        delivery_id=next((r.delivery_id for r in envelope if r.delivery_id is not None), None),
        status=BounceStatus.pending, recipients=envelope,
    )
