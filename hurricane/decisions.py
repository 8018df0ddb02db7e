"""What a recorded returned-message event may change: one pure function.

Every store engine (SQLite, PostgreSQL, memory) asks :func:`decide_bounce`
what an analyzed bounce or complaint does to its delivery, so that they all
follow one rule (DESIGN.md, habit 19), and the processor that builds the
events does not decide it a second time.

The rule (issue 23, "forged reports must not change outcomes"): a returned
message is anyone's to send. Only a report matched by a verified key
(:attr:`hurricane.model.CorrelationKey.verified`: our MAC over one delivery)
may move a delivery's state, set its reason, code and text, or put the
address on the suppression list. A report matched by a weak key (the bare
recipient, ORCPT, our Message-ID, a co-recipient of a verified message, a
per-message token shared by several recipients) is recorded as an event that
says it was not applied, and changes nothing; since it moves no state, the
webhooks never call it final (:func:`hurricane.webhooks.webhook_type`).
"""

from __future__ import annotations

from dataclasses import dataclass

from hurricane.model import BounceEvent, CorrelationKey, EventKind, State

__all__ = ["BOUNCEABLE", "COMPLAINABLE", "NOT_APPLIED", "BounceDecision", "decide_bounce"]

#: States a verified permanent bounce moves to ``bounced``: mail that was
#: sent at least once (a deferred one may have been accepted after all, by a
#: server whose 250 we never saw).
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
    """

    target: State | None
    suppress: bool
    note: str | None = None


def decide_bounce(event: BounceEvent, state: State, attempts: int) -> BounceDecision:
    """Decide what a bounce-side event does to its delivery.

    Args:
        event: the event (its kind, ``permanent`` or ``final``, ``suppress``
            as the analysis proposes, and the ``correlation`` key that matched it).
        state: the delivery's current state.
        attempts: delivery attempts made so far (0: never sent, so nothing
            can have come back about it).

    Returns:
        The decision; every engine applies exactly this.
    """
    kind = EventKind(event.kind)
    if not CorrelationKey.is_verified(event.correlation):
        note = NOT_APPLIED if kind in _OUTCOME_KINDS else None
        return BounceDecision(None, False, note)
    target: State | None = None
    if attempts > 0:
        # a final failure moves the delivery whatever its status class: with
        # "Action: failed, Status: 4.2.2" the remote MTA retried and gave up
        if kind is EventKind.bounce and (event.permanent or event.final) \
                and state in BOUNCEABLE:
            target = State.bounced
        elif kind is EventKind.complaint and state in COMPLAINABLE:
            target = State.complained
    return BounceDecision(target, bool(event.suppress))
