"""The analyzer never raises and stays within its limits on hostile input."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from hurricane.bounce.analyze import AnalysisLimits, analyze
from hurricane.bounce.model import Analysis

SAMPLE = (b"From: MAILER-DAEMON@x.example\r\nSubject: Undelivered Mail\r\n"
          b"Content-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\r\n\r\n"
          b"--b\r\nContent-Type: text/plain; charset=iso-2022-jp\r\n\r\n"
          b"<a@b.example>: 550 5.1.1 unknown\r\n"
          b"--b\r\nContent-Type: message/delivery-status\r\n"
          b"Content-Transfer-Encoding: base64\r\n\r\n"
          b"RmluYWwtUmVjaXBpZW50OiByZmM4MjI7IGFAYi5leGFtcGxlCkFjdGlvbjogZmFpbGVkClN0YXR1czogNS4xLjEK\r\n"
          b"--b\r\nContent-Type: message/rfc822\r\n\r\nFrom: x@y.example\r\n"
          b"X-Hurricane-Token: t@b.example\r\n\r\nhi\r\n"
          b"--b--\r\n")


class PropertyTests(SynchronousTestCase):
    """Random and truncated MIME never raises."""

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.binary(max_size=3000))
    def test_random_bytes(self, raw):
        """Random bytes give an Analysis."""
        self.assertIsInstance(analyze(raw), Analysis)

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.integers(min_value=0, max_value=len(SAMPLE)), st.binary(max_size=40),
           st.sampled_from([b"\r\n", b"\n", b"\r"]))
    def test_truncated_and_mangled(self, cut, junk, eol):
        """A DSN truncated anywhere, with junk appended and any line ending, gives an Analysis."""
        raw = SAMPLE[:cut].replace(b"\r\n", eol) + junk
        a = analyze(raw)
        self.assertIsInstance(a, Analysis)
        a.to_json()

    def test_sample_parses(self):
        """The sample itself (base64 delivery-status) is read."""
        a = analyze(SAMPLE)
        self.assertEqual([r.recipient for r in a.results], ["a@b.example"])
        self.assertEqual(a.verp_tokens, ("t@b.example",))

    def test_not_bytes(self):
        """A str argument is accepted too."""
        self.assertIsInstance(analyze("Subject: x\n\nhello"), Analysis)  # type: ignore[arg-type]


class BombTests(SynchronousTestCase):
    """Bombs return, with the error field saying what was cut short."""

    def test_deep_nesting(self):
        """2,000 nested multiparts stop at the depth limit."""
        head = b"".join(b"Content-Type: multipart/mixed; boundary=\"b%d\"\n\n--b%d\n" % (i, i)
                        for i in range(2000))
        a = analyze(b"From: MAILER-DAEMON@x.example\nSubject: Undelivered\n" + head + b"\nx\n")
        self.assertEqual(a.error, "too-deep")

    def test_deep_rfc822(self):
        """2,000 nested message/rfc822 parts stop at the depth limit."""
        raw = b"Content-Type: message/rfc822\n\n" * 2000 + b"Subject: x\n\nbody\n"
        self.assertEqual(analyze(raw).error, "too-deep")

    def test_huge_single_line(self):
        """A 10 MB single-line body is cut to the size limit and still analyzed."""
        raw = (b"From: MAILER-DAEMON@x.example\nSubject: Undelivered Mail\n\n<a@b.example>: 550 "
               + b"x" * (10 * 1024 * 1024))
        a = analyze(raw)
        self.assertEqual(a.error, "too-large")
        self.assertIsInstance(a, Analysis)

    def test_huge_line_under_size_limit(self):
        """A 4 MB single line under the size limit finishes with no error or over budget."""
        raw = (b"From: MAILER-DAEMON@x.example\nSubject: failure notice\n\n"
               + b"a@b.example " * 350000)
        a = analyze(raw)
        self.assertIn(a.error, (None, "over-budget"))

    def test_many_parts(self):
        """5,000 parts stop at the part limit."""
        parts = b"".join(b"--b\nContent-Type: text/plain\n\npart %d\n" % i for i in range(5000))
        raw = b"Subject: x\nContent-Type: multipart/mixed; boundary=\"b\"\n\n" + parts + b"--b--\n"
        self.assertEqual(analyze(raw).error, "too-many-parts")

    def test_cpu_budget(self):
        """A tiny CPU budget yields an over-budget Analysis, not an exception."""
        parts = b"".join(b"--b\nContent-Type: message/rfc822\n\nSubject: %d\n\nx\n" % i
                         for i in range(1500))
        raw = b"Subject: x\nContent-Type: multipart/mixed; boundary=\"b\"\n\n" + parts + b"--b--\n"
        a = analyze(raw, limits=AnalysisLimits(cpu_seconds=0.0))
        self.assertEqual(a.error, "over-budget")
