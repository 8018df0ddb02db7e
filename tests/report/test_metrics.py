"""The Prometheus metrics: counters from the store's event feed, gauges, /metrics."""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from hurricane.report.metrics import Metrics

from .helpers import T0, WebFixture, body_of


def value(text: str, name: str) -> float:
    """The value of one sample line of the exposition text."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in metrics")


class MetricsTests(SynchronousTestCase):
    """The collector counts each event once and /metrics shows the counters."""

    def setUp(self) -> None:
        self.f = WebFixture()
        self.metrics = self.f.site.metrics

    def collect(self) -> None:
        """Run one collection (the MemoryStore completes at once)."""
        self.successResultOf(Deferred.fromCoroutine(self.metrics.collect()))

    def test_counters_from_events(self) -> None:
        """After a collection, /metrics carries every counter, gauge and histogram."""
        self.collect()
        self.collect()  # nothing new: no double counting
        response, text = body_of(self.f, self.f.treq.get("http://127.0.0.1/metrics"))
        self.assertEqual(response.code, 200)
        self.assertEqual(value(text, "hurricane_submitted_total"), 5)
        self.assertEqual(value(text, "hurricane_delivered_total"), 3)
        self.assertEqual(value(text, "hurricane_deferred_total"), 1)
        self.assertEqual(value(text, 'hurricane_failed_total{reason="userunknown"}'), 1)
        self.assertEqual(value(text, 'hurricane_bounced_total{reason="mailboxfull"}'), 1)
        self.assertEqual(value(text, "hurricane_complained_total"), 1)
        self.assertEqual(value(text, "hurricane_expired_total"), 0)
        self.assertEqual(value(text, "hurricane_suppressed_total"), 0)
        self.assertEqual(value(text, 'hurricane_queue_depth{state="deferred"}'), 1)
        self.assertEqual(value(text, "hurricane_oldest_queued_age_seconds"), 600)
        self.assertEqual(value(text, "hurricane_delivery_latency_seconds_count"), 3)
        self.assertEqual(value(text, "hurricane_time_to_bounce_seconds_count"), 1)
        self.assertIn("hurricane_store_latency_seconds_bucket", text)

    def test_paging_and_component_hooks(self) -> None:
        """Small pages still count everything; components' hooks show up too."""
        metrics = Metrics(self.f.store, self.f.clock, page_size=2, max_pages=100)
        self.successResultOf(Deferred.fromCoroutine(metrics.collect()))
        metrics.connection_opened("submission")
        metrics.connection_opened("submission")
        metrics.connection_closed("submission")
        metrics.observe_store("enqueue", 0.002)
        text = metrics.render().decode()
        self.assertEqual(value(text, "hurricane_submitted_total"), 5)
        self.assertEqual(value(text, 'hurricane_connections_total{kind="submission"}'), 2)
        self.assertEqual(value(text, 'hurricane_connections_open{kind="submission"}'), 1)

    def test_looping_call_on_clock(self) -> None:
        """The collector runs on the injected clock and stops cleanly."""
        metrics = Metrics(self.f.store, self.f.clock, interval=15)
        metrics.start()
        self.assertEqual(value(metrics.render().decode(), "hurricane_submitted_total"), 5)
        self.f.store.set_available(False)
        self.f.clock.advance(15)
        self.assertEqual(value(metrics.render().decode(),
                               "hurricane_metrics_collect_errors_total"), 1)
        metrics.stop()
        self.assertEqual(self.f.clock.getDelayedCalls(), [])
        self.assertGreater(T0, 0)
