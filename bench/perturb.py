#!/usr/bin/env python3
"""Transport perturbations: does a message's recipient set survive what MTAs do to it?

    python bench/perturb.py [--only NAME,...] [--show N] [--field recipients|reason]

Each public message (the public corpus and the UNSEALED part of bounce-corpus-2;
the sealed third is never read) is changed the way other MTAs, gateways and
transports change returned mail (line endings, folded or re-wrapped lines,
angle brackets, upper case, Original-Recipient only, a delivery-status part
sent as text/plain, the original cut to its headers or dropped, base64
bodies, lower-case field names, utf-8 address types, charset conversion
(windows-1252, ISO-2022-JP), re-encoded parts, no recipient fields, several
recipients with different outcomes, an Exchange gateway's own notice, ...).
A change of transport does not change who bounced: the analyzer's recipient
set (and, with --field reason, its reason) must be the same on the changed
message as on the original.  The script prints, per
perturbation, how many messages it applied to and how many changed answer
(file names listed with --show). Then "second-recipient": each free-text report naming
one recipient gets its recipient's entry written again for a second address, and both
must come out; "other-roles": the same reports get a line naming another address as
something else (a new address, the sender, whom to ask, a message's identifier, the
remote's own rendering of the recipient in its reply) and keep their one recipient;
"role-recipients": the same reports get a second failed recipient named in those rules'
words (a role mailbox the mail failed to reach, "for email X", a German summary under
labels) and it must come out; "local-original": the same reports get the original quoted
inline under a header block in German, French, Spanish or Japanese naming two more of
its recipients, who did not bounce; "mixed-causes": the same reports get an entry of a
second address with another cause before their recipient's, and each must keep its own
reason; and "forwarded-pair": each bounce forwarded as an attachment with another
report, in either order, and the recipients of both must come out. It finds classes of
extraction failure without the sealed data; tests/bounce/test_bounce_transport.py keeps
the classes fixed here from coming back.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Iterator

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from _seal import corpus1, corpus2, emails, sealed  # noqa: E402

from hurricane.bounce.analyze import analyze, to_prediction  # noqa: E402
from hurricane.bounce.model import RecipientResult  # noqa: E402
from tests.bounce.transport import (  # noqa: E402
    MIXED_CAUSES,
    PERTURBATIONS,
    SPELLINGS,
    host_reply,
    mixed_causes_entry,
)


def answer(raw: bytes, field: str) -> object:
    p = to_prediction(analyze(raw), "x")
    if field == "recipients":
        return tuple(sorted(p["recipients"]))
    return (p["category"], p["reason"])


_SECOND = "second.rcpt@other.example"
_FIELD = re.compile(rb"[ \t>]*[A-Za-z][A-Za-z0-9-]{0,60}:[ \t]")
_ORIGINAL_PART = re.compile(rb"(?im)^content-type:[ \t]*(?:message/rfc822|text/rfc822-headers)")


def _entry(body: bytes, r: bytes, qp: bool) -> tuple[int, int] | None:
    """Where the notification's own text names ``r``: the first line naming it that is
    not a header field or its folded continuation (the returned original's headers,
    attached or quoted inline, are the original's, not the report's entry), before
    the attached original; with the indented lines under it, and in a quoted-printable
    text the lines its soft line breaks join to it."""
    o = _ORIGINAL_PART.search(body)
    region = body[:o.start()] if o else body
    pos, in_field = 0, False
    low_r = r.lower()
    for line in region.split(b"\n"):
        start, pos = pos, pos + len(line) + 1
        if _FIELD.match(line):
            in_field = True
            continue
        if in_field and line[:1] in (b" ", b"\t"):
            continue
        in_field = False
        if low_r not in line.lower():
            continue
        end = start + len(line)
        while qp and body[start:end].endswith(b"=") and end < len(body):
            nxt = body.find(b"\n", end + 1)
            end = nxt if nxt >= 0 else len(body)
        cont = re.match(rb"(?:\n[ \t]+[^\n]*)*", body[end:])
        return start, end + (cont.end() if cont else 0)
    return None


def _one_recipient_reports(raws: dict[str, bytes]) -> Iterator[
        tuple[str, RecipientResult, bytes, bytes, bytes, tuple[int, int]]]:
    """The free-text reports naming one recipient whose entry the text holds (not a mailing
    list manager's answer: it names its list, once: mailinglist.* rules): (name, its one
    result, head, separator, body (LF line ends), the entry's span in body)."""
    for n, raw0 in raws.items():
        raw = raw0.replace(b"\r\n", b"\n")
        a = analyze(raw)
        if a.category != "bounce" or len(a.results) != 1 or a.results[0].source != "heuristic" \
                or (a.results[0].rule or "").startswith("mailinglist."):
            continue
        one = a.results[0]
        r = one.recipient.encode()
        head, sep, body = raw.partition(b"\n\n")
        at = _entry(body, r, b"quoted-printable" in raw.lower()) if r else None
        if at is not None:
            yield n, one, head, sep, body, at


_XFR = re.compile(rb"(?im)^x-failed-recipients:[^\n]*")


def _failed_also(head: bytes, addr: str) -> bytes:
    """``head`` with ``addr`` added to its X-Failed-Recipients field, if it has one: a
    report that lists its failed recipients there lists a second one there too (the
    analyzer takes the field's list as the failed recipients)."""
    return _XFR.sub(lambda m: m.group(0) + b", " + addr.encode(), head, count=1)


def second_recipient(raws: dict[str, bytes], show: int) -> int:
    """Each free-text report naming one recipient, its recipient's entry (its line and the
    indented lines under it) written again for a second address: both must come out.
    Not where the text names the recipient only in the returned original's headers, nor
    a mailing list manager's answer (it names its list, once: mailinglist.* rules)."""
    applied, bad = 0, []
    for n, one, head, sep, body, at in _one_recipient_reports(raws):
        r = one.recipient.encode()
        entry = re.sub(re.escape(r), _SECOND.encode(), body[at[0]:at[1]], flags=re.I)
        new = _failed_also(head, _SECOND) + sep + body[:at[1]] + b"\n" + entry + body[at[1]:]
        applied += 1
        got = sorted(to_prediction(analyze(new), "x")["recipients"])
        if got != sorted([r.decode(), _SECOND]):
            bad.append((n, got))
    print("%-22s applied %4d  changed %3d" % ("second-recipient", applied, len(bad)))
    for n, got in bad[:show]:
        print("    %-45s -> %s" % (n, got))
    return len(bad)


def spellings(raws: dict[str, bytes], show: int, only: list[str]) -> int:
    """Each free-text report naming one recipient, its recipient's entry written again
    after it with the recipient in another spelling of the same address
    (tests/bounce/transport.py's SPELLINGS: upper case and the root's ".", quoted local
    part, IMCEA encapsulation, IDNA...): the one recipient must come out, once; and
    the remote's reply, or the relay's RCPT, naming the recipient at its mail host added
    under the entry ("host-reply"). The same reports as second-recipient; one line per spelling."""
    total = 0
    reports = list(_one_recipient_reports(raws))
    for name, spell in SPELLINGS:
        if only and "spelled-text-" + name not in only:
            continue
        applied, bad = 0, []
        for n, one, head, sep, body, at in reports:
            r = one.recipient.encode()
            other = spell(r.lower()) if r.isascii() else None
            if other is None:
                continue
            entry = re.sub(re.escape(r), other.replace(b"\\", b"\\\\"), body[at[0]:at[1]],
                           flags=re.I)
            new = head + sep + body[:at[1]] + b"\n" + entry + body[at[1]:]
            applied += 1
            got = sorted(to_prediction(analyze(new), "x")["recipients"])
            if got != [one.recipient]:
                bad.append((n, got))
        print("%-22s applied %4d  changed %3d" % ("spelled-text-" + name, applied, len(bad)))
        for n, got in bad[:show]:
            print("    %-45s -> %s" % (n, got))
        total += len(bad)
    if not only or "spelled-text-host-reply" in only:
        # (the remote's reply under the entry naming the recipient at its mail host)
        applied, bad = 0, []
        for n, one, head, sep, body, at in reports:
            line = host_reply(one.recipient.encode().lower(), relay=len(body) % 2 == 1)
            if line is None:
                continue
            new = head + sep + body[:at[1]] + b"\n" + line + body[at[1]:]
            applied += 1
            got = sorted(to_prediction(analyze(new), "x")["recipients"])
            if got != [one.recipient]:
                bad.append((n, got))
        print("%-22s applied %4d  changed %3d" % ("spelled-text-host-reply", applied, len(bad)))
        for n, got in bad[:show]:
            print("    %-45s -> %s" % (n, got))
        total += len(bad)
    return total


def mixed_causes(raws: dict[str, bytes], show: int) -> int:
    """Each free-text report naming one recipient gets, before its recipient's entry, an
    entry of a second address with another cause ("<b@x>: 552 5.2.2 Mailbox full", or
    "550 5.1.1 User unknown" when the recipient's own reason is mailboxfull): both come
    out, each with its own reason (the first keeps the one it had alone). The same
    reports as second-recipient."""
    applied, bad = 0, []
    for n, first, head, sep, body, at in _one_recipient_reports(raws):
        cause, want = MIXED_CAUSES[first.reason == MIXED_CAUSES[0][1]]
        new = _failed_also(head, _SECOND) + sep + mixed_causes_entry(body, at[0],
                                                                      _SECOND.encode(), cause)
        applied += 1
        got = {x.recipient: x.reason for x in analyze(new).results}
        if got != {first.recipient: first.reason, _SECOND: want}:
            bad.append((n, "%s -> %s" % (first.reason, got)))
    print("%-22s applied %4d  changed %3d" % ("mixed-causes", applied, len(bad)))
    for n, got in bad[:show]:
        print("    %-45s %s" % (n, got))
    return len(bad)


#: Lines naming an address in another role than a failed recipient, as reports and
#: remote replies write them (docs/bounce-reasons.md, recipients).
_OTHER_ROLES = (
    b"    The user has moved; the new address is new.home@other.example",
    b"    550 5.7.1 <b-12=x=y@return.shop.example>: Sender address rejected: Access denied",
    b"Sent on behalf of: newsletter@shop.example",
    b"A copy of this report was sent to hostmaster@other.example.",
    b"For further assistance, please contact help@other.example",
    b"Original message ID: <DM6PR04MB6556E0A5C0B83DB5F1A2@DM6PR04MB6556.namprd04.prod.outlook.com>",
    b"Originator: newsletter@shop.example",
    b"The list owner is owner@lists.other.example.",
    b"    host mx.other.example[192.0.2.9] said: 550 5.1.1 <other.alias@other.example>: "
    b"Recipient address rejected: User unknown",
)


#: Lines naming a second failed recipient as reports write it in prose or in a localised
#: summary, in the words the other-role rules read: a role or list mailbox the mail failed
#: to reach (Gmail's, Exchange Online's wording), "for email X", a gateway's German
#: summary under labels beside the sender's and the subject's ({s}: its address).
_ROLE_RECIPIENTS = (
    (b"Your message to webmaster@other.example couldn't be delivered: 550 5.1.1 user "
     b"unknown", b"webmaster@other.example"),
    (b"Delivery to news-request@lists.other.example failed: 550 5.1.1 user unknown",
     b"news-request@lists.other.example"),
    (b"Message delivery failed for email " + _SECOND.encode() + b": 552 5.2.2 mailbox full",
     _SECOND.encode()),
    (f"Empfänger: {_SECOND}\nAbsender: news@shop.example\nBetreff: News\nGrund: 550 "
     "5.1.1 Benutzer unbekannt".encode(), _SECOND.encode()),
)


def role_recipients(raws: dict[str, bytes], show: int) -> int:
    """Each free-text report naming one recipient gets, after its recipient's entry, a
    second failed recipient named so (_ROLE_RECIPIENTS): it must come out (the other
    side of other-roles: its rules must not take a failed recipient for another role),
    and so must the report's own, unless a second recipient's entry costs it that
    already (second-recipient's class, counted there). The same reports as
    second-recipient."""
    applied, bad = 0, []
    lost = set()    # (the reports whose own recipient a plain second entry loses)
    for n, one, head, sep, body, at in _one_recipient_reports(raws):
        r = one.recipient.encode()
        entry = re.sub(re.escape(r), _SECOND.encode(), body[at[0]:at[1]], flags=re.I)
        plain = _failed_also(head, _SECOND) + sep + body[:at[1]] + b"\n" + entry + body[at[1]:]
        if one.recipient not in to_prediction(analyze(plain), "x")["recipients"]:
            lost.add(n)
        for line, second in _ROLE_RECIPIENTS:
            new = (_failed_also(head, second.decode()) + sep + body[:at[1]] + b"\n" + line
                   + b"\n" + body[at[1]:])
            applied += 1
            got = sorted(to_prediction(analyze(new), "x")["recipients"])
            if second.decode() not in got or one.recipient not in got and n not in lost:
                bad.append((n, got))
    print("%-22s applied %4d  changed %3d" % ("role-recipients", applied, len(bad)))
    for n, got in bad[:show]:
        print("    %-45s -> %s" % (n, got))
    return len(bad)


def _after_entry(name: str, raws: dict[str, bytes], show: int,
                 lines: Callable[[str], list[bytes]], skip: bytes = b"") -> int:
    """Each free-text report naming one recipient (_one_recipient_reports; not one whose
    lower-cased text holds ``skip``), once for each of ``lines(recipient)``, with that
    line written after its recipient's entry: the recipient set stays the one recipient.
    Prints and returns how many changed."""
    applied, bad = 0, []
    for n, one, head, sep, body, at in _one_recipient_reports(raws):
        if skip and skip in (head + body).lower():
            continue
        for line in lines(one.recipient):
            new = head + sep + body[:at[1]] + b"\n" + line + body[at[1]:]
            applied += 1
            got = sorted(to_prediction(analyze(new), "x")["recipients"])
            if got != [one.recipient]:
                bad.append((n, got))
    print("%-22s applied %4d  changed %3d" % (name, applied, len(bad)))
    for n, got in bad[:show]:
        print("    %-45s -> %s" % (n, got))
    return len(bad)


def other_roles(raws: dict[str, bytes], show: int) -> int:
    """Each free-text report naming one recipient gets, after its recipient's entry, a line
    naming another address in another role (where the recipient moved to, the sender a
    reply names, on whose behalf, whom the report was copied to, whom to ask): the
    recipient set stays the one recipient. The same reports as second-recipient."""
    return _after_entry("other-roles", raws, show, lambda r: list(_OTHER_ROLES))


#: A quoted original's header block as mail clients write it in other languages
#: (Outlook's, under its separator or an underscore line): {r} is the failed recipient,
#: the others are the original's other recipients, who did not bounce.
_LOCAL_BLOCKS = (
    "-----Ursprüngliche Nachricht-----\nVon: news@shop.example\nGesendet: Montag, 1. Januar "
    "2024 10:00\nAn: {r}; c2@other.example\nCc: d2@other.example\nBetreff: News\n",
    "________________________________\nDe : news@shop.example\nEnvoyé : lundi 1 janvier 2024 "
    "10:00\nÀ : {r}; c2@other.example\nCc : d2@other.example\nObjet : News\n",
    "-----Mensaje original-----\nDe: news@shop.example\nEnviado el: lunes, 1 de enero de 2024"
    "\nPara: {r}; c2@other.example\nCC: d2@other.example\nAsunto: News\n",
    "________________________________\n差出人: news@shop.example\n送信日時: 2024年1月1日 10:00\n"
    "宛先: {r}; c2@other.example\nCC: d2@other.example\n件名: News\n",
)


def xfr_others(raws: dict[str, bytes], show: int) -> int:
    """Each free-text report naming one recipient that lists it in X-Failed-Recipients
    (Exim's, Gmail's) gets, after its entry, a line naming the original's other
    recipients beside it, who did not fail ("The message was addressed to: r, c2, d2"):
    the recipient set stays the header's one."""
    one_failed = {n: raw for n, raw in raws.items()
                  if _XFR.search(raw.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0])}
    return _after_entry("xfr-others", one_failed, show, lambda r: [
        b"The message was addressed to: " + r.encode() + b", c2@other.example, d2@other.example"])


def local_original(raws: dict[str, bytes], show: int) -> int:
    """Each free-text report naming one recipient (not ISO-8859 or ISO-2022-JP ones: the
    probe writes UTF-8) gets, after its recipient's entry, the original quoted inline
    under a header block in German, French, Spanish or Japanese naming two more
    recipients of the original: the recipient set stays the one recipient. The same
    reports as second-recipient."""
    def blocks(r: str) -> list[bytes]:
        return [("\n" + b.format(r=r) + "\nhello\n").encode() for b in _LOCAL_BLOCKS]
    return _after_entry("local-original", raws, show, blocks, skip=b"iso-")


_PAIR = (b"From: Mail Delivery System <MAILER-DAEMON@mx.other.example>\n"
         b"To: <bounces@shop.example>\nSubject: Undelivered Mail Returned to Sender\n\n"
         b"This is the mail system at host mx.other.example.\n\n"
         b"<" + _SECOND.encode() + b">: host mx.other.example[192.0.2.9] said: 550 5.1.1 "
         b"<" + _SECOND.encode() + b">: Recipient address rejected: User unknown (in reply "
         b"to RCPT TO command)\n")


def forwarded_pair(raws: dict[str, bytes], show: int) -> int:
    """Each bounce forwarded as an attachment together with another report (a helpdesk's
    "forward as attachments", a digest), in either order: the recipients of both come
    out."""
    applied, bad = 0, []
    for n, raw0 in raws.items():
        raw = raw0.replace(b"\r\n", b"\n")
        p = to_prediction(analyze(raw), "x")
        if p["category"] != "bounce" or not p["recipients"] or _SECOND in p["recipients"]:
            continue
        want = sorted(p["recipients"] + [_SECOND])
        for pair in ((raw, _PAIR), (_PAIR, raw)):
            new = (b"From: Help Desk <help@shop.example>\nTo: bounces@shop.example\n"
                   b"Subject: Fw: two returned messages\nMIME-Version: 1.0\n"
                   b"Content-Type: multipart/mixed; boundary=\"pair-1\"\n\n"
                   b"--pair-1\nContent-Type: text/plain\n\nThese two came back.\n\n"
                   + b"".join(b"--pair-1\nContent-Type: message/rfc822\n\n" + m + b"\n"
                              for m in pair) + b"--pair-1--\n")
            applied += 1
            got = sorted(to_prediction(analyze(new), "x")["recipients"])
            if got != want:
                bad.append((n, got))
    print("%-22s applied %4d  changed %3d" % ("forwarded-pair", applied, len(bad)))
    for n, got in bad[:show]:
        print("    %-45s -> %s" % (n, got))
    return len(bad)


#: The probes that build their own reports, by name, in the order they print (then the
#: spelled-text-* family and forwarded-pair).
_REPORT_PROBES: tuple[tuple[str, Callable[[dict[str, bytes], int], int]], ...] = (
    ("second-recipient", second_recipient), ("mixed-causes", mixed_causes),
    ("other-roles", other_roles), ("role-recipients", role_recipients),
    ("xfr-others", xfr_others), ("local-original", local_original))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="")
    ap.add_argument("--show", type=int, default=5)
    ap.add_argument("--field", choices=("recipients", "reason"), default="recipients")
    a = ap.parse_args()
    files = emails(corpus1()) + [f for f in emails(corpus2()) if not sealed(f)]
    raws = {}
    for f in files:
        with open(f, "rb") as fp:
            raws[os.path.basename(f)] = fp.read()
    base = {n: answer(r, a.field) for n, r in raws.items()}
    chosen: dict[str, Callable[[bytes], bytes | None]] = dict(PERTURBATIONS)
    if a.only:
        chosen = {k: v for k, v in chosen.items() if k in a.only.split(",")}
    total_bad = 0
    for name, fn in chosen.items():
        applied, bad = 0, []
        for n, raw in raws.items():
            new = fn(raw)
            if new is None or new == raw:
                continue
            applied += 1
            got = answer(new, a.field)
            if got != base[n]:
                bad.append((n, base[n], got))
        total_bad += len(bad)
        print("%-22s applied %4d  changed %3d" % (name, applied, len(bad)))
        for n, was, got in bad[:a.show]:
            print("    %-45s %s -> %s" % (n, was, got))
    only = a.only.split(",") if a.only else []
    for name, probe in _REPORT_PROBES:
        if not only or name in only:
            total_bad += probe(raws, a.show)
    if not only or any(o.startswith("spelled-text-") for o in only):
        total_bad += spellings(raws, a.show, [o for o in only if o.startswith("spelled-text-")])
    if not only or "forwarded-pair" in only:
        total_bad += forwarded_pair(raws, a.show)
    print("total changed:", total_bad)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
