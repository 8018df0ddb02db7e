"""The outcome vocabulary: every word a delivery's outcome is told in, as a type.

DESIGN.md's outcome model keeps three fields apart (``state``, ``reason``,
``hard``) and names where each answer came from. Those words are stored,
logged, exported and sent to webhooks, so they are written once, here, and
imported everywhere else (STYLE.md habit 18): nothing else spells them.

This is the lowest layer of the package: it imports nothing from Hurricane.
The enums subclass ``(str, Enum)`` (pyproject's ruff comment says why): a
member compares equal to its text, so rows read back and JSON compare as
they always did, but ``str()`` and f-strings give ``State.queued``, not
``queued``; whatever is written out (SQL parameters, log fields, JSON,
text) takes ``.value``.

What a reply or a returned message *does* to a delivery is decided in
:mod:`hurricane.decisions`, in terms of these words.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

__all__ = [
    "ATTEMPT_STATES",
    "Action",
    "BounceStatus",
    "Category",
    "CorrelationKey",
    "EventKind",
    "FINAL_STATES",
    "HARD_REASONS",
    "PENDING_STATES",
    "Phase",
    "PolicyVerb",
    "Reason",
    "STATES",
    "SqliteSync",
    "Source",
    "Stage",
    "State",
    "StreamKind",
    "SuppressionScopeKind",
    "SuppressionSource",
    "TlsPolicy",
    "is_hard",
    "sql_list",
]


class State(str, enum.Enum):
    """Where one (message, recipient) pair stands (DESIGN.md, "state").

    ``queued`` -> (``deferred``)* -> ``delivered`` | ``failed`` |
    ``expired`` | ``suppressed``; a delivered recipient may later become
    ``bounced`` (an asynchronous report) or ``complained`` (ARF).
    """

    queued = "queued"
    deferred = "deferred"
    delivered = "delivered"
    #: Refused permanently during our own SMTP conversation.
    failed = "failed"
    #: Retries ran out: never a reason to suppress the address.
    expired = "expired"
    #: Not sent: the address is on the suppression list.
    suppressed = "suppressed"
    bounced = "bounced"
    complained = "complained"
    #: Not sent yet: its mailing's circuit breaker tripped (issue 19); an
    #: operator releases it (back to pending) or cancels it.
    held = "held"
    #: Never sent: an operator cancelled its held mailing. Final.
    cancelled = "cancelled"

    @property
    def pending(self) -> bool:
        """True while delivery attempts are still due."""
        return self in PENDING_STATES


#: Every state, in the order reports list them.
STATES: tuple[State, ...] = tuple(State)
#: States in which attempts are still due, in the order the SQL partial
#: indexes name them (``state IN ('queued', 'deferred')``: a query must
#: spell the index's predicate the same way for the planner to use it).
PENDING_STATES: tuple[State, ...] = (State.queued, State.deferred)
#: States that no delivery attempt will move any more (``held`` waits for an
#: operator: neither pending nor final).
FINAL_STATES = frozenset(STATES) - frozenset(PENDING_STATES) - {State.held}
#: States one delivery attempt can end in.
ATTEMPT_STATES = frozenset({State.delivered, State.deferred, State.failed, State.expired})


class Reason(str, enum.Enum):
    """Why: one word of Sisimai's reason vocabulary (DESIGN.md, "reason").

    Results compare with the best public bounce analyzer because the words
    are Sisimai's; ``other`` is not one of them (reports use it for a label
    outside the vocabulary, see :meth:`label`).
    """

    userunknown = "userunknown"
    hostunknown = "hostunknown"
    hasmoved = "hasmoved"
    mailboxfull = "mailboxfull"
    suspend = "suspend"
    filtered = "filtered"
    rejected = "rejected"
    blocked = "blocked"
    spamdetected = "spamdetected"
    virusdetected = "virusdetected"
    policyviolation = "policyviolation"
    authfailure = "authfailure"
    requireptr = "requireptr"
    badreputation = "badreputation"
    securityerror = "securityerror"
    norelaying = "norelaying"
    notaccept = "notaccept"
    notcompliantrfc = "notcompliantrfc"
    mesgtoobig = "mesgtoobig"
    exceedlimit = "exceedlimit"
    toomanyconn = "toomanyconn"
    speeding = "speeding"
    expired = "expired"
    networkerror = "networkerror"
    systemerror = "systemerror"
    systemfull = "systemfull"
    mailererror = "mailererror"
    contenterror = "contenterror"
    syntaxerror = "syntaxerror"
    onhold = "onhold"
    failedstarttls = "failedstarttls"
    suppressed = "suppressed"
    undefined = "undefined"
    delivered = "delivered"
    vacation = "vacation"
    feedback = "feedback"

    @classmethod
    def of(cls, text: str | None) -> Reason | None:
        """The reason a text names; a word outside the vocabulary is ``undefined``.

        For words that come from elsewhere (an analyzer's answer, a stored
        row): a new word must not make the value unrecordable.

        Args:
            text: a reason word, or None.

        Returns:
            The member, None for None or "".
        """
        if not text:
            return None
        try:
            return cls(text)
        except ValueError:
            return cls.undefined

    @classmethod
    def label(cls, text: str | None) -> str:
        """A bounded label for a reason text (metrics): the word, ``undefined``
        for none, ``other`` for a word outside the vocabulary."""
        if text is None:
            return cls.undefined.value
        return text if text in _REASON_VALUES else "other"


_REASON_VALUES = frozenset(r.value for r in Reason)

#: Reasons that say the address itself is bad (Sisimai's notion of "hard").
HARD_REASONS = frozenset({Reason.userunknown, Reason.hostunknown, Reason.hasmoved})


def is_hard(reason: str | None, status: str | None) -> bool:
    """Sisimai's hard bounce: a bad address, or ``notaccept`` with a 5.x.x status.

    DESIGN.md: hard means future mail to this address will fail as well; only
    such recipient-side reasons (and complaints) may suppress an address.

    Args:
        reason: the reason word.
        status: the RFC 3463 enhanced status code, if any.

    Returns:
        True for a hard failure.
    """
    if reason in HARD_REASONS:
        return True
    return reason == Reason.notaccept and bool(status) and str(status).startswith("5")


class Category(str, enum.Enum):
    """What a returned message is, as a whole (the analyzer's answer)."""

    #: A non-delivery or delay report (RFC 3464 DSN or free text).
    bounce = "bounce"
    #: An RFC 5965 feedback report (a complaint).
    feedback = "feedback"
    #: An RFC 3834 auto-reply (vacation and the like): never a failure.
    autoreply = "autoreply"
    #: Anything else: nothing to record against a delivery.
    other = "other"


class Action(str, enum.Enum):
    """A DSN's ``Action:`` for one recipient (RFC 3464 2.3.3)."""

    #: The reporter gave up: final, whatever the status class.
    failed = "failed"
    #: Still trying: information only.
    delayed = "delayed"
    delivered = "delivered"
    relayed = "relayed"
    expanded = "expanded"

    @classmethod
    def of(cls, text: str | None) -> Action | None:
        """The action a DSN field names (any case, surrounding blanks), or None."""
        try:
            return cls((text or "").strip().lower())
        except ValueError:
            return None

    @property
    def passed_on(self) -> bool:
        """The reporter handed the message on (delivered, relayed, expanded)."""
        return self in (Action.delivered, Action.relayed, Action.expanded)


class Stage(str, enum.Enum):
    """The SMTP step a refusal answered, coarse: what a report's text can tell.

    The words a bounce report uses ("in reply to RCPT TO command", "after
    end of data") name one of these; our own client knows the finer
    :class:`Phase`.
    """

    conn = "conn"  # connecting, or the server's greeting
    helo = "helo"  # EHLO / HELO (and STARTTLS, which comes between)
    mail = "mail"  # MAIL FROM: the envelope sender
    rcpt = "rcpt"  # RCPT TO: this recipient
    data = "data"  # the DATA command, the end of data, or after it


class Phase(str, enum.Enum):
    """Where our SMTP client was when a reply (or its absence) decided a recipient."""

    connect = "connect"
    greeting = "greeting"
    ehlo = "ehlo"
    starttls = "starttls"
    mail = "mail"
    rcpt = "rcpt"
    #: The DATA command (354 expected).
    data = "data"
    #: The final dot: the reply that takes (or refuses) responsibility.
    dot = "dot"
    #: No reply came in time (the phase that waited is in the text).
    timeout = "timeout"
    #: Our QUIT (decides nothing about a recipient).
    quit = "quit"

    @property
    def stage(self) -> Stage | None:
        """The coarse :class:`Stage` (None for ``timeout``: not a step)."""
        return _PHASE_STAGES.get(self)

    @property
    def command(self) -> str | None:
        """The command this phase answers, in the words Postfix's DSNs use
        ("in reply to RCPT TO command"), for the transaction phases; None
        for the set-up phases."""
        return _PHASE_COMMANDS.get(self)


_PHASE_STAGES = {
    Phase.connect: Stage.conn, Phase.greeting: Stage.conn, Phase.ehlo: Stage.helo,
    Phase.starttls: Stage.helo, Phase.mail: Stage.mail, Phase.rcpt: Stage.rcpt,
    Phase.data: Stage.data, Phase.dot: Stage.data,
}
_PHASE_COMMANDS = {
    Phase.mail: "MAIL FROM", Phase.rcpt: "RCPT TO", Phase.data: "DATA",
    Phase.dot: "end of DATA",
}


class EventKind(str, enum.Enum):
    """What an event records."""

    queued = "queued"  # accepted from the application
    attempt = "attempt"  # one SMTP delivery attempt (any result)
    suppressed = "suppressed"  # not sent: the address is on the suppression list
    expired = "expired"  # retries ran out (max_age)
    bounce = "bounce"  # an asynchronous non-delivery report
    delayed = "delayed"  # a "delayed" DSN: information only
    complaint = "complaint"  # ARF feedback report
    autoreply = "autoreply"  # RFC 3834 auto-reply: information only
    relayed = "relayed"  # a "relayed"/"delivered"/"expanded" DSN: information only
    retry = "retry"  # an operator asked for a retry now
    note = "note"  # anything else an operator or a tool wants to say
    #: A provider's or a mailing's policy action (issue 19): kept in
    #: ``policy_events``, not in a delivery's events; sent to the accounting
    #: log and to webhooks under this type.
    policy = "policy"
    unsubscribed = "unsubscribed"  # a one-click (RFC 8058) or mailto unsubscribe


class PolicyVerb(str, enum.Enum):
    """What an automatic (or operator) action did to a provider or a mailing
    (issue 19: a ``policy`` event)."""

    throttle = "throttle"  # the provider's rate was cut (and it paused)
    suspend = "suspend"  # the provider sends nothing for a while
    ramp = "ramp"  # the rate grew after sustained success
    restore = "restore"  # the rate is back at its maximum
    hold = "hold"  # a mailing's breaker tripped: its pending recipients are held
    release = "release"  # an operator sent the held recipients after all
    cancel = "cancel"  # an operator cancelled them


class Source(str, enum.Enum):
    """Where a classification came from."""

    smtp = "smtp"  # a reply in our own SMTP conversation
    dsn = "dsn"  # an RFC 3464 delivery status notification
    heuristic = "heuristic"  # free-text bounce analysis
    arf = "arf"  # RFC 5965 feedback report
    autoreply = "autoreply"  # RFC 3834 auto-reply
    local = "local"  # decided here (suppression, expiry, DNS)
    operator = "operator"  # an operator's action

    @classmethod
    def of(cls, text: str | None) -> Source | None:
        """The source a text names, or None (unknown or empty)."""
        try:
            return cls(text) if text else None
        except ValueError:
            return None


class SuppressionSource(str, enum.Enum):
    """What put an address on the suppression list."""

    smtp = "smtp"  # a hard refusal in our own SMTP conversation
    bounce = "bounce"  # a hard asynchronous bounce
    complaint = "complaint"  # a feedback-loop complaint
    operator = "operator"  # an operator (CLI, console, web, API)
    unsubscribe = "unsubscribe"  # a one-click or mailto unsubscribe (RFC 8058)
    dns = "dns"  # a domain that did not resolve, confirmed over time


class CorrelationKey(enum.StrEnum):
    """How a returned message was matched to a delivery, strongest first.

    Only the *verified* keys rest on our MAC over one delivery; the others
    are hints anyone who received the message (or knows an address) can
    forge, and an event matched by them must change nothing
    (:func:`hurricane.decisions.decide_bounce`).
    """

    #: The envelope recipient: a per-recipient VERP token verified at RCPT time.
    verp = "verp"
    #: Our X-Hurricane-Token header in the returned original, MAC verified.
    header_token = "header-token"
    #: RFC 3461 ENVID echoed by a DSN, MAC verified.
    envid = "envid"
    #: A verified per-message token shared by several recipients: proves the
    #: message, not which of its recipients a report names.
    message_token = "message-token"
    #: Our Message-ID (seen by every recipient of the message).
    message_id = "message-id"
    #: Another recipient of the message a verified token names, found by the
    #: address in the report's text.
    sibling = "sibling"
    #: RFC 3461 ORCPT: the address as we sent it.
    orcpt = "orcpt"
    #: The bare recipient address, matched against recent deliveries.
    recipient = "recipient"

    @property
    def verified(self) -> bool:
        """True when the key proves which delivery the report is about."""
        return self in _VERIFIED_KEYS

    @classmethod
    def is_verified(cls, key: str | None) -> bool:
        """True for the text of a verified key; False for None or anything else."""
        if key is None:
            return False
        try:
            return cls(key).verified
        except ValueError:
            return False


_VERIFIED_KEYS = frozenset(
    {CorrelationKey.verp, CorrelationKey.header_token, CorrelationKey.envid})


class BounceStatus(str, enum.Enum):
    """Where a stored returned message stands."""

    pending = "pending"  # stored, not analyzed yet (the 250 went out)
    analyzed = "analyzed"  # analyzed and recorded
    failed = "failed"  # the analysis failed; the raw bytes are kept


class TlsPolicy(str, enum.Enum):
    """What our client demands of a destination's STARTTLS."""

    #: Never STARTTLS.
    none = "none"
    #: STARTTLS when offered, any certificate; clear text when not offered.
    opportunistic = "opportunistic"
    #: STARTTLS or no delivery; any certificate.
    require = "require"
    #: STARTTLS with a certificate valid for the MX host name.
    verify = "verify"

    @property
    def required(self) -> bool:
        """True when a session without TLS must not carry mail."""
        return self in (TlsPolicy.require, TlsPolicy.verify)


class SqliteSync(str, enum.Enum):
    """SQLite's ``PRAGMA synchronous`` levels (FULL survives power loss; NORMAL a crash)."""

    off = "OFF"
    normal = "NORMAL"
    full = "FULL"
    extra = "EXTRA"

    @classmethod
    def of(cls, text: str) -> SqliteSync:
        """The level a text names, in any case.

        Raises:
            ValueError: not a SQLite level.
        """
        try:
            return cls(text.strip().upper())
        except ValueError:
            levels = ", ".join(level.value for level in cls)
            raise ValueError(f"synchronous must be one of {levels}") from None


def sql_list(members: Sequence[enum.Enum]) -> str:
    """Members as a SQL literal list, ``'queued', 'deferred'``, in the order given.

    For statement text written once at import time (the store's SQL and its
    partial indexes must agree on the exact text); values are never user
    input, and none contains a quote.

    Args:
        members: enum members whose values are plain words.

    Returns:
        The quoted values joined with ``", "``.
    """
    return ", ".join(f"'{m.value}'" for m in members)


class StreamKind(str, enum.Enum):
    """A message stream's kind: what the mail is, for the receivers' rules.

    Bulk mail (newsletters, campaigns) carries the one-click unsubscribe
    headers (RFC 8058) and its unsubscribes and complaints suppress only its
    stream; transactional mail (password resets, receipts) never does.
    """

    transactional = "transactional"
    bulk = "bulk"


class SuppressionScopeKind(str, enum.Enum):
    """How far a suppression entry reaches: every stream, one stream, one mailing,
    or (``domain``) every address of a domain that did not resolve."""

    global_ = "global"
    stream = "stream"
    mailing = "mailing"
    domain = "domain"
