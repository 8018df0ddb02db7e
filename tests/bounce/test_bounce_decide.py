"""Table tests of the decision model, taken from docs/bounce-reasons.md.

Each confusable pair of section 4 is tested both ways; the evidence rows of
section 1 (the stage) and the precedence steps of section 2 (a specific
status against the diagnostic type, the stage against the words, onhold only
without evidence) each have their own table.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from hurricane.bounce.classify import default_classifier
from hurricane.bounce.evidence import Evidence, Stage, find_stage, is_catch_all

# (code, status, text, stage, diagnostic type) -> reason
Row = tuple[str | None, str | None, str, str | None, str | None, str]

#: docs/bounce-reasons.md section 4: (pair, row for A, row for B).
PAIRS: list[tuple[str, Row, Row]] = [
    ("userunknown / filtered (stage)",
     ("550", None, "550 5.1.1 <a@b.example>: user unknown", "rcpt", None, "userunknown"),
     ("550", None, "550 user unknown", "data", None, "filtered")),
    ("userunknown / filtered (no stage: a specific status decides)",
     ("550", "5.1.1", "550 user unknown", None, None, "userunknown"),
     ("550", None, "550 user unknown", None, None, "filtered")),
    ("userunknown / rejected",
     ("550", None, "550 user unknown", "rcpt", None, "userunknown"),
     ("550", None, "550 user unknown", "mail", None, "rejected")),
    ("userunknown / rejected (the words say whose, at any stage)",
     ("550", None, "550 recipient unknown", "rcpt", None, "userunknown"),
     ("550", None, "550 sender unknown", None, None, "rejected")),
    ("hostunknown / userunknown (a specific status against generic words)",
     ("550", None, "550 5.1.2 <b@nx.example>: Recipient domain unknown", None, None,
      "hostunknown"),
     ("550", None, "550 5.1.0 <a@b.example>: user unknown", None, None, "userunknown")),
    ("blocked / rejected (a causeless refusal: the stage says whose)",
     ("550", None, "550 access denied", "conn", None, "blocked"),
     ("550", None, "550 access denied", "mail", None, "rejected")),
    ("blocked / rejected (the words say whose)",
     ("554", None, "554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using "
      "zen.spamhaus.org", "rcpt", None, "blocked"),
     ("550", None, "550 5.1.8 Sender address rejected: Domain not found", "rcpt", None,
      "rejected")),
    ("blocked / spamdetected",
     ("554", None, "554 5.7.1 IP address blocked", "conn", None, "blocked"),
     ("550", None, "550 5.7.1 Message rejected as spam by Content Filtering", "data", None,
      "spamdetected")),
    ("blocked / badreputation",
     ("554", None, "554 5.7.1 IP address blocked", "conn", None, "blocked"),
     ("550", None, "550 5.7.1 Your IP address has a poor reputation", "conn", None,
      "badreputation")),
    ("policyviolation / spamdetected",
     ("552", None, "552 5.7.0 This message was blocked because its content presents a potential "
      "security issue: attachment type not allowed", "data", None, "policyviolation"),
     ("550", None, "550 5.7.1 message content rejected, spam detected", "data", None,
      "spamdetected")),
    ("securityerror / authfailure",
     ("530", None, "530 5.7.0 Authentication required", "mail", None, "securityerror"),
     ("550", None, "550 5.7.26 This message fails to pass DMARC checks", "data", None,
      "authfailure")),
    ("securityerror / spamdetected (a catch-all 5.7.1 yields to spam words)",
     ("550", None, "550 5.7.1 Delivery not authorized, message refused", "data", None,
      "securityerror"),
     ("550", "5.7.1", "550 5.7.1 message looks like spam", "data", None, "spamdetected")),
    ("expired / networkerror",
     ("421", None, "421 4.4.7 retry timeout exceeded", None, None, "expired"),
     (None, None, "connect to mx.example.org[192.0.2.1]:25: No route to host", None, None,
      "networkerror")),
    ("expired / systemerror",
     ("421", None, "421 4.4.7 retry timeout exceeded", None, None, "expired"),
     ("451", None, "451 4.3.0 internal server error", "data", None, "systemerror")),
    ("notaccept / hostunknown",
     ("556", None, "556 5.1.10 domain does not accept mail", None, None, "notaccept"),
     ("550", None, "550 5.1.2 host unknown", None, None, "hostunknown")),
    ("mailboxfull / exceedlimit (quota words under 5.2.3)",
     ("552", None, "552 5.2.3 mailbox quota exceeded", "data", None, "mailboxfull"),
     ("552", None, "552 5.2.3 message exceeds the limit for this user", "data", None,
      "exceedlimit")),
    ("mailboxfull / mesgtoobig",
     ("452", None, "452 4.2.2 mailbox full", "rcpt", None, "mailboxfull"),
     ("552", None, "552 5.3.4 message too big", "data", None, "mesgtoobig")),
    ("exceedlimit / mesgtoobig",
     ("552", None, "552 5.2.3 message exceeds the limit for this user", "data", None,
      "exceedlimit"),
     ("552", None, "552 5.3.4 message size exceeds fixed maximum message size", "mail", None,
      "mesgtoobig")),
    ("toomanyconn / speeding",
     ("421", None, "421 4.7.0 too many connections from your host", "conn", None,
      "toomanyconn"),
     ("451", None, "451 4.7.1 you are sending too fast, slow down", "rcpt", None, "speeding")),
    ("blocked / networkerror (an SMTP refusal vs a TCP connection refused)",
     ("554", None, "554 Connection refused", "conn", None, "blocked"),
     (None, None, "Deferred: Connection refused by mx.example.org", None, None,
      "networkerror")),
    ("expired / networkerror (a TCP refusal under a temporary status: the reporter gave up)",
     (None, "4.4.1", "connect to 127.0.0.1[127.0.0.1]:51195: Connection refused", "conn",
      "x-postfix", "expired"),
     (None, None, "connect to mx.example.org[192.0.2.1]:25: Connection refused", "conn",
      None, "networkerror")),
    ("hostunknown / userunknown (Exim's Unrouteable address: in a report vs at RCPT)",
     (None, "5.0.0", "someone@nxdomain.example.org\n    Unrouteable address", None, None,
      "hostunknown"),
     ("550", None, "SMTP error from remote mail server after RCPT TO:<a@b.example>: "
      "550 Unrouteable address", None, None, "userunknown")),
    ("mesgtoobig / mailboxfull (Postfix's client: the server's SIZE limit)",
     (None, "5.3.4", "<a@b.example>: message size 2741 exceeds size limit 1024 of server "
      "mx.b.example[192.0.2.1]", None, "x-postfix", "mesgtoobig"),
     (None, "5.2.2", "<a@b.example>: mailbox size exceeds size limit", None, None,
      "mailboxfull")),
    ("blocked / networkerror (network-failure words at the connection: the code is the "
     "reporter's, not a server's refusal)",
     ("550", None, "SMTP error from remote mail server after initial connection: 550 Rejected",
      None, None, "blocked"),
     ("451", None, "SMTP error from remote mail server after initial connection: 451 4.4.0 "
      "Failed to connect. Winsock error code: 10060", None, None, "networkerror")),
    ("blocked / notaccept (Exim's null-MX words at the connection)",
     ("554", None, "host mx.b.example [192.0.2.1]: SMTP error from remote mail server after "
      "initial connection: 554 go away", None, None, "blocked"),
     # (at `conn`, the stage its words give: notaccept.text decides before the stage
     # default would)
     (None, None, "a@b.example: an MX or SRV record indicated no SMTP service", "conn", None,
      "notaccept")),
    ("expired / networkerror (Sendmail's queue return after a TCP refusal)",
     (None, None, "<a@b.example>... Deferred: Connection refused by mx.b.example.\n"
      "Message could not be delivered for 8 hours\nMessage will be deleted from queue",
      None, None, "expired"),
     (None, None, "<a@b.example>... Deferred: Connection refused by mx.b.example.", None, None,
      "networkerror")),
    ("expired / a remote's cause (Sendmail's queue return names the reply it kept getting)",
     (None, None, "<<< 421\n<a@b.example>... Deferred: 421\nMessage could not be delivered "
      "for 8 hours\nMessage will be deleted from queue", None, None, "expired"),
     (None, None, "<<< 452 4.4.5 Insufficient disk space; try again later\nMessage could not "
      "be delivered for 8 hours\nMessage will be deleted from queue", None, None,
      "systemfull")),
    ("networkerror / systemerror (a hop count exceeded vs a loop in a system's own "
     "configuration)",
     (None, None, "Unable to deliver message to the following recipients, because the message "
      "was forwarded more than the maximum allowed times. This could indicate a mail loop.",
      None, None, "networkerror"),
     (None, None, "aliasing/forwarding loop broken", None, None, "systemerror")),
    ("securityerror / norelaying (a relay refused until the client authenticates)",
     ("550", None, "550-Please turn on SMTP Authentication in your mail client. 550-mx.b.example "
      "[192.0.2.1]:2222 is not permitted to 550 relay through this server without "
      "authentication.", None, None, "securityerror"),
     ("554", None, "554 5.7.1 <a@b.example>: Relay access denied", None, None, "norelaying")),
    ("virusdetected / spamdetected (a product name or a scan banner is not a verdict)",
     ("554", None, "554 5.7.1 Virus detected: Eicar-Test-Signature", "data", None,
      "virusdetected"),
     (None, None, "Your message to: a@b.example was blocked by our Spam & Virus Firewall. "
      "Reason: unsolicited bulk e-mail", None, None, "spamdetected")),
    ("virusdetected / a scan banner (a verdict's 'rejected for virus', 'because of virus' vs "
     "a banner's 'checked for viruses', 'free of viruses')",
     ("554", None, "554 5.7.1 Message rejected for virus: Eicar-Test-Signature", "data", None,
      "virusdetected"),
     ("550", None, "550 5.7.1 Message rejected. This message was checked for viruses by ClamAV",
      "data", None, "spamdetected")),
    ("virusdetected / userunknown (a verdict after 'of' vs a banner after the reply)",
     ("550", None, "550 Message rejected because of virus", "data", None, "virusdetected"),
     ("550", None, "550 5.1.1 user unknown. This message is free of viruses", "rcpt", None,
      "userunknown")),
    ("expired / onhold (a retry period vs a count of recipients or a promise that names none)",
     (None, None, "Your message could not be delivered for 3 days, 20 hours, 0 minutes. It will "
      "be retried until it is 5 days old", None, None, "expired"),
     (None, None, "Your message could not be delivered for 2 recipients:\na@b.example\n"
      "c@d.example", None, None, "onhold")),
    ("expired / onhold (a delay notice's 'will continue trying for' vs any 'will continue to "
     "try')",
     (None, None, "The mail system will continue to try to deliver your message for an "
      "additional 3 days.", None, None, "expired"),
     ("550", None, "550 rejected. We will continue to try to improve our service.", None, None,
      "onhold")),
    ("networkerror / blocked (a TCP refusal for an address whose local part starts with "
     "three digits and a dash, '<550-555-1234@...>', vs a server's reply code)",
     (None, None, "<550-555-1234@txt.b.example>: connect to mx.b.example[192.0.2.1]:25: "
      "Connection refused", None, None, "networkerror"),
     ("554", None, "554 Connection refused", "conn", None, "blocked")),
    ("blocked / onhold (at HELO: a reply code vs an address starting with one, '550-12@...')",
     (None, None, "SMTP error from remote mail server after EHLO a.example: 550-Go away", "helo",
      None, "blocked"),
     (None, None, "550-12@sms.b.example", "helo", None, "onhold")),
    ("blocked / onhold ('Unable to connect' in a server's reply at the connection vs in "
     "Exchange's own report of its failed attempt)",
     (None, None, "SMTP error from remote mail server after initial connection: 554 Unable to "
      "connect", "conn", None, "blocked"),
     ("451", None, "451 4.4.0 Primary target IP address responded with: \"421 4.4.0 Unable to "
      "connect.\" Attempted failover to alternate host, but that did not succeed.", "conn", None,
      "onhold")),
    ("blocked / onhold (a reply code at the connection vs the port of the address connected "
     "to, '[192.0.2.1]:465', which no server said)",
     (None, None, "mx.b.example[192.0.2.1] answered the initial greeting with 554 and nothing "
      "more", "conn", None, "blocked"),
     (None, None, "Cannot start TLS: handshake failure with mx.b.example[192.0.2.1]:465 (in "
      "reply to initial greeting)", "conn", None, "onhold")),
    ("mailererror / userunknown (x-unix)",
     (None, "5.0.0", "procmail: Error while writing to /var/mail/x", None, "x-unix",
      "mailererror"),
     (None, "5.1.1", "user unknown", None, "x-unix", "userunknown")),
]

#: docs step 4: the diagnostic type is not a cause.
X_UNIX: list[Row] = [
    (None, "5.1.1", "<a@b.example>: user unknown", None, "x-unix", "userunknown"),
    # the local delivery program found no such mailbox: no SMTP step after it
    (None, "5.0.0", "<a@b.example>: user unknown", None, "x-unix", "userunknown"),
    (None, None, "unknown user: \"a\"", None, "x-unix", "userunknown"),
    (None, None, "unknown user: \"a\"", None, None, "filtered"),
    (None, "5.1.6", "the mailbox has moved to c@d.example", None, "x-unix", "hasmoved"),
    (None, "5.7.1", "message rejected as spam", None, "x-unix", "spamdetected"),
    (None, "4.3.0", "temporary failure", None, "x-unix", "mailererror"),
    (None, "5.3.0", "Disk quota exceeded", None, "x-unix", "mailboxfull"),
    # Postfix words a program's exit status from sysexits.h (EX_SOFTWARE, EX_CONFIG):
    # the program failed, whatever the words say of "software" or "configuration"
    (None, "5.3.0", "internal software error", None, "x-unix", "mailererror"),
    (None, "5.3.5", "local configuration error", None, "x-unix", "systemerror"),
    (None, "5.3.0", "local configuration error", None, "x-unix", "mailererror"),
]

#: docs step 5: stage defaults only settle what the words cannot.
STAGE_DEFAULTS: list[Row] = [
    ("550", None, "550 Rejected", "helo", None, "blocked"),
    ("550", None, "550 5.1.7 No such domain", "mail", None, "rejected"),
    ("552", None, "552 Message size exceeds fixed limit", "mail", None, "mesgtoobig"),
    ("552", None, "552 5.2.3 Message size exceeds fixed maximum message size (10485760)", "mail",
     None, "exceedlimit"),
]

#: docs step 6: onhold only without evidence.
FALLBACKS: list[Row] = [
    # a gateway that relays only for the addresses registered to use it (section 3,
    # rejected): the words name the cause whatever the catch-all status,
    # never onhold
    ("550", "5.0.0", "550 'a@b.example' is not a registered gateway user", None, None,
     "rejected"),
    ("550", "5.2.2", "550 something odd", None, None, "mailboxfull"),
    ("550", None, "550 the moon is made of cheese", None, None, "onhold"),
    (None, None, "", None, None, "undefined"),
    ("550", "2.0.0", "250 ok", None, None, "delivered"),
]


def _decide(row: Row) -> tuple[str, str | None, str | None]:
    code, status, text, stage, dtype, _want = row
    rc = default_classifier().classify(code, status, text, stage=Stage(stage) if stage else None,
                                       diagnostic_type=dtype)
    return rc.reason, rc.decided_by, rc.runner_up


class ConfusablePairTests(SynchronousTestCase):
    """Every confusable pair of docs/bounce-reasons.md section 4, both ways."""

    def test_pairs_both_ways(self) -> None:
        """Each row of a pair gets its own side's reason."""
        for pair, a, b in PAIRS:
            for row in (a, b):
                self.assertEqual(_decide(row)[0], row[-1], "%s: %r" % (pair, row))


#: docs section 2 step 3: the reporter's own sentences are not the remote's words.
REPORTER_WORDS: list[Row] = [
    # Sendmail ends the transcript of a refused DATA with its own "554 5.0.0 Service
    # unavailable": the remote's reply before it decides
    ("554", None, "(reason: 554 5.7.9 Header error)\n... while talking to mx.b.example.:\n"
     ">>> DATA\n<<< 554 5.7.9 Header error\n554 5.0.0 Service unavailable", None, None,
     "policyviolation"),
    ("552", None, ">>> DATA\n<<< 552 5.6.0 Headers too large (3 max)\n554 5.0.0 Service "
     "unavailable", None, None, "contenterror"),
    # a remote's own "service unavailable" is still its words
    ("554", None, "554 Service currently unavailable", None, None, "systemerror"),
    # Exchange quoting the remote: the reply inside its quotes reads as the reply
    ("554", None, "Remote Server returned '554 5.7.9 Header error'", None, None,
     "policyviolation"),
    # delay notices and expiry notices in the reporters' words
    (None, None, "This is only a notification about a delay in the delivery of your message. "
     "The server will continue trying for up to 21 hours.", None, None, "expired"),
    (None, None, "Unable to deliver message to the following recipients, due to being unable "
     "to connect successfully to the destination mail server.", None, None, "expired"),
    # amavis's boilerplate and scan banners name no virus
    (None, None, "was considered unsolicited bulk e-mail (UBE). We do try to minimize "
     "backscatter for more prominent cases of UBE and for infected mail", None, None,
     "spamdetected"),
    (None, None, "550 user unknown. This email has been scanned for all viruses", "rcpt", None,
     "userunknown"),
]

#: docs section 3 (virusdetected): a scan banner after the reply names no virus, not even as
#: the runner-up; a verdict in the same words does.
BANNERS: list[Row] = [
    ("452", None, "452 4.2.2 Mailbox full. This email has been scanned for viruses and malware",
     None, None, "mailboxfull"),
    ("552", None, "552 Message size exceeds fixed maximum message size. Checked for viruses by "
     "ClamAV", None, None, "mesgtoobig"),
    ("550", "5.2.1", "550 5.2.1 Mailbox disabled. Scanned for spam and viruses by Proofpoint "
     "Essentials", None, None, "suspend"),
]
VERDICTS: list[Row] = [
    ("554", None, "554 5.7.1 Message contains viruses and malware", "data", None,
     "virusdetected"),
    ("554", None, "554 5.7.1 Message rejected for virus: Eicar-Test-Signature", "data", None,
     "virusdetected"),
    ("554", None, "554 rejected for infected attachment", "data", None, "virusdetected"),
]


#: docs section 3: a reporter's own sentence that names the cause, read when its
#: delivery-status part is missing.
TEMPLATES: list[Row] = [
    (None, None, "Based on the email preferences of the person you're trying to email, this "
     "message could not be delivered.", None, None, "filtered"),
    ("550", "5.1.1", "550 5.1.1 RCP-P1 Recipient address does not exist", None, None,
     "userunknown"),
    (None, None, "Recipient address: a@b.example\nReason: Illegal host/domain name found", None,
     None, "hostunknown"),
]

#: docs section 1: a report a person quoted reads as the report.
QUOTED: list[Row] = [
    (None, None, "> <a@b.example>: Name service error for domain b.example: Host not\n"
     "> found, try again", None, None, "networkerror"),
    ("550", None, "> a@b.example\n> SMTP error from remote mail server after end of data:\n"
     "> 550 5.2.0 <s@c.example> From:\n> Domain is invalid.", None, None, "rejected"),
    # a transcript's ">>>" is not a quote mark
    ("550", None, ">>> RCPT To:<a@b.example>\n<<< 550 No such user here", None, None,
     "userunknown"),
]


class PrecedenceTests(SynchronousTestCase):
    """The precedence steps of section 2."""

    def test_x_unix_is_not_a_cause(self) -> None:
        """x-unix yields to a specific status or to words that name a cause (step 4)."""
        for row in X_UNIX:
            self.assertEqual(_decide(row)[0], row[-1], repr(row))

    def test_stage_defaults_come_after_the_words(self) -> None:
        """A refusal at MAIL or HELO is rejected or blocked only when no words name a cause."""
        for row in STAGE_DEFAULTS:
            self.assertEqual(_decide(row)[0], row[-1], repr(row))

    def test_fallbacks(self) -> None:
        """onhold only when nothing names a cause; undefined when there is nothing at all."""
        for row in FALLBACKS:
            self.assertEqual(_decide(row)[0], row[-1], repr(row))

    def test_reporter_words_are_not_causes(self) -> None:
        """The reporter's own summary lines yield to the remote's reply (step 3)."""
        for row in REPORTER_WORDS:
            self.assertEqual(_decide(row)[0], row[-1], repr(row))

    def test_scan_banners_are_not_verdicts(self) -> None:
        """A banner's "scanned for viruses and malware" is no candidate; a verdict decides."""
        for row in BANNERS:
            reason, _rule, runner_up = _decide(row)
            self.assertEqual(reason, row[-1], repr(row))
            self.assertNotEqual(runner_up, "virusdetected", repr(row))
        for row in VERDICTS:
            self.assertEqual(_decide(row)[0], row[-1], repr(row))

    def test_reporter_templates(self) -> None:
        """A reporter's fixed sentence that names a cause decides without its DSN part."""
        for row in TEMPLATES:
            self.assertEqual(_decide(row)[0], row[-1], repr(row))

    def test_quoted_report(self) -> None:
        """Quote marks before every line do not break the report's phrases (section 1)."""
        for row in QUOTED:
            self.assertEqual(_decide(row)[0], row[-1], repr(row))

    def test_consequences_are_not_causes(self) -> None:
        """DATA's "no valid recipients" (every RCPT was refused) says that the recipients
        failed, not why: the refusal before it decides, and alone it names no cause."""
        self.assertEqual(_decide(("450", "4.7.1", "<<< 450 4.7.1 <c.example[192.0.2.56]>: "
                                  "Client host rejected: may not be mail exchanger\n"
                                  "<<< 554 5.5.1 Error: no valid recipients", "rcpt", None,
                                  ""))[0], "blocked")
        self.assertEqual(_decide(("554", None, "554 Error: no valid recipients", "rcpt", None,
                                  ""))[0], "onhold")

    def test_explanation(self) -> None:
        """A decision names the deciding rule and the runner-up it beat."""
        reason, by, runner = _decide(("550", None, "550 access denied", "mail", None, "rejected"))
        self.assertEqual((reason, by, runner), ("rejected", "rejected.refused-at-mail", "blocked"))
        reason, by, runner = _decide(("550", "5.2.2", "550 something odd", None, None, ""))
        self.assertEqual((reason, by), ("mailboxfull", "mailboxfull.status"))

    def test_decide_takes_evidence(self) -> None:
        """decide() answers from an Evidence, the same as classify() on the same facts."""
        clf = default_classifier()
        ev = Evidence(text="550 user unknown", code="550", stage=Stage.data)
        self.assertEqual(clf.decide(ev).reason, "filtered")
        self.assertEqual(clf.decide(ev).stage, "data")


class StageTests(SynchronousTestCase):
    """The stage read from the words of each MTA (docs section 1)."""

    def test_phrases(self) -> None:
        """Postfix, Exim, qmail and Courier phrasings give their stage."""
        table = [
            ("550 5.1.1 unknown (in reply to RCPT TO command)", Stage.rcpt),
            ("550 spam (in reply to end of DATA command)", Stage.data),
            ("550 no (in reply to MAIL FROM command)", Stage.mail),
            ("SMTP error from remote mail server after RCPT TO:<a@b.example>: 550 no", Stage.rcpt),
            ("SMTP error from remote mail server after pipelined MAIL FROM:<> SIZE=1: 550 no",
             Stage.mail),
            ("SMTP error from remote mail server after end of data: 550 no", Stage.data),
            ("SMTP error from remote mail server after initial connection: 554 go away",
             Stage.conn),
            ("SMTP error from remote mail server after EHLO mx.example: 550 no", Stage.helo),
            ("192.0.2.1 does not like recipient. Remote host said: 550 no", Stage.rcpt),
            ("192.0.2.1 failed after I sent the message. Remote host said: 554 spam", Stage.data),
            ("Connected to 192.0.2.1 but sender was rejected.", Stage.mail),
            ("Connected to 192.0.2.1 but my name was rejected.", Stage.helo),
            ("host mx.example[192.0.2.1] refused to talk to me: 554 go away", Stage.conn),
            ("mx.example[192.0.2.1] did not like our final DATA: 554 rejected", Stage.data),
            ("SMTP error from remote server for TEXT command, host: mx.example reason: 550",
             Stage.data),
            ("Error while performing the HELO handshake", Stage.helo),
            ("lost connection with mx.example[192.0.2.1] while sending RCPT TO", Stage.rcpt),
            ("lost connection with mx.example[192.0.2.1] while receiving the initial server "
             "greeting", Stage.conn),
            ("connect to mx.example[192.0.2.1]:25: Connection timed out", Stage.conn),
            # Postfix smtpd's restriction replies name the step whose check failed
            ("550 5.1.1 <a@b.example>: Recipient address rejected: User unknown", None),
            ("554 5.7.1 <a@b.example>: Relay access denied", Stage.rcpt),
            ("554 5.7.1 <mx.example[192.0.2.1]>: Client host rejected: blocked using "
             "zen.example", Stage.conn),
            ("501 5.1.8 Sender address rejected", Stage.mail),
            ("roland@b.example Error Type: SMTP Remote server (192.0.2.1) issued an error. "
             "hMailServer sent: RCPT TO:<roland@b.example> Remote server replied: 550 5.1.1",
             Stage.rcpt),
            # no server answered: the connection attempt or the DNS lookup failed
            ("Could not initiate SMTP conversation with any hosts: [b.example (1): "
             "Connection timed out]", Stage.conn),
            ("Deferred: Connection refused by mx.example.", Stage.conn),
            ("unable to connect to remote server [192.0.2.1:25]: Operation timed out",
             Stage.conn),
            ("Host or domain name not found. Name service error for name=b.example type=A: "
             "Host not found", Stage.conn),
            ("550 5.1.2 <a@b.example>... Host unknown (Name server: b.example: host not found)",
             Stage.conn),
            ("DNS Error: 1 DNS type 'mx' lookup of b.example responded with code NXDOMAIN",
             Stage.conn),
            ("Sorry, I couldn't find a mail exchanger or IP address. (#5.4.4)", Stage.conn),
            # Exchange's DNS and Winsock failures, Exim's null MX: no server refused us
            ("451 4.4.0 DNS query failed. The error was: DNS query failed with error: "
             "ErrorRetry", Stage.conn),
            ("451 4.4.0 Failed to connect. Winsock error code: 10060, Win32 error code: 10060",
             Stage.conn),
            ("a@b.example: an MX or SRV record indicated no SMTP service", Stage.conn),
            # ... but quoted in a server's reply after the command it answered, the
            # command names the step
            ("SMTP error from remote mail server after MAIL FROM:<s@a.example> SIZE=1234: 550 "
             "5.7.1 Sender domain DNS query failed", Stage.mail),
            ("SMTP error from remote mail server after RCPT TO:<a@b.example>: 550 5.1.1 User "
             "unknown (callout failed: Winsock error 10060)", Stage.rcpt),
            ("SMTP error from remote mail server after end of data: 550 5.7.1 the sender "
             "domain indicated no SMTP service", Stage.data),
            ("451 4.7.1 Sender domain DNS query failed (in reply to RCPT TO command)",
             Stage.rcpt),
            # the original's text naming a step later than the failure does not win over
            # the last-named step of the failure itself
            ("550 5.7.1 <a@b.example>: Relay access denied (in reply to end of DATA command)",
             Stage.data),
            ("RCPT TO: a@b.example", None),
            ("550 5.1.2 domain does not exist", None),
            ("", None),
        ]
        for text, want in table:
            self.assertEqual(find_stage(text), want, text)

    def test_more_phrasings_of_the_command(self) -> None:
        """The command named without Postfix's or Exim's exact words."""
        for text, want in (("550 5.1.1 user unknown (RCPT TO command failed)", Stage.rcpt),
                           ("Rejected at RCPT TO: 550 user unknown", Stage.rcpt),
                           ("Error during RCPT TO: 550 no such user", Stage.rcpt),
                           ("550 user unknown [RCPT TO]", Stage.rcpt),
                           ("reply to RCPT TO: 550 no such user", Stage.rcpt),
                           ("response to MAIL FROM: 553 sender rejected", Stage.mail),
                           ("Please reply to the data team", None),
                           ("Reply-To: a@b.example", None)):
            self.assertEqual(find_stage(text), want, text)

    def test_step_tags_and_phase_names(self) -> None:
        """Families that name the step by a tag or a phase name, not by "in reply to"."""
        table: list[tuple[str, Stage | None]] = [
            # Google (Gmail, Workspace): the step its session had reached
            ("Technical details of temporary failure: Connection was dropped by remote host "
             "(SENT_HELO)", Stage.helo),
            ("The response was: Unspecified Error (SENT_SECOND_EHLO): Smtp server does not "
             "advertise AUTH capability", Stage.helo),
            ("The response from the remote server was: 550 5.1.1 no such user (SENT_RCPT)",
             Stage.rcpt),
            ("The response was: 421 4.4.2 Timeout (SENT_MAIL)", Stage.mail),
            ("The response was: 554 5.7.1 rejected as spam (SENT_MESSAGE)", Stage.data),
            ("The response was: 451 try again (SENT_DATA)", Stage.data),
            ("SENT_RCPT without its parentheses", None),
            ("(sent_rcpts)", None),
            # Sendmail's phase names ("timeout waiting for input from H during client X")
            ("451 4.4.1 timeout waiting for input from mx.b.example. during client RCPT",
             Stage.rcpt),
            ("timeout waiting for input from mx.b.example. during client greeting", Stage.conn),
            ("timeout waiting for input from mx.b.example. during client EHLO", Stage.helo),
            ("timeout waiting for input from mx.b.example. during client MAIL", Stage.mail),
            ("timeout waiting for input from mx.b.example. during client DATA status",
             Stage.data),
            ("the client mailbox is full", None),
            # BDAT (RFC 3030 CHUNKING) carries the message as DATA does
            ("550 5.7.1 rejected (in reply to BDAT command)", Stage.data),
            ("SMTP error from remote mail server after pipelined BDAT 2048 LAST: 554 spam",
             Stage.data),
            (">>> BDAT 2048 LAST\n<<< 554 5.7.1 rejected\n", Stage.data),
            ("hMailServer sent: BDAT 2048 LAST Remote server replied: 554 rejected", Stage.data),
            # Exim's timeout while writing the message
            ("SMTP timeout after sending data block (65536 bytes written)", Stage.data),
            # hMailServer naming the greeting it sent
            ("hMailServer sent: EHLO mail.a.example Remote server replied: 554 go away",
             Stage.helo),
            ("hMailServer sent: HELO mail.a.example Remote server replied: 554 go away",
             Stage.helo),
            # Yahoo tags the reply with the step: "[RCPT_TO]", "[MAIL_FROM]", "[BODY]"
            ("Remote host said: 554 delivery error: dd This user doesn't have a yahoo.com "
             "account (a@yahoo.example) [0] - mta1.mail.yahoo.example [BODY]", Stage.data),
            ("Remote host said: 550 5.1.1 <a@b.example>... User Unknown [RCPT_TO]", Stage.rcpt),
            ("the body of the message [bodies]", None),
        ]
        for text, want in table:
            self.assertEqual(find_stage(text), want, text)

    def test_step_tags_decide_userunknown_against_filtered(self) -> None:
        """The recovered step settles unknown-user words (docs section 4, both ways)."""
        classify = default_classifier().classify
        words = "550 no such user here"
        self.assertEqual(classify("550", None, words + " (SENT_RCPT)").reason, "userunknown")
        self.assertEqual(classify("550", None, words + " (SENT_MESSAGE)").reason, "filtered")
        self.assertEqual(classify("550", None, words + " during client RCPT").reason,
                         "userunknown")
        self.assertEqual(classify("550", None, words + " [BODY]").reason, "filtered")

    def test_transcript(self) -> None:
        """A session transcript: the command that got the first refusal."""
        self.assertEqual(find_stage(">>> MAIL From:<a@b.example>\n<<< 250 ok\n"
                                    ">>> RCPT To:<c@d.example>\n<<< 550 5.1.1 unknown\n"),
                         Stage.rcpt)
        self.assertEqual(find_stage(">>> DATA\n<<< 550 Unknown user c@d.example\n"
                                    "554 5.0.0 Service unavailable\n"), Stage.data)

    def test_postfix_server_transcript(self) -> None:
        """Postfix's own "In:"/"Out:" session transcript reads like ">>>"/"<<<"."""
        self.assertEqual(find_stage(" In:  RCPT TO:<a@b.example>\n Out: 250 2.1.5 Ok\n"
                                    " In:  DATA\n Out: 354 End data\n"
                                    " Out: 451 4.3.0 Error: queue file write error\n"
                                    " In:  QUIT\n Out: 221 2.0.0 Bye\n"), Stage.data)

    def test_arrow_transcript_after_time_stamps(self) -> None:
        """MDaemon-style "--> RCPT To:" / "<-- 550" lines after a time stamp read like
        ">>>"/"<<<"."""
        head = (" Mon 2005-01-03 10:00:01: --> MAIL From:<a@b.example>\n"
                " Mon 2005-01-03 10:00:01: <-- 250 2.1.0 Sender OK\n")
        self.assertEqual(find_stage(head + " Mon 2005-01-03 10:00:01: --> RCPT To:<c@d.example>\n"
                                    " Mon 2005-01-03 10:00:01: <-- 550 5.1.1 unknown\n"),
                         Stage.rcpt)
        self.assertEqual(find_stage(head + " Mon 2005-01-03 10:00:02: --> DATA\n"
                                    " Mon 2005-01-03 10:00:02: <-- 554 5.7.1 refused\n"),
                         Stage.data)

    def test_pipelined_transcript(self) -> None:
        """With pipelining, a later '503 need RCPT' shows the refusal answered RCPT."""
        self.assertEqual(find_stage(">>> DATA\n<<< 550 5.1.1 <c@d.example>... User Unknown\n"
                                    "550 5.1.1 <c@d.example>... User unknown\n"
                                    "<<< 503 5.0.0 Need RCPT (recipient)\n"), Stage.rcpt)
        self.assertEqual(find_stage(">>> DATA\n<<< 550 <c@d.example>: User unknown\n"
                                    "<<< 554 Error: no valid recipients\n"), Stage.rcpt)

    def test_catch_all_statuses(self) -> None:
        """x.Y.0 and x.7.1 only name an area; x.1.1 names a cause."""
        for status, want in (("5.0.0", True), ("5.1.0", True), ("5.7.1", True), (None, True),
                             ("5.1.1", False), ("4.2.2", False), ("5.7.26", False)):
            self.assertEqual(is_catch_all(status), want, status)


class StageInFreeTextTests(SynchronousTestCase):
    """The stage of a free-text report is read where the report wrote it."""

    def test_qmail_ldap_rcpt_line(self) -> None:
        """qmail-ldap's "From: <s> RCPT: <a> ... does not like recipient." gives rcpt."""
        from hurricane.bounce.analyze import analyze
        raw = (b"From: MAILER-DAEMON@mx.example.org\r\nTo: news@example.com\r\n"
               b"Subject: failure notice\r\n\r\n"
               b"Hi. This is the qmail-send program at mx.example.org.\r\n"
               b"I'm afraid I wasn't able to deliver your message to the following "
               b"addresses.\r\nThis is a permanent error; I've given up.\r\n\r\n"
               b"<erin@example.net>:\r\n"
               b"From: <news@example.com> RCPT: <erin@example.net> 192.0.2.25 does not like "
               b"recipient.\r\nRemote host said: 550 No such user here\r\n"
               b"Giving up on 192.0.2.25.\r\n")
        [r] = analyze(raw).results
        self.assertEqual((r.recipient, r.stage, r.reason), ("erin@example.net", "rcpt",
                                                            "userunknown"))
