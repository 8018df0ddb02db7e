"""The Connector and the client against a real Twisted ESMTP server, in memory."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.mail import smtp
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase

from hurricane.outbound.connector import Connector
from hurricane.outbound.interface import ConnectionFailed, SessionInfo
from hurricane.outbound.session import SMTPConnection
from hurricane.outbound.wire import SMTPClientProtocol

from .helpers import (
    TIMEOUTS,
    CollectingDelivery,
    FakeTLSTransport,
    PipeliningESMTP,
    ServerFactory,
    message,
)


class ConnectorTests(SynchronousTestCase):
    """Connector.connect on a MemoryReactorClock."""

    def _connect(self, connector: Connector, ip: str = "192.0.2.7") -> defer.Deferred[Any]:
        return defer.Deferred.fromCoroutine(connector.connect(
            "mx.example.test", ip, 2525, tls_policy="none", helo="client.example.org",
        ))

    def test_connect_greets_and_sets_nodelay(self) -> None:
        """connect() opens TCP with the connect timeout, sets TCP_NODELAY and runs EHLO."""
        reactor = MemoryReactorClock()
        d = self._connect(Connector(reactor, TIMEOUTS, bind_address="192.0.2.1"))
        host, port, factory, timeout, bind = reactor.tcpClients[0]
        self.assertEqual((host, port, timeout, bind), ("192.0.2.7", 2525, TIMEOUTS.connect,
                                                       ("192.0.2.1", 0)))
        proto = factory.buildProtocol(IPv4Address("TCP", host, port))
        transport = FakeTLSTransport()
        proto.makeConnection(transport)
        self.assertIs(transport.nodelay, True)
        proto.dataReceived(b"220 mx ESMTP\r\n")
        self.assertEqual(transport.value(), b"EHLO client.example.org\r\n")
        proto.dataReceived(b"250-mx\r\n250 PIPELINING\r\n")
        conn = self.successResultOf(d)
        self.assertEqual(conn.info, SessionInfo(
            "mx.example.test", "192.0.2.7", 2525, greeting="mx ESMTP", extensions=("PIPELINING",),
        ))
        self.assertEqual(reactor.getDelayedCalls(), [])

    def test_source_address_per_connection(self) -> None:
        """A connection naming its source binds to it instead of bind_address."""
        reactor = MemoryReactorClock()
        connector = Connector(reactor, TIMEOUTS, bind_address="192.0.2.1")
        d = defer.Deferred.fromCoroutine(connector.connect(
            "mx.example.test", "192.0.2.7", 25, tls_policy="none", helo="client.example.org",
            source="192.0.2.9",
        ))
        self.assertEqual(reactor.tcpClients[0][4], ("192.0.2.9", 0))
        reactor.tcpClients[0][2].clientConnectionFailed(None, Failure(ConnectionRefusedError()))
        self.failureResultOf(d, ConnectionFailed)

    def test_reactor_without_timers_refused(self) -> None:
        """A reactor that cannot schedule timeouts is refused when the connector is built."""
        with self.assertRaises(TypeError):
            Connector(object(), TIMEOUTS)  # type: ignore[arg-type]

    def test_ipv6_address(self) -> None:
        """An IPv6 address is connected to as such."""
        reactor = MemoryReactorClock()
        d = self._connect(Connector(reactor, TIMEOUTS), ip="2001:db8::1")
        self.assertEqual(reactor.tcpClients[0][0], "2001:db8::1")
        reactor.tcpClients[0][2].clientConnectionFailed(None, Failure(ConnectionRefusedError()))
        self.failureResultOf(d, ConnectionFailed)

    def test_connection_refused(self) -> None:
        """A refused connection is ConnectionFailed(phase connect, reason networkerror)."""
        reactor = MemoryReactorClock()
        d = self._connect(Connector(reactor, TIMEOUTS))
        reactor.tcpClients[0][2].clientConnectionFailed(None, Failure(ConnectionRefusedError()))
        failure = self.failureResultOf(d, ConnectionFailed).value
        self.assertEqual((failure.phase, failure.reason, failure.temporary),
                         ("connect", "networkerror", True))

    def test_bad_policy(self) -> None:
        """An unknown TLS policy is a programming error."""
        d = defer.Deferred.fromCoroutine(Connector(MemoryReactorClock(), TIMEOUTS).connect(
            "mx", "192.0.2.1", 25, tls_policy="maybe", helo="x"))
        self.failureResultOf(d, ValueError)


class InMemoryServerTests(SynchronousTestCase):
    """The client against twisted.mail's ESMTP server over iosim."""

    def _pair(self, server_class: type[smtp.ESMTP]) -> tuple[Any, ...]:
        delivery = CollectingDelivery()
        server = ServerFactory(delivery, server_class, timeout=None).buildProtocol(None)
        clock = Clock()
        client = SMTPClientProtocol(clock)
        server_addr = IPv4Address("TCP", "127.0.0.1", 25)
        client_addr = IPv4Address("TCP", "127.0.0.1", 40000)
        server_transport = iosim.FakeTransport(server, True, server_addr, client_addr)
        client_transport = iosim.FakeTransport(client, False, client_addr, server_addr)
        pump = iosim.connect(server, server_transport, client, client_transport, greet=False)
        conn = SMTPConnection(client, TIMEOUTS, SessionInfo("mx.test", "127.0.0.1", 25))
        d = defer.Deferred.fromCoroutine(conn.handshake(helo="client.test", tls_policy="none"))
        pump.flush()
        self.successResultOf(d)
        return delivery, conn, pump, clock

    def _transactions(self, server_class: type[smtp.ESMTP]) -> None:
        delivery, conn, pump, clock = self._pair(server_class)
        # Dots at the start, at a 16 KiB boundary, and bare CR/LF smuggling attempts.
        head = (b"x" * 78 + b"\r\n") * 204 + b"y" * 62 + b"\r\n"
        bodies = [
            b"Subject: one\r\n\r\n.first body line is a dot line\r\n",
            b"Subject: two\n\n" + head[14:] + b".\r\n..\r\nend\n",
            b"Subject: three\r\n\r\nA\n.\nMAIL FROM:<evil@x>\r\nB\r.\rC\r\n.\nD",
        ]
        for index, body in enumerate(bodies):
            d = defer.Deferred.fromCoroutine(conn.send(
                message(f"user{index}@x.test", "reject@x.test", body=body)))
            pump.flush()
            result = self.successResultOf(d)
            self.assertTrue(result[0].delivered, result)
            self.assertEqual((result[1].reply.code, result[1].phase), (550, "rcpt"))
        self.assertEqual(len(delivery.messages), 3)
        self.assertEqual(delivery.messages[0][1], bodies[0])
        expected_two = b"Subject: two\n\n" + head[14:] + b".\r\n..\r\nend\n"
        expected_two = expected_two.replace(b"\r\n", b"\n")
        self.assertEqual(delivery.messages[1][1], expected_two.replace(b"\n", b"\r\n"))
        self.assertEqual(
            delivery.messages[2][1],
            b"Subject: three\r\n\r\nA\r\n.\r\nMAIL FROM:<evil@x>\r\nB\r\n.\r\nC\r\n.\r\nD\r\n",
        )
        d = defer.Deferred.fromCoroutine(conn.close())
        pump.flush()
        self.successResultOf(d)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_lockstep_against_twisted_server(self) -> None:
        """Three transactions on one connection, lock-step; bodies arrive intact."""
        self._transactions(smtp.ESMTP)

    def test_pipelined_against_twisted_server(self) -> None:
        """The same with PIPELINING announced (RSET, MAIL, RCPTs, DATA in one write)."""
        self._transactions(PipeliningESMTP)
