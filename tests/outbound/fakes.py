"""Fakes for the scheduler tests: a DNS resolver, an SMTP connector, a classifier.

No network: the resolver answers from tables, the connector records what
would have been sent and answers from a script, and time is a ``task.Clock``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IResolver
from twisted.internet.task import Clock, deferLater
from twisted.names import dns, error
from zope.interface import implementer

from hurricane.bounce.model import ReplyClass
from hurricane.outbound.interface import (
    ConnectionFailed,
    OutboundMessage,
    RecipientReply,
    Reply,
    SessionInfo,
)
from hurricane.outcome import Phase

Answer = tuple[list[dns.RRHeader], list[dns.RRHeader], list[dns.RRHeader]]


@implementer(IResolver)
class FakeResolver:
    """A ``twisted.names`` resolver answering from dictionaries.

    ``mx``/``a``/``aaaa`` map a name to records, or to an exception to
    raise, or to ``"hang"`` for a lookup that never answers. Names missing
    from ``mx`` get an empty answer (no data); names in ``nxdomain`` raise
    DNSNameError for every type. ``queries`` lists (type, name) in order.
    """

    def __init__(self) -> None:
        self.mx: dict[str, Any] = {}
        self.a: dict[str, Any] = {}
        self.aaaa: dict[str, Any] = {}
        self.nxdomain: set[str] = set()
        self.queries: list[tuple[str, str]] = []
        self.pending: list[Deferred[Answer]] = []

    def add_mx(self, domain: str, *records: tuple[int, str], ttl: int = 300) -> None:
        """Give ``domain`` MX records (preference, host)."""
        self.mx[domain] = [
            dns.RRHeader(domain.encode(), dns.MX, dns.IN, ttl,
                         dns.Record_MX(pref, host.encode(), ttl=ttl))
            for pref, host in records
        ]

    def add_host(self, name: str, *ips: str, ttl: int = 300) -> None:
        """Give ``name`` A and/or AAAA records."""
        for ip in ips:
            if ipaddress.ip_address(ip).version == 4:
                self.a.setdefault(name, []).append(
                    dns.RRHeader(name.encode(), dns.A, dns.IN, ttl, dns.Record_A(ip, ttl)))
            else:
                self.aaaa.setdefault(name, []).append(
                    dns.RRHeader(name.encode(), dns.AAAA, dns.IN, ttl,
                                 dns.Record_AAAA(ip, ttl)))

    def _answer(self, kind: str, table: dict[str, Any], name: str) -> Deferred[Answer]:
        self.queries.append((kind, name))
        if name in self.nxdomain:
            return fail(error.DNSNameError(name))
        value = table.get(name, [])
        if value == "hang":
            d: Deferred[Answer] = Deferred()
            self.pending.append(d)
            return d
        if isinstance(value, BaseException):
            return fail(value)
        return succeed((list(value), [], []))

    def lookupMailExchange(self, name: str, timeout: Any = None) -> Deferred[Answer]:
        return self._answer("MX", self.mx, name)

    def lookupAddress(self, name: str, timeout: Any = None) -> Deferred[Answer]:
        return self._answer("A", self.a, name)

    def lookupIPV6Address(self, name: str, timeout: Any = None) -> Deferred[Answer]:
        return self._answer("AAAA", self.aaaa, name)


Responder = Callable[["FakeConnection", OutboundMessage], list[RecipientReply]]


def accept_all(conn: FakeConnection, message: OutboundMessage) -> list[RecipientReply]:
    """Every recipient gets 250 after the dot."""
    return [
        RecipientReply(r.delivery_id, Reply(250, "2.0.0", "Ok: queued as X"), Phase.dot)
        for r in message.recipients
    ]


def reply_all(code: int, text: str, status: str | None = None,
              phase: Phase = Phase.rcpt) -> Responder:
    """A responder giving every recipient the same reply (``text`` as on the wire,
    ``status`` the enhanced status it starts with)."""
    reply = Reply.parse(code, text)
    assert reply.status == status, (reply, status)

    def respond(conn: FakeConnection, message: OutboundMessage) -> list[RecipientReply]:
        return [RecipientReply(r.delivery_id, reply, phase) for r in message.recipients]

    return respond


class FakeConnection:
    """One scripted SMTP session."""

    def __init__(self, connector: FakeConnector, info: SessionInfo) -> None:
        self.connector = connector
        self.info = info
        self.sent: list[OutboundMessage] = []
        self.closed = False
        self._usable = True

    @property
    def usable(self) -> bool:
        return self._usable and not self.closed

    async def send(self, message: OutboundMessage) -> list[RecipientReply]:
        assert not self.closed, "send on a closed connection"
        self.sent.append(message)
        self.connector.messages.append((self.info.host, message))
        self.connector.active_sends += 1
        self.connector.peak_sends = max(self.connector.peak_sends, self.connector.active_sends)
        try:
            if self.connector.send_delay is not None:
                await deferLater(self.connector.clock, self.connector.send_delay, lambda: None)
            elif self.connector.hang_sends:
                await Deferred()
        finally:
            self.connector.active_sends -= 1
        return self.connector.responder(self, message)

    async def close(self) -> None:
        self.closed = True


@dataclass
class FakeConnector:
    """Opens :class:`FakeConnection` objects; ``failures`` maps an IP to the
    ConnectionFailed its connection attempt raises."""

    clock: Clock
    responder: Responder = accept_all
    failures: dict[str, ConnectionFailed] = field(default_factory=dict)
    send_delay: float | None = None
    hang_sends: bool = False
    tls: str | None = "TLSv1.3"
    attempts: list[tuple[str, str, int, str]] = field(default_factory=list)
    connections: list[FakeConnection] = field(default_factory=list)
    messages: list[tuple[str, OutboundMessage]] = field(default_factory=list)
    active_sends: int = 0
    peak_sends: int = 0

    async def connect(self, host: str, ip: str, port: int, *, tls_policy: str,
                      helo: str, source: str = "") -> FakeConnection:
        self.attempts.append((host, ip, port, tls_policy))
        if ip in self.failures:
            raise self.failures[ip]
        conn = FakeConnection(self, SessionInfo(host=host, ip=ip, port=port, tls=self.tls))
        self.connections.append(conn)
        return conn

    def open_connections(self) -> int:
        return sum(1 for c in self.connections if not c.closed)


class FakeClassifier:
    """Classifies by the first word of a reply text found in ``table``, else by code."""

    def __init__(self, table: dict[str, ReplyClass] | None = None) -> None:
        self.table = table or {}
        self.calls: list[tuple[Any, Any, str]] = []

    def classify(self, code: int | str | None, status: str | None, text: str) -> ReplyClass:
        self.calls.append((code, status, text))
        for key, value in self.table.items():
            if key in text:
                return value
        permanent = str(code).startswith("5") if code is not None else None
        return ReplyClass(reason="onhold", hard=False, status=status, status_inferred=False,
                          rule=None, permanent=permanent, suppress=False)
