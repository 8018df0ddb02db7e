"""The plain objects of the server base: address syntax, HELO syntax, DATA reader, limits."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from hurricane.smtpd.address import Path, is_valid_helo, parse_params, parse_path
from hurricane.smtpd.data import DataReader
from hurricane.smtpd.limits import ConnectionLimiter
from hurricane.smtpd.reply import ReplyError


class ParsePathTests(SynchronousTestCase):
    def test_forms(self) -> None:
        """Paths parse into local part, domain, route and quoting as given."""
        table = [
            ("<a@example.com>", Path("a", "example.com"), ""),
            ("<a@example.com> SIZE=10", Path("a", "example.com"), "SIZE=10"),
            (" <a@example.com>", Path("a", "example.com"), ""),
            ("a@example.com BODY=8BITMIME", Path("a", "example.com"), "BODY=8BITMIME"),
            ("<>", Path("", None), ""),
            ("<Postmaster>", Path("Postmaster", None), ""),
            ("<@a.example,@b.example:u@d.example>",
             Path("u", "d.example", ("a.example", "b.example")), ""),
            ('<"john doe"@example.com>', Path('"john doe"', "example.com", (), True), ""),
            ("<u@[192.0.2.1]>", Path("u", "[192.0.2.1]"), ""),
            ("<u%x@example.com>", Path("u%x", "example.com"), ""),
            ("<a!b@example.com>", Path("a!b", "example.com"), ""),
        ]
        for text, path, rest in table:
            self.assertEqual(parse_path(text, "recipient"), (path, rest), text)

    def test_malformed(self) -> None:
        """Malformed paths raise a 553 (address) or 501 (missing) ReplyError."""
        for text, code in [
            ("", 501), ("<a@example.com", 553), ("<a@b@c.example>", 553), ("<a b@c.example>", 553),
            ("<a@-bad.example>", 553), ("<a@exa_mple.com>", 553), ("<a@example.com>x", 553),
            ("<@a.example u@d.example>", 553), ('<"unterminated@example.com>', 553),
            ("<" + "x" * 65 + "@example.com>", 553), ("<a@[999.1.1.1]>", 553),
            ("<a@>", 553), ("<@example.com>", 553),
        ]:
            with self.assertRaises(ReplyError, msg=text) as cm:
                parse_path(text, "recipient")
            self.assertEqual(cm.exception.reply.code, code, text)

    def test_sender_and_recipient_codes(self) -> None:
        """A bad sender is 5.1.7, a bad recipient 5.1.3 (RFC 3463)."""
        with self.assertRaises(ReplyError) as cm:
            parse_path("<a b@example.com>", "sender")
        self.assertEqual(cm.exception.reply.status, "5.1.7")
        with self.assertRaises(ReplyError) as cm:
            parse_path("<a b@example.com>", "recipient")
        self.assertEqual(cm.exception.reply.status, "5.1.3")

    def test_params(self) -> None:
        """ESMTP parameters parse to an upper-cased dict; repeats and junk are refused."""
        self.assertEqual(parse_params("size=10 BODY=8BITMIME SMTPUTF8"),
                         {"SIZE": "10", "BODY": "8BITMIME", "SMTPUTF8": None})
        for bad in ("SIZE=1 SIZE=2", "=x", "A=b=c"):
            with self.assertRaises(ReplyError, msg=bad):
                parse_params(bad)


class HeloTests(SynchronousTestCase):
    def test_helo_syntax(self) -> None:
        """HELO takes one domain name or one address literal."""
        for good in ("mx.example.com", "localhost", "mx.example.com.", "[192.0.2.1]",
                     "[IPv6:2001:db8::1]", "host_1.example"):
            self.assertTrue(is_valid_helo(good), good)
        for bad in ("", "a b", "a\nb", "a\rb", "[192.0.2.1", "[foo]", "a..b", ".", "-a",
                    "é.example", "a" * 64 + ".example"):
            self.assertFalse(is_valid_helo(bad), bad)


class DataReaderTests(SynchronousTestCase):
    def read(self, *chunks: bytes, reject: bool = True, size: int = 10_000,
             line: int = 1000) -> DataReader:
        reader = DataReader(size, line, reject)
        for chunk in chunks:
            reader.feed(chunk)
        return reader

    def test_end_of_data_only_at_crlf_dot_crlf(self) -> None:
        """Only CRLF.CRLF ends the message; the bytes after it are returned."""
        reader = DataReader(10_000, 1000)
        self.assertIsNone(reader.feed(b"a\r\n.b\r\n"))
        self.assertEqual(reader.feed(b"c\r\n.\r\nQUIT\r\n"), b"QUIT\r\n")
        self.assertEqual(reader.message(), b"a\r\nb\r\nc\r\n")

    def test_smuggling_markers_rejected(self) -> None:
        """Every bare CR/LF end-of-data look-alike is refused with 550 5.6.2."""
        for marker in (b"\n.\n", b"\r.\r", b"\r\n.\n", b"\n.\r\n", b"\r.\r\n", b"\n", b"\r"):
            reader = self.read(b"x" + marker + b"y\r\n")
            self.assertFalse(reader.finished, marker)
            self.assertEqual(reader.feed(b".\r\n"), b"")
            self.assertEqual(reader.failure.code, 550, marker)
            self.assertEqual(reader.failure.status, "5.6.2")

    def test_normalise_bare_line_endings(self) -> None:
        """When normalising, bare CR and LF each become CRLF."""
        reader = self.read(b"a\nb\rc\r\n.\r\n", reject=False)
        self.assertTrue(reader.finished)
        self.assertEqual(reader.message(), b"a\r\nb\r\nc\r\n")

    def test_size_limit(self) -> None:
        """Content beyond max_size fails with 552 5.3.4 and is not kept."""
        reader = self.read(b"x" * 50 + b"\r\n", b"y" * 60 + b"\r\n", size=100)
        self.assertEqual(reader.failure.code, 552)
        self.assertEqual(reader.message(), b"")

    def test_long_line_split_across_reads(self) -> None:
        """A long line's tail, even one starting with a dot, is not a line start."""
        reader = self.read(b"z" * 1500, b".\r\n", line=1000)
        self.assertFalse(reader.finished)
        self.assertEqual(reader.feed(b".\r\n"), b"")
        self.assertEqual(reader.failure.status, "5.3.4")

    def test_crlf_split_across_reads(self) -> None:
        """A CRLF split between two reads still ends a line after a long partial."""
        reader = self.read(b"z" * 1500 + b"\r", b"\n.\r\n", line=1000)
        self.assertTrue(reader.finished)

    @settings(max_examples=400, deadline=None)
    @given(
        parts=st.lists(st.sampled_from([b"abc", b"x" * 40, b".", b"..", b"\r\n", b"\r", b"\n",
                                        b"\r\n.\r\n", b"\r\n.", b"Subject: s", b"y" * 120]),
                       max_size=40),
        cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=8),
        reject=st.booleans(), size=st.sampled_from([60, 500, 10_000]),
        line=st.sampled_from([50, 100, 1000]),
    )
    def test_whole_chunk_path_equals_line_by_line(self, parts: list[bytes], cuts: list[int],
                                                  reject: bool, size: int, line: int) -> None:
        """Taking plain chunks at once gives exactly what the line-by-line
        reading gives (message, failure, end, leftover) for any input split
        into any reads."""
        data = b"".join(parts) + b"\r\n.\r\nQUIT\r\n"
        bounds = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
        chunks = [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
        outcomes = []
        for fast in (True, False):
            reader = DataReader(size, line, reject)
            reader._fast = fast
            left = None
            for chunk in chunks:
                left = reader.feed(chunk)
                if reader.finished:
                    break
            failure = reader.failure
            outcomes.append((reader.finished, left, reader.message(),
                             failure and (failure.code, failure.status)))
        self.assertEqual(outcomes[0], outcomes[1])


class ConnectionLimiterTests(SynchronousTestCase):
    def test_limits(self) -> None:
        """admit() refuses beyond the per-IP and total limits; release() frees a slot."""
        limiter = ConnectionLimiter(per_ip=1, total=2)
        self.assertTrue(limiter.admit("a"))
        self.assertFalse(limiter.admit("a"))
        self.assertTrue(limiter.admit("b"))
        self.assertFalse(limiter.admit("c"))
        limiter.release("a")
        self.assertTrue(limiter.admit("c"))
        self.assertEqual((limiter.count(), limiter.count("a"), limiter.count("c")), (2, 0, 1))

    def test_exempt_connections(self) -> None:
        """A connection admitted with per_ip=False takes only a global slot."""
        limiter = ConnectionLimiter(per_ip=1, total=3)
        self.assertTrue(limiter.admit("a", per_ip=False))
        self.assertTrue(limiter.admit("a", per_ip=False))
        self.assertTrue(limiter.admit("a"))
        self.assertEqual((limiter.count(), limiter.count("a")), (3, 1))
        self.assertTrue(limiter.is_full())
        self.assertFalse(limiter.admit("a", per_ip=False))  # the total still holds
        limiter.release("a", per_ip=False)
        self.assertFalse(limiter.admit("a"))  # "a" still has its one counted connection
        self.assertTrue(limiter.admit("b"))
        self.assertEqual((limiter.count(), limiter.count("a"), limiter.count("b")), (3, 1, 1))

    def test_ipv6_counted_by_64(self) -> None:
        """IPv6 clients count by /64 (one host's usual share), as the login limiters do;
        IPv4-mapped addresses count as their IPv4 address."""
        limiter = ConnectionLimiter(per_ip=2, total=200)
        admitted = [limiter.admit(f"2001:db8:1:2::{i:x}") for i in range(1, 151)]
        self.assertEqual(admitted.count(True), 2)
        self.assertEqual(limiter.count("2001:db8:1:2:ffff::1"), 2)
        self.assertTrue(limiter.admit("2001:db8:1:3::1"))  # the next /64 is someone else
        self.assertTrue(limiter.admit("192.0.2.1"))
        self.assertTrue(limiter.admit("::ffff:192.0.2.1"))
        self.assertFalse(limiter.admit("192.0.2.1"))
        limiter.release("2001:db8:1:2::99")
        self.assertEqual(limiter.count("2001:db8:1:2::1"), 1)
        limiter.leave_per_ip("2001:db8:1:2::98")
        self.assertEqual(limiter.count("2001:db8:1:2::1"), 0)

    def test_leave_per_ip(self) -> None:
        """leave_per_ip() frees the address's slot; the total slot stays until release()."""
        limiter = ConnectionLimiter(per_ip=1, total=2)
        self.assertTrue(limiter.admit("a"))
        limiter.leave_per_ip("a")
        self.assertEqual((limiter.count(), limiter.count("a")), (1, 0))
        self.assertTrue(limiter.admit("a"))
        self.assertFalse(limiter.admit("b"))  # total reached
        limiter.release("a", per_ip=False)
        limiter.release("a")
        self.assertEqual((limiter.count(), limiter.count("a")), (0, 0))


class ReceivedHeaderTests(SynchronousTestCase):
    """The Received header, byte for byte as the server wrote it before it owned its protocol."""

    def test_esmtpsa_one_recipient(self) -> None:
        """EHLO + TLS + AUTH from IPv6, one recipient: protocol ESMTPSA and a "for" clause."""
        from hurricane.smtpd.session import Envelope, Recipient, Session, received_header

        session = Session(peer="2001:db8::5", helo="client.example", esmtp=True, tls=True,
                          user="alice")
        envelope = Envelope(parse_path("<a@example.com>", "sender")[0],
                            (Recipient(parse_path("<b@example.com>", "recipient")[0]),),
                            session, 1_700_000_000.0)
        self.assertEqual(
            received_header(envelope, "mx.test.example", 0x123456789ABC),
            b"Received: from client.example ([IPv6:2001:db8::5])\r\n"
            b"\tby mx.test.example (Hurricane) with ESMTPSA id 123456789abc\r\n"
            b"\tfor <b@example.com>;\r\n"
            b"\tTue, 14 Nov 2023 22:13:20 +0000\r\n")

    def test_smtp_two_recipients(self) -> None:
        """HELO with an address literal, two recipients: SMTP, no "for" clause."""
        from hurricane.smtpd.session import Envelope, Recipient, Session, received_header

        rcpts = tuple(Recipient(parse_path(f"<{r}@example.com>", "recipient")[0])
                      for r in ("b", "c"))
        envelope = Envelope(parse_path("<a@example.com>", "sender")[0], rcpts,
                            Session(peer="203.0.113.5", helo="[192.0.2.1]"), 1_700_000_000.0)
        self.assertEqual(
            received_header(envelope, "mx.test.example", 0x123456789ABC),
            b"Received: from [192.0.2.1] ([203.0.113.5])\r\n"
            b"\tby mx.test.example (Hurricane) with SMTP id 123456789abc;\r\n"
            b"\tTue, 14 Nov 2023 22:13:20 +0000\r\n")
