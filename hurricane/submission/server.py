"""The submission listener (default 127.0.0.1:2587): applications hand messages in.

A client may relay when it is in ``trusted_networks`` (unless
``require_auth``) or has authenticated with AUTH PLAIN or LOGIN. AUTH is
offered only over TLS, or to a loopback client. "Accepted" means
"committed": the 250 goes out only after ``store.enqueue`` returned; a store
failure answers 451 4.3.0.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from functools import partial
from typing import cast

from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import Portal
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from hurricane.config import SubmissionConfig
from hurricane.credentials import Attempt, SecretVerifier
from hurricane.model import NewMessage, NewRecipient, State
from hurricane.smtpd.address import Path
from hurricane.smtpd.limits import ServerLimits
from hurricane.smtpd.protocol import Envelope, HardenedESMTP, HardenedFactory, Recipient
from hurricane.smtpd.reply import Reply, ReplyError
from hurricane.smtpd.tls import tls_context_from_files
from hurricane.store.interface import IOutcomeStore, StoreUnavailable
from hurricane.submission.auth import (
    AuthThrottle,
    ISubmissionUser,
    VerifierBusy,
    build_portal,
    load_users,
    remembered_login,
)
from hurricane.submission.message import prepare_message
from hurricane.submission.policy import AUTH_NEEDS_TLS, RELAY_DENIED, SubmissionPolicy

log = Logger()

_MECHANISMS = ("PLAIN", "LOGIN")


def limits_from_config(config: SubmissionConfig) -> ServerLimits:
    """The listener limits of ``[submission]``."""
    # Applications must send CRLF; refusing a bare LF shows the bug at
    # once instead of guessing what the application meant.
    return ServerLimits.from_config(config, reject_bare_line_endings=True)


class SubmissionProtocol(HardenedESMTP):
    """One submission connection."""

    factory: SubmissionFactory
    # RFC 4954 5: AUTH=<mailbox> on MAIL; accepted and ignored.
    extra_mail_parameters = frozenset({"AUTH"})

    def __init__(self, factory: SubmissionFactory) -> None:
        super().__init__(factory)
        self.auth_failures = 0
        self._auth_mechanism: str | None = None
        self._auth_username: bytes | None = None
        #: The verification in flight, counted as a failure until it succeeds.
        self._auth_attempt: Attempt | None = None

    # -- AUTH -------------------------------------------------------------

    def auth_offered(self) -> bool:
        """True when AUTH may be used on this connection now."""
        return self.factory.portal is not None and self.factory.policy.auth_offered(
            self.session.peer, self.session.tls)

    def ehlo_keywords(self) -> list[str]:
        """Adds AUTH PLAIN LOGIN where it is offered."""
        keywords = super().ehlo_keywords()
        if self.auth_offered():
            keywords.append("AUTH " + " ".join(_MECHANISMS))
        return keywords

    def tls_started(self) -> None:
        """Forget authentication after STARTTLS (RFC 3207 4.2)."""
        self._auth_mechanism = None
        self._auth_username = None

    def do_AUTH(self, rest: str) -> None:
        """AUTH PLAIN [initial] | AUTH LOGIN [initial] (RFC 4954)."""
        if self.factory.portal is None:
            self.send_reply(Reply(503, "5.5.1", "Error: authentication not enabled"))
            return
        if self.session.helo is None or not self.session.esmtp:
            self.send_reply(Reply(503, "5.5.1", "Error: send EHLO first"))
            return
        if self.session.user is not None:
            self.send_reply(Reply(503, "5.5.1", "Error: already authenticated"))
            return
        if self.transaction is not None:
            self.send_reply(Reply(503, "5.5.1", "Error: AUTH not allowed during a mail "
                                                "transaction"))
            return
        if not self.auth_offered():
            self.send_reply(AUTH_NEEDS_TLS)
            return
        # (A blocked address is answered once its credentials are in, by
        # auth_line: a password already verified still gets in.)
        mechanism, _, initial = rest.partition(" ")
        mechanism = mechanism.upper()
        initial = initial.strip()
        if mechanism not in _MECHANISMS:
            self.send_reply(Reply(504, "5.5.4", "Error: unsupported authentication mechanism"))
            return
        self._auth_mechanism = mechanism
        self._auth_username = None
        self.enter_auth()
        if initial == "=":
            self.auth_line(b"")  # RFC 4954 4: "=" is an empty initial response
        elif initial:
            self.auth_line(initial.encode("ascii"))
        elif mechanism == "PLAIN":
            self.send_lines(334, [""])
        else:
            self.send_lines(334, [base64.b64encode(b"Username:").decode("ascii")])

    def auth_aborted(self) -> None:
        """Forget a half-finished AUTH exchange."""
        self._auth_mechanism = None
        self._auth_username = None

    def auth_line(self, line: bytes) -> None:
        """One response line of the AUTH exchange."""
        mechanism = self._auth_mechanism
        if line.strip() == b"*":
            self.leave_auth()
            self.auth_aborted()
            self.send_reply(Reply(501, "5.7.0", "Error: authentication aborted"))
            return
        try:
            decoded = base64.b64decode(line.strip(), validate=True)
        except (binascii.Error, ValueError):
            self.leave_auth()
            self.auth_aborted()
            self.send_reply(Reply(501, "5.5.2", "Error: cannot decode response"))
            return
        if mechanism == "LOGIN" and self._auth_username is None:
            self._auth_username = decoded
            self.send_lines(334, [base64.b64encode(b"Password:").decode("ascii")])
            return
        self.leave_auth()
        if mechanism == "LOGIN":
            username, password = self._auth_username or b"", decoded
        else:
            parts = decoded.split(b"\0")
            if len(parts) != 3 or (parts[0] and parts[0] != parts[1]):
                # RFC 4616: authzid must be empty or the authcid (no proxying).
                self.auth_aborted()
                self._auth_failed()
                return
            username, password = parts[1], parts[2]
        self.auth_aborted()
        # Counted as a failure from now until the answer, as the web counts
        # its logins (credentials.Attempt): counted only on the answer,
        # guesses sent on several connections at once were all verified
        # before the first failure blocked the address (7 guesses with
        # max_auth_failures = 3 on 5 connections, issue 23's second review).
        # A blocked address is refused pbkdf2 work, not a password verified
        # already. An attempt whose connection is lost before the answer
        # stays a failure.
        self._auth_attempt = self.factory.throttle.attempt(self.session.peer)
        if self._auth_attempt is None and not remembered_login(
                self.factory.portal, username, password):
            self.send_reply(Reply(454, "4.7.0", "Error: too many authentication failures, "
                                                "try again later"))
            return
        portal = self.factory.portal
        assert portal is not None  # AUTH is not offered (or is refused) without one
        # The verdict becomes what to do about it, done from wait_for's
        # callback: the reply leaves in one write with the replies to the
        # commands pipelined behind the AUTH. (The realm's avatar provides
        # the interface asked for.)
        login = portal.login(UsernamePassword(username, password), None, ISubmissionUser)
        answer: Deferred[Callable[[], None]] = login.addCallbacks(
            lambda result: partial(self._auth_ok, cast(ISubmissionUser, result[1])),
            lambda failure: partial(self._auth_error, failure))
        self.wait_for(answer, lambda act: act())

    def _auth_ok(self, user: ISubmissionUser) -> None:
        self.session.user = user.name
        self._settle_auth()
        # An application that proved who it is may hold as many connections
        # as it needs (its pool), within the global cap: the per-address
        # limit is for clients nobody knows. The greeting could not wait for
        # this (see SubmissionFactory.counts_per_ip).
        self.leave_per_ip_limit()
        log.info("AUTH ok for {user} from {peer}", user=user.name, peer=self.session.peer)
        self.send_reply(Reply(235, "2.7.0", "Authentication successful"))

    def _settle_auth(self) -> None:
        """Withdraw the provisional failure of the attempt just answered (not a failure)."""
        attempt, self._auth_attempt = self._auth_attempt, None
        if attempt is not None:
            attempt.succeeded()

    def _auth_error(self, failure: Failure) -> None:
        if failure.check(UnauthorizedLogin):
            self._auth_failed()
            return
        self._settle_auth()     # nothing was found wrong with the credentials
        if failure.check(VerifierBusy):
            # Too many passwords are waiting for the pool: nothing was
            # checked, so it is not the client's failure.
            self.send_reply(Reply(454, "4.7.0", "Error: temporary authentication failure, "
                                                "try again later"))
            return
        log.failure("AUTH error for {peer}", failure, peer=self.session.peer)
        self.send_reply(Reply(454, "4.7.0", "Error: temporary authentication failure"))

    def _auth_failed(self) -> None:
        """Answer 535 and count the failure; past the limits, 421 and close."""
        self.send_reply(Reply(535, "5.7.8", "Error: authentication credentials invalid"))
        self.auth_failures += 1
        attempt, self._auth_attempt = self._auth_attempt, None
        if attempt is not None:
            attempt.failed()
            blocked = self.factory.throttle.is_blocked(self.session.peer)
        else:   # refused before any verification (a malformed PLAIN response)
            blocked = self.factory.throttle.record_failure(self.session.peer)
        log.info("AUTH failed from {peer} ({count})", peer=self.session.peer,
                 count=self.auth_failures)
        if self.auth_failures >= self.factory.config.max_auth_failures or blocked:
            self.send_reply(Reply(421, "4.7.0", f"{self.hostname} Error: too many "
                                                "authentication failures"))
            self.close()

    # -- envelope ---------------------------------------------------------

    def validate_recipient(self, recipient: Path, params: Mapping[str, str | None]
                           ) -> Recipient | Reply:
        """Relay only for trusted or authenticated clients; refuse odd forms."""
        if not self.factory.policy.may_relay(self.session.peer, self.session.user):
            log.info("relay denied for {peer} to {rcpt}", peer=self.session.peer,
                     rcpt=recipient.address)
            return RELAY_DENIED
        if recipient.is_null:
            return Reply(553, "5.1.3", "Error: the null address is not a recipient")
        if recipient.domain is None:
            return Reply(553, "5.1.3", "Error: recipient address must be fully qualified")
        return Recipient(recipient, params)

    async def message_received(self, envelope: Envelope, data: bytes) -> Reply:
        """Prepare the message, enqueue it, and answer only once it is committed."""
        factory = self.factory
        try:
            prepared = prepare_message(data, hostname=factory.hostname,
                                       now=envelope.received_at, streams=factory.streams)
        except ReplyError as e:
            log.info("refused message from {peer}: {reply}", peer=envelope.session.peer,
                     reply=str(e.reply))
            return e.reply
        seen: set[str] = set()
        recipients = []
        for rcpt in envelope.recipients:
            key = rcpt.path.address.lower()
            if key not in seen:  # the same address twice is one delivery
                seen.add(key)
                recipients.append(NewRecipient(rcpt.path.address))
        client = envelope.session.peer
        if envelope.session.user is not None:
            client += f" user={envelope.session.user}"
        message = NewMessage(
            sender=envelope.sender.address,
            recipients=tuple(recipients),
            body=prepared.body,
            mailing_id=prepared.mailing_id,
            message_id=prepared.message_id,
            header_message_id=prepared.header_message_id,
            source="smtp",
            client=client,
            metadata={"helo": envelope.session.helo, "tls": envelope.session.tls},
            stream=prepared.stream,
        )
        try:
            result = await factory.store.enqueue(message, envelope.received_at)
        except StoreUnavailable as e:
            log.warn("store unavailable, answered 451 to {peer}: {error}",
                     peer=envelope.session.peer, error=str(e))
            return Reply(451, "4.3.0", "Error: queue temporarily unavailable, try again later")
        log.info("queued {queue_id} from {client} for {count} recipients",
                 queue_id=result.queue_id, client=client, count=len(recipients))
        ignored = ""
        if prepared.misnamed:
            # Otherwise the mailing silently has no id: say it where the
            # operator looks (the log) and where the developer does (the reply).
            headers = ", ".join(written for written, _ in prepared.misnamed)
            meant = ", ".join(right for _, right in prepared.misnamed)
            log.warn("queued {queue_id} from {client} with header {header} ignored: "
                     "Hurricane reads {expected}", queue_id=result.queue_id, client=client,
                     header=headers, expected=meant)
            ignored = f" (ignored {headers}: Hurricane reads {meant})"
        try:
            # the body goes along only when something here will be sent
            queued = any(r.state is State.queued for r in result.recipients)
            factory.on_enqueued(result.message_pk, message.body if queued else None)
        except Exception:
            # The message is committed; a failing hook must not turn that into an error.
            log.failure("on_enqueued hook failed")
        return Reply(250, "2.0.0", f"Ok: queued as {result.queue_id}{ignored}")


class SubmissionFactory(HardenedFactory):
    """Builds submission connections.

    Args:
        config: the ``[submission]`` section.
        store: where messages are enqueued.
        hostname: our name (greeting, Received, added Message-IDs).
        clock: the injected reactor time.
        on_enqueued: called after each committed enqueue with the message's
            key and its body as stored, or None when every recipient was
            suppressed (the scheduler's ``wake``, which keeps the body for
            the first delivery).
        tls_context: server context factory for STARTTLS, or None.
        portal: the AUTH portal; None disables AUTH.
    """

    protocol = SubmissionProtocol

    def __init__(
        self,
        config: SubmissionConfig,
        store: IOutcomeStore,
        hostname: str,
        clock: IReactorTime,
        on_enqueued: Callable[[int, bytes | None], None] = lambda message_pk, body: None,
        tls_context: IOpenSSLServerConnectionCreator | None = None,
        portal: Portal | None = None,
    ) -> None:
        super().__init__(hostname, limits_from_config(config), clock, tls_context)
        self.config = config
        self.store = store
        self.on_enqueued = on_enqueued
        self.portal = portal
        self.policy = SubmissionPolicy(config.trusted_networks, config.require_auth)
        self.throttle = AuthThrottle(clock, config.max_auth_failures, config.auth_block_seconds)
        #: The configured stream names (``X-Hurricane-Stream``); None accepts
        #: any valid name (the server sets it from ``[[streams]]``).
        self.streams: frozenset[str] | None = None

    def counts_per_ip(self, ip: str) -> bool:
        """Trusted networks are exempt from ``max_connections_per_ip``; others count.

        The operator's own application hosts open connection pools larger
        than a per-client limit meant for strangers (Postfix exempts
        ``$mynetworks`` the same way), even with ``require_auth``, where
        they must still authenticate to send. Everyone else counts from the
        greeting until AUTH succeeds (:meth:`SubmissionProtocol._auth_ok`):
        the greeting has to be decided before anyone can authenticate, and
        greeting strangers beyond the limit would let one address fill
        ``max_connections``, which the limit exists to prevent. So a pool
        from an untrusted host grows past the limit as its connections
        authenticate, with at most ``max_connections_per_ip`` of them
        between greeting and AUTH at a time.
        """
        return not self.policy.is_trusted(ip)


def build_submission_factory(
    config: SubmissionConfig,
    store: IOutcomeStore,
    hostname: str,
    clock: IReactorTime,
    on_enqueued: Callable[[int, bytes | None], None] = lambda message_pk, body: None,
    verifier: SecretVerifier | None = None,
) -> SubmissionFactory:
    """A :class:`SubmissionFactory` from configuration: users, portal and TLS.

    Args:
        verifier: verifies passwords off the reactor thread (the server's
            :class:`~hurricane.credentials.SecretVerifier` on a thread pool);
            None verifies inline (tests only).

    Raises:
        ValueError: naming an unreadable users file or TLS file.
    """
    users = load_users(config)
    portal = build_portal(users, verifier) if users else None
    tls = (tls_context_from_files(config.tls_certificate, config.tls_key)
           if config.tls_certificate else None)
    return SubmissionFactory(config, store, hostname, clock, on_enqueued, tls, portal)
