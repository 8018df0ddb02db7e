"""Command input without a connection: framing, command lines, MAIL and RCPT arguments."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from hurricane.smtpd.address import Path
from hurricane.smtpd.commands import (
    Framing,
    LineBuffer,
    parse_command,
    parse_mail,
    parse_rcpt,
)
from hurricane.smtpd.reply import Reply, ReplyError


class LineBufferTests(SynchronousTestCase):
    def test_lines_one_at_a_time(self) -> None:
        """Pipelined lines come out one per call, in order, without their CRLF."""
        buf = LineBuffer(100, 200)
        buf.feed(b"EHLO x\r\nMAIL FROM:<>\r\nRC")
        self.assertEqual(buf.next_line(), b"EHLO x")
        self.assertEqual(buf.next_line(), b"MAIL FROM:<>")
        self.assertIs(buf.next_line(), Framing.INCOMPLETE)
        self.assertEqual(len(buf), 2)
        buf.feed(b"PT TO:<a@b.example>\r\n")
        self.assertEqual(buf.next_line(), b"RCPT TO:<a@b.example>")
        self.assertEqual(len(buf), 0)

    def test_crlf_split_across_reads(self) -> None:
        """A CR at the end of one read and the LF at the start of the next end one line."""
        buf = LineBuffer(100, 200)
        buf.feed(b"NOOP\r")
        self.assertIs(buf.next_line(), Framing.INCOMPLETE)
        buf.feed(b"\n")
        self.assertEqual(buf.next_line(), b"NOOP")

    def test_bare_lf_does_not_end_a_line(self) -> None:
        """Only CRLF ends a line; a bare LF stays inside it (the parser refuses it)."""
        buf = LineBuffer(100, 200)
        buf.feed(b"EHLO a\nMAIL FROM:<>\r\n")
        self.assertEqual(buf.next_line(), b"EHLO a\nMAIL FROM:<>")

    def test_too_long_line_is_dropped(self) -> None:
        """A complete line over the limit is reported and consumed; the next one follows."""
        buf = LineBuffer(10, 200)
        buf.feed(b"x" * 11 + b"\r\nNOOP\r\n")
        self.assertIs(buf.next_line(), Framing.TOO_LONG)
        self.assertEqual(buf.next_line(), b"NOOP")

    def test_unterminated_input_is_discarded(self) -> None:
        """Past max_unterminated with no CRLF, everything is dropped and reported."""
        buf = LineBuffer(10, 20)
        buf.feed(b"y" * 20)
        self.assertIs(buf.next_line(), Framing.INCOMPLETE)
        buf.feed(b"y")
        self.assertIs(buf.next_line(), Framing.UNTERMINATED)
        self.assertEqual(len(buf), 0)

    def test_take_and_clear(self) -> None:
        """take() hands out everything not consumed; clear() forgets it."""
        buf = LineBuffer(100, 200)
        buf.feed(b"DATA\r\nbody\r\n.\r\n")
        self.assertEqual(buf.next_line(), b"DATA")
        self.assertEqual(buf.take(), b"body\r\n.\r\n")
        self.assertEqual(len(buf), 0)
        buf.feed(b"STARTTLS\r\nEVIL\r\n")
        buf.next_line()
        buf.clear()
        self.assertIs(buf.next_line(), Framing.INCOMPLETE)

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.binary(max_size=30), max_size=10), st.lists(st.integers(0, 300)))
    def test_any_split_gives_the_same_lines(self, lines: list[bytes], cuts: list[int]) -> None:
        """However the input is split into reads, the same lines come out."""
        lines = [line.replace(b"\r", b"").replace(b"\n", b"") for line in lines]
        stream = b"".join(line + b"\r\n" for line in lines)
        points = sorted({c for c in cuts if c < len(stream)})
        buf = LineBuffer(100, 200)
        out: list[bytes | Framing] = []
        for a, b in zip([0, *points], [*points, len(stream)], strict=True):
            buf.feed(stream[a:b])
            while (line := buf.next_line()) is not Framing.INCOMPLETE:
                out.append(line)
        self.assertEqual(out, lines)


class ParseCommandTests(SynchronousTestCase):
    def test_verbs(self) -> None:
        """Verbs are case-insensitive; the argument loses surrounding blanks."""
        self.assertEqual(parse_command(b"ehlo client.example"), ("EHLO", "client.example"))
        self.assertEqual(parse_command(b" MAIL FROM:<a@b.example> \t"),
                         ("MAIL", "FROM:<a@b.example>"))
        self.assertEqual(parse_command(b"QUIT"), ("QUIT", ""))
        self.assertEqual(parse_command(b"StartTLS"), ("STARTTLS", ""))

    def test_refusals(self) -> None:
        """Unknown verbs, non-ASCII and bare CR or LF get 500 5.5.2."""
        for line in (b"FOO", b"", b"EHLO \xff", b"EHLO a\nMAIL FROM:<>", b"NOOP\r",
                     b"ESMTP_STARTTLS"):
            reply = parse_command(line)
            self.assertIsInstance(reply, Reply, line)
            assert isinstance(reply, Reply)
            self.assertEqual((reply.code, reply.status), (500, "5.5.2"), line)


class MailRcptTests(SynchronousTestCase):
    def refusal(self, fn: object, *args: object) -> tuple[int, str]:
        with self.assertRaises(ReplyError) as cm:
            fn(*args)  # type: ignore[operator]
        return cm.exception.reply.code, cm.exception.reply.status

    def test_mail(self) -> None:
        """MAIL FROM: gives the path and the checked parameters."""
        extra = frozenset({"AUTH"})
        self.assertEqual(parse_mail("FROM:<a@b.example> SIZE=10 AUTH=<>", 100, extra),
                         (Path("a", "b.example"), {"SIZE": "10", "AUTH": "<>"}))
        self.assertEqual(parse_mail("from:<>", 100, frozenset()), (Path("", None), {}))

    def test_mail_refusals(self) -> None:
        """Each malformed MAIL argument gets its own refusal."""
        table = [
            ("TO:<a@b.example>", (501, "5.5.4")),
            ("FROM:<a@b.example> SIZE=101", (552, "5.3.4")),
            ("FROM:<a@b.example> SIZE=x", (501, "5.5.4")),
            ("FROM:<a@b.example> BODY=BINARYMIME", (501, "5.5.4")),
            ("FROM:<a@b.example> SMTPUTF8", (555, "5.5.4")),
            ("FROM:<a@b.example> AUTH=<>", (555, "5.5.4")),
            ("FROM:<postmaster>", (553, "5.1.7")),
        ]
        for argument, expected in table:
            self.assertEqual(self.refusal(parse_mail, argument, 100, frozenset()), expected,
                             argument)

    def test_rcpt(self) -> None:
        """RCPT TO: gives the path; any parameter is refused."""
        self.assertEqual(parse_rcpt("To:<u@d.example>"), (Path("u", "d.example"), {}))
        self.assertEqual(self.refusal(parse_rcpt, "FROM:<u@d.example>"), (501, "5.5.4"))
        self.assertEqual(self.refusal(parse_rcpt, "TO:<u@d.example> NOTIFY=NEVER"),
                         (555, "5.5.4"))
