"""The demo's summary and progress notes as pure functions: the side-by-side count,
the reasons table, what it waits for, where it kept its data."""

from __future__ import annotations

import io
import re
import time
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from hurricane.demo import (
    Progress,
    SubmitResult,
    Waiting,
    compare_with_sink,
    deferred_reasons,
    describe_waiting,
    kept_data_text,
    summary_text,
)
from hurricane.model import Delivery, State, Summary


def summary(**by_state: int) -> Summary:
    """A Summary of a mailing with these states (reasons made up to match)."""
    reasons = {"delivered": by_state.get("delivered", 0), "userunknown":
               by_state.get("failed", 0) + by_state.get("bounced", 0),
               "feedback": by_state.get("complained", 0), "expired": by_state.get("expired", 0)}
    return Summary(messages=sum(by_state.values()), recipients=sum(by_state.values()),
                   by_state=dict(by_state), by_reason={k: v for k, v in reasons.items() if v},
                   sync_failures=by_state.get("failed", 0),
                   async_bounces=by_state.get("bounced", 0),
                   complaints=by_state.get("complained", 0))


def sink(**overrides: Any) -> dict[str, Any]:
    """A SinkStats.as_dict() of the mailing in :func:`summary` (defaults agree with it)."""
    data: dict[str, Any] = {
        "accepted": {"accept": 90, "late": 3, "complain": 2, "vacation": 1, "delayed": 1},
        "rejected": {"unknown": 4}, "deferred": {"grey": 2}, "dropped": {"drop": 5},
        "stalled": {}, "split": {}, "unanswered": {"drop": 1},
        "returns_sent": {"dsn": 3, "arf": 2, "autoreply": 1, "delayed": 1, "unsubscribe": 2,
                         "unsubscribe-mailto": 1},
        "returns_failed": {}, "returns_scheduled": {},
    }
    data.update(overrides)
    return data


class _Stats:
    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    def as_dict(self) -> dict[str, Any]:
        return self.data


AGREEING = summary(delivered=92, failed=4, bounced=3, complained=2, expired=1)
NOTICES = {"autoreply": 1, "delayed": 1, "unsubscribed": 3}


def delivery(i: int, *, code: int | None, status: str | None, text: str,
             next_attempt_at: float, created_at: float) -> Delivery:
    """A deferred delivery row."""
    return Delivery(delivery_id=i, message_pk=i, queue_id=f"Q{i}", sender="s@x.test",
                    recipient=f"user{i}@x.test", domain="x.test", state=State.deferred,
                    reason="networkerror" if code is None else "blocked", hard=False,
                    attempts=2, next_attempt_at=next_attempt_at, code=code, status=status,
                    text=text, remote_host=None, mailing_id=None, message_id=None,
                    header_message_id=None, orcpt=None, created_at=created_at,
                    updated_at=created_at)


class CompareTests(SynchronousTestCase):
    """Hurricane's count next to the sink's, line by line."""

    def test_agreeing(self) -> None:
        """Accepted minus returned is delivered; refused is failed; returns are bounces,
        complaints and notices; unanswered is expired: every line equal."""
        rows = compare_with_sink(AGREEING, NOTICES, sink())
        self.assertEqual([(r.hurricane, r.sink) for r in rows],
                         [(92, 92), (4, 4), (3, 3), (2, 2), (1, 1), (1, 1), (1, 1), (3, 3)])

    def test_missing_bounce(self) -> None:
        """A DSN the sink sent that Hurricane did not record shows on two lines."""
        s = summary(delivered=93, failed=4, bounced=2, complained=2, expired=1)
        rows = {r.label: (r.hurricane, r.sink) for r in compare_with_sink(s, NOTICES, sink())}
        self.assertEqual(rows["asynchronous bounces (DSN / NDR later)"], (2, 3))
        self.assertEqual(rows["delivered (accepted, nothing came back)"], (93, 92))


class SummaryTextTests(SynchronousTestCase):
    """The table printed at the end of the demo."""

    def text(self, s: Summary = AGREEING, st: dict[str, Any] | None = None,
             settled: bool = True, waiting: str = "") -> str:
        return summary_text(s, _Stats(st or sink()), SubmitResult(accepted=s.recipients),
                            12.0, settled, NOTICES, waiting)

    def test_match_line(self) -> None:
        """When every line agrees the summary says so in words: no arithmetic needed."""
        out = self.text()
        self.assertIn("Hurricane's count matches the sink's on every line.", out)
        self.assertNotIn("differs", out)
        self.assertRegex(out, r"auto-replies \(RFC 3834; stay delivered\)\s+1\s+1\n")
        self.assertRegex(out, r'delay notices \(DSN "delayed"; stay delivered\)\s+1\s+1\n')
        self.assertRegex(out, r"unsubscribes \(one-click POST or mailto\)\s+3\s+3\n")

    def test_mismatch_marked(self) -> None:
        """A differing line is marked and the summary says how many lines differ; a return
        the sink could not send is mentioned."""
        st = sink(returns_failed={"dsn": 1})
        out = self.text(summary(delivered=93, failed=4, bounced=2, complained=2, expired=1),
                        st)
        self.assertIn("differs from the sink's on 2 lines", out)
        self.assertEqual(out.count("<- differs"), 2)
        self.assertIn("could not send 1 return(s)", out)

    def test_reasons_without_delivered(self) -> None:
        """The reasons table lists why recipients failed; 'delivered' is not a reason."""
        out = self.text()
        table = out.split("  reason", 1)[1].split("\n\n", 1)[0]
        self.assertNotIn("delivered", table)
        self.assertIn("userunknown", table)
        self.assertRegex(out, r"\n  delivered\s+92\n")  # the state stays in the states table

    def test_timed_out_says_what_it_waits_for(self) -> None:
        """When not settled, the summary starts with what is still waited for."""
        out = self.text(settled=False, waiting="3 deferred recipients")
        self.assertIn("(timed out waiting: some still pending)", out)
        self.assertIn("still waiting for: 3 deferred recipients", out)


class WaitingTests(SynchronousTestCase):
    """What the demo says while it sits at 1987/2000."""

    def test_dropped_connections(self) -> None:
        """Deferred recipients whose connection dropped are named as such, with the
        next retry and when they are given up."""
        now = time.mktime((2026, 3, 1, 12, 0, 0, 0, 0, -1))
        rows = [delivery(i, code=None, status=None, text="connection lost: Connection to "
                         "the other side was lost in a non-clean fashion.",
                         next_attempt_at=now + 2 + i, created_at=now - 5) for i in range(13)]
        rows.append(delivery(99, code=451, status="4.7.1", text="4.7.1 <user99@x.test>: "
                             "Recipient address rejected: Greylisted, try again later",
                             next_attempt_at=now + 1, created_at=now - 1))
        w = Waiting(deferred=14, reasons=deferred_reasons(rows, 10.0), returns_pending=2)
        text = describe_waiting(w, now, 10.0)
        self.assertTrue(text.startswith(
            "14 deferred recipients: 13 retried after a dropped connection ('connection "
            "lost'), next retry 12:00:02 (in 2 s), given up after 12:00:05 (max_age 10 s); "
            "1 retried after 451 4.7.1 Recipient address rejected: Greylisted, try again "
            "later, next retry 12:00:01 (in 1 s), given up after 12:00:09"), text)
        self.assertTrue(text.endswith("; 2 return(s) the sink has yet to send (late DSNs, "
                                      "NDRs, auto-replies, complaints)"), text)
        self.assertNotIn("user99", text)

    def test_nothing(self) -> None:
        """An empty wait says so."""
        self.assertTrue(Waiting().nothing)
        self.assertEqual(describe_waiting(Waiting(), 0.0), "nothing")


class OutputTests(SynchronousTestCase):
    """Notes above the progress bar, and where the data stays."""

    def test_note_keeps_the_bar(self) -> None:
        """On a terminal a note clears the bar's line, prints, and redraws the bar."""
        out = io.StringIO()
        out.isatty = lambda: True  # type: ignore[method-assign]
        bar = Progress(out, 10)
        bar.draw(5, {"delivered": 5})
        bar.note("  waiting for 5 deferred recipients")
        text = out.getvalue()
        last_bar = re.findall(r"\[#+\.+\] 5/10 settled[^\r\n]*", text)
        self.assertEqual(len(last_bar), 2)
        self.assertTrue(text.endswith(last_bar[1]))
        self.assertIn("\r\x1b[K  waiting for 5 deferred recipients\n", text)

    def test_kept_data(self) -> None:
        """The data directory, the outcomes command and how to remove it are named."""
        text = kept_data_text("/tmp/d", "/tmp/d/hurricane.toml")
        self.assertIn("kept in /tmp/d", text)
        self.assertIn("hurricane outcomes --config /tmp/d/hurricane.toml", text)
        self.assertIn("rm -r /tmp/d", text)
