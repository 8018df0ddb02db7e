"""MXResolver: routes, MX ordering, implicit and null MX, errors, cache, IDN."""

from __future__ import annotations

import random
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.names import error
from twisted.trial.unittest import SynchronousTestCase

from hurricane.address import to_a_label
from hurricane.outbound.mx import Destination, DestinationError, MXResolver

from .fakes import FakeResolver


class MXResolverTestMixin:
    """Builds a resolver over a fake DNS and a clock."""

    def make(self, routes: dict[str, str] | None = None, cache_seconds: float = 3600,
             seed: int = 1, **kwargs: Any) -> tuple[MXResolver, FakeResolver, Clock]:
        dns = FakeResolver()
        clock = Clock()
        resolver = MXResolver(dns, clock, routes or {}, cache_seconds, rng=random.Random(seed),
                              **kwargs)
        return resolver, dns, clock

    def resolve(self, resolver: MXResolver, domain: str) -> list[Destination]:
        return self.successResultOf(Deferred.fromCoroutine(resolver.resolve(domain)))  # type: ignore[attr-defined,no-any-return]

    def resolve_error(self, resolver: MXResolver, domain: str) -> DestinationError:
        f = self.failureResultOf(  # type: ignore[attr-defined]
            Deferred.fromCoroutine(resolver.resolve(domain)), DestinationError)
        return f.value  # type: ignore[no-any-return]


class MXOrderTests(MXResolverTestMixin, SynchronousTestCase):
    """Ordering of MX hosts and their addresses."""

    def test_preference_order_and_addresses(self) -> None:
        """Hosts come by preference, each expanded to A then AAAA, on port 25."""
        resolver, dns, _ = self.make()
        dns.add_mx("example.com", (20, "mx2.example.com"), (10, "mx1.example.com"))
        dns.add_host("mx1.example.com", "192.0.2.1", "2001:db8::1")
        dns.add_host("mx2.example.com", "192.0.2.2")
        result = self.resolve(resolver, "example.com")
        self.assertEqual(result, [
            Destination("mx1.example.com", "192.0.2.1", 25, 10),
            Destination("mx1.example.com", "2001:db8::1", 25, 10),
            Destination("mx2.example.com", "192.0.2.2", 25, 20),
        ])

    def test_ties_shuffled(self) -> None:
        """Equal preferences are shuffled (seeded), and never mixed with worse ones."""
        orders = set()
        for seed in range(12):
            resolver, dns, _ = self.make(seed=seed)
            dns.add_mx("example.com", (10, "a.example.com"), (10, "b.example.com"),
                       (10, "c.example.com"), (5, "best.example.com"), (30, "z.example.com"))
            for i, host in enumerate("a b c best z".split()):
                dns.add_host(f"{host}.example.com", f"192.0.2.{i + 1}")
            hosts = [d.host for d in self.resolve(resolver, "example.com")]
            self.assertEqual(hosts[0], "best.example.com")
            self.assertEqual(hosts[-1], "z.example.com")
            self.assertEqual(sorted(hosts[1:4]), ["a.example.com", "b.example.com",
                                                  "c.example.com"])
            orders.add(tuple(hosts))
        self.assertGreater(len(orders), 1)

    def test_seeded_shuffle_repeats(self) -> None:
        """The same seed gives the same order (tests can rely on it)."""
        results = []
        for _ in range(2):
            resolver, dns, _ = self.make(seed=7)
            dns.add_mx("example.com", (10, "a.example.com"), (10, "b.example.com"))
            dns.add_host("a.example.com", "192.0.2.1")
            dns.add_host("b.example.com", "192.0.2.2")
            results.append(self.resolve(resolver, "example.com"))
        self.assertEqual(results[0], results[1])

    def test_mx_host_without_address_skipped(self) -> None:
        """An MX host with no address is skipped and the others are used."""
        resolver, dns, _ = self.make()
        dns.add_mx("example.com", (10, "gone.example.com"), (20, "mx2.example.com"))
        dns.nxdomain.add("gone.example.com")
        dns.add_host("mx2.example.com", "192.0.2.2")
        self.assertEqual([d.ip for d in self.resolve(resolver, "example.com")], ["192.0.2.2"])

    def test_mx_host_servfail_does_not_hide_others(self) -> None:
        """A SERVFAIL for one MX host's address still leaves the other hosts."""
        resolver, dns, _ = self.make()
        dns.add_mx("example.com", (10, "mx1.example.com"), (20, "mx2.example.com"))
        dns.a["mx1.example.com"] = error.DNSServerError("mx1")
        dns.add_host("mx2.example.com", "192.0.2.2")
        self.assertEqual([d.host for d in self.resolve(resolver, "example.com")],
                         ["mx2.example.com"])

    def test_all_mx_hosts_servfail_is_temporary(self) -> None:
        """When every MX host's lookup fails temporarily, the domain is deferred."""
        resolver, dns, _ = self.make()
        dns.add_mx("example.com", (10, "mx1.example.com"))
        dns.a["mx1.example.com"] = error.DNSServerError("mx1")
        dns.aaaa["mx1.example.com"] = error.DNSServerError("mx1")
        e = self.resolve_error(resolver, "example.com")
        self.assertFalse(e.permanent)
        self.assertEqual(e.reason, "networkerror")

    def test_recently_failed_host_tried_last(self) -> None:
        """A host that just failed to connect goes after the others until the memory expires."""
        resolver, dns, clock = self.make(failure_memory=60)
        dns.add_mx("example.com", (10, "mx1.example.com"), (20, "mx2.example.com"))
        dns.add_host("mx1.example.com", "192.0.2.1")
        dns.add_host("mx2.example.com", "192.0.2.2")
        first = self.resolve(resolver, "example.com")[0]
        resolver.mark_failed(first)
        self.assertEqual([d.host for d in self.resolve(resolver, "example.com")],
                         ["mx2.example.com", "mx1.example.com"])
        clock.advance(61)
        self.assertEqual([d.host for d in self.resolve(resolver, "example.com")],
                         ["mx1.example.com", "mx2.example.com"])


class MXAnswerTests(MXResolverTestMixin, SynchronousTestCase):
    """Implicit MX, null MX and DNS errors."""

    def test_implicit_mx(self) -> None:
        """A domain with no MX record (empty answer) is its own MX, preference 0."""
        resolver, dns, _ = self.make()
        dns.add_host("example.com", "192.0.2.9")
        self.assertEqual(self.resolve(resolver, "example.com"),
                         [Destination("example.com", "192.0.2.9", 25, 0)])

    def test_no_mx_no_address_is_permanent(self) -> None:
        """No MX and no address record: permanent hostunknown."""
        resolver, dns, _ = self.make()
        e = self.resolve_error(resolver, "example.com")
        self.assertTrue(e.permanent)
        self.assertEqual(e.reason, "hostunknown")

    def test_malformed_answer_is_temporary(self) -> None:
        """A resolver firing with something other than (answers, authority,
        additional) is a temporary networkerror, not a crash."""
        resolver, dns, _ = self.make()
        self.patch(dns, "lookupMailExchange", lambda name, timeout=None: succeed("garbage"))
        e = self.resolve_error(resolver, "example.com")
        self.assertEqual((e.permanent, e.reason), (False, "networkerror"))

    def test_foreign_records_are_skipped(self) -> None:
        """Items in the answer section that are not resource records are ignored."""
        resolver, dns, _ = self.make()
        dns.add_mx("example.com", (10, "mx.example.com"))
        dns.mx["example.com"].insert(0, "not a record")
        dns.add_host("mx.example.com", "192.0.2.9")
        self.assertEqual(self.resolve(resolver, "example.com"),
                         [Destination("mx.example.com", "192.0.2.9", 25, 10)])

    def test_null_mx(self) -> None:
        """RFC 7505 null MX is a permanent hostunknown with status 5.1.10, and no A lookup."""
        resolver, dns, _ = self.make()
        dns.add_mx("example.com", (0, "."))
        dns.add_host("example.com", "192.0.2.9")
        e = self.resolve_error(resolver, "example.com")
        self.assertTrue(e.permanent)
        self.assertEqual((e.reason, e.status), ("hostunknown", "5.1.10"))
        self.assertEqual(dns.queries, [("MX", "example.com")])

    def test_nxdomain(self) -> None:
        """NXDOMAIN on the MX query is a permanent hostunknown, with no implicit MX."""
        resolver, dns, _ = self.make()
        dns.nxdomain.add("example.com")
        e = self.resolve_error(resolver, "example.com")
        self.assertTrue(e.permanent)
        self.assertEqual((e.reason, e.status), ("hostunknown", "5.1.2"))
        self.assertEqual(dns.queries, [("MX", "example.com")])

    def test_servfail(self) -> None:
        """SERVFAIL is temporary networkerror."""
        resolver, dns, _ = self.make()
        dns.mx["example.com"] = error.DNSServerError("example.com")
        e = self.resolve_error(resolver, "example.com")
        self.assertFalse(e.permanent)
        self.assertEqual(e.reason, "networkerror")

    def test_resolver_timeout(self) -> None:
        """A resolver timeout error is temporary networkerror."""
        resolver, dns, _ = self.make()
        dns.mx["example.com"] = error.DNSQueryTimeoutError("example.com")
        e = self.resolve_error(resolver, "example.com")
        self.assertFalse(e.permanent)
        self.assertEqual(e.reason, "networkerror")

    def test_lookup_timeout_on_clock(self) -> None:
        """A lookup that never answers times out on the clock, temporary, leaving no timers."""
        resolver, dns, clock = self.make(lookup_timeout=10)
        dns.mx["example.com"] = "hang"
        d = Deferred.fromCoroutine(resolver.resolve("example.com"))
        self.assertNoResult(d)
        clock.advance(10)
        e = self.failureResultOf(d, DestinationError).value
        self.assertFalse(e.permanent)
        self.assertIn("timeout", e.message)
        self.assertEqual(clock.getDelayedCalls(), [])


class MXCacheTests(MXResolverTestMixin, SynchronousTestCase):
    """Answers are cached by TTL, capped, on the injected clock."""

    def test_ttl_cache_expiry(self) -> None:
        """A second resolve within the TTL asks DNS nothing; after it, DNS is asked again."""
        resolver, dns, clock = self.make()
        dns.add_mx("example.com", (10, "mx1.example.com"), ttl=100)
        dns.add_host("mx1.example.com", "192.0.2.1", ttl=100)
        self.resolve(resolver, "example.com")
        positive = [("MX", "example.com"), ("A", "mx1.example.com")]
        asked = [q for q in dns.queries if q in positive]
        self.assertEqual(asked, positive)
        clock.advance(99)
        self.resolve(resolver, "example.com")
        self.assertEqual([q for q in dns.queries if q in positive], positive)
        clock.advance(2)
        self.resolve(resolver, "example.com")
        self.assertEqual([q for q in dns.queries if q in positive], positive * 2)

    def test_cache_capped(self) -> None:
        """A TTL longer than cache_seconds is cut to cache_seconds."""
        resolver, dns, clock = self.make(cache_seconds=60)
        dns.add_mx("example.com", (10, "mx1.example.com"), ttl=86400)
        dns.add_host("mx1.example.com", "192.0.2.1", ttl=86400)
        self.resolve(resolver, "example.com")
        asked = len(dns.queries)
        clock.advance(59)
        self.resolve(resolver, "example.com")
        self.assertEqual(len(dns.queries), asked)
        clock.advance(2)
        self.resolve(resolver, "example.com")
        self.assertEqual(len(dns.queries), 2 * asked)

    def test_errors_not_cached(self) -> None:
        """A temporary failure is not cached: the next resolve asks again."""
        resolver, dns, _ = self.make()
        dns.mx["example.com"] = error.DNSServerError("example.com")
        self.resolve_error(resolver, "example.com")
        dns.add_mx("example.com", (10, "mx1.example.com"))
        dns.add_host("mx1.example.com", "192.0.2.1")
        self.assertEqual(len(self.resolve(resolver, "example.com")), 1)


class RouteTests(MXResolverTestMixin, SynchronousTestCase):
    """``[routes]``: exact domain, then the "*" smarthost."""

    def test_route_ip(self) -> None:
        """A route to an IP is used as it is, with its port, and DNS is not asked."""
        resolver, dns, _ = self.make(routes={"example.test": "127.0.0.1:2526"})
        self.assertEqual(self.resolve(resolver, "example.test"),
                         [Destination("127.0.0.1", "127.0.0.1", 2526, 0)])
        self.assertEqual(dns.queries, [])

    def test_smarthost_name(self) -> None:
        """The "*" route sends everything else to a host name resolved with A/AAAA."""
        resolver, dns, _ = self.make(routes={"example.test": "127.0.0.1:2526",
                                             "*": "relay.example.net:587"})
        dns.add_host("relay.example.net", "192.0.2.50", "2001:db8::50")
        self.assertEqual(self.resolve(resolver, "other.example"), [
            Destination("relay.example.net", "192.0.2.50", 587, 0),
            Destination("relay.example.net", "2001:db8::50", 587, 0),
        ])
        self.assertEqual(self.resolve(resolver, "example.test")[0].ip, "127.0.0.1")
        self.assertNotIn("MX", [kind for kind, _ in dns.queries])

    def test_route_host_unknown_is_temporary(self) -> None:
        """A route host without an address is our configuration problem: temporary."""
        resolver, dns, _ = self.make(routes={"*": "relay.example.net"})
        dns.nxdomain.add("relay.example.net")
        e = self.resolve_error(resolver, "example.com")
        self.assertFalse(e.permanent)

    def test_ipv6_route(self) -> None:
        """A bracketed IPv6 route is used as it is."""
        resolver, _, _ = self.make(routes={"example.test": "[::1]:2526"})
        self.assertEqual(self.resolve(resolver, "example.test"),
                         [Destination("::1", "::1", 2526, 0)])


class IDNTests(MXResolverTestMixin, SynchronousTestCase):
    """Internationalised domains are looked up in A-label form (IDNA 2008)."""

    def test_idn_lookup(self) -> None:
        """A U-label domain is queried as its A-label."""
        resolver, dns, _ = self.make()
        dns.add_mx("xn--bcher-kva.example", (10, "mx.xn--bcher-kva.example"))
        dns.add_host("mx.xn--bcher-kva.example", "192.0.2.7")
        self.assertEqual(self.resolve(resolver, "Bücher.example")[0].ip, "192.0.2.7")
        self.assertEqual(dns.queries[0], ("MX", "xn--bcher-kva.example"))

    def test_idna2008_not_2003(self) -> None:
        """ß stays ß under IDNA 2008 (the stdlib codec would map it to "ss")."""
        self.assertEqual(to_a_label("faß.de"), "xn--fa-hia.de")
        self.assertNotEqual(to_a_label("faß.de"), "faß.de".encode("idna").decode())

    def test_idn_route_key(self) -> None:
        """A route configured with a U-label matches the A-label domain."""
        resolver, _, _ = self.make(routes={"bücher.example": "127.0.0.1:2526"})
        self.assertEqual(self.resolve(resolver, "xn--bcher-kva.example")[0].port, 2526)

    def test_invalid_domain(self) -> None:
        """A name IDNA refuses is a permanent hostunknown."""
        resolver, _, _ = self.make()
        e = self.resolve_error(resolver, "a\u200b\u0000b.example")
        self.assertTrue(e.permanent)
