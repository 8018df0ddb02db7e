"""The outbound ESMTP client: one host, one session, replies turned into data.

Layers, bottom up:

- :class:`SMTPClientProtocol` speaks the wire: it sends command lines,
  parses (multi-line) replies with bounded line and reply sizes, hands each
  reply to the oldest waiter in order (which is all RFC 2920 pipelining
  needs), arms one reply timer on an injected clock, and streams message
  bodies through our own :class:`~hurricane.outbound.dataenc.DataEncoder`.
  It never decides anything.
- :class:`SMTPConnection` (an :class:`ISMTPConnection`) runs the session:
  greeting, EHLO/HELO, STARTTLS per policy, then transactions, and turns
  every outcome into :class:`Reply` / :class:`RecipientReply` values.
- :class:`Connector` (an :class:`IConnector`) opens TCP connections through
  endpoints and hands back greeted, possibly encrypted sessions.

We do not subclass ``twisted.mail.smtp.ESMTPClient``: its one message per
connection structure, its dot-stuffing (misses a "." at a 16 KiB boundary
and on the first line, turns CRLF into CR CR LF) and its STARTTLS handling
(text injected after the 220 is read as the post-TLS EHLO reply) are the
traps listed in DESIGN.md.

The reactor is always injected; this module never imports the global one.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, cast

from service_identity import CertificateError, VerificationError
from twisted.internet import ssl
from twisted.internet.defer import Deferred, fail
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.interfaces import (
    IDelayedCall,
    IOpenSSLClientConnectionCreator,
    IPushProducer,
    IReactorTCP,
    IReactorTime,
    ITCPTransport,
    ITLSTransport,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from hurricane.config import TimeoutsConfig
from hurricane.netio import IStreamTransport, StreamWriter
from hurricane.outbound.dataenc import DataEncoder
from hurricane.outbound.interface import (
    ConnectionFailed,
    OutboundMessage,
    OutboundRecipient,
    RecipientReply,
    Reply,
    SessionInfo,
)
from hurricane.outbound.tls import IOpenSSLTrustRoot, client_tls_options, trust_roots_with
from hurricane.outcome import Phase, Reason, TlsPolicy
from hurricane.xtext import xtext_encode

__all__ = [
    "Connector",
    "SMTPClientProtocol",
    "SMTPConnection",
    "SessionError",
]

log = Logger()

#: Longest reply line we accept (DESIGN.md limits: unterminated input over
#: 4 KiB is an attack or a broken peer, not a reply).
MAX_REPLY_LINE: Final = 4096
#: Longest multi-line reply, all lines together.
MAX_REPLY_SIZE: Final = 64 * 1024
#: Replies nobody asked for that we keep (an early 421, a greeting that
#: arrived before the waiter): more than this is a misbehaving peer.
MAX_UNCLAIMED: Final = 8
#: Upper bound on waiting for the reply to QUIT.
QUIT_TIMEOUT: Final = 5.0
#: Bodies up to this size go out in one write; bigger ones are streamed in
#: chunks of this size by a push producer, so a 25 MiB body is never
#: encoded (and copied) as a whole.
BODY_CHUNK: Final = 64 * 1024

#: Reply codes to EHLO after which we retry with HELO (RFC 5321 3.2).
_HELO_FALLBACK_CODES: Final = frozenset({500, 502})

_UNSAFE_IN_ADDRESS = re.compile(r"[\x00-\x1f\x7f<>]")


def _policy(value: TlsPolicy | str) -> TlsPolicy:
    """The TLS policy a caller named (a member, or its word).

    Raises:
        ValueError: not a policy.
    """
    try:
        return TlsPolicy(value)
    except ValueError:
        raise ValueError(f"unknown TLS policy {value!r}") from None


def _safe_address(address: str) -> bool:
    """True when ``address`` can go between angle brackets on a command line.

    CR, LF and other controls would let an address inject commands (the
    scheduler should never hand us one; this is the last guard).
    """
    return _UNSAFE_IN_ADDRESS.search(address) is None


class SessionError(Exception):
    """The session cannot go on: timeout, garbage, connection lost.

    Args:
        message: what happened, for the recipient's ``error`` field.
        phase: protocol phase that was waiting when it happened.
        timed_out: True for a timeout (recipients then get phase "timeout").
        reason: classifier reason for a :class:`ConnectionFailed`.
    """

    def __init__(
        self, message: str, phase: Phase, *, timed_out: bool = False,
        reason: Reason = Reason.networkerror, partial: Sequence[Reply] = (),
    ) -> None:
        super().__init__(message)
        self.phase = Phase(phase)
        self.timed_out = timed_out
        self.reason = Reason(reason)
        #: Replies of a pipelined group that did arrive before the failure.
        self.partial = tuple(partial)

    def for_group(self, phase: Phase, partial: Sequence[Reply]) -> SessionError:
        """The same error as seen by one group of pipelined commands.

        Args:
            phase: the phase of the reply the group was waiting for.
            partial: the replies the group did get.

        Returns:
            a copy carrying ``phase`` and ``partial``.
        """
        return SessionError(str(self), phase, timed_out=self.timed_out, reason=self.reason,
                            partial=partial)


class _ServiceClosing(Exception):
    """A 421 arrived: the server is closing the transmission channel."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.render())
        self.reply = reply


@dataclass
class _Waiter:
    """The replies expected for one group of (pipelined) commands.

    One Deferred per group rather than per reply: a pipelined transaction
    then costs one coroutine resumption instead of one per command, which
    is most of the client's CPU per message.
    """

    deferred: Deferred[list[Reply]]
    #: (phase, timeout) of each reply, in order.
    expected: Sequence[tuple[Phase, float]]
    replies: list[Reply] = field(default_factory=list)
    #: The command was STARTTLS: a 220 must drop everything buffered after it.
    tls_start: bool = False

    @property
    def current(self) -> tuple[Phase, float]:
        """(phase, timeout) of the reply awaited now."""
        return self.expected[len(self.replies)]


class SMTPClientProtocol(Protocol):
    """The wire half of the client: commands out, replies in, in order.

    Every command registers a waiter; replies are matched to waiters in
    order, so pipelined commands need nothing special. One timer runs for
    the oldest waiter (each reply restarts it for the next one), with the
    per-phase timeout the caller chose.

    Args:
        clock: where timers are scheduled (the reactor, or a ``task.Clock``).
    """

    transport: IStreamTransport | None

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._buffer = bytearray()
        self._reply_lines: list[str] = []
        self._reply_code = 0
        self._reply_size = 0
        self._waiters: deque[_Waiter] = deque()
        self._unclaimed: deque[Reply] = deque()
        self._timer: IDelayedCall | None = None
        self._producer: _BodyProducer | None = None
        #: Every write, STARTTLS, close and abort goes through it (see
        #: hurricane.netio); built when the connection is made.
        self._writer: StreamWriter | None = None
        #: Set once the session is dead; every later request fails with it.
        self.error: SessionError | None = None
        #: Why the transport went away (a TLS verification failure shows here).
        self.lost_reason: Failure | None = None
        #: The server said 421 (or we gave up): no further transactions.
        self.closing = False
        #: Between a 220 to STARTTLS and the start of TLS, input is dropped.
        self._discarding = False
        self._lost_waiters: list[Deferred[None]] = []

    # -- state ---------------------------------------------------------------

    @property
    def alive(self) -> bool:
        """True while commands may still be sent."""
        return self.error is None and bool(self.connected) and not self.closing

    # -- transport events ----------------------------------------------------

    def connectionMade(self) -> None:  # noqa: N802 (Twisted API)
        """Route everything sent on this connection through one writer."""
        assert self.transport is not None  # set by makeConnection
        self._writer = StreamWriter(self.transport)

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 (Twisted API)
        """Split input into reply lines; bounded, and re-entrancy safe.

        Args:
            data: bytes from the transport.
        """
        if self.error is not None or self._discarding:
            return
        self._buffer += data
        # The buffer is re-read on every turn: a reply handler may clear it
        # (STARTTLS) or kill the session, and then the rest must not be read.
        while self.error is None and not self._discarding:
            end = self._buffer.find(b"\n", 0, MAX_REPLY_LINE + 2)
            if end < 0:
                if len(self._buffer) > MAX_REPLY_LINE:
                    self._protocol_error(f"reply line longer than {MAX_REPLY_LINE} octets")
                return
            line = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            if line.endswith(b"\r"):
                line = line[:-1]
            if len(line) > MAX_REPLY_LINE:
                self._protocol_error(f"reply line longer than {MAX_REPLY_LINE} octets")
                return
            self._line_received(line)

    def connectionLost(self, reason: Failure = connectionDone) -> None:  # noqa: N802 (Twisted API)
        """Fail everything still waiting.

        Args:
            reason: why the transport went away.
        """
        self.connected = False
        self.lost_reason = reason
        if self._writer is not None:
            self._writer.connection_lost()
        waiters, self._lost_waiters = self._lost_waiters, []
        for d in waiters:
            d.callback(None)
        if self.error is None:
            phase = self._waiters[0].current[0] if self._waiters else (
                Phase.data if self._producer is not None else Phase.connect)
            message = f"connection lost: {reason.getErrorMessage()}"
            self._fail_all(SessionError(message, phase))

    def when_lost(self) -> Deferred[None]:
        """A Deferred that fires once the transport is gone (at once if it is)."""
        d: Deferred[None] = Deferred()
        if self.transport is not None and not self.connected:
            d.callback(None)
        else:
            self._lost_waiters.append(d)
        return d

    # -- reply parsing -------------------------------------------------------

    def _line_received(self, line: bytes) -> None:
        # RFC 5321 4.2: three digits, first one 2..5, then SP, "-" or nothing.
        sep = line[3:4]
        if (
            len(line) < 3 or not line[:3].isdigit() or line[:1] not in b"2345"
            or sep not in (b"", b" ", b"-")
        ):
            self._protocol_error(f"garbage reply: {line[:80]!r}")
            return
        code = int(line[:3])
        if not self._reply_lines:
            self._reply_code = code
        # A continuation line with another code is tolerated (the first
        # line's code wins), as most MTAs do.
        self._reply_size += len(line)
        if self._reply_size > MAX_REPLY_SIZE:
            self._protocol_error(f"reply longer than {MAX_REPLY_SIZE} octets")
            return
        self._reply_lines.append(line[4:].decode("utf-8", "replace"))
        if sep == b"-":
            return
        text = "\n".join(self._reply_lines)
        reply = Reply.parse(self._reply_code, text)
        self._reply_lines = []
        self._reply_size = 0
        self._dispatch(reply)

    def _dispatch(self, reply: Reply) -> None:
        if reply.code == 421:
            # RFC 5321 3.8: the server is going away; nothing more after this.
            self.closing = True
        if not self._waiters:
            # Unsolicited (an early 421): keep it for the next waiter.
            self._unclaimed.append(reply)
            if len(self._unclaimed) > MAX_UNCLAIMED:
                self._protocol_error("too many unsolicited replies")
            return
        waiter = self._waiters[0]
        waiter.replies.append(reply)
        if waiter.tls_start and reply.code == 220:
            # Trap (DESIGN.md): anything after the 220 arrived in plain text
            # before the handshake; a man in the middle can put a fake EHLO
            # reply there. Drop it now, and drop input until TLS is started.
            self._buffer.clear()
            self._discarding = True
        # A 421 ends the group early: no further replies will come.
        if len(waiter.replies) < len(waiter.expected) and reply.code != 421:
            self._rearm()
            return
        self._waiters.popleft()
        self._rearm()
        waiter.deferred.callback(waiter.replies)

    # -- timers --------------------------------------------------------------

    def _rearm(self) -> None:
        """(Re)start the reply timer for the reply awaited now, if any."""
        timer = self._timer
        if not self._waiters:
            if timer is not None and timer.active():
                timer.cancel()
            self._timer = None
            return
        timeout = self._waiters[0].current[1]
        if timer is not None and timer.active():
            # Cheaper than cancel + callLater: a later time is applied lazily.
            timer.reset(timeout)
        else:
            self._timer = self._clock.callLater(timeout, self._timed_out)

    def _timed_out(self) -> None:
        self._timer = None
        phase = self._waiters[0].current[0] if self._waiters else Phase.connect
        log.info("timeout waiting for the {phase} reply", phase=phase.value)
        self.fail(SessionError(
            f"timeout waiting for the {phase.value} reply", phase, timed_out=True,
        ))

    # -- failure -------------------------------------------------------------

    def _protocol_error(self, message: str) -> None:
        phase = self._waiters[0].current[0] if self._waiters else Phase.connect
        log.warn("protocol error from server: {message}", message=message)
        self.fail(SessionError(message, phase, reason=Reason.networkerror))

    def _fail_all(self, error: SessionError) -> None:
        self.error = error
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        waiters, self._waiters = self._waiters, deque()
        for waiter in waiters:
            waiter.deferred.errback(error.for_group(waiter.current[0], waiter.replies))
        if self._producer is not None:
            self._producer.abort(error)

    def fail(self, error: SessionError) -> None:
        """Kill the session: fail every waiter with ``error`` and abort.

        Args:
            error: what every pending request fails with.
        """
        if self.error is not None:
            return
        self._fail_all(error)
        if self._writer is not None and self.connected:
            self._writer.abort()

    # -- requests ------------------------------------------------------------

    def expect_group(
        self, expected: Sequence[tuple[Phase, float]], *, tls_start: bool = False,
    ) -> Deferred[list[Reply]]:
        """Wait for the next replies, in order.

        Args:
            expected: (phase, timeout) for each reply; each reply restarts
                the timer with the next one's timeout.
            tls_start: the group is a lone STARTTLS: a 220 drops buffered
                input (see :meth:`_dispatch`).

        Returns:
            a Deferred firing with the replies (fewer when one is a 421), or
            failing with :class:`SessionError` whose ``partial`` holds the
            replies that did arrive.
        """
        if self.error is not None:
            return fail(self.error.for_group(expected[0][0], ()))
        waiter = _Waiter(Deferred(), expected, tls_start=tls_start)
        if self._unclaimed and not self._waiters:
            # Replies that came before anyone asked (an early 421).
            while self._unclaimed and len(waiter.replies) < len(expected):
                reply = self._unclaimed.popleft()
                waiter.replies.append(reply)
                if reply.code == 421:
                    break
            if len(waiter.replies) == len(expected) or waiter.replies[-1].code == 421:
                waiter.deferred.callback(waiter.replies)
                return waiter.deferred
        self._waiters.append(waiter)
        if len(self._waiters) == 1:
            self._rearm()
        return waiter.deferred

    def expect(self, phase: Phase, timeout: float) -> Deferred[Reply]:
        """Wait for the next reply (the greeting, or the one after the dot).

        Args:
            phase: protocol phase, for errors and logs.
            timeout: seconds before the session is killed.

        Returns:
            a Deferred firing with the reply, or failing with
            :class:`SessionError`.
        """
        return self.expect_group([(phase, timeout)]).addCallback(_first)

    def command(
        self, line: bytes, phase: Phase, timeout: float, *, tls_start: bool = False,
    ) -> Deferred[Reply]:
        """Send one command line and wait for its reply.

        Args:
            line: the command, without CRLF.
            phase: protocol phase, for errors and logs.
            timeout: seconds to wait for the reply.
            tls_start: the command is STARTTLS: a 220 drops buffered input.

        Returns:
            a Deferred firing with the reply.
        """
        return self.commands([(line, phase, timeout)], tls_start=tls_start).addCallback(_first)

    def commands(
        self, items: Sequence[tuple[bytes, Phase, float]], *, tls_start: bool = False,
    ) -> Deferred[list[Reply]]:
        """Send several command lines in one write (RFC 2920 pipelining).

        Args:
            items: (command line without CRLF, phase, timeout) per command.
            tls_start: the (single) command is STARTTLS.

        Returns:
            as :meth:`expect_group`.
        """
        d = self.expect_group([(phase, timeout) for _, phase, timeout in items],
                              tls_start=tls_start)
        if self.error is None:
            self.write_raw(b"".join([line + b"\r\n" for line, _, _ in items]))
        return d

    def write_raw(self, data: bytes) -> None:
        """Write bytes as they are (for the lone ``.\\r\\n`` of RFC 2920).

        Args:
            data: octets to send.
        """
        if self.error is None and self.connected and self._writer is not None:
            self._writer.write(data)

    def start_tls(self, options: IOpenSSLClientConnectionCreator) -> None:
        """Start TLS now, with nothing of the plain-text session carried over.

        Args:
            options: client TLS options (see :mod:`hurricane.outbound.tls`).

        Raises:
            SessionError: when the transport cannot do TLS.
        """
        self._buffer.clear()
        self._unclaimed.clear()
        self._reply_lines = []
        self._reply_size = 0
        if ITLSTransport(self.transport, None) is None or self._writer is None:
            raise SessionError("transport cannot start TLS", Phase.starttls,
                               reason=Reason.failedstarttls)
        self._writer.start_tls(options)
        self._discarding = False

    def send_body(self, body: bytes, block_timeout: float) -> Deferred[None]:
        """Send a message body, encoded, and the terminating dot.

        Args:
            body: the message as given (any line endings).
            block_timeout: seconds the transport may stay stalled (RFC 5321
                4.5.3.2.5 "data block").

        Returns:
            a Deferred firing once everything is handed to the transport.
        """
        if self.error is not None:
            return fail(self.error)
        if len(body) <= BODY_CHUNK:
            # The common case (a few KB): one write, no producer round trips.
            encoder = DataEncoder()
            self.write_raw(encoder.feed(body) + encoder.finish())
            done: Deferred[None] = Deferred()
            done.callback(None)
            return done
        producer = _BodyProducer(self, body, self._clock, block_timeout)
        self._producer = producer
        producer.start()
        return producer.done

    def _producer_done(self, producer: _BodyProducer) -> None:
        if self._producer is producer:
            self._producer = None

    def disconnect(self) -> None:
        """Close the transport politely (after pending writes) and stop timers."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self.closing = True
        if self._writer is not None and self.connected:
            self._writer.lose_connection()


@implementer(IPushProducer)
class _BodyProducer:
    """Streams a big body through a :class:`DataEncoder` in chunks.

    A push producer: the transport pauses us when its buffer is full and
    resumes us when it drains, so memory stays at about one chunk plus the
    transport buffer, and the body is read through a memoryview, not copied.

    Args:
        protocol: the owner (for the transport and for failures).
        body: the message.
        clock: for the data block timer.
        block_timeout: seconds without progress before giving up.
    """

    def __init__(
        self, protocol: SMTPClientProtocol, body: bytes, clock: IReactorTime,
        block_timeout: float,
    ) -> None:
        self._protocol = protocol
        self._view = memoryview(body)
        self._offset = 0
        self._encoder = DataEncoder()
        self._clock = clock
        self._block_timeout = block_timeout
        self._timer: IDelayedCall | None = None
        self._paused = False
        self._finished = False
        self.done: Deferred[None] = Deferred()

    def start(self) -> None:
        """Register with the transport and start writing."""
        transport = self._protocol.transport
        assert transport is not None  # a body is sent on a live connection
        transport.registerProducer(self, True)
        self.resumeProducing()

    def _arm(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = self._clock.callLater(self._block_timeout, self._stalled)

    def _stalled(self) -> None:
        self._timer = None
        self._protocol.fail(SessionError(
            "timeout sending the message body", Phase.data, timed_out=True,
        ))

    def resumeProducing(self) -> None:  # noqa: N802 (Twisted API)
        """Write chunks until the transport pushes back or the body ends."""
        self._paused = False
        transport = self._protocol.transport
        assert transport is not None  # registered by start() on a live connection
        while not self._paused and not self._finished:
            # Every chunk handed over is progress: restart the block timer.
            self._arm()
            if self._offset >= len(self._view):
                self._protocol.write_raw(self._encoder.finish())
                self._end()
                self.done.callback(None)
                return
            chunk = bytes(self._view[self._offset : self._offset + BODY_CHUNK])
            self._offset += BODY_CHUNK
            data = self._encoder.feed(chunk)
            if data:
                self._protocol.write_raw(data)

    def pauseProducing(self) -> None:  # noqa: N802 (Twisted API)
        """The transport's buffer is full."""
        self._paused = True

    def stopProducing(self) -> None:  # noqa: N802 (Twisted API)
        """The transport went away."""
        self.abort(SessionError("connection lost while sending the body", Phase.data))

    def abort(self, error: SessionError) -> None:
        """Stop for good and fail :attr:`done`.

        Args:
            error: the failure to report.
        """
        if self._finished:
            return
        self._end()
        self.done.errback(error)

    def _end(self) -> None:
        self._finished = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._protocol._producer_done(self)
        transport = self._protocol.transport
        if transport is not None:
            try:
                transport.unregisterProducer()
            except Exception:
                # Already gone with the connection; nothing to unregister.
                log.debug("unregisterProducer failed on a closing transport")


def _first(replies: list[Reply]) -> Reply:
    return replies[0]


class SMTPConnection:
    """One ESMTP session, as the scheduler sees it (:class:`ISMTPConnection`).

    Args:
        protocol: a connected :class:`SMTPClientProtocol`.
        timeouts: RFC 5321 4.5.3.2 timeouts.
        info: what we know of the peer so far (host, ip, port).
    """

    def __init__(
        self, protocol: SMTPClientProtocol, timeouts: TimeoutsConfig, info: SessionInfo,
    ) -> None:
        self._proto = protocol
        self._timeouts = timeouts
        self.info = info
        #: EHLO keyword (upper case) -> parameters.
        self.extensions: dict[str, str] = {}
        #: A transaction may be open on the server: RSET before the next one.
        self._dirty = False
        self._busy = False
        self._closed = False
        self.transactions = 0
        #: Phase of the transaction in progress (for a 421's recipients).
        self._phase = Phase.mail

    @property
    def protocol(self) -> SMTPClientProtocol:
        """The wire protocol (for tests and for waiting on the disconnect)."""
        return self._proto

    # -- ISMTPConnection -----------------------------------------------------

    @property
    def usable(self) -> bool:
        """True while another transaction may be sent on this connection."""
        return not self._closed and self._proto.alive

    async def close(self) -> None:
        """QUIT (waiting at most a few seconds for the reply) and close."""
        if self._closed:
            return
        self._closed = True
        if self._proto.alive:
            try:
                await self._proto.command(
                    b"QUIT", Phase.quit, min(QUIT_TIMEOUT, self._timeouts.mail),
                )
            except SessionError:
                pass  # best effort: the server may just hang up
        self._proto.disconnect()

    async def send(self, message: OutboundMessage) -> list[RecipientReply]:
        """Run one transaction; see :meth:`ISMTPConnection.send`.

        Args:
            message: envelope and body.

        Returns:
            one :class:`RecipientReply` per recipient, in order.

        Raises:
            RuntimeError: when a transaction is already running on this
                connection (a scheduler bug).
        """
        if self._busy:
            raise RuntimeError("SMTPConnection.send() while a transaction is running")
        if not self.usable:
            return [
                RecipientReply(r.delivery_id, None, Phase.connect, error="connection not usable")
                for r in message.recipients
            ]
        self._busy = True
        try:
            return await self._transaction(message)
        finally:
            self._busy = False

    # -- session set-up ------------------------------------------------------

    async def handshake(
        self, *, helo: str, tls_policy: TlsPolicy | str,
        tls_options: Callable[[], IOpenSSLClientConnectionCreator] | None = None,
    ) -> None:
        """Greeting, EHLO (HELO fallback), STARTTLS per policy, re-EHLO.

        Args:
            helo: our name for EHLO/HELO.
            tls_policy: a :class:`~hurricane.outcome.TlsPolicy` (or its word).
            tls_options: builds the client TLS options when STARTTLS is used.

        Raises:
            ConnectionFailed: with phase, reply and reason; the transport is
                closed by then.
            ValueError: an unknown policy, or an EHLO name that is not one word.
        """
        policy = _policy(tls_policy)
        if not helo or " " in helo or _UNSAFE_IN_ADDRESS.search(helo):
            # Our own configuration: a CR/LF here would inject commands.
            raise ValueError(f"invalid EHLO name {helo!r}")
        try:
            await self._handshake(helo, policy, tls_options)
        except ConnectionFailed as e:
            log.info(
                "session with {host} [{ip}] failed in {phase}: {error} (reason {reason})",
                host=self.info.host, ip=self.info.ip, phase=e.phase.value, error=str(e),
                reason=None if e.reason is None else e.reason.value,
            )
            self._closed = True
            if self._proto.alive:
                # Courtesy QUIT, not awaited: we are leaving either way.
                self._proto.write_raw(b"QUIT\r\n")
            self._proto.disconnect()
            raise

    async def _handshake(
        self, helo: str, tls_policy: TlsPolicy,
        tls_options: Callable[[], IOpenSSLClientConnectionCreator] | None,
    ) -> None:
        t = self._timeouts
        greeting = await self._session_reply(self._proto.expect(Phase.greeting, t.greeting),
                                             Phase.greeting)
        self.info = dataclasses.replace(self.info, greeting=greeting.render())
        if greeting.code != 220:
            raise ConnectionFailed(
                f"greeting refused: {greeting}", Phase.greeting, greeting,
                temporary=not greeting.permanent,
            )
        await self._ehlo(helo)
        if tls_policy is TlsPolicy.none:
            return
        if "STARTTLS" not in self.extensions:
            if tls_policy is TlsPolicy.opportunistic:
                return
            raise ConnectionFailed(
                "STARTTLS required but not offered", Phase.starttls, reason=Reason.failedstarttls,
            )
        reply = await self._session_reply(
            self._proto.command(b"STARTTLS", Phase.starttls, t.mail, tls_start=True),
            Phase.starttls,
        )
        if reply.code != 220:
            if tls_policy is TlsPolicy.opportunistic and reply.code != 421:
                # RFC 3207 4.1: the session goes on in plain text; the
                # encryption was a bonus under this policy.
                log.info(
                    "STARTTLS refused by {host}: {code} {text}; continuing in plain text",
                    host=self.info.host, code=reply.code, text=reply.render(),
                )
                return
            raise ConnectionFailed(
                f"STARTTLS refused: {reply}", Phase.starttls, reply,
                temporary=True, reason=Reason.failedstarttls,
            )
        assert tls_options is not None, "STARTTLS without TLS options"
        try:
            self._proto.start_tls(tls_options())
        except SessionError as e:
            raise ConnectionFailed(str(e), Phase.starttls, reason=Reason.failedstarttls) from e
        # RFC 3207 4.2: forget everything learnt before TLS and ask again.
        self.extensions = {}
        try:
            await self._ehlo(helo)
        except ConnectionFailed as e:
            if e.reply is None and e.phase != Phase.timeout:
                # The transport died before a reply: the handshake failed.
                raise self._tls_failure(tls_policy) from e
            raise
        self.info = dataclasses.replace(
            self.info, tls=self._tls_version(), tls_verified=tls_policy is TlsPolicy.verify,
        )
        log.info(
            "TLS with {host} [{ip}]: {version}, verified={verified}", host=self.info.host,
            ip=self.info.ip, version=self.info.tls, verified=self.info.tls_verified,
        )

    def _tls_failure(self, tls_policy: TlsPolicy) -> ConnectionFailed:
        """Turn a connection lost during the TLS handshake into a failure.

        Args:
            tls_policy: the policy in force.

        Returns:
            securityerror when the certificate check failed under ``verify``,
            failedstarttls for any other handshake failure.
        """
        reason = self._proto.lost_reason
        detail = reason.getErrorMessage() if reason is not None else "connection lost"
        if tls_policy is TlsPolicy.verify and reason is not None \
                and _is_verification_failure(reason):
            return ConnectionFailed(
                f"TLS certificate not verified: {detail}", Phase.starttls,
                reason=Reason.securityerror,
            )
        return ConnectionFailed(
            f"TLS handshake failed: {detail}", Phase.starttls, reason=Reason.failedstarttls,
        )

    def _tls_version(self) -> str:
        """The negotiated TLS version (pyOpenSSL), e.g. ``TLSv1.3``."""
        transport = self._proto.transport
        if transport is None:
            return "TLS"
        try:
            handle: Any = transport.getHandle()
            return str(handle.get_protocol_version_name())
        except Exception:  # a test transport, or an unexpected handle
            return "TLS"

    async def _ehlo(self, helo: str) -> None:
        """EHLO, or HELO when the server does not know EHLO.

        Args:
            helo: our name.

        Raises:
            ConnectionFailed: when neither is accepted.
        """
        t = self._timeouts
        name = helo.encode("ascii", "replace")
        reply = await self._session_reply(
            self._proto.command(b"EHLO " + name, Phase.ehlo, t.mail), Phase.ehlo,
        )
        if reply.code in _HELO_FALLBACK_CODES:
            reply = await self._session_reply(
                self._proto.command(b"HELO " + name, Phase.ehlo, t.mail), Phase.ehlo,
            )
            if reply.code == 250:
                self.extensions = {}
                self.info = dataclasses.replace(self.info, extensions=())
                return
        if reply.code != 250:
            raise ConnectionFailed(
                f"EHLO/HELO refused: {reply}", Phase.ehlo, reply,
                temporary=not reply.permanent,
            )
        lines = reply.render().split("\n")[1:]
        extensions: dict[str, str] = {}
        for line in lines:
            keyword, _, params = line.strip().partition(" ")
            if keyword:
                extensions[keyword.upper()] = params.strip()
        self.extensions = extensions
        self.info = dataclasses.replace(
            self.info, extensions=tuple(line.strip() for line in lines if line.strip()),
        )

    async def _session_reply(self, d: Deferred[Reply], phase: Phase) -> Reply:
        """Await a set-up reply, turning session errors into ConnectionFailed.

        Args:
            d: the pending reply.
            phase: the set-up phase it belongs to.

        Returns:
            the reply (a 421 included: the caller refuses it as temporary).

        Raises:
            ConnectionFailed: on timeout, garbage or a lost connection.
        """
        try:
            return await d
        except SessionError as e:
            raise ConnectionFailed(
                str(e), Phase.timeout if e.timed_out else phase, reason=e.reason,
            ) from e

    # -- transactions --------------------------------------------------------

    @property
    def _max_size(self) -> int:
        """The server's SIZE limit, 0 when none was announced."""
        value = self.extensions.get("SIZE", "")
        return int(value) if value.isdigit() else 0

    def _mail_line(self, message: OutboundMessage) -> bytes:
        ext = self.extensions
        params = []
        if "SIZE" in ext:
            params.append(f"SIZE={len(message.body)}")
        if message.eight_bit and "8BITMIME" in ext:
            params.append("BODY=8BITMIME")
        if message.smtputf8 and "SMTPUTF8" in ext:
            params.append("SMTPUTF8")
        if "DSN" in ext:
            params.append("RET=HDRS")
            if message.envid:
                params.append(f"ENVID={xtext_encode(message.envid)}")
        line = f"MAIL FROM:<{message.mail_from}>" + "".join(" " + p for p in params)
        return line.encode("utf-8")

    def _rcpt_line(self, recipient: OutboundRecipient) -> bytes:
        params = []
        if "DSN" in self.extensions:
            params.append("NOTIFY=FAILURE,DELAY")
            orcpt = recipient.orcpt
            if orcpt is None and recipient.address.isascii():
                orcpt = "rfc822;" + recipient.address
            if orcpt is not None:
                addr_type, _, addr = orcpt.partition(";")
                if addr:
                    params.append(f"ORCPT={addr_type};{xtext_encode(addr)}")
        line = f"RCPT TO:<{recipient.address}>" + "".join(" " + p for p in params)
        return line.encode("utf-8")

    async def _transaction(self, message: OutboundMessage) -> list[RecipientReply]:
        recipients = message.recipients
        results: list[RecipientReply | None] = [None] * len(recipients)

        def decide(index: int, reply: Reply | None, phase: Phase,
                   error: str | None = None) -> None:
            if results[index] is None:
                results[index] = RecipientReply(recipients[index].delivery_id, reply, phase, error)

        def decide_rest(reply: Reply | None, phase: Phase, error: str | None = None) -> None:
            for index in range(len(recipients)):
                decide(index, reply, phase, error)

        def finished() -> list[RecipientReply]:
            return [r for r in results if r is not None]

        # Refusals we can make without asking the server (RFC 6531 3.4,
        # RFC 1870 6): synthesised, permanent, and the session stays usable.
        if message.smtputf8 and "SMTPUTF8" not in self.extensions:
            decide_rest(Reply(553, "5.6.7", "SMTPUTF8 required but not offered by the server"),
                        Phase.mail)
            return finished()
        if self._max_size and len(message.body) > self._max_size:
            decide_rest(Reply(552, "5.3.4", "message size exceeds the server's limit of "
                                            f"{self._max_size}"), Phase.mail)
            return finished()
        if not _safe_address(message.mail_from):
            decide_rest(Reply(501, "5.1.7", "invalid sender address (not sent)"), Phase.mail)
            return finished()
        sendable: list[int] = []
        for index, recipient in enumerate(recipients):
            if _safe_address(recipient.address) and recipient.address:
                sendable.append(index)
            else:
                decide(index, Reply(501, "5.1.3", "invalid recipient address (not sent)"),
                       Phase.rcpt)
        if not sendable:
            return finished()

        self.transactions += 1
        self._phase = Phase.mail
        try:
            await self._run(message, sendable, decide, decide_rest)
        except _ServiceClosing as e:
            log.info("{host} closing (421) during {phase}: {text}", host=self.info.host,
                     phase=self._phase.value, text=e.reply.render())
            decide_rest(e.reply, self._phase)
            self._abandon(SessionError("server closed the session (421)", self._phase))
        except SessionError as e:
            log.info("session with {host} failed during {phase}: {error}", host=self.info.host,
                     phase=self._phase.value, error=str(e))
            decide_rest(None, Phase.timeout if e.timed_out else self._phase, str(e))
            self._abandon(e)
        return finished()

    def _abandon(self, error: SessionError) -> None:
        """Give up on the session: nothing more is sent on it."""
        self._proto.fail(error)
        self._proto.disconnect()

    def _check(self, reply: Reply, phase: Phase) -> Reply:
        """Note the phase of ``reply``; a 421 ends the session.

        Raises:
            _ServiceClosing: for a 421.
        """
        self._phase = phase
        if reply.code == 421:
            raise _ServiceClosing(reply)
        return reply

    async def _one(self, line: bytes, phase: Phase, timeout: float) -> Reply:
        """Send one command and await its reply (lock-step).

        Raises:
            _ServiceClosing: for a 421.
            SessionError: on timeout, garbage or a lost connection.
        """
        self._phase = phase
        replies = await self._proto.commands([(line, phase, timeout)])
        return self._check(replies[0], phase)

    async def _rset(self) -> None:
        """RSET and insist on 250 (anything else: the session is broken)."""
        reply = await self._one(b"RSET", Phase.mail, self._timeouts.mail)
        if reply.code // 100 != 2:
            raise SessionError(f"RSET refused: {reply}", Phase.mail)
        self._dirty = False

    async def _pipelined(
        self, items: list[tuple[bytes, Phase, float]],
    ) -> Callable[[Phase], Reply]:
        """Send a pipelined group; return a reader of its replies, in order.

        The reader takes the phase of the next reply and returns the reply;
        it raises :class:`_ServiceClosing` for a 421, and the group's
        :class:`SessionError` once the replies that did arrive run out, so
        that a failure after some replies still decides those recipients.
        """
        error: SessionError | None = None
        try:
            replies: Sequence[Reply] = await self._proto.commands(items)
        except SessionError as e:
            replies, error = e.partial, e
        position = iter(replies)

        def read(phase: Phase) -> Reply:
            self._phase = phase
            reply = next(position, None)
            if reply is None:
                assert error is not None, "a group fired with fewer replies and no 421"
                raise error
            return self._check(reply, phase)

        return read

    async def _run(
        self, message: OutboundMessage, sendable: list[int],
        decide: Callable[..., None], decide_rest: Callable[..., None],
    ) -> None:
        """The wire part of one transaction.

        Errors propagate to :meth:`_transaction`, which decides the
        recipients still undecided.
        """
        t = self._timeouts
        recipients = message.recipients
        mail_line = self._mail_line(message)
        rcpt_lines = [self._rcpt_line(recipients[i]) for i in sendable]
        accepted: list[int] = []

        if "PIPELINING" in self.extensions:
            # RFC 2920: RSET, MAIL, every RCPT and DATA in one write; the
            # replies come back in order.
            items: list[tuple[bytes, Phase, float]] = []
            reset = self._dirty
            if reset:
                items.append((b"RSET", Phase.mail, t.mail))
            items.append((mail_line, Phase.mail, t.mail))
            items.extend((line, Phase.rcpt, t.rcpt) for line in rcpt_lines)
            items.append((b"DATA", Phase.data, t.data_init))
            read = await self._pipelined(items)
            if reset:
                rset = read(Phase.mail)
                if rset.code // 100 != 2:
                    decide_rest(rset, Phase.mail)
                    raise SessionError(f"RSET refused: {rset}", Phase.mail)
            self._dirty = True
            mail = read(Phase.mail)
            mail_ok = mail.code // 100 == 2
            if not mail_ok:
                decide_rest(mail, Phase.mail)
            for index in sendable:
                reply = read(Phase.rcpt)
                if not mail_ok:
                    continue
                if reply.code // 100 == 2:
                    accepted.append(index)
                else:
                    decide(index, reply, Phase.rcpt)
            data = read(Phase.data)
        else:
            if self._dirty:
                rset = await self._one(b"RSET", Phase.mail, t.mail)
                if rset.code // 100 != 2:
                    decide_rest(rset, Phase.mail)
                    raise SessionError(f"RSET refused: {rset}", Phase.mail)
            self._dirty = True
            mail = await self._one(mail_line, Phase.mail, t.mail)
            if mail.code // 100 != 2:
                decide_rest(mail, Phase.mail)
                return
            for index, line in zip(sendable, rcpt_lines, strict=True):
                reply = await self._one(line, Phase.rcpt, t.rcpt)
                if reply.code // 100 == 2:
                    accepted.append(index)
                else:
                    decide(index, reply, Phase.rcpt)
            if not accepted:
                # Nobody to send to: RSET instead of DATA.
                await self._rset()
                return
            data = await self._one(b"DATA", Phase.data, t.data_init)

        if data.code != 354:
            for index in accepted:
                decide(index, data, Phase.data)
            # Close the transaction now rather than leave it half open.
            await self._rset()
            return
        if not accepted:
            # RFC 2920 3.1: DATA was pipelined and accepted although no
            # recipient was: end it with an empty message the server must
            # refuse or discard. Its reply decides nobody.
            self._phase = Phase.dot
            self._proto.write_raw(b".\r\n")
            self._check(await self._proto.expect(Phase.dot, t.data_end), Phase.dot)
            return
        await self._proto.send_body(message.body, t.data_block)
        self._phase = Phase.dot
        final = self._check(await self._proto.expect(Phase.dot, t.data_end), Phase.dot)
        for index in accepted:
            decide(index, final, Phase.dot)


def _is_verification_failure(reason: Failure) -> bool:
    """True when a TLS connection died because the certificate was refused
    (chain or host name), as opposed to any other handshake failure."""
    if reason.check(VerificationError, CertificateError):
        return True
    # OpenSSL reports a bad chain as an SSL.Error whose text says so.
    return "certificate verify failed" in reason.getErrorMessage().lower()


class _QuietFactory(Factory):
    """Hands out one protocol, without "Starting factory" log lines.

    ``endpoints.connectProtocol`` uses a noisy factory: two log events per
    outbound connection, which at volume cost more than the SMTP itself.
    """

    noisy = False

    def __init__(self, protocol: SMTPClientProtocol) -> None:
        self._protocol = protocol

    def buildProtocol(self, addr: Any) -> SMTPClientProtocol:
        return self._protocol


class Connector:
    """Opens ESMTP sessions (:class:`IConnector`).

    Args:
        reactor: provides ``IReactorTCP`` and ``IReactorTime`` (injected; in
            tests a ``MemoryReactorClock`` or the trial reactor).
        timeouts: RFC 5321 4.5.3.2 timeouts, plus ``connect``.
        bind_address: local address to connect from ("" = any).
        trust_roots: extra CA certificates (PEM bytes or
            ``ssl.Certificate``) trusted in addition to the platform store
            under ``verify``, or a complete ``IOpenSSLTrustRoot``.
    """

    def __init__(
        self, reactor: IReactorTCP, timeouts: TimeoutsConfig, *, bind_address: str = "",
        trust_roots: Sequence[ssl.Certificate | bytes] | IOpenSSLTrustRoot | None = None,
    ) -> None:
        self._reactor = reactor
        self._clock = cast(IReactorTime, reactor)
        self._timeouts = timeouts
        self._bind_address = bind_address
        self._trust: IOpenSSLTrustRoot | None
        if trust_roots is not None and IOpenSSLTrustRoot.providedBy(trust_roots):
            self._trust = trust_roots
        else:
            self._trust = trust_roots_with(cast(Sequence[Any], trust_roots))

    def _endpoint(self, ip: str, port: int) -> TCP4ClientEndpoint | TCP6ClientEndpoint:
        version = ipaddress.ip_address(ip).version
        bind = (self._bind_address, 0) if self._bind_address else None
        endpoint_class = TCP6ClientEndpoint if version == 6 else TCP4ClientEndpoint
        return endpoint_class(
            self._reactor, ip, port, timeout=self._timeouts.connect, bindAddress=bind,
        )

    async def connect(
        self, host: str, ip: str, port: int, *, tls_policy: TlsPolicy | str, helo: str,
    ) -> SMTPConnection:
        """Connect, greet, EHLO, STARTTLS per policy; see :class:`IConnector`.

        Args:
            host: the MX (or route) host name; the certificate must name it
                under ``verify``.
            ip: the address to connect to (IPv4 or IPv6 literal).
            port: the TCP port.
            tls_policy: a :class:`~hurricane.outcome.TlsPolicy` (or its word).
            helo: our name for EHLO.

        Returns:
            a ready session.

        Raises:
            ConnectionFailed: with phase, reply and reason.
            ValueError: for an unknown policy.
        """
        policy = _policy(tls_policy)
        try:
            endpoint = self._endpoint(ip, port)
        except ValueError as e:
            raise ConnectionFailed(f"bad address {ip!r}: {e}", Phase.connect,
                                   reason=Reason.networkerror) from e
        protocol = SMTPClientProtocol(self._clock)
        try:
            await endpoint.connect(_QuietFactory(protocol))
        except Exception as e:
            log.info("connect to {host} [{ip}]:{port} failed: {error}", host=host, ip=ip,
                     port=port, error=str(e))
            raise ConnectionFailed(f"connect to [{ip}]:{port} failed: {e}", Phase.connect,
                                   reason=Reason.networkerror) from e
        tcp = ITCPTransport(protocol.transport, None)
        if tcp is not None:
            # DESIGN.md: without it, Nagle + delayed ACK stall every message
            # by ~40 ms (227 instead of 7,400 messages/s).
            tcp.setTcpNoDelay(True)
        connection = SMTPConnection(protocol, self._timeouts, SessionInfo(host, ip, port))
        trust = self._trust
        await connection.handshake(
            helo=helo, tls_policy=policy,
            tls_options=lambda: client_tls_options(policy, host, trust),
        )
        log.info("connected to {host} [{ip}]:{port}, extensions {extensions}", host=host,
                 ip=ip, port=port, extensions=",".join(connection.extensions))
        return connection
