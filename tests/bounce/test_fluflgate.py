"""fluflgate.cannot_find: True only when flufl.bounce can name no recipient of a message."""

from __future__ import annotations

import email
import logging

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from hurricane.bounce import fluflgate

logging.getLogger("flufl.bounce").setLevel(logging.CRITICAL)


def _flufl(raw: bytes) -> tuple[frozenset[bytes], frozenset[bytes]] | None:
    """flufl.bounce's (temporary, permanent) for ``raw``; None when a detector raised."""
    from flufl.bounce import all_failures
    try:
        return all_failures(email.message_from_bytes(raw))  # type: ignore[no-any-return]
    except Exception:
        return None


HEAD = b"From: MAILER-DAEMON@x.example\nSubject: failure\n\n"

#: One message per detector (or trigger) that flufl.bounce answers.
ANSWERED = {
    "DSN": b"From: MAILER-DAEMON@x.example\nContent-Type: multipart/report; boundary=b\n\n"
           b"--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; x\n\n"
           b"Final-Recipient: rfc822; a@y.example\nAction: failed\nStatus: 5.1.1\n\n--b--\n",
    "Exim": b"From: MAILER-DAEMON@x.example\nX-Failed-Recipients: a@y.example\n\nfailed\n",
    "Qmail": HEAD + b"Hi. This is the qmail-send program at x.example.\nI'm sorry.\n\n"
                    b"<a@y.example>:\nno mailbox\n",
    "Microsoft": b"From: postmaster@x.example\nContent-Type: multipart/mixed; boundary=b\n\n"
                 b"--b\n\nTranscript of session follows.\n\na@y.example\n--b--\n",
    "GroupWise": b"From: x@x.example\nX-Mailer: Novell GroupWise\n"
                 b"Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain\n\n"
                 b"<a@y.example>\n--b--\n",
    "Postfix": b"From: MAILER-DAEMON@x.example\nContent-Type: multipart/mixed; boundary=b\n\n"
               b"--b\nContent-Description: Notification\nContent-Type: text/plain\n\n"
               b"The Postfix program at host x.\n\n<a@y.example>: unknown user\n--b--\n",
    "Yahoo": b"From: MAILER-DAEMON@yahoo.com\n\nMessage from yahoo.com.\n<a@y.example>:\nno\n",
    "SimpleMatch": HEAD + b"Delivery has failed to these recipients\n[a@y.example]\n",
    "SimpleMatch-hartford": HEAD + b"Your message\n\n  a@y.example\n\nbecause:\n",
    "SimpleWarning": HEAD + b"Delivery to the following recipient has been delayed:\n"
                            b"  a@y.example\n",
    "LLNL": HEAD + b"sorry, a@y.example, failed\n",
    # AOL reads the decoded body: its trigger is not in the bytes
    "AOL-base64": b"From: MAILER-DAEMON@aol.com\nContent-Transfer-Encoding: base64\n\n"
                  b"bWFpbCB0byB0aGUgZm9sbG93aW5nIHJlY2lwaWVudHMgY291bGQgbm90IGJlIGRlbGl2ZXJlZApzY3JlZW5uYW1lCg==\n",
}


class KnownDetectorsTests(unittest.TestCase):

    def test_same_detectors_as_flufl(self) -> None:
        """The gate covers flufl.bounce's detectors, in its order: another version's
        list (a new detector) fails here, not silently in production."""
        from flufl.bounce import _scan
        self.assertEqual(tuple(d.__name__ for d in _scan._DETECTORS), fluflgate.DETECTORS)

    def test_answered_messages_pass_the_gate(self) -> None:
        """Every message one of its detectors answers is given to flufl.bounce."""
        for name, raw in ANSWERED.items():
            got = _flufl(raw)
            self.assertTrue(got and (got[0] or got[1]), name)
            self.assertFalse(fluflgate.cannot_find(raw), name)

    def test_plain_failure_is_skipped(self) -> None:
        """A notice none of the detectors can read is not given to it."""
        for raw in (HEAD + b"it failed\n", HEAD + b"Mail to a@y.example failed: no mailbox\n",
                    HEAD + b"Your message to a@y.example could not go\n"):
            self.assertTrue(fluflgate.cannot_find(raw), raw)
            self.assertEqual(_flufl(raw), (frozenset(), frozenset()))

    def test_non_ascii_or_encoded_never_skipped(self) -> None:
        """What the stdlib decodes before a detector reads it is not judged on its bytes."""
        qp = HEAD.replace(b"\n\n", b"\nContent-Transfer-Encoding: QUOTED-PRINTABLE\n\n")
        for raw in (HEAD + "caf\u00e9\n".encode(), qp + b"x\n"):
            self.assertFalse(fluflgate.cannot_find(raw))


#: Lines messages are made of: each detector's trigger and address shapes, MIME and
#: header lines, in several cases, and plain text.
_LINES = [
    b"Delivery has failed", b"DELIVERY HAS FAILED to:", b"The following addresses had",
    b"Transcript of session follows", b"transcript of session", b"Your message",
    b"Your message  ", b"Your message to: a@y.example", b"was automatically rejected",
    b"Hi. This is the qmail-send program", b"Hi. This is", b"<a@y.example>:", b"<a@y.example>",
    b"a@y.example", b"  a@y.example  ", b"[a@y.example]", b"x, a@y.example, y", b", a@y.example,",
    b"a@y.example, b@z.example", b"Intended recipient: a@y.example", b"Message from yahoo.com",
    b"not yet been delivered", b"Delivery to the following recipient failed",
    b"Did not reach the following recipient", b"did not reach the following", b"MSEXCH:",
    b"SMTP=a@y.example; on x", b"a@y.example on x", b"-- a@y.example", b"To: a@y.example",
    b"Failed Recipient: a@y.example", b"Recipient: [SMTP:a@y.example]", b"---", b"-", b"",
    b"Content-Type: multipart/mixed; boundary=b", b"Content-Type: text/plain",
    b"Content-Description: Notification", b"The Postfix program", b"failure reason:",
    b"Content-Type: message/delivery-status", b"Action: failed", b"Final-Recipient: rfc822; a@y",
    b"--b", b"--b--", b"X-Mailer: Novell", b"X-Mailer: <SMTP32 v1>",
    b"From: MAILER-DAEMON@yahoo.com",
    b"From: mailer-daemon@sina.com", b"X-Failed-Recipients: a@y.example", b"it failed",
    b"Unable to deliver message to", b"user mailbox: a@y.example", b"Error Detail",
]


@st.composite
def _messages(draw: st.DrawFn) -> bytes:
    head = draw(st.lists(st.sampled_from(_LINES), max_size=4))
    body = draw(st.lists(st.sampled_from(_LINES), min_size=1, max_size=12))
    nl = draw(st.sampled_from([b"\n", b"\r\n", b"\r"]))
    return nl.join([b"From: MAILER-DAEMON@x.example", *head, b"", *body, b""])


class GateSoundnessTests(unittest.TestCase):

    @settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck))
    @given(_messages())
    def test_skipped_means_unanswered(self, raw: bytes) -> None:
        """Whenever the gate says no detector can answer, none does."""
        if fluflgate.cannot_find(raw):
            self.assertIn(_flufl(raw), ((frozenset(), frozenset()), None), raw)


class LlnlTests(unittest.TestCase):
    """The gate's reading of LLNL's expression is the expression's, in linear time."""

    def test_same_as_the_installed_expression(self) -> None:
        from flufl.bounce._detectors import llnl
        self.assertEqual(llnl.acre.pattern, fluflgate.LLNL)

    @settings(max_examples=3000, deadline=None)
    @given(st.lists(st.sampled_from([",", "@", "a", "b@", ",@", "@,", " ", "\t", "\x1c", "\r",
                                     ", ", "a@b", ",a@b,"]), max_size=14).map("".join))
    def test_matches_where_the_expression_does(self, line: str) -> None:
        import re
        want = re.search(fluflgate.LLNL, line, re.IGNORECASE) is not None
        self.assertEqual(fluflgate._llnl_matches(line), want, repr(line))

    def test_long_run_of_at_signs(self) -> None:
        """A comma then 15,000 "a@" (1.4 s in the expression): no match, and one with a
        closing comma is found."""
        line = "," + "a@" * 15_000
        self.assertFalse(fluflgate._llnl_matches(line))
        self.assertTrue(fluflgate._llnl_matches(line + "x,"))
        self.assertTrue(fluflgate._llnl_matches(line + ","))
        self.assertFalse(fluflgate._llnl_matches(", a@, a@,"))
        self.assertTrue(fluflgate.cannot_find(b"From: a@b.example\n\n" + line.encode() + b"\n"))
