"""The wire half of the outbound client: command lines out, replies in, in order.

:class:`SMTPClientProtocol` writes command lines through one
:class:`~hurricane.netio.StreamWriter`, parses (multi-line) replies with
bounded line and reply sizes, hands each reply to the oldest waiter in order
(which is all RFC 2920 pipelining needs), arms one reply timer on an injected
clock, and streams message bodies through our own
:class:`~hurricane.outbound.dataenc.DataEncoder`. It never decides anything:
what a reply means for the session or a recipient is
:mod:`hurricane.outbound.session`'s business.

We do not subclass ``twisted.mail.smtp.ESMTPClient``: its one message per
connection structure, its dot-stuffing (misses a "." at a 16 KiB boundary
and on the first line, turns CRLF into CR CR LF) and its STARTTLS handling
(text injected after the 220 is read as the post-TLS EHLO reply) are the
traps listed in DESIGN.md.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import (
    IDelayedCall,
    IOpenSSLClientConnectionCreator,
    IPushProducer,
    IReactorTime,
    ITLSTransport,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from hurricane.netio import IStreamTransport, StreamWriter
from hurricane.outbound.dataenc import DataEncoder
from hurricane.outcome import Phase, Reason
from hurricane.smtp_reply import Reply

__all__ = [
    "BODY_CHUNK",
    "MAX_REPLY_LINE",
    "MAX_REPLY_SIZE",
    "MAX_UNCLAIMED",
    "Command",
    "SMTPClientProtocol",
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
#: Bodies up to this size go out in one write; bigger ones are streamed in
#: chunks of this size by a push producer, so a 25 MiB body is never
#: encoded (and copied) as a whole.
BODY_CHUNK: Final = 64 * 1024

#: One command for :meth:`SMTPClientProtocol.commands`: the line without
#: CRLF, the phase its reply belongs to, and the seconds to wait for it.
Command = tuple[bytes, Phase, float]


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
        self, items: Sequence[Command], *, tls_start: bool = False,
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

