"""The recipient page explains each returned message, and each refusal or deferral a
server gave during our own SMTP session: evidence, decision, runner-up.

docs/bounce-reasons.md: an operator must be able to see why a recipient was
called ``blocked``. The page reads the analysis recorded with the returned
message, as the bounce processor stores it (``Analysis.to_json()``), and the
classifier's explanation recorded with the attempt
(``hurricane.decisions.explain_reply``).
"""

from __future__ import annotations

import json
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from hurricane.bounce.analyze import analyze
from hurricane.bounce.classify import ReplyClassifier
from hurricane.decisions import AttemptDecision, RecipientAnswer, decide_attempt
from hurricane.model import AttemptResult, BounceEvent, EventKind, ReturnedMessage, State
from hurricane.outcome import Phase
from hurricane.report.pages import explain_result
from hurricane.smtp_reply import Reply

from ..store.contract import message
from .helpers import T0, WebFixture, body_of, json_of, run

BASE = "http://127.0.0.1"

DSN = (
    b"From: MAILER-DAEMON@mx.example.net (Mail Delivery System)\r\n"
    b"To: <verp@bounce.test>\r\n"
    b"Subject: Undelivered Mail Returned to Sender\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
    b"--B\r\nContent-Type: text/plain\r\n\r\n"
    b"<bounce@two.test>: host mx.two.test[192.0.2.7] said: 550 5.7.1 Service\r\n"
    b"    unavailable; client host [192.0.2.1] blocked using zen.spamhaus.org (in reply to\r\n"
    b"    RCPT TO command)\r\n\r\n"
    b"--B\r\nContent-Type: message/delivery-status\r\n\r\n"
    b"Reporting-MTA: dns; mx.example.net\r\n\r\n"
    b"Final-Recipient: rfc822; bounce@two.test\r\nAction: failed\r\nStatus: 5.7.1\r\n"
    b"Remote-MTA: dns; mx.two.test\r\n"
    b"Diagnostic-Code: smtp; 550 5.7.1 Service unavailable; client host [192.0.2.1] blocked "
    b"using zen.spamhaus.org\r\n\r\n--B--\r\n"
)


class WhyTests(SynchronousTestCase):
    """The 'Why' section of the recipient page."""

    def setUp(self) -> None:
        self.f = WebFixture()
        self.delivery = self.f.data["ids"][3]
        recipient = run(self.f.store.get_delivery(self.delivery)).recipient
        self.recipient = recipient

    def record(self, analysis: str) -> int:
        bounce_id = run(self.f.store.store_bounce(ReturnedMessage(
            DSN, "", "verp@bounce.test", T0 + 100)))
        run(self.f.store.record_bounce(bounce_id, [BounceEvent(
            delivery_id=self.delivery, kind=EventKind.bounce, at=T0 + 100, bounce_id=bounce_id,
            reason="blocked", correlation="verp")], "bounce", "verp", analysis))
        return int(bounce_id)

    def page(self) -> str:
        response, text = body_of(self.f, self.f.treq.get(BASE + f"/delivery/{self.delivery}"))
        self.assertEqual(response.code, 200)
        return str(text)

    def test_evidence_decision_runner_up(self) -> None:
        """The real analysis of a blocked refusal shows its stage, codes, rule and runner-up."""
        analysis = analyze(DSN)
        [r] = analysis.results
        self.assertEqual((r.recipient, r.reason, r.stage), (self.recipient, "blocked", "rcpt"))
        self.record(json.dumps(analysis.to_json()))
        page = self.page()
        self.assertIn("Why: the evidence and the decision", page)
        self.assertIn("stage rcpt (from the notification)", page)
        self.assertIn("status 5.7.1", page)
        self.assertIn("remote MTA mx.two.test", page)
        self.assertIn(f"blocked, by {r.decided_by}", page)
        if r.runner_up:
            self.assertIn(f"{r.runner_up} ({r.runner_up_rule})", page)

    def test_no_analysis_no_section(self) -> None:
        """A returned message recorded without an analysis adds no 'Why' row."""
        self.record("{}")
        self.assertNotIn("Why: the evidence", self.page())

    def test_escaped(self) -> None:
        """Values from the returned message are text, never markup."""
        hostile = {"results": [{"recipient": self.recipient, "reason": "blocked",
                                "decided_by": "<script>alert(1)</script>",
                                "runner_up": "filtered", "runner_up_rule": "<b>x</b>",
                                "remote_mta": "<img src=x>", "action": "failed"}]}
        self.record(json.dumps(hostile))
        page = self.page()
        self.assertNotIn("<script>alert(1)", page)
        self.assertNotIn("<img src=x>", page)
        self.assertIn("&lt;script&gt;", page)

    def test_explain_result(self) -> None:
        """The recipient's result is found by address, or the only result is taken."""
        record = json.dumps({"results": [{"recipient": "a@x"}, {"recipient": "B@x"}]})
        self.assertEqual(explain_result(record, "b@X"), {"recipient": "B@x"})
        self.assertIsNone(explain_result(record, "c@x"))
        self.assertEqual(explain_result(json.dumps({"results": [{"recipient": ""}]}), "c@x"),
                         {"recipient": ""})
        for bad in (None, "", "not json", "[]", '{"results": 3}'):
            self.assertIsNone(explain_result(bad, "a@x"), bad)


class SessionWhyTests(SynchronousTestCase):
    """The 'Why' of a refusal or deferral a server gave during our own SMTP session
    (a synchronous failure: no returned message), shown in the same form."""

    def setUp(self) -> None:
        self.f = WebFixture()
        result = run(self.f.store.enqueue(message("someone@two.test"), T0))
        self.delivery = int(result.recipients[0].delivery_id)

    def attempt(self, code: int, wire: str, at: float = T0 + 50, **kw: Any) -> AttemptDecision:
        decision = decide_attempt(RecipientAnswer(Phase.rcpt, Reply.parse(code, wire)),
                                  ReplyClassifier.load(), expired=False)
        run(self.f.store.record_attempts([decision.result(
            self.delivery, at, remote_host="mx.two.test", remote_ip="192.0.2.7", **kw)]))
        return decision

    def page(self) -> str:
        response, text = body_of(self.f, self.f.treq.get(BASE + f"/delivery/{self.delivery}"))
        self.assertEqual(response.code, 200)
        return str(text)

    def test_blocked_refusal(self) -> None:
        """A 550 at RCPT our client saw: stage, command, codes, MTA, text, rule, runner-up."""
        decision = self.attempt(550, "5.7.1 Service unavailable; client host [192.0.2.1] "
                                     "blocked using zen.spamhaus.org")
        assert decision.explanation is not None
        runner_up, runner_up_rule = (decision.explanation["runner_up"],
                                     decision.explanation["runner_up_rule"])
        page = self.page()
        self.assertIn("Why: the evidence and the decision", page)
        self.assertIn("none: our own SMTP session", page)
        self.assertIn("action failed; stage rcpt (reply to our RCPT TO); code 550; "
                      "status 5.7.1 (catch-all); diagnostic type smtp; remote MTA mx.two.test",
                      page)
        self.assertIn("text 5.7.1 Service unavailable; client host [192.0.2.1] blocked", page)
        self.assertIn(f"blocked, by {decision.rule}", page)
        self.assertIn(f"{runner_up} ({runner_up_rule})", page)

    def test_status_table_decision(self) -> None:
        """A refusal the status table decided (no rule) still names what decided it."""
        self.attempt(550, "5.7.1 nope")
        self.assertIn("blocked, by status.5.7.1", self.page())

    def test_inferred_status(self) -> None:
        """A reply with no enhanced status shows the rule's, marked inferred."""
        self.attempt(550, "Access denied")
        self.assertIn("code 550; status 5.7.1 (catch-all, inferred)", self.page())

    def test_deferral(self) -> None:
        """A 4xx during our session is explained too, as delayed, one row per attempt."""
        wire = "4.7.1 Client host rejected: cannot find your reverse hostname, [192.0.2.1]"
        self.attempt(450, wire, T0 + 50)
        self.attempt(450, wire, T0 + 950)
        page = self.page()
        self.assertEqual(page.count("action delayed; stage rcpt (reply to our RCPT TO)"), 2)
        self.assertIn("requireptr, by requireptr.text", page)

    def test_api_carries_the_explanation(self) -> None:
        """The delivery's JSON has each attempt's explanation as an object."""
        self.attempt(550, "5.7.1 nope")
        response, body = json_of(self.f, self.f.treq.get(
            BASE + f"/api/v1/deliveries/{self.delivery}", headers=self.f.auth()))
        self.assertEqual(response.code, 200)
        [attempt] = [e for e in body["events"] if e["kind"] == "attempt"]
        why = attempt["explanation"]
        self.assertEqual(
            {k: why[k] for k in ("action", "stage", "command", "code", "status", "diagnostic",
                                 "remote_mta", "reason", "decided_by", "rule", "runner_up")},
            {"action": "failed", "stage": "rcpt", "command": "RCPT TO", "code": "550",
             "status": "5.7.1", "diagnostic": "5.7.1 nope", "remote_mta": "mx.two.test",
             "reason": "blocked", "decided_by": "status.5.7.1", "rule": None,
             "runner_up": None})
        [queued] = [e for e in body["events"] if e["kind"] == "queued"]
        self.assertIsNone(queued["explanation"])

    def test_unreadable_or_hostile(self) -> None:
        """An explanation that does not read adds no row; its values are text, never markup."""
        for explanation in ("not json", "[1]"):
            run(self.f.store.record_attempts([AttemptResult(
                delivery_id=self.delivery, at=T0 + 60, state=State.deferred,
                explanation=explanation)]))
        self.assertNotIn("Why: the evidence", self.page())
        hostile = {"action": "failed", "stage": "rcpt", "stage_source": "session",
                   "command": "<b>RCPT</b>", "diagnostic": "<script>alert(1)</script>",
                   "reason": "blocked", "decided_by": "<img src=x>"}
        run(self.f.store.record_attempts([AttemptResult(
            delivery_id=self.delivery, at=T0 + 70, state=State.failed,
            explanation=json.dumps(hostile))]))
        page = self.page()
        self.assertIn("Why: the evidence", page)
        for raw in ("<script>alert(1)", "<img src=x>", "<b>RCPT"):
            self.assertNotIn(raw, page)
        self.assertIn("&lt;script&gt;", page)
