"""Who bounced does not change with how the report travelled: transport property tests.

Classes of recipient-extraction failure found by perturbing the public corpora
the way other MTAs, gateways and transports change returned mail
(bench/perturb.py; tests/bounce/transport.py holds the perturbations), each
fixed from its cause and held here by a table test; then the property itself
over the public corpus: under every perturbation that keeps the report's
information, the recipient set stays the same.
"""

from __future__ import annotations

import base64
import os

from twisted.trial.unittest import SynchronousTestCase

from hurricane.bounce import analyze as analyzer
from hurricane.bounce.analyze import analyze, to_prediction
from tests.bounce import transport
from tests.bounce.test_bounce_recipients import dsn
from tests.peers import require_corpus


def recipients(raw: bytes) -> list[str]:
    return sorted(to_prediction(analyze(raw), "x")["recipients"])


class DeliveryStatusFieldTests(SynchronousTestCase):
    """The per-recipient fields of a delivery-status part, however a reporter lays them out."""

    def test_original_recipient_only_several_without_blank_lines(self) -> None:
        # AOL's relay writes its recipients' fields with no blank line between them;
        # with Original-Recipient as the only recipient field each one still counts
        raw = dsn("Original-Recipient: rfc822; a@b.example\r\nAction: failed\r\n"
                  "Status: 5.2.2\r\nDiagnostic-Code: smtp; 552 5.2.2 Mailbox full\r\n"
                  "Original-Recipient: rfc822; c@b.example\r\nAction: failed\r\n"
                  "Status: 5.1.1\r\nDiagnostic-Code: smtp; 550 5.1.1 User unknown\r\n")
        a = analyze(raw)
        self.assertEqual([(r.recipient, r.reason) for r in a.results],
                         [("a@b.example", "mailboxfull"), ("c@b.example", "userunknown")])

    def test_final_and_original_in_either_order_without_blank_lines(self) -> None:
        raw = dsn("Original-Recipient: rfc822; a@b.example\r\n"
                  "Final-Recipient: rfc822; a@b.example\r\n"
                  "Action: failed\r\nStatus: 5.1.1\r\n"
                  "Original-Recipient: rfc822; c@b.example\r\n"
                  "Final-Recipient: rfc822; c@b.example\r\n"
                  "Action: failed\r\nStatus: 5.1.1\r\n")
        self.assertEqual(recipients(raw), ["a@b.example", "c@b.example"])

    def test_original_recipient_before_x_actual_recipient(self) -> None:
        # X-Actual-Recipient is where the reporter's aliases led the address (a
        # local user, a pipe); Original-Recipient is the address as it was sent
        raw = dsn("Original-Recipient: rfc822; info@b.example\r\n"
                  "X-Actual-Recipient: rfc822; |/usr/bin/procmail #kijitora@mx.b.example\r\n"
                  "Action: failed\r\nStatus: 5.1.1\r\n")
        self.assertEqual(recipients(raw), ["info@b.example"])

    def test_final_recipient_still_first(self) -> None:
        raw = dsn("Final-Recipient: rfc822; a@b.example\r\n"
                  "Original-Recipient: rfc822; alias@b.example\r\n"
                  "X-Actual-Recipient: rfc822; local@mx.b.example\r\n"
                  "Action: failed\r\nStatus: 5.1.1\r\n")
        self.assertEqual(recipients(raw), ["a@b.example"])

    def test_field_read_whole(self) -> None:
        # a recipient field holds one address: its domain may be one label or an
        # address literal, its local part UTF-8 (RFC 6533), never cut to a tail
        for value, want in (("rfc822; a@localhost", "a@localhost"),
                            ("rfc822; <a@[192.0.2.1]>", "a@[192.0.2.1]"),
                            ("utf-8; \u00fcser@b.example", "\u00fcser@b.example"),
                            ("rfc822; a@b.example (Alice)", "a@b.example"),
                            ('rfc822; "Alice A" <a@b.example>', "a@b.example"),
                            ("rfc822;a@b.example.", "a@b.example")):
            raw = dsn("Final-Recipient: %s\r\nAction: failed\r\nStatus: 5.1.1\r\n" % value)
            self.assertEqual(recipients(raw), [want], value)

    def test_routable_original_before_a_host_local_final(self) -> None:
        # Sun Messaging Server: the final address names its internal store host
        raw = dsn("Original-recipient: rfc822;a@b.example\r\n"
                  "Final-recipient: rfc822;a@sims-ms-daemon\r\nAction: failed\r\n"
                  "Status: 5.0.0 (recipient reached disk quota)\r\n")
        self.assertEqual(recipients(raw), ["a@b.example"])

    def test_prose_labelled_delivery_status_is_the_notification(self) -> None:
        # InterMail labels its human-readable notice message/delivery-status too
        raw = (b"From: MAILER-DAEMON@mta.b.example\nTo: s@shop.example\n"
               b"Subject: Mail System Error - Returned Mail\nMIME-Version: 1.0\n"
               b"Content-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\n\n"
               b"--B\nContent-Type: message/delivery-status;\n\n"
               b"This Message was undeliverable due to the following reason:\n\n"
               b"<a@b.example> has restricted SMS e-mail\n\n"
               b"--B\nContent-Type: message/delivery-status\n\n"
               b"Reporting-MTA: dns; mta.b.example\n\n"
               b"Final-Recipient: RFC822; <a@b.example>\nAction: failed\nStatus: 5.3.0\n\n"
               b"--B--\n")
        a = analyze(raw)
        self.assertEqual([(r.recipient, r.reason) for r in a.results],
                         [("a@b.example", "filtered")])
        # ... and the same re-encoded base64 by a gateway: read decoded
        prose = (b"This Message was undeliverable due to the following reason:\n\n"
                 b"<a@b.example> has restricted SMS e-mail\n")
        enc = raw.replace(b"Content-Type: message/delivery-status;\n\n" + prose,
                          b"Content-Type: message/delivery-status;\n"
                          b"Content-Transfer-Encoding: base64\n\n" + base64.encodebytes(prose))
        self.assertNotEqual(enc, raw)
        self.assertEqual([(r.recipient, r.reason) for r in analyze(enc).results],
                         [("a@b.example", "filtered")])

    def test_html_notification_beside_a_plain_original(self) -> None:
        # the notification in HTML, the returned original as a text/plain part after it:
        # the HTML is the notification (a plain part is preferred only as its alternative)
        raw = (b"From: MAILER-DAEMON@mta.b.example\nTo: s@shop.example\n"
               b"Subject: Delivery report\nMIME-Version: 1.0\n"
               b"Content-Type: multipart/mixed; boundary=\"B\"\n\n"
               b"--B\nContent-Type: text/html\n\n<p>Your message to a@b.example could not be "
               b"delivered.</p><p>Error: 552 5.2.2 Mailbox full</p>\n"
               b"--B\nContent-Type: text/plain\n\nFrom: s@shop.example\nTo: a@b.example\n"
               b"Subject: virus scan report\n\nOur virus scanner found nothing.\n--B--\n")
        a = analyze(raw)
        self.assertEqual([(r.recipient, r.reason) for r in a.results],
                         [("a@b.example", "mailboxfull")])

    def test_delivery_status_sent_as_a_text_attachment(self) -> None:
        # Postfix-based gateways attach the fields as "details.txt"
        raw = (b"From: Mail Delivery System <MAILER-DAEMON@mx.b.example>\n"
               b"To: <s@shop.example>\nSubject: Delayed Mail (still being retried)\n"
               b"MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"B\"\n\n"
               b"--B\nContent-Type: text/plain\n\n"
               b"<alias@b.example> (expanded from <a@b.example>): temporary failure.\n\n"
               b"--B\nContent-Type: text/plain; name=\"details.txt\"\n"
               b"Content-Disposition: attachment; filename=\"details.txt\"\n\n"
               b"Reporting-MTA: dns; mx.b.example\n\n"
               b"Final-Recipient: rfc822; a@b.example\nAction: delayed\nStatus: 4.2.2\n"
               b"Diagnostic-Code: x-unix; Quota exceeded\n\n--B--\n")
        a = analyze(raw)
        self.assertEqual([(r.recipient, r.action, r.source) for r in a.results],
                         [("a@b.example", "delayed", "dsn")])


    def test_postfix_delay_warning_as_text(self) -> None:
        # the delivery-status part lost (a gateway dropped it): Postfix's own words say it
        # is a warning; "could not be delivered for more than 4 hour(s)" is not giving up
        raw = (b"From: MAILER-DAEMON@mx.shop.example (Mail Delivery System)\n"
               b"To: <s@shop.example>\nSubject: Delayed Mail (still being retried)\n\n"
               b"This is the mail system at host mx.shop.example.\n\n"
               b"# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #\n\n"
               b"Your message could not be delivered for more than 4 hour(s).\n"
               b"It will be retried until it is 5 day(s) old.\n\n"
               b"<a@b.example>: connect to mx.b.example[192.0.2.1]:25: Connection timed out\n")
        a = analyze(raw)
        self.assertEqual([(r.recipient, r.action, r.hard) for r in a.results],
                         [("a@b.example", "delayed", False)])


class QuotedPrintableTests(SynchronousTestCase):
    """RFC 2045 6.7 (3): blanks a transport added after a soft line break are not text."""

    def test_soft_break_followed_by_blanks(self) -> None:
        body = (b"Reporting-MTA: dns; mx.b.example\n\nAction: failed\nFinal-Recipie=  \n"
                b"nt: rfc822; a@b.example\nDiagnostic-Code: smtp; 550 5.1.1 <fil=\t\n"
                b"tered@b.example>... User Unknown\nStatus: 5.1.1\n")
        raw = (b"From: MAILER-DAEMON@mx.b.example\nTo: s@shop.example\n"
               b"Subject: Delivery Status Notification (Failure)\nMIME-Version: 1.0\n"
               b"Content-Type: multipart/mixed; boundary=\"B\"\n\n"
               b"--B\nContent-Type: text/plain; charset=iso-8859-15\n"
               b"Content-Transfer-Encoding: quoted-printable\n\n"
               b"An error occurred while trying to deliver the mail to the following recip=  \n"
               b"ients:\na@b.example\n\nTechnical report:\n\n" + body + b"\n--B--\n")
        self.assertEqual(recipients(raw), ["a@b.example"])


class NoticeNotReplyTests(SynchronousTestCase):
    """A mail system's notice is a bounce whoever its From: names (RFC 3834 5)."""

    def _msg(self, headers: bytes, body: bytes) -> bytes:
        return (b"From: Mail System <notify@gateway.example>\nTo: s@shop.example\n"
                + headers + b"\n" + body)

    def test_auto_generated_failure_from_a_plain_address(self) -> None:
        raw = self._msg(b"Subject: Notification\nAuto-Submitted: auto-generated (failure)\n",
                        b"The following address had permanent fatal errors:\n"
                        b"<a@b.example>\n    (reason: 550 5.1.1 User unknown)\n")
        a = analyze(raw)
        self.assertEqual((a.category, recipients(raw)), ("bounce", ["a@b.example"]))

    def test_auto_replied_failure_text_is_a_bounce(self) -> None:
        # Exim and Postfix mark their bounces "auto-replied"
        raw = self._msg(b"Subject: Notification\nAuto-Submitted: auto-replied\n",
                        b"This message was created automatically by mail delivery software.\n\n"
                        b"A message that you sent could not be delivered to one or more of its\n"
                        b"recipients. This is a permanent error. The following address(es) "
                        b"failed:\n\n  a@b.example\n    Mailbox quota exceeded\n")
        a = analyze(raw)
        self.assertEqual((a.category, recipients(raw)), ("bounce", ["a@b.example"]))

    def test_auto_replied_out_of_office_stays_vacation(self) -> None:
        raw = self._msg(b"Subject: Notification\nAuto-Submitted: auto-replied\n",
                        b"I am out of the office until Monday and will reply when I return.\n")
        a = analyze(raw)
        self.assertEqual((a.category, a.results[0].reason), ("autoreply", "vacation"))

    def test_undelivered_text_with_neutral_from_and_subject(self) -> None:
        raw = self._msg(b"Subject: Re: your message\n",
                        b"I'm afraid I wasn't able to deliver the following message.\n"
                        b"This is a permanent error; I've given up. Sorry it didn't work out.\n\n"
                        b"Subject: [List] Hello\nTo: a@b.example\n\n"
                        b"---Below this line is a copy of the message.\n")
        a = analyze(raw)
        self.assertEqual((a.category, recipients(raw)), ("bounce", ["a@b.example"]))

    def test_undelivered_said_in_other_languages(self) -> None:
        # a delivery failure said in the languages seen in returns, under a From: and a
        # Subject: that name no mail system (SinaMail's Chinese notice, and the like)
        for words in ("邮件无法发送到您指定的地址中。", "無法傳送郵件到下列地址。",
                      "以下のアドレスへの配信に失敗しました。",
                      "Die Nachricht konnte nicht zugestellt werden.",
                      "Le message n'a pas pu être remis aux destinataires suivants.",
                      "El mensaje no se pudo entregar a los destinatarios.",
                      "Non è stato possibile consegnare il messaggio.",
                      "Não foi possível entregar a mensagem.",
                      "Het bericht kon niet worden afgeleverd.",
                      "Сообщение не может быть доставлено."):
            raw = self._msg(b"Subject: Notice\nContent-Type: text/plain; charset=utf-8\n",
                            words.encode() + b"\n\n<a@b.example>:\n\n<c@d.example>:\n")
            a = analyze(raw)
            self.assertEqual((a.category, recipients(raw)),
                             ("bounce", ["a@b.example", "c@d.example"]), words)

    def test_delivered_or_ordinary_words_in_other_languages(self) -> None:
        # the other languages' words for delivering, said without "could not": a
        # person's reply or an acknowledgement names other addresses, and is no bounce
        # ("a été livrée" is "has been delivered", "доставлен" "delivered", "bestelbaar"
        # "orderable", "è possibile consegnare" "can be delivered")
        for words in ("Ma commande a été livrée hier, merci.",
                      "Votre message a été remis à notre équipe.",
                      "Votre colis va être livré demain.",
                      "Заказ доставлен, спасибо.",
                      "Мы готовы доставить заказ завтра.",
                      "Is dit product weer bestelbaar?",
                      "Das Paket soll morgen zugestellt werden.",
                      "È possibile consegnare domani?",
                      "É possível entregar amanhã?",
                      "Se pudo entregar el paquete ayer."):
            raw = (b"From: A Person <p@client.example>\nTo: s@shop.example\n"
                   b"Subject: Re: order\nContent-Type: text/plain; charset=utf-8\n\n"
                   + words.encode() + b"\nMy colleague q@client.example asks too.\n")
            a = analyze(raw)
            self.assertEqual((a.category, recipients(raw)), ("other", []), words)

    def test_bounce_subject_in_other_languages(self) -> None:
        for subject in ("邮件发送失败", "Non recapitabile: Sale", "Non remis : Sale",
                        "Onbestelbaar: Sale", "No entregado: Sale"):
            raw = self._msg(b"Subject: " + subject.encode() +
                            b"\nContent-Type: text/plain; charset=utf-8\n",
                            b"<a@b.example>:\n")
            self.assertEqual((analyze(raw).category, recipients(raw)),
                             ("bounce", ["a@b.example"]), subject)

    def test_reporter_introduction_says_bounce(self) -> None:
        # OpenSMTPD's template under a From: that is no mail-system name
        raw = self._msg(b"Subject: Notification\n",
                        b"    Hi!\n\n    This is the MAILER-DAEMON, please DO NOT REPLY to "
                        b"this e-mail.\n\n    An error has occurred while attempting to deliver "
                        b"a message for\n    the following list of recipients:\n\n"
                        b"a@b.example: Envelope expired\n")
        a = analyze(raw)
        self.assertEqual((a.category, recipients(raw), a.results[0].reason),
                         ("bounce", ["a@b.example"], "expired"))

    def test_a_person_writing_is_not_a_bounce(self) -> None:
        raw = self._msg(b"Subject: lunch\n", b"Shall we meet at noon? My mailbox is a mess.\n")
        self.assertEqual(analyze(raw).category, "other")


_INNER_BOUNCE = (b"From: Mail Delivery System <MAILER-DAEMON@mx.b.example>\n"
                 b"To: s@shop.example\nSubject: Mail delivery failed\n\n"
                 b"This message was created automatically by mail delivery software.\n\n"
                 b"A message that you sent could not be delivered to one or more of its\n"
                 b"recipients. This is a permanent error. The following address(es) failed:\n\n"
                 b"  a@b.example\n    550 5.1.1 User unknown\n")


def _with_attached(headers: bytes, text: bytes, inner: bytes) -> bytes:
    return (headers + b"MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"F\"\n\n"
            b"--F\nContent-Type: text/plain\n\n" + text + b"\n--F\n"
            b"Content-Type: message/rfc822\n\n" + inner + b"\n--F--\n")


class ForwardedReportTests(SynchronousTestCase):
    """A report passed on as an attachment is read as that report (docs section 1)."""

    def test_forwarded_bounce_names_its_own_recipient(self) -> None:
        raw = _with_attached(b"From: Helpdesk <help@shop.example>\nTo: bounces@shop.example\n"
                             b"Subject: Fwd: Mail delivery failed\n",
                             b"Forwarding this one, see attached.\n", _INNER_BOUNCE)
        a = analyze(raw)
        self.assertEqual((a.category, recipients(raw), a.results[0].reason),
                         ("bounce", ["a@b.example"], "userunknown"))

    def test_mailman_uncaught_bounce_notification(self) -> None:
        # Mailman passes a bounce it could not read on to the list owner; the
        # attached report is a provider's own template (no mail-system From)
        inner = (b"From: Notifications <notify@provider.example>\nTo: s@shop.example\n"
                 b"Subject: Message status\n\nYour message to <a@b.example> was rejected "
                 b"because the mailbox is full.\n550 5.2.2 Mailbox full\n")
        raw = _with_attached(b"From: mylist-bounces@lists.example\n"
                             b"To: mylist-owner@lists.example\n"
                             b"Subject: Uncaught bounce notification\n",
                             b"The attached message was received as a bounce, but either the "
                             b"bounce\nformat was not recognized, or no member addresses could "
                             b"be extracted\nfrom it.\n", inner)
        a = analyze(raw)
        self.assertEqual((a.category, recipients(raw), a.results[0].reason),
                         ("bounce", ["a@b.example"], "mailboxfull"))

    def test_bounce_forwarded_inline(self) -> None:
        # webmail's inline forward: the report's own header lines, then its text; the
        # forwarded To: is the sender the report went back to, never a recipient
        raw = (b"From: Ann <ann@shop.example>\nTo: bounces@shop.example\n"
               b"Subject: Fwd: Mail delivery failed\n\nFYI\n\n"
               b"---------- Forwarded message ---------\n"
               b"From: Mail Delivery System <MAILER-DAEMON@mx.b.example>\n"
               b"Date: Thu, 29 Apr 2010 23:34:45 +0900\nSubject: Mail delivery failed\n"
               b"To: s@shop.example\n\n"
               b"A message that you sent could not be delivered to one or more of its\n"
               b"recipients. This is a permanent error. The following address(es) failed:\n\n"
               b"  a@b.example\n    550 5.1.1 User unknown\n")
        a = analyze(raw)
        self.assertEqual((a.category, recipients(raw)), ("bounce", ["a@b.example"]))
        quoted = raw.replace(b"\n---------- Forwarded", b"\n> ---------- Forwarded")
        head, _, body = quoted.partition(b"> ----------")
        quoted = head + b"> ----------" + body.replace(b"\n", b"\n> ")
        self.assertEqual(recipients(quoted), ["a@b.example"])

    def test_forwarded_inline_in_other_languages(self) -> None:
        # Outlook's and webmail's forward line, subject prefix and field names as their
        # users' languages write them; the forwarded To: is the sender, never a recipient
        report = (b"A message that you sent could not be delivered to one or more of its\n"
                  b"recipients. This is a permanent error. The following address(es) failed:\n\n"
                  b"  a@b.example\n    550 5.1.1 User unknown\n")
        for subject, fwd in (
                ("WG: Mail delivery failed", "-----Ursprüngliche Nachricht-----\nVon: Mail "
                 "Delivery System [mailto:MAILER-DAEMON@mx.b.example]\nGesendet: Montag\n"
                 "An: s@shop.example\nBetreff: Mail delivery failed\n"),
                ("TR: Mail delivery failed", "-----Message d'origine-----\nDe : Mail Delivery "
                 "System [mailto:MAILER-DAEMON@mx.b.example]\nEnvoyé : lundi 3 janvier 2005\n"
                 "À : s@shop.example\nObjet : Mail delivery failed\n"),
                ("RV: Mail delivery failed", "---------- Mensaje reenviado ---------\nDe: Mail "
                 "Delivery System <MAILER-DAEMON@mx.b.example>\nFecha: lun, 3 ene 2005\n"
                 "Asunto: Mail delivery failed\nPara: <s@shop.example>\n"),
                ("Doorst: Mail delivery failed", "-----Oorspronkelijk bericht-----\nVan: Mail "
                 "Delivery System [mailto:MAILER-DAEMON@mx.b.example]\nAan: s@shop.example\n"
                 "Onderwerp: Mail delivery failed\n")):
            raw = ("From: Ann <ann@shop.example>\nTo: it@shop.example\nSubject: " + subject +
                   "\nContent-Type: text/plain; charset=utf-8\n\nFYI\n\n" + fwd + "\n").encode()
            raw += report
            a = analyze(raw)
            self.assertEqual((recipients(raw), a.results[0].reason),
                             (["a@b.example"], "userunknown"), subject)

    def test_complaint_quoted_inline(self) -> None:
        # a helpdesk forwards a feedback report quoted: its fields (Feedback-Type not first)
        # and the original as text; the complaint's recipient is Original-Rcpt-To, else
        # the quoted original's To:
        arf = (b"This is an email abuse report.\n\n"
               b"--B\nContent-Type: message/feedback-report\n\n"
               b"Original-Rcpt-To: a@b.example\nFeedback-Type: abuse\nUser-Agent: FBL/1.0\n"
               b"Version: 1\n\n--B\nContent-Type: message/rfc822\n\n"
               b"From: news@shop.example\nTo: c@d.example\nSubject: Sale\n\nHello\n--B--\n")
        for body, want in ((arf, ["a@b.example"]),
                           (arf.replace(b"Original-Rcpt-To: a@b.example\n", b""),
                            ["c@d.example"])):
            raw = (b"From: FBL <fbl@isp.example>\nTo: abuse@shop.example\nSubject: Fw: report\n"
                   b"Content-Type: text/plain\n\n---------- Forwarded message ----------\n"
                   + b"\n".join(b"> " + x for x in body.split(b"\n")))
            a = analyze(raw)
            self.assertEqual((a.category, recipients(raw), a.results[0].feedback_type),
                             ("feedback", want, "abuse"))
        # a free-text bounce whose returned original (quoted) was a complaint is a bounce
        raw = (b"From: MAILER-DAEMON@mx.isp.example\nTo: abuse@shop.example\n"
               b"Subject: failure notice\n\nSorry, we were unable to deliver your message to "
               b"the following address.\n\n<fbl@isp.example>:\n550 5.1.1 user unknown\n\n"
               b"--- Below this line is a copy of the message.\n\n" + arf)
        self.assertEqual((analyze(raw).category, recipients(raw)),
                         ("bounce", ["fbl@isp.example"]))

    def test_forwarded_inline_non_report_is_what_it_is(self) -> None:
        # "Fwd: returned mail" over a forwarded ordinary message or auto-reply: the
        # forwarded message decides, not the forwarder's subject (perturb inline-forward)
        head = (b"From: Ann <ann@shop.example>\nTo: bounces@shop.example\n"
                b"Subject: Fwd: returned mail\nContent-Type: text/plain\n\nFYI, this came back."
                b"\n\n---------- Forwarded message ---------\n")
        raw = head + (b"From: Joe <joe@c.example>\nDate: Thu, 4 Jun 2009 11:40:01 -0700\n"
                      b"Subject: I like turtles\nTo: fred@c.example\n\nHi\n")
        self.assertEqual((analyze(raw).category, recipients(raw)), ("other", []))
        raw = head + (b"From: Joe <joe@c.example>\nSubject: Out of office: Sale\n"
                      b"To: news@shop.example\n\nI am out of the office until Monday.\n")
        self.assertEqual((analyze(raw).category, recipients(raw)),
                         ("autoreply", ["joe@c.example"]))

    def test_forward_of_a_forward(self) -> None:
        # a person forwards (quoting) what a colleague forwarded to them: two client lines,
        # two levels of quotes, then the report (bench/perturb.py quoted-inline make-test-36)
        raw = (b"From: Bob <bob@shop.example>\nTo: it@shop.example\n"
               b"Subject: Fwd: Fwd: Returned mail\nContent-Type: text/plain\n\n"
               b"---------- Forwarded message ----------\n> \n> Begin forwarded message:\n> \n"
               b"> > From: Mail Delivery Subsystem <MAILER-DAEMON@mx.b.example>\n"
               b"> > Subject: Returned mail: see transcript for details\n"
               b"> > To: <s@shop.example>\n> >\n"
               b"> > The original message was received at Thu, 16 Apr 2009 17:26:31 +0900\n"
               b"> > from smtp.shop.example [192.0.2.1]\n> >\n"
               b"> >    ----- The following addresses had permanent fatal errors -----\n"
               b"> > <a@b.example>\n> >     (reason: 550 5.1.1 User unknown)\n")
        a = analyze(raw)
        self.assertEqual((a.category, recipients(raw), a.results[0].reason),
                         ("bounce", ["a@b.example"], "userunknown"))

    def test_forwarded_non_bounce_is_not_a_bounce(self) -> None:
        inner = b"From: Bob <bob@c.example>\nTo: s@shop.example\nSubject: hi\n\nSee you.\n"
        raw = _with_attached(b"From: Ann <ann@shop.example>\nTo: s@shop.example\n"
                             b"Subject: Fwd: hi\n", b"FYI\n", inner)
        self.assertEqual(analyze(raw).category, "other")

    def test_bounce_of_a_bounce_is_about_its_own_recipient(self) -> None:
        # the outer report's text says its own delivery failed: the attached
        # bounce is its original, not the report
        raw = _with_attached(b"From: MAILER-DAEMON@relay.example\nTo: s@shop.example\n"
                             b"Subject: Undelivered Mail Returned to Sender\n",
                             b"Your message could not be delivered to <helpdesk@c.example>.\n"
                             b"550 5.1.1 <helpdesk@c.example>: User unknown\n", _INNER_BOUNCE)
        self.assertEqual(recipients(raw), ["helpdesk@c.example"])


    def test_quoted_bounce_of_a_bounce(self) -> None:
        # a person forwards, quoted, a DSN whose returned original was itself a DSN: the
        # fields up to the quoted original are the report's (perturb quoted-inline)
        dsn_fields = (b"Reporting-MTA: dns; relay.example\n\n"
                      b"Final-Recipient: rfc822; helpdesk@c.example\nAction: failed\n"
                      b"Status: 5.1.1\nDiagnostic-Code: smtp; 550 5.1.1 user unknown\n")
        inner_fields = (b"Reporting-MTA: dns; mx.b.example\n\n"
                        b"Final-Recipient: rfc822; a@b.example\nAction: failed\n"
                        b"Status: 5.3.5\nDiagnostic-Code: smtp; 553 5.3.5 system config error\n")
        body = (b"--A\nContent-Type: text/plain\n\nYour message could not be delivered.\n\n"
                b"--A\nContent-Type: message/delivery-status\n\n" + dsn_fields +
                b"\n--A\nContent-Type: message/rfc822\n\nFrom: MAILER-DAEMON@mx.b.example\n"
                b"Content-Type: multipart/report; report-type=delivery-status; boundary=B\n\n"
                b"--B\nContent-Type: message/delivery-status\n\n" + inner_fields +
                b"\n--B--\n\n--A--\n")
        raw = (b"From: Ann <ann@shop.example>\nTo: it@shop.example\nSubject: Fwd: bounce\n"
               b"Content-Type: text/plain\n\n---------- Forwarded message ----------\n"
               + b"\n".join(b"> " + x for x in body.split(b"\n")))
        a = analyze(raw)
        self.assertEqual([(r.recipient, r.reason) for r in a.results],
                         [("helpdesk@c.example", "userunknown")])


class TextOnlyReportTests(SynchronousTestCase):
    """A report without a delivery-status part names the same recipients in its text."""

    def _text(self, body: bytes) -> bytes:
        return (b"From: MAILER-DAEMON@mx.b.example\nTo: s@shop.example\n"
                b"Subject: Undelivered Mail Returned to Sender\n\n" + body)

    def test_postfix_alias_note_is_not_a_second_recipient(self) -> None:
        raw = self._text(b"This is the mail system at host mx.b.example.\n\n"
                         b"<r@mx.b.example> (expanded from <a@b.example>): user\n"
                         b"    unknown. Command output: procmail: No such user\n")
        self.assertEqual(recipients(raw), ["r@mx.b.example"])

    def test_sendmail_received_from_line_names_the_sender(self) -> None:
        raw = self._text(b"The original message was received at Thu, 9 Apr 1995 23:34:45\n"
                         b"from sender@shop.example\n\n"
                         b"   ----- The following addresses had delivery problems -----\n"
                         b"<a@b.example>  (unrecoverable error)\n")
        self.assertEqual(recipients(raw), ["a@b.example"])

    def test_contact_address_in_a_wrapped_reply(self) -> None:
        raw = self._text(b"<a@b.example>: host mx.b.example[192.0.2.1] said:\n"
                         b"    550-This message scored 8.4 spam points and has been rejected. "
                         b"550 Please\n    contact help@b.example for help. (in reply to\n"
                         b"    end of DATA command)\n")
        self.assertEqual(recipients(raw), ["a@b.example"])

    def test_the_sender_named_in_the_remote_reply(self) -> None:
        # (an Exchange gateway's re-rendering keeps only the remote's reply, which often
        # names the envelope sender: bench/perturb.py exchange-rerendered, 6 -> 2)
        for reply in (b"554 Mail from news@shop.example rejected for policy reasons.",
                      b"501 5.7.1 This system is not configured to relay mail (r) from "
                      b"<news@shop.example> to <a@b.example> for 127.0.0.1",
                      b"554 5.7.1 The message from (<news@shop.example>) with the subject of "
                      b"(foo) matches a profile the Internet community may consider spam.",
                      b"553 5.1.8 <news@shop.example>... Domain of sender address "
                      b"news@shop.example does not exist"):
            raw = self._text(b"Delivery has failed to these recipients or groups:\n\n"
                             b"a@b.example (a@b.example)\n\nDiagnostic information for "
                             b"administrators:\n\na@b.example\nRemote Server returned '"
                             + reply + b"'\n")
            self.assertEqual(recipients(raw), ["a@b.example"], reply)

    def test_sender_words_end_their_line(self) -> None:
        # the next recipient of a list after a reply that ends in "sender address"
        raw = self._text(b"The following address(es) failed:\n\n"
                         b"  a@b.example\n    SMTP error from remote mail server after MAIL "
                         b"FROM:<news@shop.example> SIZE=1024:\n    550 Unroutable sender address\n"
                         b"  c@b.example\n    SMTP error from remote mail server after MAIL "
                         b"FROM:<news@shop.example> SIZE=1024:\n"
                         b"    550 Unroutable sender address\n")
        self.assertEqual(recipients(raw), ["a@b.example", "c@b.example"])

    def test_original_headers_in_any_case_or_quoted(self) -> None:
        # the returned original's header block starts the original, whatever the case
        # of its field names (RFC 5322 1.2.2) and when a person quoted the report
        body = (b"A message that you have sent could not be delivered to one or more\n"
                b"recipients.  This is a permanent error.  The following address failed:\n\n"
                b"<a@b.example>: 550 unknown user\n\n"
                b"Included is a copy of the message header:\n"
                b"-----------------------------------------\n"
                b"Received: from mx.shop.example (mx.shop.example [192.0.2.9])\n"
                b"    by mx.b.example with ESMTP id 12345\n"
                b"    for <other@b.example>; Thu, 29 Apr 2009 23:34:45 +0900\n"
                b"From: news@shop.example\nTo: a@b.example\n")
        for variant in (body, body.replace(b"Received:", b"RECEIVED:"),
                        b"\n".join(b"> " + x for x in body.split(b"\n"))):
            self.assertEqual(recipients(self._text(variant)), ["a@b.example"], variant[-200:])

    def test_whom_to_ask_however_it_is_said(self) -> None:
        # (Sendmail transcripts of a remote's block-list reply; a contact line of a gateway)
        for words in (b"(Ask your postmaster for help or to contact help@b.example to clarify.)",
                      b"Contact: help@b.example", b"or e-mail us at help@b.example",
                      b"Contacting help@b.example may help.", b"write to help@b.example"):
            raw = self._text(b"   ----- The following addresses had permanent fatal errors -----\n"
                             b"<a@b.example>\n    (reason: 554 IP=192.0.2.254 - refused. "
                             + words + b")\n")
            self.assertEqual(recipients(raw), ["a@b.example"], words)


class RecipientListTests(SynchronousTestCase):
    """Recipients listed together are all failed recipients, whatever words each one has."""

    def _text(self, body: bytes) -> bytes:
        return (b"From: MAILER-DAEMON@mx.b.example\nTo: s@shop.example\n"
                b"Subject: Mail delivery failed\n\n" + body)

    def test_one_to_a_line_then_one_reason(self) -> None:
        raw = self._text(b"The addresses to which the message has not yet been delivered are:\n\n"
                         b"  a@b.example\n  c@d.example\n\nNo action is required on your part. "
                         b"Delivery attempts will continue for some time.\n")
        self.assertEqual(recipients(raw), ["a@b.example", "c@d.example"])

    def test_listed_recipients_share_the_reason_that_follows(self) -> None:
        # the notice's opening words before the list ("failed permanently", "I've given
        # up") say that the delivery failed, not why: the words after the list are the
        # reason of every recipient in it, whatever the first one's address says
        raw = self._text(b"Delivery to the following recipient failed permanently:\n\n"
                         b"     userunknown@b.example\n     c@d.example\n\n"
                         b"Technical details of permanent failure:\nThe error that the other "
                         b"server returned was:\n550 5.1.1 <userunknown@b.example>... User "
                         b"Unknown\n")
        got = {r.recipient: r.reason for r in analyze(raw).results}
        self.assertEqual(got, {"userunknown@b.example": "userunknown",
                               "c@d.example": "userunknown"})
        # (the second address added to a one-recipient report: the first keeps its reason)
        one = self._text(b"Hi. This is the qmail-send program at mx.b.example.\nI'm afraid I "
                         b"wasn't able to deliver your message to the following addresses.\n"
                         b"This is a permanent error; I've given up. Sorry it didn't work "
                         b"out.\n\n<a@b.example>:\nConnected to 192.0.2.1 but my name was "
                         b"rejected.\nRemote host said: 501 5.0.0 Rejected\n")
        want = analyze(one).results[0].reason
        self.assertEqual(want, "blocked")
        two = one.replace(b"<a@b.example>:\n", b"<a@b.example>:\n<c@d.example>:\n")
        got = {r.recipient: r.reason for r in analyze(two).results}
        self.assertEqual(got, {"a@b.example": want, "c@d.example": want})
        # the words after the list state the failure: the opening line's "delayed" is
        # not added to them for two recipients when it is not for one
        one = self._text(b"Delivery to the following recipient has been delayed:\n\n"
                         b"     a@b.example\n\nMessage will be retried for 2 more day(s)\n\n"
                         b"Technical details of temporary failure:\nConnection was dropped by "
                         b"remote host (SENT_HELO)\n")
        want = analyze(one).results[0].reason
        self.assertEqual(want, "blocked")   # (the server greeted us, then closed at HELO)
        two = one.replace(b"a@b.example\n", b"a@b.example\n     c@d.example\n")
        got = {r.recipient: r.reason for r in analyze(two).results}
        self.assertEqual(got, {"a@b.example": want, "c@d.example": want})

    def test_entries_with_their_own_reasons(self) -> None:
        # the first entry's reason has no word of a failure family; it is one entry of
        # the list the report calls failed
        raw = self._text(b"A message that you sent could not be delivered to one or more of its\n"
                         b"recipients. This is a permanent error. The following address(es) "
                         b"failed:\n\n  a@b.example\n    an MX or SRV record indicated no SMTP "
                         b"service\n  c@d.example\n    550 5.1.1 User unknown\n")
        self.assertEqual(recipients(raw), ["a@b.example", "c@d.example"])

    def test_reason_not_recognised(self) -> None:
        raw = self._text(b"did not reach the following recipient(s):\n\n"
                         b"a@b.example on Thu, 29 Apr 2010 00:00:00 -0000\n"
                         b"    The recipient name is not recognized\n"
                         b"c@d.example on Thu, 29 Apr 2010 00:00:00 -0000\n"
                         b"    The recipient name is not recognized\n")
        self.assertEqual(recipients(raw), ["a@b.example", "c@d.example"])


class QuotedAddressTests(SynchronousTestCase):
    """An address in single quotes is the address, not a local part starting with "'"."""

    def test_single_quoted_in_text(self) -> None:
        raw = (b"From: MAILER-DAEMON@mx.b.example\nTo: s@shop.example\n"
               b"Subject: Undeliverable\n\nDelivery to the following recipient failed:\n\n"
               b"    'a@b.example'\n\n550 'a@b.example' is not a registered gateway user\n"
               b"For further assistance, please contact 'help@b.example'\n")
        self.assertEqual(recipients(raw), ["a@b.example"])

    def test_single_quoted_field(self) -> None:
        raw = dsn("Final-Recipient: rfc822; 'a@b.example'\r\nAction: failed\r\n"
                  "Status: 5.1.1\r\n")
        self.assertEqual(recipients(raw), ["a@b.example"])

    def test_apostrophe_inside_a_local_part_stays(self) -> None:
        raw = dsn("Final-Recipient: rfc822; o'brien@b.example\r\nAction: failed\r\n"
                  "Status: 5.1.1\r\n")
        self.assertEqual(recipients(raw), ["o'brien@b.example"])


class HtmlNotificationTests(SynchronousTestCase):
    """An HTML-only notification names the same recipients as its text would."""

    def test_mailto_links_are_their_text(self) -> None:
        raw = (b"From: Mail Delivery System <MAILER-DAEMON@mx.b.example>\n"
               b"To: s@shop.example\nSubject: Mail delivery failed\n"
               b"Content-Type: text/html; charset=utf-8\n\n"
               b"<html><body><p>A message sent by<br>\n"
               b"&lt;<a href=\"mailto:s@shop.example\">s@shop.example</a>&gt;<br>\n"
               b"could not be delivered. The following address(es) failed:</p><p>"
               b"<a href=\"mailto:a@b.example\">a@b.example</a><br>\n"
               b"(ultimately generated from <a href=\"mailto:list@b.example\">"
               b"list@b.example</a>)<br>\nall hosts have been failing for a long time"
               b"</p></body></html>\n")
        self.assertEqual(recipients(raw), ["a@b.example"])


class UnnamedRecipientFieldsTests(SynchronousTestCase):
    """A delivery-status part whose per-recipient blocks leave the recipient fields out:
    the recipients are those the notification names, in order, each with its block's
    status and diagnostic (bench/perturb.py no-final-recipient: 48 reasons changed, 2 now)."""

    def test_one_block_status_decides_for_the_named_recipient(self) -> None:
        raw = dsn("Action: failed\r\nStatus: 5.2.2\r\n"
                  "Diagnostic-Code: smtp; 552 5.2.2 mailbox full\r\n",
                  note="Delivery to the following recipient failed:\r\n\r\n"
                       "   ann@b.example\r\n")
        p = to_prediction(analyze(raw), "x")
        self.assertEqual((p["recipients"], p["reason"], p["status"]),
                         (["ann@b.example"], "mailboxfull", "5.2.2"))

    def test_two_blocks_in_the_order_the_text_names_them(self) -> None:
        raw = dsn("Action: failed\r\nStatus: 5.1.1\r\n"
                  "Diagnostic-Code: smtp; 550 5.1.1 user unknown\r\n\r\n"
                  "Action: failed\r\nStatus: 5.2.2\r\n"
                  "Diagnostic-Code: smtp; 552 5.2.2 mailbox full\r\n",
                  note="Delivery to these recipients failed:\r\n\r\n"
                       "ann@b.example\r\n   user unknown\r\n"
                       "bob@b.example\r\n   mailbox full\r\n")
        a = analyze(raw)
        self.assertEqual([(r.recipient, r.reason, r.hard) for r in a.results],
                         [("ann@b.example", "userunknown", True),
                          ("bob@b.example", "mailboxfull", False)])

    def test_block_without_diagnostic_reads_the_recipients_words(self) -> None:
        raw = dsn("Action: failed\r\nStatus: 5.0.0\r\n",
                  note="Your message cannot be delivered to the following recipients:\r\n\r\n"
                       "  Recipient address: ann@b.example\r\n"
                       "  Reason: recipient reached disk quota\r\n")
        p = to_prediction(analyze(raw), "x")
        self.assertEqual((p["recipients"], p["reason"]), (["ann@b.example"], "mailboxfull"))

    def test_blocks_that_cannot_be_paired_fall_back_to_the_text(self) -> None:
        # two blocks, one recipient named: the fields are not guessed onto it
        raw = dsn("Action: failed\r\nStatus: 5.1.1\r\n\r\nAction: failed\r\nStatus: 5.2.2\r\n",
                  note="Delivery to the following recipient failed permanently:\r\n\r\n"
                       "   ann@b.example\r\n\r\nThe mailbox is full.\r\n")
        p = to_prediction(analyze(raw), "x")
        self.assertEqual((p["recipients"], p["reason"]), (["ann@b.example"], "mailboxfull"))


class MixedOutcomeTests(SynchronousTestCase):
    """A report of several recipients with different outcomes (RFC 3464 2.3.3): the ones
    delivered, relayed or expanded did not bounce; the failed ones keep their reason, and
    the notification's words (its stage) are about them (perturb mixed-outcomes: 36
    recipient sets and 39 reasons changed, 0 now)."""

    _FAILED = ("Final-Recipient: rfc822; bad@b.example\r\nAction: failed\r\nStatus: 5.0.0\r\n"
               "Diagnostic-Code: smtp; 550 user unknown\r\n")

    def test_delivered_first_is_not_a_bounced_recipient(self) -> None:
        for action in ("delivered", "relayed", "expanded"):
            raw = dsn("Final-Recipient: rfc822; ok@b.example\r\nAction: " + action +
                      "\r\nStatus: 2.0.0\r\n\r\n" + self._FAILED,
                      note="... while talking to mx.b.example.:\r\n>>> RCPT To:<bad@b.example>\r\n"
                           "<<< 550 user unknown\r\n")
            p = to_prediction(analyze(raw), "x")
            self.assertEqual((p["category"], p["recipients"], p["reason"], p["hard"]),
                             ("bounce", ["bad@b.example"], "userunknown", True), action)
            self.assertEqual([r.action for r in analyze(raw).results], [action, "failed"])

    def test_a_delayed_recipient_still_counts(self) -> None:
        raw = dsn("Final-Recipient: rfc822; later@b.example\r\nAction: delayed\r\n"
                  "Status: 4.2.2\r\nDiagnostic-Code: smtp; 452 4.2.2 mailbox full\r\n\r\n"
                  + self._FAILED)
        p = to_prediction(analyze(raw), "x")
        self.assertEqual((p["recipients"], p["reason"]),
                         (["later@b.example", "bad@b.example"], "mailboxfull"))

    def test_failed_block_with_an_unreadable_address_beside_a_delivered_one(self) -> None:
        raw = dsn("Final-Recipient: rfc822; ok@b.example\r\nAction: relayed\r\n"
                  "Status: 2.0.0\r\n\r\nFinal-Recipient: rfc822; @mx.b.example\r\n"
                  "Action: failed\r\nStatus: 5.1.2\r\n",
                  note="   ----- The following addresses had permanent fatal errors -----\r\n"
                       "<bad@nx.example>\r\n    (reason: 550 Host unknown)\r\n")
        p = to_prediction(analyze(raw), "x")
        self.assertEqual((p["category"], p["recipients"], p["reason"]),
                         ("bounce", ["bad@nx.example"], "hostunknown"))


#: Perturbations that keep every piece of information a report gives (the others,
#: which drop a part or forward the report, can lose the only place a recipient
#: is named; bench/perturb.py reports them too).
KEEPING = ("crlf", "mixed-endings", "cr-only", "angle-brackets", "no-address-type",
           "folded-field", "upper-case", "original-only", "dsn-as-text", "report-as-mixed",
           "headers-only", "base64-body", "trailing-space", "upper-addresses",
           "help-line", "html-only", "lower-fields", "utf8-address-type", "no-dates",
           "windows-1252", "qp-body", "iso-2022-jp", "mixed-outcomes", "parts-base64",
           "exchange-rerendered", "exchange2003-notice", "german-notice", "html-table-notice",
           "signature", "disclaimer", "spelled-upper-dot", "spelled-mailto",
           "spelled-quoted-local", "spelled-spaced-brackets", "spelled-imceasmtp",
           "spelled-imceaex", "spelled-idn", "spelled-display-name", "spelled-encoded-word",
           "spelled-percent",
           "original-to-encoded")


class TransportPropertyTests(SynchronousTestCase):
    """Over the public corpus: no information-keeping perturbation changes who bounced."""

    def test_recipient_set_survives_transport(self) -> None:
        corpus = require_corpus()
        d = os.path.join(corpus, "emails")
        fns = dict(transport.PERTURBATIONS)
        changed = []
        for name in sorted(os.listdir(d)):
            if not name.endswith(".eml"):
                continue
            with open(os.path.join(d, name), "rb") as fp:
                raw = fp.read()
            base = recipients(raw)
            for p in KEEPING:
                new = fns[p](raw)
                if new is not None and new != raw and recipients(new) != base:
                    changed.append((name, p))
        self.assertEqual(changed, [])


class PerturbationFoundClassesTests(SynchronousTestCase):
    """Classes bench/perturb.py found (issue 22, recipients on unseen mail), each held
    both ways: the reading that was fixed, and the confusable case beside it."""

    def _text(self, body: bytes, original: bytes = b"") -> bytes:
        return (b"From: MAILER-DAEMON@mx.b.example\nTo: s@shop.example\n"
                b"Subject: Undelivered Mail Returned to Sender\n\n" + body + original)

    # -- a system address (postmaster@, root@) that starts an entry of the failed list
    def test_system_address_starting_an_entry_is_a_recipient(self) -> None:
        # OpenSMTPD ("postmaster@x: Domain does not exist") and Biglobe (the address
        # alone on its line, under "The following addresses had delivery problems")
        raw = self._text(b"An error has occurred while attempting to deliver a message for\n"
                         b"the following list of recipients:\n\n"
                         b"postmaster@nx.example: Domain does not exist\n"
                         b"a@b.example: Domain does not exist\n")
        self.assertEqual(recipients(raw), ["a@b.example", "postmaster@nx.example"])
        raw = self._text(b"   ----- The following addresses had delivery problems -----\n"
                         b"postmaster@b.example\na@b.example\n\n"
                         b"   ----- Non-delivered information -----\n"
                         b"The number of messages in recipient's mailbox exceeded the local "
                         b"limit.\n")
        self.assertEqual(recipients(raw), ["a@b.example", "postmaster@b.example"])

    def test_system_address_named_in_a_sentence_is_whom_to_ask(self) -> None:
        raw = self._text(b"<a@b.example>: host mx.b.example[192.0.2.1] said: 550 5.1.1 "
                         b"user unknown (in reply to RCPT TO command)\n\n"
                         b"Questions go to postmaster@b.example, not to this address.\n")
        self.assertEqual(recipients(raw), ["a@b.example"])

    # -- a complaint whose original is addressed to several
    def _arf(self, to: bytes) -> bytes:
        return (b"From: fbl@isp.example\nTo: fbl@shop.example\nSubject: complaint\n"
                b"MIME-Version: 1.0\nContent-Type: multipart/report; "
                b"report-type=feedback-report; boundary=\"B\"\n\n"
                b"--B\nContent-Type: text/plain\n\nA complaint.\n\n"
                b"--B\nContent-Type: message/feedback-report\n\n"
                b"Feedback-Type: abuse\nVersion: 1\nUser-Agent: FBL/1.0\n\n"
                b"--B\nContent-Type: message/rfc822\n\nFrom: Shop <news@shop.example>\n"
                b"To: " + to + b"\nSubject: Sale\n\nHello\n\n--B--\n")

    def test_complaint_about_an_original_to_one_names_it(self) -> None:
        self.assertEqual(recipients(self._arf(b"<a@b.example>")), ["a@b.example"])

    def test_complaint_about_an_original_to_several_names_no_one(self) -> None:
        # (whose complaint it is, the To: cannot say: suppressing all would punish the
        # others)
        a = analyze(self._arf(b"Team <team@list.example>, a@b.example, c@d.example"))
        self.assertEqual((a.category, recipients(self._arf(
            b"Team <team@list.example>, a@b.example, c@d.example"))), ("feedback", []))

    # -- Microsoft JMRP forwarded inline
    def test_jmrp_quoted_inline_names_its_recipient(self) -> None:
        raw = (b"From: Helpdesk <help@isp.example>\nTo: abuse@shop.example\n"
               b"Subject: Fwd: complaint about message from 192.0.2.1\n"
               b"Content-Type: text/plain\n\n---------- Forwarded message ----------\n"
               b"> From: staff@hotmail.example\n> Subject: complaint about message\n>\n"
               b"> --F0\n> Content-Type: message/rfc822\n>\n"
               b"> X-HmXmrOriginalRecipient: a@b.example\n> To: a@b.example\n"
               b"> From: News <news@shop.example>\n> Subject: Sale\n>\n> Hello\n")
        a = analyze(raw)
        self.assertEqual((a.category, recipients(raw)), ("feedback", ["a@b.example"]))

    def test_jmrp_field_name_in_prose_is_not_a_complaint(self) -> None:
        raw = self._text(b"<a@b.example>: host mx.b.example[192.0.2.1] said: 550 5.1.1 "
                         b"user unknown; the X-HmXmrOriginalRecipient: field is unknown here\n")
        self.assertEqual(analyze(raw).category, "bounce")

    # -- a bounce of a bounce (Sendmail's postmaster notice of a double bounce)
    _INNER = (b"--B\nContent-Type: message/rfc822\n\n"
              b"From: Mail Delivery Subsystem <MAILER-DAEMON>\n"
              b"To: <forged@yahoo.example>\nSubject: Returned mail\nMIME-Version: 1.0\n"
              b"Content-Type: multipart/report; report-type=delivery-status; boundary=\"I\"\n\n"
              b"--I\nContent-Type: text/plain\n\n...\n\n"
              b"--I\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx2\n\n"
              b"Final-Recipient: RFC822; inner@neko.example\nAction: failed\n"
              b"Status: 5.3.5\nDiagnostic-Code: SMTP; 553 5.3.5 system config error\n\n"
              b"--I\nContent-Type: message/rfc822\n\nFrom: \"X\" <forged@yahoo.example>\n"
              b"To: inner@neko.example\nSubject: Hi\n\nHi\n\n--I--\n\n--B--\n")

    def _double(self, text: bytes) -> bytes:
        return (b"From: Mail Delivery Subsystem <MAILER-DAEMON@mx2.example>\n"
                b"To: postmaster@mx2.example\nSubject: Postmaster notify: see transcript\n"
                b"MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"B\"\n\n"
                b"--B\nContent-Type: text/plain\n\n" + text + b"\n" + self._INNER)

    def test_double_bounce_names_the_bounce_recipient(self) -> None:
        raw = self._double(b"<forged@yahoo.example>\n\n... while talking to mx.yahoo.example.:\n"
                           b">>> DATA\n<<< 554 delivery error: dd This user doesn't have a "
                           b"yahoo.example account (forged@yahoo.example)\n"
                           b"554 5.0.0 Service unavailable\n")
        self.assertEqual(recipients(raw), ["forged@yahoo.example"])

    def test_forwarded_report_with_empty_text_reads_the_inner_report(self) -> None:
        raw = self._double(b"The original message was received at Thu Oct 13 15:22:22 2015\n\n"
                           b"----- The following addresses had permanent delivery errors -----\n")
        self.assertEqual(recipients(raw), ["inner@neko.example"])

    # -- an address only in a remote's quoted reply
    def test_address_only_in_a_quoted_reply_is_not_a_second_recipient(self) -> None:
        raw = self._text(b"   ----- The following addresses had permanent fatal errors -----\n"
                         b"<a@b.example>\n    (reason: 550 #5.1.0 Address rejected)\n\n"
                         b"   ----- Transcript of session follows -----\n"
                         b"... while talking to mx.b.example.:\n>>> RCPT To:<a@b.example>\n"
                         b"<<< 550 #5.1.0 Address rejected other@b.example\n"
                         b"550 5.1.1 <a@b.example>... User unknown\n")
        self.assertEqual(recipients(raw), ["a@b.example"])

    def test_address_only_in_a_reply_when_nothing_else_names_one(self) -> None:
        raw = self._text(b"   ----- Transcript of session follows -----\n"
                         b"... while talking to mx.b.example.:\n>>> DATA\n"
                         b"<<< 550 5.1.1 <a@b.example>... User unknown\n")
        self.assertEqual(recipients(raw), ["a@b.example"])

    # -- the original's sender, named by the text as a failed entry
    def test_alias_back_to_the_sender_is_the_failed_recipient(self) -> None:
        # Postfix: the original was sent by a@g.example to an alias that led back to it
        raw = self._text(b"This is the mail system at host mx.b.example.\n\n"
                         b"<a@g.example> (expanded from <alias@b.example>): host "
                         b"mx.g.example[192.0.2.2] said: 550 5.7.1 unauthenticated mail "
                         b"(in reply to end of DATA command)\n",
                         b"\n--- Original message follows ---\n\nFrom: a@g.example\n"
                         b"To: alias@b.example\nSubject: Hi\n\nHi\n")
        self.assertEqual(recipients(raw), ["a@g.example"])

    def test_sender_named_in_a_sentence_is_not_a_recipient(self) -> None:
        raw = self._text(b"Your message from a@g.example could not be delivered.\n\n"
                         b"<r@b.example>: host mx.b.example[192.0.2.2] said: 550 5.1.1 "
                         b"user unknown (in reply to RCPT TO command)\n",
                         b"\n--- Original message follows ---\n\nFrom: a@g.example\n"
                         b"To: r@b.example\nSubject: Hi\n\nHi\n")
        self.assertEqual(recipients(raw), ["r@b.example"])

    # -- a report forwarded inline, quoted: its list of failed addresses still read
    def test_quoted_failed_list_is_read(self) -> None:
        raw = (b"From: Ann <ann@shop.example>\nTo: bounces@shop.example\n"
               b"Subject: Fwd: Mail delivery failed\nContent-Type: text/plain\n\n"
               b"---------- Forwarded message ----------\n"
               b"> This message was created automatically by mail delivery software.\n>\n"
               b"> A message that you sent could not be delivered to one or more of\n"
               b"> its recipients. This is a permanent error. The following address(es)\n"
               b"> failed:\n>\n> a@b.example:\n"
               b"> SMTP error from remote server for TEXT command, host: mx.b.example\n")
        self.assertEqual(recipients(raw), ["a@b.example"])

    # -- a text naming no one, its original addressed to several
    def test_original_to_one_names_the_recipient(self) -> None:
        raw = self._text(b"Your message could not be delivered. This is a permanent error.\n",
                         b"\n--- Original message follows ---\n\nFrom: s@shop.example\n"
                         b"To: a@b.example\nSubject: Hi\n\nHi\n")
        self.assertEqual(recipients(raw), ["a@b.example"])

    def test_original_to_several_names_no_one(self) -> None:
        raw = self._text(b"Your message could not be delivered. This is a permanent error.\n",
                         b"\n--- Original message follows ---\n\nFrom: s@shop.example\n"
                         b"To: team@list.example, a@b.example\nSubject: Hi\n\nHi\n")
        self.assertEqual(recipients(raw), [])


class GatewayNoticeTests(SynchronousTestCase):
    """Notices a gateway writes of its own (probes german-notice and html-table-notice in
    tests/bounce/transport.py; 290 recipient sets changed by the HTML table one before its
    cells were read apart, 0 now)."""

    def _html(self, html: bytes) -> bytes:
        return (b"From: Postmaster <postmaster@gw.example>\nTo: <bounces@shop.example>\n"
                b"Subject: Undeliverable: Sale\nMIME-Version: 1.0\n"
                b"Content-Type: text/html; charset=utf-8\n\n" + html)

    def test_table_cells_are_apart(self) -> None:
        raw = self._html(b"<html><body><p>Your message couldn't be delivered.</p><table>"
                         b"<tr><th>Recipient</th><th>Reply</th></tr><tr><td>a@b.example</td>"
                         b"<td class=\"r\">550 5.1.1 user unknown</td></tr></table></body>"
                         b"</html>\n")
        p = to_prediction(analyze(raw), "x")
        self.assertEqual((p["recipients"], p["reason"]), (["a@b.example"], "userunknown"))

    def test_an_address_inside_one_cell_stays_whole(self) -> None:
        raw = self._html(b"<html><body><p>Your message couldn't be delivered.</p><table><tr>"
                         b"<td>Delivery to a@b.example failed: 550 5.1.1 user unknown</td>"
                         b"</tr></table></body></html>\n")
        self.assertEqual(recipients(raw), ["a@b.example"])

    def test_recipient_named_only_in_a_german_notice(self) -> None:
        raw = ("From: Mail-System <mailer-daemon@gw.example.de>\nTo: <bounces@shop.example>\n"
               "Subject: Unzustellbar: Sale\nContent-Type: text/plain; charset=utf-8\n\n"
               "Ihre Nachricht konnte an folgende Empfänger nicht zugestellt werden:\n\n"
               "    a@b.example\n    Antwort des Servers: 550 5.1.1 user unknown\n").encode()
        self.assertEqual(recipients(raw), ["a@b.example"])


class PassedOnTogetherTests(SynchronousTestCase):
    """Several reports forwarded as attachments in one message (a helpdesk's "forward as
    attachments", a digest): the recipients of each (bench/perturb.py forwarded-pair:
    1084 of 1084 lost one report's recipients, 0 now)."""

    def _report(self, rcpt: bytes) -> bytes:
        return (b"From: Mail Delivery System <MAILER-DAEMON@mx.b.example>\n"
                b"To: <bounces@shop.example>\nSubject: Undelivered Mail Returned to Sender\n\n"
                b"<" + rcpt + b">: host mx.b.example[192.0.2.1] said: 550 5.1.1 user "
                b"unknown (in reply to RCPT TO command)\n")

    def _forward(self, *msgs: bytes, digest: bool = False) -> bytes:
        parts = b"".join(b"--D\nContent-Type: message/rfc822\n\n" + m + b"\n" for m in msgs)
        if digest:
            parts = (b"--M\nContent-Type: multipart/digest; boundary=\"D\"\n\n" + parts
                     + b"--D--\n")
        else:
            parts = parts.replace(b"--D\n", b"--M\n")
        return (b"From: Help Desk <help@shop.example>\nTo: bounces@shop.example\n"
                b"Subject: Fw: returned mail\nMIME-Version: 1.0\n"
                b"Content-Type: multipart/mixed; boundary=\"M\"\n\n"
                b"--M\nContent-Type: text/plain\n\nThese came back.\n\n" + parts + b"--M--\n")

    def test_each_forwarded_report_counts(self) -> None:
        for digest in (False, True):
            raw = self._forward(self._report(b"a@b.example"), self._report(b"c@b.example"),
                                digest=digest)
            self.assertEqual(recipients(raw), ["a@b.example", "c@b.example"], digest)

    def test_a_persons_message_beside_a_report_is_not_one(self) -> None:
        note = (b"From: Ann <ann@shop.example>\nTo: help@shop.example\nSubject: this one\n\n"
                b"Please look at the bounce from bob@d.example too.\n")
        raw = self._forward(self._report(b"a@b.example"), note)
        self.assertEqual(recipients(raw), ["a@b.example"])


class SignOffTests(SynchronousTestCase):
    """A notice signed by the reporter's team, its address on a line of its own (probes
    signature and signed-off: 93 and 94 of 358 recipient sets changed, 0 and 2 now)."""

    def _text(self, body: bytes, headers: bytes = b"") -> bytes:
        return (b"From: MAILER-DAEMON@mx.b.example\nTo: s@shop.example\n" + headers +
                b"Subject: Undelivered Mail Returned to Sender\n\n" + body)

    def test_signature_after_the_separator_is_not_a_recipient(self) -> None:
        for sep in (b"-- ", b"--"):
            raw = self._text(b"<a@b.example>: host mx.b.example[192.0.2.1] said: 550 5.1.1 "
                             b"user unknown (in reply to RCPT TO command)\n\n" + sep +
                             b"\nThe Mail Team\nhelp@isp.example\n")
            self.assertEqual(recipients(raw), ["a@b.example"], sep)

    def test_a_separator_before_the_failure_is_not_a_signature(self) -> None:
        raw = self._text(b"This is an automatically generated notice.\n--\n"
                         b"Delivery to a@b.example failed: 550 5.1.1 user unknown\n")
        self.assertEqual(recipients(raw), ["a@b.example"])

    def test_team_address_signing_off_is_not_a_recipient(self) -> None:
        raw = self._text(b"<a@b.example>: host mx.b.example[192.0.2.1] said: 550 5.1.1 "
                         b"user unknown (in reply to RCPT TO command)\n\n"
                         b"Regards,\nThe Mail Team\nhelp@isp.example\n")
        self.assertEqual(recipients(raw), ["a@b.example"])

    def test_last_entry_of_a_list_is_a_recipient(self) -> None:
        # (under another address, or a heading, or with its failure after it)
        for body in (b"Delivery to these recipients failed: 550 5.1.1 user unknown\n\n"
                     b"a@b.example\nc@d.example\n",
                     b"<a@b.example>: 550 5.1.1 user unknown\n\nAlso failed:\nc@d.example\n",
                     b"<a@b.example>: 550 5.1.1 user unknown\n\nThe mailbox of\nc@d.example\n"
                     b"is full: 552 5.2.2\n"):
            self.assertEqual(recipients(self._text(body)), ["a@b.example", "c@d.example"],
                             body)

    def test_system_address_signing_off_is_not_a_recipient(self) -> None:
        raw = self._text(b"<a@b.example>: host mx.b.example[192.0.2.1] said: 550 5.1.1 "
                         b"user unknown (in reply to RCPT TO command)\n\nQuestions?\n"
                         b"postmaster@isp.example\n")
        self.assertEqual(recipients(raw), ["a@b.example"])

    def test_x_failed_recipients_over_a_text_naming_none_of_them(self) -> None:
        raw = self._text(b"A message that you sent could not be delivered to one or more of "
                         b"its recipients. This is a permanent error.\n\n  save to xxxx\n"
                         b"    mailbox is full: retry timeout exceeded\n\n"
                         b"Regards,\nThe Mail Team\nhelp@isp.example\n",
                         b"X-Failed-Recipients: a@b.example\n")
        self.assertEqual(recipients(raw), ["a@b.example"])


class DisclaimerTests(SynchronousTestCase):
    """A gateway's disclaimer or abuse footer under the notice names whom to write to (probe
    disclaimer: 93 of 358 recipient sets changed, 0 now)."""

    def _text(self, body: bytes) -> bytes:
        return (b"From: MAILER-DAEMON@mx.b.example\nTo: s@shop.example\n"
                b"Subject: Undelivered Mail Returned to Sender\n\n<a@b.example>: host "
                b"mx.b.example[192.0.2.1] said: 550 5.1.1 user unknown (in reply to RCPT TO "
                b"command)\n\n" + body)

    def test_addresses_to_notify_or_report_to_are_not_recipients(self) -> None:
        for footer in (b"If you received it in error, please notify privacy@corp.example.",
                       b"Please notify us immediately at privacy@corp.example",
                       b"notify the sender immediately at\n  privacy@corp.example",
                       b"Please inform privacy@corp.example and delete it.",
                       b"Report abuse to abuse-desk@corp.example"):
            self.assertEqual(recipients(self._text(footer + b"\n")), ["a@b.example"], footer)

    def test_mail_to_an_address_names_the_recipient(self) -> None:
        # ("There was an error delivering your mail to <x>", "You sent mail to x": where
        # the failed mail went; a delivery report to x is x's)
        for text in (b"There was an error delivering your mail to <c@d.example>.\n",
                     b"You sent mail to c@d.example. That's not a valid user here.\n",
                     b"Delivery report to c@d.example: 550 5.1.1 user unknown\n"):
            self.assertEqual(recipients(self._text(text)), ["a@b.example", "c@d.example"],
                             text)


class DeliveredListedTests(SynchronousTestCase):
    """A report's text listing recipients it delivered beside those it failed (RFC 3464
    2.3.3 outcomes in words; probe delivered-listed: 105 of 169 recipient sets changed,
    3 now, whose texts name no failed recipient we can take)."""

    def _text(self, body: bytes) -> bytes:
        return (b"From: MAILER-DAEMON@mx.b.example\nTo: s@shop.example\n"
                b"Subject: Delivery Status Notification (Failure)\n\n" + body)

    def test_recipients_under_a_success_heading_did_not_bounce(self) -> None:
        for body in (b"Delivery to the following recipients succeeded:\n\n   c@d.example\n"
                     b"   e@f.example\n\nDelivery to the following recipients failed:\n\n"
                     b"   a@b.example\n   550 5.1.1 user unknown\n",
                     b"   ----- The following addresses had successful delivery "
                     b"notifications -----\n<c@d.example>\n\n   ----- The following addresses "
                     b"had permanent fatal errors -----\n<a@b.example>\n"
                     b"    (reason: 550 5.1.1 User unknown)\n"):
            self.assertEqual(recipients(self._text(body)), ["a@b.example"], body)

    def test_a_failure_after_a_success_list_still_counts(self) -> None:
        # (its own line states the failure; a list under another heading, or none, whose
        # entries do not line up with the delivered ones)
        for body in (b"Delivery to the following recipients succeeded:\n\n   c@d.example\n\n\n"
                     b"User mailbox exceeds allowed size: a@b.example\n",
                     b"Delivery to the following recipients succeeded:\n\n   c@d.example\n\n\n"
                     b"<a@b.example>\n\nEach of the following recipients was rejected by a "
                     b"remote mail server.\n"):
            self.assertEqual(recipients(self._text(body)), ["a@b.example"], body)


class ReviewRev3Tests(SynchronousTestCase):
    """rev3's review of the recipient paths: true recipients the rcp rules took away."""

    def _text(self, body: bytes, subject: bytes = b"Undelivered Mail Returned to Sender"
              ) -> bytes:
        return (b"From: MAILER-DAEMON@mx.b.example\nTo: s@shop.example\nSubject: " + subject
                + b"\n\n" + body)

    def test_a_list_after_a_separator_is_not_a_signature(self) -> None:
        # the addresses alone after "--" are the failed ones; words there sign it off
        raw = self._text(b"The following message could not be delivered (550 5.1.1 user "
                         b"unknown).\n--\n a@b.example\n c@b.example\n")
        self.assertEqual(recipients(raw), ["a@b.example", "c@b.example"])
        raw = self._text(b"<a@b.example>: host mx.b.example[192.0.2.1] said: 550 5.1.1 "
                         b"user unknown (in reply to RCPT TO command)\n\n--\nThe Mail Team\n"
                         b"help@isp.example\n")
        self.assertEqual(recipients(raw), ["a@b.example"])
        raw = self._text(b"<a@b.example>: host mx.b.example[192.0.2.1] said: 550 5.1.1 "
                         b"user unknown (in reply to RCPT TO command)\n\n--\nhelp@isp.example\n")
        self.assertEqual(recipients(raw), ["a@b.example"])

    def test_a_heading_that_says_delivery_did_not_succeed_lists_failures(self) -> None:
        for heading in (b"Delivery to the following recipients has not succeeded:",
                        b"Delivery was not successful for these recipients:",
                        b"Delivery to these recipients was unsuccessful:"):
            raw = self._text(heading + b"\n\n  a@b.example\n\nDelivery to the following "
                             b"recipients failed:\n\n  c@d.example\n",
                             b"Delivery Status Notification (Failure)")
            self.assertEqual(recipients(raw), ["a@b.example", "c@d.example"], heading)
        raw = self._text(b"Delivery to the following recipients succeeded:\n\n  a@b.example\n\n"
                         b"Delivery to the following recipients failed:\n\n  c@d.example\n",
                         b"Delivery Status Notification (Failure)")
        self.assertEqual(recipients(raw), ["c@d.example"])

    def _report(self, rcpt: bytes) -> bytes:
        return (b"From: Mail Delivery System <MAILER-DAEMON@mx.b.example>\n"
                b"To: <bounces@shop.example>\nSubject: Undelivered Mail Returned to Sender\n\n"
                b"<" + rcpt + b">: host mx.b.example[192.0.2.1] said: 550 5.1.1 user "
                b"unknown (in reply to RCPT TO command)\n")

    _NOTE = (b"From: Ann <ann@shop.example>\nTo: help@shop.example\nSubject: this one\n\n"
             b"Please stop, write to me at ann.private@home.example\n")

    def _digest(self, *msgs: bytes, typed: bool = True,
                subject: bytes = b"Fw: returned mail") -> bytes:
        head = b"--D\nContent-Type: message/rfc822\n\n" if typed else b"--D\n\n"
        return (b"From: List Owner <owner@lists.shop.example>\nTo: bounces@shop.example\n"
                b"Subject: " + subject + b"\nMIME-Version: 1.0\n"
                b"Content-Type: multipart/mixed; boundary=\"M\"\n\n"
                b"--M\nContent-Type: text/plain\n\nThese came in.\n\n"
                b"--M\nContent-Type: multipart/digest; boundary=\"D\"\n\n"
                + b"".join(head + m + b"\n" for m in msgs) + b"--D--\n--M--\n")

    def test_a_report_after_a_persons_note_in_a_digest_counts(self) -> None:
        # (the note first: its writer is no recipient, and the bounce after it is read;
        # a digest's parts without a Content-Type are messages, RFC 2046 5.1.5)
        for typed in (True, False):
            for subject in (b"Fw: returned mail", b"Digest"):
                for msgs in ((self._NOTE, self._report(b"a@b.example")),
                             (self._report(b"a@b.example"), self._NOTE)):
                    raw = self._digest(*msgs, typed=typed, subject=subject)
                    self.assertEqual(recipients(raw), ["a@b.example"], (typed, subject))
                    self.assertEqual(analyze(raw).category, "bounce")

    def test_a_digest_of_persons_notes_is_no_bounce(self) -> None:
        other = self._NOTE.replace(b"Ann <ann@", b"Bob <bob@")
        for typed in (True, False):
            raw = self._digest(self._NOTE, other, typed=typed, subject=b"Digest")
            self.assertEqual(analyze(raw).category, "other", typed)

    def test_a_lists_last_entry_under_unread_words_is_no_sign_off(self) -> None:
        # the last recipient alone on its line under a heading word or prose that names
        # no failure we read stays; under a closing or a team's name it signs off
        for body in ("Ihre Nachricht konnte nicht an alle Empfänger zugestellt werden.\n\n"
                     "Empfänger\na@b.example\nGrund: Postfach voll\n\nEmpfänger\nc@d.example\n",
                     "Votre message n'a pas pu être remis aux destinataires suivants\n\n"
                     "Destinataire\na@b.example\nDestinataire\nc@d.example\n",
                     "Your message was rejected by a@b.example because the mailbox is full.\n"
                     "The same happened for the other recipient\nc@d.example\n"):
            raw = self._text(body.encode(), b"Undeliverable: news")
            self.assertEqual(recipients(raw), ["a@b.example", "c@d.example"], body)
        for sign in ("Regards,\nThe Mail Team\n", "Mit freundlichen Grüßen\nIhr IT-Team\n",
                     "Thank you,\nReporter ISP\n", "--\n"):
            raw = self._text(("Your message was rejected by a@b.example because the mailbox "
                              "is full.\n\n" + sign + "help@isp.example\n").encode(),
                             b"Undeliverable: news")
            self.assertEqual(recipients(raw), ["a@b.example"], sign)

    def test_an_address_in_the_display_name_is_not_a_second_mailbox(self) -> None:
        # the original's To: names one mailbox though its display name holds an address
        # (a complaint's complainer, a bounce whose text names no one); two mailboxes
        # name no one
        def bounce(to: bytes) -> bytes:
            return (b"From: postmaster@mx.b.example\nTo: s@shop.example\nSubject: Undeliverable"
                    b"\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"B\"\n\n"
                    b"--B\nContent-Type: text/plain\n\nYour message could not be delivered: "
                    b"the mailbox is disabled.\n\n--B\nContent-Type: message/rfc822\n\n"
                    b"From: s@shop.example\nTo: " + to + b"\nSubject: news\n\nhi\n--B--\n")

        def complaint(to: bytes) -> bytes:
            return (b"From: staff@isp.example\nTo: fbl@shop.example\nSubject: complaint\n"
                    b"MIME-Version: 1.0\nContent-Type: multipart/report; "
                    b"report-type=feedback-report; boundary=\"B\"\n\n--B\nContent-Type: "
                    b"text/plain\n\nAn abuse report.\n\n--B\nContent-Type: "
                    b"message/feedback-report\n\nFeedback-Type: abuse\nUser-Agent: x/1\n"
                    b"Version: 1\n\n--B\nContent-Type: message/rfc822\n\nFrom: s@shop.example\n"
                    b"To: " + to + b"\nSubject: news\n\nhi\n--B--\n")

        for to in (b"\"Bob Smith (bob@old.example)\" <a@b.example>",
                   b"\"a@b.example\" <a@b.example>", b"a@b.example (Bob, bob@old.example)"):
            self.assertEqual(recipients(bounce(to)), ["a@b.example"], to)
            self.assertEqual(recipients(complaint(to)), ["a@b.example"], to)
        for to in (b"a@b.example, c@d.example", b"\"Bob\" <a@b.example>, <c@d.example>"):
            self.assertEqual(recipients(bounce(to)), [], to)
            self.assertEqual(recipients(complaint(to)), [], to)

    def test_a_labelled_entry_after_a_separator_is_a_recipient(self) -> None:
        # a report naming no one before its "--" line, then the recipient under its label;
        # a signature's labelled contact address there is not one
        for body in ("Die folgende Nachricht konnte nicht zugestellt werden.\n--\n"
                     "Empfänger: a@b.example\nGrund: Benutzer unbekannt\n",
                     "Il messaggio non è stato consegnato.\n--\nDestinatario: a@b.example\n"):
            self.assertEqual(recipients(self._text(body.encode(), b"Unzustellbar")),
                             ["a@b.example"], body)
        raw = self._text(b"Your message could not be delivered.\n--\nJohn Smith, IT\n"
                         b"E-mail: john@isp.example\n", b"Undeliverable")
        self.assertEqual(recipients(raw), [])

    def test_a_failure_to_notify_names_the_recipient(self) -> None:
        # "unable to notify X" / "could not inform X" is the failure; "please notify X"
        # and "notify us at X" ask the reader to write to X (a disclaimer)
        for text in (b"The server was unable to inform c@d.example of your message: "
                     b"mailbox unavailable (550).\n",
                     b"Delivery failed: could not notify c@d.example (552 mailbox full).\n"):
            raw = self._text(text, b"Undeliverable")
            self.assertEqual(recipients(raw), ["c@d.example"], text)
        for footer in (b"please notify c@d.example.", b"Kindly inform c@d.example.",
                       b"please immediately notify c@d.example",
                       b"Notify us at c@d.example", b"inform us at c@d.example"):
            raw = self._text(b"<a@b.example>: host mx.b.example[192.0.2.1] said: 550 5.1.1 "
                             b"user unknown (in reply to RCPT TO command)\n\n" + footer + b"\n")
            self.assertEqual(recipients(raw), ["a@b.example"], footer)

    def test_an_entry_whose_status_says_delivered_did_not_bounce(self) -> None:
        # a table's status column (HTML cells read apart): "a@b Delivered" beside
        # "c@d Failed: 550 ..."; "Not delivered" / "Undelivered" there are failures
        def html(status: bytes) -> bytes:
            return (b"From: Mail Delivery System <postmaster@gw.example>\nTo: s@shop.example\n"
                    b"Subject: Delivery Status Notification (Failure)\nMIME-Version: 1.0\n"
                    b"Content-Type: text/html\n\n<html><body><p>Your message could not be "
                    b"delivered to some recipients.</p><table><tr><th>Recipient</th><th>"
                    b"Status</th></tr><tr><td>a@b.example</td><td>" + status + b"</td></tr>"
                    b"<tr><td>c@d.example</td><td>Failed: 550 5.1.1 User unknown</td></tr>"
                    b"</table></body></html>\n")
        self.assertEqual(recipients(html(b"Delivered")), ["c@d.example"])
        for status in (b"Not delivered", b"Undelivered", b"Failed"):
            self.assertEqual(recipients(html(status)), ["a@b.example", "c@d.example"], status)

    def test_a_gateway_passing_on_the_report_of_the_same_recipient_keeps_it(self) -> None:
        # the wrapper's text names a recipient the attached report names too: that report
        # is the one passed on (its other recipients and its codes count); a report about
        # someone else inside is the original of a double bounce (rcp's test)
        def wrapped(text_rcpt: bytes) -> bytes:
            return (b"From: Gateway <notify@gw.example>\nTo: s@shop.example\nSubject: "
                    b"Undeliverable message\nMIME-Version: 1.0\nContent-Type: multipart/mixed;"
                    b" boundary=\"A\"\n\n--A\nContent-Type: text/plain\n\nYour message to "
                    + text_rcpt + b" could not be delivered.\nThe report is attached.\n\n"
                    b"--A\nContent-Type: message/rfc822\n\nFrom: MAILER-DAEMON@mx.b.example\n"
                    b"To: s@shop.example\nSubject: Undelivered Mail Returned to Sender\n"
                    b"MIME-Version: 1.0\nContent-Type: multipart/report; "
                    b"report-type=delivery-status; boundary=\"R\"\n\n--R\nContent-Type: "
                    b"text/plain\n\nThe mail system.\n\n--R\nContent-Type: "
                    b"message/delivery-status\n\nReporting-MTA: dns; mx.b.example\n\n"
                    b"Final-Recipient: rfc822; a@b.example\nAction: failed\nStatus: 5.2.2\n"
                    b"Diagnostic-Code: smtp; 552 5.2.2 Mailbox full\n\n"
                    b"Final-Recipient: rfc822; c@b.example\nAction: failed\nStatus: 5.1.1\n"
                    b"Diagnostic-Code: smtp; 550 5.1.1 User unknown\n\n--R--\n\n--A--\n")
        self.assertEqual(recipients(wrapped(b"a@b.example")), ["a@b.example", "c@b.example"])
        self.assertEqual(recipients(wrapped(b"e@f.example")), ["e@f.example"])

    def test_a_persons_message_attaching_their_mail_and_its_bounce_is_no_bounce(self) -> None:
        # (not a digest: the first attached message decides, as before; here the person's
        # own newsletter copy, then a bounce of their mail)
        raw = (b"From: Jane <jane@d.example>\nTo: s@shop.example\nSubject: why?\n"
               b"MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"X\"\n\n"
               b"--X\nContent-Type: text/plain\n\nWhy did I get this?\n\n"
               b"--X\nContent-Type: message/rfc822\n\nFrom: s@shop.example\n"
               b"To: jane@d.example\nSubject: news\n\nhello\n"
               b"--X\nContent-Type: message/rfc822\n\n" + self._report(b"bob@d.example")
               + b"--X--\n")
        self.assertEqual(analyze(raw).category, "other")
        self.assertEqual(recipients(raw), [])


class OtherRoleAddressTests(SynchronousTestCase):
    """An address a report's text names in another role than a failed recipient (where
    the recipient moved to, whom the report was copied to, on whose behalf the original
    went, the sender a reply to MAIL FROM names) is not one; the same words about the
    recipient's own address keep it (bench/perturb.py other-roles)."""

    def _text(self, entry: bytes) -> bytes:
        return (b"From: MAILER-DAEMON@mx.b.example\nTo: s@shop.example\n"
                b"Subject: Undelivered Mail Returned to Sender\n\n"
                b"I'm sorry to have to inform you that your message could not be delivered "
                b"to one or more recipients.\n\n" + entry + b"\n")

    def test_another_role_is_not_a_recipient(self) -> None:
        entry = (b"<a@b.example>: host mx.b.example[192.0.2.1] said: 550 5.1.6 user unknown "
                 b"(in reply to RCPT TO command)\n")
        for words in (b"    The user has moved; the new address is c@d.example",
                      b"    New e-mail address: c@d.example",
                      b"    The recipient has moved to <c@d.example>.",
                      b"    She changed her e-mail address to c@d.example, please update.",
                      b"    Please use c@d.example from now on.",
                      b"    Alternate address: c@d.example",
                      b"A copy of this report has been sent to hostmaster@d.example.",
                      b"Copies were sent to c@d.example",
                      b"Sent on behalf of: news@d.example",
                      b"    550 5.7.1 <b-12=x=y@ret.d.example>: Sender address rejected: "
                      b"Access denied",
                      b"    <<< 250 2.1.0 <b-12=x=y@ret.d.example>... Sender ok",
                      b"The list owner is owner@lists.d.example.",
                      b"Administrator: admin@d.example",
                      b"Questions? webmaster@d.example",
                      b"Reply-To address: replies@shop.example",
                      b"    (forwarded from fwd@d.example)",
                      b"    (alias of team@d.example)",
                      b"    via list team@lists.d.example",
                      b"Visit http://help.d.example/ or mail helpdesk@d.example"):
            self.assertEqual(recipients(self._text(entry + words)), ["a@b.example"], words)

    def test_a_message_identifier_is_not_a_recipient(self) -> None:
        # (RFC 5322 3.6.4: "<id-left@id-right>" has an address's shape; a report names
        # it by its label, or as "your message <...>")
        entry = (b"<a@b.example>: host mx.b.example[192.0.2.1] said: 550 5.1.1 user unknown "
                 b"(in reply to RCPT TO command)\n")
        for words in (b"Message ID: <DM6PR04MB6556E0A5C0B83DB5F1A2@DM6PR04MB6556.namprd04.prod."
                      b"outlook.com>",
                      b"Original message ID: <CAKx7abcDEF123-xyz+Q@mail.gmail.com>",
                      b"Internet message id: E1qXyZa-0001Ab-Cd@mx.shop.example",
                      b"msg-id=<news.2024-05.1234@shop.example>",
                      b"In-Reply-To: <1a2b3c4d5e6f@EXCH01.corp.local>",
                      b"Your message <news.2024-05.1234@shop.example> was returned."):
            self.assertEqual(recipients(self._text(entry + words)), ["a@b.example"], words)
        # (the confusable side: "your message to <a>", and a list under "Your message"
        # with no angle brackets, flufl.bounce's hartford.com notice)
        for entry, want in ((b"Your message to <c@d.example> could not be delivered: 550 5.1.1 "
                             b"user unknown", ["c@d.example"]),
                            (b"Your message\n\n  c@d.example\n\nbecause: 550 5.1.1 user "
                             b"unknown", ["c@d.example"])):
            self.assertEqual(recipients(self._text(entry)), want, entry)

    def test_a_remotes_rendering_of_the_recipient_is_not_another(self) -> None:
        # (an address only in the remote's reply after a failed recipient's entry: the
        # remote's alias, canonical or tag-stripped form of that recipient)
        for text in (b"<a@b.example>: host mx.b.example[192.0.2.1] said: 550 5.1.1 "
                     b"<a.alias@b.example>: Recipient address rejected: User unknown",
                     b"a@b.example\nRemote Server returned '550 5.1.1 <A.Alias@b.example>... "
                     b"User unknown'",
                     b"There was an error delivering your mail to <a@b.example>.\n"
                     b"    host mx.b.example said: 550 <a.alias@b.example> no such user"):
            self.assertEqual(recipients(self._text(text)), ["a@b.example"], text)

    def test_recipients_named_in_replies_that_are_their_own_entries(self) -> None:
        # the confusable side: Sendmail's own line for a recipient starts with the code
        # ("554 <a@x>... Remote protocol error"), after another recipient's entry; each
        # entry with its own reply; a notice whose only recipient is in the reply
        transcript = (b"<c@d.example>: 552 5.2.2 Mailbox full\n\n"
                      b"   ----- Transcript of session follows -----\n"
                      b"554 <a@b.example>... Remote protocol error\n")
        self.assertEqual(recipients(self._text(transcript)), ["a@b.example", "c@d.example"])
        each = (b"<a@b.example>: host mx.b.example said: 550 <a@b.example> unknown\n"
                b"<c@d.example>: host mx.d.example said: 550 <c@d.example> unknown")
        self.assertEqual(recipients(self._text(each)), ["a@b.example", "c@d.example"])
        only = (b"This is the mail server at mx.d.example (admin: admin@mx.d.example).\n"
                b"Your message failed: 550 5.1.1 <a@b.example>: user unknown")
        self.assertIn("a@b.example", recipients(self._text(only)))

    def test_the_senders_label_in_any_language(self) -> None:
        # (localised notices list the original's sender and recipient, each labelled)
        entry = "<a@b.example>: 550 5.1.1 user unknown\n"
        for label in ("Expéditeur : ", "Remitente: ", "Mittente: ", "Afzender: ", "送信者：",
                      "差出人: ", "发件人: ", "Отправитель: ", "Originator: ", "Envelope-From: <",
                      "Return path: "):
            raw = (b"From: MAILER-DAEMON@mx.b.example\nTo: s@shop.example\nSubject: x\n"
                   b"Content-Type: text/plain; charset=utf-8\n\n"
                   + (label + "news@mail.shop.example\n" + entry).encode())
            self.assertEqual(recipients(raw), ["a@b.example"], label)
        # the recipient's own labels keep it; "sent by" names the sender, "sent to" not
        for label in ("Destinataire : ", "Destinatario: ", "Empfänger: ", "宛先: ", "收件人: ",
                      "Получатель: "):
            raw = (b"From: MAILER-DAEMON@mx.b.example\nTo: s@shop.example\nSubject: x\n"
                   b"Content-Type: text/plain; charset=utf-8\n\n"
                   + (label + "c@d.example\n550 5.1.1 user unknown\n").encode())
            self.assertEqual(recipients(raw), ["c@d.example"], label)
        self.assertEqual(recipients(self._text(b"Your message sent by news@mail.shop.example "
                                               b"could not be sent to c@d.example: 550 5.1.1 "
                                               b"user unknown")), ["c@d.example"])

    def test_the_same_words_about_failed_recipients_keep_them(self) -> None:
        # (the confusable side: a failed entry's own reply says "recipient address",
        # a list's heading says "address", a forwarding that failed names where it went)
        for entry, want in (
                (b"<c@d.example>: host mx.d.example[192.0.2.2] said: 550 5.1.1 "
                 b"<c@d.example>: Recipient address rejected: User unknown", ["c@d.example"]),
                (b"Invalid address: c@d.example\n    550 5.1.1 user unknown", ["c@d.example"]),
                (b"<c@d.example>: Sender address rejected: Access denied", ["c@d.example"]),
                # (a role mailbox or a list's address that starts a failed entry)
                (b"<webmaster@d.example>: 550 5.1.1 user unknown", ["webmaster@d.example"]),
                (b"team-request@lists.d.example:\n    550 5.1.1 user unknown",
                 ["team-request@lists.d.example"]),
                (b"Mail to <c@d.example> failed: 550 5.1.1 user unknown", ["c@d.example"]),
                (b"Your message has encountered delivery problems\nto local user c.\n"
                 b"(Originally addressed to c@d.example)\n\nUser not known", ["c@d.example"]),
                (b"The message was forwarded to c@d.example, which failed:\n    550 5.1.1 "
                 b"user unknown", ["c@d.example"]),
                (b"<a@b.example>: 550 5.1.1 user unknown\n<c@d.example>: 552 5.2.2 "
                 b"mailbox full, sender ok", ["a@b.example", "c@d.example"])):
            self.assertEqual(recipients(self._text(entry)), want, entry)

    def test_any_text_reads_the_roles(self) -> None:
        # a text whose case folding changes its length ("ß" to "ss") reads the same
        entry = ("<a@b.example>: 550 5.1.1 Empfänger unbekannt, Straße\n"
                 "    Or write to help@d.example").encode()
        raw = (b"From: MAILER-DAEMON@mx.b.example\nTo: s@shop.example\nSubject: "
               b"Undelivered Mail\nContent-Type: text/plain; charset=utf-8\n\n" + entry + b"\n")
        self.assertEqual(recipients(raw), ["a@b.example"])


class LocalisedOriginalTests(SynchronousTestCase):
    """An original quoted inline under a header block in another language: its To and Cc
    lines name the original's recipients, not failed ones (bench/perturb.py
    local-original)."""

    def _text(self, body: str) -> bytes:
        return (b"From: MAILER-DAEMON@mx.b.example\nTo: s@shop.example\nSubject: Undeliverable\n"
                b"Content-Type: text/plain; charset=utf-8\n\n" + body.encode() + b"\n")

    ENTRY = "<a@b.example>: 550 5.1.1 user unknown\n\n"

    def test_header_blocks_in_other_languages(self) -> None:
        for block in ("-----Ursprüngliche Nachricht-----\nVon: news@shop.example\nGesendet: "
                      "Montag\nAn: a@b.example; c@d.example\nCc: e@d.example\nBetreff: News",
                      "________________________________\nDe : news@shop.example\nEnvoyé : lundi"
                      "\nÀ : a@b.example; c@d.example\nCc : e@d.example\nObjet : News",
                      "De: news@shop.example\nEnviado el: lunes\nPara: a@b.example, c@d.example"
                      "\nCC: e@d.example\nAsunto: News",
                      "差出人: news@shop.example\n送信日時: 2024年1月1日\n宛先: a@b.example; "
                      "c@d.example\nCC: e@d.example\n件名: News",
                      "-----Messaggio originale-----\nhello c@d.example, write to e@d.example"):
            self.assertEqual(recipients(self._text(self.ENTRY + block + "\n\nhello\n")),
                             ["a@b.example"], block)

    def test_a_notices_own_labels_keep_its_recipients(self) -> None:
        # (the confusable side: a notice labelling the failed recipient, with no date or
        # subject line beside it, is no quoted header block; a phrase in a sentence is
        # no separator)
        for body in ("Ihre Nachricht konnte nicht zugestellt werden.\nEmpfänger: c@d.example\n"
                     "Grund: 550 5.1.1 user unknown",
                     "配信できませんでした。\n宛先: c@d.example\n理由: 550 5.1.1 user unknown",
                     "Von: news@shop.example\nAn: c@d.example\n550 5.1.1 user unknown",
                     "The mensaje original could not be delivered to c@d.example: 550 5.1.1 "
                     "user unknown",
                     "Failed address (error code: c@d.example) 550 5.1.1 user unknown"):
            self.assertEqual(recipients(self._text(body)), ["c@d.example"], body)

    def test_a_sender_line_with_a_name_only(self) -> None:
        # (Outlook inside one organisation writes the sender's name alone: "Von: John Smith")
        block = ("Von: John Smith\nGesendet: Montag\nAn: a@b.example; c@d.example\n"
                 "Betreff: News")
        self.assertEqual(recipients(self._text(self.ENTRY + block + "\n\nhello\n")),
                         ["a@b.example"])


class ReviewRev5Tests(SynchronousTestCase):
    """Review rev5 of the recipient rules of the other roles: a role mailbox or a list's
    address that the report says the mail failed to reach, and a notice's own summary in
    another language, are failed recipients; their look-alikes stay out."""

    def _text(self, body: str) -> bytes:
        return (b"From: MAILER-DAEMON@mx.b.example\nTo: s@shop.example\nSubject: Undeliverable\n"
                b"Content-Type: text/plain; charset=utf-8\n\n" + body.encode() + b"\n")

    ENTRY = ("I'm sorry to have to inform you that your message could not be delivered to one "
             "or more recipients.\n\n<a@b.example>: host mx.b.example[192.0.2.1] said: 550 "
             "5.1.1 user unknown (in reply to RCPT TO command)\n\n")

    def test_a_role_mailbox_the_mail_failed_to_reach_in_prose(self) -> None:
        # Gmail's and Exchange Online's notices name their one recipient only in prose:
        # RFC 2142's mailboxes and a list's addresses (30c4f81) were dropped as whom to
        # ask ("quote-request@", "product-owner@" are also plain business mailboxes)
        for body, want in (
                ("** Address not found **\n\nYour message wasn't delivered to webmaster@d."
                 "example because the address couldn't be found, or is unable to receive "
                 "mail.\n\nThe response from the remote server was:\n550 5.1.1 The email "
                 "account that you tried to reach does not exist.", ["webmaster@d.example"]),
                ("Your message to quote-request@d.example couldn't be delivered.\nquote-"
                 "request wasn't found at d.example.\n\nRemote Server returned '550 5.1.10 "
                 "RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address "
                 "lookup'", ["quote-request@d.example"]),
                (self.ENTRY + "Delivery to hostmaster@d.example failed: 550 5.1.1 user "
                 "unknown", ["a@b.example", "hostmaster@d.example"]),
                (self.ENTRY + "Could not deliver your message to team-owner@lists.d.example"
                 ", mailbox unavailable", ["a@b.example", "team-owner@lists.d.example"]),
                ("Your message couldn't be delivered to the recipient webmaster@d.example.\n"
                 "550 5.1.1 user unknown", ["webmaster@d.example"]),
                # (Exchange 2003: the entry, then the date on its line, the failure under it)
                ("Your message did not reach some or all of the intended recipients.\n\n"
                 "The following recipient(s) cannot be reached:\n\n      news-request@d."
                 "example on 12/6/2026 2:00 PM\n            The e-mail account does not exist"
                 " at the organization this message was sent to.\n            <mx.d.example "
                 "#5.1.1 smtp;550 5.1.1 User unknown>", ["news-request@d.example"])):
            self.assertEqual(recipients(self._text(body)), want, body)

    def test_a_role_mailbox_named_as_whom_to_ask_stays_out(self) -> None:
        # (the confusable side: the same mailboxes after words that are no failed
        # delivery, on a line that states none, or inside a remote's reply)
        for words in ("Questions? webmaster@d.example",
                      "Questions?\nThe Mail Team\nwebmaster@d.example",
                      "If this error persists, forward this message to webmaster@d.example",
                      "Please send questions about this error to webmaster@d.example",
                      "The report was delivered to postmaster@d.example as well.",
                      "    host mx.d.example said: 550 5.7.1 your message to "
                      "hostmaster@d.example was rejected"):
            self.assertEqual(recipients(self._text(self.ENTRY + words)), ["a@b.example"],
                             words)

    def test_or_mail_is_a_phrase_of_its_own_words(self) -> None:
        # "or mail X" (whom else to write, 30c4f81) matched inside "for mail X" and
        # "error mail X", which name the failed address; the phrase itself still reads
        for words, want in (
                ("Message delivery failed for email c@d.example: mailbox full",
                 ["a@b.example", "c@d.example"]),
                ("Quota exceeded for e-mail c@d.example (552 5.2.2)",
                 ["a@b.example", "c@d.example"]),
                ("Delivery failed for mail: c@d.example\n    550 5.1.1 user unknown",
                 ["a@b.example", "c@d.example"]),
                ("Visit http://help.d.example/ or mail helpdesk@d.example", ["a@b.example"]),
                ("Call us, or e-mail: help@d.example", ["a@b.example"])):
            self.assertEqual(recipients(self._text(self.ENTRY + words)), want, words)

    def test_a_notices_summary_in_another_language(self) -> None:
        # a gateway's or an ISP's notice summarises the failure under labels, its
        # recipient's own and the sender's, subject's and date's beside it (948440e
        # blanked the whole run as a quoted header block, its reason too)
        for body, want in (
                ("Die Nachricht konnte nicht zugestellt werden.\n\nEmpfänger: c@d.example\n"
                 "Absender: s@shop.example\nBetreff: Test\nDatum: 6.12.2026\nGrund: 550 "
                 "5.1.1 Benutzer unbekannt", ["c@d.example"]),
                ("Le message n'a pas pu être remis.\n\nDestinataire : c@d.example\n"
                 "Expéditeur : s@shop.example\nObjet : Test\nDate : 6/12/2026\nRaison : 550 "
                 "5.1.1 utilisateur inconnu", ["c@d.example"]),
                ("メールを配信できませんでした。\n\n送信者: s@shop.example\n宛先: c@d.example\n"
                 "件名: Test\n日付: 2026/12/06\n理由: 550 5.1.1 User unknown", ["c@d.example"]),
                (self.ENTRY + "Empfänger: c@d.example\nAbsender: s@shop.example\nBetreff: "
                 "Test\nGrund: 552 5.2.2 Postfach voll", ["a@b.example", "c@d.example"])):
            self.assertEqual(recipients(self._text(body)), want, body)

    def test_a_clients_header_block_in_another_language_stays_out(self) -> None:
        # (the confusable side: a client's block names the To field, and a reply code
        # in its subject is no reason)
        for block in ("Von: s@shop.example\nGesendet: Sonntag\nAn: c@d.example\nBetreff: Test",
                      "De : s@shop.example\nEnvoyé : dimanche\nÀ : c@d.example\nObjet : Test",
                      "差出人: s@shop.example\n送信日時: 2026年12月6日 14:05\n宛先: c@d.example\n"
                      "件名: 550 test"):
            self.assertEqual(recipients(self._text(self.ENTRY + block + "\n\nhello")),
                             ["a@b.example"], block)

    def test_a_line_naming_many_addresses_is_read_once(self) -> None:
        # the reply-code rule (c6bc16c) read a failed entry's whole line for each of the
        # addresses it names: 500 on one 256 KB line took 2.4 s
        calls = []
        line_at = analyzer._line_at

        def counting(text: str, pos: int) -> str:
            calls.append(pos)
            return line_at(text, pos)

        body = " ".join(f"u{i}@x{i}.example" for i in range(300))
        self.patch(analyzer, "_line_at", counting)
        self.assertEqual(len(recipients(self._text(body))), 300)
        self.assertLessEqual(len(calls), 2)


class FailedRecipientsHeaderTests(SynchronousTestCase):
    """Exim's (and Gmail's) X-Failed-Recipients lists the failed recipients: the text's
    other addresses beside them did not fail (bench/perturb.py xfr-others)."""

    def _exim(self, xfr: bytes, text: bytes) -> bytes:
        return (b"From: Mail Delivery System <Mailer-Daemon@mx.b.example>\nTo: s@shop.example\n"
                b"Subject: Mail delivery failed: returning message to sender\n"
                b"X-Failed-Recipients: " + xfr + b"\n\n"
                b"A message that you sent could not be delivered to one or more of its\n"
                b"recipients. This is a permanent error. The following address(es) failed:\n\n"
                + text + b"\n")

    ENTRY = (b"  a@b.example\n    SMTP error from remote mail server after RCPT TO:<a@b.example>:"
             b"\n    550 5.1.1 user unknown\n")

    def test_the_originals_other_recipients_did_not_fail(self) -> None:
        raw = self._exim(b"a@b.example", self.ENTRY + b"\nThe message was addressed to: "
                         b"a@b.example, c@d.example, e@f.example")
        self.assertEqual(recipients(raw), ["a@b.example"])

    def test_every_listed_one_and_the_header_spelling(self) -> None:
        # (the confusable side: the header lists both, the text names both)
        both = self.ENTRY + b"  c@d.example\n    550 5.2.2 mailbox full\n"
        self.assertEqual(recipients(self._exim(b"a@b.example, c@d.example", both)),
                         ["a@b.example", "c@d.example"])
        # a text spelling the one in the header as Exchange encapsulates it keeps the
        # header's plain spelling
        enc = self.ENTRY.replace(b"  a@b.example\n", b"  IMCEASMTP-a+40b+2Eexample@corp.example\n")
        self.assertEqual(recipients(self._exim(b"a@b.example", enc)), ["a@b.example"])
