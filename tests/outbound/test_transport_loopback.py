"""Issue 21 over real sockets, offline: a pool of 127.0.0.2 and 127.0.0.3, and MTA-STS
from a local DNS server (twisted.names on 127.0.0.1) and a local HTTPS server (trustme CA).

Linux routes all of 127/8 to lo, so binding to 127.0.0.2 needs no setup.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import trustme
from twisted.internet import defer, ssl
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
from twisted.internet.task import deferLater
from twisted.mail import smtp
from twisted.names import dns, error
from twisted.names.client import Resolver
from twisted.names.server import DNSServerFactory
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, RequestTransmissionFailed
from twisted.web.resource import Resource
from twisted.web.server import Site

from hurricane.config import DeliveryConfig, SendingPoolConfig
from hurricane.model import NewMessage, NewRecipient, State
from hurricane.outbound.bodies import BodyCacheSettings
from hurricane.outbound.connector import Connector
from hurricane.outbound.dialer import Dialer
from hurricane.outbound.mtasts import MtaSts, txt_lookup
from hurricane.outbound.mx import MXResolver
from hurricane.outbound.pools import Pools
from hurricane.outbound.queue import OutboundService, OutboundSettings
from hurricane.outbound.stsfetch import fetcher
from hurricane.store.memory import MemoryStore
from hurricane.verp import VerpCodec, VerpKey

from .helpers import TIMEOUTS, CollectingDelivery, PipeliningESMTP, ServerFactory

BODY = b"From: a@shop.test\nTo: b@example.test\nSubject: hi\n\nHello.\n"
POOL = ("127.0.0.2", "127.0.0.3")


class PeerRecordingDelivery(CollectingDelivery):
    """Remembers, per recipient, the peer address the receiver saw."""

    def __init__(self) -> None:
        super().__init__()
        self.peers: dict[str, str] = {}

    def validateTo(self, user: smtp.User) -> Any:  # noqa: N802
        self.peers[str(user.dest)] = user.protocol.transport.getPeer().host
        return super().validateTo(user)


class LocalZone:
    """An IResolver for DNSServerFactory: MX, A and TXT from a table."""

    def __init__(self, records: dict[tuple[bytes, int], dns.IEncodable]) -> None:
        self.records = records

    def query(self, query: dns.Query, timeout: Any = None) -> defer.Deferred[Any]:
        payload = self.records.get((query.name.name.lower(), query.type))
        if payload is None:
            return defer.fail(error.DomainError(query.name.name))
        rr = dns.RRHeader(query.name.name, query.type, dns.IN, 60, payload, auth=True)
        return defer.succeed(([rr], [], []))


class TransportLoopbackTestCase(TestCase):
    """A receiver on 127.0.0.1, the outbound service on the real reactor, a MemoryStore."""

    timeout = 30

    def setUp(self) -> None:
        from twisted.internet import reactor

        self.reactor: Any = reactor
        self.delivery = PeerRecordingDelivery()
        self.store = MemoryStore()
        return defer.Deferred.fromCoroutine(self.store.open())

    def listen_smtp(self) -> int:
        factory = ServerFactory(self.delivery, PipeliningESMTP, None)
        port = self.reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.addCleanup(lambda: defer.gatherResults(factory.lost))
        return int(port.getHost().port)

    async def send_all(self, dialer: Dialer, recipients: list[str],
                  **delivery: Any) -> list[int]:
        """Enqueue, send until every recipient left the queue (bounded), stop."""
        codec = VerpCodec("bounce.shop.test", [VerpKey(0, b"k" * 32, 0.0)])
        settings = OutboundSettings(
            node_id="n1", delivery=DeliveryConfig(first_retry=3600, max_retry_interval=3600,
                                                  **delivery),
            shutdown_grace=5.0, wake_delay=0.0, record_delay=0.0, bodies=BodyCacheSettings())
        from hurricane.bounce.classify import ReplyClassifier
        service = OutboundService(self.store, dialer, codec, ReplyClassifier.load(), settings,
                                  self.reactor, rng=random.Random(0))
        result = await self.store.enqueue(NewMessage(
            sender="a@shop.test", recipients=tuple(NewRecipient(r) for r in recipients),
            body=BODY), self.reactor.seconds())
        ids = [r.delivery_id for r in result.recipients]
        service.startService()
        try:
            for _ in range(400):  # at most ~20 s
                states = [(await self.store.get_delivery(i)) for i in ids]
                if all(d is not None and d.attempts > 0 and not d.lease_owner
                       for d in states):
                    break
                await deferLater(self.reactor, 0.05, lambda: None)
        finally:
            await service.stopService()
        return ids

    async def last_attempt(self, delivery_id: int) -> Any:
        events = [e for e in await self.store.events(delivery_id) if e.kind.value == "attempt"]
        return events[-1]


class PoolLoopbackTests(TransportLoopbackTestCase):
    """The pool's two addresses carry the mail; each source_ip is the peer the receiver saw."""

    @defer.inlineCallbacks
    def test_two_loopback_addresses(self) -> Any:
        port = self.listen_smtp()
        resolver = MXResolver(Resolver(servers=[("127.0.0.1", 9)], reactor=self.reactor),
                              self.reactor, {"example.test": f"127.0.0.1:{port}"}, 3600)
        pools = Pools([SendingPoolConfig("loop", POOL)], "loop", self.reactor)
        dialer = Dialer(resolver, Connector(self.reactor, TIMEOUTS), "out.shop.test",
                        pools=pools)
        recipients = [f"u{i}@example.test" for i in range(6)]
        ids = yield defer.Deferred.fromCoroutine(self.send_all(
            dialer, recipients, messages_per_connection=1, max_connections_per_destination=1))
        seen: Counter[str] = Counter()
        for did, rcpt in zip(ids, recipients, strict=True):
            d = yield defer.Deferred.fromCoroutine(self.store.get_delivery(did))
            self.assertEqual(d.state, State.delivered)
            attempt = yield defer.Deferred.fromCoroutine(self.last_attempt(did))
            self.assertEqual(attempt.source_ip, self.delivery.peers[rcpt])
            seen[attempt.source_ip] += 1
        self.assertEqual(seen, {"127.0.0.2": 3, "127.0.0.3": 3})
        page = yield defer.Deferred.fromCoroutine(self.store.outcomes())
        self.assertEqual({o.source_ip for o in page}, set(POOL))


class PolicySite(Resource):
    """Serves /.well-known/mta-sts.txt."""

    isLeaf = True

    def __init__(self, body: bytes) -> None:
        super().__init__()
        self.body = body
        self.requests = 0

    def render_GET(self, request: Any) -> bytes:  # noqa: N802
        self.requests += 1
        if request.path != b"/.well-known/mta-sts.txt":
            request.setResponseCode(404)
            return b""
        request.setHeader(b"content-type", b"text/plain")
        return self.body


class LoopbackEndpoints:
    """Agent endpoints: every host name to the local HTTPS port, TLS checked for the name."""

    def __init__(self, reactor: Any, port: int, policy: BrowserLikePolicyForHTTPS) -> None:
        self.reactor, self.port, self.policy = reactor, port, policy

    def endpointForURI(self, uri: Any) -> Any:  # noqa: N802
        return wrapClientTLS(self.policy.creatorForNetloc(uri.host, uri.port),
                             TCP4ClientEndpoint(self.reactor, "127.0.0.1", self.port))


class MtaStsLoopbackTests(TransportLoopbackTestCase):
    """enforce against a receiver without STARTTLS defers; testing delivers and records."""

    def serve(self, mode: str, trusted: bool = True) -> MtaSts:
        smtp_port = self.listen_smtp()
        zone = LocalZone({
            (b"_mta-sts.example.test", dns.TXT): dns.Record_TXT(b"v=STSv1; id=2026a"),
            (b"example.test", dns.MX): dns.Record_MX(10, b"mx.example.test"),
            (b"mx.example.test", dns.A): dns.Record_A("127.0.0.1"),
        })
        udp = self.reactor.listenUDP(0, dns.DNSDatagramProtocol(
            DNSServerFactory(clients=[zone])), interface="127.0.0.1")
        self.addCleanup(udp.stopListening)
        dns_resolver = Resolver(servers=[("127.0.0.1", udp.getHost().port)],
                                reactor=self.reactor)
        ca = trustme.CA()
        cert = ca.issue_cert("mta-sts.example.test")
        server_tls = ssl.PrivateCertificate.loadPEM(
            cert.private_key_and_cert_chain_pem.bytes()).options()
        self.site = PolicySite(f"version: STSv1\nmode: {mode}\nmx: mx.example.test\n"
                               "max_age: 604800\n".encode())
        https = self.reactor.listenSSL(0, Site(self.site), server_tls, interface="127.0.0.1")
        self.addCleanup(https.stopListening)
        root = trustme.CA() if not trusted else ca
        policy = BrowserLikePolicyForHTTPS(
            trustRoot=ssl.trustRootFromCertificates([ssl.Certificate.loadPEM(
                root.cert_pem.bytes())]))
        agent = Agent.usingEndpointFactory(
            self.reactor, LoopbackEndpoints(self.reactor, https.getHost().port, policy))
        sts = MtaSts(self.reactor, txt_lookup(dns_resolver), fetcher(agent, self.reactor, 10))
        resolver = MXResolver(dns_resolver, self.reactor, {}, 3600, port=smtp_port)
        self.dialer = Dialer(resolver, Connector(self.reactor, TIMEOUTS), "out.shop.test",
                             sts=sts)
        return sts

    @defer.inlineCallbacks
    def test_enforce_without_starttls_defers(self) -> Any:
        self.serve("enforce")
        [did] = yield defer.Deferred.fromCoroutine(self.send_all(self.dialer, ["b@example.test"]))
        d = yield defer.Deferred.fromCoroutine(self.store.get_delivery(did))
        self.assertEqual(d.state, State.deferred)
        self.assertIn("MTA-STS enforce 2026a", d.text)
        attempt = yield defer.Deferred.fromCoroutine(self.last_attempt(did))
        self.assertEqual((attempt.tls_policy_type, attempt.tls_policy_id, attempt.tls_result),
                         ("sts", "enforce 2026a", "starttls-not-supported"))
        self.assertEqual(self.delivery.messages, [])
        self.assertEqual(self.site.requests, 1)

    @defer.inlineCallbacks
    def test_testing_delivers_and_records(self) -> Any:
        self.serve("testing")
        [did] = yield defer.Deferred.fromCoroutine(self.send_all(self.dialer, ["b@example.test"]))
        d = yield defer.Deferred.fromCoroutine(self.store.get_delivery(did))
        self.assertEqual(d.state, State.delivered)
        attempt = yield defer.Deferred.fromCoroutine(self.last_attempt(did))
        self.assertEqual((attempt.tls_policy_id, attempt.tls_result),
                         ("testing 2026a", "starttls-not-supported"))
        self.assertEqual(len(self.delivery.messages), 1)

    @defer.inlineCallbacks
    def test_untrusted_policy_server_is_no_policy(self) -> Any:
        """A policy host whose certificate does not verify gives no policy (a fetch error)."""
        sts = self.serve("enforce", trusted=False)
        found = yield defer.Deferred.fromCoroutine(sts.policy("example.test"))
        self.assertIsNone(found)
        self.assertEqual(sts.fetch_results, {"example.test": "sts-webpki-invalid"})
        self.assertIn("certificate verify failed", sts.fetch_errors["example.test"])
        self.assertEqual(self.site.requests, 0)  # refused at the handshake


class ReportCollector(Resource):
    """Accepts POSTed reports."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.posts: list[tuple[bytes, bytes]] = []

    def render_POST(self, request: Any) -> bytes:  # noqa: N802
        self.posts.append((request.getHeader(b"content-type"), request.content.read()))
        return b""


class ReportPostTests(TestCase):
    """RFC 8460 5.4: the gzipped report POSTed over verified HTTPS."""

    timeout = 20

    def setUp(self) -> None:
        from twisted.internet import reactor

        self.reactor: Any = reactor
        self.ca = trustme.CA()
        cert = self.ca.issue_cert("rpt.example.test")
        self.collector = ReportCollector()
        port = reactor.listenSSL(0, Site(self.collector), ssl.PrivateCertificate.loadPEM(
            cert.private_key_and_cert_chain_pem.bytes()).options(), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.port = port.getHost().port

    def agent(self, ca: trustme.CA) -> Agent:
        policy = BrowserLikePolicyForHTTPS(trustRoot=ssl.trustRootFromCertificates(
            [ssl.Certificate.loadPEM(ca.cert_pem.bytes())]))
        return Agent.usingEndpointFactory(self.reactor,
                                          LoopbackEndpoints(self.reactor, self.port, policy))

    @defer.inlineCallbacks
    def test_post(self) -> Any:
        from hurricane.tlsrpt import https_poster
        post = https_poster(self.agent(self.ca), self.reactor, 10)
        yield defer.Deferred.fromCoroutine(post("https://rpt.example.test/tlsrpt", b"\x1f\x8b"))
        self.assertEqual(self.collector.posts, [(b"application/tlsrpt+gzip", b"\x1f\x8b")])

    @defer.inlineCallbacks
    def test_untrusted_receiver_gets_nothing(self) -> Any:
        from hurricane.tlsrpt import https_poster
        post = https_poster(self.agent(trustme.CA()), self.reactor, 10)
        with self.assertRaises(RequestTransmissionFailed) as caught:
            yield defer.Deferred.fromCoroutine(post("https://rpt.example.test/x", b"data"))
        self.assertIn("certificate verify failed", str(caught.exception.reasons[0].value))
        self.assertEqual(self.collector.posts, [])
