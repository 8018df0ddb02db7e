"""The contract between the delivery scheduler and the ESMTP client.

The scheduler (``queue.py``) decides *what* to send *where*; the client
(``client.py``) speaks SMTP to one host and turns every reply into data. They
meet here, so each side can be tested alone: the scheduler against a fake
:class:`IConnector`, the client on a ``StringTransport``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from hurricane.decisions import delivered
from hurricane.outcome import Phase, Reason, TlsPolicy
from hurricane.smtp_reply import Reply

__all__ = [
    "ConnectionFailed",
    "IConnector",
    "ISMTPConnection",
    "OutboundMessage",
    "OutboundRecipient",
    "RecipientReply",
    "Reply",
    "SessionInfo",
    "TransportFacts",
]


@dataclass(frozen=True)
class OutboundRecipient:
    """One RCPT of a transaction."""

    delivery_id: int
    address: str  # as it goes on the wire (domain already IDNA-encoded)
    #: RFC 3461 ORCPT value sent when the server offers DSN (``rfc822;addr``).
    orcpt: str | None = None


@dataclass(frozen=True)
class OutboundMessage:
    """One SMTP transaction: one MAIL FROM, some RCPTs, one DATA."""

    mail_from: str  # the VERP return path ("" = null sender)
    recipients: tuple[OutboundRecipient, ...]
    #: Final message bytes (token header added, DKIM-signed); line endings
    #: may be LF or CRLF: the client's DATA encoder normalises them.
    body: bytes
    #: RFC 3461 ENVID sent when the server offers DSN.
    envid: str | None = None
    #: True when the body has octets > 127 (BODY=8BITMIME when offered).
    eight_bit: bool = False
    #: True when an address needs SMTPUTF8.
    smtputf8: bool = False


@dataclass(frozen=True)
class RecipientReply:
    """What happened to one recipient of a transaction.

    ``reply`` is the reply that decided it: the RCPT reply when RCPT was
    refused, else the final reply after the dot (or the MAIL/DATA reply that
    failed the whole transaction). ``reply`` is None when the connection
    failed before a reply (``error`` then says why).
    """

    delivery_id: int
    reply: Reply | None
    #: protocol phase of the deciding reply.
    phase: Phase
    error: str | None = None

    @property
    def delivered(self) -> bool:
        """The remote took responsibility (:func:`hurricane.decisions.delivered`)."""
        return delivered(self.phase, self.reply)


@dataclass(frozen=True)
class SessionInfo:
    """Facts about one connection, recorded with every attempt."""

    host: str  # the MX name (or route host)
    ip: str
    port: int
    tls: str | None = None  # "TLSv1.3" when encrypted
    tls_verified: bool = False
    greeting: str | None = None
    extensions: tuple[str, ...] = ()
    #: Our local address the receiver saw (issue 21).
    source_ip: str | None = None
    #: The TLS policy that applied and its result (``tls_*`` of
    #: :class:`~hurricane.model.AttemptResult`), set by the dialer.
    tls_policy_type: str | None = None
    tls_policy_id: str | None = None
    tls_result: str | None = None


@dataclass(frozen=True)
class TransportFacts:
    """What an attempt records about its transport (issue 21): the source
    address, the TLS policy (``sts`` or ``no-policy-found``, the MTA-STS
    ``MODE ID``) and the TLS result (``success`` or an RFC 8460 type)."""

    source_ip: str | None = None
    tls_policy_type: str | None = None
    tls_policy_id: str | None = None
    tls_result: str | None = None


class ConnectionFailed(Exception):
    """The connection could not be set up or the session could not start.

    Attributes:
        phase: connect, greeting, ehlo, starttls, timeout.
        reply: the server reply that failed it, if any.
        temporary: False only when the server's reply says permanent
            (a 5xx greeting); TLS policy failures are temporary.
        reason: the reason chosen by the client for local failures
            (``failedstarttls``, ``securityerror``, ``networkerror``...), or None.
    """

    def __init__(
        self, message: str, phase: Phase, reply: Reply | None = None, temporary: bool = True,
        reason: Reason | None = None,
    ) -> None:
        super().__init__(message)
        # the words are accepted as text too (tests, other connectors)
        self.phase = Phase(phase)
        self.reply = reply
        self.temporary = temporary
        self.reason = None if reason is None else Reason(reason)


class ISMTPConnection(Protocol):
    """One open, greeted (and, per policy, encrypted) ESMTP session."""

    info: SessionInfo

    async def send(self, message: OutboundMessage) -> list[RecipientReply]:
        """Run one transaction (RSET first when it is not the first one).

        Never raises for SMTP replies: every recipient gets a
        :class:`RecipientReply`. A connection lost mid-way yields replies with
        ``reply=None`` and ``error`` set for the recipients not yet decided,
        and marks the connection unusable.
        """

    @property
    def usable(self) -> bool:
        """True while another transaction may be sent on this connection."""

    async def close(self) -> None:
        """QUIT (best effort) and close the transport."""


class IConnector(Protocol):
    """Opens connections; the scheduler holds one and never sees sockets."""

    async def connect(
        self, host: str, ip: str, port: int, *, tls_policy: TlsPolicy, helo: str,
        source: str = "",
    ) -> ISMTPConnection:
        """Connect, read the greeting, EHLO (HELO fallback), STARTTLS per policy
        (:class:`~hurricane.outcome.TlsPolicy`; ``verify`` checks the
        certificate and ``host`` with service-identity), re-EHLO after TLS.

        ``source`` is the local address to connect from ("" = the
        connector's default): a sending pool (issue 21) picks one per
        connection, and the connection keeps it.

        Raises:
            ConnectionFailed: with the phase, reply and reason.
        """
