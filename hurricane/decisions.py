"""What a reply or a returned message does to a delivery: the two decisions.

A recipient's state, reason, ``hard`` and suppression are decided here and
nowhere else (STYLE.md habit 19):

- :func:`decide_attempt`: what one delivery attempt did: the reply to our
  RCPT or to the final dot, the session that broke, the connection that
  could not be set up, a DNS answer, our own error. The outbound scheduler
  asks it for every recipient of every attempt.
- :func:`decide_bounce`: what an analyzed returned message (a DSN, a
  free-text bounce, a complaint, an auto-reply) does. Every store engine
  asks it when it records an event, so they all follow one rule; the bounce
  processor only transcribes the analysis into a
  :class:`~hurricane.model.BounceEvent`.

Both are pure: the reply classifier is passed in (it is itself a pure
function of the reply), and nothing here reads a clock or a store.

The bounce rules (issue 23, "forged reports must not change outcomes"): a
returned message is anyone's to send. Only a report matched by a verified
key (:attr:`hurricane.outcome.CorrelationKey.verified`: our MAC over one
delivery) may move a delivery's state, set its reason, code and text, or
put the address on the suppression list. A report matched by a weak key
(the bare recipient, ORCPT, our Message-ID, a co-recipient of a verified
message, a per-message token shared by several recipients) is recorded as
an event that says it was not applied, and changes nothing; since it moves
no state, the webhooks never call it final
(:func:`hurricane.webhooks.webhook_type`). A DSN with ``Action: failed`` is
final whatever its status class (issue 22): a 4.x.x the reporting MTA gave
up on bounces the delivery, but is never hard and never suppresses.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from hurricane.model import AttemptResult, BounceEvent
from hurricane.outcome import (
    CorrelationKey,
    EventKind,
    Phase,
    Reason,
    Source,
    State,
    SuppressionSource,
    is_hard,
)
from hurricane.smtp_reply import Reply

__all__ = [
    "Attempt",
    "AttemptDecision",
    "BOUNCEABLE",
    "BounceDecision",
    "COMPLAINABLE",
    "Classifier",
    "LocalFailure",
    "NOT_APPLIED",
    "RecipientAnswer",
    "SessionFailure",
    "Verdict",
    "decide_attempt",
    "decide_bounce",
    "delivered",
    "explain_reply",
    "suppression_source",
]


# -- delivery attempts ------------------------------------------------------------

#: Encodes an attempt's explanation (one encoder: ``json.dumps`` with any
#: option builds a new one per call).
_COMPACT = json.JSONEncoder(separators=(",", ":"))


class Verdict(Protocol):
    """What the reply classifier says about one reply
    (``hurricane.bounce.model.ReplyClass`` has these)."""

    @property
    def reason(self) -> str:
        """The reason word."""

    @property
    def hard(self) -> bool:
        """Future mail to the address will fail as well."""

    @property
    def status(self) -> str | None:
        """The enhanced status code the rule infers when the reply has none."""

    @property
    def rule(self) -> str | None:
        """The rule that matched."""

    @property
    def permanent(self) -> bool | None:
        """The rule's disposition (None: the reply code's class decides)."""

    @property
    def decided_by(self) -> str | None:
        """What decided the reason: the rule id, or the status table's entry
        ("status.5.7.1") when no rule did (``rule`` is None then)."""

    @property
    def runner_up(self) -> str | None:
        """The answer the decision beat, if another one applied."""

    @property
    def runner_up_rule(self) -> str | None:
        """What would have decided the runner-up."""

    @property
    def suppress(self) -> bool:
        """The classifier proposes to suppress the address (recipient-side, hard)."""


class Classifier(Protocol):
    """The reply classifier (``hurricane.bounce.classify.ReplyClassifier``)."""

    def classify(self, code: int | str | None, status: str | None, text: str) -> Verdict:
        """Classify one reply: its code, enhanced status and text."""


@dataclass(frozen=True)
class RecipientAnswer:
    """How our SMTP transaction ended for one recipient.

    Attributes:
        phase: the phase of the deciding reply (RCPT, the final dot, or the
            MAIL/DATA reply that failed the whole transaction).
        reply: that reply; None when the session broke before one came.
        error: what broke, when there is no reply.
    """

    phase: Phase
    reply: Reply | None
    error: str | None = None


@dataclass(frozen=True)
class SessionFailure:
    """The session to a destination could not be set up or started: no
    transaction was tried for the recipients waiting for it.

    Attributes:
        phase: connect, greeting, ehlo, starttls or timeout.
        reply: the server reply that failed it, if any (a 554 greeting, a 421).
        error: what failed.
        reason: the reason the client chose for a local failure
            (``failedstarttls``, ``securityerror``, ``networkerror``), if any.
    """

    phase: Phase
    reply: Reply | None
    error: str
    reason: Reason | None = None


@dataclass(frozen=True)
class LocalFailure:
    """A failure decided here with no SMTP reply: a DNS answer, our own error.

    Attributes:
        reason: why (``hostunknown`` for NXDOMAIN or a null MX, ``networkerror``
            for a DNS timeout, ``systemerror``, ``mailererror``...).
        text: the diagnostic to record.
        permanent: no retry can fix it (NXDOMAIN, a null MX, a return path
            that cannot be made).
        status: the enhanced status code that says so, if any.
    """

    reason: Reason
    text: str
    permanent: bool = False
    status: str | None = None


#: What one attempt saw for one recipient: the input of :func:`decide_attempt`.
Attempt = RecipientAnswer | SessionFailure | LocalFailure


@dataclass(frozen=True)
class AttemptDecision:
    """What one attempt does to one delivery.

    Attributes:
        state: ``delivered``, ``failed``, ``deferred`` (retry) or ``expired``.
        reason: why, in DESIGN.md's vocabulary.
        hard: future mail to the address will fail as well.
        suppress: put the address on the suppression list.
        code, status, text: the reply to record (status may be inferred by
            the classifier's rule).
        rule: the classifier rule that decided the reason.
        source: ``smtp`` for a reply, ``local`` for a failure decided here.
        explanation: for a refusal or a deferral by a server during our
            session, the classifier's evidence and decision that the other
            fields do not hold (:func:`explain_reply`); None otherwise. Not
            compared: it explains the decision, it is not part of it.
    """

    state: State
    reason: Reason
    hard: bool = False
    suppress: bool = False
    code: int | None = None
    status: str | None = None
    text: str | None = None
    rule: str | None = None
    source: Source = Source.smtp
    explanation: Mapping[str, object] | None = field(default=None, compare=False)

    @property
    def retry(self) -> bool:
        """True when another attempt is due (the delivery is deferred)."""
        return self.state is State.deferred

    def result(
        self, delivery_id: int, at: float, *, remote_host: str | None = None,
        remote_ip: str | None = None, tls: str | None = None,
        duration: float | None = None, next_attempt_at: float | None = None,
        owner: str | None = None, source_ip: str | None = None,
        tls_policy_type: str | None = None, tls_policy_id: str | None = None,
        tls_result: str | None = None,
    ) -> AttemptResult:
        """The result to record for one delivery.

        Args:
            delivery_id: the delivery.
            at: when the attempt ended.
            remote_host, remote_ip, tls, duration: the session's facts.
            next_attempt_at: when to try again (kept only when :attr:`retry`).
            owner: the lease holder writing the result.
            source_ip, tls_policy_type, tls_policy_id, tls_result: the
                transport facts (issue 21).

        Returns:
            The :class:`~hurricane.model.AttemptResult`.
        """
        return AttemptResult(
            delivery_id=delivery_id, at=at, state=self.state, reason=self.reason,
            hard=self.hard, suppress=self.suppress, code=self.code, status=self.status,
            text=self.text, rule=self.rule, source=self.source, remote_host=remote_host,
            remote_ip=remote_ip, tls=tls, duration=duration,
            next_attempt_at=next_attempt_at if self.retry else None, owner=owner,
            source_ip=source_ip, tls_policy_type=tls_policy_type, tls_policy_id=tls_policy_id,
            tls_result=tls_result,
            explanation=None if self.explanation is None else _COMPACT.encode(self.explanation),
        )


def delivered(phase: Phase | str, reply: Reply | None) -> bool:
    """True when a reply takes responsibility for the message: a 2xx after the dot.

    Args:
        phase: the phase of the reply.
        reply: the reply, or None.

    Returns:
        True for delivered.
    """
    return reply is not None and phase == Phase.dot and 200 <= reply.code < 300


def decide_attempt(attempt: Attempt, classifier: Classifier, *, expired: bool) -> AttemptDecision:
    """Decide what one attempt does to one delivery.

    The rules (DESIGN.md's model):

    - a 2xx after the dot is ``delivered``;
    - a refusal (4xx, 5xx) is classified; a permanent one (5xx, unless the
      matching rule says the reply is really temporary, or a 4xx the rule
      says is final) is ``failed`` with the classifier's reason, ``hard``
      and suppression; a temporary one is retried;
    - no reply (the session broke), a positive reply that did not deliver
      (protocol confusion), a session that could not be set up (whatever
      its reply: another MX may take the mail) and a temporary local
      failure are retried;
    - a permanent local failure (NXDOMAIN, a null MX, a return path we
      cannot make) is ``failed``: hard, and suppressed, only for a
      recipient-side reason (:func:`~hurricane.outcome.is_hard`);
    - a retry of a delivery older than ``max_age`` is ``expired`` instead:
      the last error is kept, the reason is ``expired``, never hard, never
      suppressed.

    Args:
        attempt: what the attempt saw for the recipient.
        classifier: classifies a refusal's code, status and text.
        expired: the delivery is older than ``max_age`` (retries ran out).

    Returns:
        The decision.
    """
    if isinstance(attempt, LocalFailure):
        if attempt.permanent:
            hard = is_hard(attempt.reason, attempt.status)
            return AttemptDecision(State.failed, attempt.reason, hard=hard, suppress=hard,
                                   status=attempt.status, text=attempt.text,
                                   source=Source.local)
        return _retry(expired, attempt.reason, None, attempt.status, attempt.text, None,
                      Source.local)
    phase = Phase(attempt.phase)
    reply = attempt.reply
    if isinstance(attempt, SessionFailure):
        reason, rule, status, why = attempt.reason, None, None, None
        if reply is not None:
            verdict = classifier.classify(reply.code, reply.status, reply.render())
            reason = reason or Reason.of(verdict.reason)
            rule = verdict.rule
            status = reply.status or verdict.status
            why = explain_reply(phase, reply, verdict, status)
        text = f"{phase.value}: {reply.render() if reply is not None else attempt.error}"
        return _retry(expired, reason or Reason.networkerror,
                      reply.code if reply is not None else None, status, text, rule,
                      Source.smtp if reply is not None else Source.local, why)
    if reply is None:
        # the session broke before this recipient got an answer
        return _retry(expired, Reason.networkerror, None, None,
                      attempt.error or f"connection lost during {phase.value}", None,
                      Source.smtp)
    wire = reply.render()
    if delivered(phase, reply):
        return AttemptDecision(State.delivered, Reason.delivered, code=reply.code,
                               status=reply.status, text=wire)
    if reply.code < 400:
        # a positive reply that did not deliver: nothing is known, try again
        return _retry(expired, Reason.undefined, reply.code, reply.status, wire, None,
                      Source.smtp)
    # Tell the classifier which command was refused, in the words Postfix
    # uses in its DSNs, so a reply gets the same reason here as it would in
    # a bounce report (a refusal at RCPT is about the mailbox, one after DATA
    # about the content). The recorded text is the server's alone.
    command = phase.command
    verdict = classifier.classify(
        reply.code, reply.status, f"{wire} (in reply to {command} command)" if command else wire)
    reason = Reason.of(verdict.reason) or Reason.undefined
    status = reply.status or verdict.status
    # the rule's disposition wins: a 5xx "rate limited" is retried, a 4xx
    # "over quota for months" is final
    permanent = reply.permanent if verdict.permanent is None else verdict.permanent
    why = explain_reply(phase, reply, verdict, status, permanent=permanent)
    if permanent:
        return AttemptDecision(State.failed, reason, hard=verdict.hard,
                               suppress=verdict.suppress, code=reply.code, status=status,
                               text=wire, rule=verdict.rule, explanation=why)
    return _retry(expired, reason, reply.code, status, wire, verdict.rule, Source.smtp, why)


def explain_reply(phase: Phase, reply: Reply, verdict: Verdict, status: str | None, *,
                  permanent: bool = False) -> dict[str, object]:
    """The classifier's explanation of a server's refusal during our own session.

    What the attempt's event does not already hold (its code, status, text,
    remote host, rule, state and ``hard`` are columns of its own): the
    evidence our session adds (the phase: the command our client was
    sending, and its stage; whether the rule inferred the enhanced status)
    and the classifier's decision (its reason, which the event's may not be:
    ``expired``, a session's local reason; what decided it, the rule or the
    status table's entry; the runner-up it beat).
    ``hurricane.report.api.event_explanation`` puts the two halves together
    under the keys of a returned message's result, so the recipient page
    explains a refusal we saw and one returned to us alike
    (docs/bounce-reasons.md). Kept small (about 100 bytes of JSON): a
    deferral writes an event per attempt.

    Args:
        phase: the phase of the reply (its command: RCPT TO, end of DATA...).
        reply: the server's reply.
        verdict: the classifier's verdict on it.
        status: the enhanced status recorded (the reply's, else the rule's).
        permanent: the refusal fails the delivery (else it defers it).

    Returns:
        The explanation, JSON-ready: ``phase``, ``reason``, ``decided_by``;
        ``status_inferred`` only when true, ``runner_up`` and
        ``runner_up_rule`` only when another answer applied.
    """
    why: dict[str, object] = {"phase": phase.value, "reason": verdict.reason,
                              "decided_by": verdict.decided_by or verdict.rule}
    if reply.status is None and status is not None:
        why["status_inferred"] = True
    if verdict.runner_up:
        why["runner_up"] = verdict.runner_up
        why["runner_up_rule"] = verdict.runner_up_rule
    return why


def _retry(expired: bool, reason: Reason, code: int | None, status: str | None,
           text: str | None, rule: str | None, source: Source,
           explanation: Mapping[str, object] | None = None) -> AttemptDecision:
    """Deferred, or expired when retries ran out (the last error kept, never suppressed)."""
    if expired:
        return AttemptDecision(State.expired, Reason.expired, code=code, status=status,
                               text=text, rule=rule, source=source, explanation=explanation)
    return AttemptDecision(State.deferred, reason, code=code, status=status, text=text,
                           rule=rule, source=source, explanation=explanation)


# -- returned messages ------------------------------------------------------------

#: States a verified permanent or final bounce moves to ``bounced``: mail
#: that was sent at least once (a deferred one may have been accepted after
#: all, by a server whose 250 we never saw).
BOUNCEABLE = frozenset({State.queued, State.deferred, State.delivered})
#: States a verified complaint moves to ``complained``: mail that reached the
#: mailbox (a complaint about a failed or expired delivery is recorded as an
#: event only: it was never delivered, so the report is mis-correlated).
COMPLAINABLE = frozenset({State.delivered, State.bounced})

#: The note on an event that a weak key matched.
NOT_APPLIED = "recorded, not applied: unverified correlation"

#: Kinds of event that could change a delivery or the suppression list.
_OUTCOME_KINDS = frozenset({EventKind.bounce, EventKind.complaint})


@dataclass(frozen=True)
class BounceDecision:
    """What one event does.

    Attributes:
        target: the state the delivery moves to (None: it stays; the event
            records ``state`` NULL).
        suppress: add the recipient to the suppression list.
        note: stored on the event when it changed nothing it could have.
        hard: recorded on the event (and on the delivery it moves): the
            analysis's ``hard``, never for a failure the RFC calls temporary.
    """

    target: State | None
    suppress: bool
    note: str | None = None
    hard: bool = False


def decide_bounce(event: BounceEvent, state: State, attempts: int) -> BounceDecision:
    """Decide what a bounce-side event does to its delivery.

    Args:
        event: the event (its kind, ``permanent`` and ``final``, ``hard`` and
            ``suppress`` as the analysis proposes, and the ``correlation``
            key that matched it).
        state: the delivery's current state.
        attempts: delivery attempts made so far (0: never sent, so nothing
            can have come back about it).

    Returns:
        The decision; every engine applies exactly this.
    """
    kind = EventKind(event.kind)
    # A 4.x.x the reporter gave up on (final, not permanent) says the
    # condition may pass (a full mailbox): never hard, never suppressing.
    temporary_failure = kind is EventKind.bounce and not event.permanent
    hard = bool(event.hard) and not temporary_failure
    if not CorrelationKey.is_verified(event.correlation):
        note = NOT_APPLIED if kind in _OUTCOME_KINDS else None
        return BounceDecision(None, False, note, hard)
    target: State | None = None
    if attempts > 0:
        if kind is EventKind.bounce and (event.permanent or event.final) \
                and state in BOUNCEABLE:
            target = State.bounced
        elif kind is EventKind.complaint and state in COMPLAINABLE:
            target = State.complained
    # Only the analysis knows whether a reason is recipient-side (it
    # proposes); a complaint always proposes it.
    suppress = bool(event.suppress) and kind in _OUTCOME_KINDS and not temporary_failure
    return BounceDecision(target, suppress, None, hard)


def suppression_source(kind: EventKind) -> SuppressionSource:
    """What a suppression caused by an event of ``kind`` cites as its source."""
    return SuppressionSource.complaint if kind is EventKind.complaint else SuppressionSource.bounce
