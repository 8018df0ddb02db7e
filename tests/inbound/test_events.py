"""Tests for the pure parts of hurricane.inbound.processor: events and idempotency keys."""

from __future__ import annotations

from dataclasses import replace

from twisted.trial.unittest import SynchronousTestCase

from hurricane.bounce.model import Analysis, RecipientResult
from hurricane.decisions import decide_bounce
from hurricane.inbound.correlate import Correlation, Match
from hurricane.inbound.processor import build_events, idempotency_key, message_fingerprint
from hurricane.model import BounceEvent, EventKind, Source, State, StoredBounce

from .helpers import NOW, World, result

RAW = b"From: a@example.net\r\nSubject: x\r\n\r\nbody\r\n"


class FingerprintTests(SynchronousTestCase):
    """message_fingerprint ignores what changes between two copies of one message."""

    def test_line_endings_and_trailing_space(self) -> None:
        """CRLF, LF, trailing blanks and trailing empty lines do not change the fingerprint."""
        self.assertEqual(message_fingerprint(RAW),
                         message_fingerprint(RAW.replace(b"\r\n", b"\n") + b"\n\n"))
        self.assertEqual(message_fingerprint(RAW),
                         message_fingerprint(RAW.replace(b"body", b"body  ")))

    def test_trace_fields_ignored(self) -> None:
        """Received and Return-Path lines (folded or not) added on the way are left out."""
        traced = (b"Return-Path: <>\r\nReceived: from a\r\n\tby b; Fri\r\n" + RAW)
        self.assertEqual(message_fingerprint(RAW), message_fingerprint(traced))

    def test_content_matters(self) -> None:
        """A different body or header gives a different fingerprint."""
        self.assertNotEqual(message_fingerprint(RAW), message_fingerprint(RAW + b"more\r\n"))
        self.assertNotEqual(message_fingerprint(RAW),
                            message_fingerprint(RAW.replace(b"Subject: x", b"Subject: y")))

    def test_received_in_body_kept(self) -> None:
        """A Received line inside the body (the returned original) is part of the content."""
        a = RAW + b"Received: from x\r\n"
        b = RAW + b"Received: from y\r\n"
        self.assertNotEqual(message_fingerprint(a), message_fingerprint(b))

    def test_key(self) -> None:
        """The idempotency key depends on delivery and recipient, not on the recipient's case."""
        fp = message_fingerprint(RAW)
        self.assertEqual(idempotency_key(fp, 1, "A@example.net"),
                         idempotency_key(fp, 1, "a@example.net"))
        self.assertNotEqual(idempotency_key(fp, 1, "a@example.net"),
                            idempotency_key(fp, 2, "a@example.net"))
        self.assertEqual(len(idempotency_key(fp, 1, "a")), 64)


class BuildEventsTests(SynchronousTestCase):
    """build_events maps categories and actions to event kinds and flags."""

    def setUp(self) -> None:
        self.w = World()
        self.rows = self.w.send(["alice@example.net", "bob@example.net"])
        self.bounce = StoredBounce(7, RAW, "", "x", NOW + 60, None, "pending")

    def events(self, category: str, *results: RecipientResult | None) -> list[BounceEvent]:
        corr = Correlation(key="verp")
        for i, r in enumerate(results):
            corr.matches.append(Match(r, self.rows[i % 2], "verp"))
        return build_events(self.bounce, Analysis(category, tuple(r for r in results if r)),
                            corr, message_fingerprint(RAW))

    def test_permanent_bounce(self) -> None:
        """A failed 5.x.x result is a permanent bounce carrying every field of the result."""
        [ev] = self.events("bounce", result("alice@example.net"))
        self.assertEqual(
            (ev.kind, ev.permanent, ev.hard, ev.suppress, ev.code, ev.status, ev.reason),
            (EventKind.bounce, True, True, True, 550, "5.1.1", "userunknown"))
        self.assertEqual((ev.at, ev.bounce_id, ev.correlation, ev.source, ev.rule),
                         (NOW + 60, 7, "verp", Source.dsn, "test.rule"))
        self.assertEqual(ev.remote_host, "mx.example.net")
        self.assertEqual(ev.idem_key, idempotency_key(message_fingerprint(RAW),
                                                      self.rows[0].delivery_id,
                                                      "alice@example.net"))

    def test_code_alone_decides(self) -> None:
        """Without a status, a 4xx code makes the failure temporary and a 5xx permanent.

        The events say what the analysis proposed; the temporary one, final
        all the same, is never applied as a suppression (decide_bounce decides
        that, since issue 17: the event used to carry the masked value).
        """
        [t] = self.events("bounce", result("a@x", code="421", status=None))
        [p] = self.events("bounce", result("a@x", code="554", status=None))
        [n] = self.events("bounce", result("a@x", code=None, status=None))
        self.assertEqual((t.permanent, p.permanent, n.permanent), (False, True, True))
        self.assertEqual((t.final, p.final, n.final), (True, True, True))
        decision = decide_bounce(t, State.delivered, 1)
        self.assertEqual((decision.target, decision.suppress, decision.hard),
                         (State.bounced, False, False))

    def test_sender_side_never_suppresses(self) -> None:
        """A permanent failure the analysis does not mark suppress never suppresses."""
        [ev] = self.events("bounce", result("a@x", status="5.7.1", reason="badreputation",
                                            hard=False, suppress=False))
        self.assertEqual((ev.permanent, ev.suppress), (True, False))

    def test_actions(self) -> None:
        """delayed, relayed, delivered and expanded results become information events."""
        kinds = [
            self.events("bounce", result("a@x", action=a, status="2.0.0"))[0].kind
            for a in ("delayed", "relayed", "delivered", "expanded")
        ]
        self.assertEqual(kinds, [EventKind.delayed] + [EventKind.relayed] * 3)
        ev = self.events("bounce", result("a@x", action="delayed", status="4.4.7"))[0]
        self.assertEqual((ev.permanent, ev.suppress, ev.hard), (False, False, False))

    def test_unknown_action_skipped(self) -> None:
        """A result with an action outside RFC 3464 gives no event."""
        self.assertEqual(self.events("bounce", result("a@x", action="exploded")), [])

    def test_complaint_always_suppresses(self) -> None:
        """A feedback result is a complaint that suppresses, whatever the analysis said."""
        [ev] = self.events("feedback", result("a@x", reason="feedback", suppress=False,
                                              source="arf", feedback_type="abuse",
                                              code=None, status=None))
        self.assertEqual((ev.kind, ev.suppress, ev.hard, ev.feedback_type, ev.source),
                         (EventKind.complaint, True, False, "abuse", Source.arf))

    def test_autoreply_never_fails(self) -> None:
        """An auto-reply result gives an autoreply event that is neither permanent nor hard."""
        [ev] = self.events("autoreply", result("a@x", action="failed", reason="vacation",
                                               source="autoreply"))
        self.assertEqual((ev.kind, ev.permanent, ev.hard, ev.suppress),
                         (EventKind.autoreply, False, False, False))

    def test_other_gives_nothing(self) -> None:
        """Category other gives no event even with results."""
        self.assertEqual(self.events("other", result("a@x")), [])

    def test_message_level_bounce(self) -> None:
        """A bounce with no readable result is recorded as a non-permanent undefined event."""
        [ev] = self.events("bounce", None)
        self.assertEqual((ev.kind, ev.reason, ev.permanent, ev.source),
                         (EventKind.bounce, "undefined", False, Source.heuristic))

    def test_duplicates_keep_most_severe(self) -> None:
        """Two results for the same delivery and recipient keep only the most severe one."""
        corr = Correlation(key="verp")
        delayed = result("alice@example.net", action="delayed", status="4.2.2")
        failed = result("alice@example.net")
        corr.matches = [Match(delayed, self.rows[0], "verp"), Match(failed, self.rows[0], "verp")]
        evs = build_events(self.bounce, Analysis("bounce", (delayed, failed)), corr,
                           message_fingerprint(RAW))
        self.assertEqual([e.kind for e in evs], [EventKind.bounce])

    def test_unknown_source_falls_back(self) -> None:
        """A source word outside the model falls back to heuristic for failures."""
        [ev] = self.events("bounce", replace(result("a@x"), source="crystal-ball"))
        self.assertEqual(ev.source, Source.heuristic)

    def test_long_diagnostic_cut(self) -> None:
        """The diagnostic text kept on an event is bounded."""
        [ev] = self.events("bounce", replace(result("a@x"), diagnostic="x" * 10_000))
        assert ev.text is not None
        self.assertEqual(len(ev.text), 2000)
