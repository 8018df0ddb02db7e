"""DSNs in the exact layouts Postfix 3 and Exim 4 write, for the causes the live loop found wrong.

tests/integration/test_liveloop.py runs the real MTAs; these fixtures are
written here, in each MTA's layout (notification, delivery report, returned
headers), so that each decision is pinned without an MTA: Postfix giving up
on a refused connection after its queue lifetime, Postfix's own client
refusing a message over the next hop's SIZE, a local program's exit status
worded from sysexits.h, Exim's "Unrouteable address".
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from hurricane.bounce.analyze import analyze

ORIGINAL = ("From: News <news@example.org>\r\nTo: <{rcpt}>\r\nSubject: Spring sale\r\n"
            "Message-ID: <spring.1@example.org>\r\n")


def postfix_dsn(rcpt: str, status: str, diagnostic: str, reason_text: str) -> bytes:
    """A DSN in the layout of Postfix's bounce(8) (3.x) for one recipient."""
    return (
        "From: MAILER-DAEMON@mx.example.net (Mail Delivery System)\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        "To: <v1.token@bounce.example.com>\r\n"
        "Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n"
        "Content-Type: multipart/report; report-type=delivery-status;\r\n"
        '\tboundary="B1/mx.example.net"\r\n\r\n'
        "This is a MIME-encapsulated message.\r\n\r\n"
        "--B1/mx.example.net\r\nContent-Description: Notification\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n\r\n"
        "This is the mail system at host mx.example.net.\r\n\r\n"
        "I'm sorry to have to inform you that your message could not\r\n"
        "be delivered to one or more recipients. It's attached below.\r\n\r\n"
        "For further assistance, please send mail to postmaster.\r\n\r\n"
        "                   The mail system\r\n\r\n"
        f"<{rcpt}>: {reason_text}\r\n\r\n"
        "--B1/mx.example.net\r\nContent-Description: Delivery report\r\n"
        "Content-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.net\r\nX-Postfix-Queue-ID: 4F2A1\r\n\r\n"
        f"Final-Recipient: rfc822; {rcpt}\r\nOriginal-Recipient: rfc822;{rcpt}\r\n"
        f"Action: failed\r\nStatus: {status}\r\nDiagnostic-Code: {diagnostic}\r\n\r\n"
        "--B1/mx.example.net\r\nContent-Description: Undelivered Message Headers\r\n"
        "Content-Type: text/rfc822-headers\r\n\r\n"
        + ORIGINAL.format(rcpt=rcpt) +
        "\r\n--B1/mx.example.net--\r\n"
    ).encode()


def exim_dsn(rcpt: str, lines: str, diagnostic: str | None = None) -> bytes:
    """A bounce in the layout of Exim 4.9x (notification, DSN part, the message)."""
    diag = f"Diagnostic-Code: {diagnostic}\r\n" if diagnostic else ""
    return (
        f"X-Failed-Recipients: {rcpt}\r\nAuto-Submitted: auto-replied\r\n"
        "From: Mail Delivery System <Mailer-Daemon@mx.example.net>\r\n"
        "To: v1.token@bounce.example.com\r\n"
        "Content-Type: multipart/report; report-type=delivery-status; "
        "boundary=1796522232-eximdsn-151008512\r\nMIME-Version: 1.0\r\n"
        "Subject: Mail delivery failed: returning message to sender\r\n\r\n"
        "--1796522232-eximdsn-151008512\r\nContent-type: text/plain; charset=us-ascii\r\n\r\n"
        "This message was created automatically by mail delivery software.\r\n\r\n"
        "A message that you sent could not be delivered to one or more of its\r\n"
        "recipients. This is a permanent error. The following address(es) failed:\r\n\r\n"
        f"  {rcpt}\r\n{lines}\r\n"
        "--1796522232-eximdsn-151008512\r\nContent-type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.net\r\n\r\n"
        f"Action: failed\r\nFinal-Recipient: rfc822;{rcpt}\r\nStatus: 5.0.0\r\n{diag}\r\n"
        "--1796522232-eximdsn-151008512\r\nContent-type: message/rfc822\r\n\r\n"
        + ORIGINAL.format(rcpt=rcpt) + "\r\nHello\r\n\r\n"
        "--1796522232-eximdsn-151008512--\r\n"
    ).encode()


class PostfixGaveUpTests(SynchronousTestCase):
    """Postfix's DSNs after its own give-ups and its own client's refusals."""

    def one(self, raw: bytes) -> tuple[str, str, bool, str | None]:
        a = analyze(raw)
        [r] = a.results
        return r.recipient, r.reason, r.hard, r.status

    def test_connection_refused_until_the_queue_lifetime_ends(self) -> None:
        """A refused TCP connection, reported with 4.4.1 in a final DSN: expired, not blocked
        (no server spoke; the reporter retried and gave up)."""
        raw = postfix_dsn("a@dead.example", "4.4.1",
                          "X-Postfix; connect to mx.dead.example[192.0.2.7]:25: Connection "
                          "refused", "connect to mx.dead.example[192.0.2.7]:25: Connection "
                          "refused")
        self.assertEqual(self.one(raw), ("a@dead.example", "expired", False, "4.4.1"))

    def test_size_over_the_next_hops_limit(self) -> None:
        """Postfix's client refuses a message bigger than the server's SIZE: mesgtoobig, not
        a full mailbox ("exceeds size limit" is about the message here)."""
        text = ("message size 2741 exceeds size limit 1024 of server "
                "mx.b.example[192.0.2.9]")
        raw = postfix_dsn("a@b.example", "5.3.4", "X-Postfix; " + text, text)
        self.assertEqual(self.one(raw), ("a@b.example", "mesgtoobig", False, "5.3.4"))

    def test_local_program_exit_status(self) -> None:
        """A program that exits EX_SOFTWARE (70): Postfix writes 'internal software error'
        under x-unix; the local mailer failed (mailererror), not the remote system."""
        raw = postfix_dsn("prog@example.net", "5.3.0", "x-unix; internal software error",
                          "internal software error")
        self.assertEqual(self.one(raw), ("prog@example.net", "mailererror", False, "5.3.0"))


class EximReportTests(SynchronousTestCase):
    """Exim's bounce messages: the words under the failed address decide."""

    def test_unrouteable_address(self) -> None:
        """No router took the address (a domain that does not resolve): hostunknown, hard."""
        a = analyze(exim_dsn("someone@nxdomain.example", "    Unrouteable address\r\n"))
        [r] = a.results
        self.assertEqual((r.recipient, r.reason, r.hard), ("someone@nxdomain.example",
                                                           "hostunknown", True))

    def test_unrouteable_at_rcpt_is_the_user(self) -> None:
        """The same words from a remote Exim at RCPT: its domain routed, the user did not."""
        lines = ("    host mx.b.example [192.0.2.9]\r\n"
                 "    SMTP error from remote mail server after RCPT TO:<a@b.example>:\r\n"
                 "    550 Unrouteable address\r\n")
        a = analyze(exim_dsn("a@b.example", lines, "smtp; 550 Unrouteable address"))
        [r] = a.results
        self.assertEqual((r.reason, r.hard, r.stage), ("userunknown", True, "rcpt"))

    def test_retry_timeouts(self) -> None:
        """Exim gave up after its retry rule: expired, unless the last error names a cause."""
        a = analyze(exim_dsn("a@dead.example", "    retry timeout exceeded\r\n"))
        self.assertEqual(a.results[0].reason, "expired")
        a = analyze(exim_dsn("full@example.net",
                             "    mailbox is full: retry timeout exceeded\r\n"))
        self.assertEqual((a.results[0].reason, a.results[0].hard), ("mailboxfull", False))
