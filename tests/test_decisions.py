"""Table tests of hurricane.decisions: what an attempt (decide_attempt) and a
returned-message event (decide_bounce) do to a delivery."""

from __future__ import annotations

import json
from dataclasses import dataclass

from twisted.trial.unittest import SynchronousTestCase

from hurricane.bounce.classify import ReplyClassifier
from hurricane.decisions import (
    NOT_APPLIED,
    Attempt,
    AttemptDecision,
    BounceDecision,
    LocalFailure,
    RecipientAnswer,
    SessionFailure,
    decide_attempt,
    decide_bounce,
    delivered,
    suppression_source,
)
from hurricane.model import AttemptResult, BounceEvent
from hurricane.outcome import (
    CorrelationKey,
    EventKind,
    Phase,
    Reason,
    Source,
    State,
    SuppressionSource,
)
from hurricane.smtp_reply import Reply

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
            event = BounceEvent(delivery_id=1, kind=kind, at=0.0, permanent=permanent,
                                suppress=suppress,
                                correlation=key)
            self.assertEqual(decide_bounce(event, state, attempts), expected,
                             (kind, key, state, attempts))

    def test_verified_keys(self) -> None:
        """Exactly verp, header-token and envid are verified."""
        self.assertEqual({k.value for k in CorrelationKey if k.verified},
                         {"verp", "header-token", "envid"})


class AppliedFieldsTests(SynchronousTestCase):
    """What an applied event records: hard and suppression as decide_bounce decides them."""

    def test_temporary_bounce_never_hard_nor_suppressing(self) -> None:
        """A 4.x.x failure that is not final (no result read) moves nothing, and is
        recorded neither hard nor suppressing, whatever the analysis said."""
        event = BounceEvent(delivery_id=1, kind=B, at=0.0, permanent=False, hard=True,
                            suppress=True, correlation=V)
        self.assertEqual(decide_bounce(event, State.delivered, 1),
                         BounceDecision(None, False, None, False))

    def test_permanent_keeps_the_analysis(self) -> None:
        """A permanent bounce is hard and suppressing as the analysis says, and no more."""
        event = BounceEvent(delivery_id=1, kind=B, at=0.0, permanent=True, hard=True,
                            suppress=True, correlation=V)
        self.assertEqual(decide_bounce(event, State.delivered, 1),
                         BounceDecision(State.bounced, True, None, True))
        soft = BounceEvent(delivery_id=1, kind=B, at=0.0, permanent=True, reason="blocked",
                           hard=False, suppress=False, correlation=V)
        self.assertEqual(decide_bounce(soft, State.delivered, 1),
                         BounceDecision(State.bounced, False, None, False))

    def test_delayed_stays_an_event(self) -> None:
        """Action: delayed moves nothing and suppresses nothing, even verified."""
        event = BounceEvent(delivery_id=1, kind=D, at=0.0, permanent=False, suppress=True,
                            correlation=V)
        self.assertEqual(decide_bounce(event, State.delivered, 1), BounceDecision(None, False))

    def test_complaint_hard_as_given(self) -> None:
        """A complaint keeps the hard it was given (the processor gives False)."""
        event = BounceEvent(delivery_id=1, kind=C, at=0.0, hard=True, suppress=True,
                            correlation=V)
        self.assertEqual(decide_bounce(event, State.delivered, 1),
                         BounceDecision(State.complained, True, None, True))

    def test_suppression_source(self) -> None:
        """A complaint's suppression cites the complaint, any other the bounce."""
        self.assertEqual(suppression_source(C), SuppressionSource.complaint)
        self.assertEqual(suppression_source(B), SuppressionSource.bounce)


class FinalFailureTests(SynchronousTestCase):
    """Action: failed is final whatever the status class (issue 22)."""

    def test_final_4xx_bounces_never_hard_nor_suppressing(self) -> None:
        """A final 4.x.x bounces sent mail; the analysis's hard and suppress do not apply."""
        event = BounceEvent(delivery_id=1, kind=B, at=0.0, permanent=False, final=True,
                            hard=True, suppress=True, correlation=V)
        for state in (State.delivered, State.deferred, State.queued):
            self.assertEqual(decide_bounce(event, state, 1),
                             BounceDecision(State.bounced, False, None, False), state)

    def test_final_4xx_moves_only_what_a_bounce_may(self) -> None:
        """A final 4.x.x never moves mail that was not sent, nor a failed or expired row."""
        event = BounceEvent(delivery_id=1, kind=B, at=0.0, permanent=False, final=True,
                            correlation=V)
        self.assertEqual(decide_bounce(event, State.queued, 0), BounceDecision(None, False))
        for state in (State.failed, State.expired, State.bounced, State.complained):
            self.assertEqual(decide_bounce(event, state, 1), BounceDecision(None, False), state)

    def test_final_5xx_keeps_the_analysis(self) -> None:
        """A final 5.x.x bounces and is hard and suppressing as the analysis says."""
        event = BounceEvent(delivery_id=1, kind=B, at=0.0, permanent=True, final=True,
                            hard=True, suppress=True, correlation=V)
        self.assertEqual(decide_bounce(event, State.delivered, 1),
                         BounceDecision(State.bounced, True, None, True))

    def test_final_is_still_only_for_verified_keys(self) -> None:
        """A final failure matched by a weak key is recorded, not applied."""
        event = BounceEvent(delivery_id=1, kind=B, at=0.0, permanent=False, final=True,
                            correlation="recipient")
        self.assertEqual(decide_bounce(event, State.delivered, 1),
                         BounceDecision(None, False, NOT_APPLIED))


# -- decide_attempt -----------------------------------------------------------------


@dataclass(frozen=True)
class Said:
    """A classifier's verdict, as the tests choose it."""

    reason: str = "userunknown"
    hard: bool = True
    status: str | None = None
    rule: str | None = "rule.x"
    permanent: bool | None = None
    suppress: bool = True
    decided_by: str | None = "rule.x"
    runner_up: str | None = None
    runner_up_rule: str | None = None


class Classifier:
    """Answers one verdict and remembers what it was asked."""

    def __init__(self, verdict: Said | None = None) -> None:
        self.verdict = verdict or Said()
        self.asked: list[tuple[int | str | None, str | None, str]] = []

    def classify(self, code: int | str | None, status: str | None, text: str) -> Said:
        self.asked.append((code, status, text))
        return self.verdict


R = Reply.parse
N = Classifier
#: (what the attempt saw, the classifier's verdict, expired) -> the decision
ATTEMPTS: list[tuple[Attempt, Said, bool, AttemptDecision]] = [
    # a 2xx after the dot delivers (the classifier is not asked)
    (RecipientAnswer(Phase.dot, R(250, "2.0.0 Ok: queued as X")), Said(), False,
     AttemptDecision(State.delivered, Reason.delivered, code=250, status="2.0.0",
                     text="2.0.0 Ok: queued as X")),
    (RecipientAnswer(Phase.dot, R(250, "2.0.0 Ok")), Said(), True,
     AttemptDecision(State.delivered, Reason.delivered, code=250, status="2.0.0",
                     text="2.0.0 Ok")),
    # a permanent refusal fails with the classifier's reason, hard and suppression
    (RecipientAnswer(Phase.rcpt, R(550, "5.1.1 no such user")), Said(), False,
     AttemptDecision(State.failed, Reason.userunknown, hard=True, suppress=True, code=550,
                     status="5.1.1", text="5.1.1 no such user", rule="rule.x")),
    # ... retries running out does not matter to a permanent one
    (RecipientAnswer(Phase.rcpt, R(550, "5.1.1 no such user")), Said(), True,
     AttemptDecision(State.failed, Reason.userunknown, hard=True, suppress=True, code=550,
                     status="5.1.1", text="5.1.1 no such user", rule="rule.x")),
    # a sender-side refusal fails without suppressing; the rule's status fills a gap
    (RecipientAnswer(Phase.dot, R(554, "rejected as spam")),
     Said("spamdetected", False, "5.7.1", "spam.x", None, False), False,
     AttemptDecision(State.failed, Reason.spamdetected, code=554, status="5.7.1",
                     text="rejected as spam", rule="spam.x")),
    # the rule's disposition wins over the code's class, both ways
    (RecipientAnswer(Phase.rcpt, R(550, "5.7.1 rate limited")),
     Said("speeding", False, None, "speed.x", False, False), False,
     AttemptDecision(State.deferred, Reason.speeding, code=550, status="5.7.1",
                     text="5.7.1 rate limited", rule="speed.x")),
    (RecipientAnswer(Phase.rcpt, R(452, "4.2.2 over quota for months")),
     Said("mailboxfull", False, None, "quota.x", True, False), False,
     AttemptDecision(State.failed, Reason.mailboxfull, code=452, status="4.2.2",
                     text="4.2.2 over quota for months", rule="quota.x")),
    # a temporary refusal is retried, or expires (never hard, never suppressed)
    (RecipientAnswer(Phase.rcpt, R(451, "4.7.1 greylisted")),
     Said("blocked", True, None, "grey.x", None, True), False,
     AttemptDecision(State.deferred, Reason.blocked, code=451, status="4.7.1",
                     text="4.7.1 greylisted", rule="grey.x")),
    (RecipientAnswer(Phase.rcpt, R(451, "4.7.1 greylisted")),
     Said("blocked", True, None, "grey.x", None, True), True,
     AttemptDecision(State.expired, Reason.expired, code=451, status="4.7.1",
                     text="4.7.1 greylisted", rule="grey.x")),
    # a classifier word outside the vocabulary is undefined
    (RecipientAnswer(Phase.rcpt, R(550, "5.0.0 what")),
     Said("gibberish", False, None, None, None, False), False,
     AttemptDecision(State.failed, Reason.undefined, code=550, status="5.0.0",
                     text="5.0.0 what")),
    # a positive reply that did not deliver: nothing known, try again
    (RecipientAnswer(Phase.data, R(250, "2.0.0 odd")), Said(), False,
     AttemptDecision(State.deferred, Reason.undefined, code=250, status="2.0.0",
                     text="2.0.0 odd")),
    # no reply: the session broke before this recipient's answer
    (RecipientAnswer(Phase.data, None, "connection lost"), Said(), False,
     AttemptDecision(State.deferred, Reason.networkerror, text="connection lost")),
    (RecipientAnswer(Phase.dot, None), Said(), False,
     AttemptDecision(State.deferred, Reason.networkerror,
                     text="connection lost during dot")),
    (RecipientAnswer(Phase.timeout, None, "timeout waiting for the dot reply"), Said(), True,
     AttemptDecision(State.expired, Reason.expired,
                     text="timeout waiting for the dot reply")),
    # a session that could not be set up is retried whatever its reply
    (SessionFailure(Phase.greeting, R(554, "5.7.1 go away"), "554 5.7.1 go away"),
     Said("blocked", False, None, "block.x", None, False), False,
     AttemptDecision(State.deferred, Reason.blocked, code=554, status="5.7.1",
                     text="greeting: 5.7.1 go away", rule="block.x")),
    (SessionFailure(Phase.greeting, R(421, "too busy"), "421 too busy"),
     Said("toomanyconn", False, "4.7.0", "busy.x", None, False), True,
     AttemptDecision(State.expired, Reason.expired, code=421, status="4.7.0",
                     text="greeting: too busy", rule="busy.x")),
    # ... the client's own reason wins over the classifier's
    (SessionFailure(Phase.starttls, R(454, "4.7.0 TLS not available"), "STARTTLS refused",
                    Reason.failedstarttls), Said("blocked"), False,
     AttemptDecision(State.deferred, Reason.failedstarttls, code=454, status="4.7.0",
                     text="starttls: 4.7.0 TLS not available", rule="rule.x")),
    # ... and without a reply it is local
    (SessionFailure(Phase.connect, None, "connect to [192.0.2.1]:25 failed: refused"),
     Said(), False,
     AttemptDecision(State.deferred, Reason.networkerror,
                     text="connect: connect to [192.0.2.1]:25 failed: refused",
                     source=Source.local)),
    (SessionFailure(Phase.starttls, None, "certificate not verified", Reason.securityerror),
     Said(), False,
     AttemptDecision(State.deferred, Reason.securityerror,
                     text="starttls: certificate not verified", source=Source.local)),
    # decided here: a permanent recipient-side cause is hard and suppressed...
    (LocalFailure(Reason.hostunknown, "example.test: no such domain", True, "5.1.2"),
     Said(), False,
     AttemptDecision(State.failed, Reason.hostunknown, hard=True, suppress=True,
                     status="5.1.2", text="example.test: no such domain",
                     source=Source.local)),
    # ... a permanent cause of ours is not
    (LocalFailure(Reason.mailererror, "cannot make a return path: too long", True), Said(),
     False,
     AttemptDecision(State.failed, Reason.mailererror,
                     text="cannot make a return path: too long", source=Source.local)),
    # ... a temporary one is retried, or expires
    (LocalFailure(Reason.networkerror, "DNS timeout for example.test", False, "4.4.3"),
     Said(), False,
     AttemptDecision(State.deferred, Reason.networkerror, status="4.4.3",
                     text="DNS timeout for example.test", source=Source.local)),
    (LocalFailure(Reason.systemerror, "RuntimeError: bug"), Said(), True,
     AttemptDecision(State.expired, Reason.expired, text="RuntimeError: bug",
                     source=Source.local)),
]


class DecideAttemptTests(SynchronousTestCase):
    """decide_attempt, row by row, and what it asks the classifier."""

    def test_table(self) -> None:
        """Each (attempt, verdict, expired) row gets its decision."""
        for attempt, verdict, expired, expected in ATTEMPTS:
            decision = decide_attempt(attempt, N(verdict), expired=expired)
            self.assertEqual(decision, expected, (attempt, verdict, expired))
            self.assertEqual(decision.retry, expected.state is State.deferred)

    def test_refusals_carry_the_command(self) -> None:
        """A refusal in a transaction is classified with the command it answered, in
        Postfix's words; a set-up failure and a delivery are not."""
        classifier = N()
        decide_attempt(RecipientAnswer(Phase.rcpt, R(550, "5.1.1 no")), classifier,
                       expired=False)
        decide_attempt(RecipientAnswer(Phase.dot, R(554, "5.7.1 spam")), classifier,
                       expired=False)
        decide_attempt(SessionFailure(Phase.ehlo, R(550, "5.7.1 no"), "refused"), classifier,
                       expired=False)
        decide_attempt(RecipientAnswer(Phase.dot, R(250, "2.0.0 ok")), classifier,
                       expired=False)
        self.assertEqual(classifier.asked, [
            (550, "5.1.1", "5.1.1 no (in reply to RCPT TO command)"),
            (554, "5.7.1", "5.7.1 spam (in reply to end of DATA command)"),
            (550, "5.7.1", "5.7.1 no"),
        ])

    def test_result(self) -> None:
        """The decision becomes the result to record; a next time only for a retry."""
        deferred = AttemptDecision(State.deferred, Reason.blocked, code=451)
        failed = AttemptDecision(State.failed, Reason.userunknown, hard=True, suppress=True)
        self.assertEqual(
            deferred.result(7, 10.0, remote_host="mx", remote_ip="192.0.2.1", tls="TLSv1.3",
                            duration=0.5, next_attempt_at=70.0, owner="n1"),
            AttemptResult(delivery_id=7, at=10.0, state=State.deferred, reason="blocked",
                          code=451, remote_host="mx", remote_ip="192.0.2.1", tls="TLSv1.3",
                          duration=0.5, next_attempt_at=70.0, owner="n1"))
        result = failed.result(7, 10.0, next_attempt_at=70.0)
        self.assertEqual((result.state, result.hard, result.suppress, result.next_attempt_at,
                          result.source), (State.failed, True, True, None, Source.smtp))

    def test_delivered(self) -> None:
        """Only a 2xx after the dot takes responsibility."""
        self.assertTrue(delivered(Phase.dot, R(250, "ok")))
        self.assertTrue(delivered("dot", R(251, "ok")))
        self.assertFalse(delivered(Phase.rcpt, R(250, "ok")))
        self.assertFalse(delivered(Phase.dot, R(354, "go on")))
        self.assertFalse(delivered(Phase.dot, None))


class ExplanationTests(SynchronousTestCase):
    """A refusal or deferral by a server in our session keeps the classifier's explanation
    (issue 22 item 6: the recipient page shows why it was called ``blocked``)."""

    def decide(self, attempt: Attempt, expired: bool = False) -> AttemptDecision:
        return decide_attempt(attempt, ReplyClassifier.load(), expired=expired)

    def test_blocked_refusal(self) -> None:
        """The evidence (stage, command, codes, text) and the decision with its runner-up."""
        wire = "5.7.1 Service unavailable; client host [192.0.2.1] blocked using zen.spamhaus.org"
        decision = self.decide(RecipientAnswer(Phase.rcpt, R(550, wire)))
        self.assertEqual((decision.state, decision.reason), (State.failed, Reason.blocked))
        why = decision.explanation
        assert why is not None
        self.assertEqual({k: why[k] for k in ("phase", "reason", "decided_by")},
                         {"phase": "rcpt", "reason": "blocked", "decided_by": decision.rule})
        self.assertNotIn("status_inferred", why)
        self.assertTrue(why["runner_up"])
        self.assertTrue(why["runner_up_rule"])
        # what the event's own columns hold is not repeated
        self.assertFalse({"code", "status", "diagnostic", "remote_mta", "rule"} & set(why))
        result = decision.result(1, 10.0, remote_host="mx.two.test")
        assert result.explanation is not None
        self.assertEqual(json.loads(result.explanation), why)
        self.assertEqual((result.code, result.status, result.text, result.remote_host),
                         (550, "5.7.1", wire, "mx.two.test"))

    def test_inferred_status(self) -> None:
        """A reply without an enhanced status gets the rule's, and says it was inferred."""
        decision = self.decide(RecipientAnswer(Phase.rcpt, R(550, "Access denied")))
        assert decision.explanation is not None
        self.assertEqual((decision.status, decision.explanation["status_inferred"]),
                         ("5.7.1", True))
        self.assertEqual(decision.explanation["decided_by"], "blocked.text")
        self.assertNotIn("runner_up", decision.explanation)

    def test_status_table_decided(self) -> None:
        """When the status table decides, the rule is None but the explanation names the
        entry (the gap the review found: only the rule used to be kept)."""
        decision = self.decide(RecipientAnswer(Phase.rcpt, R(550, "5.7.1 nope")))
        self.assertEqual((decision.reason, decision.rule), (Reason.blocked, None))
        assert decision.explanation is not None
        self.assertEqual(decision.explanation["decided_by"], "status.5.7.1")

    def test_deferral_and_expiry(self) -> None:
        """A 4xx during our session is explained as delayed; so is the last one that
        expired the delivery (its explanation is the classifier's, not ``expired``)."""
        answer = RecipientAnswer(Phase.rcpt, R(450, "4.7.1 Client host rejected: cannot find "
                                                    "your reverse hostname, [192.0.2.1]"))
        for expired, state in ((False, State.deferred), (True, State.expired)):
            decision = self.decide(answer, expired)
            self.assertEqual(decision.state, state)
            assert decision.explanation is not None
            self.assertEqual((decision.explanation["phase"], decision.explanation["reason"]),
                             ("rcpt", "requireptr"))
            self.assertFalse(decision.hard)

    def test_session_refusal(self) -> None:
        """A server that refuses the session (a 421 greeting) is explained at its stage."""
        decision = self.decide(SessionFailure(Phase.greeting, R(421, "4.3.2 shutting down"),
                                              "refused"))
        assert decision.explanation is not None
        self.assertEqual((decision.state, decision.explanation["phase"],
                          decision.explanation["decided_by"]),
                         (State.deferred, "greeting", "notaccept.status"))

    def test_nothing_to_explain(self) -> None:
        """A delivery, a local failure and a broken session record no explanation."""
        for attempt in (RecipientAnswer(Phase.dot, R(250, "2.0.0 ok")),
                        LocalFailure(Reason.hostunknown, "NXDOMAIN", permanent=True),
                        RecipientAnswer(Phase.dot, None, "connection lost"),
                        SessionFailure(Phase.connect, None, "refused")):
            decision = self.decide(attempt)
            self.assertIsNone(decision.explanation, attempt)
            self.assertIsNone(decision.result(1, 10.0).explanation)
