"""write_now on real loopback TCP connections: at once when it can, in order always."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, protocol, reactor
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import TestCase

from hurricane.netio import write_now


class _Collect(protocol.Protocol):
    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.data = b""
        self.done: defer.Deferred[bytes] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        if len(self.data) >= self.expected and not self.done.called:
            self.done.callback(self.data)


class _Server(protocol.Protocol):
    def __init__(self, connected: defer.Deferred[Any]) -> None:
        self.connected_d = connected

    def connectionMade(self) -> None:
        self.connected_d.callback(self)


class WriteNowTests(TestCase):
    async def pair(self, expected: int) -> tuple[Any, _Collect]:
        """A server-side transport and the client protocol collecting what it sends."""
        connected: defer.Deferred[Any] = defer.Deferred()
        factory = protocol.Factory.forProtocol(lambda: _Server(connected))
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        client = _Collect(expected)
        creator = protocol.ClientCreator(reactor, lambda: client)
        await creator.connectTCP("127.0.0.1", port.getHost().port)
        server = await connected
        self.addCleanup(server.transport.loseConnection)
        self.addCleanup(client.transport.loseConnection)
        return server.transport, client

    async def test_sent_at_once(self) -> None:
        """With nothing queued, the bytes leave before the reactor's next turn."""
        transport, client = await self.pair(5)
        write_now(transport, b"hello")
        self.assertEqual((transport._tempDataBuffer, transport.dataBuffer), ([], b""))
        self.assertEqual(await client.done, b"hello")

    async def test_queued_behind_pending_data(self) -> None:
        """Behind data already queued, it is queued too: the order is kept."""
        transport, client = await self.pair(6)
        transport.write(b"abc")
        write_now(transport, b"def")
        self.assertEqual(transport._tempDataBuffer, [b"abc", b"def"])
        self.assertEqual(await client.done, b"abcdef")

    async def test_partial_send_queues_the_rest(self) -> None:
        """More than the socket takes: the rest is queued, then a later write follows it."""
        big = bytes(range(256)) * (32 * 1024)  # 8 MiB, more than a socket buffer
        transport, client = await self.pair(len(big) + 4)
        write_now(transport, big)
        self.assertGreater(transport._tempDataLen, 0)
        write_now(transport, b"tail")
        self.assertEqual(await client.done, big + b"tail")

    async def test_socket_error_left_to_twisted(self) -> None:
        """A send error queues the bytes; Twisted's own write path then deals with them."""
        transport, client = await self.pair(4)
        real = transport.socket

        class Failing:
            def send(self, data: bytes) -> int:
                raise BlockingIOError(11, "try again")

        transport.socket = Failing()
        try:
            write_now(transport, b"late")
        finally:
            transport.socket = real
        self.assertEqual(transport._tempDataBuffer, [b"late"])
        self.assertEqual(await client.done, b"late")

    async def test_nothing_sent_after_abort(self) -> None:
        """After abortConnection the bytes go to transport.write (which drops them)."""
        transport, client = await self.pair(1)
        lost: defer.Deferred[None] = defer.Deferred()
        client.connectionLost = lambda reason: lost.callback(None)
        transport.abortConnection()
        write_now(transport, b"leak")
        await lost
        self.assertEqual(client.data, b"")

    async def test_unknown_twisted_falls_back(self) -> None:
        """When Twisted's transport no longer looks as expected, plain write is used."""
        import hurricane.netio as netio

        transport, client = await self.pair(2)
        self.patch(netio, "_KNOWN_TRANSPORT", False)
        write_now(transport, b"ok")
        self.assertEqual(transport._tempDataBuffer, [b"ok"])
        self.assertEqual(await client.done, b"ok")

    def test_installed_twisted_known(self) -> None:
        """The installed Twisted has every attribute write_now reads (fast path on)."""
        import hurricane.netio as netio

        self.assertTrue(netio._KNOWN_TRANSPORT)

    def test_other_transports_use_write(self) -> None:
        """Not a TCP connection (a TLS layer, a wrapper, a test transport): plain write."""
        t = StringTransport()
        write_now(t, b"x")
        self.assertEqual(t.value(), b"x")

    async def test_tls_connection_uses_write(self) -> None:
        """A TCP connection that started TLS is never written to directly."""
        transport, client = await self.pair(1)
        sent: list[bytes] = []
        transport.TLS = True
        transport.write = sent.append
        try:
            write_now(transport, b"secret")
        finally:
            del transport.TLS
            del transport.write
        self.assertEqual(sent, [b"secret"])
        self.assertEqual((transport._tempDataBuffer, transport.dataBuffer), ([], b""))
