"""DSNs written the way Postfix's bounce daemon writes them, through the processor to the event.

Issue 22: with a real Postfix 3.7 as the receiving MTA, a local delivery that
failed with ``Status: 5.1.1`` and ``Diagnostic-Code: x-unix; ... user unknown``
was recorded as ``mailererror`` (so were 5.7.1 spam and 5.1.6 moved). The
fixtures here are written for this test in Postfix's layout (notification,
delivery report, undelivered message headers), not copied from any corpus.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from hurricane.bounce.analyze import analyze
from hurricane.model import EventKind, State

from .helpers import World, original_headers, run


def postfix_dsn(recipient: str, *, status: str, diagnostic: str, action: str = "failed",
                token: str | None = None, host: str = "mx.example.net") -> bytes:
    """A DSN in the layout of Postfix's bounce(8) for one recipient of a local delivery."""
    text = diagnostic.split(";", 1)[1].strip()
    return (
        f"From: MAILER-DAEMON@{host} (Mail Delivery System)\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        f"To: <{token or 'postmaster@bounce.example.com'}>\r\n"
        "Auto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: multipart/report; report-type=delivery-status;\r\n"
        f'\tboundary="3F2A11C0A2.1800000300/{host}"\r\n'
        f"Message-Id: <20270115100500.3F2A11C0A2@{host}>\r\n"
        "\r\n"
        "This is a MIME-encapsulated message.\r\n"
        "\r\n"
        f"--3F2A11C0A2.1800000300/{host}\r\n"
        "Content-Description: Notification\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n"
        "\r\n"
        f"This is the mail system at host {host}.\r\n"
        "\r\n"
        "I'm sorry to have to inform you that your message could not\r\n"
        "be delivered to one or more recipients. It's attached below.\r\n"
        "\r\n"
        "For further assistance, please send mail to postmaster.\r\n"
        "\r\n"
        "                   The mail system\r\n"
        "\r\n"
        f"<{recipient}>: {text}\r\n"
        "\r\n"
        f"--3F2A11C0A2.1800000300/{host}\r\n"
        "Content-Description: Delivery report\r\n"
        "Content-Type: message/delivery-status\r\n"
        "\r\n"
        f"Reporting-MTA: dns; {host}\r\n"
        "X-Postfix-Queue-ID: 3F2A11C0A2\r\n"
        "X-Postfix-Sender: rfc822; news@example.org\r\n"
        "Arrival-Date: Fri, 15 Jan 2027 10:04:58 +0000 (UTC)\r\n"
        "\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\n"
        f"Original-Recipient: rfc822;{recipient}\r\n"
        f"Action: {action}\r\n"
        f"Status: {status}\r\n"
        f"Diagnostic-Code: {diagnostic}\r\n"
        "\r\n"
        f"--3F2A11C0A2.1800000300/{host}\r\n"
        "Content-Description: Undelivered Message Headers\r\n"
        "Content-Type: text/rfc822-headers\r\n"
        "\r\n"
        f"{original_headers(recipient, token)}"
        "\r\n"
        f"--3F2A11C0A2.1800000300/{host}--\r\n"
    ).encode("ascii")


#: (status, Diagnostic-Code, reason, hard): a local program's answer with a specific status.
LOCAL_FAILURES = [
    ("5.1.1", "x-unix; <alice@example.net>: user unknown", "userunknown", True),
    ("5.1.6", "x-unix; mailbox has moved, write to alice@new.example.org", "hasmoved", True),
    ("5.7.1", "x-unix; message refused: spam score 12.3 is over the threshold of 5",
     "spamdetected", False),
]


class PostfixLocalDeliveryTests(SynchronousTestCase):
    """Postfix's DSNs for a local delivery (x-unix diagnostics) become the right bounce."""

    def test_analysis(self) -> None:
        """A specific status outweighs the x-unix diagnostic type (docs step 4)."""
        for status, diag, reason, hard in LOCAL_FAILURES:
            a = analyze(postfix_dsn("alice@example.net", status=status, diagnostic=diag))
            [r] = a.results
            self.assertEqual((a.category, r.recipient, r.status, r.reason, r.hard),
                             ("bounce", "alice@example.net", status, reason, hard), diag)
            self.assertEqual(r.diagnostic_type, "x-unix")

    def test_procmail_failure_stays_mailererror(self) -> None:
        """A local program that failed and names no cause is still a mailer error."""
        a = analyze(postfix_dsn("alice@example.net", status="4.3.0",
                                diagnostic="x-unix; temporary failure"))
        self.assertEqual(a.results[0].reason, "mailererror")

    def test_recorded_through_the_processor(self) -> None:
        """Each DSN, returned to the delivery's VERP address, is recorded with its reason."""
        for status, diag, reason, hard in LOCAL_FAILURES:
            w = World()
            [d] = w.send(["alice@example.net"])
            token = w.token(d)
            p = w.processor()
            p.startService()
            self.addCleanup(p.stopService)
            p.submit(w.receive(postfix_dsn("alice@example.net", status=status, diagnostic=diag,
                                           token=token), token))
            row = w.delivery(d.delivery_id)
            self.assertEqual((row.state, row.reason, row.hard, row.status),
                             (State.bounced, reason, hard, status), diag)
            ev = w.events(d.delivery_id)[-1]
            self.assertEqual((ev.kind, ev.reason), (EventKind.bounce, reason))
            suppressed = run(w.store.get_suppression("alice@example.net")) is not None
            self.assertEqual(suppressed, hard, diag)


def recorded(raw_for_token: object, recipient: str = "alice@example.net") -> tuple[World, int]:
    """Send one message, return ``raw_for_token(token)`` to its VERP address, process it."""
    w = World()
    [d] = w.send([recipient])
    token = w.token(d)
    p = w.processor()
    p.startService()
    assert callable(raw_for_token)
    p.submit(w.receive(raw_for_token(token), token))
    p.stopService()
    return w, d.delivery_id


class FinalSoftFailureTests(SynchronousTestCase):
    """Action: failed with a 4.x.x status: the remote MTA gave up, a final soft failure."""

    def test_bounced_not_hard(self) -> None:
        """Postfix gave up on a full mailbox (4.2.2): bounced, mailboxfull, neither hard nor
        suppressed."""
        w, delivery_id = recorded(lambda token: postfix_dsn(
            "alice@example.net", status="4.2.2", token=token,
            diagnostic="smtp; 452 4.2.2 <alice@example.net>: Mailbox full"))
        row = w.delivery(delivery_id)
        self.assertEqual((row.state, row.reason, row.hard, row.status),
                         (State.bounced, "mailboxfull", False, "4.2.2"))
        self.assertIsNone(run(w.store.get_suppression("alice@example.net")))

    def test_delay_warning_moves_nothing(self) -> None:
        """A DSN with Action: delayed (still retrying) leaves the recipient delivered."""
        w, delivery_id = recorded(lambda token: postfix_dsn(
            "alice@example.net", status="4.2.2", action="delayed", token=token,
            diagnostic="smtp; 452 4.2.2 <alice@example.net>: Mailbox full"))
        self.assertEqual(w.delivery(delivery_id).state, State.delivered)
        self.assertEqual(w.events(delivery_id)[-1].kind, EventKind.delayed)

    def test_free_text_delay_warning_moves_nothing(self) -> None:
        """A free-text warning ('will be retried', no DSN) is a delay, not a final failure."""
        def warning(token: str) -> bytes:
            return (
                "From: Mail Delivery Subsystem <mailer-daemon@example.net>\r\n"
                f"To: <{token}>\r\n"
                "Subject: Delivery Status Notification (Delay)\r\n"
                "Content-Type: text/plain\r\n\r\n"
                "This is an automatically generated Delivery Status Notification.\r\n\r\n"
                "THIS IS A WARNING MESSAGE ONLY.\r\n\r\n"
                "YOU DO NOT NEED TO RESEND YOUR MESSAGE.\r\n\r\n"
                "Delivery to the following recipient has been delayed:\r\n\r\n"
                "     alice@example.net\r\n\r\n"
                "Message will be retried for 2 more day(s)\r\n\r\n"
                "Technical details of temporary failure:\r\n"
                "The recipient server did not accept our requests to connect.\r\n"
            ).encode()
        a = analyze(warning("x@bounce.example.com"))
        self.assertEqual([(r.recipient, r.action) for r in a.results],
                         [("alice@example.net", "delayed")])
        w, delivery_id = recorded(warning)
        self.assertEqual(w.delivery(delivery_id).state, State.delivered)
