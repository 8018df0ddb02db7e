"""hurricane.smtp_reply: one Reply both ways, and the one enhanced-status parser."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from hurricane.smtp_reply import (
    Reply,
    ReplyError,
    find_statuses,
    is_status,
    leading_status,
    reply_code,
)
from hurricane.smtpd import reply as smtpd_reply


class LeadingStatusTests(SynchronousTestCase):
    """The status at the start of a reply's text."""

    def test_enhanced_status(self) -> None:
        """The status is taken from the start of the text when its class matches the code."""
        self.assertEqual(leading_status(550, "5.1.1 no such user"), "5.1.1")
        self.assertEqual(leading_status(250, "2.0.0 Ok: queued"), "2.0.0")
        self.assertIsNone(leading_status(250, "5.1.1 odd"))
        self.assertIsNone(leading_status(550, "no such user 5.1.1"))
        self.assertIsNone(leading_status(550, "5.1.1x"))

    def test_separators(self) -> None:
        """Punctuation, a line end or the end of the text may follow the status."""
        for text in ("5.7.1; nope", "5.7.1: nope", "5.7.1\nnope", "5.7.1", "  5.7.1 nope"):
            self.assertEqual(leading_status(554, text), "5.7.1", text)


class FindStatusesTests(SynchronousTestCase):
    """Statuses anywhere in a text, never inside a longer dotted number."""

    def test_in_text(self) -> None:
        """Every status in order; a version number or an address octet is not one."""
        text = "host said 550 5.1.1 unknown; relay 1.5.1.1 and 4.2.2 later, v5.1.10.2"
        self.assertEqual([m.group(0) for m in find_statuses(text)], ["5.1.1", "4.2.2"])
        self.assertEqual(next(find_statuses("x 4.7.1 y")).groups(), ("4", "7", "1"))

    def test_is_status(self) -> None:
        """Exactly one status, nothing around it."""
        self.assertTrue(is_status("5.1.1"))
        self.assertTrue(is_status("4.7.123"))
        for value in ("5.1.1 ", "5.1", "6.1.1", "5.1.1.1", "", None):
            self.assertFalse(is_status(value), value)


class ReplyCodeTests(SynchronousTestCase):
    """reply_code: a code from a report's text or an int."""

    def test_codes(self) -> None:
        """Three digits 200-599 are a code; anything else is None."""
        self.assertEqual([reply_code(v) for v in ("550", "452", 250, "999", "55", "5x0", None,
                                                  "", 700)],
                         [550, 452, 250, None, None, None, None, None, None])


class ReplyTests(SynchronousTestCase):
    """One Reply: what our servers send and what our client reads."""

    def test_no_status_is_none(self) -> None:
        """A reply without a status holds None, however it was made."""
        self.assertIsNone(Reply(220, "", "mx.example ESMTP").status)
        self.assertIsNone(Reply(220, None, "mx.example ESMTP").status)
        self.assertIsNone(Reply.parse(220, "mx.example ESMTP").status)
        self.assertEqual(str(Reply(220, "", "mx.example ESMTP")), "220 mx.example ESMTP")

    def test_parse_splits_the_status(self) -> None:
        """A read reply is code, status and the rest; render() is what came."""
        reply = Reply.parse(550, "5.1.1 <bob@example.com>: Recipient address rejected")
        self.assertEqual(reply, Reply(550, "5.1.1", "<bob@example.com>: Recipient address "
                                                    "rejected"))
        self.assertEqual(reply.render(), "5.1.1 <bob@example.com>: Recipient address rejected")
        self.assertEqual(str(reply), "550 5.1.1 <bob@example.com>: Recipient address rejected")

    def test_render_gives_back_what_was_read(self) -> None:
        """Whatever follows the status, render() reproduces the text exactly."""
        for text in ("5.1.1 user unknown", "5.1.1  two spaces", "5.1.1; semicolon",
                     "5.1.1: colon", "5.1.1\nsecond line", "5.1.1", "5.1.1 ", "5.1.1 ;x",
                     "no status here", "5.1.1x not a status", "2.0.0 on a 550"):
            self.assertEqual(Reply.parse(550, text).render(), text, text)

    @given(st.sampled_from(["2.0.0", "4.7.1", "5.1.1"]), st.text(max_size=40))
    def test_render_round_trip(self, status: str, rest: str) -> None:
        """Any text after a status of the code's class is rendered back unchanged."""
        code = {"2": 250, "4": 451, "5": 550}[status[0]]
        text = f"{status}{rest}"
        self.assertEqual(Reply.parse(code, text).render(), text)

    def test_classes(self) -> None:
        """positive for 2xx/3xx, temporary for 4xx, permanent for 5xx."""
        self.assertEqual([(r.positive, r.temporary, r.permanent) for r in (
            Reply(250, "2.0.0", "Ok"), Reply(354, None, "go on"), Reply(451, "4.3.0", "later"),
            Reply(550, "5.1.1", "no"))],
            [(True, False, False), (True, False, False), (False, True, False),
             (False, False, True)])

    def test_smtpd_names(self) -> None:
        """hurricane.smtpd.reply still offers Reply and ReplyError: the same classes."""
        self.assertIs(smtpd_reply.Reply, Reply)
        self.assertIs(smtpd_reply.ReplyError, ReplyError)
        self.assertEqual(str(smtpd_reply.TRY_LATER),
                         "451 4.3.0 Error: local error in processing, try again later")
        self.assertEqual(str(ReplyError(smtpd_reply.OK)), "250 2.0.0 Ok")
