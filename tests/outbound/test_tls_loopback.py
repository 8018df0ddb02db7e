"""STARTTLS against a real Twisted ESMTP server on 127.0.0.1 (port 0), with a trustme CA."""

from __future__ import annotations

from typing import Any

import trustme
from twisted.internet import defer, ssl
from twisted.internet.interfaces import IListeningPort
from twisted.mail import smtp
from twisted.trial.unittest import TestCase

from hurricane.outbound.client import Connector, SMTPConnection
from hurricane.outbound.interface import ConnectionFailed

from .helpers import (
    TIMEOUTS,
    CollectingDelivery,
    InjectingESMTP,
    PipeliningESMTP,
    ServerFactory,
    message,
)


class STARTTLSLoopbackTests(TestCase):
    """Real sockets, real TLS; every port and connection is closed by the end."""

    timeout = 20

    def setUp(self) -> None:
        from twisted.internet import reactor

        self.reactor: Any = reactor
        self.ca = trustme.CA()
        cert = self.ca.issue_cert("localhost", "127.0.0.1")
        self.server_tls = ssl.PrivateCertificate.loadPEM(
            cert.private_key_and_cert_chain_pem.bytes()).options()
        self.delivery = CollectingDelivery()

    def listen(self, server_class: type[smtp.ESMTP] = PipeliningESMTP,
               tls: bool = True) -> ServerFactory:
        factory = ServerFactory(self.delivery, server_class,
                                self.server_tls if tls else None)
        port: IListeningPort = self.reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.port_number = port.getHost().port
        self.addCleanup(port.stopListening)
        # Runs before stopListening (cleanups are LIFO): wait for every server
        # connection to be gone, so the reactor is clean.
        self.addCleanup(lambda: defer.gatherResults(factory.lost))
        return factory

    def connector(self, trusted: bool = True) -> Connector:
        roots = [self.ca.cert_pem.bytes()] if trusted else None
        return Connector(self.reactor, TIMEOUTS, trust_roots=roots)

    async def connect(self, connector: Connector, policy: str,
                      host: str = "localhost") -> SMTPConnection:
        return await connector.connect(host, "127.0.0.1", self.port_number, tls_policy=policy,
                                       helo="client.test")

    async def _deliver_and_close(self, conn: SMTPConnection) -> None:
        result = await conn.send(message("user@x.test"))
        self.assertTrue(result[0].delivered, result)
        await conn.close()

    @defer.inlineCallbacks
    def test_verify_good_certificate(self) -> Any:
        """verify with the CA trusted and the right host name encrypts and verifies."""
        self.listen()
        conn = yield defer.Deferred.fromCoroutine(self.connect(self.connector(), "verify"))
        self.assertIn(conn.info.tls, ("TLSv1.2", "TLSv1.3"))
        self.assertTrue(conn.info.tls_verified)
        self.assertNotIn("STARTTLS", conn.extensions)  # the post-TLS EHLO
        yield defer.Deferred.fromCoroutine(self._deliver_and_close(conn))
        self.assertEqual(len(self.delivery.messages), 1)

    @defer.inlineCallbacks
    def test_verify_wrong_host_name(self) -> Any:
        """verify fails with securityerror when the certificate names another host."""
        self.listen()
        d = defer.Deferred.fromCoroutine(self.connect(self.connector(), "verify", "wrong.test"))
        failure = yield self.assertFailure(d, ConnectionFailed)
        self.assertEqual((failure.phase, failure.reason, failure.temporary),
                         ("starttls", "securityerror", True))

    @defer.inlineCallbacks
    def test_verify_untrusted_ca(self) -> Any:
        """verify fails with securityerror when the chain does not lead to a trusted root."""
        self.listen()
        d = defer.Deferred.fromCoroutine(self.connect(self.connector(trusted=False), "verify"))
        failure = yield self.assertFailure(d, ConnectionFailed)
        self.assertEqual((failure.phase, failure.reason), ("starttls", "securityerror"))

    @defer.inlineCallbacks
    def test_opportunistic_accepts_any_certificate(self) -> Any:
        """opportunistic encrypts even with an untrusted certificate, unverified."""
        self.listen()
        conn = yield defer.Deferred.fromCoroutine(
            self.connect(self.connector(trusted=False), "opportunistic", "wrong.test"))
        self.assertTrue(conn.info.tls)
        self.assertFalse(conn.info.tls_verified)
        yield defer.Deferred.fromCoroutine(self._deliver_and_close(conn))

    @defer.inlineCallbacks
    def test_require_without_starttls(self) -> Any:
        """require against a server without STARTTLS fails with failedstarttls."""
        self.listen(tls=False)
        d = defer.Deferred.fromCoroutine(self.connect(self.connector(), "require"))
        failure = yield self.assertFailure(d, ConnectionFailed)
        self.assertEqual((failure.phase, failure.reason, failure.temporary),
                         ("starttls", "failedstarttls", True))

    @defer.inlineCallbacks
    def test_starttls_response_injection(self) -> Any:
        """A fake EHLO reply sent in plain text after the 220 is not used after TLS."""
        self.listen(InjectingESMTP)
        conn = yield defer.Deferred.fromCoroutine(self.connect(self.connector(), "verify"))
        # The real (encrypted) EHLO reply announced PIPELINING; the fake did not.
        self.assertIn("PIPELINING", conn.extensions)
        self.assertTrue(conn.info.tls)
        yield defer.Deferred.fromCoroutine(self._deliver_and_close(conn))

    @defer.inlineCallbacks
    def test_large_body_over_tls(self) -> Any:
        """A 4 MB body is streamed through the producer over a real TLS transport, intact."""
        self.listen()
        conn = yield defer.Deferred.fromCoroutine(self.connect(self.connector(), "verify"))
        body = b"Subject: big\n\n" + b"".join(b".%07d\n" % i for i in range(500_000))
        result = yield defer.Deferred.fromCoroutine(conn.send(message("user@x.test", body=body)))
        self.assertTrue(result[0].delivered, result)
        yield defer.Deferred.fromCoroutine(conn.close())
        self.assertEqual(self.delivery.messages[0][1], body.replace(b"\n", b"\r\n"))
