"""Dialer alone: a destination's addresses in order, the TLS policy, the failures."""

from __future__ import annotations

import random

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from hurricane.config import TlsPolicyConfig
from hurricane.outbound.dialer import MAX_ADDRESSES_PER_ROUND, Dialer, DialFailed
from hurricane.outbound.interface import ConnectionFailed, ISMTPConnection
from hurricane.outbound.mx import DestinationError, MXResolver
from hurricane.outcome import Phase, Reason, TlsPolicy

from .fakes import FakeConnector, FakeResolver


class BrokenConnector(FakeConnector):
    """A connector with a bug: it raises something other than ConnectionFailed."""

    async def connect(self, host: str, ip: str, port: int, *, tls_policy: str,
                      helo: str, source: str = "") -> ISMTPConnection:
        self.attempts.append((host, ip, port, tls_policy))
        raise KeyError("bug")


class DialerTests(SynchronousTestCase):
    """Dialer.dial over a fake DNS and connector."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.dns = FakeResolver()
        self.dns.add_mx("example.com", (10, "mx1.example.com"), (20, "mx2.example.com"))
        self.dns.add_host("mx1.example.com", "192.0.2.1")
        self.dns.add_host("mx2.example.com", "192.0.2.2")
        self.resolver = MXResolver(self.dns, self.clock, {}, 3600, rng=random.Random(0))
        self.connector = FakeConnector(self.clock)

    def dial(self, dialer: Dialer, domain: str = "example.com",
             stopping: bool = False) -> Deferred[ISMTPConnection | None]:
        return Deferred.fromCoroutine(dialer.dial(domain, lambda: stopping))

    def test_first_address_that_answers(self) -> None:
        """A refused first MX is skipped, remembered, and the second one used."""
        self.connector.failures["192.0.2.1"] = ConnectionFailed("refused", Phase.connect)
        dialer = Dialer(self.resolver, self.connector, "out.example")
        conn = self.successResultOf(self.dial(dialer))
        assert conn is not None
        self.assertEqual(conn.info.host, "mx2.example.com")
        del self.connector.failures["192.0.2.1"]
        self.successResultOf(self.dial(dialer))
        self.assertEqual([a[0] for a in self.connector.attempts],
                         ["mx1.example.com", "mx2.example.com", "mx2.example.com"])

    def test_tls_policy_per_domain(self) -> None:
        """A domain's own TLS policy wins over the default (case-insensitive)."""
        dialer = Dialer(self.resolver, self.connector, "out.example", TlsPolicyConfig(
            default=TlsPolicy.verify, domains={"example.com": TlsPolicy.none}))
        self.assertIs(dialer.tls_policy("Example.COM"), TlsPolicy.none)
        self.assertIs(dialer.tls_policy("other.example"), TlsPolicy.verify)
        self.successResultOf(self.dial(dialer))
        self.assertEqual(self.connector.attempts[0][3], TlsPolicy.none)

    def test_every_address_failing(self) -> None:
        """DialFailed carries the last address tried and its failure."""
        for ip in ("192.0.2.1", "192.0.2.2"):
            self.connector.failures[ip] = ConnectionFailed("busy", Phase.greeting)
        failure = self.failureResultOf(self.dial(Dialer(self.resolver, self.connector, "x")),
                                       DialFailed).value
        assert isinstance(failure, DialFailed)
        self.assertEqual((failure.target.host, failure.error.phase),
                         ("mx2.example.com", Phase.greeting))

    def test_connector_bug_is_a_network_error(self) -> None:
        """A connector raising anything else counts as a networkerror, and is logged."""
        failure = self.failureResultOf(
            self.dial(Dialer(self.resolver, BrokenConnector(self.clock), "x")), DialFailed).value
        assert isinstance(failure, DialFailed)
        self.assertEqual(failure.error.reason, Reason.networkerror)
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 2)

    def test_dns_failure_raised(self) -> None:
        """No such domain is a DestinationError, no connection tried."""
        self.dns.nxdomain.add("nowhere.example")
        self.failureResultOf(self.dial(Dialer(self.resolver, self.connector, "x"),
                                       "nowhere.example"), DestinationError)
        self.assertEqual(self.connector.attempts, [])

    def test_stopping(self) -> None:
        """A caller that stops gets None before the next address is tried."""
        self.assertIsNone(self.successResultOf(
            self.dial(Dialer(self.resolver, self.connector, "x"), stopping=True)))
        self.assertEqual(self.connector.attempts, [])

    def test_bounded_round(self) -> None:
        """At most MAX_ADDRESSES_PER_ROUND addresses are tried in one round."""
        ips = [f"192.0.2.{i}" for i in range(10, 30)]
        self.dns.add_mx("big.example", (10, "mx.big.example"))
        self.dns.add_host("mx.big.example", *ips)
        for ip in ips:
            self.connector.failures[ip] = ConnectionFailed("refused", Phase.connect)
        self.failureResultOf(self.dial(Dialer(self.resolver, self.connector, "x"),
                                       "big.example"), DialFailed)
        self.assertEqual(len(self.connector.attempts), MAX_ADDRESSES_PER_ROUND)
