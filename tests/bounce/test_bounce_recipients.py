"""Which addresses a returned message names as failed: table tests over the ways MTAs say it.

The recipients of a report are extracted from formats, not from examples:
the DSN fields (with and without an address type, in angle brackets,
Original-Recipient only), X-Failed-Recipients, the address in the
notification text (bare or in angle brackets, quoted local parts, IDN
domains), the returned headers' To: as a last resort, several recipients
with different outcomes. And the addresses a report names that are *not*
failed recipients never are: the reporting MTA's postmaster, the original
sender, our VERP envelope, Message-IDs, addresses in URLs.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from hurricane.bounce.analyze import analyze

VERP = "h1token.spring@bounce.example.com"


def dsn(per_recipient: str, note: str = "Your message could not be delivered.\r\n",
        original_to: str = "a@b.example") -> bytes:
    """A multipart/report with ``per_recipient`` as the recipient field blocks."""
    return (
        "From: Mail Delivery System <MAILER-DAEMON@mx.b.example>\r\n"
        f"To: <{VERP}>\r\nSubject: Undelivered Mail Returned to Sender\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="XX"\r\n\r\n'
        "--XX\r\nContent-Type: text/plain\r\n\r\n" + note + "\r\n"
        "--XX\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.b.example\r\n\r\n" + per_recipient + "\r\n"
        "--XX\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"From: News <news@shop.example>\r\nTo: <{original_to}>\r\n"
        "Message-ID: <20270101.abcdef0123456789@shop.example>\r\nSubject: Sale\r\n\r\n"
        "--XX--\r\n"
    ).encode()


def text_bounce(body: str, headers: str = "", original_to: str = "a@b.example") -> bytes:
    """A free-text bounce (no DSN part) with the original's headers after it."""
    return (
        "From: Mail Delivery Subsystem <MAILER-DAEMON@mx.b.example>\r\n"
        f"To: <{VERP}>\r\nSubject: Returned mail: see transcript for details\r\n{headers}"
        "Content-Type: text/plain\r\n\r\n" + body + "\r\n\r\n"
        "   ----- Original message follows -----\r\n\r\n"
        f"From: News <news@shop.example>\r\nTo: <{original_to}>\r\n"
        "Message-ID: <20270101.abcdef0123456789@shop.example>\r\nSubject: Sale\r\n\r\nHello\r\n"
    ).encode()


FAILED = "Action: failed\r\nStatus: 5.1.1\r\nDiagnostic-Code: smtp; 550 5.1.1 user unknown\r\n"

#: (name, message, the failed recipients in order)
TABLE: list[tuple[str, bytes, list[str]]] = [
    ("Final-Recipient with a type",
     dsn("Final-Recipient: rfc822; a@b.example\r\n" + FAILED), ["a@b.example"]),
    ("Final-Recipient without a type",
     dsn("Final-Recipient: a@b.example\r\n" + FAILED), ["a@b.example"]),
    ("Final-Recipient in angle brackets, no space after the type",
     dsn("Final-Recipient: rfc822;<a@b.example>\r\n" + FAILED), ["a@b.example"]),
    ("Final-Recipient in upper case",
     dsn("Final-Recipient: RFC822; A.Person@B.Example\r\n" + FAILED), ["a.person@b.example"]),
    ("Original-Recipient only",
     dsn("Original-Recipient: rfc822; a@b.example\r\n" + FAILED), ["a@b.example"]),
    ("a forwarded address: the failed one is the final recipient",
     dsn("Original-Recipient: rfc822; a@b.example\r\nFinal-Recipient: rfc822; "
         "a.forward@c.example\r\n" + FAILED), ["a.forward@c.example"]),
    ("two recipients, different outcomes",
     dsn("Final-Recipient: rfc822; a@b.example\r\n" + FAILED + "\r\n"
         "Final-Recipient: rfc822; c@b.example\r\nAction: failed\r\nStatus: 5.2.2\r\n"
         "Diagnostic-Code: smtp; 552 5.2.2 mailbox full\r\n"),
     ["a@b.example", "c@b.example"]),
    ("one delayed and one failed",
     dsn("Final-Recipient: rfc822; a@b.example\r\nAction: delayed\r\nStatus: 4.4.1\r\n\r\n"
         "Final-Recipient: rfc822; c@b.example\r\n" + FAILED),
     ["a@b.example", "c@b.example"]),
    ("a quoted local part",
     dsn('Final-Recipient: rfc822; "john.doe"@b.example\r\n' + FAILED),
     ['"john.doe"@b.example']),
    ("an IDN domain in its A-label form",
     dsn("Final-Recipient: rfc822; a@xn--bcher-kva.example\r\n" + FAILED),
     ["a@xn--bcher-kva.example"]),
    ("X-Failed-Recipients only (the text names nobody)",
     text_bounce("This message could not be delivered.",
                 headers="X-Failed-Recipients: a@b.example\r\n"), ["a@b.example"]),
    ("the address in angle brackets in the text",
     text_bounce("<a@b.example>: host mx.b.example said: 550 5.1.1 user unknown (in reply "
                 "to RCPT TO command)"), ["a@b.example"]),
    ("the bare address in the text",
     text_bounce("a@b.example: host mx.b.example said: 550 5.1.1 user unknown"),
     ["a@b.example"]),
    ("the address repeated in a transcript",
     text_bounce("   ----- Transcript of session follows -----\r\n"
                 ">>> RCPT To:<a@b.example>\r\n<<< 550 5.1.1 <a@b.example>... User unknown\r\n"
                 "550 5.1.1 <a@b.example>... User unknown"), ["a@b.example"]),
    ("only the returned headers' To: names the recipient",
     text_bounce("The message could not be delivered: 550 5.1.1 user unknown",
                 original_to="only-in-to@b.example"), ["only-in-to@b.example"]),
]

#: (name, message, addresses that must not be taken for failed recipients)
NOT_RECIPIENTS: list[tuple[str, bytes, list[str]]] = [
    ("the reporting MTA's postmaster and the original sender",
     text_bounce("<a@b.example>: 550 5.1.1 user unknown\r\n\r\nFor assistance, please "
                 "contact postmaster@mx.b.example.\r\nThe message was sent by "
                 "news@shop.example."),
     ["postmaster@mx.b.example", "news@shop.example"]),
    ("our VERP envelope, a Message-ID, an address in a URL",
     text_bounce(f"<a@b.example>: 550 5.1.1 user unknown\r\nSent to <{VERP}>.\r\n"
                 "Reference: <20270101.abcdef0123456789@shop.example>\r\n"
                 "See https://support.b.example/help?user=help@b.example for details."),
     [VERP, "20270101.abcdef0123456789@shop.example", "help@b.example"]),
]


class RecipientFormatTests(SynchronousTestCase):
    """Every way of naming a failed recipient in the table gives exactly that recipient."""

    def test_formats(self) -> None:
        """The recipients found equal the table's, in order."""
        wrong = []
        for name, raw, want in TABLE:
            got = [r.recipient for r in analyze(raw, VERP).results if r.recipient]
            if got != want:
                wrong.append(f"{name}: {got} != {want}")
        self.assertEqual(wrong, [])

    def test_original_recipient_is_kept(self) -> None:
        """A forwarded address keeps the address we sent to as its original recipient."""
        raw = dsn("Original-Recipient: rfc822; a@b.example\r\nFinal-Recipient: rfc822; "
                  "a.forward@c.example\r\n" + FAILED)
        [r] = analyze(raw, VERP).results
        self.assertEqual((r.recipient, r.original_recipient),
                         ("a.forward@c.example", "a@b.example"))

    def test_delayed_and_failed_keep_their_actions(self) -> None:
        """In one report, a delayed recipient stays delayed and a failed one failed."""
        raw = dsn("Final-Recipient: rfc822; a@b.example\r\nAction: delayed\r\nStatus: 4.4.1\r\n"
                  "\r\nFinal-Recipient: rfc822; c@b.example\r\n" + FAILED)
        self.assertEqual([(r.recipient, r.action) for r in analyze(raw, VERP).results],
                         [("a@b.example", "delayed"), ("c@b.example", "failed")])


class NotRecipientTests(SynchronousTestCase):
    """Addresses a report names for other reasons are never failed recipients."""

    def test_false_positives(self) -> None:
        """Postmaster, the sender, our envelope, Message-IDs and URLs are left out."""
        wrong = []
        for name, raw, never in NOT_RECIPIENTS:
            got = [r.recipient for r in analyze(raw, VERP).results]
            bad = [a for a in never if a in got]
            if bad or got != ["a@b.example"]:
                wrong.append(f"{name}: {got}")
        self.assertEqual(wrong, [])


def _report(rcpt: str, original: bytes, boundary: str) -> bytes:
    return ("From: MAILER-DAEMON@mx.example.net\r\nTo: news@example.com\r\n"
            "Subject: Returned mail\r\nMIME-Version: 1.0\r\n"
            "Content-Type: multipart/report; report-type=delivery-status; boundary=%s\r\n\r\n"
            "--%s\r\nContent-Type: text/plain\r\n\r\nDelivery failed.\r\n"
            "--%s\r\nContent-Type: message/delivery-status\r\n\r\n"
            "Reporting-MTA: dns; mx.example.net\r\n\r\nFinal-Recipient: rfc822; %s\r\n"
            "Action: failed\r\nStatus: 5.1.1\r\n"
            "Diagnostic-Code: smtp; 550 5.1.1 user unknown\r\n"
            "--%s\r\nContent-Type: message/rfc822\r\n\r\n"
            % (boundary, boundary, boundary, rcpt, boundary)).encode() + original + (
        "\r\n--%s--\r\n" % boundary).encode()


class NestedReportTests(SynchronousTestCase):
    """A report inside the returned original is that original's content."""

    def test_nested_dsn_is_not_ours(self) -> None:
        """A bounce of a bounce: only the outer report's recipient failed."""
        inner = _report("inner@b.example", b"Subject: hello\r\n\r\nhi\r\n", "in")
        outer = _report("outer@a.example", inner, "out")
        self.assertEqual([r.recipient for r in analyze(outer).results], ["outer@a.example"])

    def test_nested_dsn_alone_is_read(self) -> None:
        """A forward that holds the report only inside an attached message is still read."""
        inner = _report("inner@b.example", b"Subject: hello\r\n\r\nhi\r\n", "in")
        fwd = (b"From: MAILER-DAEMON@mx.example.net\r\nSubject: Returned mail\r\n"
               b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=f\r\n\r\n"
               b"--f\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
               b"--f\r\nContent-Type: message/rfc822\r\n\r\n" + inner + b"\r\n--f--\r\n")
        self.assertEqual([r.recipient for r in analyze(fwd).results], ["inner@b.example"])
