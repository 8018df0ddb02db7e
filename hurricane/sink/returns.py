"""Asynchronous returns the smart sink mails back after accepting a message.

Every builder is a pure function of the accepted message and the clock's
time, returning the bytes of a complete message (CRLF line endings):

- :func:`dsn`: an RFC 3464 delivery status notification (``multipart/report;
  report-type=delivery-status``), ``Action: failed`` or ``delayed``;
- :func:`ndr`: a free-text non-delivery report in the manner of a named MTA
  (Postfix, Exim, Sendmail, qmail, Exchange, Gmail). These templates were
  written for this project from the general shape of each MTA's reports
  (their well-known opening sentences and the way each quotes the remote
  server's reply); they are not copies of real messages;
- :func:`autoreply`: an RFC 3834 out-of-office reply;
- :func:`arf`: an RFC 5965 feedback report (a complaint).

All of them go to the envelope sender of the accepted message, which for
Hurricane is the signed VERP return path, and quote the original headers so
the ``X-Hurricane-Token`` header is there too.
"""

from __future__ import annotations

import email.utils
import hashlib
from dataclasses import dataclass

from hurricane.outcome import Action
from hurricane.sink.scenario import Behaviour

__all__ = ["Accepted", "ReturnMessage", "arf", "autoreply", "build_return", "dsn", "ndr"]

CRLF = "\r\n"


@dataclass(frozen=True)
class Accepted:
    """One accepted (message, recipient) pair, as the sink saw it.

    Args:
        mail_from: the envelope sender (Hurricane's VERP address).
        rcpt: the recipient.
        data: the message as received (Received header included).
        received_at: when the final dot was answered (clock seconds).
        queue_id: the id the sink gave in its 250 reply.
    """

    mail_from: str
    rcpt: str
    data: bytes
    received_at: float
    queue_id: str


@dataclass(frozen=True)
class ReturnMessage:
    """A message to send back: envelope and bytes.

    Args:
        kind: ``dsn``, ``delayed``, ``ndr``, ``autoreply`` or ``arf``.
        mail_from: the envelope sender of the return ("" = null sender).
        rcpt: where it goes (the original envelope sender).
        data: the message bytes.
    """

    kind: str
    mail_from: str
    rcpt: str
    data: bytes


def _headers(data: bytes) -> str:
    end = data.find(b"\r\n\r\n")
    block = data if end < 0 else data[: end + 2]
    return block.decode("utf-8", "replace")


def _header(data: bytes, name: str) -> str:
    want = name.lower() + ":"
    lines = _headers(data).split(CRLF)
    for i, line in enumerate(lines):
        if line.lower().startswith(want):
            value = line[len(want):]
            for cont in lines[i + 1:]:
                if cont[:1] in (" ", "\t"):
                    value += " " + cont.strip()
                else:
                    break
            return value.strip()
    return ""


def _body_excerpt(data: bytes, limit: int = 2000) -> str:
    end = data.find(b"\r\n\r\n")
    body = b"" if end < 0 else data[end + 4:]
    return body[:limit].decode("utf-8", "replace")


def _date(now: float) -> str:
    return email.utils.formatdate(now, usegmt=True)


def _msgid(acc: Accepted, kind: str, host: str) -> str:
    digest = hashlib.sha256(f"{kind}\0{acc.queue_id}\0{acc.rcpt}".encode()).hexdigest()[:20]
    return f"<{digest}.{kind}@{host}>"


def _boundary(acc: Accepted, kind: str) -> str:
    return "=_sink_" + hashlib.sha256(f"b\0{kind}\0{acc.queue_id}\0{acc.rcpt}".encode()
                                      ).hexdigest()[:24]


def _fmt(text: str, acc: Accepted) -> str:
    return text.replace("{rcpt}", acc.rcpt)


def _finish(lines: list[str]) -> bytes:
    text = CRLF.join(lines)
    if not text.endswith(CRLF):
        text += CRLF
    return text.encode("utf-8", "replace")


def dsn(acc: Accepted, behaviour: Behaviour, host: str, now: float, *,
        delayed: bool = False) -> bytes:
    """An RFC 3464 report: ``Action: failed`` (or ``delayed``) for ``acc.rcpt``."""
    b = _boundary(acc, "dsn")
    status = behaviour.return_status
    diagnostic = _fmt(behaviour.return_text, acc)
    if not diagnostic[:3].isdigit():
        code = "4" if status.startswith("4") else "5"
        diagnostic = f"{code}{'51' if code == '5' else '50'} {status} {diagnostic}"
    action = (Action.delayed if delayed else Action.failed).value
    subject = ("Delayed Mail (still being retried)" if delayed
               else "Undelivered Mail Returned to Sender")
    intro = (
        [f"This is the mail system at host {host}.", "",
         "####################################################################",
         "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #",
         "####################################################################", "",
         "Your message could not be delivered for some time. The mail system",
         "will continue to try to deliver it.", ""]
        if delayed else
        [f"This is the mail system at host {host}.", "",
         "I'm sorry to have to inform you that your message could not",
         "be delivered to one or more recipients. It's attached below.", "",
         "                   The mail system", ""]
    )
    return _finish([
        f"From: MAILER-DAEMON@{host} (Mail Delivery System)",
        f"To: {acc.mail_from}",
        f"Subject: {subject}",
        f"Date: {_date(now)}",
        f"Message-ID: {_msgid(acc, action, host)}",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{b}"',
        "",
        "This is a MIME-encapsulated message.",
        "",
        f"--{b}",
        "Content-Type: text/plain; charset=us-ascii",
        "Content-Description: Notification",
        "",
        *intro,
        f"<{acc.rcpt}>: host {host}[127.0.0.1] said: {diagnostic}",
        "",
        f"--{b}",
        "Content-Type: message/delivery-status",
        "Content-Description: Delivery report",
        "",
        f"Reporting-MTA: dns; {host}",
        f"X-Sink-Queue-ID: {acc.queue_id}",
        f"Arrival-Date: {_date(acc.received_at)}",
        "",
        f"Final-Recipient: rfc822; {acc.rcpt}",
        f"Original-Recipient: rfc822;{acc.rcpt}",
        f"Action: {action}",
        f"Status: {status}",
        f"Remote-MTA: dns; {host}",
        f"Diagnostic-Code: smtp; {diagnostic}",
        *([f"Will-Retry-Until: {_date(now + 3 * 86400)}"] if delayed else []),
        "",
        f"--{b}",
        "Content-Type: text/rfc822-headers",
        "Content-Description: Undelivered Message Headers",
        "",
        _headers(acc.data).rstrip(CRLF),
        "",
        f"--{b}--",
    ])


def _original_inline(acc: Accepted) -> list[str]:
    return [*_headers(acc.data).rstrip(CRLF).split(CRLF), "", *_body_excerpt(acc.data).split(CRLF)]


def ndr(acc: Accepted, behaviour: Behaviour, host: str, now: float) -> bytes:
    """A free-text NDR in ``behaviour.style`` (no machine-readable part)."""
    style = behaviour.style
    diag = _fmt(behaviour.return_text, acc)
    status = behaviour.return_status
    code = diag[:3] if diag[:3].isdigit() else ("550" if status.startswith("5") else "450")
    bare = diag[4:].strip() if diag[:3].isdigit() else diag
    if bare.startswith(status):
        bare = bare[len(status):].strip()
    date = _date(now)
    head = (f"Date: {date}", f"To: {acc.mail_from}",
            f"Message-ID: {_msgid(acc, 'ndr-' + style, host)}")
    n = _Ndr(acc, host, code, status, bare, head)
    return _finish(_NDR_STYLES.get(style, _ndr_postfix)(n))


@dataclass(frozen=True)
class _Ndr:
    """What every style of free-text NDR says: the return, the reporting host, the
    reply (code, enhanced status, the rest of the text) and the top header lines."""

    acc: Accepted
    host: str
    code: str
    status: str
    bare: str
    head: tuple[str, ...]


def _ndr_exim(n: _Ndr) -> list[str]:
    """Exim 4's "Mail delivery failed"."""
    return [
        f"From: Mail Delivery System <Mailer-Daemon@{n.host}>",
        "Subject: Mail delivery failed: returning message to sender",
        "Auto-Submitted: auto-replied", *n.head,
        f"X-Failed-Recipients: {n.acc.rcpt}", "",
        "This message was created automatically by mail delivery software.", "",
        "A message that you sent could not be delivered to one or more of its",
        "recipients. This is a permanent error. The following address(es) failed:", "",
        f"  {n.acc.rcpt}",
        f"    host {n.host} [127.0.0.1]",
        "    SMTP error from remote mail server after end of data:",
        f"    {n.code} {n.status} {n.bare}", "",
        "------ This is a copy of the message, including all the headers. ------", "",
        *_original_inline(n.acc),
    ]


def _ndr_sendmail(n: _Ndr) -> list[str]:
    """Sendmail's "Returned mail" with its session transcript."""
    return [
        f"From: Mail Delivery Subsystem <MAILER-DAEMON@{n.host}>",
        "Subject: Returned mail: see transcript for details",
        "Auto-Submitted: auto-generated (failure)", *n.head, "",
        f"The original message was received at {_date(n.acc.received_at)}",
        "from localhost [127.0.0.1]", "",
        "   ----- The following addresses had permanent fatal errors -----",
        f"<{n.acc.rcpt}>",
        f"    (reason: {n.code} {n.status} {n.bare})", "",
        "   ----- Transcript of session follows -----",
        f"... while talking to {n.host}.:",
        ">>> DATA",
        f"<<< {n.code} {n.status} <{n.acc.rcpt}>... {n.bare}",
        f"{n.code} {n.status} <{n.acc.rcpt}>... {n.bare}", "",
        "   ----- Original message follows -----", "",
        *_original_inline(n.acc),
    ]


def _ndr_qmail(n: _Ndr) -> list[str]:
    """qmail-send's "failure notice"."""
    return [
        f"From: MAILER-DAEMON@{n.host}",
        "Subject: failure notice", *n.head, "",
        f"Hi. This is the qmail-send program at {n.host}.",
        "I'm afraid I wasn't able to deliver your message to the following addresses.",
        "This is a permanent error; I've given up. Sorry it didn't work out.", "",
        f"<{n.acc.rcpt}>:",
        "127.0.0.1 does not like recipient.",
        f"Remote host said: {n.code} {n.status} {n.bare}",
        "Giving up on 127.0.0.1.", "",
        "--- Below this line is a copy of the message.", "",
        *_original_inline(n.acc),
    ]


def _ndr_exchange(n: _Ndr) -> list[str]:
    """Exchange's "Undeliverable" with the original headers only."""
    return [
        f"From: Microsoft Outlook <MicrosoftExchange329e71ec88ae4615bbc36ab6ce41109e@{n.host}>",
        "Subject: Undeliverable: " + (_header(n.acc.data, "Subject") or "(no subject)"),
        "Auto-Submitted: auto-replied",
        "X-MS-Exchange-Message-Is-Ndr:", *n.head, "",
        "Delivery has failed to these recipients or groups:", "",
        f"{n.acc.rcpt}",
        "The email address you entered couldn't be found. Please check the recipient's",
        "email address and try to resend the message. If the problem continues, please",
        "contact your helpdesk.", "",
        "Diagnostic information for administrators:", "",
        f"Generating server: {n.host}", "",
        f"{n.acc.rcpt}",
        f"Remote Server returned '{n.code} {n.status} RESOLVER.ADR.RecipNotFound; {n.bare}'", "",
        "Original message headers:", "",
        _headers(n.acc.data).rstrip(CRLF),
    ]


def _ndr_gmail(n: _Ndr) -> list[str]:
    """Gmail's "Delivery Status Notification (Failure)"."""
    return [
        "From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>",
        "Subject: Delivery Status Notification (Failure)",
        "Auto-Submitted: auto-replied", *n.head, "",
        "** Address not found **", "",
        f"Your message wasn't delivered to {n.acc.rcpt} because the address couldn't be",
        "found, or is unable to receive mail.", "",
        "The response from the remote server was:",
        f"{n.code} {n.status} {n.bare}", "",
        "----- Original message -----", "",
        *_original_inline(n.acc),
    ]


def _ndr_postfix(n: _Ndr) -> list[str]:
    """Postfix's "Undelivered Mail Returned to Sender", free-text form (no delivery-status part)."""
    return [
        f"From: MAILER-DAEMON@{n.host} (Mail Delivery System)",
        "Subject: Undelivered Mail Returned to Sender",
        "Auto-Submitted: auto-replied", *n.head, "",
        f"This is the mail system at host {n.host}.", "",
        "I'm sorry to have to inform you that your message could not",
        "be delivered to one or more recipients. It's attached below.", "",
        "For further assistance, please send mail to postmaster.", "",
        "If you do so, please include this problem report. You can",
        "delete your own text from the attached returned message.", "",
        "                   The mail system", "",
        f"<{n.acc.rcpt}>: host {n.host}[127.0.0.1] said: {n.code} {n.status} {n.bare}",
        "    (in reply to end of DATA command)", "",
        "--- Undelivered message follows ---", "",
        *_original_inline(n.acc),
    ]


#: The free-text NDR of each ``style``; any other style is Postfix's.
_NDR_STYLES = {"exim": _ndr_exim, "sendmail": _ndr_sendmail, "qmail": _ndr_qmail,
               "exchange": _ndr_exchange, "gmail": _ndr_gmail}


def autoreply(acc: Accepted, behaviour: Behaviour, host: str, now: float) -> bytes:
    """An RFC 3834 out-of-office reply from the recipient."""
    subject = _header(acc.data, "Subject") or "your message"
    msgid = _header(acc.data, "Message-ID")
    return _finish([
        f"From: {acc.rcpt}",
        f"To: {acc.mail_from}",
        f"Subject: Out of office: {subject}",
        f"Date: {_date(now)}",
        f"Message-ID: {_msgid(acc, 'vacation', host)}",
        *([f"In-Reply-To: {msgid}", f"References: {msgid}"] if msgid else []),
        "Auto-Submitted: auto-replied (vacation)",
        "Precedence: bulk",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=us-ascii",
        "",
        "Thank you for your message. I am out of the office until next Monday",
        "with limited access to e-mail. Your message will not be forwarded.",
        "",
        "Best regards",
    ])


def arf(acc: Accepted, behaviour: Behaviour, host: str, now: float) -> bytes:
    """An RFC 5965 abuse report about the accepted message."""
    b = _boundary(acc, "arf")
    return _finish([
        f"From: Feedback Loop <fbl@{host}>",
        f"To: {acc.mail_from}",
        "Subject: Complaint about message from 127.0.0.1",
        f"Date: {_date(now)}",
        f"Message-ID: {_msgid(acc, 'arf', host)}",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=feedback-report; boundary="{b}"',
        "",
        f"--{b}",
        "Content-Type: text/plain; charset=us-ascii",
        "",
        "This is an email abuse report for an email message received from IP",
        f"127.0.0.1 on {_date(acc.received_at)}.",
        "A user marked this message as spam.",
        "",
        f"--{b}",
        "Content-Type: message/feedback-report",
        "",
        "Feedback-Type: abuse",
        "User-Agent: HurricaneSink/1.0",
        "Version: 1",
        f"Original-Mail-From: <{acc.mail_from}>",
        f"Original-Rcpt-To: <{acc.rcpt}>",
        f"Arrival-Date: {_date(acc.received_at)}",
        f"Reporting-MTA: dns; {host}",
        "Source-IP: 127.0.0.1",
        f"Removal-Recipient: {acc.rcpt}",
        "",
        f"--{b}",
        "Content-Type: message/rfc822",
        "Content-Disposition: inline",
        "",
        *_original_inline(acc),
        "",
        f"--{b}--",
    ])


def list_unsubscribe(data: bytes) -> tuple[str | None, str | None]:
    """The https (or http) link and the mailto address of a List-Unsubscribe header."""
    value = " ".join(_header(data, "List-Unsubscribe").split())
    url = mailto = None
    for link in value.split(","):
        link = link.strip().strip("<>").strip()
        if link.lower().startswith(("https://", "http://")) and url is None:
            url = link
        elif link.lower().startswith("mailto:") and mailto is None:
            mailto = link[7:].split("?", 1)[0]
    return url, mailto


def unsubscribe(acc: Accepted, kind: str, now: float) -> ReturnMessage | None:
    """What a reader's unsubscribe sends: the one-click POST (``rcpt`` is then the
    URL, ``data`` the form) or a mail to the mailto address; None without one."""
    url, mailto = list_unsubscribe(acc.data)
    if kind == "unsubscribe":
        return None if url is None else ReturnMessage(kind, acc.rcpt, url,
                                                      b"List-Unsubscribe=One-Click")
    if mailto is None:
        return None
    data = (f"From: <{acc.rcpt}>{CRLF}To: <{mailto}>{CRLF}Subject: unsubscribe{CRLF}"
            f"Date: {email.utils.formatdate(now)}{CRLF}{CRLF}unsubscribe{CRLF}")
    return ReturnMessage(kind, acc.rcpt, mailto, data.encode("utf-8", "replace"))


def build_return(acc: Accepted, behaviour: Behaviour, host: str, now: float
                 ) -> ReturnMessage | None:
    """The return ``behaviour.then`` asks for, or None (``none``, null sender)."""
    kind = behaviour.then
    if kind == "none" or not acc.mail_from:
        return None
    if kind in ("dsn", "delayed"):
        data = dsn(acc, behaviour, host, now, delayed=kind == "delayed")
        return ReturnMessage(kind, "", acc.mail_from, data)
    if kind == "ndr":
        return ReturnMessage(kind, "", acc.mail_from, ndr(acc, behaviour, host, now))
    if kind == "autoreply":
        return ReturnMessage(kind, "", acc.mail_from, autoreply(acc, behaviour, host, now))
    if kind == "arf":
        return ReturnMessage(kind, f"fbl@{host}", acc.mail_from, arf(acc, behaviour, host, now))
    if kind in ("unsubscribe", "unsubscribe-mailto"):
        return unsubscribe(acc, kind, now)
    raise ValueError(f"unknown return kind {kind!r}")
