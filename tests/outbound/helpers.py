"""Shared fixtures: fake transports, a collecting Twisted ESMTP server, timeouts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer, protocol
from twisted.internet.interfaces import ITCPTransport, ITLSTransport
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.mail import smtp
from twisted.mail.interfaces import IMessageDelivery
from zope.interface import implementer

from hurricane.config import TimeoutsConfig
from hurricane.outbound.interface import (
    OutboundMessage,
    OutboundRecipient,
    RecipientReply,
    SessionInfo,
)
from hurricane.outbound.session import SMTPConnection
from hurricane.outbound.wire import SMTPClientProtocol

#: Distinct values, so a test can tell which timeout fired.
TIMEOUTS = TimeoutsConfig(
    connect=5.0, greeting=11.0, mail=13.0, rcpt=17.0, data_init=19.0, data_block=23.0,
    data_end=29.0,
)

EHLO_ALL = (
    b"250-mx.example.test Hello\r\n"
    b"250-SIZE 10485760\r\n"
    b"250-PIPELINING\r\n"
    b"250-8BITMIME\r\n"
    b"250-SMTPUTF8\r\n"
    b"250-DSN\r\n"
    b"250-ENHANCEDSTATUSCODES\r\n"
    b"250 CHUNKING\r\n"
)
EHLO_PLAIN = b"250 mx.example.test Hello\r\n"
EHLO_PIPELINING = b"250-mx.example.test Hello\r\n250 PIPELINING\r\n"

BODY = b"Subject: test\r\n\r\nHello.\r\n"


def message(
    *addresses: str, body: bytes = BODY, mail_from: str = "bounce@example.com", **kw: Any,
) -> OutboundMessage:
    """An OutboundMessage to ``addresses`` (delivery ids 1, 2, ...)."""
    recipients = tuple(
        OutboundRecipient(delivery_id=i + 1, address=a) for i, a in enumerate(addresses)
    )
    return OutboundMessage(mail_from=mail_from, recipients=recipients, body=body, **kw)


@implementer(ITLSTransport, ITCPTransport)
class FakeTLSTransport(StringTransport):
    """A StringTransport that records startTLS and TCP_NODELAY instead of doing them."""

    def __init__(self) -> None:
        super().__init__()
        self.tls_started: list[object] = []
        self.nodelay: bool | None = None

    def startTLS(self, contextFactory: object, normal: bool = True) -> None:  # noqa: N802
        self.tls_started.append(contextFactory)

    def setTcpNoDelay(self, enabled: bool) -> None:  # noqa: N802
        self.nodelay = enabled

    def getTcpNoDelay(self) -> bool:  # noqa: N802
        return bool(self.nodelay)


class PausingTransport(FakeTLSTransport):
    """Pauses a registered streaming producer after every write (a full socket)."""

    def write(self, data: bytes) -> None:
        super().write(data)
        if self.producer is not None:
            self.producer.pauseProducing()


@dataclass
class Session:
    """A client session wired to a fake transport and a fake clock."""

    clock: Clock
    proto: SMTPClientProtocol
    transport: StringTransport
    conn: SMTPConnection
    written: list[bytes] = field(default_factory=list)

    def feed(self, data: bytes) -> None:
        """Deliver server bytes to the client."""
        self.proto.dataReceived(data)

    def take(self) -> bytes:
        """What the client wrote since the last call."""
        value = self.transport.value()
        self.transport.clear()
        return value


def new_session(transport: StringTransport | None = None) -> Session:
    """A connected, not yet greeted session."""
    clock = Clock()
    proto = SMTPClientProtocol(clock)
    transport = transport if transport is not None else FakeTLSTransport()
    proto.makeConnection(transport)
    conn = SMTPConnection(proto, TIMEOUTS, SessionInfo("mx.example.test", "192.0.2.1", 25))
    return Session(clock, proto, transport, conn)


def handshake(
    session: Session, tls_policy: str = "none",
    tls_options: Callable[[], Any] | None = None,
) -> defer.Deferred[None]:
    """Start the handshake coroutine; returns its Deferred."""
    return defer.Deferred.fromCoroutine(session.conn.handshake(
        helo="client.example.org", tls_policy=tls_policy,
        tls_options=tls_options or (lambda: object()),
    ))


def send(session: Session, msg: OutboundMessage) -> defer.Deferred[list[RecipientReply]]:
    """Start one transaction."""
    return defer.Deferred.fromCoroutine(session.conn.send(msg))


def ready_session(ehlo: bytes = EHLO_ALL, transport: StringTransport | None = None) -> Session:
    """A greeted session after EHLO with ``ehlo`` as the reply."""
    session = new_session(transport)
    d = handshake(session)
    session.feed(b"220 mx.example.test ESMTP\r\n")
    session.feed(ehlo)
    assert d.called, "handshake did not finish"
    d.addErrback(lambda f: f.raiseException())
    session.take()
    return session


# -- a real Twisted ESMTP server that keeps what it receives ------------------


@implementer(smtp.IMessage)
class _Message:
    def __init__(self, sink: CollectingDelivery, user: smtp.User) -> None:
        self.sink = sink
        self.user = user
        self.lines: list[bytes] = []

    def lineReceived(self, line: bytes) -> None:  # noqa: N802
        self.lines.append(line)

    def eomReceived(self) -> defer.Deferred[bytes]:  # noqa: N802
        # Drop the Received header the server put first.
        self.sink.messages.append((str(self.user.dest), b"\r\n".join(self.lines[1:]) + b"\r\n"))
        return defer.succeed(b"ok")

    def connectionLost(self) -> None:  # noqa: N802
        pass


@implementer(IMessageDelivery)
class CollectingDelivery:
    """Accepts every sender and recipient except local parts starting with "reject"."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []

    def receivedHeader(self, helo: Any, origin: Any, recipients: Any) -> bytes:  # noqa: N802
        return b"Received: from test"

    def validateFrom(self, helo: Any, origin: Any) -> Any:  # noqa: N802
        return origin

    def validateTo(self, user: smtp.User) -> Callable[[], _Message]:  # noqa: N802
        if user.dest.local.startswith(b"reject"):
            raise smtp.SMTPBadRcpt(user)
        return lambda: _Message(self, user)


class PipeliningESMTP(smtp.ESMTP):
    """Twisted's ESMTP server, also announcing PIPELINING (its validation is synchronous)."""

    def extensions(self) -> dict[bytes, Any]:
        ext = super().extensions()
        ext[b"PIPELINING"] = None
        return ext


class InjectingESMTP(PipeliningESMTP):
    """A man in the middle's view: plain text after the 220 to STARTTLS."""

    def ext_STARTTLS(self, rest: bytes) -> None:  # noqa: N802
        # One packet: the 220 and a fake EHLO reply advertising nothing useful.
        self.transport.write(b"220 go ahead\r\n250 fake-ehlo\r\n")
        self.transport.startTLS(self.ctx)
        self.startedTLS = True


class ServerFactory(protocol.ServerFactory):
    """Builds ESMTP servers sharing one delivery; remembers their connection losses."""

    def __init__(
        self, delivery: CollectingDelivery, protocol_class: type[smtp.ESMTP] = smtp.ESMTP,
        context: Any = None, timeout: int | None = 60,
    ) -> None:
        self.delivery = delivery
        self.protocol_class = protocol_class
        self.context = context
        self.timeout = timeout
        self.lost: list[defer.Deferred[None]] = []

    def buildProtocol(self, addr: Any) -> smtp.ESMTP:  # noqa: N802
        proto = self.protocol_class(contextFactory=self.context)
        proto.delivery = self.delivery
        proto.host = b"mx.test"
        proto.factory = self
        proto.timeout = self.timeout
        lost: defer.Deferred[None] = defer.Deferred()
        self.lost.append(lost)
        original = proto.connectionLost

        def connection_lost(reason: Any) -> None:
            original(reason)
            lost.callback(None)

        proto.connectionLost = connection_lost  # type: ignore[method-assign]
        return proto


