"""A DSN that gives up on a 4.x.x is final (issue 22), through the real analyzer.

Postfix keeps retrying a recipient whose server answers 4xx until
``maximal_queue_lifetime`` (5 days by default), then returns the message
with ``Action: failed`` and the last 4.x.x status: the mail will never
arrive, so the delivery is bounced, but the condition (a full mailbox) may
pass, so the address is neither hard nor suppressed. ``Action: delayed``
with the same status is Postfix's warning while it still retries, and only
an event.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from hurricane.inbound.processor import BounceProcessor
from hurricane.model import EventKind, State

from .helpers import World, original_headers, run


def postfix_dsn(recipient: str, token: str, *, action: str, subject: str) -> bytes:
    """A returned message as Postfix 3.x writes it after its queue lifetime (or a warning)."""
    notice = (
        "This is the mail system at host relay.example.org.\r\n\r\n"
        "I'm sorry to have to inform you that your message could not\r\n"
        "be delivered to one or more recipients. It's attached below.\r\n\r\n"
        "                   The mail system\r\n\r\n"
        f"<{recipient}>: host mx.example.net[192.0.2.25] said: 452 4.2.2\r\n"
        f"    <{recipient}>: Recipient address rejected: Mailbox full (in reply to\r\n"
        "    RCPT TO command)\r\n"
    ) if action == "failed" else (
        "This is the mail system at host relay.example.org.\r\n\r\n"
        "####################################################################\r\n"
        "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #\r\n"
        "####################################################################\r\n\r\n"
        "Your message could not be delivered for more than 4 hour(s).\r\n"
        "It will be retried until it is 5 day(s) old.\r\n\r\n"
        f"<{recipient}>: host mx.example.net[192.0.2.25] said: 452 4.2.2\r\n"
        f"    <{recipient}>: Recipient address rejected: Mailbox full (in reply to\r\n"
        "    RCPT TO command)\r\n"
    )
    return (
        "Return-Path: <>\r\n"
        "From: MAILER-DAEMON@relay.example.org (Mail Delivery System)\r\n"
        f"To: {token}\r\n"
        f"Subject: {subject}\r\n"
        "Date: Wed, 20 Jan 2027 10:00:00 +0000 (UTC)\r\n"
        "Message-Id: <20270120100000.4B1C2D3E4F@relay.example.org>\r\n"
        "Auto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: multipart/report; report-type=delivery-status;\r\n"
        '\tboundary="4B1C2D3E4F.1768903200/relay.example.org"\r\n'
        "\r\n"
        "This is a MIME-encapsulated message.\r\n\r\n"
        "--4B1C2D3E4F.1768903200/relay.example.org\r\n"
        "Content-Description: Notification\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n\r\n"
        f"{notice}\r\n"
        "--4B1C2D3E4F.1768903200/relay.example.org\r\n"
        "Content-Description: Delivery report\r\n"
        "Content-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; relay.example.org\r\n"
        "X-Postfix-Queue-ID: 4B1C2D3E4F\r\n"
        f"X-Postfix-Sender: rfc822; {token}\r\n"
        "Arrival-Date: Fri, 15 Jan 2027 10:00:00 +0000 (UTC)\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\n"
        f"Original-Recipient: rfc822;{recipient}\r\n"
        f"Action: {action}\r\n"
        "Status: 4.2.2\r\n"
        "Remote-MTA: dns; mx.example.net\r\n"
        f"Diagnostic-Code: smtp; 452 4.2.2 <{recipient}>: Recipient address rejected:\r\n"
        "    Mailbox full\r\n"
        + ("Will-Retry-Until: Wed, 20 Jan 2027 10:00:00 +0000 (UTC)\r\n"
           if action == "delayed" else "")
        + "\r\n"
        "--4B1C2D3E4F.1768903200/relay.example.org\r\n"
        "Content-Description: Undelivered Message Headers\r\n"
        "Content-Type: text/rfc822-headers\r\n\r\n"
        f"{original_headers(recipient, token)}"
        "\r\n"
        "--4B1C2D3E4F.1768903200/relay.example.org--\r\n"
    ).encode("ascii")


class FinalTemporaryFailureTests(SynchronousTestCase):
    """Action: failed with Status: 4.2.2 bounces; Action: delayed stays an event."""

    def setUp(self) -> None:
        self.w = World()
        [self.d] = self.w.send(["alice@example.net"])
        self.token = self.w.token(self.d)

    def start(self, **kwargs: Any) -> BounceProcessor:
        p = self.w.processor(**kwargs)
        p.startService()
        self.addCleanup(lambda: self.successResultOf(p.stopService()))
        return p

    def test_gave_up_on_4xx_bounces_soft(self) -> None:
        """Postfix's failed 4.2.2: bounced, reason from the analysis, not hard, not suppressed."""
        p = self.start()
        p.submit(self.w.receive(postfix_dsn("alice@example.net", self.token, action="failed",
                                            subject="Undelivered Mail Returned to Sender"),
                                self.token))
        row = self.w.delivery(self.d.delivery_id)
        self.assertEqual((row.state, row.reason, row.hard, row.code, row.status),
                         (State.bounced, "mailboxfull", False, 452, "4.2.2"))
        ev = self.w.events(self.d.delivery_id)[-1]
        self.assertEqual((ev.kind, ev.state, ev.hard, ev.correlation),
                         (EventKind.bounce, State.bounced, False, "verp"))
        self.assertIsNone(run(self.w.store.get_suppression("alice@example.net")))

    def test_delay_warning_is_an_event(self) -> None:
        """Postfix's delayed 4.2.2 warning: recorded as delayed, the delivery stays delivered."""
        p = self.start()
        p.submit(self.w.receive(postfix_dsn("alice@example.net", self.token, action="delayed",
                                            subject="Delayed Mail (still being retried)"),
                                self.token))
        row = self.w.delivery(self.d.delivery_id)
        self.assertEqual((row.state, row.hard), (State.delivered, False))
        self.assertEqual(self.w.events(self.d.delivery_id)[-1].kind, EventKind.delayed)
        self.assertIsNone(run(self.w.store.get_suppression("alice@example.net")))
