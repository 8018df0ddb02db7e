"""Several recipients in one free-text report, each with its own outcome (issue 22).

docs/bounce-reasons.md section 1: in a report with no delivery-status part, each
failed recipient's evidence (its code, status, words, stage) is the text that
belongs to it, never its neighbour's. Table tests of 2-3 recipient reports in the
free-text formats of Sendmail, Exim, Postfix, qmail, Courier, Exchange,
Lotus/Domino and Gmail, each recipient with a different cause, in both orders (the
addresses swapped, so each recipient is read with each cause); and the other side:
words a report states once for all its recipients stay shared.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from hurricane.bounce.analyze import analyze

A, C, E = "a@b.example", "c@d.example", "e@f.example"


def notice(body: str, subject: str = "Undelivered Mail Returned to Sender") -> bytes:
    """A free-text notice (text/plain, no delivery-status part)."""
    return ("From: Mail Delivery System <MAILER-DAEMON@mx.a.example>\n"
            "To: s@a.example\nSubject: " + subject + "\n"
            "Message-ID: <n1@mx.a.example>\nMIME-Version: 1.0\n"
            "Content-Type: text/plain\n\n" + body + "\n").encode()


SM_HEAD = ("The original message was received at Sun, 6 Dec 2026 01:00:00 GMT\n"
           "from localhost [127.0.0.1]\n\n"
           "   ----- The following addresses had permanent fatal errors -----\n")
SM_SUBJ = "Returned mail: see transcript for details"

#: (name, message, {recipient: (reason, status)})
TABLE: list[tuple[str, bytes, dict[str, tuple[str, str]]]] = [
    # the reviewer's case: a refused, c deferred until the queue expired
    ("sendmail queue return, refused and expired", notice(
        SM_HEAD + f"<{A}>\n    (reason: 550 5.1.1 <{A}>... User unknown)\n<{C}>\n\n"
        "   ----- Transcript of session follows -----\n... while talking to mx.b.example.:\n"
        f">>> RCPT To:<{A}>\n<<< 550 5.1.1 <{A}>... User unknown\n"
        f"550 5.1.1 <{A}>... User unknown\n"
        f"<{C}>... Deferred: Connection refused by mx.d.example.\n"
        "Message could not be delivered for 5 days\nMessage will be deleted from queue\n",
        SM_SUBJ), {A: ("userunknown", "5.1.1"), C: ("expired", "4.4.7")}),
    ("sendmail, reasons in the list and the transcript", notice(
        SM_HEAD + f"<{A}>\n    (reason: 552 5.2.2 Mailbox full)\n"
        f"<{C}>\n    (reason: 550 5.1.1 User unknown)\n\n"
        "   ----- Transcript of session follows -----\n... while talking to mx.b.example.:\n"
        f">>> RCPT To:<{A}>\n<<< 552 5.2.2 <{A}>... Mailbox full\n"
        f">>> RCPT To:<{C}>\n<<< 550 5.1.1 <{C}>... User unknown\n", SM_SUBJ),
     {A: ("mailboxfull", "5.2.2"), C: ("userunknown", "5.1.1")}),
    ("sendmail, reasons in the transcript only", notice(
        SM_HEAD + f"<{A}>\n<{C}>\n\n"
        "   ----- Transcript of session follows -----\n... while talking to mx.b.example.:\n"
        f">>> RCPT To:<{A}>\n<<< 552 5.2.2 Mailbox full\n"
        f">>> RCPT To:<{C}>\n<<< 550 5.1.1 User unknown\n"
        f"550 5.1.1 <{C}>... User unknown\n", SM_SUBJ),
     {A: ("mailboxfull", "5.2.2"), C: ("userunknown", "5.1.1")}),
    ("exim, indented lines under each address", notice(
        "This message was created automatically by mail delivery software.\n\n"
        "A message that you sent could not be delivered to one or more of its\n"
        "recipients. This is a permanent error. The following address(es) failed:\n\n"
        f"  {A}\n    host mx.b.example [192.0.2.1]\n"
        f"    SMTP error from remote mail server after RCPT TO:<{A}>:\n"
        "    550 5.1.1 User unknown\n"
        f"  {C}\n    host mx.d.example [192.0.2.2]\n"
        f"    SMTP error from remote mail server after RCPT TO:<{C}>:\n"
        "    552 5.2.2 Mailbox full, quota exceeded\n"
        f"  {E}\n    retry timeout exceeded\n",
        "Mail delivery failed: returning message to sender"),
     {A: ("userunknown", "5.1.1"), C: ("mailboxfull", "5.2.2"), E: ("expired", "4.4.7")}),
    ("postfix, '<addr>: host ... said:' entries", notice(
        "This is the mail system at host mx.a.example.\n\n"
        "I'm sorry to have to inform you that your message could not\n"
        "be delivered to one or more recipients. It's attached below.\n\n"
        f"<{A}>: host mx.b.example[192.0.2.1] said: 550 5.1.1 <{A}>: Recipient\n"
        "    address rejected: User unknown in local recipient table (in reply to RCPT TO\n"
        "    command)\n\n"
        f"<{C}>: host mx.d.example[192.0.2.2] said: 552 5.2.2 Mailbox full (in\n"
        "    reply to RCPT TO command)\n\n"
        f"<{E}>: delivery temporarily suspended: connect to mx.f.example[192.0.2.3]:25:\n"
        "    Connection timed out\n"),
     {A: ("userunknown", "5.1.1"), C: ("mailboxfull", "5.2.2"), E: ("expired", "4.4.7")}),
    ("qmail, '<addr>:' paragraphs", notice(
        "Hi. This is the qmail-send program at mx.a.example.\n"
        "I'm afraid I wasn't able to deliver your message to the following addresses.\n"
        "This is a permanent error; I've given up. Sorry it didn't work out.\n\n"
        f"<{A}>:\n192.0.2.1 does not like recipient.\n"
        "Remote host said: 550 5.1.1 User unknown\nGiving up on 192.0.2.1.\n\n"
        f"<{C}>:\n192.0.2.2 does not like recipient.\n"
        "Remote host said: 552 5.2.2 Mailbox full\nGiving up on 192.0.2.2.\n\n"
        f"<{E}>:\nI'm not going to try again; this message has been in the queue too long.\n\n"
        "--- Below this line is a copy of the message.\n", "failure notice"),
     {A: ("userunknown", "5.1.1"), C: ("mailboxfull", "5.2.2"), E: ("expired", "4.4.7")}),
    ("courier, an entry and its transcript per recipient", notice(
        "This is a delivery status notification from mx.a.example,\n"
        "running the Courier mail server, version 1.0.\n\n"
        "Your message to the following recipients cannot be delivered:\n\n"
        f"<{A}>:\n    mx.b.example [192.0.2.1]:\n>>> RCPT TO:<{A}>\n<<< 550 5.1.1 User unknown\n\n"
        f"<{C}>:\n    mx.d.example [192.0.2.2]:\n>>> RCPT TO:<{C}>\n<<< 552 5.2.2 Mailbox full\n\n",
        "NOTICE: mail delivery status."),
     {A: ("userunknown", "5.1.1"), C: ("mailboxfull", "5.2.2")}),
    ("exchange, an entry per recipient", notice(
        "Your message did not reach some or all of the intended recipients.\n\n"
        "      Subject:\thi\n      Sent:\t12/6/2026 1:00 AM\n\n"
        "The following recipient(s) cannot be reached:\n\n"
        f"      {A} on 12/6/2026 1:00 AM\n"
        "            The e-mail account does not exist at the organization this message"
        " was sent to.\n            <mx.a.example #5.1.1 smtp;550 5.1.1 User unknown>\n\n"
        f"      {C} on 12/6/2026 1:00 AM\n"
        "            The recipient's mailbox is full and can't accept messages now.\n"
        "            <mx.a.example #5.2.2 smtp;552 5.2.2 Mailbox full>\n\n",
        "Undeliverable: hi"),
     {A: ("userunknown", "5.1.1"), C: ("mailboxfull", "5.2.2")}),
    ("lotus domino, a notice per recipient", notice(
        f"Your message\n\n  Subject: hi\n\nwas not delivered to:\n\n  {A}\n\nbecause:\n\n"
        f"  User {A} not listed in Domino Directory\n\n"
        f"Your message\n\n  Subject: hi\n\nwas not delivered to:\n\n  {C}\n\nbecause:\n\n"
        f"  Mailbox full: {C} has exceeded its quota\n", "DELIVERY FAILURE"),
     {A: ("userunknown", "5.1.1"), C: ("mailboxfull", "5.2.2")}),
    ("gmail, a paragraph per recipient", notice(
        f"Delivery to the following recipient failed permanently:\n\n     {A}\n\n"
        "Technical details of permanent failure:\n"
        "550 5.1.1 The email account that you tried to reach does not exist.\n\n"
        f"Delivery to the following recipient failed permanently:\n\n     {C}\n\n"
        "Technical details of permanent failure:\n"
        "552 5.2.2 The email account that you tried to reach is over quota.\n",
        "Delivery Status Notification (Failure)"),
     {A: ("userunknown", "5.1.1"), C: ("mailboxfull", "5.2.2")}),
]

_EXIM_ENTRIES = (f"  {A}\n    SMTP error from remote mail server after RCPT TO:<{A}>:\n"
                 f"    host mx.b.example [192.0.2.12]: 550 5.2.2 <{A}>... Mailbox Full\n"
                 f"  {C}\n    SMTP error from remote mail server after RCPT TO:<{C}>:\n"
                 f"    host mx.b.example [192.0.2.12]: 550 5.2.1 <{C}>... User Unknown\n")
TABLE.append(
    # Mail.Ru's Exim report in Russian, then the same in English (public corpus
    # lhost-mailru-03): the last recipient's block runs on into the English copy,
    # whose first entry is its neighbour's
    ("exim report in two languages", notice(
        "\u042d\u0442\u043e \u043f\u0438\u0441\u044c\u043c\u043e "
        "\u0441\u043e\u0437\u0434\u0430\u043d\u043e "
        "\u0430\u0432\u0442\u043e\u043c\u0430\u0442\u0438\u0447\u0435\u0441\u043a\u0438.\n\n"
        + _EXIM_ENTRIES + "\n**********************\n\n"
        "This message was created automatically by mail delivery software.\n\n"
        "A message that you sent could not be delivered to one or more of its\n"
        "recipients. This is a permanent error. The following address(es) failed:\n\n"
        + _EXIM_ENTRIES, "Mail delivery failed: returning message to sender"),
     {A: ("mailboxfull", "5.2.2"), C: ("userunknown", "5.2.1")}))

TABLE.extend([
    # a recipient whose words carry no code takes the words before it only where they
    # are not its neighbour's entry
    ("exim, the second entry without a code", notice(
        "This message was created automatically by mail delivery software.\n\n"
        "A message that you sent could not be delivered to one or more of its\n"
        "recipients. This is a permanent error. The following address(es) failed:\n\n"
        f"  {C}\n    host mx.d.example [192.0.2.2]\n"
        f"    SMTP error from remote mail server after RCPT TO:<{C}>:\n"
        "    552 5.2.2 Mailbox full, quota exceeded\n"
        f"  {A}\n    Unrouteable address\n",
        "Mail delivery failed: returning message to sender"),
     {C: ("mailboxfull", "5.2.2"), A: ("hostunknown", "5.1.2")}),
    ("courier, the second entry expired", notice(
        "This is a delivery status notification from mx.a.example,\n"
        "running the Courier mail server, version 1.0.\n\n"
        "Your message to the following recipients cannot be delivered:\n\n"
        f"<{A}>:\n    mx.b.example [192.0.2.1]:\n>>> RCPT TO:<{A}>\n<<< 550 5.1.1 User unknown\n\n"
        f"<{C}>:\n    This message has been in the queue too long.\n",
        "NOTICE: mail delivery status."),
     {A: ("userunknown", "5.1.1"), C: ("expired", "4.4.7")}),
    ("sendmail, three recipients listed, a transcript for each", notice(
        SM_HEAD + f"<{A}>\n<{C}>\n<{E}>\n\n"
        "   ----- Transcript of session follows -----\n... while talking to mx.b.example.:\n"
        f">>> RCPT To:<{A}>\n<<< 550 5.1.1 <{A}>... User unknown\n"
        f"550 5.1.1 <{A}>... User unknown\n"
        f">>> RCPT To:<{C}>\n<<< 552 5.2.2 <{C}>... Mailbox full\n"
        f"552 5.2.2 <{C}>... Mailbox full\n"
        f"<{E}>... Deferred: Connection timed out with mx.f.example.\n"
        "Message could not be delivered for 5 days\nMessage will be deleted from queue\n",
        SM_SUBJ),
     {A: ("userunknown", "5.1.1"), C: ("mailboxfull", "5.2.2"), E: ("expired", "4.4.7")}),
])

#: the other side: words stated once for all the recipients are each one's
SHARED: list[tuple[str, bytes, dict[str, tuple[str, str]]]] = [
    ("addresses one to a line, the reason after the list", notice(
        f"Delivery to the following recipients failed permanently:\n\n     {A}\n     {C}\n\n"
        "Technical details of permanent failure:\n550 5.1.1 User unknown\n",
        "Delivery Status Notification (Failure)"),
     {A: ("userunknown", "5.1.1"), C: ("userunknown", "5.1.1")}),
    ("sendmail list, one transcript line for all", notice(
        SM_HEAD + f"<{A}>\n<{C}>\n\n"
        "   ----- Transcript of session follows -----\n"
        "552 5.2.2 Mailbox full\n", SM_SUBJ),
     {A: ("mailboxfull", "5.2.2"), C: ("mailboxfull", "5.2.2")}),
    ("three addresses one to a line, the reason after the list", notice(
        f"Delivery to the following recipients failed permanently:\n\n     {A}\n     {C}\n"
        f"     {E}\n\nTechnical details of permanent failure:\n552 5.2.2 Mailbox full\n",
        "Delivery Status Notification (Failure)"),
     {A: ("mailboxfull", "5.2.2"), C: ("mailboxfull", "5.2.2"), E: ("mailboxfull", "5.2.2")}),
    ("three sendmail entries, the transcript naming the first", notice(
        SM_HEAD + f"<{A}>\n<{C}>\n<{E}>\n\n"
        "   ----- Transcript of session follows -----\n"
        f"550 5.1.1 <{A}>... User unknown\n", SM_SUBJ),
     {A: ("userunknown", "5.1.1"), C: ("userunknown", "5.1.1"), E: ("userunknown", "5.1.1")}),
    ("the reason after the list names the first address", notice(
        f"Delivery to the following recipients failed permanently:\n\n     {A}\n     {C}\n\n"
        "Technical details of permanent failure:\nThe error that the other server "
        f"returned was:\n550 5.1.1 <{A}>... User Unknown\n",
        "Delivery Status Notification (Failure)"),
     {A: ("userunknown", "5.1.1"), C: ("userunknown", "5.1.1")}),
    ("qmail entries with no words of their own, then the reason", notice(
        "Hi. This is the qmail-send program at mx.a.example.\n"
        "I'm afraid I wasn't able to deliver your message to the following addresses.\n"
        "This is a permanent error; I've given up. Sorry it didn't work out.\n\n"
        f"<{A}>:\n<{C}>:\nRemote host said: 552 5.2.2 Mailbox full\n", "failure notice"),
     {A: ("mailboxfull", "5.2.2"), C: ("mailboxfull", "5.2.2")}),
    ("the reason before the list", notice(
        "550 5.1.1 No such user here. The following addresses failed:\n\n"
        f"   {A}\n   {C}\n", "failure notice"),
     {A: ("userunknown", "5.1.1"), C: ("userunknown", "5.1.1")}),
]


def _swap(raw: bytes) -> bytes:
    """The same report with the first two recipients' addresses exchanged."""
    return raw.replace(A.encode(), b"\0").replace(C.encode(), A.encode()).replace(
        b"\0", C.encode())


def _read(raw: bytes) -> dict[str, tuple[str, str]]:
    return {r.recipient: (r.reason, r.status or "") for r in analyze(raw).results}


class OwnEvidenceTests(SynchronousTestCase):
    """Each recipient of a free-text report keeps its own cause, in either order."""

    def test_each_format(self) -> None:
        for name, raw, want in TABLE:
            with self.subTest(name=name):
                self.assertEqual(_read(raw), want)

    def test_swapped(self) -> None:
        for name, raw, want in TABLE:
            swapped = dict(want)
            swapped[A], swapped[C] = want[C], want[A]
            with self.subTest(name=name):
                self.assertEqual(_read(_swap(raw)), swapped)

    def test_one_recipient_reads_the_whole_text(self) -> None:
        """With one recipient every line is its own: its listed reason decides."""
        raw = notice(SM_HEAD + f"<{A}>\n    (reason: 550 5.1.1 <{A}>... User unknown)\n\n"
                     "   ----- Transcript of session follows -----\n"
                     f">>> RCPT To:<{A}>\n<<< 450 4.2.0 try later\n"
                     f"<{A}>... Deferred: Connection refused by mx.b.example.\n"
                     "Message could not be delivered for 5 days\n", SM_SUBJ)
        self.assertEqual(_read(raw), {A: ("userunknown", "5.1.1")})

    def test_shared_words_stay_shared(self) -> None:
        for name, raw, want in SHARED:
            with self.subTest(name=name):
                self.assertEqual(_read(raw), want)


class MixedCausesProbeTests(SynchronousTestCase):
    """bench/perturb.py mixed-causes: another recipient's entry with another cause
    written before a one-recipient report's entry leaves the first its own reason
    (main read the neighbour's words for recipients with none of their own: 14 of
    153 reports changed, 2 now, both losing the recipient itself)."""

    def _probe(self, body: str, want: str) -> None:
        from tests.bounce.transport import MIXED_CAUSES, mixed_causes_entry
        one = notice(body)
        got = _read(one)
        self.assertEqual(list(got), [A])
        self.assertEqual(got[A][0], want)
        cause, second_reason = MIXED_CAUSES[want == MIXED_CAUSES[0][1]]
        head, sep, text = one.partition(b"\n\n")
        two = head + sep + mixed_causes_entry(text, text.index(A.encode()),
                                              C.encode(), cause)
        got2 = {r: x[0] for r, x in _read(two).items()}
        self.assertEqual(got2, {A: want, C: second_reason})

    def test_words_a_reader_does_not_know(self) -> None:
        # (rfc3464-39: Exchange 2003's notice with no cause at all, onhold)
        self._probe("Your Message\n\nSubject: Nyaan\n\n"
                    f"Did not reach the following recipient: {A}\n", "onhold")

    def test_not_a_valid_user(self) -> None:
        # (bp-warning-5: Exim's local router message)
        self._probe(f"You sent mail to {A}. That's not a valid user here.\n", "filtered")

    def test_a_cause_of_its_own(self) -> None:
        self._probe(f"<{A}>:\nSorry, no mailbox here by that name. (#5.1.1)\n", "userunknown")
