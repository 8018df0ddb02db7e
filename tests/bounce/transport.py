"""What transports, gateways and other MTAs do to a returned message on its way.

Each perturbation takes the raw bytes of a message and returns them changed
(or None when it does not apply). None of them changes who bounced: an
analyzer's recipient set must survive every one (bench/perturb.py measures
it over the public corpora; tests/bounce/test_bounce_transport.py holds
the classes found there).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable

_DSN_RCPT = re.compile(rb"(?im)^(final-recipient|original-recipient):[ \t]*([^\r\n]*)$")
_TYPED = re.compile(rb"(?i)^(rfc822|utf-8)[ \t]*;[ \t]*")


def _lines(raw: bytes) -> list[bytes]:
    return re.split(rb"\r\n|\r|\n", raw)


def crlf(raw: bytes) -> bytes:
    """The originals travelled with CRLF."""
    return b"\r\n".join(_lines(raw))


def mixed_endings(raw: bytes) -> bytes:
    """Some gateways add CR to the lines they wrote and not to the ones they copied."""
    ls = _lines(raw)
    return b"".join(line + (b"\r\n" if i % 2 else b"\n") for i, line in enumerate(ls))[:-1]


def cr_only(raw: bytes) -> bytes:
    """Old Macintosh mailers: bare CR line ends."""
    return b"\r".join(_lines(raw))


def _dsn_value(raw: bytes, fn: Callable[[bytes, bytes], bytes | None]) -> bytes | None:
    changed = False

    def sub(m: re.Match[bytes]) -> bytes:
        nonlocal changed
        out = fn(m.group(1), m.group(2))
        if out is None:
            return m.group(0)
        changed = True
        return out

    new = _DSN_RCPT.sub(sub, raw)
    return new if changed else None


def _split_typed(value: bytes) -> tuple[bytes, bytes]:
    m = _TYPED.match(value)
    return (value[:m.end()], value[m.end():]) if m else (b"", value)


def angle_brackets(raw: bytes) -> bytes | None:
    """``Final-Recipient: rfc822; <a@b>`` (Exchange, Lotus, some appliances)."""
    def fn(name: bytes, value: bytes) -> bytes | None:
        t, addr = _split_typed(value.strip())
        if b"@" not in addr or addr.startswith(b"<"):
            return None
        return name + b": " + t + b"<" + addr + b">"
    return _dsn_value(raw, fn)


def no_address_type(raw: bytes) -> bytes | None:
    """``Final-Recipient: a@b``: the address type left out (old Sendmail-alikes)."""
    def fn(name: bytes, value: bytes) -> bytes | None:
        t, addr = _split_typed(value.strip())
        return name + b": " + addr if t and b"@" in addr else None
    return _dsn_value(raw, fn)


def folded_field(raw: bytes) -> bytes | None:
    """``Final-Recipient: rfc822;`` folded before the address."""
    def fn(name: bytes, value: bytes) -> bytes | None:
        t, addr = _split_typed(value.strip())
        return name + b": " + t.rstrip() + b"\n\t" + addr if t and b"@" in addr else None
    return _dsn_value(raw, fn)


def upper_case(raw: bytes) -> bytes | None:
    """Addresses written in upper case in the report's fields (their case carries no meaning
    in the domain, and in practice none in the local part)."""
    def fn(name: bytes, value: bytes) -> bytes | None:
        t, addr = _split_typed(value.strip())
        return name + b": " + t + addr.upper() if b"@" in addr else None
    return _dsn_value(raw, fn)


def original_only(raw: bytes) -> bytes | None:
    """A report naming the recipient only in Original-Recipient (Final-Recipient missing)."""
    if not re.search(rb"(?im)^final-recipient:", raw):
        return None
    if re.search(rb"(?im)^original-recipient:", raw):
        # (both named: dropping either loses what the other says)
        return None
    return re.sub(rb"(?im)^final-recipient:", b"Original-Recipient:", raw)


def dsn_as_text(raw: bytes) -> bytes | None:
    """The delivery-status part labelled text/plain (some gateways, webmail re-sends)."""
    new = re.sub(rb"(?i)content-type:[ \t]*message/delivery-status", b"Content-Type: text/plain",
                 raw)
    return new if new != raw else None


def report_as_mixed(raw: bytes) -> bytes | None:
    """multipart/report re-labelled multipart/mixed (forwarding, list software)."""
    new = re.sub(rb"(?i)multipart/report", b"multipart/mixed", raw, count=1)
    return new if new != raw else None


def headers_only(raw: bytes) -> bytes | None:
    """The returned original cut to its headers (RET=HDRS, text/rfc822-headers)."""
    m = re.search(rb"(?i)content-type:[ \t]*message/rfc822[^\n]*\n", raw)
    if m is None:
        return None
    # the original's header block ends at its first blank line; drop the body up to the
    # next boundary line
    rest = raw[m.end():]
    hb = re.search(rb"\r?\n\r?\n", rest)           # end of the part's own headers
    if hb is None:
        return None
    inner = rest[hb.end():]
    ob = re.search(rb"\r?\n\r?\n", inner)          # end of the original's headers
    if ob is None:
        return None
    nb = re.search(rb"(?m)^--", inner[ob.end():])
    tail = inner[ob.end() + nb.start():] if nb else b""
    head = raw[:m.start()] + b"Content-Type: text/rfc822-headers\n" + rest[:hb.end()]
    return head + inner[:ob.end()] + tail


_COMPLAINT = re.compile(rb"(?i)feedback-report|x-hmxmroriginalrecipient:")


def _complaint(raw: bytes) -> bool:
    """A complaint (ARF, RFC 5965; Microsoft's JMRP): the returned original is part of the
    report (RFC 5965 2 (d)), and its To: or JMRP field the only place naming whose it is."""
    return _COMPLAINT.search(raw) is not None


def no_original(raw: bytes) -> bytes | None:
    """The returned original left out (RET=HDRS refused, size limits, privacy); not from a
    complaint, whose original is the report (RFC 5965 2: the third part is required)."""
    if _complaint(raw):
        return None
    m = re.search(rb"(?i)content-type:[ \t]*(?:message/rfc822|text/rfc822-headers)", raw)
    if m is None:
        return None
    # back to the boundary line that opens this part, forward to the next boundary
    start = raw.rfind(b"\n--", 0, m.start())
    if start < 0:
        return None
    end = re.search(rb"\n--", raw[m.end():])
    line_end = raw.find(b"\n", start + 1)
    boundary = raw[start + 1:line_end].strip()
    close = raw.find(b"\n" + boundary.rstrip(b"-"), m.end())
    if close < 0 or end is None:
        return None
    return raw[:start] + raw[close:]


def quoted_inline(raw: bytes) -> bytes | None:
    """The whole report forwarded inline as quoted text by a person or a helpdesk (only
    a report with no base64 or quoted-printable part: a person quotes the decoded text a
    mail client shows, which this probe does not write)."""
    head, sep, body = raw.partition(b"\n\n")
    if not sep or re.search(rb"(?i)content-transfer-encoding:[ \t]*(?:base64|quoted)", raw):
        return None
    quoted = b"\n".join(b"> " + line for line in body.split(b"\n"))
    hdr = re.sub(rb"(?im)^content-(?:type|transfer-encoding):[^\n]*\n(?:[ \t][^\n]*\n)*", b"",
                 head + b"\n")
    return hdr + b"Content-Type: text/plain\n\n---------- Forwarded message ----------\n" + quoted


def _single_part_text(raw: bytes) -> tuple[bytes, bytes] | None:
    """(header block with a Content-Type, body) of a message that is one part sent
    without a transfer encoding; None for multipart or already encoded messages."""
    head, sep, body = raw.partition(b"\n\n")
    if not sep or re.search(rb"(?im)^content-type:[ \t]*multipart/", head) or \
            re.search(rb"(?im)^content-transfer-encoding:", head):
        return None
    if not re.search(rb"(?im)^content-type:", head):
        head += b"\nContent-Type: text/plain; charset=us-ascii"
    return head, body


def base64_body(raw: bytes) -> bytes | None:
    """A single-part text report sent base64-encoded (webmail, Exchange)."""
    part = _single_part_text(raw)
    if part is None:
        return None
    head, body = part
    return head + b"\nContent-Transfer-Encoding: base64\n\n" + base64.encodebytes(body)


_FIELD_LINE = re.compile(rb"(?:> ?)*(?:--|[A-Za-z][A-Za-z0-9-]{1,40}:)")


def rewrapped(raw: bytes) -> bytes | None:
    """Body lines longer than 60 characters re-wrapped at a blank (format=flowed senders,
    gateways with a line limit), headers and MIME structure untouched."""
    head, sep, body = raw.partition(b"\n\n")
    if not sep:
        return None
    out = []
    changed = False
    for line in body.split(b"\n"):
        # (a field line is a header, not text: a gateway that re-wraps text folds a
        # field with a blank, which folded_field covers)
        # (a continuation keeps the line's indent: a folded field stays folded)
        indent = line[:len(line) - len(line.lstrip(b" \t"))]
        while len(line) > 60 and not _FIELD_LINE.match(line):
            cut = line.rfind(b" ", 20, 60)
            if cut < 0 or not line[:cut].strip():
                break
            out.append(line[:cut])
            line = indent + line[cut + 1:]
            changed = True
        out.append(line)
    return head + sep + b"\n".join(out) if changed else None


def trailing_space(raw: bytes) -> bytes | None:
    """Blanks at the end of every body line (some MTAs pad; some strip)."""
    head, sep, body = raw.partition(b"\n\n")
    if not sep:
        return None
    return head + sep + b"\n".join(line + b"  " if line.strip() else line
                                   for line in body.split(b"\n"))


PERTURBATIONS: tuple[tuple[str, Callable[[bytes], bytes | None]], ...] = (
    ("crlf", crlf),
    ("mixed-endings", mixed_endings),
    ("cr-only", cr_only),
    ("angle-brackets", angle_brackets),
    ("no-address-type", no_address_type),
    ("folded-field", folded_field),
    ("upper-case", upper_case),
    ("original-only", original_only),
    ("dsn-as-text", dsn_as_text),
    ("report-as-mixed", report_as_mixed),
    ("headers-only", headers_only),
    ("no-original", no_original),
    ("quoted-inline", quoted_inline),
    ("base64-body", base64_body),
    ("rewrapped", rewrapped),
    ("trailing-space", trailing_space),
)


def no_report_part(raw: bytes) -> bytes | None:
    """The delivery-status part left out: the text and the original only (old MTAs,
    gateways that drop parts they do not know); only where the notification names each
    recipient the part named (else the part was the only place naming it)."""
    m = re.search(rb"(?i)content-type:[ \t]*message/delivery-status", raw)
    if m is None:
        return None
    body = re.search(rb"\r?\n\r?\n", raw)      # (the report's text, not its To:)
    text = raw[body.end() if body else 0:m.start()].lower()
    for v in (m2.group(2) for m2 in _DSN_RCPT.finditer(raw[m.start():].replace(b"\r", b""))):
        addr = _split_typed(v.strip())[1].strip(b"<> ").lower()
        if addr and addr not in text:
            return None
    start = raw.rfind(b"\n--", 0, m.start())
    if start < 0:
        return None
    line_end = raw.find(b"\n", start + 1)
    boundary = raw[start + 1:line_end].strip().rstrip(b"-")
    close = raw.find(b"\n" + boundary, m.end())
    if close < 0:
        return None
    return raw[:start] + raw[close:]


def forwarded(raw: bytes) -> bytes | None:
    """The whole report forwarded as an attachment (a person or a helpdesk passing it on)."""
    return (b"From: Someone <someone@forwarder.example>\nTo: postmaster@forwarder.example\n"
            b"Subject: Fwd: returned mail\nMIME-Version: 1.0\n"
            b"Content-Type: multipart/mixed; boundary=\"fwd-boundary-1\"\n\n"
            b"--fwd-boundary-1\nContent-Type: text/plain\n\nSee the attached message.\n\n"
            b"--fwd-boundary-1\nContent-Type: message/rfc822\n\n"
            + raw.replace(b"\r\n", b"\n") + b"\n--fwd-boundary-1--\n")


def neutral_subject(raw: bytes) -> bytes | None:
    """A Subject that says nothing of a failure (localised or custom templates)."""
    new = re.sub(rb"(?im)^subject:[^\n]*(?:\n[ \t][^\n]*)*", b"Subject: Notification", raw,
                 count=1)
    return new if new != raw else None


#: A From that names a mail system (or none: "From: <>")
_SYSTEM_FROM = re.compile(rb"(?i)mailer-daemon|postmaster|mail delivery|mail-daemon|"
                          rb"maildaemon|mail administrator|mailer_daemon|delivery subsystem|"
                          rb"microsoftexchange|<>")


def neutral_from(raw: bytes) -> bytes | None:
    """A From that is not a mailer-daemon name (appliances, hosted gateways): only where the
    From names a mail system, which a gateway may rename; an auto-reply's or a complaint's
    From is the person it is about, the only place that names them."""
    m = re.search(rb"(?im)^from:[^\n]*(?:\n[ \t][^\n]*)*", raw)
    if m is None or not _SYSTEM_FROM.search(m.group(0)):
        return None
    new = raw[:m.start()] + b"From: Mail System <notify@gateway.example>" + raw[m.end():]
    return new if new != raw else None


PERTURBATIONS = PERTURBATIONS + (
    ("no-report-part", no_report_part),
    ("forwarded", forwarded),
    ("neutral-subject", neutral_subject),
    ("neutral-from", neutral_from),
)


_ANY_ADDR = re.compile(rb"[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){1,10}")


def upper_addresses(raw: bytes) -> bytes | None:
    """Every address in the message in upper case (old mainframe and X.400 gateways)."""
    new = _ANY_ADDR.sub(lambda m: m.group(0).upper(), raw)
    return new if new != raw else None


def bracket_addresses(raw: bytes) -> bytes | None:
    """Bare addresses of the body put in angle brackets (and bracketed ones left alone)."""
    head, sep, body = raw.partition(b"\n\n")
    if not sep:
        return None
    new = re.sub(rb"(?<![<\w.@%+=/:'\"-])(" + _ANY_ADDR.pattern + rb")(?![>\w@.-])",
                 rb"<\1>", body)
    return head + sep + new if new != body else None


PERTURBATIONS = PERTURBATIONS + (
    ("upper-addresses", upper_addresses),
    ("bracket-addresses", bracket_addresses),
)


def _insert_in_text(raw: bytes, line: bytes, at_end: bool = False) -> bytes | None:
    """``line`` added to the first text/plain body (the notification), at its start."""
    m = re.search(rb"(?im)^content-type:[ \t]*text/plain", raw)
    if m is None:
        if re.search(rb"(?im)^content-type:[ \t]*(?!text/plain)", raw.split(b"\n\n", 1)[0]):
            return None
        pos = raw.find(b"\n\n")
    else:
        if re.search(rb"(?i)content-transfer-encoding:[ \t]*(?:base64|quoted)",
                     raw[m.start():raw.find(b"\n\n", m.start())]):
            return None
        pos = raw.find(b"\n\n", m.start())
    if pos < 0:
        return None
    return raw[:pos + 2] + line + b"\n\n" + raw[pos + 2:]


def help_line(raw: bytes) -> bytes | None:
    """The reporter's own contact address in the notification (university and ISP templates)."""
    return _insert_in_text(raw, b"For assistance, contact the help desk at "
                                b"helpdesk@reporter-isp.example or call 555-0100.")


def sender_line(raw: bytes) -> bytes | None:
    """The notification naming who sent the failed message (many templates do)."""
    return _insert_in_text(raw, b"This report concerns a message sent by "
                                b"<newsletter@sender-shop.example>.")
PERTURBATIONS = PERTURBATIONS + (
    ("help-line", help_line),
    ("sender-line", sender_line),
)


def html_only(raw: bytes) -> bytes | None:
    """The notification sent as HTML only (webmail providers, Exchange's HTML NDRs): a
    single-part text/plain report rewritten as text/html, lines as <br>, addresses as
    mailto: links."""
    head, sep, body = raw.partition(b"\n\n")
    if not sep or re.search(rb"(?im)^content-type:[ \t]*(?!text/plain)", head) or \
            re.search(rb"(?im)^content-transfer-encoding:[ \t]*(?:base64|quoted)", head):
        return None
    head = re.sub(rb"(?im)^content-type:[^\n]*(?:\n[ \t][^\n]*)*\n?", b"", head + b"\n")
    esc = body.replace(b"&", b"&amp;").replace(b"<", b"&lt;").replace(b">", b"&gt;")
    esc = _ANY_ADDR.sub(lambda m: b'<a href="mailto:' + m.group(0) + b'">' + m.group(0)
                        + b"</a>", esc)
    html = (b"<html><body><p>" + esc.replace(b"\n\n", b"</p><p>").replace(b"\n", b"<br>\n")
            + b"</p></body></html>\n")
    return head + b"Content-Type: text/html; charset=utf-8\n\n" + html


PERTURBATIONS = PERTURBATIONS + (("html-only", html_only),)


def html_part(raw: bytes) -> bytes | None:
    """The first text/plain part of a multipart report sent as text/html instead."""
    m = re.search(rb"(?im)^content-type:[ \t]*text/plain[^\n]*(?:\n[ \t][^\n]*)*", raw)
    if m is None:
        return None
    hb = raw.find(b"\n\n", m.end())
    if hb < 0 or re.search(rb"(?i)content-transfer-encoding:[ \t]*(?:base64|quoted)",
                           raw[m.start():hb]):
        return None
    nb = re.search(rb"\n--", raw[hb + 2:])
    if nb is None:
        return None
    body = raw[hb + 2:hb + 2 + nb.start()]
    single = html_only(b"X: y\n\n" + body)
    if single is None:
        return None
    html = single.split(b"\n\n", 1)[1]
    return (raw[:m.start()] + b"Content-Type: text/html; charset=utf-8" + raw[m.end():hb + 2]
            + html + raw[hb + 2 + nb.start():])


PERTURBATIONS = PERTURBATIONS + (("html-part", html_part),)


def mailman_uncaught(raw: bytes) -> bytes | None:
    """Mailman's "Uncaught bounce notification": the list passes a bounce it could not
    read on to the list owner, attached (2.1's template)."""
    return (b"From: mylist-bounces@lists.example\nTo: mylist-owner@lists.example\n"
            b"Subject: Uncaught bounce notification\nMIME-Version: 1.0\n"
            b"Content-Type: multipart/mixed; boundary=\"===============mm1==\"\n"
            b"Precedence: bulk\n\n"
            b"--===============mm1==\nContent-Type: text/plain; charset=\"us-ascii\"\n\n"
            b"The attached message was received as a bounce, but either the bounce\n"
            b"format was not recognized, or no member addresses could be extracted\n"
            b"from it.  This mailing list has been configured to send all\n"
            b"unrecognized bounce messages to the list administrator(s).\n\n"
            b"--===============mm1==\nContent-Type: message/rfc822\n"
            b"MIME-Version: 1.0\n\n"
            + raw.replace(b"\r\n", b"\n") + b"\n--===============mm1==--\n")


PERTURBATIONS = PERTURBATIONS + (("mailman-uncaught", mailman_uncaught),)


def xfr_only(raw: bytes) -> bytes | None:
    """Exim's X-Failed-Recipients kept, the notification's words in a language or template
    nothing reads (only where the header is there)."""
    head, sep, body = raw.partition(b"\n\n")
    if not sep or not re.search(rb"(?im)^x-failed-recipients:", head):
        return None
    m = re.search(rb"(?im)^content-type:[ \t]*text/plain[^\n]*(?:\n[ \t][^\n]*)*", raw)
    if m is None:
        if re.search(rb"(?im)^content-type:[ \t]*multipart/", head):
            return None
        return head + sep + b"Zustellung fehlgeschlagen.\n"
    hb = raw.find(b"\n\n", m.end())
    nb = re.search(rb"\n--", raw[hb + 2:]) if hb >= 0 else None
    if nb is None:
        return None
    return raw[:hb + 2] + b"Zustellung fehlgeschlagen.\n" + raw[hb + 2 + nb.start():]


PERTURBATIONS = PERTURBATIONS + (("xfr-only", xfr_only),)


_MANY = (b"To: Team <team@list.example>, ann@c.example, \"Bob B\" <bob@d.example>,\n"
         b"    carol@e.example\nCc: dave@f.example, <erin@g.example>\n")


def quoted_original_many(raw: bytes) -> bytes | None:
    """The original quoted inline after a single-part report's text, addressed to many
    (a list, Cc:), its body naming more addresses."""
    head, sep, body = raw.partition(b"\n\n")
    if not sep or re.search(rb"(?im)^content-type:[ \t]*multipart/", head) or \
            re.search(rb"(?im)^content-transfer-encoding:[ \t]*(?:base64|quoted)", head):
        return None
    return (head + sep + body.rstrip(b"\n") + b"\n\n------ This is a copy of the message, "
            b"including all the headers. ------\n\nReturn-path: <s@shop.example>\n"
            b"From: Shop <s@shop.example>\n" + _MANY + b"Subject: Sale\n\n"
            b"Write to frank@h.example or see grace@i.example.\n")


def attached_original_many(raw: bytes) -> bytes | None:
    """The returned original (message/rfc822) addressed to many, Cc: included (its own
    header block first); not a complaint's, whose original's To: is its recipient."""
    if _complaint(raw):
        return None
    m = re.search(rb"(?i)content-type:[ \t]*message/rfc822[^\n]*\n(?:[ \t][^\n]*\n)*"
                  rb"(?:[^\n]+\n)*\n", raw)
    if m is None:
        return None
    return raw[:m.end()] + b"From: Shop <s@shop.example>\n" + _MANY + b"Subject: Sale\n\n" \
        + b"Write to frank@h.example.\n\n" + raw[m.end():]


PERTURBATIONS = PERTURBATIONS + (("quoted-original-many", quoted_original_many),
                                 ("attached-original-many", attached_original_many))


def header_case(raw: bytes) -> bytes | None:
    """Header field names and MIME types in another case (field names and media types are
    case-insensitive: RFC 5322 1.2.2, RFC 2045 5.1)."""
    new = re.sub(rb"(?m)^([A-Za-z][A-Za-z0-9-]{0,60}):",
                 lambda m: m.group(1).upper() + b":", raw)
    new = re.sub(rb"(?i)(content-type:[ \t]*)([a-z0-9./+-]+)",
                 lambda m: m.group(1) + m.group(2).upper(), new)
    return new if new != raw else None


def no_mime_version(raw: bytes) -> bytes | None:
    """MIME-Version left out (old MTAs; readers go by Content-Type anyway)."""
    new = re.sub(rb"(?im)^mime-version:[^\n]*\n", b"", raw, count=1)
    return new if new != raw else None


PERTURBATIONS = PERTURBATIONS + (("header-case", header_case),
                                 ("no-mime-version", no_mime_version))


def _first_text(raw: bytes) -> bytes | None:
    """The body of the first 7bit text/plain part (or of a single-part text message)."""
    head, sep, body = raw.partition(b"\n\n")
    if not sep:
        return None
    if not re.search(rb"(?im)^content-type:[ \t]*multipart/", head):
        if re.search(rb"(?im)^content-transfer-encoding:[ \t]*(?:base64|quoted)", head) or \
                re.search(rb"(?im)^content-type:[ \t]*(?!text/plain)", head):
            return None
        return body
    m = re.search(rb"(?im)^content-type:[ \t]*text/plain[^\n]*(?:\n[ \t][^\n]*)*", raw)
    if m is None:
        return None
    orig = re.search(rb"(?im)^content-type:[ \t]*(?:message/rfc822|text/rfc822-headers)", raw)
    if orig is not None and orig.start() < m.start():
        return None     # (the only text is the returned original's own body)
    hb = raw.find(b"\n\n", m.end())
    if hb < 0 or re.search(rb"(?i)content-transfer-encoding:[ \t]*(?:base64|quoted)",
                           raw[m.start():hb]):
        return None
    b = re.search(rb'(?i)boundary=[ \t]*"?([^";\n]+)"?', head)
    if b is None:
        return None
    end = raw.find(b"\n--" + b.group(1).strip(), hb + 2)
    return raw[hb + 2:end] if end >= 0 else None


def inline_forward(raw: bytes) -> bytes | None:
    """A person forwards the report inline, as webmail does ("---------- Forwarded message
    ---------" and the report's From/Date/Subject/To, then its text): only text reports
    whose text names their recipients, as the MIME parts do not survive."""
    raw = raw.replace(b"\r\n", b"\n")
    head = raw.split(b"\n\n", 1)[0]
    if re.search(rb"(?im)^content-type:[ \t]*multipart/report", head):
        return None
    text = _first_text(raw)
    if text is None:
        return None
    # (Exim's X-Failed-Recipients does not survive a forward: only where the text names them)
    xfr = re.search(rb"(?im)^x-failed-recipients:[ \t]*([^\n]*(?:\n[ \t][^\n]*)*)", head)
    if xfr is not None and any(a.lower() not in text.lower()
                               for a in _ANY_ADDR.findall(xfr.group(1))):
        return None
    fields = []
    for name in (b"from", b"date", b"subject", b"to"):
        m = re.search(rb"(?im)^" + name + rb":[ \t]*([^\n]*)", head)
        if m is not None:
            fields.append(name.capitalize() + b": " + m.group(1))
    return (b"From: Ann <ann@shop.example>\nTo: bounces@shop.example\n"
            b"Subject: Fwd: returned mail\nContent-Type: text/plain; charset=utf-8\n\n"
            b"FYI, this came back.\n\n---------- Forwarded message ---------\n"
            + b"\n".join(fields) + b"\n\n" + text)


PERTURBATIONS = PERTURBATIONS + (("inline-forward", inline_forward),)


def quoted_addresses(raw: bytes) -> bytes | None:
    """Body addresses in single or double quotes instead of angle brackets ("Delivery to
    'a@b' failed", Exchange and Notes templates)."""
    head, sep, body = raw.partition(b"\n\n")
    if not sep:
        return None
    n = [0]

    def sub(m: re.Match[bytes]) -> bytes:
        n[0] += 1
        q = b"'" if n[0] % 2 else b'"'
        return q + m.group(1) + q
    new = re.sub(rb"<(" + _ANY_ADDR.pattern + rb")>", sub, body)
    return head + sep + new if new != body else None


PERTURBATIONS = PERTURBATIONS + (("quoted-addresses", quoted_addresses),)


def dsn_blank_lines(raw: bytes) -> bytes | None:
    """Delivery-status blocks separated by lines of blanks instead of empty lines, and a
    blank line added after each recipient field (sloppy report writers)."""
    m = re.search(rb"(?i)content-type:[ \t]*message/delivery-status[^\n]*\n(?:[ \t][^\n]*\n)*",
                  raw)
    if m is None:
        return None
    hb = raw.find(b"\n\n", m.start())
    nb = raw.find(b"\n--", hb + 2) if hb >= 0 else -1
    if nb < 0:
        return None
    part = raw[hb + 2:nb]
    new = re.sub(rb"\n\n", b"\n   \n", part)
    return raw[:hb + 2] + new + raw[nb:]


PERTURBATIONS = PERTURBATIONS + (("dsn-blank-lines", dsn_blank_lines),)


def folded_diagnostic(raw: bytes) -> bytes | None:
    """Diagnostic-Code fields folded at a blank near 50 characters (Postfix and others fold
    long fields; readers unfold them, RFC 5322 2.2.3)."""
    changed = False

    def fold(m: re.Match[bytes]) -> bytes:
        nonlocal changed
        line = m.group(0)
        out = []
        while len(line) > 50:
            cut = line.rfind(b" ", 25, 50)
            if cut < 0:
                break
            out.append(line[:cut])
            line = b"    " + line[cut + 1:]
            changed = True
        out.append(line)
        return b"\n".join(out)

    new = re.sub(rb"(?im)^diagnostic-code:[^\n]*", fold, raw)
    return new if changed else None


PERTURBATIONS = PERTURBATIONS + (("folded-diagnostic", folded_diagnostic),)


def lower_fields(raw: bytes) -> bytes | None:
    """Delivery-status field names in lower case (``final-recipient:``, ``status:``: field
    names are case-insensitive, RFC 3464 2.1; some gateways re-write them so)."""
    new = re.sub(rb"(?im)^(final-recipient|original-recipient|action|status|diagnostic-code|"
                 rb"remote-mta|reporting-mta|arrival-date|last-attempt-date|"
                 rb"x-actual-recipient):",
                 lambda m: m.group(1).lower() + b":", raw)
    return new if new != raw else None


def utf8_address_type(raw: bytes) -> bytes | None:
    """``Final-Recipient: utf-8; a@b`` (RFC 6533: an internationalised report types its
    addresses utf-8 whether or not they hold non-ASCII characters)."""
    def fn(name: bytes, value: bytes) -> bytes | None:
        t, addr = _split_typed(value.strip())
        return name + b": utf-8; " + addr if t and b"@" in addr else None
    return _dsn_value(raw, fn)


def no_dates(raw: bytes) -> bytes | None:
    """Arrival-Date and Last-Attempt-Date left out, Will-Retry-Until added where a reporter
    retries (the optional per-message and per-recipient fields vary by MTA)."""
    new = re.sub(rb"(?im)^(?:arrival-date|last-attempt-date):[^\n]*\n(?:[ \t][^\n]*\n)*", b"",
                 raw)
    return new if new != raw else None


def windows_1252(raw: bytes) -> bytes | None:
    """A single-part UTF-8 or ASCII text report converted to windows-1252 (a gateway that
    re-encodes text to its own charset; only where every character fits)."""
    head, sep, body = raw.partition(b"\n\n")
    if not sep or re.search(rb"(?im)^content-type:[ \t]*multipart/", head) or \
            re.search(rb"(?im)^content-transfer-encoding:[ \t]*(?:base64|quoted)", head):
        return None
    try:
        text = body.decode("utf-8")
        new = text.encode("cp1252")
    except (UnicodeDecodeError, UnicodeEncodeError):
        return None
    head = re.sub(rb"(?im)^content-type:[^\n]*(?:\n[ \t][^\n]*)*\n?", b"", head + b"\n")
    return head + b"Content-Type: text/plain; charset=windows-1252\n\n" + new


def qp_body(raw: bytes) -> bytes | None:
    """A single-part text report re-encoded quoted-printable (Exchange, webmail)."""
    import quopri
    part = _single_part_text(raw)
    if part is None:
        return None
    head, body = part
    return head + b"\nContent-Transfer-Encoding: quoted-printable\n\n" + quopri.encodestring(body)


def no_final_recipient(raw: bytes) -> bytes | None:
    """Final-Recipient and Original-Recipient left out: only the notification's text names
    the recipient (gateways that write a DSN without recipient fields); only where the
    notification names each of them."""
    names = [m.group(2) for m in _DSN_RCPT.finditer(raw)]
    if not names:
        return None
    m = re.search(rb"(?i)content-type:[ \t]*message/delivery-status", raw)
    body = re.search(rb"\r?\n\r?\n", raw)      # (the report's text, not its To:)
    text = raw[body.end() if body else 0:m.start()] if m else b""
    for v in names:
        addr = _split_typed(v.strip())[1].strip(b"<> ").lower()
        if not addr or addr not in text.lower():
            return None
    return _DSN_RCPT.sub(b"X-Removed: 1", raw)


PERTURBATIONS = PERTURBATIONS + (("lower-fields", lower_fields),
                                 ("utf8-address-type", utf8_address_type),
                                 ("no-dates", no_dates),
                                 ("windows-1252", windows_1252),
                                 ("qp-body", qp_body),
                                 ("no-final-recipient", no_final_recipient))


def mixed_outcomes(raw: bytes) -> bytes | None:
    """One more recipient in the report, delivered (or relayed to a system that sends no
    DSNs), its block first: a report of several recipients with different outcomes
    (RFC 3464 2.3.3); who bounced, and why, stays the same."""
    m = re.search(rb"(?im)^(?:final-recipient|original-recipient):", raw)
    if m is None:
        return None
    nl = b"\r\n" if b"\r\n" in raw[:m.start()] else b"\n"
    # (before the block that holds the first recipient field, whatever its order)
    at = raw.rfind(nl + nl, 0, m.start())
    if at < 0:
        return None
    at += 2 * len(nl)
    extra = nl.join((b"Final-Recipient: rfc822; delivered.rcpt@other.example",
                     b"Action: relayed" if len(raw) % 2 else b"Action: delivered",
                     b"Status: 2.0.0", b"", b""))
    return raw[:at] + extra + raw[at:]


PERTURBATIONS = PERTURBATIONS + (("mixed-outcomes", mixed_outcomes),)


_DIAG = re.compile(rb"(?im)^diagnostic-code:[ \t]*(?:smtp|x-[a-z-]+)?[ \t]*;?[ \t]*"
                   rb"([^\n]*(?:\n[ \t]+[^\n]*)*)")
_STATUS = re.compile(rb"(?im)^status:[ \t]*([245]\.\d{1,3}\.\d{1,3})")


def exchange_rerendered(raw: bytes) -> bytes | None:
    """A one-recipient DSN re-rendered by an Exchange gateway as its own text notice
    ("Undeliverable:", "Delivery has failed to these recipients or groups", the remote's
    reply in "Remote Server returned '...'" (2010 and later) or "#< #5.x.x smtp;... >"
    (2007)), the original attached; the DSN fields are gone, the reply and status kept."""
    raw = raw.replace(b"\r\n", b"\n")
    rcpts = [_split_typed(m.group(2).strip())[1].strip(b"<> ")
             for m in _DSN_RCPT.finditer(raw) if m.group(1).lower() == b"final-recipient"]
    d, st = _DIAG.search(raw), _STATUS.search(raw)
    if len(rcpts) != 1 or b"@" not in rcpts[0] or d is None or st is None:
        return None
    if b"." not in rcpts[0].rsplit(b"@", 1)[1]:
        # (a host-local final address, "a@mailhub0", "@relay:a@server": the report's
        # routable Original-Recipient names the recipient, which this notice would drop)
        return None
    diag = b" ".join(d.group(1).split())
    if not diag:
        return None
    a = rcpts[0]
    if len(raw) % 2:
        tech = b"Remote Server returned '" + diag + b"'"
    else:
        tech = b"#< #" + st.group(1) + b" smtp;" + diag + b"> #SMTP#"
    subj = re.search(rb"(?im)^subject:[ \t]*([^\n]*)", raw)
    return _notice_with_original(
        b"Microsoft Outlook <postmaster@gateway.example>",
        b"Undeliverable: " + (subj.group(1) if subj else b"Sale"), b"exch-1",
        b"text/plain; charset=us-ascii",
        b"Delivery has failed to these recipients or groups:\n\n"
        + a + b" (" + a + b")\nYour message wasn't delivered. The remote server returned "
        b"an error.\n\n\n\n\nDiagnostic information for administrators:\n\n"
        b"Generating server: gateway.example\n\n" + a + b"\n" + tech + b"\n", a)


def _notice_with_original(sender: bytes, subject: bytes, boundary: bytes, ctype: bytes,
                          text: bytes, a: bytes, head: bytes = b"") -> bytes:
    """A gateway's notice to the shop: its own text (``ctype``, with ``head``'s fields) and
    the original sent to ``a`` attached, in a multipart/mixed of ``boundary``."""
    return (b"From: " + sender + b"\nTo: <bounces@shop.example>\nSubject: " + subject
            + b"\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"" + boundary
            + b"\"\n\n--" + boundary + b"\nContent-Type: " + ctype + b"\n" + head + b"\n"
            + text + b"\n--" + boundary + b"\nContent-Type: message/rfc822\n\n"
            b"From: Shop <news@shop.example>\nTo: <" + a + b">\nSubject: Sale\n\nHello\n\n--"
            + boundary + b"--\n")


PERTURBATIONS = PERTURBATIONS + (("exchange-rerendered", exchange_rerendered),)


def iso_2022_jp(raw: bytes) -> bytes | None:
    """A single-part UTF-8 text report with Japanese in it converted to ISO-2022-JP (a
    Japanese gateway or mail client re-encoding it; only where every character fits)."""
    head, sep, body = raw.partition(b"\n\n")
    if not sep or re.search(rb"(?im)^content-type:[ \t]*multipart/", head) or \
            re.search(rb"(?im)^content-transfer-encoding:[ \t]*(?:base64|quoted)", head):
        return None
    try:
        text = body.decode("utf-8")
        if text.isascii():
            return None
        new = text.encode("iso-2022-jp")
    except (UnicodeDecodeError, UnicodeEncodeError):
        return None
    head = re.sub(rb"(?im)^content-type:[^\n]*(?:\n[ \t][^\n]*)*\n?", b"", head + b"\n")
    return head + b"Content-Type: text/plain; charset=iso-2022-jp\n\n" + new


PERTURBATIONS = PERTURBATIONS + (("iso-2022-jp", iso_2022_jp),)


_RE_ENCODABLE = re.compile(rb"(?i)content-type:[ \t]*(?:text/plain|message/delivery-status)")


def parts_base64(raw: bytes) -> bytes | None:
    """Each text part and the delivery-status part of a multipart report re-encoded base64
    (Exchange and webmail gateways re-encode every part they pass on; RFC 3464 allows any
    encoding for message/delivery-status, it is not message/*-restricted like rfc822)."""
    raw = raw.replace(b"\r\n", b"\n")
    head = raw.split(b"\n\n", 1)[0]
    b = re.search(rb'(?i)boundary=[ \t]*"?([^";\n]+)"?', head)
    if b is None or not re.search(rb"(?im)^content-type:[ \t]*multipart/", head):
        return None
    delim = b"\n--" + b.group(1).strip()
    pieces = raw.split(delim)
    changed = False
    for i in range(1, len(pieces)):
        part = pieces[i]
        if part.startswith(b"--"):
            break
        ph, sep, body = part.partition(b"\n\n")
        if not sep or not _RE_ENCODABLE.search(ph) or b"ransfer-encoding:" in ph.lower():
            continue
        pieces[i] = (ph + b"\nContent-Transfer-Encoding: base64" + sep
                     + base64.encodebytes(body.rstrip(b"\n") + b"\n"))
        changed = True
    return delim.join(pieces) if changed else None


PERTURBATIONS = PERTURBATIONS + (("parts-base64", parts_base64),)


def _one_failure(raw: bytes) -> tuple[bytes, bytes, bytes] | None:
    """(address, diagnostic, status) of a one-recipient DSN with a routable final address;
    None for any other message."""
    rcpts = [_split_typed(m.group(2).strip())[1].strip(b"<> ")
             for m in _DSN_RCPT.finditer(raw) if m.group(1).lower() == b"final-recipient"]
    d, st = _DIAG.search(raw), _STATUS.search(raw)
    if len(rcpts) != 1 or b"@" not in rcpts[0] or d is None or st is None or \
            b"." not in rcpts[0].rsplit(b"@", 1)[1]:
        return None
    diag = b" ".join(d.group(1).split())
    return (rcpts[0], diag, st.group(1)) if diag else None


def german_notice(raw: bytes) -> bytes | None:
    """A one-recipient DSN re-rendered by a German-language gateway as its own notice: the
    recipient named only in the German text ("Ihre Nachricht konnte an folgende
    Empfänger nicht zugestellt werden:"), with the remote's reply; the original
    attached, the DSN fields gone."""
    raw = raw.replace(b"\r\n", b"\n")
    one = _one_failure(raw)
    if one is None:
        return None
    a, diag, st = one
    text = ("Diese Nachricht wurde automatisch vom Mailsystem erzeugt.\n\n"
            "Ihre Nachricht konnte an folgende Empfänger nicht zugestellt werden:\n\n"
            "    ").encode() + a + b"\n    Grund: Dauerhafter Fehler (Status " + st \
        + b")\n    Antwort des Servers: " + diag + b"\n"
    return _notice_with_original(b"Mail-System <mailer-daemon@gw.example.de>",
                                 b"Unzustellbar: Sale", b"de-1", b"text/plain; charset=utf-8",
                                 text, a, head=b"Content-Transfer-Encoding: 8bit\n")


def html_table_notice(raw: bytes) -> bytes | None:
    """A one-recipient DSN re-rendered as an HTML-only notice whose recipient and reply sit
    in the cells of a table (Office 365's and hosted gateways' NDRs): the address a
    mailto: link, the reply in the next cell; the original attached, the DSN gone."""
    raw = raw.replace(b"\r\n", b"\n")
    one = _one_failure(raw)
    if one is None:
        return None
    a, diag, st = one
    esc = diag.replace(b"&", b"&amp;").replace(b"<", b"&lt;").replace(b">", b"&gt;")
    html = (b"<html><body><table style=\"width:100%\"><tr><td><b>Your message to "
            b"</b></td></tr><tr><td><a href=\"mailto:" + a + b"\">" + a + b"</a></td>"
            b"<td>couldn't be delivered.</td></tr></table>\n"
            b"<table><tr><th>Recipient</th><th>Status</th><th>Reply</th></tr>\n"
            b"<tr><td>" + a + b"</td><td>" + st + b"</td><td>" + esc + b"</td></tr>"
            b"</table></body></html>\n")
    return _notice_with_original(b"Postmaster <postmaster@gw.example>", b"Undeliverable: Sale",
                                 b"ht-1", b"text/html; charset=utf-8", html, a)


def exchange2003_notice(raw: bytes) -> bytes | None:
    """A one-recipient DSN re-rendered as Exchange 2003's notice, which quotes the original's
    To: (here a list's address, not the recipient: mail to a list reaches its members)
    before the recipient it failed ("Your message / To: ... / did not reach the following
    recipient(s): a@b on DATE")."""
    raw = raw.replace(b"\r\n", b"\n")
    one = _one_failure(raw)
    if one is None:
        return None
    a, diag, st = one
    return (b"From: System Administrator <postmaster@corp.example>\n"
            b"To: <bounces@shop.example>\nSubject: Undeliverable: Sale\nMIME-Version: 1.0\n"
            b"Content-Type: text/plain; charset=us-ascii\n\n"
            b"Your message\n\n  To:      Members <members@list.example>\n  Subject: Sale\n"
            b"  Sent:    Thu, 9 Apr 2020 10:00:00 +0200\n\n"
            b"did not reach the following recipient(s):\n\n"
            + a + b" on Thu, 9 Apr 2020 10:00:05 +0200\n    <gw.corp.example #" + st
            + b" smtp;" + diag + b">\n")


def _sign(raw: bytes, sig: bytes) -> bytes | None:
    """``sig`` added at the end of the notification's text: the first unencoded
    text/plain part, or a single-part text (before the original quoted after it)."""
    raw = raw.replace(b"\r\n", b"\n")
    head, sep, body = raw.partition(b"\n\n")
    if not sep:
        return None
    if not re.search(rb"(?im)^content-type:[ \t]*multipart/", head):
        if re.search(rb"(?im)^content-transfer-encoding:[ \t]*(?:base64|quoted)", head) or \
                re.search(rb"(?im)^content-type:[ \t]*(?!text/plain)", head):
            return None
        m = re.search(rb"(?im)^[ \t>|-]*(?:-{2,}|={2,})[^\n]*(?:original|copy of|returned|"
                      rb"undelivered|message follows)[^\n]*$|^received: from ", body)
        at = m.start() if m else len(body)
        return head + sep + body[:at].rstrip(b"\n") + b"\n" + sig + b"\n" + body[at:]
    text = _first_text(raw)
    if text is None or not text.strip():
        return None
    at = raw.find(text, len(head))
    if at < 0:
        return None
    return raw[:at] + text.rstrip(b"\n") + b"\n" + sig + raw[at + len(text):]


def signature(raw: bytes) -> bytes | None:
    """The notification signed by the reporter's team, its contact address alone on a line
    after the signature separator (RFC 3676 4.3 "-- "; ISP and university templates)."""
    return _sign(raw, b"\n-- \nThe Mail Team, Reporter ISP\nhelp@reporter-isp.example\n")


def signed_off(raw: bytes) -> bytes | None:
    """The same without a separator: a closing line, the team, its address alone on the
    last line ("Regards,\nThe Mail Team\nhelp@..."; templates that sign off so)."""
    return _sign(raw, b"\nRegards,\nThe Mail Team, Reporter ISP\nhelp@reporter-isp.example\n")


def disclaimer(raw: bytes) -> bytes | None:
    """A corporate gateway's disclaimer appended to the notification's text (gateways add
    it to every message leaving the organisation, notices included), naming an address
    to write to."""
    return _sign(raw, b"\n______________________________________________________________\n"
                      b"CONFIDENTIALITY NOTICE: This e-mail is intended only for its "
                      b"addressee. If you received it in error, please notify "
                      b"privacy@reporter-corp.example and delete it. Scanned for viruses by "
                      b"MailGuard.\n")


def delivered_listed(raw: bytes) -> bytes | None:
    """A report's text that also lists a recipient it delivered, under its own heading
    before the failed ones (Exchange's "Delivery to the following recipients succeeded:";
    Sendmail's "The following addresses had successful delivery notifications"): only
    where a text names a failed recipient (a report without a delivery-status part, or
    one whose text does), as the delivered one is then named in the text alone."""
    raw = raw.replace(b"\r\n", b"\n")
    if re.search(rb"(?i)content-type:[ \t]*message/(?:delivery-status|feedback-report)", raw) \
            or not re.search(rb"(?i)fail|could not|undeliver|unable|rejected|unknown|"
                             rb"not be delivered|error", raw):
        return None
    heading = (b"Delivery to the following recipients succeeded:"
               if len(raw) % 2 else
               b"   ----- The following addresses had successful delivery notifications -----")
    return _insert_in_text(raw, heading + b"\n\n   delivered.rcpt@other.example\n")


PERTURBATIONS = PERTURBATIONS + (("delivered-listed", delivered_listed),
                                 ("disclaimer", disclaimer),
                                 ("signature", signature), ("signed-off", signed_off),
                                 ("exchange2003-notice", exchange2003_notice),
                                 ("german-notice", german_notice),
                                 ("html-table-notice", html_table_notice))


#: The second recipient's entry of the mixed-causes probe (bench/perturb.py): its
#: cause, and the reason it must read as; the other cause when the report's own
#: recipient has this one.
MIXED_CAUSES = ((b"552 5.2.2 Mailbox full, quota exceeded", "mailboxfull"),
                (b"550 5.1.1 User unknown", "userunknown"))


def mixed_causes_entry(body: bytes, at: int, second: bytes, cause: bytes) -> bytes:
    """A free-text report's body with an entry for ``second`` written before the line
    at ``at`` (its recipient's entry): "<second>: cause" as its own paragraph, indented
    (and quoted) as that line is, as qmail, Postfix and Courier write an entry of
    another recipient with another cause. The report's recipient keeps its own reason,
    and ``second`` reads as ``cause``."""
    line = body.rfind(b"\n", 0, at) + 1
    rest = body[line:]
    lead = rest[:len(rest) - len(rest.lstrip(b" \t>"))]
    return body[:line] + lead + b"<" + second + b">: " + cause + b"\n\n" + body[line:]


# ---------------------------------------------------------------------------
# One mailbox, two spellings: a report naming its recipient again in another
# spelling of the same address, where real MTAs write one. Each spelling takes the
# recipient (lower-case ASCII bytes, "local@domain") and returns the other
# spelling, or None where it has none; the probes add it to reports whose
# fields name their one recipient, bench/perturb.py's "spellings" to free-text
# reports' entries. The recipient set must stay the same.


def _imcea(text: bytes) -> bytes:
    """Exchange's IMCEA encapsulation of ``text``: every character outside letters, digits
    and "-" written "+XX" (hex), "/" written "_" ("+40" for "@", "+2E" for ".")."""
    out = []
    for c in text:
        ch = bytes([c])
        if ch.isalnum() or ch in b"-=":
            out.append(ch)
        elif ch == b"/":
            out.append(b"_")
        else:
            out.append(b"+%02X" % c)
    return b"".join(out)


def _idna_other(domain: bytes) -> bytes | None:
    """The domain in its other IDNA form (A-labels <-> U-labels), None for a domain with
    none (all-ASCII labels that are not A-labels)."""
    import idna
    try:
        text = domain.decode("utf-8")
        if text.isascii():
            if "xn--" not in text:
                return None
            return idna.decode(text).encode("utf-8")
        return idna.encode(text, uts46=True)
    except (UnicodeError, idna.IDNAError):
        return None


def _split_rcpt(r: bytes) -> tuple[bytes, bytes] | None:
    local, at, domain = r.rpartition(b"@")
    return (local, domain) if at and local and b"." in domain else None


def spelled_upper_dot(r: bytes) -> bytes | None:
    """Sendmail's canonical name: upper case (a mainframe gateway) and the domain ending
    in the root's "." ("<A@X.EXAMPLE.>")."""
    return b"<" + r.upper() + b".>"


def spelled_mailto(r: bytes) -> bytes | None:
    """Office 365's text rendering of a link: "a@x<mailto:a@x>"."""
    return r + b"<mailto:" + r + b">"


def spelled_quoted_local(r: bytes) -> bytes | None:
    """The local part quoted though it need not be ('"a"@x', RFC 5321 4.1.2: the same
    mailbox as a@x), as some gateways write every local part."""
    s = _split_rcpt(r)
    return b'"' + s[0] + b'"@' + s[1] if s and b'"' not in s[0] else None


def spelled_spaced_brackets(r: bytes) -> bytes | None:
    """Angle brackets with blanks inside ("< a@x >", Lotus Notes and old gateways)."""
    return b"< " + r + b" >"


def spelled_imceasmtp(r: bytes) -> bytes | None:
    """Exchange's encapsulated SMTP address, at the reporting organisation's domain
    ("IMCEASMTP-a+40x+2Eexample@corp.example")."""
    return b"IMCEASMTP-" + _imcea(r) + b"@corp.example"


def spelled_imceaex(r: bytes) -> bytes | None:
    """Exchange's encapsulated X.500 DN of the recipient's mailbox in its own organisation:
    the DN's last CN its alias, at its organisation's domain
    ("IMCEAEX-_O=ORG_OU=..._CN=RECIPIENTS_CN=a@x.example")."""
    s = _split_rcpt(r)
    if s is None or b"+" in s[0] or b"_" in s[0]:
        return None
    return (b"IMCEAEX-_O=CORP_OU=EXCHANGE+20ADMINISTRATIVE+20GROUP+20+28FYDIBOHF23SPDLT+29"
            b"_CN=RECIPIENTS_CN=" + _imcea(s[0]) + b"@" + s[1])


def spelled_idn(r: bytes) -> bytes | None:
    """The domain in its other IDNA form: Unicode in the text where the fields have
    punycode (Postfix with SMTPUTF8, Exim), or the reverse (RFC 6533 "utf-8;" fields)."""
    s = _split_rcpt(r)
    other = _idna_other(s[1]) if s else None
    return s[0] + b"@" + other if s and other else None


def spelled_percent(r: bytes) -> bytes | None:
    """The address as a link's text rendering writes it, its "@" percent-encoded
    ("a@x.example <mailto:a%40x.example>": HTML notices turned to text)."""
    return r + b" <mailto:" + r.replace(b"@", b"%40") + b">"


def spelled_display_name(r: bytes) -> bytes | None:
    """The address as its own display name, in capitals ('"A@X.EXAMPLE" <a@x.example>':
    Outlook and gateways name a recipient with no name so, a mainframe in capitals)."""
    return b'"' + r.upper() + b'" <' + r + b">"


def spelled_encoded_word(r: bytes) -> bytes | None:
    """The address as an RFC 2047 encoded word of itself before it, undecoded
    ("=?utf-8?B?...?= <a@x>": a gateway copying a header into the text as it came)."""
    return b"=?utf-8?B?" + base64.b64encode(r) + b"?= <" + r + b">"


def host_reply(r: bytes, relay: bool) -> bytes | None:
    """A line of the recipient's entry naming the recipient at a host of its domain: the
    remote's reply ("Remote host said: 550 5.1.1 <a@mail.x.example>... User unknown",
    qmail's and Sendmail's entries quote a remote that canonicalises its domain to its
    mail host's name so), or with ``relay`` the reporting relay's RCPT after it rewrote
    the address ("SMTP error from remote mail server after RCPT TO:<a@mail.x.example>:",
    Exim's); for bench/perturb.py, which adds it under the recipient's entry line."""
    s = _split_rcpt(r)
    if s is None:
        return None
    a = s[0] + b"@mail." + s[1]
    if relay:
        return b"    SMTP error from remote mail server after RCPT TO:<" + a + b">:"
    return b"    Remote host said: 550 5.1.1 <" + a + b">... User unknown"


#: The spellings, by the name of their probe.
SPELLINGS: tuple[tuple[str, Callable[[bytes], bytes | None]], ...] = (
    ("upper-dot", spelled_upper_dot),
    ("mailto", spelled_mailto),
    ("quoted-local", spelled_quoted_local),
    ("spaced-brackets", spelled_spaced_brackets),
    ("imceasmtp", spelled_imceasmtp),
    ("imceaex", spelled_imceaex),
    ("idn", spelled_idn),
    ("percent", spelled_percent),
    ("display-name", spelled_display_name),
    ("encoded-word", spelled_encoded_word),
)


def _named_recipient(raw: bytes) -> bytes | None:
    """The one recipient a report names in its fields (lower-case): one Final-Recipient
    with a routable address, else the one address of X-Failed-Recipients."""
    raw = raw.replace(b"\r\n", b"\n")
    one = _one_failure(raw)
    if one is not None:
        return one[0].lower()
    head = raw.split(b"\n\n", 1)[0]
    xfr = re.search(rb"(?im)^x-failed-recipients:[ \t]*([^\n]*(?:\n[ \t][^\n]*)*)", head)
    addrs = _ANY_ADDR.findall(xfr.group(1)) if xfr else []
    return addrs[0].lower() if len(addrs) == 1 else None


def _spelling_probe(spell: Callable[[bytes], bytes | None]) -> Callable[[bytes], bytes | None]:
    """A probe adding, at the start of the notification's text, the report's one recipient
    (named in its fields) in the spelling ``spell`` gives, as an entry with the failure
    stated under it (Exchange's "Delivery has failed to these recipients or groups:"
    list, Exim's and qmail's entries)."""
    def probe(raw: bytes) -> bytes | None:
        r = _named_recipient(raw)
        other = spell(r) if r is not None else None
        if other is None:
            return None
        return _insert_in_text(raw.replace(b"\r\n", b"\n"),
                               b"Delivery has failed to these recipients or groups:\n\n"
                               + other + b"\n    550 5.1.1 The email account does not exist.")
    probe.__doc__ = spell.__doc__
    return probe


PERTURBATIONS = PERTURBATIONS + tuple(("spelled-" + n, _spelling_probe(f)) for n, f in SPELLINGS)


def original_to_encoded(raw: bytes) -> bytes | None:
    """The returned original's To: naming the report's one recipient (named in its fields)
    with an RFC 2047 encoded word of the address as its display name
    ("To: =?utf-8?Q?a=40x=2Eexample?= <a@x.example>", mail clients that write a
    name-less recipient so)."""
    raw = raw.replace(b"\r\n", b"\n")
    r = _named_recipient(raw)
    if r is None:
        return None
    q = b"".join(b"=%02X" % c if bytes([c]) in b"@.=?_" else bytes([c]) for c in r)
    new = re.sub(rb"(?im)^to:[ \t]*<?" + re.escape(r) + rb">?[ \t]*$",
                 lambda _m: b"To: =?utf-8?Q?" + q + b"?= <" + r + b">", raw)
    return new if new != raw else None


PERTURBATIONS = PERTURBATIONS + (("original-to-encoded", original_to_encoded),)
