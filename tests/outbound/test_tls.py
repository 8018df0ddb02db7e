"""hurricane.outbound.tls: extra trust roots with public Twisted names, in memory (iosim)."""

from __future__ import annotations

from typing import Any

import trustme
from twisted.internet import ssl
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.test.iosim import connectedServerAndClient
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from hurricane.outbound.client import IOpenSSLTrustRoot
from hurricane.outbound.tls import ExtraTrust, client_tls_options, trust_roots_with

HOST = "mx.example.test"


@implementer(IHandshakeListener)
class Peer(Protocol):
    """Records whether the handshake completed and why the connection ended."""

    def __init__(self) -> None:
        self.handshaken = False
        self.lost: Failure | None = None

    def handshakeCompleted(self) -> None:  # noqa: N802 - Twisted
        """The TLS handshake is done (the peer was verified)."""
        self.handshaken = True

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]  # noqa: N802
        """Keep the reason."""
        self.lost = reason


def handshake(client_options: Any, server_cert: trustme.LeafCert) -> tuple[Peer, Peer]:
    """A TLS handshake between a client with ``client_options`` and a server with
    ``server_cert``, over an in-memory pump; the two wrapped protocols."""
    server_options = ssl.PrivateCertificate.loadPEM(
        server_cert.private_key_and_cert_chain_pem.bytes()).options()
    client_peer, server_peer = Peer(), Peer()
    client_tls = TLSMemoryBIOFactory(client_options, True,
                                     Factory.forProtocol(lambda: client_peer))
    server_tls = TLSMemoryBIOFactory(server_options, False,
                                     Factory.forProtocol(lambda: server_peer))
    _, _, pump = connectedServerAndClient(lambda: server_tls.buildProtocol(None),
                                          lambda: client_tls.buildProtocol(None))
    pump.flush()
    return client_peer, server_peer


class ExtraTrustTests(SynchronousTestCase):
    """``verify`` trusts the extra CA (with or without the platform store) and the name."""

    def setUp(self) -> None:
        self.ca = trustme.CA()
        self.cert = self.ca.issue_cert(HOST)
        self.roots = trust_roots_with([self.ca.cert_pem.bytes()])

    def test_extra_ca_with_platform(self) -> None:
        """A chain from the extra CA verifies, with the platform store trusted as well."""
        client, _ = handshake(client_tls_options("verify", HOST, self.roots), self.cert)
        self.assertTrue(client.handshaken, client.lost)

    def test_extra_ca_alone(self) -> None:
        """Without the platform store the extra CA still verifies."""
        roots = trust_roots_with([self.ca.cert_pem.bytes()], include_platform=False)
        client, _ = handshake(client_tls_options("verify", HOST, roots), self.cert)
        self.assertTrue(client.handshaken, client.lost)

    def test_options_reused(self) -> None:
        """One options object verifies two connections (the roots are added once)."""
        options = client_tls_options("verify", HOST, self.roots)
        for _ in range(2):
            client, _ = handshake(options, self.cert)
            self.assertTrue(client.handshaken, client.lost)

    def test_wrong_name_refused(self) -> None:
        """A certificate from the trusted CA for another name is refused."""
        other = self.ca.issue_cert("other.example.test")
        client, _ = handshake(client_tls_options("verify", HOST, self.roots), other)
        self.assertFalse(client.handshaken)
        self.assertIsNotNone(client.lost)

    def test_unknown_ca_refused(self) -> None:
        """A chain from a CA that is neither extra nor in the platform store is refused."""
        stranger = trustme.CA().issue_cert(HOST)
        for include_platform in (True, False):
            roots = trust_roots_with([self.ca.cert_pem.bytes()],
                                     include_platform=include_platform)
            client, _ = handshake(client_tls_options("verify", HOST, roots), stranger)
            self.assertFalse(client.handshaken, include_platform)

    def test_unverified_policies(self) -> None:
        """opportunistic and require encrypt with any certificate."""
        stranger = trustme.CA().issue_cert(HOST)
        for policy in ("opportunistic", "require"):
            client, _ = handshake(client_tls_options(policy, HOST), stranger)
            self.assertTrue(client.handshaken, policy)

    def test_the_connector_recognises_them(self) -> None:
        """trust_roots_with gives what Connector takes as complete trust roots."""
        self.assertIsNone(trust_roots_with(None))
        self.assertIsNone(trust_roots_with([]))
        self.assertIsInstance(self.roots, ExtraTrust)
        self.assertTrue(IOpenSSLTrustRoot.providedBy(self.roots))
        self.assertRaises(ValueError, ExtraTrust, [])
