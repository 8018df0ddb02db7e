"""Tests for hurricane.bounce.analyze on small synthetic messages."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from hurricane.bounce.analyze import analyze, to_prediction

TOKEN = "h1kabcdefghijklmnopqrstuvwx.sale-26.ab12@bounce.example.com"

DSN = f"""\
From: MAILER-DAEMON@mx.example.net (Mail Delivery System)
To: {TOKEN}
Subject: Undelivered Mail Returned to Sender
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="BOUND"

--BOUND
Content-Type: text/plain

<alice@example.org>: host mx.example.org[192.0.2.1] said: 550 5.1.1
    <alice@example.org>: Recipient address rejected: User unknown (in reply to
    RCPT TO command)

<bob@example.org>: host mx.example.org[192.0.2.1] said: 452 4.2.2 Mailbox
    full (in reply to RCPT TO command)

--BOUND
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.net
Original-Envelope-Id: env-42

Final-Recipient: rfc822; alice@example.org
Original-Recipient: rfc822; Alice@Example.org
Action: failed
Status: 5.1.1
Remote-MTA: dns; mx.example.org
Diagnostic-Code: smtp; 550 5.1.1 <alice@example.org>: Recipient address
    rejected: User unknown

Final-Recipient: rfc822; bob@example.org
Action: delayed
Status: 4.2.2
Diagnostic-Code: smtp; 452 4.2.2 Mailbox full

--BOUND
Content-Type: text/rfc822-headers

From: app@example.com
To: alice@example.org, bob@example.org
Message-ID: <orig-1@example.com>
X-Hurricane-Token: {TOKEN}
Subject: hello

--BOUND--
"""

ARF = """\
From: fbl@isp.example
To: abuse@example.com
Subject: Abuse report
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="B"

--B
Content-Type: text/plain

This is an abuse report.

--B
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: ExampleFBL/1.0
Version: 1

--B
Content-Type: message/rfc822

From: app@example.com
To: carol@isp.example
Message-ID: <orig-2@example.com>
X-Hurricane-Token: h1kzzz@bounce.example.com
Subject: offer

buy now
--B--
"""

AUTOREPLY = """\
From: Dave <dave@example.org>
To: app@example.com
Subject: Out of office: hello
Auto-Submitted: auto-replied
Content-Type: text/plain

I am away until Monday.
"""

QMAIL = """\
From: MAILER-DAEMON@qmail.example.net
To: app@example.com
Subject: failure notice

Hi. This is the qmail-send program at qmail.example.net.
I'm afraid I wasn't able to deliver your message to the following addresses.
This is a permanent error; I've given up. Sorry it didn't work out.

<erin@example.org>:
192.0.2.3 does not like recipient.
Remote host said: 550 5.1.1 <erin@example.org>... No such user
Giving up on 192.0.2.3.

--- Below this line is a copy of the message.

Return-Path: <app@example.com>
From: app@example.com
To: erin@example.org
Message-ID: <orig-3@example.com>
X-Hurricane-Token: h1kqqq@bounce.example.com

hello
"""

EXIM = """\
From: Mail Delivery System <Mailer-Daemon@exim.example.net>
To: app@example.com
Subject: Mail delivery failed: returning message to sender

This message was created automatically by mail delivery software.

A message that you sent could not be delivered to one or more of its
recipients. This is a permanent error. The following address(es) failed:

  frank@example.org
    host mx.example.org [192.0.2.9]
    SMTP error from remote mail server after RCPT TO:<frank@example.org>:
    552 5.2.2 Mailbox quota exceeded

------ This is a copy of the message, including all the headers. ------

From: app@example.com
To: frank@example.org
"""

OTHER = """\
From: someone@example.org
To: app@example.com
Subject: Re: your newsletter

Thanks, I liked it.
"""


class DSNTests(SynchronousTestCase):
    """RFC 3464 delivery-status reports."""

    def setUp(self):
        self.a = analyze(DSN.encode())

    def test_category_and_recipients(self):
        """Each per-recipient block becomes one result."""
        self.assertEqual(self.a.category, "bounce")
        self.assertEqual([r.recipient for r in self.a.results],
                         ["alice@example.org", "bob@example.org"])

    def test_fields(self):
        """Status, code, action, remote MTA, ORCPT and source are read from the DSN."""
        alice, bob = self.a.results
        self.assertEqual((alice.status, alice.code, alice.action, alice.reason, alice.hard),
                         ("5.1.1", "550", "failed", "userunknown", True))
        self.assertEqual(alice.remote_mta, "mx.example.org")
        self.assertEqual(alice.original_recipient, "alice@example.org")
        self.assertEqual(alice.source, "dsn")
        self.assertEqual((bob.action, bob.status, bob.reason, bob.hard),
                         ("delayed", "4.2.2", "mailboxfull", False))

    def test_metadata(self):
        """ENVID, the original Message-ID and the VERP token are collected."""
        self.assertEqual(self.a.envid, "env-42")
        self.assertEqual(self.a.original_message_id, "orig-1@example.com")
        self.assertEqual(self.a.verp_tokens, (TOKEN,))
        self.assertEqual(self.a.from_address, "mailer-daemon@mx.example.net")

    def test_crlf(self):
        """CRLF line endings give the same answer as LF."""
        b = analyze(DSN.replace("\n", "\r\n").encode())
        self.assertEqual(b.results, self.a.results)

    def test_prediction(self):
        """to_prediction gives the score.py line."""
        p = to_prediction(self.a, "x.eml")
        self.assertEqual(p["recipients"], ["alice@example.org", "bob@example.org"])
        self.assertEqual((p["status"], p["replycode"], p["reason"], p["hard"], p["category"]),
                         ("5.1.1", "550", "userunknown", True, "bounce"))
        self.assertEqual(p["results"][0]["source"], "dsn")

    def test_to_json(self):
        """Analysis.to_json carries all fields."""
        j = self.a.to_json()
        self.assertEqual(j["envid"], "env-42")
        self.assertEqual(j["results"][0]["original_recipient"], "alice@example.org")


class ARFTests(SynchronousTestCase):
    """RFC 5965 feedback reports."""

    def test_recipient_from_embedded_original(self):
        """Without Original-Rcpt-To the recipient comes from the embedded original."""
        a = analyze(ARF.encode())
        self.assertEqual(a.category, "feedback")
        self.assertEqual([r.recipient for r in a.results], ["carol@isp.example"])
        r = a.results[0]
        self.assertEqual((r.reason, r.feedback_type, r.source), ("feedback", "abuse", "arf"))
        self.assertEqual(a.original_message_id, "orig-2@example.com")
        self.assertEqual(a.verp_tokens, ("h1kzzz@bounce.example.com",))

    def test_original_rcpt_to(self):
        """Original-Rcpt-To names the complained-about recipient."""
        raw = ARF.replace("Version: 1\n", "Version: 1\nOriginal-Rcpt-To: <Greg@isp.example>\n")
        a = analyze(raw.encode())
        self.assertEqual([r.recipient for r in a.results], ["greg@isp.example"])


class AutoReplyTests(SynchronousTestCase):
    """RFC 3834 auto-replies."""

    def test_autoreply(self):
        """Auto-Submitted makes an auto-reply, never a failure."""
        a = analyze(AUTOREPLY.encode())
        self.assertEqual(a.category, "autoreply")
        self.assertEqual(a.results[0].recipient, "dave@example.org")
        self.assertEqual(a.results[0].reason, "vacation")
        self.assertFalse(a.results[0].hard)

    def test_subject_only(self):
        """A vacation subject alone is enough."""
        raw = (AUTOREPLY.replace("Auto-Submitted: auto-replied\n", "")
               .replace("Out of office", "Automatic reply"))
        self.assertEqual(analyze(raw.encode()).category, "autoreply")

    def test_auto_submitted_no(self):
        """Auto-Submitted: no with an ordinary subject is not an auto-reply."""
        raw = AUTOREPLY.replace("auto-replied", "no").replace("Out of office: hello", "Re: hello")
        self.assertEqual(analyze(raw.encode()).category, "other")


class FreeTextTests(SynchronousTestCase):
    """Free-text bounces of the usual MTAs."""

    def test_qmail(self):
        """A qmail-style bounce names the recipient, the code and the reason."""
        a = analyze(QMAIL.encode())
        self.assertEqual(a.category, "bounce")
        self.assertEqual([r.recipient for r in a.results], ["erin@example.org"])
        r = a.results[0]
        self.assertEqual((r.code, r.status, r.reason, r.source),
                         ("550", "5.1.1", "userunknown", "heuristic"))
        self.assertEqual(a.verp_tokens, ("h1kqqq@bounce.example.com",))
        self.assertEqual(a.original_message_id, "orig-3@example.com")

    def test_exim(self):
        """An Exim-style bounce names the recipient and a mailbox-full reason."""
        a = analyze(EXIM.encode())
        self.assertEqual([r.recipient for r in a.results], ["frank@example.org"])
        self.assertEqual((a.results[0].reason, a.results[0].status), ("mailboxfull", "5.2.2"))

    def test_other(self):
        """An ordinary message is 'other' with no results."""
        a = analyze(OTHER.encode())
        self.assertEqual((a.category, a.results, a.error), ("other", (), None))

    def test_envelope_rcpt_not_a_recipient(self):
        """The envelope recipient (our VERP address) is never taken for a failed recipient."""
        raw = QMAIL.replace("<erin@example.org>:",
                            "<erin@example.org>:\nsee h1kenv@bounce.example.com")
        a = analyze(raw.encode(), "h1kenv@bounce.example.com")
        self.assertEqual([r.recipient for r in a.results], ["erin@example.org"])

    def test_help_address_not_a_recipient(self):
        """The address after "for assistance" is the helpdesk's, however the line
        goes on to it, never a failed recipient (nor a piece of it)."""
        from hurricane.bounce.analyze import _not_rcpt_context
        for line in ("For assistance, contact: helpdesk@isp.example",
                     "For further assistance please write to helpdesk@isp.example",
                     "For assistance:\n   <helpdesk@isp.example>",
                     "For assistance" + " " * 60 + "helpdesk@isp.example"):
            self.assertEqual(_not_rcpt_context(line.lower()), ["helpdesk@isp.example"], line)
            raw = QMAIL.replace("Giving up on 192.0.2.3.\n", "Giving up on 192.0.2.3.\n"
                                + line + "\n")
            a = analyze(raw.encode())
            self.assertEqual([r.recipient for r in a.results], ["erin@example.org"], line)
