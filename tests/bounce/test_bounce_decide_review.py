"""Table tests for the decision bugs a review of the bounce analyzer found (issue 22).

Each class reproduces one finding with a small synthetic report or reply and
asserts the answer docs/bounce-reasons.md gives:

1. a reporter's own boilerplate never decides (Gmail's opening sentence);
2. a status code that names one cause has a reason in both classes, the same
   one unless the model writes down why the class differs;
3. a specific status beats generic words; "sender unknown" is rejected; x.1.0
   is catch-all;
4. Amazon SES's bounce subtype decides through the evidence (hard and the
   explanation agree with the reason);
5. free-text reports name the remote MTA; German and French unknown-address
   words; "maternity leave" is an away message.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from hurricane.bounce.analyze import analyze
from hurricane.bounce.classify import default_classifier
from hurricane.bounce.evidence import Evidence, find_remote_mta
from hurricane.bounce.model import RecipientResult

UNPLACEABLE = "the gnomes said no"


def _report(sender: str, subject: str, body: str) -> bytes:
    return ("From: %s\nTo: sender@example.org\nSubject: %s\n"
            "Date: Sun, 6 Dec 2026 07:00:00 +0000\nMessage-ID: <r@example.net>\n"
            "Content-Type: text/plain; charset=UTF-8\n\n%s\n" % (sender, subject, body)).encode()


GMAIL = """Delivery to the following recipient failed permanently:

     kijitora@example.jp

Technical details of permanent failure:
Google tried to deliver your message, but it was rejected by the server for the
recipient domain example.jp by mx.example.jp. [192.0.2.25].

The error that the other server returned was:
%s
"""


#: The fixed sentences of common reporters (Exim, Postfix, qmail, Sendmail, Yahoo,
#: Gmail, Outlook.com) around one recipient's reply (%s).
TEMPLATES = [
    "This message was created automatically by mail delivery software.\n\nA message that "
    "you sent could not be delivered to one or more of its\nrecipients. This is a permanent "
    "error. The following address(es) failed:\n\n  kijitora@example.jp\n    %s\n",
    "This is the mail system at host mx.example.org.\n\nI'm sorry to have to inform you "
    "that your message could not\nbe delivered to one or more recipients. It's attached "
    "below.\n\n                   The mail system\n\n<kijitora@example.jp>: %s\n",
    "Hi. This is the qmail-send program at mx.example.org.\nI'm afraid I wasn't able to "
    "deliver your message to the following addresses.\nThis is a permanent error; I've "
    "given up. Sorry it didn't work out.\n\n<kijitora@example.jp>:\n%s\n",
    "The original message was received at Sun, 6 Dec 2026 from localhost\n\n   ----- The "
    "following addresses had permanent fatal errors -----\n<kijitora@example.jp>\n"
    "    (reason: %s)\n",
    "Sorry, we were unable to deliver your message to the following address.\n\n"
    "<kijitora@example.jp>:\n%s\n",
    GMAIL,
    "This is an automatically generated Delivery Status Notification.\n\nDelivery to the "
    "following recipients failed.\n\n       kijitora@example.jp\n\n%s\n",
]


class ReporterBoilerplateTests(SynchronousTestCase):
    """Item 1: the reporter's fixed sentences are not the recipient's cause."""

    def test_gmail_opening_sentence_is_not_unknown_user(self) -> None:
        """Gmail's "failed permanently" sentence over a greylisting reply: not userunknown,
        not hard (the address must not be suppressed)."""
        raw = _report("Mail Delivery Subsystem <mailer-daemon@googlemail.com>",
                      "Delivery Status Notification (Failure)",
                      GMAIL % "550 Greylisted for 5 minutes (in reply to RCPT TO command)")
        [r] = analyze(raw).results
        self.assertEqual((r.recipient, r.remote_mta), ("kijitora@example.jp", "mx.example.jp"))
        self.assertNotEqual(r.reason, "userunknown")
        self.assertFalse(r.hard)

    def test_gmail_report_of_an_unknown_user_still_is(self) -> None:
        """The remote's own unknown-user words still decide in the same template."""
        raw = _report("Mail Delivery Subsystem <mailer-daemon@googlemail.com>",
                      "Delivery Status Notification (Failure)",
                      GMAIL % "550 5.1.1 <kijitora@example.jp>: User unknown "
                              "(in reply to RCPT TO command)")
        [r] = analyze(raw).results
        self.assertEqual((r.reason, r.hard), ("userunknown", True))

    def test_reporter_templates_never_decide(self) -> None:
        """Each common reporter's fixed sentences around an unplaceable reply: onhold."""
        for body in TEMPLATES:
            raw = _report("Mail Delivery System <MAILER-DAEMON@mx.example.org>",
                          "Undelivered Mail Returned to Sender", body % ("550 " + UNPLACEABLE))
            [r] = analyze(raw).results
            self.assertEqual((r.reason, r.hard), ("onhold", False), body[:40])

    def test_sentence_alone_decides_nothing(self) -> None:
        rc = default_classifier().classify(
            None, None, "Delivery to the following recipient failed permanently: a@b.example")
        self.assertEqual(rc.reason, "onhold")


#: RFC 3463 (and the IANA registry's later codes: RFC 3886, 4954, 5248, 7505) subject
#: and detail pairs that name one cause; x.Y.0 and x.7.1 are catch-all (docs section 2).
SPECIFIC = ["1.1", "1.2", "1.3", "1.4", "1.5", "1.6", "1.7", "1.8", "1.9", "1.10",
            "2.1", "2.2", "2.3", "2.4",
            "3.1", "3.2", "3.3", "3.4", "3.5",
            "4.1", "4.2", "4.3", "4.4", "4.5", "4.6", "4.7",
            "5.1", "5.2", "5.3", "5.4", "5.5", "5.6",
            "6.1", "6.2", "6.3", "6.4", "6.5",
            "7.2", "7.3", "7.4", "7.5", "7.6", "7.7", "7.8", "7.9", "7.10", "7.11",
            "7.13", "7.17", "7.18", "7.20", "7.21", "7.22", "7.23", "7.24", "7.25",
            "7.26", "7.27"]

#: The codes whose reason differs by class, each for a reason written in
#: rules.toml's [status] comment and docs/bounce-reasons.md section 2 ("Class"):
#: x.4.1 (the reporter's own 4.4.1 is expired; a server replying 5.4.1 did answer, so
#: its words decide and without words it is onhold) and x.4.4.
BY_CLASS = {"4.1": ("expired", "onhold"), "4.4": ("networkerror", "hostunknown")}

#: Reasons per code the review named, as the model defines them.
EXPECTED = {
    "1.2": "hostunknown", "1.3": "userunknown", "1.4": "filtered", "1.5": "filtered",
    "1.10": "notaccept", "2.1": "suspend", "4.2": "networkerror", "4.3": "systemerror",
    "4.5": "systemfull", "5.1": "syntaxerror", "5.2": "syntaxerror", "5.3": "toomanyconn",
    "5.4": "syntaxerror", "5.5": "syntaxerror", "5.6": "securityerror",
    "7.26": "authfailure", "7.27": "notaccept",
}


def _status_reason(status: str, text: str = UNPLACEABLE) -> str:
    code = "550" if status[0] == "5" else "450"
    return default_classifier().decide(Evidence(text="%s %s %s" % (code, status, text),
                                                code=code, status=status)).reason


class StatusTableTests(SynchronousTestCase):
    """Item 2: a status that names one cause decides alone, in both classes."""

    def test_specific_codes_are_never_onhold(self) -> None:
        for detail in SPECIFIC:
            for cls in "45":
                if detail in BY_CLASS and BY_CLASS[detail][int(cls == "5")] == "onhold":
                    continue
                self.assertNotEqual(_status_reason(cls + "." + detail), "onhold",
                                    cls + "." + detail)

    def test_class_independent(self) -> None:
        """The same x.Y.Z gives the same reason in both classes, except the written ones."""
        for detail in SPECIFIC:
            four, five = _status_reason("4." + detail), _status_reason("5." + detail)
            self.assertEqual((four, five), BY_CLASS.get(detail, (five, five)), detail)

    def test_reasons_by_meaning(self) -> None:
        for detail, want in EXPECTED.items():
            for cls in "45":
                self.assertEqual(_status_reason(cls + "." + detail), want, cls + "." + detail)

    def test_hard_follows_the_reason_and_class(self) -> None:
        """notaccept is hard only with a 5.x.x status; hostunknown in both classes."""
        clf = default_classifier()
        for status, hard in (("5.1.10", True), ("4.1.10", False), ("4.1.2", True)):
            rc = clf.decide(Evidence(text=UNPLACEABLE, status=status))
            self.assertEqual(rc.hard, hard, status)


class PrecedenceReviewTests(SynchronousTestCase):
    """Item 3: the code follows the doc's precedence."""

    def test_specific_status_beats_generic_words(self) -> None:
        """x.1.2 names the cause; 'unknown' at the end of the text is only a generic word."""
        for stage_text in ("", " (in reply to RCPT TO command)"):
            rc = default_classifier().decide(
                Evidence(text="550 5.1.2 <b@nx.example>: Recipient domain unknown" + stage_text))
            self.assertEqual((rc.reason, rc.decided_by), ("hostunknown", "hostunknown.status"))

    def test_domain_unknown_words_are_not_unknown_user(self) -> None:
        rc = default_classifier().decide(Evidence(text="550 Recipient domain unknown"))
        self.assertEqual(rc.reason, "hostunknown")

    def test_unknown_user_words_beat_x_2_1(self) -> None:
        """A mailbox's stated condition beats the status's (docs section 2 step 3)."""
        clf = default_classifier()
        rc = clf.decide(Evidence(text="550 5.2.1 <a@b.example>... User Unknown "
                                      "(in reply to RCPT TO command)"))
        self.assertEqual(rc.reason, "userunknown")
        rc = clf.decide(Evidence(text="550 5.2.1 <a@b.example>... User Unknown"))
        self.assertEqual(rc.reason, "filtered")
        self.assertEqual(_status_reason("5.2.1"), "suspend")

    def test_sender_unknown_is_rejected(self) -> None:
        """Section 4, userunknown / rejected: whose address the words are about."""
        for text in ("550 sender unknown", "553 5.1.0 Sender address unknown"):
            rc = default_classifier().decide(Evidence(text=text))
            self.assertEqual((rc.reason, rc.hard), ("rejected", False), text)

    def test_x_1_0_is_catch_all(self) -> None:
        """x.1.0 alone is onhold and not hard; with unknown-user words it is userunknown."""
        clf = default_classifier()
        rc = clf.decide(Evidence(text="550 5.1.0 " + UNPLACEABLE))
        self.assertEqual((rc.reason, rc.hard), ("onhold", False))
        rc = clf.decide(Evidence(text="550 5.1.0 <a@b.example>: user unknown"))
        self.assertEqual((rc.reason, rc.hard), ("userunknown", True))

    def test_documented_catch_all_defaults(self) -> None:
        """The catch-all codes with a default (docs section 2 step 3) decide without words."""
        for status, want in (("5.7.1", "blocked"), ("5.2.0", "filtered"),
                             ("5.3.0", "systemerror"), ("5.4.0", "networkerror")):
            self.assertEqual(_status_reason(status), want, status)
        rc = default_classifier().decide(Evidence(text="550 5.7.1 message looks like spam"))
        self.assertEqual(rc.reason, "spamdetected")


SES = ('{"notificationType":"Bounce","bounce":{"bounceType":"Permanent",'
       '"bounceSubType":"%s","bouncedRecipients":[{"emailAddress":"nobody@b.example"}],'
       '"timestamp":"2026-12-06T07:00:00.000Z","feedbackId":"x",'
       '"reportingMTA":"dsn; a.example"},"mail":{"messageId":"m1",'
       '"destination":["nobody@b.example"]}}')


class SesSubtypeTests(SynchronousTestCase):
    """Item 4: SES's subtype is evidence that decides; hard and decided_by follow it."""

    def _one(self, subtype: str) -> RecipientResult:
        raw = _report("no-reply@sns.amazonaws.com", "AWS Notification Message", SES % subtype)
        [r] = analyze(raw).results
        return r

    def test_noemail(self) -> None:
        r = self._one("NoEmail")
        self.assertEqual((r.reason, r.hard, r.suppress, r.decided_by, r.status),
                         ("userunknown", True, True, "ses.subtype.noemail", "5.1.1"))
        self.assertEqual(r.remote_mta, "a.example")

    def test_other_subtypes(self) -> None:
        for sub, want in (("MailboxFull", "mailboxfull"), ("MessageTooLarge", "mesgtoobig"),
                          ("ContentRejected", "contenterror"),
                          ("AttachmentRejected", "policyviolation")):
            r = self._one(sub)
            self.assertEqual((r.reason, r.hard, r.decided_by),
                             (want, False, "ses.subtype." + sub.lower()), sub)


class FreeTextTests(SynchronousTestCase):
    """Item 5: the remote MTA in free text; other languages; away messages."""

    def test_find_remote_mta(self) -> None:
        for text in ("kijitora@example.jp\n    host mx.example.jp [192.0.2.153]\n"
                     "    SMTP error from remote mail server after RCPT TO:<kijitora@example.jp>:",
                     "<a@example.jp>: host MX.example.jp[192.0.2.1] said: 550 5.1.1 unknown",
                     "connect to mx.example.jp[192.0.2.1]:25: Connection refused",
                     "451 ... while talking to mx.example.jp.:",
                     "rejected by the server for the recipient domain example.jp by "
                     "mx.example.jp. [192.0.2.25].",
                     "rejected by the server for the\nrecipient domain example.jp by\n"
                     "mx.example.jp. [192.0.2.25].",
                     "SMTP error from remote server for TEXT command, host: mx.example.jp "
                     "(192.0.2.1) reason: 550"):
            self.assertEqual(find_remote_mta(text), "mx.example.jp", text)
        for text in ("550 Host unknown", "Client host [192.0.2.49] blocked", ""):
            self.assertIsNone(find_remote_mta(text), text)

    def test_remote_mta_in_reports(self) -> None:
        exim = ("This message was created automatically by mail delivery software.\n\n"
                "A message that you sent could not be delivered to one or more of its\n"
                "recipients. This is a permanent error. The following address(es) failed:\n\n"
                "  kijitora@example.jp\n    host mx.example.jp [192.0.2.153]\n"
                "    SMTP error from remote mail server after RCPT TO:<kijitora@example.jp>:\n"
                "    550 5.1.1 <kijitora@example.jp>: Recipient address rejected: User unknown\n")
        postfix = ("This is the mail system at host mx.example.org.\n\n"
                   "I'm sorry to have to inform you that your message could not\n"
                   "be delivered to one or more recipients.\n\n"
                   "<kijitora@example.jp>: host mx.example.jp[192.0.2.1] said: 550 5.1.1\n"
                   "    <kijitora@example.jp>: Recipient address rejected: User unknown "
                   "(in reply to\n    RCPT TO command)\n")
        for body in (exim, postfix):
            [r] = analyze(_report("Mail Delivery System <mailer-daemon@mx.example.org>",
                                  "Mail delivery failed", body)).results
            self.assertEqual((r.remote_mta, r.reason), ("mx.example.jp", "userunknown"))

    def test_german_and_french_unknown_address(self) -> None:
        """The unknown-user family in the reporter's language: never onhold; at RCPT
        userunknown, with no stage filtered (section 2 step 5), as in English."""
        clf = default_classifier()
        for words in ("Die Adresse existiert nicht", "Das Postfach existiert nicht",
                      "L'adresse kijitora@example.fr n'existe pas",
                      "L'adresse de messagerie référencée ci-dessus n'existe pas"):
            rc = clf.decide(Evidence(text="550 " + words + " (in reply to RCPT TO command)"))
            self.assertEqual((rc.reason, rc.hard), ("userunknown", True), words)
            self.assertEqual(clf.decide(Evidence(text="550 " + words)).reason, "filtered")
        self.assertNotEqual(clf.decide(Evidence(text="550 Die Domain existiert nicht")).reason,
                            "userunknown")
        raw = _report("MAILER-DAEMON@mx.example.de", "Unzustellbar: hallo",
                      "Ihre Nachricht konnte nicht zugestellt werden.\n\n"
                      "<kijitora@example.de>: Die Adresse existiert nicht.")
        [r] = analyze(raw).results
        self.assertNotEqual(r.reason, "onhold")

    def test_maternity_leave_is_an_away_message(self) -> None:
        for body in ("Hello, I am currently on maternity leave until 1 April.",
                     "Thank you. Due to paternity leave I read no mail before May."):
            a = analyze(_report("Kijitora <kijitora@example.jp>", "Re: hello", body))
            self.assertEqual(a.results[0].reason, "vacation", body)
