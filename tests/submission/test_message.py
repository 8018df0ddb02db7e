"""prepare_message: header edits on the raw bytes."""

from __future__ import annotations

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
