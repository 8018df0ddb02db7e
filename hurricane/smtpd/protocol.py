"""HardenedESMTP: the ESMTP server protocol of Hurricane's listeners, owned here.

It is a plain ``twisted.internet.protocol.Protocol`` with an explicit state
machine (:class:`~hurricane.smtpd.session.ServerState`), not a subclass of
twisted.mail's ``ESMTP``: DESIGN.md ("Known traps in the libraries")
lists what the stock server gets wrong, and with all of it replaced nothing
of the stock class was left but its internal mode. What it guarantees:

- Bounded framing. Input is consumed one command at a time
  (:class:`~hurricane.smtpd.commands.LineBuffer`): a command line over the
  limit is refused (500 5.5.2), input with no line ending beyond
  ``max_unterminated`` is answered 500 5.5.6 and the connection closed.
- Safe PIPELINING. While a validation or the final store write is pending,
  the connection is WAITING: input already read stays buffered, and reading
  is paused (``pauseProducing``) as soon as more arrives, so pipelined
  transactions see every answer in order.
- STARTTLS. Bytes that arrived after the STARTTLS line were sent in clear
  text before the handshake (CVE-2011-0411): they are dropped, and the
  session (HELO, transaction, authentication) is forgotten (RFC 3207 4.2).
- HELO/EHLO arguments are validated before they can reach a Received header.
- DATA goes through :class:`hurricane.smtpd.data.DataReader`: CRLF.CRLF
  only, size and line limits enforced while reading.
- End of message: the owner's ``message_received`` returns the reply, and
  any failure answers 451 4.3.0 (never a permanent refusal because a
  database blinked).
- Every reply carries an enhanced status code; 5xx replies are counted and
  ``max_errors`` of them close the connection; an idle timeout (421 4.4.2)
  runs on the injected clock while the client is expected to speak;
  connection limits are enforced at the greeting.

Subclasses decide policy through three hooks, ``validate_sender``,
``validate_recipient`` and ``message_received``, which may return a value, a
Deferred or a coroutine, and may offer AUTH through ``do_AUTH``,
``auth_line`` and ``auth_aborted`` (with :meth:`SMTPChannel.enter_auth`
and :meth:`SMTPChannel.leave_auth`).
"""

from __future__ import annotations

import inspect
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import TypeVar, Union, cast

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IAddress,
    IOpenSSLServerConnectionCreator,
    IReactorTime,
    ITLSTransport,
)
from twisted.internet.protocol import ServerFactory
from twisted.logger import Logger

from hurricane.smtpd.address import Path, is_valid_helo
from hurricane.smtpd.channel import SMTPChannel
from hurricane.smtpd.commands import parse_mail, parse_rcpt
from hurricane.smtpd.data import DataReader
from hurricane.smtpd.limits import ConnectionLimiter, ServerLimits
from hurricane.smtpd.reply import TRY_LATER, Reply, ReplyError
from hurricane.smtpd.session import (
    Envelope,
    Recipient,
    ServerState,
    Session,
    Transaction,
    is_loopback,
    peer_ip,
    received_header,
)

__all__ = ["Envelope", "HardenedESMTP", "HardenedFactory", "Recipient", "SMTPChannel",
           "ServerState", "Session", "Transaction", "as_deferred", "is_loopback", "peer_ip"]

log = Logger()
#: Ids in our Received lines: unique enough to find a message in a log, not
#: a secret, so a seeded PRNG instead of an os.urandom call per message.
_received_ids = random.Random()

T = TypeVar("T")

#: What a hook may return: its answer, or a Deferred or coroutine of it.
#: (mypy takes a generic alias spelled with Union, not with ``|``.)
Decision = Union[T, Awaitable[T]]  # noqa: UP007


def as_deferred(fn: Callable[..., Decision[T]], *args: object) -> Deferred[T]:
    """Call ``fn`` and return its result as a Deferred (value, Deferred or coroutine)."""
    try:
        result = fn(*args)
    except BaseException:
        return defer.fail()
    if isinstance(result, Deferred):
        return result
    if inspect.iscoroutine(result):
        return Deferred.fromCoroutine(result)
    return defer.succeed(cast(T, result))


class HardenedESMTP(SMTPChannel):
    """An ESMTP server protocol safe to expose; subclass it and fill in the hooks.

    The commands and what they mean; the connection underneath (state,
    framing, flow control, replies, limits) is :class:`SMTPChannel`'s.

    Args:
        factory: the :class:`HardenedFactory` that built it (limits, clock,
            host name, TLS context, connection counter).
    """

    factory: HardenedFactory
    #: ESMTP parameters accepted on MAIL besides SIZE and BODY.
    extra_mail_parameters: frozenset[str] = frozenset()

    def __init__(self, factory: HardenedFactory) -> None:
        super().__init__(factory)
        self.tls_context = factory.tls_context
        self.transaction: Transaction | None = None

    @property
    def can_start_tls(self) -> bool:
        """True when STARTTLS can work: a TLS context and a transport that can start TLS."""
        return self.tls_context is not None and ITLSTransport.providedBy(self.transport)

    # -- commands -----------------------------------------------------------

    def ehlo_keywords(self) -> list[str]:
        """The EHLO extension keywords to advertise; subclasses may add to them."""
        keywords = [
            "PIPELINING",
            f"SIZE {self.limits.max_message_size}",
            "8BITMIME",
            "ENHANCEDSTATUSCODES",
        ]
        if self.can_start_tls and not self.session.tls:
            keywords.append("STARTTLS")
        return keywords

    def _hello(self, rest: str, esmtp: bool) -> None:
        if not is_valid_helo(rest):
            self.send_reply(Reply(501, "5.5.4", "Syntax: HELO/EHLO domain or address literal"))
            return
        self.session = replace(self.session, helo=rest, esmtp=esmtp)
        self.transaction = None
        greeting = f"{self.hostname} Hello [{self.session.peer}]"
        if esmtp:
            self.send_lines(250, [greeting, *self.ehlo_keywords()])
        else:
            self.send_lines(250, [greeting])

    def do_HELO(self, rest: str) -> None:
        """HELO domain."""
        self._hello(rest, esmtp=False)

    def do_EHLO(self, rest: str) -> None:
        """EHLO domain: the extension list."""
        self._hello(rest, esmtp=True)

    def do_MAIL(self, rest: str) -> None:
        """MAIL FROM:<path> [SIZE=n] [BODY=...]."""
        if self.session.helo is None:
            self.send_reply(Reply(503, "5.5.1", "Error: send HELO/EHLO first"))
            return
        if self.transaction is not None:
            self.send_reply(Reply(503, "5.5.1", "Error: nested MAIL command"))
            return
        try:
            path, params = parse_mail(rest, self.limits.max_message_size,
                                      self.extra_mail_parameters)
        except ReplyError as e:
            self.send_reply(e.reply)
            return

        def done(reply: Reply) -> None:
            if reply.positive:
                self.transaction = Transaction(path, params)
            self.send_reply(reply)

        self.hook(done, self.validate_sender, path, params)

    def do_RCPT(self, rest: str) -> None:
        """RCPT TO:<path>."""
        tx = self.transaction
        if tx is None:
            self.send_reply(Reply(503, "5.5.1", "Error: need MAIL command"))
            return
        try:
            path, params = parse_rcpt(rest)
        except ReplyError as e:
            self.send_reply(e.reply)
            return
        if len(tx.recipients) >= self.limits.max_recipients:
            self.send_reply(Reply(452, "4.5.3", "Error: too many recipients"))
            return

        def done(result: Recipient | Reply) -> None:
            if isinstance(result, Recipient):
                tx.recipients.append(result)
                self.send_reply(Reply(250, "2.1.5", "Ok"))
            else:
                self.send_reply(result)

        self.hook(done, self.validate_recipient, path, params)

    def do_DATA(self, rest: str) -> None:
        """DATA: switch to the DATA reader."""
        if rest:
            self.send_reply(Reply(501, "5.5.4", "Syntax: DATA"))
            return
        tx = self.transaction
        if tx is None:
            self.send_reply(Reply(503, "5.5.1", "Error: need MAIL command"))
            return
        if not tx.recipients:
            # RFC 2920 3.1: pipelined RCPTs may all have failed.
            self.send_reply(Reply(554, "5.5.1", "Error: no valid recipients"))
            return
        self.read_data(DataReader(
            self.limits.max_message_size,
            self.limits.max_data_line_length,
            self.limits.reject_bare_line_endings,
        ))
        self.send_lines(354, ["End data with <CR><LF>.<CR><LF>"])

    def data_finished(self, reader: DataReader) -> None:
        """The final dot: hand the message to :meth:`message_received` (or refuse it)."""
        tx = self.transaction
        self.transaction = None
        assert tx is not None
        if reader.failure is not None:
            log.info("refused message from {peer}: {reply}", peer=self.session.peer,
                     reply=str(reader.failure))
            self.send_reply(reader.failure)
            return
        now = self.factory.clock.seconds()
        envelope = Envelope(tx.sender, tuple(tx.recipients), self.session.snapshot(), now,
                            tx.params)
        data = self.received_header(envelope) + reader.message()
        self.wait_for(as_deferred(self.message_received, envelope, data), self.send_reply)

    def do_RSET(self, rest: str) -> None:
        """RSET: abandon the transaction."""
        self.transaction = None
        self.send_reply(Reply(250, "2.0.0", "Ok"))

    def do_NOOP(self, rest: str) -> None:
        """NOOP."""
        self.send_reply(Reply(250, "2.0.0", "Ok"))

    def do_QUIT(self, rest: str) -> None:
        """QUIT."""
        self.send_reply(Reply(221, "2.0.0", "Bye"))
        self.close()

    def do_VRFY(self, rest: str) -> None:
        """VRFY is disabled: it only helps address harvesting."""
        self.send_reply(Reply(502, "5.5.1", "Error: VRFY command is disabled"))

    def do_EXPN(self, rest: str) -> None:
        """EXPN is disabled."""
        self.send_reply(Reply(502, "5.5.1", "Error: EXPN command is disabled"))

    def do_HELP(self, rest: str) -> None:
        """HELP."""
        self.send_reply(Reply(214, "2.0.0", "See RFC 5321"))

    def do_STARTTLS(self, rest: str) -> None:
        """STARTTLS: drop clear-text input sent after the command, forget the session."""
        if rest:
            self.send_reply(Reply(501, "5.5.4", "Syntax: STARTTLS"))
            return
        if self.session.tls:
            self.send_reply(Reply(503, "5.5.1", "Error: TLS already active"))
            return
        context = self.tls_context
        if context is None or not self.can_start_tls:
            self.send_reply(Reply(454, "4.7.0", "TLS not available"))
            return
        self.send_reply(Reply(220, "2.0.0", "Ready to start TLS"))
        self.flush_replies()  # in clear text, before the handshake
        # CVE-2011-0411: whatever followed the command in this read was sent
        # in clear text before the handshake; it must not run after it.
        self.input_buffer.clear()
        self.writer.start_tls(context)
        # RFC 3207 4.2: discard all knowledge obtained from the client.
        self.session = Session(peer=self.session.peer, tls=True)
        self.transaction = None
        self.tls_started()

    def tls_started(self) -> None:
        """Hook: called after STARTTLS reset the session (forget authentication here)."""

    def do_AUTH(self, rest: str) -> None:
        """AUTH: not offered by the base server."""
        self.send_reply(Reply(503, "5.5.1", "Error: authentication not enabled"))

    # -- the Received header and the owner's hooks ----------------------------

    def hook(self, on_result: Callable[[T], None], fn: Callable[..., object],
             *args: object) -> None:
        """Call an owner's hook and hand its answer to ``on_result``.

        An answer given at once (the usual case for MAIL and RCPT) is handed
        over at once, as :meth:`wait_for` would, without a Deferred; one
        still to come (a Deferred or coroutine) goes through :meth:`wait_for`.
        """
        try:
            result = fn(*args)
        except BaseException:
            self.wait_for(defer.fail(), on_result)
            return
        if isinstance(result, Deferred) or inspect.iscoroutine(result):
            later: Deferred[T] = as_deferred(lambda: cast(Decision[T], result))
            self.wait_for(later, on_result)
        else:
            self._answer(cast(T, result), on_result)

    def received_header(self, envelope: Envelope) -> bytes:
        """The Received header prepended to each message (RFC 5321 4.4, RFC 3848)."""
        return received_header(envelope, self.hostname, _received_ids.getrandbits(48))

    def validate_sender(self, sender: Path, params: Mapping[str, str | None]
                        ) -> Decision[Reply]:
        """Decide MAIL FROM.

        Returns:
            A :class:`Reply` (2xx accepts), or a Deferred/coroutine of one.
        """
        return Reply(250, "2.1.0", "Ok")

    def validate_recipient(self, recipient: Path, params: Mapping[str, str | None]
                           ) -> Decision[Recipient | Reply]:
        """Decide RCPT TO.

        Returns:
            A :class:`Recipient` to accept, a :class:`Reply` to refuse, or a
            Deferred/coroutine of either.
        """
        return Reply(550, "5.1.1", "Error: recipient address rejected")

    def message_received(self, envelope: Envelope, data: bytes) -> Decision[Reply]:
        """Take a complete message (Received header prepended).

        Returns:
            The reply for the final dot, or a Deferred/coroutine of it. A
            failure is answered 451 4.3.0.
        """
        return TRY_LATER


class HardenedFactory(ServerFactory["HardenedESMTP"]):
    """Builds :class:`HardenedESMTP` protocols and counts their connections.

    Not ``noisy``: the listener logs its address once (service.py); a
    "Starting factory" line per start and stop says nothing more.

    Args:
        hostname: name in the greeting, EHLO reply and Received header.
        limits: the listener's limits.
        clock: the injected reactor time.
        tls_context: a server context factory for STARTTLS, or None.
    """

    protocol: type[HardenedESMTP] = HardenedESMTP

    noisy = False

    def __init__(self, hostname: str, limits: ServerLimits, clock: IReactorTime,
                 tls_context: IOpenSSLServerConnectionCreator | None = None) -> None:
        self.hostname = hostname
        self.limits = limits
        self.clock = clock
        self.tls_context = tls_context
        self.connections = ConnectionLimiter(limits.max_connections_per_ip,
                                             limits.max_connections)

    def buildProtocol(self, addr: IAddress | None) -> HardenedESMTP:
        """A new protocol bound to this factory."""
        return self.protocol(self)

    def counts_per_ip(self, ip: str) -> bool:
        """Whether a connection from ``ip`` counts against ``max_connections_per_ip``.

        Every connection does here; a listener with clients of its own
        (submission's trusted networks) exempts them. The global
        ``max_connections`` applies to all.
        """
        return True
