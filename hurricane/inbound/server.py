"""The bounce receiver (default 127.0.0.1:2525): returned mail for the VERP domain.

It accepts only what :class:`hurricane.inbound.policy.BouncePolicy` accepts,
never relays and never sends mail (no backscatter: refusals happen at RCPT
time, inside the SMTP conversation). After the dot the transaction becomes
one stored returned message, however many recipients it had (the raw bytes
once, every envelope recipient with the delivery its token names): a message
to twenty recipients is stored and analyzed once, not twenty times. The 250
goes out only once it is committed (group commit with the other sessions'
messages), a store failure answers 451 4.3.0, and then ``on_stored`` gets
the bounce id and the message (the lead wires it to the analysis pipeline,
which then need not read it back).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import cast

from twisted.internet.interfaces import (
    IDelayedCall,
    IOpenSSLServerConnectionCreator,
    IReactorTime,
)
from twisted.logger import Logger

from hurricane.config import BounceConfig
from hurricane.inbound.policy import BouncePolicy, BounceRecipient
from hurricane.model import ReturnedMessage, ReturnedRecipient
from hurricane.smtpd.address import Path
from hurricane.smtpd.limits import ServerLimits
from hurricane.smtpd.protocol import Envelope, HardenedESMTP, HardenedFactory, Recipient
from hurricane.smtpd.reply import Reply
from hurricane.smtpd.tls import tls_context_from_files
from hurricane.store.interface import IOutcomeStore, StoreUnavailable
from hurricane.unsubscribe import MAILTO_PREFIX, Unsubscriber, UnsubscribeToken
from hurricane.verp import VerpCodec, normalise_domain

log = Logger()


def limits_from_config(config: BounceConfig) -> ServerLimits:
    """The listener limits of ``[bounce]``."""
    # A returned message from an old MTA with bare LFs is still worth
    # analysing, and nothing received here is ever relayed: normalise.
    # End of data stays CRLF.CRLF only either way.
    return ServerLimits.from_config(config, reject_bare_line_endings=False)


#: How long "stored" log lines are gathered into one (seconds).
STORED_LOG_DELAY = 0.1


def _token(recipient: Recipient) -> BounceRecipient:
    """What the policy attached to a recipient this listener accepted."""
    return cast(BounceRecipient, recipient.info)


class BounceProtocol(HardenedESMTP):
    """One connection to the bounce receiver (no AUTH)."""

    factory: BounceFactory

    def validate_sender(self, sender: Path, params: Mapping[str, str | None]) -> Reply:
        """Any reverse-path, including the null sender."""
        return self.factory.policy.check_sender(sender)

    def validate_recipient(self, recipient: Path, params: Mapping[str, str | None]
                           ) -> Recipient | Reply:
        """VERP, postmaster or feedback addresses on the bounce domain only, and
        the mailto unsubscribe addresses (``u-TOKEN``) of bulk streams."""
        tx = self.transaction
        unsubscribe = self._unsubscribe(recipient)
        if unsubscribe is not None:
            return unsubscribe
        accepted = [r.info for r in tx.recipients
                    if isinstance(r.info, BounceRecipient)] if tx is not None else []
        verdict = self.factory.policy.check_recipient(recipient, accepted)
        if isinstance(verdict, BounceRecipient):
            return Recipient(recipient, params, verdict)
        return verdict

    def _unsubscribe(self, recipient: Path) -> Recipient | Reply | None:
        """A mailto unsubscribe address: accepted when its token verifies (the
        store is not touched for a forged one); None for any other address."""
        unsubscriber = self.factory.unsubscriber
        if unsubscriber is None or recipient.domain is None or recipient.quoted or \
                not recipient.local.lower().startswith(MAILTO_PREFIX) or \
                normalise_domain(recipient.domain) != self.factory.policy.domain:
            return None
        checked = unsubscriber.codec.decode_mailto(recipient.local)
        if not isinstance(checked, UnsubscribeToken):
            log.info("refused unsubscribe address {rcpt}: {reason}", rcpt=recipient.address,
                     reason=checked.reason)
            return Reply(550, "5.1.1", "Error: no such unsubscribe address")
        return Recipient(recipient, {}, MailtoUnsubscribe(recipient.local[len(MAILTO_PREFIX):]))

    async def _record_unsubscribes(self, envelope: Envelope) -> Reply | None:
        """Record the mailto unsubscribes of a transaction (as a one-click POST would)."""
        unsubscriber = self.factory.unsubscriber
        for rcpt in envelope.recipients:
            if isinstance(rcpt.info, MailtoUnsubscribe) and unsubscriber is not None:
                try:
                    await unsubscriber.unsubscribe(rcpt.info.token, "mailto")
                except StoreUnavailable as e:
                    log.warn("store unavailable, answered 451 to {peer}: {error}",
                             peer=envelope.session.peer, error=str(e))
                    return Reply(451, "4.3.0", "Error: temporarily unable to accept the "
                                               "message, try again later")
        return None

    async def message_received(self, envelope: Envelope, data: bytes) -> Reply:
        """Store the message once for all its recipients, then answer 250."""
        factory = self.factory
        s = envelope.session
        client = f"[{s.peer}] helo={s.helo}"
        refused = await self._record_unsubscribes(envelope)
        if refused is not None:
            return refused
        returned = [rcpt for rcpt in envelope.recipients
                    if isinstance(rcpt.info, BounceRecipient)]
        if not returned:
            return Reply(250, "2.0.0", "Ok: unsubscribed")
        recipients = tuple(
            ReturnedRecipient(rcpt.path.address, _token(rcpt).delivery_id,
                              _token(rcpt).per_message)
            for rcpt in returned
        )
        message = ReturnedMessage(
            raw=data,
            mail_from=envelope.sender.address,
            rcpt_to=recipients[0].address,
            received_at=envelope.received_at,
            delivery_id=recipients[0].delivery_id,
            client=client,
            recipients=recipients,
        )
        try:
            # One write; the store gathers those of concurrent sessions into
            # one commit.
            bounce_id = await factory.store.store_bounce(message)
        except StoreUnavailable as e:
            log.warn("store unavailable, answered 451 to {peer}: {error}", peer=s.peer,
                     error=str(e))
            return Reply(451, "4.3.0", "Error: temporarily unable to accept the message, "
                                       "try again later")
        factory.stored(bounce_id, len(recipients), client)
        try:
            factory.on_stored(bounce_id, message)
        except Exception:
            # Stored is stored: analysis can be replayed from the store.
            log.failure("on_stored hook failed for bounce {bounce_id}", bounce_id=bounce_id)
        return Reply(250, "2.0.0", "Ok: stored")


class BounceFactory(HardenedFactory):
    """Builds bounce-receiver connections.

    Args:
        config: the ``[bounce]`` section.
        codec: verifies VERP tokens.
        store: where returned messages are stored.
        hostname: our name (greeting, Received).
        clock: the injected reactor time.
        on_stored: called with the bounce id and the stored message after
            its commit.
        tls_context: server context factory for STARTTLS, or None.
    """

    protocol = BounceProtocol

    def __init__(
        self,
        config: BounceConfig,
        codec: VerpCodec,
        store: IOutcomeStore,
        hostname: str,
        clock: IReactorTime,
        on_stored: Callable[[int, ReturnedMessage], None] = lambda bounce_id, message: None,
        tls_context: IOpenSSLServerConnectionCreator | None = None,
    ) -> None:
        super().__init__(hostname, limits_from_config(config), clock, tls_context)
        self.config = config
        self.store = store
        self.on_stored = on_stored
        self.policy = BouncePolicy(codec, config.domain, config.feedback_addresses,
                                   config.max_postmaster_recipients)
        #: Records mailto unsubscribes (``u-TOKEN@``); None refuses them as
        #: unknown addresses.
        self.unsubscriber: Unsubscriber | None = None
        #: Messages stored since the last "stored" log line (see :meth:`stored`).
        self._stored: list[tuple[int, int, str]] = []
        self._stored_log: IDelayedCall | None = None

    def stored(self, bounce_id: int, recipients: int, client: str) -> None:
        """Log a stored message, in one line with those stored within
        :data:`STORED_LOG_DELAY` of it.

        One log event per message cost the reactor thread ~20 µs of CPU and,
        for each line written, a wait of ~250 µs for the GIL after the write
        (measured under a bounce flood, where the SQLite and analysis
        threads want it too); one line for the messages of a tenth of a
        second costs that once. The ``messages`` field keeps each message's
        details for JSON logs.
        """
        self._stored.append((bounce_id, recipients, client))
        if self._stored_log is None:
            self._stored_log = self.clock.callLater(STORED_LOG_DELAY, self._log_stored)

    def _log_stored(self) -> None:
        self._stored_log = None
        done, self._stored = self._stored, []
        if not done:
            return
        log.info(
            "{count} returned message(s) stored: {summary}", count=len(done),
            summary=", ".join(f"{bounce_id} for {n} recipient(s) from {client}"
                              for bounce_id, n, client in done),
            messages=[{"bounce_id": bounce_id, "recipients": n, "client": client}
                      for bounce_id, n, client in done],
        )

    def stopFactory(self) -> None:
        """Write the last "stored" line now (the reactor may not turn again)."""
        if self._stored_log is not None and self._stored_log.active():
            self._stored_log.cancel()
        self._log_stored()
        super().stopFactory()  # type: ignore[no-untyped-call]


class MailtoUnsubscribe:
    """A recipient's info: a verified mailto unsubscribe token."""

    __slots__ = ("token",)

    def __init__(self, token: str) -> None:
        self.token = token


def build_bounce_factory(
    config: BounceConfig,
    codec: VerpCodec,
    store: IOutcomeStore,
    hostname: str,
    clock: IReactorTime,
    on_stored: Callable[[int, ReturnedMessage], None] = lambda bounce_id, message: None,
) -> BounceFactory:
    """A :class:`BounceFactory` from configuration, with TLS when configured.

    Raises:
        ValueError: naming an unusable TLS file.
    """
    tls = (tls_context_from_files(config.tls_certificate, config.tls_key)
           if config.tls_certificate else None)
    return BounceFactory(config, codec, store, hostname, clock, on_stored, tls)
