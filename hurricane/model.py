"""Value types shared by the store, delivery, the bounce receiver and reports.

The outcome model (DESIGN.md): every (message, recipient) pair is one
*delivery* row with a ``state``; every move of that state is explained by an
append-only *event*. ``state``, ``reason`` and ``hard`` are separate fields
and must never be folded into one another.

The words themselves (states, reasons, event kinds, sources, correlation
keys...) live in :mod:`hurricane.outcome`; the ones this module used to
define are imported here too, so ``from hurricane.model import State`` keeps
working.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from hurricane.outcome import (
    FINAL_STATES,
    CorrelationKey,
    EventKind,
    Reason,
    Source,
    State,
)

__all__ = [
    "AttemptResult",
    "BounceEvent",
    "CorrelationKey",
    "DeferredDomain",
    "Delivery",
    "DomainStats",
    "EnqueueResult",
    "EnqueuedRecipient",
    "Event",
    "EventKind",
    "EventRecord",
    "FINAL_STATES",
    "Finding",
    "NewMessage",
    "NewRecipient",
    "Outcome",
    "Reason",
    "ReasonCount",
    "ReturnedMessage",
    "ReturnedRecipient",
    "Source",
    "State",
    "StoredBounce",
    "StoredMessage",
    "Summary",
    "Suppression",
]


@dataclass(frozen=True)
class NewRecipient:
    """One recipient of a message being enqueued."""

    address: str
    #: RFC 3461 ORCPT the application gave, if any.
    orcpt: str | None = None


@dataclass(frozen=True)
class NewMessage:
    """A message accepted from an application, not yet stored."""

    sender: str  # the application's envelope sender ("" for null)
    recipients: tuple[NewRecipient, ...]
    body: bytes  # the final RFC 5322 bytes, identifiers headers removed
    mailing_id: str | None = None  # exact form the application gave
    message_id: str | None = None  # the application's own message id (X-Hurricane-Message-Id)
    header_message_id: str | None = None  # RFC 5322 Message-ID, without <>
    source: str = "smtp"  # smtp | api
    client: str | None = None  # submitting client address / user, for the record
    metadata: dict[str, object] = field(default_factory=dict)
    #: The message stream (``X-Hurricane-Stream`` or the API's ``stream``);
    #: None is the default transactional stream.
    stream: str | None = None


@dataclass(frozen=True)
class EnqueuedRecipient:
    """What happened to one recipient at enqueue time."""

    delivery_id: int
    address: str
    state: State  # queued or suppressed
    reason: str | None = None


@dataclass(frozen=True)
class EnqueueResult:
    """The store's answer to an enqueue: the message's queue id and its rows."""

    queue_id: str
    message_pk: int
    recipients: tuple[EnqueuedRecipient, ...]


@dataclass(frozen=True)
class Delivery:
    """One (message, recipient) row, as the scheduler and reports see it."""

    delivery_id: int
    message_pk: int
    queue_id: str
    sender: str
    recipient: str
    domain: str
    state: State
    reason: str | None
    hard: bool
    attempts: int
    next_attempt_at: float | None
    code: int | None
    status: str | None
    text: str | None
    remote_host: str | None
    mailing_id: str | None
    message_id: str | None
    header_message_id: str | None
    orcpt: str | None
    created_at: float
    updated_at: float
    delivered_at: float | None = None
    bounced_at: float | None = None
    lease_owner: str | None = None
    lease_until: float | None = None
    #: The message's stream (None: the default transactional stream).
    stream: str | None = None


@dataclass(frozen=True, kw_only=True)
class Finding:
    """What one attempt or one returned message says about one delivery.

    The fields a delivery attempt (:class:`AttemptResult`) and an analyzed
    returned message (:class:`BounceEvent`) have in common, declared once:
    both become one event row, and what they change is decided in
    :mod:`hurricane.decisions`. Every field is keyword-only.

    ``reason`` and ``source`` accept their words as text too and hold the
    :mod:`hurricane.outcome` member after construction (a word outside the
    vocabulary is a ValueError); a ``source`` left out is the kind's usual
    one (:attr:`DEFAULT_SOURCE`).
    """

    #: The source of a finding that does not name one.
    DEFAULT_SOURCE: ClassVar[Source] = Source.local

    delivery_id: int
    at: float
    #: SMTP reply code.
    code: int | None = None
    #: RFC 3463 enhanced status code.
    status: str | None = None
    #: The reply's or the report's diagnostic text.
    text: str | None = None
    reason: Reason | None = None
    hard: bool = False
    #: Put the recipient on the suppression list (as the classifier or the
    #: analysis proposes; what is applied is the decision's).
    suppress: bool = False
    source: Source | None = None
    #: Which classifier rule decided the reason.
    rule: str | None = None
    remote_host: str | None = None

    def __post_init__(self) -> None:
        # Frozen: the coercions go through object.__setattr__, as dataclasses
        # themselves do. Members pass the identity checks at no cost.
        reason = self.reason
        if reason is not None and type(reason) is not Reason:
            object.__setattr__(self, "reason", Reason(reason))
        source = self.source
        if source is None:
            object.__setattr__(self, "source", self.DEFAULT_SOURCE)
        elif type(source) is not Source:
            object.__setattr__(self, "source", Source(source))


@dataclass(frozen=True, kw_only=True)
class AttemptResult(Finding):
    """The outcome of one delivery attempt for one recipient, to be recorded.

    ``state`` is the state the delivery moves to: ``delivered``, ``deferred``,
    ``failed`` or ``expired`` (:func:`hurricane.decisions.decide_attempt`
    chose it).
    """

    DEFAULT_SOURCE: ClassVar[Source] = Source.smtp

    state: State
    remote_ip: str | None = None
    tls: str | None = None  # e.g. "TLSv1.3", None when clear text
    duration: float | None = None
    #: When the next attempt is due (``deferred`` only).
    next_attempt_at: float | None = None
    #: Lease holder writing this result; a result from a node that lost its
    #: lease is still recorded as an event but does not move the state back.
    owner: str | None = None
    #: Our local address the connection was made from (a sending pool's; issue 21).
    source_ip: str | None = None
    #: The TLS policy that applied (:mod:`hurricane.outbound.mtasts`):
    #: ``sts`` (an MTA-STS policy, :attr:`tls_policy_id` its id) or
    #: ``no-policy-found``; None when no session was tried (DNS failed).
    tls_policy_type: str | None = None
    #: ``mode id`` of the MTA-STS policy (``enforce 20240101``), or None.
    tls_policy_id: str | None = None
    #: ``success`` or an RFC 8460 result type (``starttls-not-supported``,
    #: ``validation-failure``...); None when no session was tried.
    tls_result: str | None = None
    #: The classifier's evidence and decision for a server's refusal or
    #: deferral during our session that the other fields do not hold (the
    #: phase, its reason, what decided it, the runner-up), as JSON
    #: (:func:`hurricane.decisions.explain_reply`); None for a delivery, a
    #: local failure or a broken session.
    explanation: str | None = None

    @property
    def event_kind(self) -> EventKind:
        """The kind of event that records it: ``expired`` or ``attempt``."""
        return EventKind.expired if self.state is State.expired else EventKind.attempt


@dataclass(frozen=True)
class ReturnedRecipient:
    """One envelope recipient of a returned message.

    Attributes:
        address: the address as the client gave it.
        delivery_id: the delivery a VERP token verified at RCPT time names
            (None for postmaster and feedback addresses).
        per_message: that token was shared by several recipients of one
            transaction: it proves the message, not this delivery.
    """

    address: str
    delivery_id: int | None = None
    per_message: bool = False


@dataclass(frozen=True)
class ReturnedMessage:
    """A message received on the bounce listener, before analysis.

    One per SMTP transaction, however many recipients it had: ``rcpt_to``
    and ``delivery_id`` describe the first, ``recipients`` all of them (empty
    means just that first one).
    """

    raw: bytes
    mail_from: str
    rcpt_to: str
    received_at: float
    #: Delivery id decoded from a verified VERP recipient, if any.
    delivery_id: int | None = None
    client: str | None = None  # remote address and HELO
    recipients: tuple[ReturnedRecipient, ...] = ()

    def envelope(self) -> tuple[ReturnedRecipient, ...]:
        """Every envelope recipient, in RCPT order."""
        return self.recipients or (ReturnedRecipient(self.rcpt_to, self.delivery_id),)


@dataclass(frozen=True)
class StoredBounce:
    """A stored returned message, as read back for analysis or replay.

    ``rcpt_to`` and ``delivery_id`` are the first envelope recipient's;
    ``recipients`` lists them all. ``purged_at`` is set once the raw bytes
    were dropped after the retention period (``raw`` is then empty; the
    analysis and the events stay).
    """

    bounce_id: int
    raw: bytes
    mail_from: str
    rcpt_to: str
    received_at: float
    delivery_id: int | None
    status: str  # pending | analyzed | failed
    category: str | None = None
    correlation: str | None = None
    recipients: tuple[ReturnedRecipient, ...] = ()
    purged_at: float | None = None

    def envelope(self) -> tuple[ReturnedRecipient, ...]:
        """Every envelope recipient, in RCPT order."""
        return self.recipients or (ReturnedRecipient(self.rcpt_to, self.delivery_id),)


@dataclass(frozen=True, kw_only=True)
class BounceEvent(Finding):
    """The result of analysis for one delivery, to be recorded.

    ``kind`` is ``bounce``, ``delayed``, ``complaint``, ``autoreply`` or
    ``relayed``; the other fields say what the analysis read (``hard`` and
    ``suppress`` as it proposes them). What the event changes is decided by
    :func:`hurricane.decisions.decide_bounce`, for every store engine: only
    an event whose ``correlation`` is a verified key may move the delivery
    (a permanent or final ``bounce`` to ``bounced``, a ``complaint`` to
    ``complained``) or suppress the address; the others only add an event.
    """

    DEFAULT_SOURCE: ClassVar[Source] = Source.dsn

    kind: EventKind
    bounce_id: int | None = None
    #: The failure is permanent in the RFC sense (a 5.x.x status or 5xx code).
    permanent: bool = True
    #: The reporter gave up on the recipient (a DSN's ``Action: failed``),
    #: whatever the status class: a 4.x.x retried until the reporter stopped
    #: is as final for this message as a 5.x.x.
    final: bool = False
    feedback_type: str | None = None
    #: Which :class:`CorrelationKey` matched the report to the delivery
    #: (its text); None or a weak key: recorded, never applied.
    correlation: str | None = None
    #: Idempotency key: the same returned message recorded twice (a remote
    #: that retried) is recorded once.
    idem_key: str | None = None


@dataclass(frozen=True)
class Event:
    """One append-only event row."""

    event_id: int
    delivery_id: int
    kind: EventKind
    at: float
    state: State | None
    reason: str | None
    hard: bool
    code: int | None
    status: str | None
    text: str | None
    remote_host: str | None
    remote_ip: str | None
    tls: str | None
    source: str | None
    rule: str | None
    duration: float | None
    bounce_id: int | None
    feedback_type: str | None
    correlation: str | None
    #: Why an event changed nothing it could have, e.g. "recorded, not
    #: applied: unverified correlation".
    note: str | None = None
    #: Transport facts of an attempt (issue 21; :class:`AttemptResult`).
    source_ip: str | None = None
    tls_policy_type: str | None = None
    tls_policy_id: str | None = None
    tls_result: str | None = None
    #: An attempt's explanation of a refusal or deferral by the server
    #: (:attr:`AttemptResult.explanation`; migration 0011), JSON text.
    explanation: str | None = None


@dataclass(frozen=True)
class Suppression:
    """An address we refuse to send to, and why."""

    address: str
    reason: str
    created_at: float
    source: str | None = None  # bounce, complaint, smtp, operator
    event_id: int | None = None
    note: str | None = None


@dataclass(frozen=True)
class Outcome:
    """One record of ``hurricane outcomes``: a delivery with its message's ids."""

    queue_id: str
    delivery_id: int
    recipient: str
    state: str
    reason: str | None
    hard: bool
    code: int | None
    status: str | None
    text: str | None
    attempts: int
    mailing_id: str | None
    message_id: str | None
    created_at: float
    updated_at: float
    remote_host: str | None = None
    delivered_at: float | None = None
    bounced_at: float | None = None
    #: The source address of the delivery's last attempt (issue 21).
    source_ip: str | None = None
    #: The message stream (issue 20); messages stored before streams existed
    #: are in the default one.
    stream: str = "transactional"

    #: Field order of the CSV and JSON export.
    FIELDS = (
        "queue_id", "delivery_id", "recipient", "state", "reason", "hard", "code",
        "status", "text", "attempts", "mailing_id", "message_id", "created_at",
        "updated_at", "remote_host", "delivered_at", "bounced_at", "stream", "source_ip",
    )

    def as_dict(self) -> dict[str, object]:
        """The record as a plain dict in export field order."""
        return {name: getattr(self, name) for name in self.FIELDS}


@dataclass(frozen=True)
class Summary:
    """Counts for a time window (by ``created_at`` of the delivery)."""

    messages: int
    recipients: int
    by_state: dict[str, int]
    by_reason: dict[str, int]
    #: Failed recipients split by where the failure came from.
    sync_failures: int
    async_bounces: int
    complaints: int


@dataclass(frozen=True)
class EventRecord:
    """One event with the identifiers of its delivery and message (event feeds).

    Read by webhooks and the accounting log through ``events_after``;
    ``delivery_state`` is the delivery's *current* state, which may be later
    than the state the event recorded.
    """

    event: Event
    queue_id: str
    recipient: str
    sender: str
    mailing_id: str | None
    message_id: str | None
    header_message_id: str | None
    delivery_state: str
    #: When the delivery was created (latency and time-to-bounce metrics).
    delivery_created_at: float | None = None


@dataclass(frozen=True)
class StoredMessage:
    """A stored message's envelope and identifiers, without its body."""

    message_pk: int
    queue_id: str
    sender: str
    mailing_id: str | None
    message_id: str | None
    header_message_id: str | None
    size: int
    source: str
    client: str | None
    metadata: dict[str, object]
    created_at: float


@dataclass(frozen=True)
class DomainStats:
    """Deliveries to one destination domain in a window, by state."""

    domain: str
    total: int
    by_state: dict[str, int]


@dataclass(frozen=True)
class DeferredDomain:
    """The deferred queue of one destination domain."""

    domain: str
    count: int
    oldest_created_at: float
    next_attempt_at: float | None
    last_update: float


@dataclass(frozen=True)
class ReasonCount:
    """Failures with one reason, split synchronous (failed) / asynchronous (bounced)."""

    reason: str
    synchronous: int
    asynchronous: int

    @property
    def total(self) -> int:
        """Both kinds together."""
        return self.synchronous + self.asynchronous
