"""Test helpers for the ESMTP servers: transports, a recording server, reply parsing."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import ITLSTransport
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from zope.interface import implementer

from hurricane.smtpd.address import Path
from hurricane.smtpd.limits import ServerLimits
from hurricane.smtpd.protocol import Envelope, HardenedESMTP, HardenedFactory, Recipient
from hurricane.smtpd.reply import Reply

#: A reply line with an enhanced status code.
ENHANCED_RE = re.compile(rb"^\d{3}[ -][245]\.\d{1,3}\.\d{1,3} ")


@implementer(ITLSTransport)
class TLSStringTransport(StringTransport):
    """A StringTransport that records startTLS calls instead of doing TLS."""

    tls_context: Any = None
    #: What had been written when startTLS was called (went out in clear text).
    written_before_tls: bytes | None = None

    def startTLS(self, contextFactory: Any, normal: bool = True) -> None:
        """Remember the context; the bytes stay clear text in tests."""
        self.tls_context = contextFactory
        self.written_before_tls = self.value()


class _TCPStringTransport(StringTransport):
    """A StringTransport with ITCPTransport's setTcpNoDelay."""

    no_delay = False

    def setTcpNoDelay(self, enabled: bool) -> None:
        self.no_delay = enabled


def connect(factory: HardenedFactory, ip: str = "203.0.113.5",
            tls: bool = False) -> tuple[HardenedESMTP, StringTransport]:
    """Build a protocol for a client at ``ip`` and connect it to a string transport."""
    addr = IPv4Address("TCP", ip, 1234)
    proto = factory.buildProtocol(addr)
    transport = (TLSStringTransport if tls else _TCPStringTransport)(peerAddress=addr)
    proto.makeConnection(transport)
    return proto, transport


def replies(transport: StringTransport, clear: bool = True) -> list[bytes]:
    """The reply lines written so far (and forget them when ``clear``)."""
    lines = transport.value().split(b"\r\n")
    if clear:
        transport.clear()
    return [line for line in lines if line]


def codes(lines: list[bytes]) -> list[bytes]:
    """The code and the first word (the enhanced status) of each final reply line."""
    return [b" ".join(line.split(b" ", 2)[:2]) for line in lines if line[3:4] == b" "]


def keywords(lines: list[bytes]) -> list[bytes]:
    """The EHLO keywords of an EHLO reply (the text after ``250-`` / ``250 ``)."""
    return [line[4:] for line in lines[1:]]


def disconnect(proto: HardenedESMTP) -> None:
    """Tell the protocol its connection is gone."""
    proto.connectionLost(Failure(ConnectionError("test over")))


class RecordingProtocol(HardenedESMTP):
    """A HardenedESMTP whose hooks are driven by its factory."""

    factory: RecordingFactory

    def validate_sender(self, sender: Path, params: Mapping[str, str | None]) -> Any:
        """Use the factory's sender hook."""
        return self.factory.on_sender(sender)

    def validate_recipient(self, recipient: Path, params: Mapping[str, str | None]) -> Any:
        """Use the factory's recipient hook."""
        return self.factory.on_recipient(recipient)

    def message_received(self, envelope: Envelope, data: bytes) -> Any:
        """Record the message and use the factory's message hook."""
        self.factory.messages.append((envelope, data))
        return self.factory.on_message(envelope, data)


class RecordingFactory(HardenedFactory):
    """Accepts every sender and recipient unless told otherwise; records messages."""

    protocol = RecordingProtocol

    def __init__(self, clock: Clock | None = None, tls_context: Any = None,
                 **limits: Any) -> None:
        super().__init__("mx.test.example", ServerLimits(**limits), clock or Clock(),
                         tls_context)
        self.messages: list[tuple[Envelope, bytes]] = []
        self.on_sender: Callable[[Path], Any] = lambda p: Reply(250, "2.1.0", "Ok")
        self.on_recipient: Callable[[Path], Any] = lambda p: Recipient(p)
        self.on_message: Callable[[Envelope, bytes], Any] = (
            lambda e, d: Reply(250, "2.0.0", "Ok: queued"))


SWAKS = "/usr/bin/swaks"


async def wait_for_no_connections(factory: HardenedFactory, reactor: Any) -> None:
    """Wait (real time, at most 5 s) until every server connection is gone, so the
    reactor is clean when a loopback test ends."""
    from twisted.internet.task import deferLater

    for _ in range(500):
        if factory.connections.count() == 0:
            return
        await deferLater(reactor, 0.01, lambda: None)
    raise AssertionError("server connections still open")
