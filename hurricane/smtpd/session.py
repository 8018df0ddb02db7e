"""What one ESMTP server connection knows: its state, the client, the transaction.

Plain values with no I/O: :class:`ServerState` is the state machine of
:class:`~hurricane.smtpd.protocol.HardenedESMTP`; :class:`Session`,
:class:`Transaction`, :class:`Recipient` and :class:`Envelope` are what the
owner's hooks see; :func:`received_header` is the trace line the server
prepends to every message.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field

from twisted.internet.interfaces import ITransport

from hurricane.maildate import rfc5322_date
from hurricane.smtpd.address import Path

__all__ = ["Envelope", "Recipient", "ServerState", "Session", "Transaction",
           "is_loopback", "peer_ip", "received_header"]


class ServerState(enum.Enum):
    """Where a server connection is; what the next input byte means.

    COMMAND -> DATA (354) -> COMMAND (the final dot); COMMAND -> AUTH (an
    AUTH exchange started) -> COMMAND. A hook that has not decided yet puts
    the connection in WAITING (input paused and kept) and its answer puts it
    back where it was. Any state -> CLOSING (QUIT, a limit, a timeout:
    input is ignored from then on) -> CLOSED (the transport is gone).
    """

    #: Reading command lines.
    COMMAND = "command"
    #: Reading the client's lines of an AUTH exchange (RFC 4954).
    AUTH = "auth"
    #: Reading message content after the 354 reply.
    DATA = "data"
    #: A hook (validation, the store write) is deciding; input waits.
    WAITING = "waiting"
    #: Closing after the last reply; nothing more is read or answered.
    CLOSING = "closing"
    #: The connection is gone.
    CLOSED = "closed"


@dataclass
class Session:
    """What is known about the client of one connection.

    Args:
        peer: the client's IP address (or a transport description).
        helo: the HELO/EHLO argument, None before HELO/EHLO.
        esmtp: True after EHLO.
        tls: True once STARTTLS has completed its command.
        user: the authenticated user, if any.
    """

    peer: str
    helo: str | None = None
    esmtp: bool = False
    tls: bool = False
    user: str | None = None

    def snapshot(self) -> Session:
        """A copy, for a message's envelope (``dataclasses.replace`` costs
        a few µs more per message)."""
        return Session(**self.__dict__)


@dataclass(frozen=True)
class Recipient:
    """An accepted recipient.

    Args:
        path: the forward-path as the client gave it.
        params: the RCPT ESMTP parameters.
        info: whatever the owner's policy attached (e.g. a verified VERP
            token); only the owner that attached it reads it back.
    """

    path: Path
    params: Mapping[str, str | None] = field(default_factory=dict)
    info: object = None


@dataclass
class Transaction:
    """One MAIL ... DATA transaction in progress."""

    sender: Path
    params: Mapping[str, str | None]
    recipients: list[Recipient] = field(default_factory=list)


@dataclass(frozen=True)
class Envelope:
    """A complete transaction handed to the owner with the message bytes.

    Args:
        sender: the reverse-path.
        recipients: the accepted recipients, in RCPT order.
        session: a snapshot of the session (peer, HELO, TLS, user).
        received_at: when the final dot arrived (the injected clock).
        params: the MAIL ESMTP parameters.
    """

    sender: Path
    recipients: tuple[Recipient, ...]
    session: Session
    received_at: float
    params: Mapping[str, str | None] = field(default_factory=dict)


def peer_ip(transport: ITransport) -> str:
    """The client's address as text (the host of an IP address, else its repr)."""
    peer = transport.getPeer()
    host = getattr(peer, "host", None)
    return host if isinstance(host, str) else str(peer)


def is_loopback(ip: str) -> bool:
    """True for 127.0.0.0/8, ::1 and their IPv4-mapped forms."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


def received_header(envelope: Envelope, hostname: str, ident: int) -> bytes:
    """The Received header prepended to each message (RFC 5321 4.4, RFC 3848).

    Args:
        envelope: the transaction (its session names the client).
        hostname: our name.
        ident: the id to show (48 bits, printed as 12 hex digits).

    Returns:
        The header lines, CRLF-terminated.
    """
    s = envelope.session
    protocol = "ESMTP" if s.esmtp else "SMTP"
    if s.esmtp and s.tls:
        protocol += "S"
    if s.esmtp and s.user is not None:
        protocol += "A"
    ip = s.peer
    literal = f"IPv6:{ip}" if ":" in ip else ip
    # The HELO was validated (a domain or literal), the peer is an IP,
    # and recipients were parsed from ASCII lines without CR/LF.
    lines = [f"Received: from {s.helo} ([{literal}])",
             f"\tby {hostname} (Hurricane) with {protocol} id {ident:012x}"]
    if len(envelope.recipients) == 1:
        lines.append(f"\tfor {envelope.recipients[0].path};")
    else:
        lines[-1] += ";"
    lines.append("\t" + rfc5322_date(envelope.received_at))
    return ("\r\n".join(lines) + "\r\n").encode("ascii", "replace")
