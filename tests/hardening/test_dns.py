"""DNS failures end to end: OutboundService over MemoryStore with a fake resolver and clock."""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.names import error

import tests.outbound.test_queue as queue_tests
from hurricane.bounce.classify import ReplyClassifier
from hurricane.model import State
from hurricane.outbound.mx import DEFAULT_LOOKUP_TIMEOUT


class DnsFailureTests(queue_tests.SchedulerTestCase):
    """Temporary DNS failures defer and then deliver; permanent ones fail as hostunknown."""

    def setUp(self) -> None:
        super().setUp()
        self.classifier = ReplyClassifier.load(())
        self.dns.mx["servfail.example"] = error.DNSServerError("servfail.example")
        self.dns.mx["qtimeout.example"] = error.DNSQueryTimeoutError("qtimeout.example")
        self.dns.mx["hang.example"] = "hang"
        self.dns.nxdomain.add("nx.example")
        self.dns.add_mx("nullmx.example", (0, "."))
        # every MX host without an address: permanent, as Postfix does (5.4.4)
        self.dns.add_mx("noaddr.example", (10, "ghost.noaddr.example"))

    def _store(self, coro: object) -> object:
        return self.successResultOf(Deferred.fromCoroutine(coro))  # type: ignore[arg-type]

    def test_failures_then_recovery(self) -> None:
        """Each failure is stored with its state and reason; the temporary ones deliver later."""
        self.start()
        temporary = ["servfail.example", "qtimeout.example", "hang.example"]
        permanent = ["nx.example", "nullmx.example", "noaddr.example"]
        ids = {d: self.enqueue(f"user@{d}")[0] for d in [*temporary, *permanent, "example.com"]}
        self.turn()
        self.turn(DEFAULT_LOOKUP_TIMEOUT)  # the hanging lookup times out on the clock
        self.turn(1)  # results are flushed
        for domain in temporary:
            d = self.delivery(ids[domain])
            self.assertEqual((d.state, d.reason, d.hard, d.attempts),
                             (State.deferred, "networkerror", False, 1), domain)
        for domain in permanent:
            d = self.delivery(ids[domain])
            self.assertEqual((d.state, d.reason, d.hard), (State.failed, "hostunknown", True),
                             domain)
            # A first DNS failure suppresses nobody (issue 18 item 9): the domain
            # is only suppressed once a later lookup, an hour on, fails again.
            self.assertIsNone(self._store(self.store.get_suppression(f"user@{domain}")))
            self.assertEqual(self._store(self.store.suppression_entries(f"user@{domain}")), [])
        self.assertEqual(self.delivery(ids["example.com"]).state, State.delivered)
        self.assertEqual({a[1] for a in self.connector.attempts}, {"192.0.2.1"})
        self.assertEqual(self.delivery(ids["nullmx.example"]).status, "5.1.10")
        # DNS recovers: every temporary failure is retried and delivered
        for domain in temporary:
            self.dns.mx.pop(domain, None)
            self.dns.add_mx(domain, (10, f"mx.{domain}"))
            self.dns.add_host(f"mx.{domain}", "192.0.2.50")
        self.turn(self.config.first_retry)
        self.turn(self.config.poll_interval)
        self.turn(1)
        for domain in temporary:
            d = self.delivery(ids[domain])
            self.assertEqual((d.state, d.attempts), (State.delivered, 2), domain)
            events = self._store(self.store.events(ids[domain]))
            self.assertEqual([e.state for e in events],  # type: ignore[attr-defined]
                             [State.queued, State.deferred, State.delivered], domain)
        for domain in permanent:
            d = self.delivery(ids[domain])
            self.assertEqual((d.state, d.attempts), (State.failed, 1), domain)
        self.assertNotIn("nx.example", {m.recipients[0].address.split("@")[1]
                                        for _, m in self.connector.messages})
