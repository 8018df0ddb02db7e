"""SMTPChannel: the connection half of the ESMTP server, below the commands.

It owns everything about a server connection that is not what a command
means (that is :class:`~hurricane.smtpd.protocol.HardenedESMTP`, its
subclass):

- the state machine (:class:`~hurricane.smtpd.session.ServerState`);
- bounded framing: one command line at a time from a
  :class:`~hurricane.smtpd.commands.LineBuffer`, or whole chunks to the
  DATA reader; over-long and unterminated input refused;
- dispatch of each command line to the ``do_<VERB>`` handler;
- one command at a time: :meth:`SMTPChannel.wait_for` pauses reading
  (WAITING) until a hook has answered, then goes on with the input
  pipelined behind it; a failed hook is a 451, never a 5xx;
- replies, gathered per read and written through one
  :class:`~hurricane.netio.StreamWriter`; 5xx counted, ``max_errors`` close;
- the idle timer and the listener's connection limits.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, TypeVar
from typing import Protocol as Structural

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from hurricane.netio import IStreamTransport, StreamWriter
from hurricane.smtpd.commands import Framing, LineBuffer, parse_command
from hurricane.smtpd.connection import IdleTimer, ReplyWriter
from hurricane.smtpd.data import DataReader
from hurricane.smtpd.limits import ConnectionLimiter, ServerLimits
from hurricane.smtpd.reply import TRY_LATER, Reply
from hurricane.smtpd.session import ServerState, Session, peer_ip

__all__ = ["Listener", "SMTPChannel"]

log = Logger()

T = TypeVar("T")

# The states as module constants: on Python 3.11 an Enum attribute lookup
# costs about 0.1 us, and the input loop makes several for every command.
COMMAND: Final = ServerState.COMMAND
AUTH: Final = ServerState.AUTH
DATA: Final = ServerState.DATA
WAITING: Final = ServerState.WAITING
CLOSING: Final = ServerState.CLOSING
CLOSED: Final = ServerState.CLOSED


class Listener(Structural):
    """What a connection needs from the listener (its factory) that accepted it."""

    #: Our name, in the greeting and the 421 replies.
    hostname: str
    limits: ServerLimits
    clock: IReactorTime
    connections: ConnectionLimiter

    def counts_per_ip(self, ip: str) -> bool:
        """Whether a connection from ``ip`` counts against the per-address limit."""


class SMTPChannel(Protocol):
    """One server connection: state, framing, flow control and replies.

    Args:
        factory: the listener that accepted the connection.
    """

    factory: Listener

    transport: IStreamTransport
    #: Every byte to the client (built at connectionMade, before any write).
    writer: StreamWriter
    #: The replies, gathered while a read is processed.
    replies: ReplyWriter

    def __init__(self, factory: Listener) -> None:
        self.factory = factory
        self.limits: ServerLimits = factory.limits
        self.hostname = factory.hostname
        self.state = COMMAND
        self.session = Session(peer="unknown")
        self.errors = 0
        #: Client input not consumed yet.
        self.input_buffer = LineBuffer(self.limits.max_line_length,
                                       self.limits.max_unterminated)
        #: The message being read, in DATA.
        self.reader: DataReader | None = None
        self.timer = IdleTimer(factory.clock, self.limits.idle_timeout,
                               self.timeout_connection)
        self._admitted = False
        #: The connection counts against its address's limit (see
        #: Listener.counts_per_ip and leave_per_ip_limit).
        self._per_ip = False
        self._processing = False
        #: Where WAITING goes back to once the hook has answered.
        self._resume_state = COMMAND
        #: Reading is paused (input came while WAITING; see _pause).
        self._paused = False

    # -- connection ---------------------------------------------------------

    def connectionMade(self) -> None:
        """Greet the client, or turn it away when a connection limit is reached."""
        self.writer = StreamWriter(self.transport)
        self.replies = ReplyWriter(self.writer)
        self.session = Session(peer=peer_ip(self.transport))
        connections = self.factory.connections
        per_ip = self.factory.counts_per_ip(self.session.peer)
        if not connections.admit(self.session.peer, per_ip=per_ip):
            log.info("refused connection from {peer}: {limit} connection limit",
                     peer=self.session.peer,
                     limit="global" if connections.is_full() else "per-address")
            self.send_reply(Reply(421, "4.7.0", f"{self.hostname} Error: too many connections, "
                                                "try again later"))
            self.close()
            return
        self._admitted = True
        self._per_ip = per_ip
        # Every reply is a complete answer the client waits for: never hold
        # one back for the client's ACK of the previous (Nagle's algorithm).
        set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            set_no_delay(True)
        self.send_lines(220, [f"{self.hostname} ESMTP Hurricane"])
        self.timer.start()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Free the connection slot and forget any message in progress."""
        self.state = CLOSED
        self.reader = None
        self.timer.stop()
        self.replies.close()
        self.writer.connection_lost()
        if self._admitted:
            self._admitted = False
            self.factory.connections.release(self.session.peer, per_ip=self._per_ip)
            self._per_ip = False

    @property
    def lost(self) -> bool:
        """True once the connection is gone."""
        return self.state is CLOSED

    def leave_per_ip_limit(self) -> None:
        """Stop counting this connection against its address's limit (it keeps its
        place in the global one); for a client that has proved who it is."""
        if self._admitted and self._per_ip:
            self._per_ip = False
            self.factory.connections.leave_per_ip(self.session.peer)

    def timeout_connection(self) -> None:
        """Idle timeout: say 421 4.4.2 and close (RFC 5321 4.5.3.2)."""
        log.info("idle timeout for {peer}", peer=self.session.peer)
        self.reader = None
        self.send_reply(Reply(421, "4.4.2", f"{self.hostname} Error: timeout exceeded"))
        self.close()

    def close(self) -> None:
        """Stop reading commands and close the connection after pending writes."""
        if self.state is not CLOSED:
            self.state = CLOSING
        self.timer.stop()
        # The last replies first: a TLS transport drops what is written after
        # loseConnection.
        self.replies.flush()
        self.writer.lose_connection()

    def abort(self) -> None:
        """Close at once: no pending or later reply is sent."""
        if self.state is not CLOSED:
            self.state = CLOSING
        self.timer.stop()
        self.replies.close()
        self.writer.abort()

    # -- replies ------------------------------------------------------------

    def send_lines(self, code: int, lines: list[str]) -> None:
        """Send a reply as it is (no error counting); several lines make a multi-line reply.

        Args:
            code: the reply code.
            lines: the text after the code, one string per line.
        """
        self.replies.send(code, lines)

    def send_reply(self, reply: Reply) -> None:
        """Send a reply; count 5xx replies and close after ``max_errors`` of them.

        Nothing is sent once the connection is closing.

        Args:
            reply: what to send. Its text must be one line.
        """
        if self.state is CLOSING or self.state is CLOSED:
            return
        self.replies.send(reply.code, [reply.render()])
        if reply.code >= 500:
            self.errors += 1
            if self.errors >= self.limits.max_errors:
                log.info("too many errors from {peer}", peer=self.session.peer)
                self.send_lines(421, [f"4.7.0 {self.hostname} Error: too many errors"])
                self.reader = None
                self.close()

    def flush_replies(self) -> None:
        """Send the replies gathered so far now (before TLS starts, say)."""
        self.replies.flush()

    # -- input ----------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        """Buffer input and process as much of it as the current state allows."""
        state = self.state
        if state is CLOSING or state is CLOSED:
            return
        if state is WAITING and not self._paused:
            # Input while a hook works (pipelined commands, or a client
            # that does not wait): keep this read, read no more until the
            # answer (see _pause).
            self._paused = True
            self.transport.pauseProducing()
        self.input_buffer.feed(data)
        self._process()

    def _process(self) -> None:
        if self._processing:
            return  # re-entered from a callback; the running loop continues
        self._processing = True
        # Replies to pipelined commands leave together, once this read is
        # processed (RFC 2920: one packet, not one per reply).
        self.replies.cork()
        try:
            while True:
                state = self.state
                if state is DATA:
                    chunk = self.input_buffer.take()
                    if not chunk:
                        break
                    self._data_received(chunk)
                elif state is COMMAND or state is AUTH:
                    line = self.input_buffer.next_line()
                    if isinstance(line, bytes):
                        self.line_received(line)
                    elif line is Framing.TOO_LONG:
                        self._line_too_long()
                    elif line is Framing.UNTERMINATED:
                        # Unbounded input: say why, then hang up (DESIGN.md).
                        log.info("unterminated input from {peer}", peer=self.session.peer)
                        self.send_lines(500, ["5.5.6 Error: line too long"])
                        self.close()
                        break
                    else:
                        break  # no complete line yet
                else:
                    break  # WAITING, CLOSING or CLOSED
        finally:
            self._processing = False
            self.replies.uncork()

    def _line_too_long(self) -> None:
        if self.state is AUTH:
            self.leave_auth()
            self.auth_aborted()
            self.send_reply(Reply(500, "5.5.6", "Error: authentication line too long"))
        else:
            self.send_reply(Reply(500, "5.5.2", "Error: line too long"))

    def line_received(self, line: bytes) -> None:
        """Dispatch one command line to its ``do_<VERB>`` handler (or an AUTH line)."""
        self.timer.reset()
        if self.state is AUTH:
            self.auth_line(line)
            return
        command = parse_command(line)
        if isinstance(command, Reply):
            self.send_reply(command)
            return
        verb, argument = command
        handler: Callable[[str], None] = getattr(self, "do_" + verb)
        handler(argument)

    # -- DATA -----------------------------------------------------------------

    def read_data(self, reader: DataReader) -> None:
        """Hand the input that follows to ``reader`` until its end of data."""
        self.reader = reader
        self.state = DATA

    def _data_received(self, chunk: bytes) -> None:
        reader = self.reader
        assert reader is not None
        self.timer.reset()
        leftover = reader.feed(chunk)
        if leftover is not None:
            # Bytes after the dot are pipelined commands: keep them buffered
            # until the message has been answered.
            self.input_buffer.feed(leftover)
            self.reader = None
            self.state = COMMAND
            self.data_finished(reader)

    def data_finished(self, reader: DataReader) -> None:
        """Hook: the final dot arrived; ``reader`` holds the message or its refusal."""
        raise NotImplementedError

    # -- AUTH exchanges -------------------------------------------------------

    def enter_auth(self) -> None:
        """Read the client's next lines as AUTH responses (:meth:`auth_line`)."""
        self.state = AUTH

    def leave_auth(self) -> None:
        """Back to reading commands (the AUTH exchange is over)."""
        if self.state is AUTH:
            self.state = COMMAND

    def auth_line(self, line: bytes) -> None:
        """Hook: one client line during an AUTH exchange (state AUTH)."""
        self.leave_auth()

    def auth_aborted(self) -> None:
        """Hook: the AUTH exchange was cut short (an over-long line)."""

    # -- waiting on hooks ---------------------------------------------------

    def wait_for(self, d: Deferred[T], on_result: Callable[[T], None]) -> None:
        """Run ``on_result`` with the result of ``d``, pausing input until then.

        A failure of ``d`` is logged and answered 451 4.3.0: a passing
        problem on our side must never become a permanent refusal.
        """
        waiting = False
        done = False

        def finish(result: T | Failure) -> None:
            nonlocal done
            done = True
            if not waiting:
                # Answered at once, inside the read being processed: the
                # reply leaves with the others of that read.
                self._answer(result, on_result)
                return
            if self.state is WAITING:
                self.state = self._resume_state
            # This reply and those to the commands pipelined behind it
            # (answered by _resume) leave in one write: sent apart, the
            # second would wait for the client's delayed ACK (Nagle).
            self.replies.cork()
            try:
                self._answer(result, on_result)
                try:
                    self._resume()
                except Exception:
                    # A bug while answering the pipelined commands: in
                    # dataReceived Twisted would drop the connection; do
                    # the same rather than leave the client waiting.
                    log.failure("error while processing input from {peer}",
                                peer=self.session.peer)
                    self.send_lines(421, ["4.3.0 Error: internal error, closing connection"])
                    self.close()
            finally:
                self.replies.uncork()

        d.addBoth(finish)
        if not done and self.state in (COMMAND, AUTH, DATA):
            waiting = True
            self._pause()

    def _answer(self, result: T | Failure, on_result: Callable[[T], None]) -> None:
        """Hand a hook's result to ``on_result``; a failure, or a bug there, is a 451."""
        if self.state is CLOSED:
            return
        try:
            if isinstance(result, Failure):
                log.failure("error while handling a command from {peer}", result,
                            peer=self.session.peer)
                self.send_reply(TRY_LATER)
            else:
                on_result(result)
        except Exception:
            log.failure("error while answering {peer}", peer=self.session.peer)
            self.send_reply(TRY_LATER)

    def _pause(self) -> None:
        self._resume_state = self.state
        self.state = WAITING
        # While we work, the client waits on us: no idle timeout. Reading
        # stops only once input comes meanwhile (dataReceived): a client
        # waiting for its reply sends nothing, and pausing and resuming the
        # transport for every message cost two epoll_ctl calls on the
        # reactor thread (each a moment the GIL changes hands).
        self.timer.stop()

    def _resume(self) -> None:
        state = self.state
        if not (state is COMMAND or state is AUTH or state is DATA):
            return  # closed meanwhile, or waiting on the next hook already
        if self._paused:
            self._paused = False
            self.transport.resumeProducing()
        self.timer.start()
        self._process()
