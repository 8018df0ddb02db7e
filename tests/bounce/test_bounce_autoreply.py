"""Auto-replies recognised from their typical bodies, and mail-system notes that are not.

docs/bounce-reasons.md, vacation: RFC 3834 headers are not always there; a
short message that is not a bounce and says the person is away (or that the
message will be answered) is an auto-reply. Messages written for this test.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from hurricane.bounce.analyze import analyze


def message(body: str, *, sender: str = "Carol <carol@example.org>",
            subject: str = "Re: Spring sale", extra: str = "") -> bytes:
    """A plain-text reply to one of our messages."""
    return (f"From: {sender}\r\nTo: news@example.com\r\nSubject: {subject}\r\n{extra}"
            "Content-Type: text/plain; charset=utf-8\r\n\r\n" + body).encode("utf-8")


class AutoReplyBodyTests(SynchronousTestCase):
    """Bodies of auto-replies without RFC 3834 headers."""

    def test_away_with_mailbox_mention(self) -> None:
        """An out-of-office note that mentions its mailbox is still an auto-reply."""
        a = analyze(message("I am out of the office until 3 March with limited access to my "
                            "mailbox.\r\nFor urgent matters write to dave@example.org.\r\n"))
        self.assertEqual(a.category, "autoreply")
        self.assertEqual([(r.recipient, r.reason, r.rule) for r in a.results],
                         [("carol@example.org", "vacation", "autoreply.body")])

    def test_acknowledgement(self) -> None:
        """'Thank you for your e-mail, I will reply as soon as possible' is an auto-reply."""
        a = analyze(message("Thank you for your e-mail.\r\nI will endeavour to reply as soon "
                            "as possible.\r\n", subject="Thank you for your e-mail"))
        self.assertEqual(a.category, "autoreply")

    def test_phrasings_of_the_same_causes(self) -> None:
        """Away and will-answer notes in other words, under a subject that says nothing."""
        for body in ("I will be traveling for work on July 10-31 with intermittent access "
                     "to email.\r\n",
                     "Thank you for you e-mail.\r\nI will try to respond as soon as I can.\r\n",
                     "I have no access to email this week.\r\n"):
            self.assertEqual(analyze(message(body, subject="Re: Spring sale")).category,
                             "autoreply", body)

    def test_other_languages(self) -> None:
        """German and French away notes are auto-replies."""
        for body in ("Ich bin bis zum 3. März nicht im Büro.\r\n",
                     "Je suis absente du bureau jusqu'au 3 mars.\r\n"):
            self.assertEqual(analyze(message(body)).category, "autoreply", body)

    def test_more_languages(self) -> None:
        """Away notes in Portuguese, Polish, Czech, Russian, Finnish and the Scandinavian
        languages, and the mail clients' auto-reply subjects in the users' languages."""
        for body in ("Estou de férias até segunda-feira.\r\n",
                     "Jestem na urlopie do poniedziałku.\r\n",
                     "Jsem na dovolené do pondělí.\r\n",
                     "Я в отпуске до понедельника.\r\n",
                     "Olen lomalla maanantaihin asti.\r\n",
                     "Jeg er på ferie til mandag.\r\n",
                     "Jag är på semester till måndag.\r\n"):
            self.assertEqual(analyze(message(body)).category, "autoreply", body)
        for subject in ("Automatische Antwort: Spring sale", "Automatisch antwoord: Spring sale",
                        "Resposta automática: Spring sale", "Autosvar: Spring sale",
                        "Automaattinen vastaus: Spring sale", "Automatyczna odpowiedź: Spring sale",
                        "Automatická odpověď: Spring sale", "Αυτόματη απάντηση: Spring sale",
                        "Автоматический ответ: Spring sale", "自动回复: Spring sale"):
            self.assertEqual(analyze(message("Thanks.\r\n", subject=subject)).category,
                             "autoreply", subject)

    def test_person_says_so(self) -> None:
        """Auto-Submitted: no means a person wrote it, whatever it says (RFC 3834)."""
        a = analyze(message("I am away until Monday.\r\n", extra="Auto-Submitted: no\r\n"))
        self.assertEqual(a.category, "other")

    def test_ordinary_reply(self) -> None:
        """A person's reply that reads like nothing automatic is other."""
        self.assertEqual(analyze(message("Thanks, I bought two.\r\n")).category, "other")

    def test_long_text_is_not_an_auto_reply(self) -> None:
        """A long text (a newsletter, a thread) that mentions an absence is not an auto-reply."""
        body = "I am out of the office. " + "Lorem ipsum dolor sit amet. " * 1000
        self.assertEqual(analyze(message(body)).category, "other")


class MailSystemNoteTests(SynchronousTestCase):
    """A note written by a mail system is read as a bounce, never as a vacation."""

    def test_null_from_with_auto_submitted(self) -> None:
        """From: <> with Auto-Submitted: auto-replied and a failure is a bounce (Exim :fail:)."""
        a = analyze(message("You sent mail to erin@example.net. That's not a valid user here.\r\n",
                            sender="<>", subject="Mail failure",
                            extra="Auto-Submitted: auto-replied\r\n"))
        self.assertEqual(a.category, "bounce")
        self.assertEqual([r.recipient for r in a.results], ["erin@example.net"])

    def test_auto_generated_out_of_office(self) -> None:
        """A server's vacation responder marks its reply auto-generated: an out-of-office
        subject or text makes it an auto-reply; a failure text under the same header is
        still a notice about delivery."""
        a = analyze(message("I'm out of the office until Monday with no access to email.\r\n",
                            subject="Automatic reply: Spring sale",
                            extra="Auto-Submitted: auto-generated\r\n"))
        self.assertEqual((a.category, [r.recipient for r in a.results]),
                         ("autoreply", ["carol@example.org"]))
        a = analyze(message("Delivery to the following recipient failed permanently:\r\n\r\n"
                            "     erin@example.net\r\n", subject="Automatic reply: Spring sale",
                            extra="Auto-Submitted: auto-generated\r\n"))
        self.assertEqual((a.category, [r.recipient for r in a.results]),
                         ("bounce", ["erin@example.net"]))

    def test_challenge_response_is_other(self) -> None:
        """A challenge-response system's request to prove the sender is a person is not
        an auto-reply about the recipient (docs section 4, vacation / other), whatever
        headers mark it automatic."""
        for extra, body in (
                ("Auto-Submitted: auto-replied\r\n",
                 "I use a challenge-response system to fight spam. To have your message "
                 "delivered, please click the link below to confirm that you are a human.\r\n"),
                ("", "Your message has been held. Please verify that you are a real person by "
                     "replying to this message. This is an automated message.\r\n"),
                ("Precedence: bulk\r\n", "Carol has asked us to verify you. Please click to add "
                                         "yourself to the guest list.\r\n")):
            self.assertEqual(analyze(message(body, extra=extra)).category, "other", body)
        # an out-of-office note that merely asks to confirm a meeting stays an auto-reply
        self.assertEqual(analyze(message("I am out of the office until Monday. Please confirm "
                                         "the meeting time with Dave.\r\n")).category,
                         "autoreply")


class VendorHeaderTests(SynchronousTestCase):
    """Mail systems' own auto-reply headers (docs/bounce-reasons.md, vacation), under a
    subject and a body that say nothing of an absence."""

    def test_vendor_headers_make_an_auto_reply(self) -> None:
        """iCloud's X-Apple-Action: VACATION, X-Autogenerated: Reply, X-FC-MachineGenerated
        and X-Mail-Autoreply each mark an auto-reply."""
        for extra, rule in (("X-Apple-Action: VACATION\r\n", "autoreply.x-apple-action"),
                            ("X-Autogenerated: Reply\r\n", "autoreply.x-autogenerated"),
                            ("X-FC-MachineGenerated: true\r\n", "autoreply.x-fc-machinegenerated"),
                            ("X-Mail-Autoreply: yes\r\n", "autoreply.x-mail-autoreply")):
            a = analyze(message("I'm only sleeping.\r\n", subject="Re: Spring sale", extra=extra))
            self.assertEqual((a.category, [(r.recipient, r.reason, r.rule) for r in a.results]),
                             ("autoreply", [("carol@example.org", "vacation", rule)]), extra)

    def test_other_values_are_not(self) -> None:
        """The same headers with a value that names no auto-reply (another iCloud rule
        action, a forward) leave a person's reply as other."""
        for extra in ("X-Apple-Action: FORWARD\r\n", "X-Autogenerated: Forward\r\n",
                      "X-FC-MachineGenerated: false\r\n"):
            a = analyze(message("I'm only sleeping.\r\n", subject="Re: Spring sale", extra=extra))
            self.assertEqual(a.category, "other", extra)


class PersonReplyTests(SynchronousTestCase):
    """A person's reply is not a bounce because of what it quotes (docs/bounce-reasons.md
    section 1, a person's reply); a reporter titling its notice "Re:" still bounces."""

    QUOTED = ("Hi, I got this when I wrote to Carol. Is your server down?\r\n\r\nBob\r\n\r\n"
              "On Sun, 6 Dec 2026, Mail Delivery System wrote:\r\n"
              "> This is the mail system at host mx.a.example.\r\n>\r\n"
              "> <c@d.example>: host mx.d.example[192.0.2.1] said: 550 5.1.1\r\n"
              ">     User unknown (in reply to RCPT TO command)\r\n")

    def test_reply_quoting_a_bounce_is_other(self) -> None:
        """Bob's reply quoting a Postfix bounce he got, under the bounce's own subject."""
        for subject in ("Re: Undelivered Mail Returned to Sender", "AW: Spring sale",
                        "RE[2]: Spring sale"):
            a = analyze(message(self.QUOTED, sender="Bob <bob@b.example>", subject=subject))
            self.assertEqual((a.category, a.results), ("other", ()), subject)

    def test_reply_about_something_else_is_other(self) -> None:
        """Failure words about something else, naming no address, in a person's reply."""
        a = analyze(message("Hi Sam,\r\n\r\nthe parcel could not be delivered yesterday, the "
                            "courier said the address was not found.\r\n\r\nBob\r\n",
                            sender="Bob <bob@b.example>", subject="Re: your order 4512"))
        self.assertEqual(a.category, "other")

    def test_the_same_quote_forwarded_or_from_a_mail_system_bounces(self) -> None:
        """The same text from a mail system, or a reply whose own words report a failed
        address (a reporter titling its notice 'Re:', a helpdesk), is a bounce."""
        a = analyze(message(self.QUOTED.replace("> ", ""), sender="MAILER-DAEMON@mx.a.example",
                            subject="Re: Spring sale"))
        self.assertEqual((a.category, [r.recipient for r in a.results]),
                         ("bounce", ["c@d.example"]))
        a = analyze(message("Error: Invalid user address\r\n\r\nError message below:\r\n"
                            "550 - Requested action not taken: no such user here\r\n\r\n"
                            "  RCPT TO: 5550100@vtext.example.com\r\n",
                            sender="post_master@vtext.example.com", subject="Re:Test message"))
        self.assertEqual((a.category, [r.recipient for r in a.results]),
                         ("bounce", ["5550100@vtext.example.com"]))
        a = analyze(message("Hi Sam,\r\n\r\nyour message to carol@d.example could not be "
                            "delivered, the server said 550 5.1.1 user unknown.\r\n\r\nBob\r\n",
                            sender="Bob <bob@b.example>", subject="Re: mail problem"))
        self.assertEqual((a.category, [r.recipient for r in a.results]),
                         ("bounce", ["carol@d.example"]))
