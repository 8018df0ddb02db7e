"""One mailbox, two spellings: a report naming its recipient twice is one recipient.

Each class found by bench/perturb.py's spelled-* probes (tests/bounce/transport.py's
SPELLINGS), held both ways: two spellings of one mailbox come out once, and two
mailboxes that look alike stay two.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from hurricane.bounce import mailbox
from hurricane.bounce.analyze import analyze, to_prediction
from tests.bounce.test_bounce_recipients import dsn

_X500 = ("IMCEAEX-_O=CORP_OU=EXCHANGE+20ADMINISTRATIVE+20GROUP+20+28FYDIBOHF23SPDLT+29"
         "_CN=RECIPIENTS_CN=")


def recipients(raw: bytes) -> list[str]:
    return sorted(to_prediction(analyze(raw), "x")["recipients"])


def postfix(*entries: str) -> bytes:
    """A Postfix-style free-text notice with one entry per address given."""
    body = "".join("<%s>: host mx.x.example[192.0.2.1] said: 550 5.1.1 User unknown (in "
                   "reply to RCPT TO command)\n\n" % e for e in entries)
    return ("From: MAILER-DAEMON@mx.reporter.example\nTo: s@shop.example\n"
            "Subject: Undelivered Mail Returned to Sender\n"
            "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n"
            "This is the mail system at host mx.reporter.example.\n\n"
            "I'm sorry to have to inform you that your message could not\n"
            "be delivered to one or more recipients.\n\n" + body).encode("utf-8")


def exchange(*entries: str) -> bytes:
    """Exchange's notice: the list of recipients, then the diagnostic of each."""
    listed = "".join("%s\n" % e for e in entries)
    diag = "".join("%s\n#550 5.1.1 RESOLVER.ADR.RecipNotFound; not found ##\n\n" % e
                   for e in entries)
    return ("From: postmaster@corp.example\nTo: s@shop.example\n"
            "Subject: Undeliverable: Sale\nContent-Type: text/plain; charset=utf-8\n"
            "Content-Transfer-Encoding: 8bit\n\n"
            "Delivery has failed to these recipients or groups:\n\n" + listed +
            "\nDiagnostic information for administrators:\n\nGenerating server: "
            "corp.example\n\n" + diag).encode("utf-8")


class MailboxKeyTests(SynchronousTestCase):
    """mailbox.key: the same key for two spellings of one mailbox, never for two."""

    def test_same_mailbox(self) -> None:
        for a, b in (("a@x.example", "A@X.EXAMPLE."),
                     ('"a"@x.example', "a@x.example"),
                     ('"a.b"@x.example', "a.b@x.example"),
                     ("<a@x.example>", "a@x.example"),
                     ("a@b\u00fccher.example", "a@xn--bcher-kva.example"),
                     ("a@B\u00dcCHER.example", "a@xn--bcher-kva.example"),
                     ("IMCEASMTP-a+40x+2Eexample@corp.example", "a@x.example"),
                     ("imceasmtp-a+2Bb+40x+2Eexample@corp.example", "a+b@x.example")):
            self.assertEqual(mailbox.key(a), mailbox.key(b), (a, b))

    def test_other_mailboxes(self) -> None:
        for a, b in (("a@mail.x.example", "a@x.example"),     # another host
                     ("a+tag@x.example", "a@x.example"),       # a sub-address
                     ('"a b"@x.example', "a.b@x.example"),     # a quoted blank is no dot
                     ('"a..b"@x.example', "a..b@x.example"),   # (not a dot-atom: kept quoted)
                     ("a%x.example@relay.example", "a@x.example"),   # the relay decides
                     ("a@bucher.example", "a@b\u00fccher.example"),   # not the same name
                     ("a@stra\u00dfe.example", "a@strasse.example"),  # IDNA 2008: not mapped
                     ("IMCEASMTP-a+40x+2Eexample@corp.example", "a@corp.example"),
                     ("IMCEASMTP-b+40x+2Eexample@corp.example", "a@x.example")):
            self.assertNotEqual(mailbox.key(a), mailbox.key(b), (a, b))

    def test_rfc6533_escapes(self) -> None:
        for value, want in (("j\\x{FC}rgen@b\\x{00FC}cher.example",
                             "j\u00fcrgen@b\u00fccher.example"),
                            ("a\\x{2B}b\\x{3D}c@x.example", "a+b=c@x.example"),
                            # malformed: not hex, past U+10FFFF, a surrogate, unclosed
                            ("a\\x{zz}@x.example", "a\\x{zz}@x.example"),
                            ("a\\x{110000}@x.example", "a\\x{110000}@x.example"),
                            ("a\\x{D800}@x.example", "a\\x{D800}@x.example"),
                            ("a\\x{2B@x.example", "a\\x{2B@x.example"),
                            ("ax{2B}@x.example", "ax{2B}@x.example")):
            self.assertEqual(mailbox.embedded_unicode(value), want, value)

    def test_x500_tied_by_alias_and_domain(self) -> None:
        x = (_X500 + "a@x.example").lower()
        self.assertEqual(mailbox.x500_candidates(x)[0], "a@x.example")
        guid = (_X500 + "0a1b2c3d4e5f-a@x.example").lower()      # Exchange 2010's CN
        self.assertIn("a@x.example", mailbox.x500_candidates(guid))
        self.assertEqual(mailbox.x500_candidates("a@x.example"), [])
        for other in ("b@x.example", "a@y.example", "xa@x.example"):
            self.assertNotIn(other, mailbox.x500_candidates(x))
        # (a CN with a "-" of its own is that alias, not the part after it)
        named = (_X500 + "john-smith@x.example").lower()
        self.assertEqual(mailbox.x500_candidates(named), ["john-smith@x.example"])


class SpellingsInTextTests(SynchronousTestCase):
    """A free-text report naming its recipient in two spellings names one recipient;
    two mailboxes that look alike are two."""

    def test_same_mailbox_once(self) -> None:
        for second in ("A@X.EXAMPLE.", "IMCEASMTP-a+40x+2Eexample@corp.example",
                       _X500 + "a@x.example"):
            self.assertEqual(recipients(postfix("a@x.example", second)), ["a@x.example"],
                             second)
            # (the plainest spelling is shown whichever comes first)
            self.assertEqual(recipients(postfix(second, "a@x.example")), ["a@x.example"],
                             second)
            self.assertEqual(recipients(exchange(second, "a@x.example")), ["a@x.example"],
                             second)

    def test_display_names_once(self) -> None:
        # the address as its own display name, in capitals or an undecoded encoded word
        for second in ('"A@X.EXAMPLE" <a@x.example>', "=?utf-8?B?YUB4LmV4YW1wbGU=?= "
                       "<a@x.example>", "a@x.example (A@X.EXAMPLE)"):
            self.assertEqual(recipients(exchange("a@x.example", second)), ["a@x.example"],
                             second)
        # ... and a display name naming another mailbox is another entry's
        self.assertEqual(recipients(exchange("a@x.example", '"B@X.EXAMPLE" <b@x.example>')),
                         ["a@x.example", "b@x.example"])

    def test_reports_passed_on_together(self) -> None:
        # two reports forwarded as attachments (a helpdesk's "forward as attachments"),
        # each naming the mailbox in its own spelling: one recipient; two mailboxes: two
        def pair(first: bytes, second: bytes) -> bytes:
            return (b"From: Help Desk <help@shop.example>\nTo: bounces@shop.example\n"
                    b"Subject: Fw: two returned messages\nMIME-Version: 1.0\n"
                    b"Content-Type: multipart/mixed; boundary=\"p-1\"\n\n"
                    b"--p-1\nContent-Type: text/plain\n\nThese came back.\n\n"
                    + b"".join(b"--p-1\nContent-Type: message/rfc822\n\n" + m + b"\n"
                               for m in (first, second)) + b"--p-1--\n")
        one = postfix("a@x.example")
        for other, want in ((exchange("IMCEASMTP-a+40x+2Eexample@corp.example"),
                             ["a@x.example"]),
                            (exchange("IMCEASMTP-b+40x+2Eexample@corp.example"),
                             ["a@x.example", "imceasmtp-b+40x+2eexample@corp.example"])):
            self.assertEqual(recipients(pair(one, other)), want)

    def test_idn_spellings_once(self) -> None:
        raw = postfix("a@mail.xn--bcher-kva.example", "a@mail.b\u00fccher.example")
        self.assertEqual(recipients(raw), ["a@mail.xn--bcher-kva.example"])
        raw = postfix("a@mail.b\u00fccher.example", "a@mail.xn--bcher-kva.example")
        self.assertEqual(recipients(raw), ["a@mail.xn--bcher-kva.example"])

    def test_unicode_domain_read_whole(self) -> None:
        # ADDR reads "a@mail.b" of "a@mail.bücher.example": the rest is its domain
        self.assertEqual(recipients(postfix("a@mail.b\u00fccher.example")),
                         ["a@mail.b\u00fccher.example"])
        # ... but an address running into words written without blanks ends at its
        # ASCII domain (Japanese: "a@x.example宛のメール")
        raw = postfix("a@x.example").replace(
            b"<a@x.example>:", "<a@x.example>: a@x.example\u5b9b\u306e\u30e1\u30fc\u30eb"
            .encode("utf-8"), 1)
        self.assertEqual(recipients(raw), ["a@x.example"])

    def test_other_mailboxes_kept_apart(self) -> None:
        for a, b in (("a@x.example", "a@mail.x.example"),
                     ("a@x.example", "a+tag@x.example"),
                     ("a@x.example", "IMCEASMTP-b+40x+2Eexample@corp.example"),
                     ("a@bucher.example", "a@mail.b\u00fccher.example"),
                     ("a@x.example", "a@mail.b\u00fccher.example")):
            # (each in its own spelling: an encapsulated address of another mailbox too)
            self.assertEqual(recipients(postfix(a, b)), sorted([a, b.lower()]), (a, b))

    def test_x500_of_another_mailbox_kept(self) -> None:
        # the DN's CN is another alias, or the organisation another: not tied
        for x in (_X500 + "b@x.example", _X500 + "a@y.example"):
            self.assertEqual(len(recipients(exchange("a@x.example", x))), 2, x)


class HostRenderingTests(SynchronousTestCase):
    """A remote's reply (or the relay's RCPT) inside a recipient's entry naming its local
    part at a host of its domain, or at its host's domain, is the recipient; an address
    the report lists as an entry of its own, or another local part or domain, is not."""

    def _text(self, body: str) -> bytes:
        return ("From: MAILER-DAEMON@mx.reporter.example\nTo: s@shop.example\n"
                "Subject: failure notice\n\n" + body).encode()

    def test_rendering_inside_the_entry(self) -> None:
        for body in (
                # Postfix: the remote's reply on the entry's line
                "<a@x.example>: host mx.x.example[192.0.2.1] said: 550 5.1.1 "
                "<a@mail.x.example>: Recipient address rejected: User unknown\n",
                # qmail: the reply under "<a@x>:"
                "I wasn't able to deliver your message to the following addresses.\n\n"
                "<a@x.example>:\n192.0.2.1 does not like recipient.\nRemote host said: "
                "550 5.1.1 <a@mail.x.example>... User unknown\nGiving up on 192.0.2.1.\n",
                # Exim: the relay's RCPT under the entry, after its alias note
                "The following address(es) failed:\n\n  a@x.example\n    (generated from "
                "b@y.example)\n    SMTP error from remote mail server after RCPT "
                "TO:<a@mail.x.example>:\n    550 5.1.1 User unknown\n"):
            self.assertEqual(recipients(self._text(body)), ["a@x.example"], body)
        # (the entry at the host, the reply at the domain)
        body = ("<a@mail.x.example>: host mx.x.example[192.0.2.1] said: 550 5.1.1 "
                "<a@x.example>: Recipient address rejected: User unknown\n")
        self.assertEqual(recipients(self._text(body)), ["a@mail.x.example"])

    def test_other_mailboxes_kept_apart(self) -> None:
        # (the relay's RCPT under the entry, not a remote's reply: any address after a
        # reply code is the remote's rendering, whatever its local part or domain)
        rcpt = ("The following address(es) failed:\n\n  a@x.example\n    SMTP error from "
                "remote mail server after RCPT TO:<%s>:\n    550 5.1.1 User unknown\n")
        for other in ("b@mail.x.example", "a@y.example", "a@x.example.net", "a@mail.y.example"):
            self.assertEqual(recipients(self._text(rcpt % other)),
                             sorted(["a@x.example", other]), other)
        for body in (
                # two entries of their own: listed, or each with its reason
                "The following addresses failed:\n\na@x.example\na@mail.x.example\n\n"
                "550 5.1.1 User unknown\n",
                "<a@x.example>: host mx.x.example[192.0.2.1] said: 550 5.1.1 User "
                "unknown\n\n<a@mail.x.example>: host mail.x.example[192.0.2.2] said: 550 "
                "5.1.1 User unknown\n",
                # named in the next paragraph, not inside the entry
                "<a@x.example>: host mx.x.example[192.0.2.1] said: 550 5.1.1 User "
                "unknown\n\nAlso failed, a@mail.x.example: mailbox unavailable\n"):
            self.assertEqual(recipients(self._text(body)),
                             ["a@mail.x.example", "a@x.example"], body)


class SpellingsInFieldsTests(SynchronousTestCase):
    """Delivery-status blocks naming one mailbox in two spellings (RFC 6533 "utf-8;" and
    "rfc822;" in punycode, a quoted local part) are one recipient; two are two."""

    def _two(self, a: str, b: str) -> bytes:
        return dsn("Final-Recipient: %s\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
                   "Final-Recipient: %s\r\nAction: failed\r\nStatus: 5.1.1\r\n" % (a, b))

    def test_same_mailbox_once(self) -> None:
        for a, b, want in (
                ("utf-8; a@b\u00fccher.example", "rfc822; a@xn--bcher-kva.example",
                 "a@xn--bcher-kva.example"),
                ('rfc822; "a"@x.example', "rfc822; a@x.example", "a@x.example"),
                ("rfc822; IMCEASMTP-a+40x+2Eexample@corp.example", "rfc822; a@x.example",
                 "a@x.example")):
            self.assertEqual(recipients(self._two(a, b)), [want], (a, b))
            self.assertEqual(len(analyze(self._two(a, b)).results), 1, (a, b))

    def test_rfc6533_escapes(self) -> None:
        # a "utf-8" address in a 7-bit delivery-status part: "\\x{HEX}" for "+", "=", a
        # blank and non-ASCII characters (RFC 6533 3, utf-8-addr-xtext)
        for value, want in (("utf-8; j\\x{FC}rgen@b\\x{FC}cher.example",
                             "j\u00fcrgen@b\u00fccher.example"),
                            ("utf-8; a\\x{2B}tag@x.example", "a+tag@x.example")):
            raw = dsn("Final-Recipient: %s\r\nAction: failed\r\nStatus: 5.1.1\r\n" % value)
            self.assertEqual(recipients(raw), [want], value)
        self.assertEqual(recipients(self._two("utf-8; j\\x{FC}rgen@x.example",
                                              "utf-8; j\u00fcrgen@x.example")),
                         ["j\u00fcrgen@x.example"])
        self.assertEqual(len(recipients(self._two("utf-8; a\\x{2B}b@x.example",
                                                  "rfc822; a2Bb@x.example"))), 2)

    def test_display_name_is_not_the_address(self) -> None:
        # a field naming the mailbox with a display name (or a comment) holding another
        # spelling or another address: the mailbox's own address is the recipient
        for value in ('rfc822; "IMCEASMTP-b+40x+2Eexample@corp.example" <a@x.example>',
                      'rfc822; "b@x.example" <a@x.example>', "rfc822; (b@x.example) a@x.example",
                      "rfc822; a@x.example (b@x.example)", 'rfc822; "A@X.EXAMPLE" <a@x.example>',
                      "rfc822; a@x.example"):
            raw = dsn("Final-Recipient: %s\r\nAction: failed\r\nStatus: 5.1.1\r\n" % value)
            self.assertEqual(recipients(raw), ["a@x.example"], value)

    def test_other_mailboxes_kept_apart(self) -> None:
        for a, b in (("utf-8; a@b\u00fccher.example", "rfc822; a@bucher.example"),
                     ('rfc822; "a b"@x.example', "rfc822; a.b@x.example"),
                     ("rfc822; a@mail.x.example", "rfc822; a@x.example")):
            self.assertEqual(len(recipients(self._two(a, b))), 2, (a, b))
