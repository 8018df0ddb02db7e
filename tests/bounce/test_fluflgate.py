"""fluflgate.cannot_find: True only when flufl.bounce can name no recipient of a message."""

from __future__ import annotations

import email
import logging

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from hurricane.bounce import fluflgate, mime
from tests.bounce.fluflmail import flufl_mail

logging.getLogger("flufl.bounce").setLevel(logging.CRITICAL)


def _flufl(raw: bytes) -> tuple[frozenset[bytes], frozenset[bytes]] | None:
    """flufl.bounce's (temporary, permanent) for ``raw``; None when a detector raised."""
    from flufl.bounce import all_failures
    try:
        return all_failures(email.message_from_bytes(raw))  # type: ignore[no-any-return]
    except Exception:
        return None


HEAD = b"From: MAILER-DAEMON@x.example\nSubject: failure\n\n"
#: A report's header, its parts separated by "--b".
REPORT = b"From: MAILER-DAEMON@x.example\nContent-Type: multipart/report; boundary=b\n\n"
NOTIFICATION = b"--b\nContent-Description: Notification\nContent-Type: text/plain\n"

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

    def test_phrases_in_the_start_expressions(self) -> None:
        """Each detector's start expression, its escapes undone, holds one of PHRASES
        (so text it matches does, lowered): but the two "^Your message" ones, read
        by the gate's own expression (hartford) and by the address expression's
        "was automatically rejected" (Dovecot)."""
        import re

        from flufl.bounce._detectors import (
            aol,
            caiwireless,
            exchange,
            microsoft,
            netscape,
            qmail,
            simplematch,
            simplewarning,
            yale,
        )
        starts = [scre.pattern for scre, _, _ in simplematch.PATTERNS + simplewarning.PATTERNS]
        starts += qmail.introtags + [microsoft.scre.pattern, caiwireless.tcre.pattern,
                                     exchange.scre.pattern, netscape.pcre.pattern,
                                     aol.scre.pattern, yale.scre.pattern]
        missing = []
        for start in starts:
            text = start.decode() if isinstance(start, bytes) else start
            literal = re.sub(r"\\(.)", r"\1", text).lower().encode()
            if not any(p in literal for p in fluflgate.PHRASES):
                missing.append(text)
        self.assertEqual(missing, [r"^Your message\s*$", "^Your message"])

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

    def test_undecodable_in_place_never_skipped(self) -> None:
        """What the stdlib cannot decode with each ASCII byte kept in place is not
        judged on its bytes: base64, a charset that moves ASCII bytes (UTF-16,
        Shift_JIS, RFC 2231's charset*) or a character a case-blind expression
        reads as an ASCII letter."""
        b64 = HEAD.replace(b"\n\n", b"\nContent-Transfer-Encoding: BASE64\n\n")
        ct = b"From: MAILER-DAEMON@x.example\nContent-Type: text/plain; charset="
        for raw in (b64 + b"eA==\n",
                    ct + b"utf-16\n\n" + "caf\u00e9\n".encode("utf-8"),
                    ct + b'"Shift_JIS"\n\n' + "\u30e1\u30fc\u30eb\n".encode("shift_jis"),
                    ct + b"iso-8859-9\n\n" + "\u0130\n".encode("iso-8859-9"),
                    b"From: a@x.example\nContent-Type: text/plain;\n charset*=utf-16''x\n\n\xe9\n",
                    HEAD + "caf\u00e9 \u212a\n".encode("utf-8")):
            self.assertFalse(fluflgate.cannot_find(raw), raw)

    def test_in_place_charsets_and_quoted_printable_are_judged(self) -> None:
        """A UTF-8 or Latin-1 notice, or one whose attached original is
        quoted-printable, that none of the detectors can read is skipped: the
        stdlib keeps each ASCII byte where it was."""
        ct = b"From: MAILER-DAEMON@x.example\nContent-Type: text/plain; charset="
        qp_original = (REPORT + b"--b\nContent-Type: text/plain\n\nIt failed.\n"
                       b"--b\nContent-Type: message/rfc822\n\nTo: a@y.example\n"
                       b"Content-Transfer-Encoding: quoted-printable\n\n"
                       b"Caf=C3=A9 =3D x=\ny\n--b--\n")
        # Postfix's notification part without its salutation; "Postfix" only in a
        # Received line of the attached original
        postfix_name = (REPORT + NOTIFICATION + b"\nThis is the mail system at host x.\n\n"
                        b"--- Delivery report unavailable ---\n"
                        b"--b\nContent-Type: message/rfc822\n\n"
                        b"Received: by x.example (Postfix) id 1\nTo: a@y.example\n\nhi\n--b--\n")
        for raw in (ct + b"utf-8\n\n" + "Mail an a@y.example: caf\u00e9\n".encode("utf-8"),
                    ct + b'"ISO-8859-1"\n\n' + "caf\u00e9\n".encode("latin-1"),
                    ct + b"x-unknown\n\n\xe9\xff\n", qp_original, postfix_name):
            self.assertTrue(fluflgate.cannot_find(raw), raw)
            self.assertEqual(_flufl(raw), (frozenset(), frozenset()), raw)

    def test_decoded_triggers_are_found(self) -> None:
        """A trigger only the decoded text shows (a quoted-printable escape or soft
        line break inside it, a case-blind match on a dotted I or a long s, a
        no-break space where the expression takes white space) is given to flufl.bounce."""
        ms = (b"From: postmaster@x.example\nContent-Type: multipart/mixed; boundary=b\n\n"
              b"--b\nContent-Transfer-Encoding: quoted-printable\n\n%s\n\na@y.example\n--b--\n")
        utf8 = b"From: MAILER-DAEMON@x.example\nContent-Type: text/plain; charset=utf-8\n\n"
        postfix = (REPORT + NOTIFICATION + b"Content-Transfer-Encoding: quoted-printable\n\n"
                   b"The=20Postfix program at host x.\n\n<a@y.example>: unknown user\n--b--\n")
        for raw in (ms % b"Transcript=20of session follows.",
                    ms % b"Transcript of ses=\nsion follows.", postfix,
                    utf8 + "DEL\u0130VERY HAS FAILED to\n[a@y.example]\n".encode(),
                    utf8 + "Delivery ha\u017f failed to\n[a@y.example]\n".encode(),
                    utf8 + ",\u00a0a@y.example, x\n".encode(),
                    utf8 + "Your message\u00a0\n\n  a@y.example\n\nbecause:\n".encode()):
            got = _flufl(raw)
            self.assertTrue(got and (got[0] or got[1]), raw)
            self.assertFalse(fluflgate.cannot_find(raw), raw)


#: A UTF-16 notice flufl.bounce reads once it decodes it (a non-ASCII byte makes
#: get_payload decode the part with its declared charset).
_UTF16 = "Delivery has failed\n[a@y.example]\n".encode("utf-16-le") + b"\xff\xfe\n"


def _charset(separator: bytes, name: bytes) -> bytes:
    return (b"From: MAILER-DAEMON@x.example\nContent-Type: text/plain; charset" + separator
            + b"=" + name + b"\n\n" + _UTF16)


_POSTFIX_QP = (REPORT + NOTIFICATION + b"Content-Transfer-Encoding: quoted-printable\n"
               b"X-Note: x=\n%s program at host x.\n\n<a@y.example>: unknown user\n--b--\n")
_YAHOO = b"From: %s\nSubject: failure\n\nMessage from yahoo.com.\n<a@y.example>:\nno\n"
_CR_POSTFIX = (b"From: MAILER-DAEMON@x.example\rContent-Type: multipart/report; boundary=b\r\r"
               b"--b\rContent-Description: Notification\rContent-Type: text/plain\r\r"
               b"%s program at host x.\n\n<a@y.example>: unknown user\n--b--\r")
_CR_QP = (b"From: postmaster@x.example\nContent-Type: multipart/mixed; boundary=b\n\nx=\r--b\r"
          b"Content-Transfer-Encoding: quoted-printable\r\r%s=20of session follows\n"
          b"a@y.example\n--b--\n")

#: (cause, a message the gate skipped and flufl.bounce answers, its twin that none
#: answers and the gate still skips). Found by reading flufl.bounce and the stdlib
#: (the charset separators by tests/bounce/fluflmail.py too).
COUNTEREXAMPLES = [
    # get_param strips the parameter's name with str.strip(): \x0b, \x0c, \x1c-\x1f
    # and folded lines, any number, may stand between "charset" and "="
    ("charset\\x0c=", _charset(b"\x0c", b"utf-16-le"), _charset(b"\x0c", b"utf-8")),
    ("charset\\x1c=", _charset(b"\x1c", b"utf-16-le"), _charset(b"\x1c", b"latin-1")),
    ("charset folded twice", _charset(b"\n \n ", b"utf-16-le"), _charset(b"\n \n ", b"utf-8")),
    # hartford's "^Your message\s*$" is a str expression: \x1c-\x1f are white space to it
    ("hartford's blanks", HEAD + b"Your message\x1c\n\n  a@y.example\n\nbecause:\n",
     HEAD + b"Your message\x1c x\n\n  a@y.example\n\nbecause:\n"),
    # Yahoo's sender is parseaddr's, which drops comments
    ("Yahoo's From with a comment", _YAHOO % b"MAILER(x)-DAEMON@yahoo.com",
     _YAHOO % b"Mailer Daemon <postmaster@yahoo.com>"),
    ("Yahoo's From, a folded comment", _YAHOO % b"mailer(\n x)-daemon@yahoo.com",
     _YAHOO % b"mailer\n -daemon@yahoo.com"),
    # ... after a unix From line, which the stdlib reads before the header block
    ("Yahoo's From after a unix From line", b"From x@y Mon Jan  1 00:00:00 2024\n"
     + _YAHOO % b"MAILER(x)-DAEMON@yahoo.com", b"From x@y Mon Jan  1 00:00:00 2024\n"
     + _YAHOO % b"Mailer Daemon <postmaster@yahoo.com>"),
    # a part with no blank line after its headers, the last ending in "=": decoded
    # whole, its first line is joined to that header line, no line's start
    ("Postfix's trigger after a soft break", _POSTFIX_QP % b"The=20Postfix",
     _POSTFIX_QP % b"This is the=20Postfix"),
    ("... and one inside it", _POSTFIX_QP % b"The Post=\nfix", _POSTFIX_QP % b"Then Post=\nfix"),
    # CR ends a line to the stdlib's parser: a part starts after it, a parameter's
    # name ends at it, and quoted-printable's "=\r" drops all to the next LF
    ("CR: Postfix's trigger starts a part", _CR_POSTFIX % b"The Postfix",
     mime.normalise(_CR_POSTFIX % b"This is the Postfix")),
    ("CR: a soft break across parts", _CR_QP % b"Transcript",
     mime.normalise(_CR_QP % b"Transcripts")),
    ("CR: charset\\r =", _charset(b"\r ", b"utf-16-le"), _charset(b"\n ", b"utf-8")),
]


class CounterexampleTests(unittest.TestCase):

    def test_answered_ones_pass_the_gate(self) -> None:
        """Each message flufl.bounce answers is given to it."""
        for cause, answered, _ in COUNTEREXAMPLES:
            got = _flufl(answered)
            self.assertTrue(got and (got[0] or got[1]), cause)
            self.assertFalse(fluflgate.cannot_find(answered), cause)

    def test_twins_are_still_skipped(self) -> None:
        """Its twin, which none answers, is still skipped: the gate is no weaker than that."""
        for cause, _, twin in COUNTEREXAMPLES:
            self.assertEqual(_flufl(twin), (frozenset(), frozenset()), cause)
            self.assertTrue(fluflgate.cannot_find(twin), cause)

    def test_charset_names_looked_up(self) -> None:
        """A NUL in a charset's name (codecs.lookup raises ValueError) is given to
        flufl.bounce, not raised; so is a message naming more than _MAX_CHARSETS
        charsets (each unknown one costs an import attempt); an unknown name alone
        is read as ASCII, as get_payload does."""
        nul = b"From: a@x.example\nContent-Type: text/plain; charset=utf\x00x\n\ncaf\xe9\n"
        self.assertFalse(fluflgate.cannot_find(nul))
        self.assertTrue(fluflgate.cannot_find(nul.replace(b"\x00", b"")))
        names = b"".join(b"; charset=x-%d" % i for i in range(fluflgate._MAX_CHARSETS + 1))
        many = b"From: a@x.example\nContent-Type: text/plain" + names + b"\n\ncaf\xe9\n"
        self.assertFalse(fluflgate.cannot_find(many))
        self.assertTrue(fluflgate.cannot_find(many.replace(b"; charset=x-0;", b";")))


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
    # decoded before a detector reads them: charsets, quoted-printable, non-ASCII text
    b"Content-Type: text/plain; charset=utf-8", b"Content-Type: text/plain; charset=latin-1",
    b"Content-Type: text/plain; charset=iso-8859-9", b'Content-Type: text/plain; charset="utf-16"',
    b"Content-Type: text/plain; charset=", b" utf-16", b"\tutf-16",
    b"Content-Transfer-Encoding: quoted-printable", b"Transcript=20of session follows",
    b"Delivery has fail=", b"ed", b"=44elivery has failed", "caf\u00e9".encode(), b"\xe9\xfd",
    "DEL\u0130VERY HAS FAILED".encode(), "\u0131".encode(), "Your message\u00a0".encode(),
    ",\u00a0a@y.example, x".encode(), "x,\u2003a@y\u00e9, y".encode(), b", \xa0a@y.example,",
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

    @settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck))
    @given(flufl_mail())
    def test_built_mail_skipped_means_unanswered(self, raw: bytes) -> None:
        """The same over MIME trees (tests/bounce/fluflmail.py: charsets declared
        right, wrong and oddly, quoted-printable, folded headers, hidden triggers;
        fuzz/fuzz_fluflgate.py runs it longer)."""
        if fluflgate.cannot_find(raw):
            self.assertIn(_flufl(raw), ((frozenset(), frozenset()), None), raw)


#: Hostile shapes for the gate: (header, unit repeated to the size).
_QP_NOTE = (b"From: a@x.example\nContent-Type: text/plain; charset=utf-8\n"
            b"Content-Description: notification\nContent-Transfer-Encoding: quoted-printable\n\n")
HOSTILE = {
    "charset names": (b"From: a@x\n\n\xe9", b"charset=q%d;"),
    "soft breaks": (_QP_NOTE, b"=\n"),
    "blanks and soft breaks": (_QP_NOTE, b" \t=\n"),
    "the, soft breaks": (_QP_NOTE, b"\nthe" + b" =\n" * 20),
    "From fields": (b"", b"from:x\n x\n"),
    "Your message, blanks": (_QP_NOTE, b"your message" + b"\xa0\x1c " * 300 + b"x"),
    "LLNL, non-ASCII": (_QP_NOTE, b",\xe9a@"),
    "Postfix, blanks": (b"From: a@x\n\nnotification\n", b"\n the" + b" " * 300),
}


def _gate_cpu(raw: bytes) -> float:
    import time
    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        fluflgate.cannot_find(raw)
        best = min(best, time.process_time() - started)
    return max(best, 1e-6)


class LinearTimeTests(unittest.TestCase):

    def test_hostile_shapes_linear(self) -> None:
        """4x the size costs about 4x the time (quadratic work: 16x), on runs each
        expression could read from every start (a ratio, not a time limit: the
        machine is shared)."""
        def build(name: str, size: int) -> bytes:
            head, unit = HOSTILE[name]
            if b"%d" in unit:
                return head + b"".join(unit % i for i in range(size // len(unit)))
            return head + unit * (size // len(unit))
        for name in HOSTILE:
            small, large = _gate_cpu(build(name, 128 << 10)), _gate_cpu(build(name, 512 << 10))
            self.assertLess(large / small, 9.0, (name, small, large))


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

    @settings(max_examples=3000, deadline=None)
    @given(st.lists(st.sampled_from([",", "@", "a", "b@", ",@", " ", "\t", "\x1c", ", ", "a@b",
                                     "\u00a0", "\u2003", "\u00e9", "\ufffd", "\u00e9@"]),
                    max_size=14).map("".join))
    def test_non_ascii_lines_never_missed(self, line: str) -> None:
        """On a line with non-ASCII characters, read one per byte of its UTF-8, the
        reading matches whenever the expression matches the decoded line; on an
        ASCII line it is the expression."""
        import re
        want = re.search(fluflgate.LLNL, line, re.IGNORECASE) is not None
        got = fluflgate._llnl_may_match(line.encode("utf-8").decode("latin-1"))
        if line.isascii():
            self.assertEqual(got, want, repr(line))
        elif want:
            self.assertTrue(got, repr(line))
