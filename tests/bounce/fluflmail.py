"""Messages built to find where fluflgate.cannot_find says True and flufl.bounce answers.

:func:`build` makes one message from a stream of choices: real MIME trees
(multipart with boundaries, nested message/rfc822, message/delivery-status
blocks), several charsets declared right, wrong or oddly (separators, quotes,
folded parameters, RFC 2231), quoted-printable with escapes and soft breaks,
base64 declared on text that is not, RFC 2047 words and non-ASCII bytes in
headers, header continuation lines, a missing header/body separator, every
detector's trigger in lower, upper or mixed case, split across lines or
spaced with white space only a ``str`` expression takes as such, and LF, CRLF,
CR or mixed line ends. The choices come from ``pick`` (one item of a
sequence), so the same builder serves hypothesis (``draw(sampled_from)``,
which shrinks) and a plain ``random.Random`` (fuzz/fuzz_fluflgate.py).
"""

from __future__ import annotations

import base64
import random
from collections.abc import Callable, Sequence
from typing import Any

from hypothesis import strategies as st

from hurricane.bounce import fluflgate

Pick = Callable[[Sequence[Any]], Any]

#: Triggers as their senders write them (case matters to Qmail, Exchange and AOL).
TRIGGERS = [
    "Hi. This is the qmail-send program at x.example.", "We're sorry. There's a problem",
    "Transcript of session follows.", "The following recipients did not receive this message:",
    "did not reach the following recipient(s):", "This Message was undeliverable due to "
    "the following reason:", "Mail to the following recipients could not be delivered",
    "Message not delivered to the following addresses:", "The Postfix program at host x.",
    "  The BNS Postfix program", "the keftamail program", "Failure Reason:",
    "Message from yahoo.com.", "Sorry, we were unable to deliver your message to the "
    "following address.", "Your message", "Your message ", "Delivery has failed to these "
    "recipients", "Delivery to the following recipient failed permanently:",
    "Delivery to the following recipients failed.", "Intended recipient: a@y.example",
    "Undeliverable Address: a@y.example", "--> Error description:",
    "A message that you sent could not be delivered", "Unable to deliver message to",
    "Your message could not be delivered to", "not yet been delivered",
    "Your message to: a@y.example", "This is an advisory-only email",
    "Delivery to the following recipient has been delayed:", "Failed addresses follow:",
    "The following addresses had permanent errors", "- no such user here",
    "Your message to <a@y.example> was automatically rejected:",
] + [p.decode() for p in fluflgate.PHRASES]

#: Address lines in each detector's shape, and lines that end a detector's reading.
ADDRESSES = [
    "<a@y.example>:", "<a@y.example>", "a@y.example", "  a@y.example", "[a@y.example]",
    "x, a@y.example, y", ", a@y.example,", "RCPT TO: <a@y.example>", "-- a@y.example",
    "Failed Recipient: a@y.example", "Recipient: [SMTP:a@y.example]", "To: a@y.example",
    "SMTP=a@y.example; on x", "a@y.example on x", "addressed to 'a@y.example'",
    "User's mailbox is full: <a@y.example>", "Error-for: a@y.example", '"a@y.example"',
    "a@y.example: no", "screenname", " a@y.example ", "user mailbox: a@y.example",
]
OTHER = ["", "", "it failed", "because:", "Error Detail", "---", "- end", "hello,",
         "Original message follows", "x,", "@", "a@", ",a@b,c", "Reporting-MTA: dns; x"]

#: What a text line's spaces may become, and letters a case-blind str expression folds.
SPACES = [" ", " ", " ", "\t", "  ", "\xa0", "\x1c", "\x1f", "\u2003", "\x85", "\x0b", "\x0c"]
FOLDS = {"i": ["\u0130", "\u0131"], "s": ["\u017f"], "k": ["\u212a"]}

#: Charsets declared, and the ones the text is really written in.
DECLARED = ["utf-8", "UTF-8", '"utf-8"', "iso-8859-1", "latin-1", "windows-1252", "koi8-r",
            "utf-16", "utf-16-le", "UTF-16BE", "utf-7", "shift_jis", "iso-2022-jp",
            "iso-8859-9", "cp1254", "x-unknown", "unknown-8bit", "utf\xe9-16", "<utf-16>",
            "utf\x00-8", "utf\n -16", "utf-8; x=1", '"utf-16";', "us-ascii"]
WRITTEN = ["ascii", "utf-8", "utf-8", "latin-1", "cp1252", "koi8-r", "utf-16-le", "utf-16-be",
           "utf-7", "shift_jis", "iso-8859-9"]
#: How a charset parameter is written: its separator from the name.
CHARSET_FORMS = ["; charset={}", ";charset={}", "; charset = {}", "; CharSet={}",
                 ";\n charset={}", "; charset\n ={}", "; charset\x0c={}", "; charset\x1c={}",
                 "; charset\n \n ={}", "; charset*=utf-16''{}", "; charset*0={}",
                 "; charset=\n {}", "; name=\"x;charset={}\""]
FROMS = ["MAILER-DAEMON@x.example", "MAILER-DAEMON@yahoo.com", "mailer-daemon@yale.edu",
         "postmaster@x.example", "a@aol.com", "x@x.example", "MAILER-DAEMON@x.example",
         "=?utf-8?q?Mail_Delivery?= <MAILER-DAEMON@x.example>", "M\xe9ler <postmaster@x>"] * 3 \
    + ["Mailer-Daemon@sina.com", "MAILER(x)-DAEMON@yahoo.com", "mailer-daemon (y)@yahoo.com",
       "Mailer Daemon <postmaster@yahoo.com>"]
MAILERS = ["Novell GroupWise", "NTMail v4", "Internet Mail Service", "Mutt", "nov", " int x",
           "Mutt", "Microsoft Outlook", "<SMTP32 v8>"]
SUBJECTS = ["failure", "=?utf-8?b?RGVsaXZlcnkgaGFzIGZhaWxlZA==?=", "Undeliverable: hi",
            "=?iso-8859-1?q?Your_message?=", "caf\xe9 Delivery has failed"]
TYPES = ["multipart/mixed", "multipart/report; report-type=delivery-status",
         "multipart/alternative", "multipart/digest", "MULTIPART/MIXED"]
DESCRIPTIONS = ["Notification", "notification", "NOTIFICATION", "Delivery report",
                "Undelivered Message"]
ENCODINGS = ["", "", "", "7bit", "8bit", "quoted-printable", "Quoted-Printable",
             "quoted-printable", "quoted-printable", "binary"] * 3 + ["base64", "x-uuencode"]
BOUNDARIES = ["b", "b=", "==b==", "XyZ", "b b"]
ENDINGS = ["\n"] * 15 + ["\r\n", "\r", "mixed"]


def _text_line(pick: Pick) -> str:
    """A line: a trigger, an address or filler, cased, spaced and folded at random
    (each character's fate drawn from one seed: few choices per line)."""
    line: str = pick(pick([TRIGGERS, ADDRESSES, ADDRESSES, OTHER, OTHER]))
    rnd = random.Random(pick(range(1 << 16)))
    case = pick(["same", "same", "upper", "lower", "title", "mixed"])
    if case == "upper":
        line = line.upper()
    elif case == "lower":
        line = line.lower()
    elif case == "title":
        line = line.title()
    elif case == "mixed":
        line = "".join(c.upper() if rnd.random() < 0.5 else c for c in line)
    if " " in line and pick([0, 1]):
        line = "".join(rnd.choice(SPACES) if c == " " else c for c in line)
    if pick([0, 0, 1]):
        line = "".join(rnd.choice([c, c] + FOLDS.get(c.lower(), [])) for c in line)
    if pick([0, 0, 0, 0, 1]) and len(line) > 1:      # split across two lines
        cut = pick(range(1, len(line)))
        line = line[:cut] + pick(["\n", "\n ", " \n"]) + line[cut:]
    return line


def _qp(data: bytes, pick: Pick) -> bytes:
    """``data`` quoted-printable: some bytes escaped (either case of hex), soft breaks anywhere."""
    rnd = random.Random(pick(range(1 << 16)))
    escape, soft = pick([0.0, 0.1, 0.3, 1.0]), pick([0.0, 0.05, 0.2])
    out = bytearray()
    for b in data:
        if b != 0x0A and (b >= 0x80 or rnd.random() < escape):
            esc = b"=%02X" % b
            out += esc.lower() if rnd.random() < 0.3 else esc
        else:
            out.append(b)
        if rnd.random() < soft:
            out += rnd.choice([b"=\n", b"=\n", b"= \n", b"="])
    return bytes(out)


def _header(name: str, value: str, pick: Pick) -> str:
    """A header line, its value folded at a space or a semicolon now and then."""
    if pick([0, 0, 1]):
        places = [i for i, c in enumerate(value) if c in " ;"]
        if places:
            i = pick(places)
            value = value[:i + 1] + pick(["\n ", "\n\t", "\n  "]) + value[i + 1:]
    return f"{name}: {value}"


def _leaf(pick: Pick, depth: int) -> tuple[list[str], bytes]:
    """A text part: its headers and its encoded body."""
    headers = []
    declared = pick(DECLARED + [None, None, None])
    written = pick(WRITTEN)
    ctype = pick(["text/plain", "text/plain", "text/plain", "text/html", "TEXT/PLAIN", None])
    if ctype is not None:
        params = pick(CHARSET_FORMS).format(declared) if declared is not None else ""
        headers.append(_header("Content-Type", ctype + params, pick))
    if pick([0, 1]):
        headers.append(_header("Content-Description", pick(DESCRIPTIONS), pick))
    cte = pick(ENCODINGS)
    if cte:
        headers.append(f"Content-Transfer-Encoding: {cte}")
    text = "\n".join(_text_line(pick) for _ in range(pick(range(1, 6))))
    data = text.encode(written, "replace") if written != "ascii" else \
        text.encode("ascii", "replace")
    if pick([0, 0, 1]):
        data += pick([b"\xe9", b"\xff\xfe", b"\xc3\xa9", b"\xe2\x80\x83", b"\x85", b"\xa0"])
    if cte.lower() == "quoted-printable" and pick([0, 1, 1]):
        data = _qp(data, pick)
    elif cte == "base64" and pick([0, 1]):
        data = base64.encodebytes(data)
    return headers, data


def _message(pick: Pick, depth: int, top: bool) -> bytes:
    """A message (or a part: ``top`` False), its headers, then its body."""
    headers: list[str] = []
    if top:
        headers.append(_header("From", pick(FROMS), pick))
        headers.append(_header("Subject", pick(SUBJECTS), pick))
        if pick([0, 0, 1]):
            headers.append(_header("X-Mailer", pick(MAILERS), pick))
        if pick([0] * 30 + [1]):
            headers.append("X-Failed-Recipients: a@y.example")
        if pick([0, 0, 1]):
            headers.append("Received: by x.example (Postfix) id 1")
    kind = pick(["leaf", "leaf", "multipart", "multipart", "rfc822", "status"]
                if depth < 3 else ["leaf"])
    if kind == "leaf":
        part_headers, body = _leaf(pick, depth)
        headers += part_headers
    elif kind == "rfc822":
        headers.append("Content-Type: message/rfc822")
        body = _message(pick, depth + 1, True)
    elif kind == "status":
        headers.append(_header("Content-Type", "message/delivery-status", pick))
        blocks = ["Reporting-MTA: dns; x.example"]
        for _ in range(pick(range(1, 3))):
            fields = [pick(["Final-Recipient: rfc822; a@y.example", "Final-Recipient: <a@y>",
                            "Original-Recipient: rfc822;a@y.example", "X-Actual: a@y"]),
                      pick(["Action: failed", "Action: delayed", "Action: delivered",
                            "action: FAILED", "Action: error"])]
            if pick([0, 0, 1]):
                fields.append(_text_line(pick))
            blocks.append("\n".join(fields))
        body = "\n\n".join(blocks).encode("utf-8") + b"\n"
    else:
        boundary = pick(BOUNDARIES)
        headers.append(_header("Content-Type", f'{pick(TYPES)}; boundary="{boundary}"', pick))
        if pick([0, 1]):
            headers.append(_header("Content-Description", pick(DESCRIPTIONS), pick))
        chunks = []
        if pick([0, 1]):
            chunks.append(_text_line(pick).encode("utf-8") + pick([b"", b"="]) + b"\n")
        for _ in range(pick(range(1, 4))):
            chunks.append(f"--{boundary}\n".encode() + _message(pick, depth + 1, False)
                          + b"\n")
        chunks.append(f"--{boundary}--\n".encode())
        if pick([0, 0, 1]):
            chunks.append(_text_line(pick).encode("utf-8") + b"\n")
        body = b"".join(chunks)
    head = "\n".join(headers).encode(pick(["utf-8", "latin-1"]), "replace")
    if pick([0, 0, 1]):     # a header line ending in "=", as a soft break would
        head += b"\nX-Note: x="
    separator = pick([b"\n\n", b"\n\n", b"\n\n", b"\n"])  # (no blank line: the body goes on)
    if not headers:
        separator = b"\n"
    return head + separator + body


def build(pick: Pick) -> bytes:
    """A message made of ``pick``'s choices, with line ends of one kind or mixed."""
    raw = _message(pick, 0, True)
    if pick([0] * 5 + [1]):
        raw = b"From x@y.example Mon Jan  1 00:00:00 2024\n" + raw
    ending = pick(ENDINGS)
    if ending == "\n":
        return raw
    if ending != "mixed":
        return raw.replace(b"\n", ending.encode())
    lines = raw.split(b"\n")
    return b"".join(line + pick([b"\n", b"\r\n", b"\r"]) for line in lines[:-1]) + lines[-1]


@st.composite
def flufl_mail(draw: st.DrawFn) -> bytes:
    """:func:`build` on hypothesis's choices."""
    return build(lambda seq: draw(st.sampled_from(seq)))
