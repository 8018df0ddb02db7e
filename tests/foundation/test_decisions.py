"""Table tests of hurricane.decisions.decide_bounce: what a returned-message event may change."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from hurricane.decisions import NOT_APPLIED, BounceDecision, decide_bounce
from hurricane.model import BounceEvent, CorrelationKey, EventKind, State

B, C, D = EventKind.bounce, EventKind.complaint, EventKind.delayed
V = "verp"

#: (kind, permanent, suppress, correlation, state, attempts) -> decision
TABLE: list[tuple[tuple[EventKind, bool, bool, str | None, State, int], BounceDecision]] = [
    # verified keys move sent mail and suppress as the analysis proposes
    ((B, True, True, V, State.delivered, 1), BounceDecision(State.bounced, True)),
    ((B, True, False, "header-token", State.deferred, 2), BounceDecision(State.bounced, False)),
    ((B, True, True, "envid", State.queued, 1), BounceDecision(State.bounced, True)),
    ((C, True, True, V, State.delivered, 1), BounceDecision(State.complained, True)),
    ((C, True, True, V, State.bounced, 1), BounceDecision(State.complained, True)),
    # ... but never mail that was never sent, nor a state they do not apply to
    ((B, True, True, V, State.queued, 0), BounceDecision(None, True)),
    ((B, False, False, V, State.delivered, 1), BounceDecision(None, False)),
    ((B, True, True, V, State.failed, 1), BounceDecision(None, True)),
    ((C, True, True, V, State.failed, 1), BounceDecision(None, True)),
    ((C, True, True, V, State.complained, 1), BounceDecision(None, True)),
    ((D, False, False, V, State.delivered, 1), BounceDecision(None, False)),
    # weak keys (and none) change nothing and say so
    ((B, True, True, "recipient", State.delivered, 1), BounceDecision(None, False, NOT_APPLIED)),
    ((B, True, True, "orcpt", State.deferred, 1), BounceDecision(None, False, NOT_APPLIED)),
    ((B, True, True, "message-id", State.queued, 1), BounceDecision(None, False, NOT_APPLIED)),
    ((B, True, True, "sibling", State.delivered, 1), BounceDecision(None, False, NOT_APPLIED)),
    ((C, True, True, "message-token", State.delivered, 1),
     BounceDecision(None, False, NOT_APPLIED)),
    ((C, True, True, None, State.delivered, 1), BounceDecision(None, False, NOT_APPLIED)),
    ((B, True, True, "VERP ", State.delivered, 1), BounceDecision(None, False, NOT_APPLIED)),
    # informational events never needed applying
    ((D, False, False, "recipient", State.delivered, 1), BounceDecision(None, False)),
]


class DecideBounceTests(SynchronousTestCase):
    """decide_bounce, row by row."""

    def test_table(self) -> None:
        """Each (event, delivery) row gets its decision."""
        for (kind, permanent, suppress, key, state, attempts), expected in TABLE:
            event = BounceEvent(1, kind, 0.0, permanent=permanent, suppress=suppress,
                                correlation=key)
            self.assertEqual(decide_bounce(event, state, attempts), expected,
                             (kind, key, state, attempts))

    def test_verified_keys(self) -> None:
        """Exactly verp, header-token and envid are verified."""
        self.assertEqual({k.value for k in CorrelationKey if k.verified},
                         {"verp", "header-token", "envid"})


class FinalFailureTests(SynchronousTestCase):
    """A final failure (Action: failed) bounces the delivery whatever its status class."""

    def test_final_4xx_bounces(self) -> None:
        """Action: failed with a 4.x.x (not permanent, final) moves sent mail to bounced."""
        event = BounceEvent(1, B, 0.0, permanent=False, final=True, suppress=False,
                            correlation=V)
        for state in (State.delivered, State.deferred, State.queued):
            self.assertEqual(decide_bounce(event, state, 1),
                             BounceDecision(State.bounced, False), state)

    def test_not_final_4xx_moves_nothing(self) -> None:
        """A non-permanent bounce event that is not final (no result read) moves nothing."""
        event = BounceEvent(1, B, 0.0, permanent=False, final=False, correlation=V)
        self.assertEqual(decide_bounce(event, State.delivered, 1), BounceDecision(None, False))

    def test_final_is_still_only_for_verified_keys(self) -> None:
        """A final failure matched by a weak key is recorded, not applied."""
        event = BounceEvent(1, B, 0.0, permanent=False, final=True, correlation="recipient")
        self.assertEqual(decide_bounce(event, State.delivered, 1),
                         BounceDecision(None, False, NOT_APPLIED))
