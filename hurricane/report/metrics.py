"""Prometheus metrics for /metrics, built from the store so they hold across nodes.

The components that produce outcomes belong to other people, so the counters
are not incremented where things happen: a collector follows the store's
event feed (:meth:`IOutcomeStore.events_after`, keyset on the event id) every
``interval`` seconds on the injected clock and counts each new event once.
Queue gauges come from ``queue_depth()`` and ``oldest_pending()`` at the same
tick. Reading the feed from the shared database means every node reports the
cluster's outcomes (aggregate with ``max``, not ``sum``, across nodes).
Counters start at the first event of the database and catch up at most
``max_pages`` pages per tick, so a large history is read over a few ticks.

Other components may call the ``observe_*`` / ``connection_*`` methods of
:class:`Metrics` directly (connections and store latency are only known
there). The histograms of delivery latency and time to bounce are filled
from events while ``histograms_from_events`` is True; a component that starts
observing them itself should build Metrics with it set to False.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Request

from hurricane.model import EventRecord
from hurricane.outcome import PENDING_STATES, EventKind, Reason, State
from hurricane.store.interface import IOutcomeStore, StoreError

__all__ = ["Metrics", "MetricsResource"]

log = Logger()

T = TypeVar("T")

#: Buckets (seconds) from one second to a week: delivery and bounce delays.
_DELAY_BUCKETS = (1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 86400, 3 * 86400, 7 * 86400)
_STORE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


def _reason(value: str | None) -> str:
    # DESIGN.md's vocabulary; anything else is "other", which keeps the
    # label's cardinality bounded
    return Reason.label(value)


class Metrics:
    """The metrics of one process, on a registry of its own.

    Args:
        store: the IOutcomeStore to read.
        clock: the injected clock (the collector's LoopingCall runs on it).
        interval: seconds between collections.
        page_size: events read per store call.
        max_pages: most pages read per tick (catch-up bound).
        histograms_from_events: fill the latency histograms from events.
        monotonic: the timer for store latency (tests inject one).
    """

    def __init__(self, store: IOutcomeStore, clock: IReactorTime, *, interval: float = 15.0,
                 page_size: int = 5000, max_pages: int = 20,
                 histograms_from_events: bool = True,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.clock = clock
        self.interval = interval
        self.page_size = page_size
        self.max_pages = max_pages
        self.histograms_from_events = histograms_from_events
        self._monotonic = monotonic
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.submitted = Counter("hurricane_submitted", "Recipients accepted for delivery "
                                 "(queued or suppressed at submission).", registry=r)
        self.delivered = Counter("hurricane_delivered", "Recipients delivered (2xx).",
                                 registry=r)
        self.deferred = Counter("hurricane_deferred", "Delivery attempts deferred (4xx or "
                                "connection errors).", registry=r)
        self.failed = Counter("hurricane_failed", "Recipients refused during our SMTP "
                              "conversation (synchronous bounces), by reason.", ["reason"],
                              registry=r)
        self.bounced = Counter("hurricane_bounced", "Asynchronous bounces (NDRs) that moved "
                               "a recipient to bounced, by reason.", ["reason"], registry=r)
        self.complained = Counter("hurricane_complained", "Feedback-loop complaints.",
                                  registry=r)
        self.expired = Counter("hurricane_expired", "Recipients whose retries ran out.",
                               registry=r)
        self.suppressed = Counter("hurricane_suppressed", "Recipients not sent because the "
                                  "address is on the suppression list.", registry=r)
        self.queue_depth = Gauge("hurricane_queue_depth", "Deliveries waiting, by state.",
                                 ["state"], registry=r)
        self.oldest_queued_age = Gauge("hurricane_oldest_queued_age_seconds", "Age of the "
                                       "oldest queued or deferred delivery.", registry=r)
        self.last_event_id = Gauge("hurricane_metrics_last_event_id", "Last store event "
                                   "counted by the metrics collector.", registry=r)
        self.delivery_latency = Histogram("hurricane_delivery_latency_seconds", "From "
                                          "submission to delivery.", buckets=_DELAY_BUCKETS,
                                          registry=r)
        self.time_to_bounce = Histogram("hurricane_time_to_bounce_seconds", "From submission "
                                        "to an asynchronous bounce.", buckets=_DELAY_BUCKETS,
                                        registry=r)
        self.connections = Counter("hurricane_connections", "Connections opened, by kind "
                                   "(e.g. submission, bounce, outbound).", ["kind"],
                                   registry=r)
        self.connections_open = Gauge("hurricane_connections_open", "Connections open now, "
                                      "by kind.", ["kind"], registry=r)
        self.store_latency = Histogram("hurricane_store_latency_seconds", "Duration of store "
                                       "calls, by operation.", ["operation"],
                                       buckets=_STORE_BUCKETS, registry=r)
        self.collect_errors = Counter("hurricane_metrics_collect_errors", "Collections that "
                                      "failed (store unavailable).", registry=r)
        for state in PENDING_STATES:
            self.queue_depth.labels(state.value)
        self._after = 0
        self._loop: LoopingCall | None = None

    # -- for other components ---------------------------------------------------

    def observe_delivery(self, latency: float) -> None:
        """Record one delivery's latency (seconds from submission to 2xx)."""
        self.delivery_latency.observe(max(0.0, latency))

    def observe_bounce(self, seconds: float) -> None:
        """Record the time from submission to an asynchronous bounce."""
        self.time_to_bounce.observe(max(0.0, seconds))

    def connection_opened(self, kind: str) -> None:
        """Count a connection of ``kind`` (``submission``, ``bounce``, ``outbound``...)."""
        self.connections.labels(kind).inc()
        self.connections_open.labels(kind).inc()

    def connection_closed(self, kind: str) -> None:
        """A connection of ``kind`` ended."""
        self.connections_open.labels(kind).dec()

    def observe_store(self, operation: str, seconds: float) -> None:
        """Record how long a store call took."""
        self.store_latency.labels(operation).observe(max(0.0, seconds))

    # -- collector ------------------------------------------------------------

    def start(self) -> Deferred[LoopingCall]:
        """Start collecting every ``interval`` seconds (the first run is now)."""
        if self._loop is None:
            self._loop = LoopingCall(self._tick)
            self._loop.clock = self.clock
            done = self._loop.start(self.interval, now=True)
            done.addErrback(lambda f: log.failure("metrics collector stopped", f))
            return done
        return Deferred()

    def stop(self) -> None:
        """Stop collecting (safe when not started)."""
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    def _tick(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self.collect())

    async def _timed(self, operation: str, call: Awaitable[T]) -> T:
        started = self._monotonic()
        try:
            return await call
        finally:
            self.observe_store(operation, self._monotonic() - started)

    async def collect(self) -> None:
        """Read new events and the queue gauges once; log (never raise) store errors."""
        try:
            for _ in range(self.max_pages):
                page = await self._timed("events_after",
                                         self.store.events_after(self._after, self.page_size))
                for record in page:
                    self._count(record)
                if page:
                    self._after = page[-1].event.event_id
                    self.last_event_id.set(self._after)
                if len(page) < self.page_size:
                    break
            depth = await self._timed("queue_depth", self.store.queue_depth())
            for state, count in depth.items():
                self.queue_depth.labels(state).set(count)
            oldest = await self._timed("oldest_pending", self.store.oldest_pending())
            self.oldest_queued_age.set(
                0 if oldest is None else max(0.0, self.clock.seconds() - oldest))
        except StoreError as e:
            self.collect_errors.inc()
            log.warn("metrics collection failed: {error}", error=str(e))

    def _count(self, record: EventRecord) -> None:
        event = record.event
        kind = EventKind(event.kind)
        state = None if event.state is None else State(event.state)
        created = record.delivery_created_at
        if kind is EventKind.queued:
            self.submitted.inc()
        elif kind is EventKind.suppressed:
            self.submitted.inc()
            self.suppressed.inc()
        elif kind is EventKind.attempt:
            if state is State.delivered:
                self.delivered.inc()
                if self.histograms_from_events and created is not None:
                    self.observe_delivery(event.at - created)
            elif state is State.deferred:
                self.deferred.inc()
            elif state is State.failed:
                self.failed.labels(_reason(event.reason)).inc()
        elif kind is EventKind.expired:
            self.expired.inc()
        elif kind is EventKind.bounce and state is State.bounced:
            self.bounced.labels(_reason(event.reason)).inc()
            if self.histograms_from_events and created is not None:
                self.observe_bounce(event.at - created)
        elif kind is EventKind.complaint and state is State.complained:
            self.complained.inc()

    # -- exposition -------------------------------------------------------------

    def render(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)


class MetricsResource(Resource):
    """``/metrics``: the registry in the Prometheus text format.

    ``prometheus_client.twisted.MetricsResource`` is not used: it imports the
    global reactor and renders through WSGI in the reactor's thread pool;
    rendering our own registry inline is cheap and keeps the clock injected.
    """

    isLeaf = True

    def __init__(self, metrics: Metrics) -> None:
        super().__init__()
        self.metrics = metrics

    def render_GET(self, request: Request) -> bytes:
        """Answer with the current metrics."""
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode("ascii"))
        return self.metrics.render()
