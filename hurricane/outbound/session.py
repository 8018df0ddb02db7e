"""The session half of the outbound client: EHLO, STARTTLS, transactions.

:class:`SMTPConnection` (an :class:`~hurricane.outbound.interface.ISMTPConnection`)
runs one ESMTP session over a :class:`~hurricane.outbound.wire.SMTPClientProtocol`:
greeting, EHLO/HELO, STARTTLS per policy, then transactions, and turns every
outcome into :class:`~hurricane.smtp_reply.Reply` /
:class:`~hurricane.outbound.interface.RecipientReply` values.

A transaction is written as the commands it sends (RSET, MAIL, every RCPT,
DATA) queued on a :class:`CommandPipeline` and read back reply by reply.
When the server offers PIPELINING (RFC 2920) the pipeline writes every queued
command at the first read; when it does not, it writes one command per read
(lock-step is a pipeline of one). The reading code is the same for both, so
a refusal is handled once: after a refused MAIL, or when no recipient was
accepted, the commands not written yet are withdrawn, and those already
written (pipelined) still have their replies read.
"""

from __future__ import annotations

import dataclasses
import re
from collections import deque
from collections.abc import Callable, Sequence
from typing import Final

from service_identity import CertificateError, VerificationError
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.logger import Logger
from twisted.python.failure import Failure

from hurricane.config import TimeoutsConfig
from hurricane.outbound.interface import (
    ConnectionFailed,
    OutboundMessage,
    OutboundRecipient,
    RecipientReply,
    SessionInfo,
)
from hurricane.outbound.wire import Command, SessionError, SMTPClientProtocol
from hurricane.outcome import Phase, Reason, TlsPolicy
from hurricane.smtp_reply import Reply
from hurricane.xtext import xtext_encode

__all__ = [
    "QUIT_TIMEOUT",
    "CommandPipeline",
    "SMTPConnection",
    "mail_command",
    "rcpt_command",
    "refuse_locally",
    "tls_policy_of",
]

log = Logger()

#: Upper bound on waiting for the reply to QUIT.
QUIT_TIMEOUT: Final = 5.0

#: Reply codes to EHLO after which we retry with HELO (RFC 5321 3.2).
_HELO_FALLBACK_CODES: Final = frozenset({500, 502})

_UNSAFE_IN_ADDRESS = re.compile(r"[\x00-\x1f\x7f<>]")


def tls_policy_of(value: TlsPolicy | str) -> TlsPolicy:
    """The TLS policy a caller named (a member, or its word).

    Args:
        value: a :class:`~hurricane.outcome.TlsPolicy` or its word.

    Returns:
        the policy.

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


def _is_verification_failure(reason: Failure) -> bool:
    """True when a TLS connection died because the certificate was refused
    (chain or host name), as opposed to any other handshake failure."""
    if reason.check(VerificationError, CertificateError):
        return True
    # OpenSSL reports a bad chain as an SSL.Error whose text says so.
    return "certificate verify failed" in reason.getErrorMessage().lower()


def mail_command(message: OutboundMessage, extensions: dict[str, str]) -> bytes:
    """The MAIL command of a transaction, with the parameters the server offers.

    Args:
        message: the envelope.
        extensions: the server's EHLO keywords (upper case) -> parameters.

    Returns:
        the command line without CRLF (SIZE, BODY=8BITMIME, SMTPUTF8,
        RET/ENVID as offered and needed).
    """
    params = []
    if "SIZE" in extensions:
        params.append(f"SIZE={len(message.body)}")
    if message.eight_bit and "8BITMIME" in extensions:
        params.append("BODY=8BITMIME")
    if message.smtputf8 and "SMTPUTF8" in extensions:
        params.append("SMTPUTF8")
    if "DSN" in extensions:
        params.append("RET=HDRS")
        if message.envid:
            params.append(f"ENVID={xtext_encode(message.envid)}")
    line = f"MAIL FROM:<{message.mail_from}>" + "".join(" " + p for p in params)
    return line.encode("utf-8")


def rcpt_command(recipient: OutboundRecipient, extensions: dict[str, str]) -> bytes:
    """The RCPT command of one recipient (NOTIFY and ORCPT when DSN is offered).

    Args:
        recipient: the recipient.
        extensions: the server's EHLO keywords (upper case) -> parameters.

    Returns:
        the command line without CRLF.
    """
    params = []
    if "DSN" in extensions:
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


def refuse_locally(message: OutboundMessage, extensions: dict[str, str]) -> Reply | None:
    """The refusal we can make for the whole message without asking the server.

    RFC 6531 3.4 (SMTPUTF8 needed, not offered) and RFC 1870 6 (over the
    announced SIZE) refusals are permanent; an unsafe sender address is never
    written. The session stays usable.

    Args:
        message: the transaction.
        extensions: the server's EHLO keywords (upper case) -> parameters.

    Returns:
        a synthesised reply for every recipient, or None to go ahead.
    """
    if message.smtputf8 and "SMTPUTF8" not in extensions:
        return Reply(553, "5.6.7", "SMTPUTF8 required but not offered by the server")
    size = extensions.get("SIZE", "")
    limit = int(size) if size.isdigit() else 0
    if limit and len(message.body) > limit:
        return Reply(552, "5.3.4", f"message size exceeds the server's limit of {limit}")
    if not _safe_address(message.mail_from):
        return Reply(501, "5.1.7", "invalid sender address (not sent)")
    return None


class _ServiceClosing(Exception):
    """A 421 arrived: the server is closing the transmission channel."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.render())
        self.reply = reply


class CommandPipeline:
    """The commands of one transaction and their replies, in order.

    Commands are queued with :meth:`add` and their replies read with
    :meth:`reply`. With ``depth`` None (the server offers PIPELINING) the
    first read writes every command queued so far in one write; with depth 1
    each read writes the next command alone and waits for its reply
    (lock-step). One Deferred per written group: a pipelined transaction
    costs one resumption, not one per command.

    Args:
        protocol: the wire protocol the commands go through.
        depth: commands written per group (None: all queued).
    """

    def __init__(self, protocol: SMTPClientProtocol, depth: int | None) -> None:
        self._proto = protocol
        self._depth = depth
        self._unsent: deque[Command] = deque()
        self._replies: deque[Reply] = deque()
        #: Commands written whose reply has not been read yet.
        self._unread = 0
        self._error: SessionError | None = None

    def add(self, line: bytes, phase: Phase, timeout: float) -> None:
        """Queue a command (written when a read needs it).

        Args:
            line: the command without CRLF.
            phase: the phase its reply belongs to.
            timeout: seconds to wait for its reply.
        """
        self._unsent.append((line, phase, timeout))

    @property
    def waiting(self) -> bool:
        """True while a command is queued or written without its reply read."""
        return bool(self._unread or self._unsent)

    def withdraw(self) -> None:
        """Drop the commands not written yet (a refusal made them pointless)."""
        self._unsent.clear()

    async def reply(self) -> Reply:
        """The reply to the oldest command whose reply is not read yet.

        Returns:
            the reply (a 421 may end a pipelined group early).

        Raises:
            SessionError: the session failed (timeout, garbage, connection
                lost) once the replies that did arrive are read.
        """
        # One coroutine per read, the write inline: in lock-step every
        # command is a read, and each extra level cost ~3 us per command.
        if not self._unread:
            if self._error is not None:
                raise self._error
            unsent = self._unsent
            if not unsent:
                raise RuntimeError("no command left to read a reply for")
            if self._depth is None or len(unsent) <= self._depth:
                group = list(unsent)
                unsent.clear()
            else:
                group = [unsent.popleft() for _ in range(self._depth)]
            self._unread = len(group)
            try:
                self._replies.extend(await self._proto.commands(group))
            except SessionError as e:
                self._replies.extend(e.partial)
                self._error = e
        if not self._replies:
            assert self._error is not None, "a group fired with fewer replies and no 421"
            raise self._error
        self._unread -= 1
        return self._replies.popleft()


class _Answers:
    """What each recipient of one transaction got; each is decided once."""

    def __init__(self, recipients: Sequence[OutboundRecipient]) -> None:
        self._recipients = recipients
        self._answers: list[RecipientReply | None] = [None] * len(recipients)

    def decide(self, index: int, reply: Reply | None, phase: Phase,
               error: str | None = None) -> None:
        """Decide one recipient, unless it is decided already."""
        if self._answers[index] is None:
            self._answers[index] = RecipientReply(self._recipients[index].delivery_id, reply,
                                                  phase, error)

    def decide_rest(self, reply: Reply | None, phase: Phase, error: str | None = None) -> None:
        """Decide every recipient not decided yet."""
        for index in range(len(self._recipients)):
            self.decide(index, reply, phase, error)

    def decided(self) -> list[RecipientReply]:
        """The answers, in the recipients' order."""
        return [a for a in self._answers if a is not None]


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
        policy = tls_policy_of(tls_policy)
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
            # an OpenSSL.SSL.Connection once TLS is on
            version = getattr(transport.getHandle(), "get_protocol_version_name", None)
            return str(version()) if callable(version) else "TLS"
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

    async def _transaction(self, message: OutboundMessage) -> list[RecipientReply]:
        recipients = message.recipients
        answers = _Answers(recipients)
        refusal = refuse_locally(message, self.extensions)
        if refusal is not None:
            answers.decide_rest(refusal, Phase.mail)
            return answers.decided()
        sendable: list[int] = []
        for index, recipient in enumerate(recipients):
            if _safe_address(recipient.address) and recipient.address:
                sendable.append(index)
            else:
                answers.decide(index, Reply(501, "5.1.3", "invalid recipient address (not sent)"),
                               Phase.rcpt)
        if not sendable:
            return answers.decided()

        self.transactions += 1
        self._phase = Phase.mail
        try:
            await self._run(message, sendable, answers)
        except _ServiceClosing as e:
            log.info("{host} closing (421) during {phase}: {text}", host=self.info.host,
                     phase=self._phase.value, text=e.reply.render())
            answers.decide_rest(e.reply, self._phase)
            self._abandon(SessionError("server closed the session (421)", self._phase))
        except SessionError as e:
            log.info("session with {host} failed during {phase}: {error}", host=self.info.host,
                     phase=self._phase.value, error=str(e))
            answers.decide_rest(None, Phase.timeout if e.timed_out else self._phase, str(e))
            self._abandon(e)
        return answers.decided()

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

    async def _rset(self) -> None:
        """RSET and insist on 250 (anything else: the session is broken)."""
        self._phase = Phase.mail
        reply = self._check(await self._proto.command(b"RSET", Phase.mail, self._timeouts.mail),
                            Phase.mail)
        if reply.code // 100 != 2:
            raise SessionError(f"RSET refused: {reply}", Phase.mail)
        self._dirty = False

    async def _run(self, message: OutboundMessage, sendable: list[int],
                   answers: _Answers) -> None:
        """The wire part of one transaction, pipelined or lock-step alike.

        Errors propagate to :meth:`_transaction`, which decides the
        recipients still undecided.
        """
        t = self._timeouts
        pipeline = CommandPipeline(self._proto, None if "PIPELINING" in self.extensions else 1)
        reset = self._dirty
        if reset:
            pipeline.add(b"RSET", Phase.mail, t.mail)
        pipeline.add(mail_command(message, self.extensions), Phase.mail, t.mail)
        for index in sendable:
            pipeline.add(rcpt_command(message.recipients[index], self.extensions),
                         Phase.rcpt, t.rcpt)
        pipeline.add(b"DATA", Phase.data, t.data_init)

        if reset:
            self._phase = Phase.mail  # before the wait: a failure belongs to it
            rset = self._check(await pipeline.reply(), Phase.mail)
            if rset.code // 100 != 2:
                answers.decide_rest(rset, Phase.mail)
                raise SessionError(f"RSET refused: {rset}", Phase.mail)
        self._dirty = True
        self._phase = Phase.mail  # before the wait: a failure belongs to it
        mail = self._check(await pipeline.reply(), Phase.mail)
        mail_ok = mail.code // 100 == 2
        if not mail_ok:
            answers.decide_rest(mail, Phase.mail)
            pipeline.withdraw()  # lock-step: no RCPT follows a refused MAIL
        accepted: list[int] = []
        for index in sendable:
            if not pipeline.waiting:
                break
            self._phase = Phase.rcpt  # before the wait: a failure belongs to it
            reply = self._check(await pipeline.reply(), Phase.rcpt)
            if not mail_ok:
                continue  # pipelined after a refused MAIL: read, decides nobody
            if reply.code // 100 == 2:
                accepted.append(index)
            else:
                answers.decide(index, reply, Phase.rcpt)
        if not accepted:
            pipeline.withdraw()  # lock-step: no DATA for nobody
        if not pipeline.waiting:
            if mail_ok:
                await self._rset()  # nobody to send to: RSET instead of DATA
            return
        await self._data(message, pipeline, accepted, answers)

    async def _data(self, message: OutboundMessage, pipeline: CommandPipeline,
                    accepted: list[int], answers: _Answers) -> None:
        """DATA's reply, then the body and the reply after the dot."""
        t = self._timeouts
        self._phase = Phase.data  # before the wait: a failure belongs to it
        data = self._check(await pipeline.reply(), Phase.data)
        if data.code != 354:
            for index in accepted:
                answers.decide(index, data, Phase.data)
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
            answers.decide(index, final, Phase.dot)
