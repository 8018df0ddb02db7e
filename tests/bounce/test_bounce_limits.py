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


class ReportLimitTests(SynchronousTestCase):
    """Recipients, tokens and last-resort parsers are bounded per message."""

    def test_recipients_capped(self):
        """A delivery-status report naming 1,500 recipients gives the first 500."""
        rcpts = b"".join(b"Final-Recipient: rfc822; u%d@example.net\nAction: failed\n"
                         b"Status: 5.1.1\n\n" % i for i in range(1500))
        raw = (b"From: MAILER-DAEMON@x.example\nSubject: Undelivered\n"
               b"Content-Type: multipart/report; report-type=delivery-status; boundary=b\n\n"
               b"--b\nContent-Type: text/plain\n\nfailed\n"
               b"--b\nContent-Type: message/delivery-status\n\n" + rcpts + b"--b--\n")
        a = analyze(raw)
        self.assertEqual(len(a.results), 500)
        self.assertEqual(a.results[-1].recipient, "u499@example.net")

    def test_feedback_recipients_deduplicated_and_capped(self):
        """An ARF report repeating 3,000 Original-Rcpt-To fields gives each address once,
        at most 500."""
        fields = b"".join(b"Original-Rcpt-To: <u%d@example.net>\n" % (i % 1200)
                          for i in range(3000))
        raw = (b"From: fbl@isp.example\nSubject: complaint\n"
               b"Content-Type: multipart/report; report-type=feedback-report; boundary=b\n\n"
               b"--b\nContent-Type: text/plain\n\nabuse\n"
               b"--b\nContent-Type: message/feedback-report\n\nFeedback-Type: abuse\n"
               + fields + b"--b--\n")
        a = analyze(raw)
        self.assertEqual(a.category, "feedback")
        self.assertEqual(len(a.results), 500)
        self.assertEqual(len({r.recipient for r in a.results}), 500)

    def test_tokens_capped(self):
        """100 distinct X-Hurricane-Token lines give 50 tokens; one of 400 characters none."""
        lines = b"".join(b"X-Hurricane-Token: t%d@bounce.example\n" % i for i in range(100))
        raw = b"Subject: x\n\n" + lines + b"X-Hurricane-Token: " + b"a" * 400 + b"@b.example\n"
        a = analyze(raw)
        self.assertEqual(len(a.verp_tokens), 50)
        self.assertEqual(a.verp_tokens[0], "t0@bounce.example")

    def test_listed_addresses_last_resort(self):
        """A bounce whose recipient _free_text cannot tell (it is also the original's
        sender, or a system address) is read from the address its text lists alone on a
        line; an address inside a sentence is not a listed one."""
        head = b"From: MAILER-DAEMON@x.example\nSubject: failure notice\n\n"
        listed = (b"The following addresses had delivery problems:\n"
                  b"postmaster@mx.example.org\n\n"
                  b"The number of messages in recipient's mailbox exceeded the local limit.\n")
        a = analyze(head + listed)
        self.assertEqual([r.recipient for r in a.results], ["postmaster@mx.example.org"])
        self.assertEqual(a.results[0].reason, "mailboxfull")
        exim = (b"The following address(es) failed:\n\n  b@y.example:\n"
                b"    SMTP error from remote server for TEXT command: 550 5.2.0 rejected\n"
                b"\n--- The header of the original message is following. ---\n\n"
                b"From: <b@y.example>\nTo: b@y.example\n")
        self.assertEqual([r.recipient for r in analyze(head + exim).results], ["b@y.example"])
        sentence = b"Your message to postmaster@mx.example.org could not be sent; see below.\n"
        self.assertEqual([r.recipient for r in analyze(head + sentence).results
                          if r.recipient], [])

    def spy_flufl(self) -> list[object]:
        """flufl.bounce's all_failures replaced by a spy answering z@w.example: the
        messages it was given."""
        import flufl.bounce

        seen: list[object] = []

        def spy(msg: object) -> tuple[set[bytes], set[bytes]]:
            seen.append(msg)
            return {b"z@w.example"}, set()

        self.patch(flufl.bounce, "all_failures", spy)
        return seen

    def test_flufl_last_and_only_on_small_messages(self):
        """flufl.bounce reads a bounce only when our own readings found no recipient, and
        only up to flufl_max_bytes and flufl_max_lines; what it finds is the recipient."""
        seen = self.spy_flufl()
        head = b"From: MAILER-DAEMON@x.example\nSubject: failure notice\n\n"
        a = analyze(head + b"The following addresses had delivery problems:\nb@y.example\n")
        self.assertEqual(([r.recipient for r in a.results], seen), (["b@y.example"], []))
        # (a text none of its detectors can answer is not given to it: fluflgate.py)
        analyze(head + b"it failed\n")
        self.assertEqual(seen, [])
        failed = b"Delivery has failed\n"             # (its SimpleMatch reads on from here)
        a = analyze(head + failed)
        self.assertEqual(([r.recipient for r in a.results], len(seen)), (["z@w.example"], 1))
        analyze(head + failed * 2600)                  # 52 KB
        analyze(head + failed + b"\n" * 2000)          # 2,000 lines
        self.assertEqual(len(seen), 1)
        limits = AnalysisLimits(flufl_max_bytes=100 * 1024, flufl_max_lines=10_000)
        analyze(head + failed * 2600, limits=limits)
        self.assertEqual(len(seen), 2)

    def test_flufl_not_given_lines_over_the_rfc_limit(self):
        """A line over RFC 5322's 998 characters is no mail system's notice: flufl.bounce
        (whose LLNL expression is quadratic in a line's length) is not given it."""
        seen = self.spy_flufl()
        head = b"From: MAILER-DAEMON@x.example\nSubject: failure notice\n\n"
        failed = b"Delivery has failed\n"
        analyze(head + failed + b"," + b"a@" * 499 + b"\n")        # a line of 999
        self.assertEqual(seen, [])
        a = analyze(head + failed + b"," + b"a@" * 498 + b"a\r\n")  # 998, then CRLF
        self.assertEqual(([r.recipient for r in a.results], len(seen)), (["z@w.example"], 1))

    def test_flufl_answers_only_addresses(self):
        """What flufl.bounce's looser detectors take from a Message-Id is not a recipient."""
        import flufl.bounce

        self.patch(flufl.bounce, "all_failures",
                   lambda msg: ({b"1576497267.@w.example", b"z@w.example"}, set()))
        head = b"From: MAILER-DAEMON@x.example\nSubject: failure notice\n\n"
        # (a text its detectors can answer: main's fluflgate passes only those to it)
        self.assertEqual([r.recipient for r in analyze(head + b"Delivery has failed\n").results],
                         ["z@w.example"])

    def test_listed_addresses_bounded(self):
        """The listed-address reading keeps at most _MAX_RECIPIENTS addresses, skips the
        excluded ones and lines too long to be a list entry."""
        from hurricane.bounce import analyze as analyzer

        region = "".join("<%s@%d.example.org>:\n" % ("a" * 60, i) for i in range(2_000))
        got = analyzer._listed_addrs(region, set())
        self.assertEqual(len(got), analyzer._MAX_RECIPIENTS)
        self.assertEqual(got[0], "a" * 60 + "@0.example.org")
        self.assertEqual(analyzer._listed_addrs("x@y.example\nz@w.example\n", {"x@y.example"}),
                         ["z@w.example"])
        self.assertEqual(analyzer._listed_addrs(" " * 400 + "x@y.example\n", set()), [])

    def test_free_text_classification_bounded(self):
        """500 recipients on lines of rule phrases with no reply code: every one is a
        result, and the distinct texts classified come to a budget, not 500 blocks of
        ~1.3K characters."""
        from hurricane.bounce.classify import default_classifier
        from tests.bounce import hostile

        clf = default_classifier()
        texts: set[str] = set()
        real = clf.classify

        def spy(code, status, text, *args, **kwargs):
            texts.add(text)
            return real(code, status, text, *args, **kwargs)

        self.patch(clf, "classify", spy)
        a = analyze(hostile.freetext_recipients(hostile.MAX_SIZE), classifier=clf)
        # (the note names user@example.net first; the recipients cap is 500)
        found = {r.recipient for r in a.results}
        self.assertTrue({"user0@example0.net", "user497@example497.net"} <= found)
        self.assertTrue(all(r.reason for r in a.results))
        # the budget (64 KiB), the whole note's reading (4,000 characters) and change
        self.assertLessEqual(sum(map(len, texts)), 72 * 1024)

    def test_repeated_diagnostic_bounded(self):
        """A Diagnostic-Code repeated 20,000 times is joined up to a header value's size."""
        raw = (b"Subject: x\nContent-Type: multipart/report; boundary=b\n\n"
               b"--b\nContent-Type: message/delivery-status\n\n"
               b"Final-Recipient: rfc822; a@b.example\nStatus: 5.1.1\n"
               + b"Diagnostic-Code: smtp; 550 user unknown\n" * 20_000 + b"--b--\n")
        a = analyze(raw)
        self.assertEqual([r.recipient for r in a.results], ["a@b.example"])
        self.assertLessEqual(len(a.results[0].diagnostic), 2000)
