"""HardenedESMTP: twisted.mail's ESMTP with the framing, DATA and reply paths owned here.

What this class replaces, and why (DESIGN.md, "Known traps in the libraries"):

- Line framing. ``LineOnlyReceiver`` buffers input without bound, executes
  every line of a read even while an asynchronous MAIL/RCPT validation is
  pending (so pipelined transactions fail), and on an over-long DATA line
  drops back into command mode, executing the rest of the body as commands.
  Here input is consumed one command at a time; while a validation or the
  final store write is pending, reading is paused (``pauseProducing``) and
  the rest stays buffered, which is what makes PIPELINING safe to offer.
- STARTTLS. Bytes that arrived after the STARTTLS line were sent in clear
  text before the handshake (CVE-2011-0411): they are dropped, and the
  session (HELO, transaction, authentication) is forgotten (RFC 3207 4.2).
- HELO/EHLO arguments are validated before they can reach a Received header.
- DATA goes through :class:`hurricane.smtpd.data.DataReader`: CRLF.CRLF only,
  size and line limits enforced while reading.
- End of message: stock SMTP answers 550 when ``eomReceived`` fails, which
  would refuse a message for good because a database blinked. Here the
  owner's ``message_received`` returns the reply, and any failure answers
  451 4.3.0.
- Every reply carries an enhanced status code; errors are counted.

Subclasses decide policy through three hooks, ``validate_sender``,
``validate_recipient`` and ``message_received``, which may return a value, a
Deferred or a coroutine.
"""

from __future__ import annotations

import inspect
import ipaddress
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress, IReactorTime, ITLSTransport
from twisted.internet.protocol import ServerFactory, connectionDone
from twisted.logger import Logger
from twisted.mail.smtp import AUTH, COMMAND, DATA, ESMTP
from twisted.python.failure import Failure

from hurricane.netio import IStreamTransport, StreamWriter
from hurricane.smtpd.address import Path, is_valid_helo, parse_params, parse_path
from hurricane.smtpd.data import DataReader
from hurricane.smtpd.limits import ConnectionLimiter, ServerLimits
from hurricane.smtpd.reply import TRY_LATER, Reply, ReplyError

log = Logger()
#: Ids in our Received lines: unique enough to find a message in a log, not
#: a secret, so a seeded PRNG instead of an os.urandom call per message.
_received_ids = random.Random()

T = TypeVar("T")

#: Commands this server understands, mapped to their handler methods.
_COMMANDS = {
    "HELO": "do_HELO",
    "EHLO": "do_EHLO",
    "MAIL": "do_MAIL",
    "RCPT": "do_RCPT",
    "DATA": "do_DATA",
    "RSET": "do_RSET",
    "NOOP": "do_NOOP",
    "QUIT": "do_QUIT",
    "VRFY": "do_VRFY",
    "EXPN": "do_EXPN",
    "HELP": "do_HELP",
    "STARTTLS": "ext_STARTTLS",
    "AUTH": "ext_AUTH",
}

# Enhanced codes for replies that arrive without one (Twisted code paths we
# do not expect to reach, kept as a safety net so every reply has one).
_DEFAULT_STATUS = {2: "2.0.0", 4: "4.0.0", 5: "5.0.0"}


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


@dataclass(frozen=True)
class Recipient:
    """An accepted recipient.

    Args:
        path: the forward-path as the client gave it.
        params: the RCPT ESMTP parameters.
        info: whatever the owner's policy attached (e.g. a verified VERP token).
    """

    path: Path
    params: Mapping[str, str | None] = field(default_factory=dict)
    info: Any = None


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


def peer_ip(transport: Any) -> str:
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


def as_deferred(fn: Callable[..., Any], *args: Any) -> Deferred[Any]:
    """Call ``fn`` and return its result as a Deferred (value, Deferred or coroutine)."""
    try:
        result = fn(*args)
    except BaseException:
        return defer.fail()
    if inspect.iscoroutine(result):
        return Deferred.fromCoroutine(result)
    if isinstance(result, Deferred):
        return result
    return defer.succeed(result)


class HardenedESMTP(ESMTP):
    """An ESMTP server protocol safe to expose; subclass it and fill in the hooks.

    Args:
        factory: the :class:`HardenedFactory` that built it (limits, clock,
            host name, TLS context, connection counter).
    """

    factory: HardenedFactory
    #: ESMTP parameters accepted on MAIL besides SIZE and BODY.
    extra_mail_parameters: frozenset[str] = frozenset()

    transport: IStreamTransport
    #: Every byte to the client goes through it (built at connectionMade,
    #: before anything is written; see hurricane.netio).
    writer: StreamWriter

    def __init__(self, factory: HardenedFactory) -> None:
        ESMTP.__init__(self, chal={}, contextFactory=factory.tls_context)
        self.factory = factory
        self.limits: ServerLimits = factory.limits
        self.hostname = factory.hostname
        self.host = factory.hostname.encode("ascii", "replace")
        # TimeoutMixin annotates whole seconds; any delay works.
        self.timeout = factory.limits.idle_timeout  # type: ignore[assignment]
        # TimeoutMixin schedules through self.callLater: route it to the
        # injected clock so tests use task.Clock.
        self.callLater = factory.clock.callLater  # type: ignore[method-assign,assignment]
        self.session = Session(peer="unknown")
        self.transaction: Transaction | None = None
        self.errors = 0
        self._buffer = b""
        self._reader: DataReader | None = None
        self._admitted = False
        #: The connection counts against its address's limit (see
        #: HardenedFactory.counts_per_ip and leave_per_ip_limit).
        self._per_ip = False
        self._closing = False
        self._lost = False
        self._paused = False
        self._processing = False
        #: Replies gathered while processing one read (see _send).
        self._output: list[bytes] = []
        #: Hook results being answered (see wait_for): replies gather too.
        self._gathering = 0

    # -- connection ---------------------------------------------------------

    def connectionMade(self) -> None:
        """Greet the client, or turn it away when a connection limit is reached."""
        self.writer = StreamWriter(self.transport)
        self.session = Session(peer=peer_ip(self.transport))
        self.canStartTLS = ITLSTransport.providedBy(self.transport) and self.ctx is not None
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
        self._send(220, [f"{self.hostname} ESMTP Hurricane"])
        self.setTimeout(self.timeout)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Free the connection slot and forget any message in progress."""
        self._lost = True
        self._closing = True
        self._reader = None
        self.writer.connection_lost()
        if self._admitted:
            self._admitted = False
            self.factory.connections.release(self.session.peer, per_ip=self._per_ip)
            self._per_ip = False
        ESMTP.connectionLost(self, reason)

    def leave_per_ip_limit(self) -> None:
        """Stop counting this connection against its address's limit (it keeps its
        place in the global one); for a client that has proved who it is."""
        if self._admitted and self._per_ip:
            self._per_ip = False
            self.factory.connections.leave_per_ip(self.session.peer)

    def timeoutConnection(self) -> None:
        """Idle timeout: say 421 4.4.2 and close (RFC 5321 4.5.3.2)."""
        log.info("idle timeout for {peer}", peer=self.session.peer)
        self._reader = None
        self.send_reply(Reply(421, "4.4.2", f"{self.hostname} Error: timeout exceeded"))
        self.close()

    def close(self) -> None:
        """Stop reading commands and close the connection after pending writes."""
        self._closing = True
        self.setTimeout(None)
        self._flush()
        self.writer.lose_connection()

    def abort(self) -> None:
        """Close at once: nothing pending or written later reaches the client."""
        self._closing = True
        self.setTimeout(None)
        self._output = []
        self.writer.abort()

    # -- replies ------------------------------------------------------------

    def _send(self, code: int, lines: list[str]) -> None:
        if self._lost:
            return
        last = len(lines) - 1
        data = "".join([f"{code:03d}{' ' if i == last else '-'}{text}\r\n"
                        for i, text in enumerate(lines)]).encode("ascii", "replace")
        if self._processing or self._gathering:
            # Replies to pipelined commands leave together, once this
            # read is processed (RFC 2920: one packet, not one per reply).
            self._output.append(data)
        else:
            self.writer.write(data)

    def _flush(self) -> None:
        """Send the replies gathered while processing input."""
        if self._output:
            data = b"".join(self._output)
            self._output = []
            if not self._lost:
                self.writer.write(data)

    def send_reply(self, reply: Reply) -> None:
        """Send a reply; count 5xx replies and close after ``max_errors`` of them.

        Args:
            reply: what to send. Its text must be one line.
        """
        if self._closing:
            return
        self._send(reply.code, [reply.render()])
        if reply.code >= 500:
            self.errors += 1
            if self.errors >= self.limits.max_errors:
                log.info("too many errors from {peer}", peer=self.session.peer)
                self._send(421, [f"4.7.0 {self.hostname} Error: too many errors"])
                self._reader = None
                self.close()

    def sendCode(self, code: int, message: bytes | str = b"") -> None:
        """Twisted's reply path, kept so that any inherited code still adds a status."""
        text = message.decode("ascii", "replace") if isinstance(message, bytes) else message
        text = " ".join(text.splitlines())
        status = _DEFAULT_STATUS.get(code // 100, "")
        self.send_reply(Reply(code, status, text))

    # -- input ----------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        """Buffer input and process as much of it as the current state allows."""
        if self._closing:
            return
        self._buffer += data
        self._process()

    def _process(self) -> None:
        if self._processing:
            return  # re-entered from a callback; the running loop continues
        self._processing = True
        try:
            while not self._closing and not self._paused:
                if self.mode is DATA:
                    if not self._buffer:
                        break
                    self._data_received()
                    continue
                end = self._buffer.find(b"\r\n")
                if end < 0:
                    if len(self._buffer) > self.limits.max_unterminated:
                        # Unbounded input: say why, then hang up (DESIGN.md).
                        self._buffer = b""
                        log.info("unterminated input from {peer}", peer=self.session.peer)
                        self._send(500, ["5.5.6 Error: line too long"])
                        self.close()
                    break
                line, self._buffer = self._buffer[:end], self._buffer[end + 2 :]
                if len(line) > self.limits.max_line_length:
                    if self.mode is AUTH:
                        self.mode = COMMAND
                        self.auth_aborted()
                        self.send_reply(Reply(500, "5.5.6", "Error: authentication line "
                                                            "too long"))
                    else:
                        self.send_reply(Reply(500, "5.5.2", "Error: line too long"))
                    continue
                self.lineReceived(line)
        finally:
            self._processing = False
            self._flush()

    def _data_received(self) -> None:
        assert self._reader is not None
        chunk, self._buffer = self._buffer, b""
        self.resetTimeout()
        leftover = self._reader.feed(chunk)
        if leftover is not None:
            # Bytes after the dot are pipelined commands: keep them buffered
            # until the message has been answered.
            self._buffer = leftover
            self._end_of_data()

    def lineReceived(self, line: bytes) -> None:
        """Dispatch one command line (or an AUTH continuation line)."""
        self.resetTimeout()
        if self.mode is AUTH:
            self.auth_line(line)
            return
        if b"\r" in line or b"\n" in line:
            # A bare LF could smuggle a second command or header line.
            self.send_reply(Reply(500, "5.5.2", "Error: bare CR or LF in command"))
            return
        try:
            text = line.decode("ascii")
        except UnicodeDecodeError:
            self.send_reply(Reply(500, "5.5.2", "Error: non-ASCII command"))
            return
        verb, _, rest = text.strip(" \t").partition(" ")
        method = _COMMANDS.get(verb.upper())
        if method is None:
            self.send_reply(Reply(500, "5.5.2", "Error: command not recognized"))
            return
        getattr(self, method)(rest.strip(" \t"))

    # -- waiting on hooks ---------------------------------------------------

    def wait_for(self, d: Deferred[T], on_result: Callable[[T], None]) -> None:
        """Run ``on_result`` with the result of ``d``, pausing input until then.

        A failure of ``d`` is logged and answered 451 4.3.0: a passing
        problem on our side must never become a permanent refusal.
        """
        state = {"done": False, "paused": False}

        def finish(result: T | Failure) -> None:
            state["done"] = True
            # This reply and those to the commands pipelined behind it
            # (answered by _resume) leave in one write: sent apart, the
            # second would wait for the client's delayed ACK (Nagle).
            self._gathering += 1
            try:
                if self._lost:
                    return
                if isinstance(result, Failure):
                    log.failure("error while handling a command from {peer}", result,
                                peer=self.session.peer)
                    self.send_reply(TRY_LATER)
                else:
                    on_result(result)
            except Exception:
                log.failure("error while answering {peer}", peer=self.session.peer)
                self.send_reply(TRY_LATER)
            finally:
                try:
                    if state["paused"]:
                        self._resume()
                except Exception:
                    # A bug while answering the pipelined commands: in
                    # dataReceived Twisted would drop the connection; do
                    # the same rather than leave the client waiting.
                    log.failure("error while processing input from {peer}",
                                peer=self.session.peer)
                    self._send(421, ["4.3.0 Error: internal error, closing connection"])
                    self.close()
                finally:
                    self._gathering -= 1
                    if not self._gathering and not self._processing:
                        self._flush()

        d.addBoth(finish)
        if not state["done"]:
            state["paused"] = True
            self._pause()

    def _pause(self) -> None:
        self._paused = True
        # While we work, the client waits on us: no idle timeout.
        self.setTimeout(None)
        if not self._lost:
            self.transport.pauseProducing()

    def _resume(self) -> None:
        self._paused = False
        if self._lost or self._closing:
            return
        self.transport.resumeProducing()
        self.setTimeout(self.timeout)
        self._process()

    # -- commands -----------------------------------------------------------

    def ehlo_keywords(self) -> list[str]:
        """The EHLO extension keywords to advertise; subclasses may add to them."""
        keywords = [
            "PIPELINING",
            f"SIZE {self.limits.max_message_size}",
            "8BITMIME",
            "ENHANCEDSTATUSCODES",
        ]
        if self.canStartTLS and not self.startedTLS:
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
            self._send(250, [greeting, *self.ehlo_keywords()])
        else:
            self._send(250, [greeting])

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
        if rest[:5].upper() != "FROM:":
            self.send_reply(Reply(501, "5.5.4", "Syntax: MAIL FROM:<address>"))
            return
        try:
            path, ptext = parse_path(rest[5:], "sender")
            params = parse_params(ptext)
            self._check_mail_params(params)
            if path.domain is None and not path.is_null:
                raise ReplyError(Reply(553, "5.1.7", "Error: sender address must be "
                                                     "fully qualified"))
        except ReplyError as e:
            self.send_reply(e.reply)
            return

        def done(reply: Reply) -> None:
            if reply.positive:
                self.transaction = Transaction(path, params)
            self.send_reply(reply)

        self.wait_for(as_deferred(self.validate_sender, path, params), done)

    def _check_mail_params(self, params: Mapping[str, str | None]) -> None:
        for key, value in params.items():
            if key == "SIZE":
                if value is None or not value.isdigit() or len(value) > 20:
                    raise ReplyError(Reply(501, "5.5.4", "Error: bad SIZE parameter"))
                if int(value) > self.limits.max_message_size:
                    raise ReplyError(Reply(552, "5.3.4", "Error: message size exceeds fixed "
                                           f"limit of {self.limits.max_message_size} octets"))
            elif key == "BODY":
                if value is None or value.upper() not in ("7BIT", "8BITMIME"):
                    raise ReplyError(Reply(501, "5.5.4", "Error: bad BODY parameter"))
            elif key not in self.extra_mail_parameters:
                raise ReplyError(Reply(555, "5.5.4", f"Error: unsupported parameter {key}"))

    def do_RCPT(self, rest: str) -> None:
        """RCPT TO:<path>."""
        tx = self.transaction
        if tx is None:
            self.send_reply(Reply(503, "5.5.1", "Error: need MAIL command"))
            return
        if rest[:3].upper() != "TO:":
            self.send_reply(Reply(501, "5.5.4", "Syntax: RCPT TO:<address>"))
            return
        try:
            path, ptext = parse_path(rest[3:], "recipient")
            params = parse_params(ptext)
            for key in params:
                raise ReplyError(Reply(555, "5.5.4", f"Error: unsupported parameter {key}"))
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

        self.wait_for(as_deferred(self.validate_recipient, path, params), done)

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
        self._reader = DataReader(
            self.limits.max_message_size,
            self.limits.max_data_line_length,
            self.limits.reject_bare_line_endings,
        )
        self.mode = DATA
        self._send(354, ["End data with <CR><LF>.<CR><LF>"])

    def _end_of_data(self) -> None:
        reader, tx = self._reader, self.transaction
        self._reader = None
        self.transaction = None
        self.mode = COMMAND
        assert reader is not None and tx is not None
        if reader.failure is not None:
            log.info("refused message from {peer}: {reply}", peer=self.session.peer,
                     reply=str(reader.failure))
            self.send_reply(reader.failure)
            return
        now = self.factory.clock.seconds()
        envelope = Envelope(tx.sender, tuple(tx.recipients), replace(self.session), now,
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

    def ext_STARTTLS(self, rest: str) -> None:
        """STARTTLS: drop clear-text input sent after the command, forget the session."""
        if rest:
            self.send_reply(Reply(501, "5.5.4", "Syntax: STARTTLS"))
            return
        if self.startedTLS:
            self.send_reply(Reply(503, "5.5.1", "Error: TLS already active"))
            return
        if not self.canStartTLS:
            self.send_reply(Reply(454, "4.7.0", "TLS not available"))
            return
        self.send_reply(Reply(220, "2.0.0", "Ready to start TLS"))
        self._flush()  # in clear text, before the handshake
        # CVE-2011-0411: whatever followed the command in this read was sent
        # in clear text before the handshake; it must not run after it.
        self._buffer = b""
        assert self.ctx is not None  # canStartTLS
        self.writer.start_tls(self.ctx)
        self.startedTLS = True
        # RFC 3207 4.2: discard all knowledge obtained from the client.
        self.session = Session(peer=self.session.peer, tls=True)
        self.transaction = None
        self.tls_started()

    def tls_started(self) -> None:
        """Hook: called after STARTTLS reset the session (forget authentication here)."""

    def ext_AUTH(self, rest: str) -> None:
        """AUTH: not offered by the base server."""
        self.send_reply(Reply(503, "5.5.1", "Error: authentication not enabled"))

    def auth_line(self, line: bytes) -> None:
        """Hook: one client line during an AUTH exchange (mode AUTH)."""
        self.mode = COMMAND

    def auth_aborted(self) -> None:
        """Hook: the AUTH exchange was cut short (an over-long line)."""

    # -- the Received header ------------------------------------------------

    def received_header(self, envelope: Envelope) -> bytes:
        """The Received header prepended to each message (RFC 5321 4.4, RFC 3848)."""
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
                 f"\tby {self.hostname} (Hurricane) with {protocol} "
                 f"id {_received_ids.getrandbits(48):012x}"]
        if len(envelope.recipients) == 1:
            lines.append(f"\tfor {envelope.recipients[0].path};")
        else:
            lines[-1] += ";"
        lines.append("\t" + time.strftime("%a, %d %b %Y %H:%M:%S +0000",
                                          time.gmtime(envelope.received_at)))
        return ("\r\n".join(lines) + "\r\n").encode("ascii", "replace")

    # -- hooks for the owner ------------------------------------------------

    def validate_sender(self, sender: Path, params: Mapping[str, str | None]) -> Any:
        """Decide MAIL FROM.

        Returns:
            A :class:`Reply` (2xx accepts), or a Deferred/coroutine of one.
        """
        return Reply(250, "2.1.0", "Ok")

    def validate_recipient(self, recipient: Path, params: Mapping[str, str | None]) -> Any:
        """Decide RCPT TO.

        Returns:
            A :class:`Recipient` to accept, a :class:`Reply` to refuse, or a
            Deferred/coroutine of either.
        """
        return Reply(550, "5.1.1", "Error: recipient address rejected")

    def message_received(self, envelope: Envelope, data: bytes) -> Any:
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
                 tls_context: Any = None) -> None:
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
