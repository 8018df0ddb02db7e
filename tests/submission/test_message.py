"""prepare_message: header edits on the raw bytes."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from hurricane.smtpd.reply import ReplyError
from hurricane.submission.message import prepare_message


def prep(data: bytes):
    return prepare_message(data, hostname="h.example", now=0.0,
                           make_message_id=lambda host: f"fixed@{host}")


class PrepareMessageTests(SynchronousTestCase):
    def test_folded_identifier_header_removed_exactly(self) -> None:
        """A folded X-Hurricane header goes with its continuation lines; other bytes stay."""
        data = (b"A: 1\r\nX-Hurricane-Message-Id:\r\n  m-1\r\nB:  2 \r\n"
                b"Message-ID: <x@y>\r\nDate: d\r\n\r\nbody\r\n")
        out = prep(data)
        self.assertEqual(out.body, b"A: 1\r\nB:  2 \r\nMessage-ID: <x@y>\r\nDate: d\r\n\r\n"
                                   b"body\r\n")
        self.assertEqual(out.message_id, "m-1")

    def test_added_headers_at_end_of_header(self) -> None:
        """Missing Message-ID and Date are appended before the blank line."""
        out = prep(b"Subject: s\r\n\r\nbody\r\n")
        self.assertEqual(out.body, b"Subject: s\r\nMessage-ID: <fixed@h.example>\r\n"
                                   b"Date: Thu, 01 Jan 1970 00:00:00 +0000\r\n\r\nbody\r\n")
        self.assertEqual(out.header_message_id, "fixed@h.example")

    def test_body_without_separator(self) -> None:
        """A body line right after the header gets a blank line after our added headers."""
        out = prep(b"Subject: s\r\nnot a header line\r\n")
        self.assertEqual(out.body, b"Subject: s\r\nMessage-ID: <fixed@h.example>\r\n"
                                   b"Date: Thu, 01 Jan 1970 00:00:00 +0000\r\n\r\n"
                                   b"not a header line\r\n")

    def test_case_insensitive_names_and_empty_value(self) -> None:
        """Header names match in any case; an empty identifier is refused."""
        out = prep(b"x-hurricane-mailing-id: Abc\r\nMessage-ID: <a@b>\r\nDate: d\r\n\r\n")
        self.assertEqual((out.mailing_id, out.body),
                         ("Abc", b"Message-ID: <a@b>\r\nDate: d\r\n\r\n"))
        with self.assertRaises(ReplyError) as cm:
            prep(b"X-Hurricane-Mailing-Id:\r\n\r\n")
        self.assertEqual((cm.exception.reply.code, cm.exception.reply.status), (550, "5.6.0"))
        self.assertIn("X-Hurricane-Mailing-Id", cm.exception.reply.text)


class NearMissTests(SynchronousTestCase):
    """Headers that look like ours but are not are reported with the name meant."""

    def test_near_misses(self) -> None:
        """Each near miss is named as written, with the header Hurricane reads; it stays
        in the message and sets no identifier."""
        cases = {
            b"X-Mailing-Id": "X-Hurricane-Mailing-Id",
            b"X-Mailing-ID": "X-Hurricane-Mailing-Id",
            b"X-Hurricane-MailingId": "X-Hurricane-Mailing-Id",
            b"X_Hurricane_Mailing_Id": "X-Hurricane-Mailing-Id",
            b"X-Campaign-Id": "X-Hurricane-Mailing-Id",
            b"X-Message-Id": "X-Hurricane-Message-Id",
            b"X-Hurricane-MessageId": "X-Hurricane-Message-Id",
        }
        for name, meant in cases.items():
            data = name + b": spring\r\nMessage-ID: <a@b>\r\nDate: d\r\n\r\nbody\r\n"
            out = prep(data)
            self.assertEqual(out.misnamed, ((name.decode(), meant),), name)
            self.assertEqual((out.mailing_id, out.message_id), (None, None))
            self.assertEqual(out.body, data)

    def test_not_near_misses(self) -> None:
        """Our headers in any case, Message-ID, and a near miss next to the header meant
        are not reported."""
        for data in (b"x-hurricane-mailing-id: a\r\nX-HURRICANE-MESSAGE-ID: b\r\n\r\n",
                     b"Message-ID: <a@b>\r\nSubject: s\r\n\r\n",
                     b"X-Mailing-Id: a\r\nX-Hurricane-Mailing-Id: a\r\n\r\n"):
            self.assertEqual(prep(data).misnamed, (), data)

    def test_both_reported_once_each(self) -> None:
        """Two different near misses are both reported; a repeated one once."""
        out = prep(b"X-Mailing-Id: a\r\nX-Message-Id: b\r\nX-Mailing-Id: a\r\n\r\n")
        self.assertEqual(out.misnamed, (("X-Mailing-Id", "X-Hurricane-Mailing-Id"),
                                        ("X-Message-Id", "X-Hurricane-Message-Id")))


class HeaderReadingTests(SynchronousTestCase):
    """Our reading of plain header blocks equals the stdlib parser's (compat32)."""

    @settings(max_examples=500, deadline=None)
    @given(lines=st.lists(st.sampled_from([
        b"Subject: hi", b"Subject :spaced", b"X-Hurricane-Mailing-Id: spring",
        b"x-hurricane-mailing-id:   lower", b"X-Hurricane-Message-Id: AB12",
        b"X-Hurricane-Message-Id :odd", b"Message-ID: <a@b>", b"message-id:<c@d> ",
        b"Message-ID:", b"Date: Fri, 27 Nov 2026 10:00:00 +0000", b" folded", b"\tfolded tab",
        b"  ", b"From: a@b", b"To: x@y", b"Bad line", b":empty name", b"X-A:b:c",
        b"From someone", b"Caf\xc3\xa9: x", b"X: \xff", b"Y: bare\rcr", b"Z: bare\nlf",
    ]), max_size=12), body=st.sampled_from([b"", b"\r\n", b"\r\nbody\r\n", b"body\r\n"]))
    def test_same_values_as_the_stdlib_parser(self, lines: list[bytes], body: bytes) -> None:
        """get/get_all of every name we ask for, and the whole prepare_message
        result, match the stdlib parser's reading for any header block."""
        from email.parser import BytesParser
        from email.policy import compat32

        from hurricane.submission import message as m

        data = b"".join(line + b"\r\n" for line in lines) + body
        fields, end, _ = m._scan_header(data)
        ours = m._read_header(data, fields, end)
        theirs = BytesParser(policy=compat32).parsebytes(data[:end], headersonly=True)
        for name in ("X-Hurricane-Mailing-Id", "X-Hurricane-Message-Id", "Message-ID", "Date",
                     "Subject", "From"):
            self.assertEqual(ours.get_all(name), theirs.get_all(name), name)
            self.assertEqual(ours.get(name), theirs.get(name), name)

        def run(reader: object) -> object:
            original = m._read_header
            m._read_header = reader  # type: ignore[assignment]
            try:
                return m.prepare_message(data, hostname="h.test", now=0.0,
                                         make_message_id=lambda h: "fixed@" + h)
            except ReplyError as e:
                return ("refused", e.reply.code, e.reply.text)
            finally:
                m._read_header = original

        stdlib = lambda data, fields, end: BytesParser(  # noqa: E731
            policy=compat32).parsebytes(data[:end], headersonly=True)
        self.assertEqual(run(m._read_header), run(stdlib))
