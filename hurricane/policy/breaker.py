"""The circuit breaker per mailing (issue 19, item 4).

Once ``min_recipients`` recipients of a mailing have an outcome, a share of
hard refusals or hard bounces above ``hard_bounce_rate``, or of complaints
above ``complaint_rate``, trips the breaker: the mailing's recipients not yet
handed to a connection move to ``held`` until an operator releases (the
breaker then stays off for that mailing) or cancels them.

:func:`judge` is pure. :class:`Tally` counts this node's own synchronous
results per mailing, so that a breaker trips within a few hundred
milliseconds of the evidence, before the results are even written (the
store's counts, which include every node and the late outcomes, are looked
at too).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from hurricane.config import CircuitBreakerConfig
from hurricane.model import AttemptResult
from hurricane.outcome import PolicyVerb, State
from hurricane.policy.providers import PolicyAction

__all__ = ["Evidence", "Tally", "judge"]

#: Mailings tallied at most (the oldest is forgotten first).
_MAX_MAILINGS = 10_000


@dataclass(frozen=True)
class Evidence:
    """What a breaker judges.

    Attributes:
        decided: recipients with an outcome.
        hard: hard refusals and hard bounces among them.
        complaints: complaints among them.
    """

    decided: int
    hard: int
    complaints: int

    def merge(self, other: Evidence) -> Evidence:
        """The larger of each count (two views of the same recipients)."""
        return Evidence(max(self.decided, other.decided), max(self.hard, other.hard),
                        max(self.complaints, other.complaints))


def judge(mailing_id: str, evidence: Evidence, settings: CircuitBreakerConfig,
          now: float) -> PolicyAction | None:
    """Whether a mailing's breaker trips.

    Args:
        mailing_id: the mailing.
        evidence: its counts.
        settings: ``[delivery.circuit_breaker]``.
        now: when.

    Returns:
        the ``hold`` action, or None.
    """
    if not settings.enabled or evidence.decided < max(1, settings.min_recipients):
        return None
    counts = {"decided": evidence.decided, "hard": evidence.hard,
              "complaints": evidence.complaints}
    hard_rate = evidence.hard / evidence.decided
    complaint_rate = evidence.complaints / evidence.decided
    if complaint_rate > settings.complaint_rate:
        cause = f"complaint_rate {complaint_rate:.4f} > {settings.complaint_rate}"
    elif hard_rate > settings.hard_bounce_rate:
        cause = f"hard_bounce_rate {hard_rate:.4f} > {settings.hard_bounce_rate}"
    else:
        return None
    return PolicyAction(now, "mailing", mailing_id, PolicyVerb.hold.value, cause, "sending",
                        State.held.value, counts)


class Tally:
    """This node's synchronous outcomes per mailing (keys lower-cased)."""

    def __init__(self) -> None:
        self._counts: OrderedDict[str, tuple[int, int]] = OrderedDict()

    def add(self, mailing_id: str, result: AttemptResult) -> Evidence | None:
        """Count one result.

        Returns:
            the mailing's evidence when the result decided the recipient
            (not a deferral), else None.
        """
        state = State(result.state)
        if state is State.deferred:
            return None
        key = mailing_id.lower()
        decided, hard = self._counts.pop(key, (0, 0))
        decided += 1
        if state is State.failed and result.hard:
            hard += 1
        self._counts[key] = (decided, hard)
        while len(self._counts) > _MAX_MAILINGS:
            self._counts.popitem(last=False)
        return Evidence(decided, hard, 0)

    def forget(self, mailing_id: str) -> None:
        """Stop counting a mailing (its breaker tripped, or is off)."""
        self._counts.pop(mailing_id.lower(), None)
