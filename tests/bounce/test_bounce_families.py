"""Message-family behaviours of the analyzer and classifier, on small hand-written messages.

Each test stands for a family of real-world bounces (an MTA's or a provider's
layout or wording); none of the texts is copied from the corpus.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from hurricane.bounce.analyze import analyze
from hurricane.bounce.classify import default_classifier, detect_command, extract_codes


def _msg(headers: str, body: str) -> bytes:
    return (headers.strip("\n") + "\n\n" + body).encode("utf-8")


class ClassifierFamilyTests(SynchronousTestCase):
    """Reason families decided by wording, status or the failed SMTP command."""

    def setUp(self):
        self.clf = default_classifier()

    def reason(self, text, code=None, status=None):
        return self.clf.classify(code, status, text).reason

    def test_user_unknown_without_command_is_filtered(self):
        """Sisimai's rule: 'user unknown' with no RCPT evidence and no 5.1.1 may be a filter."""
        self.assertEqual(self.reason("550 Unknown user a@example.org"), "filtered")
        self.assertEqual(self.reason("550 <a@example.org>: User unknown "
                                     "(in reply to RCPT TO command)"),
                         "userunknown")
        self.assertEqual(self.reason("550 5.1.1 <a@example.org>... User Unknown"), "userunknown")

    def test_rcpt_evidence_phrases(self):
        """Wordings that name the RCPT step count as the command."""
        self.assertEqual(detect_command("rejected recipient <a@b.example> "
                                        "(error following rcpt command)"), "RCPT")
        self.assertEqual(detect_command("remote server returned unknown recipient or mailbox "
                                        "unavailable"), "RCPT")

    def test_address_rejected_is_a_recipient_problem_unless_sender(self):
        """'Address rejected' alone is about the recipient; 'Sender address rejected' is not."""
        r = self.clf.classify(550, "5.1.0", "550 #5.1.0 Address rejected.")
        self.assertEqual((r.reason, r.hard, r.suppress), ("userunknown", True, True))
        r = self.clf.classify(550, "5.1.0", "550 5.1.0 <a@b.example>: Sender address rejected: "
                                            "Domain not found")
        self.assertEqual(r.reason, "rejected")
        self.assertFalse(r.suppress)

    def test_exchange_access_denied_recipient(self):
        """Exchange Online's directory-based edge blocking means the mailbox does not exist."""
        r = self.clf.classify(550, "5.4.1", "550 5.4.1 Recipient address rejected: Access denied.")
        self.assertEqual((r.reason, r.hard), ("userunknown", True))
        # ...but a client-side 'access denied' stays a block, never a suppression
        r = self.clf.classify(554, "5.7.1", "554 5.7.1 Client host rejected: Access denied")
        self.assertEqual(r.reason, "blocked")
        self.assertFalse(r.suppress)

    def test_multiline_reply_reads_whole(self):
        """Repeated '550-5.7.1' continuation prefixes do not break a phrase."""
        text = ("550-5.7.1 Messages with multiple 550-5.7.1 addresses in From: header "
                "are not accepted.")
        self.assertEqual(self.reason(text), "notcompliantrfc")

    def test_expired_only_when_no_cause_is_named(self):
        """A queue that gave up is 'expired' unless the text names the cause."""
        gave_up = "I'm not going to try again; this message has been in the queue too long."
        self.assertEqual(self.reason("Unable to contact LDAP server. (#4.4.3)" + gave_up),
                         "systemerror")
        self.assertEqual(self.reason("Sorry, I wasn't able to establish an SMTP connection. "
                                     + gave_up),
                         "networkerror")
        self.assertEqual(self.reason("Temporary resource shortage. " + gave_up), "expired")
        self.assertEqual(self.reason("550 5.4.316 Message expired, connection refused"), "expired")
        self.assertEqual(self.reason("550 5.4.312 Message expired, DNS query failed",
                                     status="5.4.312"),
                         "networkerror")

    def test_dns_failure_of_the_sender_domain_is_not_ours(self):
        """'DNS query failed' is the reporter's lookup of the recipient domain
        (networkerror); a server refusing our MAIL FROM because the sender domain's DNS
        query failed refuses the envelope sender (rejected)."""
        self.assertEqual(self.reason("451 4.4.0 DNS query failed. The error was: DNS query "
                                     "failed with error: ErrorRetry"), "networkerror")
        self.assertEqual(self.reason("SMTP error from remote mail server after MAIL "
                                     "FROM:<s@a.example> SIZE=1234: 550 Sender domain DNS "
                                     "query failed"), "rejected")

    def test_greeting_or_helo_refusal_is_blocked(self):
        """A refusal at connection or EHLO with no better wording blocks the sender."""
        r = self.clf.classify(None, None, "SMTP error from remote mail server after EHLO "
                                          "mx.example.org: 550 No")
        self.assertEqual(r.reason, "blocked")
        self.assertFalse(r.suppress)

    def test_policy_and_spam_never_suppress(self):
        """Sender-side families stay out of the suppression list."""
        for text in ("554 Mail from a@example.net rejected for policy reasons.",
                     "552-5.7.0 This message was blocked because its content presents a potential",
                     "Your email to group g@example.com was rejected due to spam classification.",
                     "You are not a member of this mailing list <l@example.org>."):
            r = self.clf.classify(None, None, text)
            self.assertFalse(r.suppress, text)
            self.assertFalse(r.hard, text)

    def test_transcript_codes_skip_successes(self):
        """In a session transcript the failure's codes win over earlier 250s."""
        self.assertEqual(extract_codes("Out: 250 2.1.5 Ok\nIn: DATA\n"
                                       "Out: 451 4.3.0 Error: queue file write error"),
                         ("451", "4.3.0"))


    def test_reporter_summary_then_the_remote_code(self):
        """A reporter's x.0.0 summary before the remote's own code of the same class: the
        remote's, as in a DSN (docs section 1); never a code of the other class."""
        self.assertEqual(extract_codes("#< #5.0.0 smtp;550 #5.1.0 Address rejected.> #SMTP#"),
                         ("550", "5.1.0"))
        self.assertEqual(extract_codes("554 5.0.0 Service unavailable; 550 5.7.1 blocked"),
                         ("554", "5.7.1"))
        self.assertEqual(extract_codes("550 5.0.0 refused (earlier: 451 4.3.0 busy)"),
                         ("550", "5.0.0"))
        self.assertEqual(extract_codes("550 5.1.1 user unknown; 554 5.0.0 failed"),
                         ("550", "5.1.1"))
        self.assertEqual(extract_codes("550 5.0.350 Remote server returned an error -> 550 "
                                       "5.7.1 Delivery not authorized, message refused"),
                         ("550", "5.7.1"))


class AnalyzerFamilyTests(SynchronousTestCase):
    """Layouts: where recipients and codes are found."""

    def test_dsn_records_without_blank_lines(self):
        """Per-recipient DSN fields run together are split at each new recipient."""
        raw = _msg("""
From: MAILER-DAEMON@relay.example.net
Subject: Undeliverable
Content-Type: multipart/report; report-type=delivery-status; boundary="B"
""", """--B
Content-Type: text/plain

Delivery failed.

--B
Content-Type: message/delivery-status

Reporting-MTA: dns; relay.example.net

Final-Recipient: rfc822; one@example.org
Action: failed
Status: 5.2.2
Diagnostic-Code: smtp; 552 5.2.2 mailbox full
Final-Recipient: rfc822; two@example.org
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 no such user
--B--
""")
        a = analyze(raw)
        self.assertEqual([(r.recipient, r.reason) for r in a.results],
                         [("one@example.org", "mailboxfull"), ("two@example.org", "userunknown")])

    def test_remote_status_beats_reporting_summary(self):
        """The remote server's own x.y.z is preferred to the reporting MTA's Status."""
        raw = _msg("""
From: MAILER-DAEMON@relay.example.net
Subject: Returned mail
Content-Type: multipart/report; report-type=delivery-status; boundary="B"
""", """--B
Content-Type: message/delivery-status

Final-Recipient: rfc822; one@example.org
Action: failed
Status: 4.4.7
Diagnostic-Code: smtp; 452 4.2.2 <one@example.org>... Mailbox Full
--B--
""")
        r = analyze(raw).results[0]
        self.assertEqual((r.status, r.reason), ("4.2.2", "mailboxfull"))

    def test_multipart_without_boundary_parameter(self):
        """A boundary written on an unfolded next line is guessed from the body."""
        raw = _msg("""
From: postmaster@sms.example.net
To: sender@example.com
Subject: Re: hello
Content-Type: multipart/mixed;
boundary="XYZ123456"
""", """--XYZ123456
Content-Type: text/plain

Error: Invalid user address
550 - Requested action not taken: no such user here
  RCPT TO: 5551234@sms.example.net
--XYZ123456--
""")
        a = analyze(raw)
        self.assertEqual(a.category, "bounce")
        self.assertEqual([r.recipient for r in a.results], ["5551234@sms.example.net"])

    def test_multipart_with_no_boundary_lines_is_read_as_text(self):
        raw = _msg("""
From: postmaster@example.net
Subject: Delivery Notification: Delivery has failed
Content-Type: multipart/report; boundary="never-used"; report-type=delivery-status
""", """Your message cannot be delivered to the following recipients:

  Recipient address: gone@example.org
  Diagnostic code: smtp; 550 5.1.1 <gone@example.org>... User unknown
""")
        a = analyze(raw)
        self.assertEqual([(r.recipient, r.reason) for r in a.results],
                         [("gone@example.org", "userunknown")])

    def test_forwarded_bounce_is_unquoted(self):
        """A user forwarding a bounce inline ('> Final-Recipient:') still yields the recipient."""
        raw = _msg("""
From: user@example.com
To: helpdesk@example.com
Subject: Fwd: Returned mail: see transcript for details
""", """Begin forwarded message:

> From: Mail Delivery Subsystem <MAILER-DAEMON@example.com>
> Subject: Returned mail: see transcript for details
>
> Final-Recipient: RFC822; lost@example.org
> Action: failed
> Status: 5.1.1
> Diagnostic-Code: SMTP; 550 5.1.1 <lost@example.org>... User unknown
""")
        a = analyze(raw)
        self.assertEqual([(r.recipient, r.reason) for r in a.results],
                         [("lost@example.org", "userunknown")])

    def test_exim_generated_from_and_sender_are_not_recipients(self):
        raw = _msg("""
From: Mail Delivery System <Mailer-Daemon@mx.example.net>
To: sender@example.com
Subject: Mail delivery failed: returning message to sender
""", """This message was created automatically by mail delivery software.

A message sent by

  <someone@example.com>

could not be delivered to one or more of its recipients. The following
address(es) failed:

  target@example.org
    (ultimately generated from alias@example.org)
    SMTP error from remote mail server after RCPT TO:<target@example.org>:
    550 5.1.1 No such user
""")
        a = analyze(raw)
        self.assertEqual([r.recipient for r in a.results], ["target@example.org"])

    def test_local_delivery_program_failure_is_mailererror(self):
        """Diagnostic-Code of type X-Unix: the local delivery program failed."""
        raw = _msg("""
From: MAILER-DAEMON@example.net
Subject: Undelivered Mail Returned to Sender
Content-Type: multipart/report; report-type=delivery-status; boundary="B"
""", """--B
Content-Type: message/delivery-status

Final-Recipient: rfc822; local@example.net
Action: failed
Status: 5.3.0
Diagnostic-Code: x-unix; delivery program exited with status 75
--B--
""")
        r = analyze(raw).results[0]
        self.assertEqual((r.reason, r.hard, r.suppress), ("mailererror", False, False))

    def test_wrapped_sns_json_notification(self):
        """An SES notification whose JSON line was wrapped with leading spaces."""
        body = ('{"notificationType":"Bounce","bounce":{"bounceType":"Permanent",'
                '"bouncedRecipients":'
                '[{"emailAddress":"nobody@exa\n mple.org","status":"5.1.1",'
                '"diagnosticCode":"smtp; 550 5.1.1 '
                'user unkn\n own"}]},"mail":{"messageId":"x"}}\n')
        raw = _msg("""
From: no-reply@sns.example.com
Subject: AWS Notification Message
""", body)
        a = analyze(raw)
        self.assertEqual([(r.recipient, r.reason) for r in a.results],
                         [("nobody@example.org", "userunknown")])

    def test_mail_client_unsubscribe_is_feedback(self):
        raw = _msg("""
From: reader@example.org
To: list-unsubscribe@example.com
Subject: unsubscribe
Auto-Submitted: auto-replied
""", "The mail client sent this email to unsubscribe from the message.\n")
        a = analyze(raw)
        self.assertEqual(a.category, "feedback")
        self.assertEqual([r.recipient for r in a.results], ["reader@example.org"])

    def test_mailing_list_manager_refusal(self):
        raw = _msg("""
From: list-admin@example.org
To: poster@example.com
Subject: You poster@example.com are not member (cats ML)
X-MLServer: fml [fml 4.0.3 release]
""", "You are not a member of this mailing list <cats@example.org>.\n")
        a = analyze(raw)
        self.assertEqual([(r.recipient, r.reason) for r in a.results],
                         [("cats@example.org", "rejected")])

    def test_mailing_list_manager_refusal_quoted_and_with_the_sender(self):
        # the list address in quotes (a gateway's re-rendering), after the sender's address
        raw = _msg("""
From: list-admin@example.org
To: poster@example.com
Subject: You poster@example.com are not member (cats ML)
X-MLServer: fml [fml 4.0.3 release]
""", "This concerns a message sent by <poster@example.com>.\n"
            "You are not a member of this mailing list 'cats@example.org'.\n")
        a = analyze(raw)
        self.assertEqual([(r.recipient, r.reason) for r in a.results],
                         [("cats@example.org", "rejected")])


class ProviderDeferralTests(SynchronousTestCase):
    """A provider's volume/complaint deferral: reputation, or a refused sender at MAIL."""

    def test_yahoo_style_deferral(self):
        clf = default_classifier()
        text = ("421 4.7.0 [TSS04] Messages from 192.0.2.9 temporarily deferred "
                "due to unexpected volume or user complaints")
        r = clf.classify(None, None, text)
        self.assertEqual((r.reason, r.permanent, r.suppress), ("badreputation", False, False))
        r = clf.classify(None, None, text + " (in reply to MAIL FROM command)")
        self.assertEqual((r.reason, r.permanent, r.suppress), ("rejected", False, False))


_REPORT_HEAD = """From: {frm}
To: sender@example.net
Subject: Delivery Status Notification
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="BB"
"""


def _report(frm: str, note: str, fields: str) -> bytes:
    body = ("--BB\nContent-Type: text/plain\n\n" + note.strip("\n") + "\n\n"
            "--BB\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.net\n\n"
            + fields.strip("\n") + "\n\n--BB--\n")
    return _msg(_REPORT_HEAD.format(frm=frm), body)


class ReporterFamilyTests(SynchronousTestCase):
    """Rules that hold only for the MTA or provider that wrote the report (rules.toml `family`)."""

    def test_family_rules_need_the_family(self):
        clf = default_classifier()
        self.assertEqual(clf.classify(542, None, "542 a@b.example Rejected", "messagelabs").reason,
                         "userunknown")
        self.assertNotEqual(clf.classify(542, None, "542 a@b.example Rejected").reason,
                            "userunknown")

    def test_messagelabs_relayed_refusal(self):
        """MessageLabs relays a recipient refusal as '<code> <address> Rejected' /
        'No such user'."""
        raw = _report("Mail Delivery System <MAILER-DAEMON@messagelabs.com>",
                      "This is the mail delivery agent at messagelabs.com.\n"
                      "I was unable to deliver your message to the following addresses:\n\n"
                      "u@dest.example\n\nReason: 550 u@dest.example... No such user\n",
                      "Final-Recipient: rfc822; u@dest.example\nAction: failed\nStatus: 5.0.0\n"
                      "Diagnostic-Code: smtp; 550 u@dest.example... No such user\n")
        r = analyze(raw).results[0]
        self.assertEqual((r.recipient, r.reason, r.hard), ("u@dest.example", "userunknown", True))

    def test_ezweb_headline_states_the_cause(self):
        """EZweb says once, above the recipient lines, why they failed."""
        raw = _report("Mail Administrator <Postmaster@ezweb.ne.jp>",
                      "The user(s) account is disabled.\n\n"
                      "<u@ezweb.ne.jp>: 550 user unknown (in reply to RCPT TO command)\n",
                      "Final-Recipient: rfc822; u@ezweb.ne.jp\nAction: failed\nStatus: 5.0.0\n")
        r = analyze(raw).results[0]
        self.assertEqual((r.reason, r.hard), ("suspend", False))

    def test_status_gloss_mailbox_disabled(self):
        """A Status field glossed '(mailbox disabled, ...)' makes the mailbox suspended."""
        raw = _report("postmaster@mta.example.net", "Delivery failed for <u@dest.example>.\n",
                      "Final-Recipient: rfc822;u@dest.example\nAction: failed\n"
                      "Status: 5.2.1 (mailbox disabled, not accepting messages)\n"
                      "Diagnostic-Code: smtp;550 5.2.1 <u@dest.example>... User Unknown\n")
        self.assertEqual(analyze(raw).results[0].reason, "suspend")

    def test_boilerplate_only_report_is_undefined(self):
        """A report that names no reply, no status and no cause: undefined, not onhold."""
        raw = _report("MAILER-DAEMON@mta.example.net (Mail Delivery System)",
                      "This is the mail system at host mta.example.net.\n\n"
                      "Your message could not be delivered to one or more recipients.\n",
                      "X-Postfix-Queue-ID: ABC123\n")
        raw = raw.replace(b"--BB--\n", b"--BB\nContent-Type: text/rfc822-headers\n\n"
                          b"From: sender@example.net\nTo: u@dest.example\nSubject: hi\n\n--BB--\n")
        a = analyze(raw)
        self.assertEqual(a.category, "bounce")
        self.assertEqual((a.results[0].recipient, a.results[0].reason),
                         ("u@dest.example", "undefined"))

    def test_provider_codes(self):
        """Provider code tables: Orange/La Poste _630, Spectrum AUP 13xx, Mimecast signatures,
        Cloudmark (BL)."""
        clf = default_classifier()
        self.assertEqual(clf.classify(554, "5.7.1", "554 5.7.1 <h[192.0.2.1]:1>: "
                                      "Client host rejected: lpn LPN000_630").reason,
                         "policyviolation")
        self.assertEqual(clf.classify(550, "5.1.0", "550 5.1.0 <a@b.example> sender rejected. "
                                      "AUP#In-1310").reason,
                         "toomanyconn")
        self.assertEqual(clf.classify(554, None, "554 email rejected due to security policies - "
                                      "MCSpamSignature.x").reason,
                         "virusdetected")
        self.assertEqual(clf.classify(554, None, "554 IP=192.0.2.1 - A problem occurred. "
                                      "(Ask your postmaster for help.) (BL)").reason,
                         "blocked")
        self.assertEqual(clf.classify(554, "5.7.9", "554 5.7.9 Header error").reason,
                         "policyviolation")
