"""Which recipients the bounce receiver accepts. Pure: no protocol, no database.

Accepted, on the bounce domain only:

- a VERP return path that :meth:`VerpCodec.decode` verifies (shape, key, MAC,
  age; checked here, before anything touches the store);
- ``postmaster`` in any case (RFC 5321 4.5.1), also without a domain;
- the configured feedback local parts (``abuse``, ``fbl``...).

Everything else is refused at RCPT. Relay attempts (other domains, source
routes, ``%`` and ``!`` routing, quoted local parts, address literals, the
null address) get 550 5.7.1; unknown, forged and expired tokens all get the
same 550 5.1.1, so a prober learns nothing about which check failed.

Within one transaction a mailbox named twice (in any case, with or without
the domain for postmaster) is accepted once: the returned message is stored
once per transaction, and a repeated recipient adds nothing to it. Postmaster
and feedback recipients, which anyone may use, are capped per transaction
(``[bounce] max_postmaster_recipients``; 452 4.5.3 beyond): each costs a
stored recipient row and a share of the analysis, and none is needed twice.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from twisted.logger import Logger

from hurricane.address import Path
from hurricane.smtp_reply import Reply
from hurricane.verp import VerpCodec, VerpToken, normalise_domain

log = Logger()

RELAY_DENIED = Reply(550, "5.7.1", "Error: relay access denied")
UNKNOWN_RECIPIENT = Reply(550, "5.1.1", "Error: recipient address rejected: "
                                        "user unknown")
TOO_MANY_REPORT_RECIPIENTS = Reply(452, "4.5.3", "Error: too many recipients")
#: The answer to a recipient already accepted in this transaction: RFC 5321
#: lets a server deliver one copy to a mailbox named twice.
DUPLICATE_RECIPIENT = Reply(250, "2.1.5", "Ok")


class RecipientKind(str, enum.Enum):
    """Why a recipient was accepted."""

    verp = "verp"
    postmaster = "postmaster"
    feedback = "feedback"


@dataclass(frozen=True)
class BounceRecipient:
    """An accepted bounce-listener recipient.

    Args:
        address: the address as the client gave it.
        kind: VERP token, postmaster or feedback address.
        token: the verified token (VERP only).
    """

    address: str
    kind: RecipientKind
    token: VerpToken | None = None

    @property
    def delivery_id(self) -> int | None:
        """The delivery the token names, None for postmaster and feedback."""
        return self.token.delivery_id if self.token is not None else None

    @property
    def per_message(self) -> bool:
        """True for a token shared by several recipients of one transaction."""
        return self.token is not None and self.token.per_message

    @property
    def mailbox(self) -> tuple[str, str]:
        """What identifies the mailbox: the same for every spelling of one address."""
        if self.kind is RecipientKind.postmaster:
            return (self.kind.value, "")
        return (self.kind.value, self.address.rpartition("@")[0].lower()
                if "@" in self.address else self.address.lower())


class BouncePolicy:
    """RCPT decisions for the bounce domain.

    Args:
        codec: verifies VERP tokens.
        domain: the bounce domain.
        feedback_addresses: extra local parts accepted (case-insensitive).
        max_report_recipients: postmaster and feedback recipients accepted
            per transaction at most.
    """

    def __init__(self, codec: VerpCodec, domain: str,
                 feedback_addresses: Sequence[str] = ("abuse", "fbl"),
                 max_report_recipients: int = 5) -> None:
        self.codec = codec
        self.domain = normalise_domain(domain)
        self.feedback = frozenset(a.lower() for a in feedback_addresses)
        self.max_report_recipients = max_report_recipients

    def check_sender(self, sender: Path) -> Reply:
        """Any syntactically valid reverse-path, including ``<>``, is fine."""
        return Reply(250, "2.1.0", "Ok")

    def check_recipient(self, path: Path, accepted: Sequence[BounceRecipient] = ()
                        ) -> BounceRecipient | Reply:
        """Accept or refuse one forward-path.

        Args:
            path: the forward-path.
            accepted: the recipients this transaction accepted so far.

        Returns:
            A :class:`BounceRecipient` to add, or the reply: a refusal, or
            :data:`DUPLICATE_RECIPIENT` (accepted, nothing added) for a
            mailbox already accepted.
        """
        verdict = self._check(path)
        if not isinstance(verdict, BounceRecipient):
            return verdict
        if any(a.mailbox == verdict.mailbox for a in accepted):
            return DUPLICATE_RECIPIENT
        if verdict.kind is not RecipientKind.verp and sum(
                a.kind is not RecipientKind.verp for a in accepted) \
                >= self.max_report_recipients:
            log.info("refused recipient {rcpt}: more than {limit} postmaster and feedback "
                     "recipients in one transaction", rcpt=path.address,
                     limit=self.max_report_recipients)
            return TOO_MANY_REPORT_RECIPIENTS
        return verdict

    def _check(self, path: Path) -> BounceRecipient | Reply:
        """The verdict on one forward-path alone."""
        if path.is_null or path.route or path.quoted or path.is_literal:
            return RELAY_DENIED
        local = path.local
        if "%" in local or "!" in local:
            return RELAY_DENIED  # old-style routing through us
        lower = local.lower()
        if path.domain is None:
            # RFC 5321 4.5.1: "Postmaster" without a domain must be accepted.
            if lower == "postmaster":
                return BounceRecipient(path.address, RecipientKind.postmaster)
            return UNKNOWN_RECIPIENT
        if normalise_domain(path.domain) != self.domain:
            return RELAY_DENIED
        if lower == "postmaster":
            return BounceRecipient(path.address, RecipientKind.postmaster)
        if lower in self.feedback:
            return BounceRecipient(path.address, RecipientKind.feedback)
        token = self.codec.decode(path.address)
        if isinstance(token, VerpToken):
            return BounceRecipient(path.address, RecipientKind.verp, token)
        log.info("refused recipient {rcpt}: {reason}", rcpt=path.address, reason=token.reason)
        return UNKNOWN_RECIPIENT
