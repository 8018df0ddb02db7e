"""StreamWriter on real loopback TCP connections: at once when it can, in order always.

These tests also pin what the adapter relies on in Twisted (see
hurricane/netio.py): that ``transport.write`` only queues until the reactor's
next turn (the reason the adapter exists), that ``getHandle()`` of a TCP
connection is its socket, and that a connection that started TLS provides
ISSLTransport. An upgrade that changes one of them fails here first.
"""

from __future__ import annotations

import socket
from typing import Any

import trustme
from OpenSSL import crypto
from twisted.internet import defer, protocol, reactor, ssl
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase, TestCase

from hurricane.netio import StreamWriter, direct_socket


class _Collect(protocol.Protocol):
    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.data = b""
        self.done: defer.Deferred[bytes] = defer.Deferred()
        self.lost: defer.Deferred[None] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        if len(self.data) >= self.expected and not self.done.called:
            self.done.callback(self.data)

    def connectionLost(self, reason: object = None) -> None:
        self.lost.callback(None)


class _Server(protocol.Protocol):
    def __init__(self, connected: defer.Deferred[Any]) -> None:
        self.connected_d = connected

    def connectionMade(self) -> None:
        self.connected_d.callback(self)


def _server_context() -> ssl.CertificateOptions:
    """A server TLS context for 127.0.0.1 from a throwaway CA."""
    cert = trustme.CA().issue_cert("127.0.0.1")
    key = crypto.load_privatekey(crypto.FILETYPE_PEM, cert.private_key_pem.bytes())
    chain = [ssl.Certificate.loadPEM(b.bytes()).original for b in cert.cert_chain_pems]
    return ssl.CertificateOptions(privateKey=key, certificate=chain[0])


class StreamWriterTests(TestCase):
    async def server(self) -> Any:
        """Listen on 127.0.0.1 and return (server transport, the port)."""
        connected: defer.Deferred[Any] = defer.Deferred()
        factory = protocol.Factory.forProtocol(lambda: _Server(connected))
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port, connected

    async def raw_pair(self) -> tuple[Any, socket.socket]:
        """A server-side transport and a plain (non-Twisted) client socket.

        The client reads without the reactor, so what it can read before
        the reactor runs again was sent at once.
        """
        port, connected = await self.server()
        client = socket.create_connection(("127.0.0.1", port.getHost().port), timeout=5)
        self.addCleanup(client.close)
        server = await connected
        self.addCleanup(server.transport.loseConnection)
        return server.transport, client

    async def pair(self, expected: int) -> tuple[Any, _Collect]:
        """A server-side transport and a Twisted client protocol collecting what it sends."""
        port, connected = await self.server()
        client = _Collect(expected)
        creator = protocol.ClientCreator(reactor, lambda: client)
        await creator.connectTCP("127.0.0.1", port.getHost().port)
        server = await connected
        self.addCleanup(server.transport.loseConnection)
        self.addCleanup(client.transport.loseConnection)
        return server.transport, client

    async def test_transport_write_waits_for_the_reactor(self) -> None:
        """Pinned Twisted behaviour: transport.write sends nothing before the reactor's
        next turn (if this starts failing, Twisted writes eagerly: drop the adapter)."""
        transport, client = await self.raw_pair()
        transport.write(b"queued")
        client.setblocking(False)
        with self.assertRaises(BlockingIOError):
            client.recv(100)

    async def test_sent_at_once(self) -> None:
        """With nothing queued, the bytes leave before the reactor's next turn."""
        transport, client = await self.raw_pair()
        writer = StreamWriter(transport)
        self.assertTrue(writer.direct)
        writer.write(b"hello")
        self.assertEqual(client.recv(100), b"hello")
        writer.write(b" again")
        self.assertEqual(client.recv(100), b" again")

    async def test_partial_send_queues_the_rest(self) -> None:
        """More than the socket takes: the rest is queued, and every later write follows it."""
        big = bytes(range(256)) * (32 * 1024)  # 8 MiB, more than a socket buffer
        transport, client = await self.pair(len(big) + 4)
        writer = StreamWriter(transport)
        writer.write(big)
        self.assertFalse(writer.direct)
        writer.write(b"tail")
        self.assertEqual(await client.done, big + b"tail")

    async def test_socket_error_left_to_twisted(self) -> None:
        """A send error queues the bytes; Twisted's own write path then deals with them."""
        transport, client = await self.pair(4)
        writer = StreamWriter(transport)

        class Busy:
            def send(self, data: bytes) -> int:
                raise BlockingIOError(11, "try again")

        writer._socket = Busy()  # type: ignore[assignment]
        writer.write(b"late")
        self.assertFalse(writer.direct)
        self.assertEqual(await client.done, b"late")

    async def test_nothing_sent_after_abort(self) -> None:
        """After abort, written bytes never reach the peer (a direct send would leak them)."""
        transport, client = await self.pair(1)
        writer = StreamWriter(transport)
        writer.abort()
        writer.write(b"leak")
        await client.lost
        self.assertEqual(client.data, b"")

    async def test_lose_connection_after_pending_writes(self) -> None:
        """lose_connection closes after what was written, and writes stop going direct."""
        transport, client = await self.pair(3)
        writer = StreamWriter(transport)
        writer.write(b"bye")
        writer.lose_connection()
        self.assertFalse(writer.direct)
        await client.lost
        self.assertEqual(client.data, b"bye")

    async def test_nothing_in_clear_after_start_tls(self) -> None:
        """After start_tls every byte goes through the TLS layer: none leaves in clear text."""
        transport, client = await self.raw_pair()
        writer = StreamWriter(transport)
        writer.start_tls(_server_context())
        self.assertTrue(ISSLTransport.providedBy(transport))
        self.assertIsNone(direct_socket(transport))
        writer.write(b"secret")
        client.setblocking(False)
        with self.assertRaises(BlockingIOError):
            client.recv(100)  # TLS waits for the client's hello; nothing was sent

    async def test_connection_lost_stops_direct_sends(self) -> None:
        """After connection_lost the socket is never touched again."""
        transport, client = await self.pair(1)
        writer = StreamWriter(transport)
        writer.connection_lost()
        self.assertFalse(writer.direct)


class OtherTransportTests(SynchronousTestCase):
    def test_other_transports_use_write(self) -> None:
        """Not a TCP connection (a TLS layer, a wrapper, a test transport): plain write."""
        t = StringTransport()
        writer = StreamWriter(t)
        self.assertFalse(writer.direct)
        writer.write(b"x")
        self.assertEqual(t.value(), b"x")

    def test_empty_write(self) -> None:
        """Writing nothing writes nothing."""
        t = StringTransport()
        StreamWriter(t).write(b"")
        self.assertEqual(t.value(), b"")
