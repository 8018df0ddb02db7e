"""Analyze a returned message: bounce (DSN or free text), auto-reply, feedback.

``analyze(raw, envelope_rcpt)`` is pure and thread-safe and never raises.  The
order is cheapest and most exact first: RFC 5965 ARF feedback reports, RFC
3464 delivery-status parts, RFC 3834 auto-reply headers, then free-text
bounces of the usual MTAs and providers (with, last, the addresses a report
lists one to a line and flufl.bounce's detectors), and finally "other".
"""

from __future__ import annotations

import bisect
import itertools
import json
import re
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from hurricane.bounce import mailbox, mime, rxcache
from hurricane.bounce.alternation import any_of
from hurricane.bounce.classify import (
    MAX_TEXT,
    ReplyClassifier,
    default_classifier,
    extract_codes,
)
from hurricane.bounce.evidence import STAGE_TEXT_LIMIT, Stage, find_remote_mta, find_stage
from hurricane.bounce.model import (
    Analysis,
    RecipientResult,
    Record,
    ReplyClass,
    is_hard,
    replace,
)

TYPE_CHECKING = False   # (typing costs ~4 ms to import; mypy reads this as typing's)
if TYPE_CHECKING:
    from typing import Any

__all__ = ["AnalysisLimits", "analyze", "to_prediction"]

_set = object.__setattr__   # (the frozen records' __init__)


@dataclass(init=False, repr=False, eq=False)
class AnalysisLimits(Record):
    """Bounds on the work spent on one message.

    ``cpu_seconds`` is checked between steps; every step is bounded by the
    others (sizes cut before a step reads them), so that no single step can
    run long past it.
    """

    max_bytes: int = 5 * 1024 * 1024
    max_depth: int = 50
    max_parts: int = 2000
    cpu_seconds: float = 2.0
    #: Characters of text read per part and of notification text in all (the
    #: free-text rules, delivery-status and feedback-report fields).
    max_text: int = 256 * 1024
    #: Bytes of one header block parsed, characters of one header value kept
    #: (before RFC 2047 decoding), header fields parsed in the whole message.
    max_header_bytes: int = mime.MAX_HEADER_BYTES
    max_header_value: int = mime.MAX_HEADER_VALUE
    max_headers: int = mime.MAX_HEADERS
    #: Bytes of one part's body transfer- and charset-decoded at most.
    max_part_bytes: int = mime.MAX_PART_BYTES
    #: flufl.bounce (the very last reading of a bounce naming no recipient) reads
    #: messages up to this size and line count only: its detectors cost ~10 us
    #: per line each, and the stdlib parser under it recurses per nesting level.
    flufl_max_bytes: int = 32 * 1024
    flufl_max_lines: int = 1000

    def __init__(self, max_bytes: int = 5 * 1024 * 1024,
                 max_depth: int = 50,
                 max_parts: int = 2000,
                 cpu_seconds: float = 2.0,
                 max_text: int = 256 * 1024,
                 max_header_bytes: int = mime.MAX_HEADER_BYTES,
                 max_header_value: int = mime.MAX_HEADER_VALUE,
                 max_headers: int = mime.MAX_HEADERS,
                 max_part_bytes: int = mime.MAX_PART_BYTES,
                 flufl_max_bytes: int = 32 * 1024,
                 flufl_max_lines: int = 1000) -> None:
        _set(self, "max_bytes", max_bytes)
        _set(self, "max_depth", max_depth)
        _set(self, "max_parts", max_parts)
        _set(self, "cpu_seconds", cpu_seconds)
        _set(self, "max_text", max_text)
        _set(self, "max_header_bytes", max_header_bytes)
        _set(self, "max_header_value", max_header_value)
        _set(self, "max_headers", max_headers)
        _set(self, "max_part_bytes", max_part_bytes)
        _set(self, "flufl_max_bytes", flufl_max_bytes)
        _set(self, "flufl_max_lines", flufl_max_lines)

class _OverBudget(Exception):
    pass


_LOCAL = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
# A domain has at most 127 labels (253 octets): the bound keeps the regex
# engine's per-repetition state small on a "b.b.b.b..." run of megabytes.
# A local part does not start with "." (RFC 5322 dot-atom) and, in practice, not with
# an apostrophe: "'a@b.example'" is an address in single quotes (Exchange, Notes,
# "550 'a@b' is not ..."), not the local part "'a".
_LOCAL_FIRST = r"[A-Za-z0-9!#$%&*+/=?^_`{|}~-]"
ADDR = _LOCAL_FIRST + _LOCAL + r"{0,63}@" + _LABEL + r"(?:\." + _LABEL + r"){1,126}"
_ADDR_RE = rxcache.compile(ADDR)
# An "@" that some address uses: a local-part character before it and a domain
# after it (a first label, a dot and the start of a second: exactly when the
# domain part of ADDR can match). One attempt per "@", each bounded by the
# label length (61), so a search over any text is linear.
_ADDR_AT = rxcache.compile(_LOCAL + "@(?=" + _LABEL + r"\.[A-Za-z0-9])")


def _iter_addrs(text: str) -> Iterator[re.Match[str]]:
    """The matches of _ADDR_RE.finditer(text), found in time linear in the text.

    Searching _ADDR_RE over the text tries the local-part run at every
    character and reads up to 64 characters each time, to the end of the
    text when no address follows (an "a"*64 + "@" text: 460 ms per 256 KiB).
    Instead: find the next "@" that an address can use (_ADDR_AT, one short
    attempt per "@"), then search _ADDR_RE from 64 characters before it: the
    match using that "@" starts there at the earliest (a local part has 64
    characters at most), no earlier "@" gives one (_ADDR_AT would have found
    it), so the search stops at that match after at most 64 short attempts.
    Matches using a later "@" start after this one (a local part holds no
    "@"): this is finditer's leftmost-first order, match for match.
    """
    pos = 0
    search_at = _ADDR_AT.search
    search = _ADDR_RE.search
    while True:
        at = text.find("@", pos)     # (memchr: most texts have few "@" or none)
        if at < 0:
            return
        c = search_at(text, at - 1 if at - 1 > pos else pos)
        if c is None:
            return
        at = c.end() - 1
        # the leftmost match using this "@": it starts within 64 characters of it,
        # and the search cannot pass it (a match is there)
        m = search(text, at - 64 if at - 64 > pos else pos)
        if m is None:   # cannot happen (the "@" has a local character and a domain)
            return
        yield m
        pos = m.end()


def _find_addrs(text: str) -> list[str]:
    """_ADDR_RE.findall(text), in linear time."""
    return [m.group(0) for m in _iter_addrs(text)]


# One "X-Hurricane-Token:" line, matched at its start (pos and endpos are the
# line's ends). Before: rb"(?im)^[ \t>]*X-Hurricane-Token:[ \t]*<?([^\s<>]+@[^\s<>]+?)>?[ \t]*$"
# over the whole message, whose "+@...+?" pair tried every "@" against every
# end of the run after it (16,384 "@" then a space: 3.3 s). The lazy run can
# only end where the run of token characters ends (nothing after it may be a
# token character), so the group is that whole run; it must hold an "@" with a
# character on each side, which _tokens() checks. Possessive runs: linear.
_TOKEN_LINE = rxcache.compile(rb"[ \t>]*+X-Hurricane-Token:[ \t]*+<?([^\s<>]++)>?[ \t]*+$", re.I)
#: A VERP address is a local part (64) and a domain (255): longer is not a token.
_MAX_TOKEN = 320
#: Distinct tokens kept per message (each is verified later: bounded work).
_MAX_TOKENS = 50
#: "X-Hurricane-Token:" lines read per message (or decoded part).
_MAX_TOKEN_LINES = 1000


def _tokens(data: bytes, low: bytes | None = None) -> Iterator[str]:
    """The token of each "X-Hurricane-Token:" line (quoted or not) in ``data``, lower-cased.

    Args:
        data: normalised message bytes.
        low: ``data.lower()`` when the caller has it already.
    """
    if low is None:
        low = data.lower()
    pos = 0
    for _ in range(_MAX_TOKEN_LINES):
        k = low.find(b"x-hurricane-token:", pos)
        if k < 0:
            return
        start = data.rfind(b"\n", pos, k) + 1
        end = data.find(b"\n", k)
        if end < 0:
            end = len(data)
        m = _TOKEN_LINE.match(data, start, end)
        if m is not None and b"@" in m.group(1)[1:-1] and len(m.group(1)) <= _MAX_TOKEN:
            yield m.group(1).decode("latin-1").lower()
        pos = end   # one match per line at most: on to the next line
# Patterns that start with "\n" instead of "(?m)^" run on _nl(text), the text with a
# newline in front: the same matches at the same offsets, but the regex engine
# skips to each newline quickly instead of trying the pattern at every character.
_MSGID_RE = rxcache.compile(r"(?i)\n[ \t>]*Message-I[dD]:[ \t]*<?([^\s<>]+)>?")

# RFC 2142's role mailboxes for mail and web service, and a list's administrative
# addresses (owner-LIST, LIST-owner, LIST-request: RFC 2369, Mailman, Majordomo)
_ROLES = (r"hostmaster|webmaster|listmaster|noc|owner-[a-z0-9._-]{1,64}|"
          r"[a-z0-9._-]{1,64}-(?:owner|request)")
_SYSTEM_LOCAL = rxcache.compile(
    r"^(?:mailer-daemon|postmaster|mail-daemon|maildaemon|mailerdaemon|"
    r"root|daemon|"
    r"mail|noreply|no-reply|bounce[s]?|nobody|abuse|fbl|mdaemon|" + _ROLES + r")$", re.I)
# Those role and list mailboxes (not a mail system's own, "postmaster", "mailer-daemon"):
# people and teams write to them, so a report may name one as the recipient in prose
_ROLE_LOCAL = rxcache.compile(r"^(?:" + _ROLES + r")$", re.I)


def _mailbox_addrs(values: list[str]) -> dict[str, None]:
    """The addresses of an address header's mailboxes (lower-cased, each once, in order):
    an address in a display name's quoted string or a comment is not one of them
    ('"Bob (bob@old.example)" <bob@new.example>' names one mailbox, bob@new.example);
    a value whose only addresses are there keeps them."""
    out: dict[str, None] = {}
    for v in values:
        v = v[:mime.MAX_HEADER_VALUE]     # (a line quoted inline may be longer)
        if "@" not in v:
            continue
        kept: list[str] = []
        quoted = False
        depth = 0
        i = 0
        for j, ch in enumerate(v):
            if ch == "\\":
                continue
            if quoted:
                if ch == '"' and v[j - 1:j] != "\\":
                    quoted = False
                    i = j + 1
            elif ch == '"' and depth == 0:
                kept.append(v[i:j])
                quoted = True
            elif ch == "(":
                if depth == 0:
                    kept.append(v[i:j])
                depth += 1
            elif ch == ")" and depth:
                depth -= 1
                if depth == 0:
                    i = j + 1
        if not quoted and depth == 0:
            kept.append(v[i:])
        found = _find_addrs(" ".join(kept)) or _find_addrs(v)
        out.update(dict.fromkeys(a.lower().rstrip(".") for a in found))
    return out


def _addr(value: str | None) -> str:
    """The first address in a header-ish value, lower-cased, or ''."""
    if not value or "@" not in value:
        return ""
    # the first match of _iter_addrs, without a generator (a hot path)
    at = value.find("@")
    c = _ADDR_AT.search(value, at - 1 if at > 0 else 0)
    if c is None:
        return ""
    at = c.end() - 1
    m = _ADDR_RE.search(value, at - 64 if at > 64 else 0)
    return m.group(0).lower().rstrip(".") if m else ""


# A DSN field that is one address with a quoted local part (RFC 5321 4.1.2:
# Quoted-string "@" domain), e.g. '"john doe"@example.com'; the unquoted form of
# ADDR cannot read it. Anchored and bounded: linear.
_QUOTED_ADDR = rxcache.compile(r'<?("[^"\\\r\n]{1,62}"@' + _LABEL + r"(?:\." + _LABEL
                               + r"){1,126})>?$")


def _quoted_addr(value: str) -> str:
    """The address of a DSN field value when its local part is quoted, lower-cased, or ''."""
    v = value.strip()
    if not v.startswith(('"', '<"')):
        return ""
    m = _QUOTED_ADDR.match(v)
    return m.group(1).lower() if m else ""


# A DSN recipient field is one address (RFC 3464 2.3.2), so it is read whole: its
# domain need not look like one in running text (a single label, a host's own name
# "user@mailhub", or an address literal "user@[192.0.2.1]"), and its local part
# may be UTF-8 (RFC 6533 "utf-8;" addresses), which the running-text pattern would
# cut to its ASCII tail. Anchored, one attempt, bounded runs: linear.
_FIELD_CHAR = r"[^\s<>@\"(),;:\\\[\]]"
_FIELD_ADDR = rxcache.compile(r"<?(" + _FIELD_CHAR + r"{1,64}+@(?:" + _FIELD_CHAR
                              + r"{1,255}+|\[[0-9.]{7,15}\]))>?(?=[\s(;,]|$)")


def _field_addr(value: str) -> tuple[str, bool]:
    """The address of a DSN recipient field ('rfc822;' already stripped), lower-cased, or
    '', and whether it is routable (a dotted domain, not one label or a literal)."""
    if "@" not in value:
        return "", False
    if "\\x{" in value:
        value = mailbox.embedded_unicode(value)   # (RFC 6533 "utf-8" addresses, 7-bit)
    q = _quoted_addr(value)
    if q:
        return q, True
    # (an address in single quotes is the address: "'a@b.example'")
    v = value.strip()
    if v[:1] == "'" and v[-1:] == "'":
        v = v[1:-1]
    m = _FIELD_ADDR.match(v)
    if m is not None:
        a = m.group(1).lower().rstrip(".")
        domain = a.rsplit("@", 1)[1]
        return a, "." in domain and not domain.startswith("[")
    # "Name <a@b>", a comment before it, junk around it: the mailbox's address, not one
    # its display name or a comment holds ('"IMCEASMTP-a+40b@org" <a@b>', '"old@x" <a@b>')
    a = next(iter(_mailbox_addrs([value])), "") if '"' in value or "(" in value else ""
    a = a or _addr(value)
    return a, bool(a)


def _strip_type(value: str) -> str:
    """'rfc822; a@b' -> 'a@b'; 'smtp; 550 ...' -> '550 ...'."""
    i = value.find(";")
    if 0 < i < 20 and " " not in value[:i].strip():
        return value[i + 1:].strip()
    return value.strip()


# ---------------------------------------------------------------------------
# RFC 3464 delivery-status


#: Recipients read from one report, as from free text (500 there too). Each
#: costs a classification (~50 us) here and a correlation and an event
#: downstream; a report on mail we sent names one recipient per VERP address,
#: or the recipients of one transaction (at most 100 at submission).
_MAX_RECIPIENTS = 500
#: Fields read from one delivery-status or feedback-report part at most
#: (the recipients, of about ten fields each, and room for junk).
_MAX_FIELDS = 20_000


_BLANK_LINE = rxcache.compile(r"\n[ \t]*\n")


def _field_blocks(text: str) -> list[list[tuple[str, str]]]:
    """The blank-line separated field blocks of a report part (``_MAX_FIELDS`` in all)."""
    blocks = []
    left = _MAX_FIELDS
    for chunk in _BLANK_LINE.split(text.replace("\r", "")):
        if chunk.strip():
            h = mime.parse_headers(chunk.strip("\n"), max_fields=left)
            if h:
                blocks.append(h)
                left -= len(h)
                if left <= 0:
                    break
    return blocks


def _parse_dsn_fields(text: str) -> tuple[dict[str, str], list[dict[str, str]]]:
    """Per-message fields and per-recipient field dicts of a delivery-status body."""
    per_msg: dict[str, str] = {}
    rcpts: list[dict[str, str]] = []
    unnamed: list[dict[str, str]] = []
    for block in _field_blocks(text):
        ds: list[dict[str, str]] = [{}]
        for k, v in block:
            d = ds[-1]
            if k in d:
                if k in ("final-recipient", "original-recipient"):
                    # the next recipient's fields with no blank line in between (a
                    # recipient field repeated: the report may name a recipient by
                    # either field alone)
                    ds.append({k: v})
                elif k == "diagnostic-code" and len(d[k]) < mime.MAX_HEADER_VALUE:
                    # (bounded: each += copies the whole value)
                    d[k] += " " + v
                continue
            d[k] = v
        for d in ds:
            if "final-recipient" in d or "original-recipient" in d or "x-actual-recipient" in d:
                rcpts.append(d)
            else:
                if "action" in d or "status" in d:
                    unnamed.append(d)
                for k, v in d.items():
                    per_msg.setdefault(k, v)
    # per-recipient blocks that name no recipient (a gateway that leaves the recipient
    # fields out): the recipients are those the notification names, in order
    return per_msg, rcpts or unnamed[:_MAX_RECIPIENTS]


# ---------------------------------------------------------------------------
# Auto-replies (RFC 3834)

_AUTO_SUBJECT = rxcache.compile(
    r"^(?:auto(?:matic)?[ -]?(?:reply|response|antwort|answer)|out of (?:the )?office|away from|"
    r"abwesenheit|absence|on vacation|vacation|autoreply|auto:|r[ée]ponse automatique|away until|"
    r"respuesta autom|risposta automatica|自動応答|自動返信|不在|"
    # the mail clients' auto-reply prefix in the other languages seen in returns (Outlook
    # writes "Automatic reply:" in the user's language)
    r"automatische antwort|automatisch antwoord|resposta autom|autosvar|automatisk svar|"
    r"automaattinen vastaus|automatyczna odpowied|odpowied(?:ź|z) automatyczna|"
    r"automatick(?:á|a) odpov|automatikus v(?:á|a)lasz|otomatik yan(?:ı|i)t|"
    r"αυτόματη απάντηση|автоматический ответ|автоответ|自动回复|自動回覆|자동 회신|"
    r"poza biurem|fuera de la oficina|fora do escrit(?:ó|o)rio|fuori ufficio|afwezig|"
    r"frånvaro|fravær|poissa)", re.I)
_BOUNCE_SUBJECT = any_of(
    r"(?:undeliver|undelivered|deliver(?:y|ed) (?:status|fail|notif|report|problem)|returned mail|"
    r"mail delivery|failure notice|delivery failure|non[- ]?deliver|could not be delivered|"
    r"mail system error|returned to sender|nicht zustellbar|unzustellbar|rejected|bounce|"
    r"warning: could not|delayed mail|delivery (?:has )?failed|error sending|message not delivered|"
    r"permanent error|fatal error|delivery report|mailer[- ]daemon|unable to deliver|unroutable)",
    re.I)
# (the same in the languages seen in returns; tried when the English words are not there)
_BOUNCE_SUBJECT_OTHER = any_of(
    r"non remis|non distribu|[ée]chec de (?:la )?(?:remise|livraison)|no entregad|"
    r"non recapit|mancato recapito|não entregue|onbestelbaar|недоставл|"
    r"发送失败|投递失败|退信|無法傳送|傳送失敗|配信エラー|配送エラー|不達|未配達", re.I)


def _bounce_subject(subject: str) -> bool:
    """Whether a subject says it is a notice about a delivery (in English or another
    language)."""
    return (_BOUNCE_SUBJECT.search(subject) is not None
            or _BOUNCE_SUBJECT_OTHER.search(subject) is not None)
_BOUNCE_FROM = any_of(
    r"mailer-daemon|post[_-]?master|mail delivery|mail-daemon|maildaemon|"
    r"mail administrator|mailer_daemon|delivery subsystem|microsoftexchange", re.I)


# ---------------------------------------------------------------------------
# Free text

# The leading runs are possessive (*+, ?+) and a look-ahead names the first letters
# of the phrases: the same matches as plain greedy runs (giving back a blank, a
# quote mark or a dash can never let a phrase start, as each starts with a
# letter), without the backtracking that made this regex cost ~80 us per note.
# The first look-ahead lets a line that can start none of it go after one test.
_ORIGINAL_MARK = rxcache.compile(
    r"(?im)\n(?=[ \t>|=_*otcburhmsi-])"
    r"[ \t>|]*+(?>-{2,}|={2,}|_{2,}|\*{2,})?+[ \t]*+(?=[otcburhmsi])(?:"
    r"original message|(?:this is a )?copy of (?:the|your) (?:original )?message|"
    r"below this line is a copy|"
    r"(?:the )?(?:original|unsent|returned|undelivered) message(?: headers?)?"
    r"(?: follows| is attached| below)?[ \t:-]*$|"
    r"(?:the )?headers? of (?:the|your) (?:original )?message|message headers? follow|"
    r"original message (?:follows|header)|"
    r"start of (?:the )?(?:returned|original) message|returned message|"
    r"included (?:original )?message|"
    r"unsent message below|headers of the original|original mail follows|rfc822 headers|"
    r"(?:this is )?(?:the )?(?:header|message) of (?:the |your )?(?:original|returned)|"
    r"text of the original|"
    r"message text follows|the first \d+ lines|received message follows|original text follows|"
    r"content-type: message/rfc822|begin forwarded message)"
)
# The same line in the languages mail clients and gateways write it ("-----Ursprüngliche
# Nachricht-----", Outlook's separator above a quoted original; "Message d'origine",
# "Mensaje original", "元のメッセージ", ...): the phrase after a run of dashes, equals
# signs, underscores or stars, alone on its line with them (_local_mark finds the runs
# by string search, matches each once and checks the rest of the line).
_ORIGINAL_MARK_LOCAL = rxcache.compile(
    r"(?i)(?:-{2,}+|={2,}+|_{2,}+|\*{2,}+)[ \t]*+(?:"
    r"ursprüngliche nachricht|originalnachricht|weitergeleitete nachricht|"
    r"message d'origine|message original|message transféré|"
    r"mensaje original|mensaje reenviado|messaggio originale|messaggio inoltrato|"
    r"mensagem original|mensagem encaminhada|oorspronkelijk bericht|origineel bericht|"
    r"doorgestuurd bericht|originalmeddelande|ursprungligt meddelande|"
    r"oprindelig meddelelse|opprinnelig melding|alkuperäinen viesti|"
    r"wiadomość oryginalna|oryginalna wiadomość|původní zpráva|eredeti üzenet|"
    r"orijinal ileti|özgün ileti|αρχικό μήνυμα|исходное сообщение|"
    r"пересылаемое сообщение|元のメッセージ|転送されたメッセージ|原始邮件|原始郵件|"
    r"转发的邮件|원본 메시지|원래 메시지)")
#: What may stand on the separator's line around it: quote marks, blanks, its runs.
_MARK_EDGE = " \t>|"
_MARK_TAIL = " \t:-=_*\r"


def _local_mark(nl: str, end: int) -> int:
    """Where the first of _ORIGINAL_MARK_LOCAL's separators alone on their line starts
    its line in ``nl`` before ``end``; -1 when there is none. Each run of a separator's
    character is found by string search and matched once, from its first character."""
    best = -1
    for sep in ("--", "==", "__", "**"):
        i = nl.find(sep, 0, end)
        while i >= 0 and (best < 0 or i < best):
            if i == 0 or nl[i - 1] != sep[0]:
                m = _ORIGINAL_MARK_LOCAL.match(nl, i, end)
                if m is not None:
                    # (alone on its line: only edge characters back to the line's start and
                    # tail characters on to its end, each run read from the mark, not the
                    # whole line: a line of many such phrases in words was quadratic)
                    line = i
                    while line > 0 and nl[line - 1] in _MARK_EDGE:
                        line -= 1
                    eol = m.end()
                    while eol < len(nl) and nl[eol] in _MARK_TAIL:
                        eol += 1
                    if (line == 0 or nl[line - 1] == "\n") and \
                            (eol == len(nl) or nl[eol] == "\n"):
                        best = line if best < 0 else min(best, line)
                        break
            j = i + 2
            while j < end and nl[j] == sep[0]:
                j += 1
            i = nl.find(sep, j, end)
    return best


# (field names in any case, RFC 5322 1.2.2: a gateway may write them upper-cased)
# (and quoted: a report forwarded inline by a person)
_HEADER_START = rxcache.compile(r"\n[> ]{0,16}+(?i:received: (?:from|by) |return-path: ?<|"
                                r"dkim-signature: |x-hurricane-token: )")
# (?=...): the names' first letters, so that a line that cannot start one is
# left after one test (a text of blank lines costs one step per line).
_QUOTED_HEADER = rxcache.compile(r"(?im)\n[ \t>]*+(?=[ftcrsmixdoe])"
                                 r"(?:from|to|cc|reply-to|sender|return-path|message-id|"
                                 r"in-reply-to|references|"
                                 r"x-original-to|delivered-to|date|subject|x-hurricane-token|received|dkim-signature|"
                                 r"x-postfix-sender|original-mail-from|errors-to):.*$")
# (?<![\d.])[245]\d\d(?![\d.]) or (?<![\d.])[245]\.\d{1,3}\.\d{1,3}(?![\d.]), written to start
# with a character class (the look-behind after it) so that searches skip ahead fast
_CODEISH = rxcache.compile(r"[245](?<![\d.].)(?:\d\d(?![\d.])|\.\d{1,3}\.\d{1,3}(?![\d.]))")
# Line-breaking tags become line breaks. A tag runs to the first ">" after it;
# a start after the text's last ">" can never match, so the substitution runs
# on the text up to that ">" only: otherwise each such start would read to the
# end of the text again ("<p<p<p...": quadratic; 262 KB of "<" took 68 s).
# (with the line break after it in the source, if any: HTML's own line breaks are
# white space, and "line<br>\n" is one line break, not a blank line between lines)
_HTML_TAG = rxcache.compile(
    r"<(?:br|p|div|tr|li|/p|/div|/tr|/li|/h\d|h\d)\b[^>]*>(?:[ \t]*+\n)?", re.I)
# Script and style elements, removed whole: r"(?is)<(script|style)\b.*?</\1>" before,
# which read to the end of the text from each start that has no end tag after
# it; _strip_scripts finds the same matches with bounded reads.
_SCRIPT_STARTS = {
    frozenset(): rxcache.compile(r"<(script|style)\b", re.I),
    frozenset({"script"}): rxcache.compile(r"<(style)\b", re.I),
    frozenset({"style"}): rxcache.compile(r"<(script)\b", re.I),
}
_SCRIPT_ENDS = {"script": rxcache.compile(r"</script>", re.I),
                "style": rxcache.compile(r"</style>", re.I)}
# Any other tag: "<" up to the first ">", unless an "@" comes first (an
# address in angle brackets is text). Its failing starts each read to the next
# "@" or the end; _html_to_text runs it only where every start succeeds, or,
# in a text of many "@", uses _ANY_TAG_SPLIT, whose second alternative
# consumes (and keeps, as the split's group) what a failing start reads, so
# that no character is read twice; the first alternative, a tag, is dropped.
_ANY_TAG = rxcache.compile(r"<[^>@]*>")
# An anchor's start and end tags (bounded: each start reads 1000 characters at most)
_HTML_LINK = rxcache.compile(r"<a\s[^<>]{0,1000}>|</a\s*>", re.I)
# A table cell's start or end tag (bounded: each start reads 1000 characters at most)
_HTML_CELL = rxcache.compile(r"</?t[dh](?:\s[^<>]{0,1000})?>", re.I)
_ANY_TAG_SPLIT = rxcache.compile(r"<[^>@]*+>|(<[^>@]*+(?:@|\Z))")


def _strip_scripts(t: str) -> str:
    """``re.sub(r"(?is)<(script|style)\b.*?</\1>", "", t)``, reading each character a
    bounded number of times.

    A start whose end tag does not follow it fails, and so does every later
    start of the same element (no end tag follows them either): that element
    is then no longer looked for.
    """
    out: list[str] = []
    dead: frozenset[str] = frozenset()
    kept = 0        # t[kept:] is not yet copied to out
    pos = 0         # where to look for the next start
    while len(dead) < 2:
        m = _SCRIPT_STARTS[dead].search(t, pos)
        if m is None:
            break
        name = m.group(1).lower()
        e = _SCRIPT_ENDS[name].search(t, m.end())
        if e is None:
            dead = dead | {name}
            pos = m.start() + 1
            continue
        out.append(t[kept:m.start()])
        kept = pos = e.end()
    out.append(t[kept:])
    return "".join(out)


def _html_to_text(html: str) -> str:
    """The text of an HTML part (tags out, line-breaking ones as line breaks), in linear
    time."""
    import html as _h
    if "<" in html:
        # links are text: "<a href="mailto:a@b">a@b</a>" is the address, and the
        # tag itself would pass for an address in angle brackets below
        html = _HTML_LINK.sub("", html)
        # a table's cells are apart: "<td>a@b</td><td>550 ...</td>" is "a@b 550 ..."
        html = _HTML_CELL.sub(" ", html)
    last = html.rfind(">") + 1
    if last:
        # (and the blanks and line break after that ">", which a tag there takes with it)
        j = last
        while j < len(html) and html[j] in " \t":
            j += 1
        if j < len(html) and html[j] == "\n":
            last = j + 1
    t = _HTML_TAG.sub("\n", html[:last]) + html[last:] if last else html
    if "<" in t:
        t = _strip_scripts(t)
        if t.count("@") <= 64:
            # No tag spans an "@": between two, r"<[^>@]*>" is r"<[^>]*>", whose
            # starts before the last ">" all match, so the substitution up to
            # there is linear (and the usual case: C, no Python per tag).
            t = "@".join(_ANY_TAG.sub("", seg[:last]) + seg[last:]
                         for seg in t.split("@") for last in (seg.rfind(">") + 1,))
        else:
            t = "".join(filter(None, _ANY_TAG_SPLIT.split(t)))
    return _h.unescape(t)


_ERRORISH = any_of(
    r"(?i)unknown|no such|not exist|invalid|rejected|refused|denied|full|quota|fail|error|"
    r"undeliver|"
    r"unable|could not|couldn.t|cannot|can.t|not found|blocked|expired|timed? ?out|disabled|"
    r"suspended|said:|"
    r"permanent|temporar|not allowed|does not|doesn.t|unavailable|problem|loop|spam|relay|"
    r"too (?:big|large|many)|"
    r"\b[45]\d\d\b|\b[45]\.\d{1,3}\.\d{1,3}\b|host|deferred|delay|giving up|bounce|mailbox|"
    r"account|policy|not recogni[sz]ed|not listed|no longer|exceed|inactive|incorrect|"
    r"[\u3040-\u30ff\u4e00-\u9fff]")
# _ERRORISH for ASCII text, lower-cased: the same answer (no kana or kanji to find;
# \b[45] written as [45] then a look-behind), but case-sensitive and starting with
# literals, which the regex engine searches for much faster.
_ERRORISH_ASCII = any_of(
    r"unknown|no such|not exist|invalid|rejected|refused|denied|full|quota|fail|error|undeliver|"
    r"unable|could not|couldn.t|cannot|can.t|not found|blocked|expired|timed? ?out|disabled|"
    r"suspended|said:|"
    r"permanent|temporar|not allowed|does not|doesn.t|unavailable|problem|loop|spam|relay|"
    r"too (?:big|large|many)|"
    r"host|deferred|delay|giving up|bounce|mailbox|account|policy|not recogni[sz]ed|not listed|"
    r"no longer|exceed|inactive|incorrect|"
    r"4(?<!\w4)\d\d\b|5(?<!\w5)\d\d\b|4(?<!\w4)\.\d{1,3}\.\d{1,3}\b|5(?<!\w5)\.\d{1,3}\.\d{1,3}\b")


def _errorish(text: str) -> bool:
    """Whether _ERRORISH matches somewhere in the text."""
    if text.isascii():
        return _ERRORISH_ASCII.search(text.lower()) is not None
    return _ERRORISH.search(text) is not None


#: How often (wall-clock seconds) _Ctx.check() reads the CPU clock. Reading it
#: (clock_gettime of the process CPU time) is a system call, ~2 us, ten times the
#: monotonic clock: an analysis checks its budget ~7 times, which came to ~3 % of
#: the whole work. Between two reads the monotonic clock says whether 2 ms can
#: have passed; the process's CPU time grows by at most that much per core in
#: 2 ms, so the budget is still enforced within a few milliseconds.
_CHECK_EVERY = 0.002


class _Ctx:
    __slots__ = ("root", "deadline", "limits", "classifier", "tokens", "msgid", "envid", "error",
                 "excluded", "envelope_rcpt", "family", "next_check", "raw", "parsed_whole")

    def __init__(self, root: mime.Part, deadline: float, limits: AnalysisLimits,
                 classifier: ReplyClassifier, envelope_rcpt: str | None) -> None:
        self.root = root
        self.deadline = deadline
        self.limits = limits
        self.classifier = classifier
        self.tokens: list[str] = []
        self.msgid: str | None = None
        self.envid: str | None = None
        self.error: str | None = None
        self.excluded: set[str] = set()
        self.envelope_rcpt = (envelope_rcpt or "").strip().strip("<>").lower() or None
        self.family: str | None = None
        self.next_check = 0.0       # (monotonic) the first check reads the CPU clock
        self.raw = b""              # the normalised message (flufl.bounce reads it whole)
        self.parsed_whole = True    # False when the MIME parser stopped at a limit

    def check(self) -> None:
        now = time.perf_counter()
        if now < self.next_check:
            return
        if time.process_time() > self.deadline:
            raise _OverBudget()
        self.next_check = now + _CHECK_EVERY


def _result(ctx: _Ctx, rcpt: str, text: str, *, code: str | None = None, status: str | None = None,
            action: str = "failed", source: str, remote: str | None = None,
            orcpt: str | None = None, reason: str | None = None, stage: Stage | None = None,
            stage_source: str | None = None,
            diagnostic_type: str | None = None) -> RecipientResult:
    rc: ReplyClass = ctx.classifier.classify(code, status, text, ctx.family, stage=stage,
                                             diagnostic_type=diagnostic_type,
                                             stage_searched=stage_source == "none")
    c = code
    if c is None:
        if len(text) <= MAX_TEXT and type(ctx.classifier) is ReplyClassifier:
            c = rc.code     # (what the classifier read from this very text: the same)
        else:
            c, _ = extract_codes(text)
    st, inferred, rsn, hard, rule = rc.status, rc.status_inferred, rc.reason, rc.hard, rc.rule
    decided_by, runner, runner_rule = rc.decided_by, rc.runner_up, rc.runner_up_rule
    if reason is not None:
        if reason != rsn:
            runner, runner_rule = rsn, decided_by
        rsn, rule, decided_by = reason, None, source + "." + reason
    elif action == "delayed" and rsn in ("onhold", "undefined"):
        # docs step 6: a delay with no cause named is a delivery still being retried
        runner, runner_rule = rsn, decided_by
        rsn, decided_by = "expired", "expired.delayed-action"
    if action == "delivered":
        rsn, decided_by = "delivered", "action.delivered"
    hard = is_hard(rsn, st)
    if stage is None and rc.stage:
        stage, stage_source = Stage(rc.stage), "text"
    return RecipientResult(recipient=rcpt, action=action, code=c, status=st,
                           status_inferred=inferred, reason=rsn, hard=hard, suppress=hard,
                           diagnostic=text.strip()[:2000], remote_mta=remote, source=source,
                           rule=rule, original_recipient=orcpt,
                           stage=stage.value if stage is not None else None,
                           stage_source=stage_source if stage is not None else None,
                           diagnostic_type=diagnostic_type, decided_by=decided_by,
                           runner_up=runner, runner_up_rule=runner_rule,
                           family=ctx.family)


def _original_parts(ctx: _Ctx) -> Iterable[mime.Part]:
    """Message/rfc822 and text/rfc822-headers children (the returned originals)."""
    for p in ctx.root.walk():
        if p.maintype == "message" and p.subtype in ("rfc822", "global") or \
                p.content_type == "text/rfc822-headers":
            yield from p.children


def _collect_meta(ctx: _Ctx, norm: bytes) -> None:
    toks: dict[str, None] = {}     # ordered, and a constant-time membership test
    low = norm.lower()
    for t in _tokens(norm, low) if b"x-hurricane-token" in low else ():
        if len(toks) >= _MAX_TOKENS:
            break
        toks.setdefault(t)
    # (the senders of the returned original we sent, not of a message inside it: when a
    # bounce we sent bounced in turn, the original it returns is someone else's, and its
    # sender is the failed recipient of the report, Sendmail's double-bounce notice)
    origs = list(_original_parts(ctx))
    inner: set[int] = set()
    for orig in origs if len(origs) > 1 else ():
        for p in orig.walk():
            if p is not orig and (p.maintype == "message"
                                  or p.content_type == "text/rfc822-headers"):
                inner.update(id(c) for c in p.children)
    for orig in origs:
        if ctx.msgid is None:
            mid = orig.get("message-id")
            if mid:
                ctx.msgid = mid.strip().strip("<>").strip() or None
        for v in orig.get_all("x-hurricane-token"):
            t = v.strip().strip("<>").lower()
            if t and len(t) <= _MAX_TOKEN and len(toks) < _MAX_TOKENS:
                toks.setdefault(t)
        for h in ("from", "return-path", "sender", "reply-to") if id(orig) not in inner else ():
            a = _addr(orig.get(h))
            if a:
                ctx.excluded.add(a)
    # base64 originals: look inside decoded message/rfc822 parts too
    for p in ctx.root.walk() if b"ase64" in norm else ():
        if p.maintype == "message" and "base64" in p.get("content-transfer-encoding").lower():
            for t in _tokens(mime.normalise(p.payload())):
                if len(toks) >= _MAX_TOKENS:
                    break
                toks.setdefault(t)
    ctx.tokens = list(toks)


# ---------------------------------------------------------------------------


def _analyze_arf(ctx: _Ctx, part: mime.Part, root: mime.Part,
                 inline_original: str = "") -> Analysis | None:
    fields: dict[str, list[str]] = {}
    for block in _field_blocks(part.text()[:ctx.limits.max_text]):
        for k, v in block:
            fields.setdefault(k, []).append(v)
    ftype = (fields.get("feedback-type") or ["abuse"])[0].strip().lower() or "abuse"
    found: dict[str, None] = {}     # ordered, and a constant-time membership test
    for v in fields.get("original-rcpt-to", []) + fields.get("removal-recipient", []):
        a = _addr(v)
        if a:
            found.setdefault(a)
            if len(found) >= _MAX_RECIPIENTS:
                break
    # Else the original's To: (attached, or as the text quotes it inline), when it names
    # one address: a complaint is one person's, and a To: naming several (a list, a
    # shared send) cannot say whose; suppressing them all would punish the others.
    if not found:
        for orig in _original_parts(ctx):
            to = _mailbox_addrs(orig.get_all("to"))
            if len(to) == 1:
                found.update(to)
            break
    if not found and inline_original:
        m = _INLINE_TO.search(inline_original)
        to = _mailbox_addrs([m.group(1)]) if m is not None else {}
        if len(to) == 1:
            found.update(to)
    rcpts = list(found)[:_MAX_RECIPIENTS]
    results = tuple(
        RecipientResult(recipient=a, action="failed", code=None, status=None, status_inferred=False,
                        reason="feedback", hard=False, suppress=True,
                        diagnostic=(fields.get("user-agent") or [""])[0], remote_mta=None,
                        source="arf", rule=None, feedback_type=ftype)
        for a in rcpts)
    if not results:
        results = (RecipientResult(recipient="", action="failed", code=None, status=None,
                                   status_inferred=False, reason="feedback", hard=False,
                                   suppress=False, diagnostic="", remote_mta=None, source="arf",
                                   rule=None, feedback_type=ftype),)
    return Analysis(category="feedback", results=results)


# A text part that starts with delivery-status fields (RFC 3464 2.2): the per-message
# fields, then the per-recipient ones.
_DSN_HEAD = rxcache.compile(rb"(?im)^(?:reporting-mta|final-recipient|original-recipient):")
_DSN_HEAD_BYTES = 2048


_FIELD_START = rxcache.compile(rb"[A-Za-z][A-Za-z0-9-]{0,60}:|>|\Z")


def _mislabelled_text(p: mime.Part) -> bool:
    """Whether a delivery-status part holds prose, not fields: its first line is no
    "Name: value" field (RFC 3464 2.1: the part is field blocks and nothing else)."""
    if p.get("content-transfer-encoding").lower().strip() not in ("", "7bit", "8bit"):
        # (a gateway re-encoded it: read decoded, as its fields will be; the text is
        # cached for them)
        head = p.text()[:4096].lstrip().encode("utf-8", "replace")
    else:
        head = p.raw_body[:4096].lstrip()
    return _FIELD_START.match(head[:200]) is None


def _find_parts(root: mime.Part) -> tuple[list[mime.Part], list[mime.Part], list[mime.Part],
                                          bool]:
    """(delivery-status parts, feedback-report parts, notification text parts, whether the
    report parts are inside a returned message).

    A report found inside a returned message (message/rfc822) is that message's
    content (we mailed a bounce or a complaint back, and it bounced in turn):
    it is read only when the report itself holds no report part of its own.
    """
    dsn: list[mime.Part] = []
    arf: list[mime.Part] = []
    nested_dsn: list[mime.Part] = []
    nested_arf: list[mime.Part] = []
    texts: list[mime.Part] = []
    stack = [(root, False)]
    while stack:
        p, inside = stack.pop()
        ct = p.content_type
        if ct in ("message/delivery-status", "message/global-delivery-status",
                  "text/delivery-status", "message/x-delivery-status"):
            if not inside and _mislabelled_text(p):
                # InterMail: the notification sent as message/delivery-status
                texts.append(p.with_type("text/plain"))
            else:
                (nested_dsn if inside else dsn).append(p)
        elif ct == "message/feedback-report":
            (nested_arf if inside else arf).append(p)
        elif p.maintype == "text" and not inside and ct != "text/rfc822-headers":
            if p.get("content-disposition").lower().startswith("attachment") and texts:
                if _DSN_HEAD.search(p.raw_body[:_DSN_HEAD_BYTES]) is not None:
                    # delivery-status fields sent as a text attachment ("details.txt"):
                    # the report's own delivery-status part under another label
                    dsn.append(p.with_type("message/delivery-status"))
            else:
                texts.append(p)
        elif p.maintype == "message" or ct == "text/rfc822-headers":
            inside = True
        elif p.maintype == "multipart" and not p.children and not inside and p.raw_body.strip():
            # a multipart whose body has no boundary lines at all: read it as text
            texts.append(mime.Part([("content-type", "text/plain")], p.raw_body, p.depth))
        children = p.children
        if p.subtype == "alternative" and p.maintype == "multipart" and any(
                c.subtype == "plain" and c.maintype == "text" for c in children):
            # the plain alternative is the text; its HTML twin says the same
            children = [c for c in children if c.subtype != "html" or c.maintype != "text"]
        for c in reversed(children):
            stack.append((c, inside))
    if not dsn and not arf:
        return nested_dsn, nested_arf, texts, bool(nested_dsn or nested_arf)
    return dsn, arf, texts, False


def _notification_text(texts: list[mime.Part], limit: int) -> str:
    # (an HTML part that is the alternative of a plain one was left out by _find_parts;
    # an HTML part on its own is the notification, whatever plain parts follow it)
    chosen = texts
    out = []
    n = 0
    for p in chosen:
        t = p.text()
        if p.subtype == "html":
            t = _html_to_text(t[:limit])
        out.append(t[: max(0, limit - n)])
        n += len(out[-1])
        if n >= limit:
            break
    return "\n".join(out)


def _analyze_dsn(ctx: _Ctx, parts: list[mime.Part], note: str) -> list[RecipientResult]:
    results: list[RecipientResult] = []
    text_left = ctx.limits.max_text      # of all the parts together
    for part in parts:
        if text_left <= 0 or len(results) >= _MAX_RECIPIENTS:
            break
        text = part.text()[:text_left]
        text_left -= len(text)
        per_msg, rcpts = _parse_dsn_fields(text)
        if ctx.envid is None and per_msg.get("original-envelope-id"):
            ctx.envid = per_msg["original-envelope-id"].strip()
        # many recipients: look at less text around each (bounded work per message)
        near_max = _NEAR_MAX if len(rcpts) <= 50 else 300
        # (the notification's words are about the recipients that were not delivered: one
        # failed among successes is the only one they can be about)
        failing = len(rcpts)
        if failing > 1:
            failing = sum(1 for d in rcpts if (d.get("action", "").lower().split() or [""])[0]
                          not in _SUCCESS_ACTIONS)
        for d in rcpts[:_MAX_RECIPIENTS - len(results)]:
            ctx.check()
            final = _strip_type(d.get("final-recipient", ""))
            orig = _strip_type(d.get("original-recipient", ""))
            # Original-Recipient is the address as we gave it (RFC 3461 ORCPT);
            # X-Actual-Recipient is where the reporter's aliases led it (a local
            # user, a pipe): the last resort
            # (an address whose domain is one label or a literal names a host inside the
            # reporter's network, "user@sims-ms-daemon": a routable Original-Recipient
            # says more)
            (fa, f_routable), (oa, o_routable) = _field_addr(final), _field_addr(orig)
            rcpt = ((fa if f_routable else "") or (oa if o_routable else "") or fa or oa
                    or _addr(d.get("x-actual-recipient", "")))
            action = (d.get("action", "") or "").strip().lower().split()[0:1]
            act = action[0] if action else "failed"
            if act not in ("failed", "delayed", "delivered", "relayed", "expanded"):
                act = ("failed" if act in ("failure", "fail", "")
                       else "delayed" if "delay" in act else "failed")
            raw_status = d.get("status", "").strip()
            m = _DSN_STATUS.match(raw_status)
            status = "%s.%d.%d" % (m.group(1), int(m.group(2)), int(m.group(3))) if m else None
            diag = _strip_type(d.get("diagnostic-code", ""))
            code, dstatus = extract_codes(diag)
            m = _RELAYED_STATUS.match(diag)
            if m is not None:
                # "5.1.0 - Unknown address error 550-'5.2.2 ...'": the relay's summary,
                # then the remote reply
                code, dstatus = extract_codes(m.group(1))
            # the code in the remote server's own words is more precise than the
            # reporting MTA's summary, unless it is only a vaguer form of it
            if dstatus and (status is None or (status != dstatus and not (
                    dstatus.endswith(".0")
                    and dstatus.rsplit(".", 1)[0] == status.rsplit(".", 1)[0]))):
                status = dstatus
            text = diag
            sm = _STATUS_COMMENT.match(d.get("status", ""))
            if sm is not None and diag:
                # PowerMTA glosses the status ("5.2.1 (mailbox disabled, not accepting
                # messages)"): a disabled mailbox is the more precise cause
                gm = _SUSPEND_COMMENT.search(sm.group(1))
                if gm is not None:
                    text = diag + " (" + gm.group(0) + ")"
            if not text.strip() or not _errorish(text):
                text = (_near(note, rcpt, near_max) or text) if note else text
                if ctx.family == "ezweb" and note:
                    # EZweb states the cause once, in a fixed sentence above the recipients
                    m = _EZWEB_HEADLINE.search(note, 0, 2000)
                    if m is not None:
                        text = m.group(0) + "\n" + text
                c2, s2 = extract_codes(text)
                code = code or c2
                if s2 and (status is None or (status.endswith(".0.0") and s2[0] == status[0])):
                    status = s2
            remote = _strip_type(d.get("remote-mta", "")) or None
            stage, stage_source = _stage_for(text, note, rcpt, near_max,
                                             len(rcpts) == 1 or failing == 1)
            dtype = _diag_type(d.get("diagnostic-code", ""))
            r = _result(ctx, rcpt, text, code=code, status=status, action=act,
                        source="dsn", remote=remote, orcpt=_addr(orig) or None, stage=stage,
                        stage_source=stage_source, diagnostic_type=dtype)
            results.append(r)
    return results


_DSN_STATUS = rxcache.compile(r"([245])\.(\d{1,3})\.(\d{1,3})")
_STATUS_COMMENT = rxcache.compile(r"\s*[245]\.\d{1,3}\.\d{1,3}\s*\(([^()]{3,120})\)")
_SUSPEND_COMMENT = rxcache.compile(r"(?i)mailbox disabled")
_EZWEB_HEADLINE = rxcache.compile(r"(?im)^the user\(s\) account is [^\n]{1,80}$")


def _stage_for(text: str, note: str, rcpt: str, near_max: int = 1500,
               only: bool = False) -> tuple[Stage | None, str | None]:
    """The SMTP stage of one recipient's failure: from its diagnostic, else the notification.

    Returns:
        (stage, where it was read: "text" or "notification"), or (None, "none")
        when neither names one.
    """
    stage = find_stage(text)
    if stage is not None:
        return stage, "text"
    if not note:
        return None, "none"
    near = _near(note, rcpt, near_max)
    stage = find_stage(near) if near else None
    if stage is None and only:
        # one failed recipient: the notification's session transcript is about it
        stage = find_stage(_cut_original(note)[:STAGE_TEXT_LIMIT])
    return (stage, "notification") if stage is not None else (None, "none")


def _diag_type(value: str) -> str | None:
    """'x-unix; ...' -> 'x-unix'; None when the Diagnostic-Code names no type."""
    i = value.find(";")
    if 0 < i < 20 and " " not in value[:i].strip():
        return value[:i].strip().lower()
    return None


_RELAYED_STATUS = rxcache.compile(
    r"[245]\.\d{1,3}\.\d{1,3} - [^'\n]{0,60}?([245]\d\d[ -]'?[245]\.\d{1,3}\.\d{1,3}.*)", re.S)
_OTHER_RCPT_LINE = rxcache.compile(r"(?m)^[ \t]*<?" + ADDR + r">?:[ \t]")


#: Characters of notification text that _NoteIndex.first reads with str.find, per
#: note: about 10 ms. A DSN of 2,000 recipients and a 256 KiB note would
#: otherwise search the note 2,000 times (0.6 s).
_NEAR_SCAN = 8 * 1024 * 1024
#: Addresses indexed when the budget above is spent.
_NEAR_ADDRS = 20_000


class _NoteIndex:
    """Where each recipient first occurs in one notification text (lower-cased).

    Exact (``str.find``) while the note's search budget lasts, which covers
    every real report (256 KiB x 32 recipients, or 4 KiB x 2,000); past it,
    the first address of the text equal to the recipient, from one scan of
    the text's addresses.
    """

    __slots__ = ("note", "low", "found", "budget", "addrs")

    def __init__(self, note: str) -> None:
        self.note = note
        self.low = note.lower()
        self.found: dict[str, int] = {}
        self.budget = _NEAR_SCAN
        self.addrs: dict[str, int] | None = None

    def first(self, rcpt: str) -> int:
        """The offset of the first occurrence of ``rcpt`` (lower-case), or -1."""
        i = self.found.get(rcpt)
        if i is not None:
            return i
        if self.budget >= len(self.low):
            self.budget -= len(self.low)
            i = self.low.find(rcpt)
        else:
            if self.addrs is None:
                self.addrs = {}
                for n, m in enumerate(_iter_addrs(self.low)):
                    if n >= _NEAR_ADDRS:
                        break
                    self.addrs.setdefault(m.group(0).rstrip("."), m.start())
            i = self.addrs.get(rcpt, -1)
        self.found[rcpt] = i
        return i


_INDEX_CACHE = threading.local()


def _note_index(note: str) -> _NoteIndex:
    """The _NoteIndex of a note, remembered per thread for the note last asked about
    (one DSN, many recipients)."""
    c: _NoteIndex | None = getattr(_INDEX_CACHE, "last", None)
    if c is not None and c.note is note:
        return c
    c = _INDEX_CACHE.last = _NoteIndex(note)
    return c


_NL_CACHE = threading.local()


def _nl(note: str) -> str:
    """"\n" + note, remembered per thread for the note last asked about."""
    c: tuple[str, str] | None = getattr(_NL_CACHE, "last", None)
    if c is not None and c[0] is note:
        return c[1]
    nl = "\n" + note
    _NL_CACHE.last = (note, nl)
    return nl


_NEAR_MAX = 1500


def _near(note: str, rcpt: str, near_max: int = _NEAR_MAX) -> str:
    """The paragraph(s) of the notification text that talk about one recipient."""
    if not rcpt:
        return ""
    index = _note_index(note)
    low = index.low
    i = index.first(rcpt)
    if i < 0:
        return ""
    start = low.rfind("\n", 0, i) + 1
    limit = min(len(note), start + 4 * near_max)   # bounded work per recipient
    end = low.find("\n\n", i, limit)
    if end < 0:
        end = limit
    block = note[start:end]
    # "addr: reply" lines, one per recipient: keep only this recipient's
    cut = False
    nl = low.find("\n", i, end)
    if nl > 0:
        for m in _OTHER_RCPT_LINE.finditer(block, nl - start + 1):
            if rcpt not in m.group(0).lower():
                block = block[:m.start()]
                cut = True
                break
    if not cut and len(block) < near_max and not _CODEISH.search(block):
        # the reply may follow in the next paragraph
        end2 = low.find("\n\n", end + 2, limit)
        block = note[start:end2 if end2 > 0 else limit]
    return block[:near_max]


# -- SES / JSON notifications ------------------------------------------------

def _first(items: object) -> list[Any]:
    """The first _MAX_RECIPIENTS items of a JSON list (anything else: none)."""
    return items[:_MAX_RECIPIENTS] if isinstance(items, list) else []


_SNS_WRAPS = (rxcache.compile(r"\n(?! )"), rxcache.compile(r"\n ?"))


def _analyze_json(ctx: _Ctx, text: str) -> Analysis | None:
    i = text.find('{"notificationType"')
    if i < 0:
        i = text.find('{"eventType"')
    if i < 0:
        return None
    blob = text[i:i + 256 * 1024]
    data = None
    # SNS mail wraps the one-line JSON; continuation lines may start with a space
    for pat in _SNS_WRAPS:
        try:
            data, _ = json.JSONDecoder().raw_decode(pat.sub("", blob))
            break
        except ValueError:
            continue
    if not isinstance(data, dict):
        return None
    kind = str(data.get("notificationType") or data.get("eventType") or "").lower()
    mail = data.get("mail") or {}
    if isinstance(mail, dict) and mail.get("messageId") and ctx.msgid is None:
        pass
    if kind == "complaint":
        c = data.get("complaint") or {}
        ftype = str(c.get("complaintFeedbackType") or "abuse")
        rs = tuple(RecipientResult(recipient=str(r.get("emailAddress", "")).lower(),
                                   action="failed", code=None,
                                   status=None, status_inferred=False, reason="feedback",
                                   hard=False, suppress=True, diagnostic="", remote_mta=None,
                                   source="arf", rule=None,
                                   feedback_type=ftype)
                   for r in _first(c.get("complainedRecipients")) if isinstance(r, dict))
        return Analysis(category="feedback", results=rs)
    if kind == "delivery":
        d = data.get("delivery") or {}
        rs = tuple(RecipientResult(recipient=str(a).lower(), action="delivered", code=None,
                                   status="2.6.0", status_inferred=False, reason="delivered",
                                   hard=False,
                                   suppress=False, diagnostic=str(d.get("smtpResponse", "")),
                                   remote_mta=_strip_type(str(d["reportingMTA"]))
                                   if d.get("reportingMTA") else None, source="dsn", rule=None)
                   for a in _first(d.get("recipients")))
        return Analysis(category="other", results=rs)
    if kind == "bounce":
        b = data.get("bounce") or {}
        out = []
        for r in _first(b.get("bouncedRecipients")):
            if not isinstance(r, dict):
                continue
            diag = _strip_type(str(r.get("diagnosticCode", "")))
            st = r.get("status")
            code, ds = extract_codes(diag)
            sub = str(b.get("bounceSubType", "")).lower()
            # without a diagnostic, SES's bounce subtype is the evidence that names
            # the cause: it decides (and so hard, the status and --explain follow it)
            m = None if diag else {
                "suppressed": "suppressed", "mailboxfull": "mailboxfull",
                "messagetoolarge": "mesgtoobig",
                "contentrejected": "contenterror", "attachmentrejected": "policyviolation",
                "noemail": "userunknown", "general": None}.get(sub)
            remote = b.get("reportingMTA")
            res = _result(ctx, str(r.get("emailAddress", "")).lower(),
                          diag or str(b.get("bounceSubType", "")),
                          code=code, status=str(st) if st else ds, source="dsn",
                          remote=_strip_type(str(remote)) if remote else None, reason=m)
            if m:
                guess = ctx.classifier.infer.get(m) if res.status is None else None
                if guess:
                    cls = "4" if str(b.get("bounceType", "")).lower() == "transient" else "5"
                    res = replace(res, status=cls + guess[1:], status_inferred=True)
                hard = is_hard(m, res.status)
                res = replace(res, hard=hard, suppress=hard, decided_by="ses.subtype." + sub)
            out.append(res)
        return Analysis(category="bounce", results=tuple(out))
    return None


# -- free text ---------------------------------------------------------------

# A reply's subject prefix, in the mail clients' languages (Re, AW, SV, VS, Antw, Odp, YNT,
# Res, RIF, 回复/答复), with a counter some add ("Re[2]:").
_REPLY_SUBJECT = rxcache.compile(
    r"[ \t]{0,16}(?:re|aw|sv|vs|antw|odp|ynt|res|rif|回复|答复)[ \t]{0,4}(?:\[\d{1,4}\])?"
    r"[ \t]{0,4}[:：]", re.I)
# The line a mail client writes above the text it quotes ("On DATE, NAME wrote:", "Am ...
# schrieb", ...), or its divider ("-----Original Message-----").
_ATTRIBUTION_ENDS = ("wrote:", "schrieb:", "a écrit :", "a écrit:", "escribió:", "ha scritto:",
                     "schreef:", "skrev:", "napsal:", "napisał:", "kirjoitti:", "escreveu:")


def _person_reply(subject: str, from_hdr: str, from_addr: str | None) -> bool:
    """Whether the message is a person's reply: a reply's subject from an address that does
    not name a mail system. (A reporter that titles its notice "Re: <subject>", as Verizon's
    SMS gateway does, states the failure in its own words, which still make a bounce.)"""
    return (bool(from_addr) and _REPLY_SUBJECT.match(subject) is not None
            and _BOUNCE_FROM.search(from_hdr or "") is None)


def _own_words(note: str) -> str:
    """A reply's own words: its lines before the attribution of the text it quotes, without
    the quoted ('>') lines; the first 20,000 characters read, line by line."""
    own: list[str] = []
    for line in note[:20000].splitlines():
        s = line.strip()
        if s.startswith(">"):
            continue
        low = s.lower()
        if low.endswith(_ATTRIBUTION_ENDS) or "original message" in low[:40]:
            break
        own.append(line)
    return "\n".join(own)


def _reports_failure(own: str) -> bool:
    """Whether a reply's own words read as a failure report naming an address."""
    return _looks_bounce(own) and bool(_find_addrs(own))


def _cut_original(note: str, signature: bool = True) -> str:
    """The notification without the returned original (remembered for the last note), and
    without its signature unless ``signature`` is false."""
    c: tuple[str, str] | None = getattr(_CUT_CACHE, "last", None)
    if signature and c is not None and c[0] is note:
        return c[1]
    nl = _nl(note)
    m = _ORIGINAL_MARK.search(nl)
    cut = len(note)
    if m is not None and m.start() > 0:
        cut = m.start()
    local = _local_mark(nl, cut)
    if local > 0:
        cut = local
    m2 = _HEADER_START.search(nl, 0, cut + 1)
    if m2 is not None and m2.start() > 0:
        cut = m2.start()
    # a signature (RFC 3676 4.3: "-- " alone on its line, or "--" where a gateway took the
    # blank off) is the reporter's contacts, not the report: the last such line, when a
    # few lines at most follow it and no failure (a separator in a report is not one)
    if signature and "\n--" in nl:
        last = None
        for sm in _SIGNATURE.finditer(nl, 0, cut + 1):
            last = sm
        if last is not None and last.start() > 0 and \
                nl.count("\n", last.end(), cut) < _SIGNATURE_LINES and \
                not _errorish(nl[last.end():cut]) and not _CODEISH.search(nl, last.end(), cut) \
                and not _address_list(nl[last.end():cut]):
            cut = last.start()
    region = note[:cut]
    if signature:
        _CUT_CACHE.last = (note, region)
    return region


_CUT_CACHE = threading.local()
# A recipient's label before its address on the line (lower-cased): "Recipient:",
# "Empfänger:", "Destinatario:", ...
_RECIPIENT_LABEL = any_of(r"recipient|rcpt|empf(?:ä|ae)nger|destinat|odbiorc|ontvanger|"
                          r"mottagare|modtager|mottaker|vastaanottaja|получател|c(?:í|i)mzett|"
                          r"al(?:ı|i)c(?:ı|i)|受信者|宛先|收件人|收件者|수신")


def _address_list(text: str) -> bool:
    """Whether a few lines hold addresses and nothing else: after a "--" line, the list of
    failed recipients a report set off so ("could not be delivered (550 ...)\n--\n a@b\n
    c@d"), not a signature, which has a name or words besides its addresses."""
    lines = [ln.strip(" \t\r<>'\"") for ln in text.split("\n")]
    return any(lines) and all(_ADDR_RE.fullmatch(ln) is not None for ln in lines if ln)


_SIGNATURE = rxcache.compile(r"\n-- ?\r?(?:\n|\Z)")
#: Lines a signature holds at most (RFC 3676 4.3 suggests 4; room for blank ones).
_SIGNATURE_LINES = 8


# After "for assistance" the address may follow within 40 characters of the
# line, or after any run of blanks: either a window of up to 39 characters
# (shortest first: the first address), or exactly 40 and then the blanks. One
# window of variable length next to a run of blanks (as before issue 23's
# second review) read the run again for each length, ~41 times a character.
# The blank runs are possessive (an address never starts with a blank), and
# the look-behind keeps the window from ending inside an address's local
# part ("contact bob@x" gave "b@x").
_NOT_RCPT_CONTEXT = rxcache.compile(
    r"(?i)(?:(?:generated from|(?:a )?message (?:that you )?(?:was )?sent by|please contact|"
    r"contact us at|send mail to|expanded from)[ \t:]*+"
    r"|for (?:further )?assistance(?:[^<\n]{0,39}?|[^<\n]{40}[ \t:]*+))"
    r"(?:\n[ \t]*+)?(?:\n[ \t]*+)?[<'\"]?(?<!" + _LOCAL_FIRST + r")(" + ADDR + r")")
# For ASCII text: run case-sensitively on the lower-cased text (same matches), and
# only when one of the phrases' words is there at all.
_NOT_RCPT_CONTEXT_LOW = rxcache.compile(_NOT_RCPT_CONTEXT.pattern[len("(?i)"):])
_NOT_RCPT_WORDS = ("generated from", "sent by", "please contact", "contact us at", "send mail to",
                   "assistance", "expanded from", "received at")
# More of them, each starting with its literal word (lower-cased text), which the regex
# engine finds by a fast scan: whom to ask, however a reply or a report says it ("or to
# contact X to clarify", "Contact: X", "e-mail us at", "write to"); the envelope sender
# a remote's reply names ("Mail from X rejected", "relay mail from <X> to <Y>", "The
# message from (<X>)", "Domain of sender address X").
_ADDR_AFTER = r"(?:\n[ \t]*+)?(?:\n[ \t]*+)?[<'\"]?(?<!" + _LOCAL_FIRST + r")(" + ADDR + r")"
# The words before "notify"/"inform" that ask the reader to ("please notify X", "you
# should immediately inform X"), each a fixed-width look-behind
_ASKED = "(?:" + "|".join(f"(?<={w} {{0}})" for w in (
    "please", "kindly", "immediately", "should", "must")) + ")"
_ASK_CONTEXT = (
    ("contact", rxcache.compile(r"contact(?:ing)?(?: us)?(?: at)?[ \t:]*+" + _ADDR_AFTER)),
    ("write to", rxcache.compile(r"write to[ \t:]*+" + _ADDR_AFTER)),
    ("mail us at", rxcache.compile(r"mail us at[ \t:]*+" + _ADDR_AFTER)),
    # (a gateway's disclaimer or abuse footer: "please notify X", "notify us at X",
    # "notify the sender immediately at X", "inform X", "report abuse to X"; not "mail
    # to X", which says where the failed mail went)
    # (asked: "please notify X", "notify us"; a failure's "unable to notify X", "could
    # not inform X" names the recipient)
    ("notify", rxcache.compile(r"notify(?:" + _ASKED.format("notify")
                               + r"(?: us| the sender| the postmaster)?"
                               r"| us| the sender| the postmaster)(?: immediately)?"
                               r"(?: at)?[ \t:]*+" + _ADDR_AFTER)),
    ("inform", rxcache.compile(r"inform(?:" + _ASKED.format("inform") + r"(?: us)?| us)"
                               r"(?: at)?[ \t:]*+" + _ADDR_AFTER)),
    ("report", rxcache.compile(r"report(?: it| this| abuse| spam) to[ \t:]*+" + _ADDR_AFTER)),
    # an address the recipient moved to, or the one it asks to be written to instead (a
    # 5.1.6 reply, an auto-notice of a changed address: "550 5.1.6 <a@x>: user has moved;
    # new address b@y", "has moved to b@y", "changed her address to b@y", "please use
    # b@y", "alternate address: b@y"): the mail failed at a@x, never at b@y
    ("new ", rxcache.compile(r"new (?:e-?mail |mail )?address(?:es)?(?: is| are)?[ \t:]*+"
                            + _ADDR_AFTER)),
    ("moved to", rxcache.compile(r"moved to[ \t:]*+" + _ADDR_AFTER)),
    ("address to", rxcache.compile(r"(?:changed|updated) (?:(?:his|her|their|the|its|my|our) )?"
                                   r"(?:e-?mail |mail )?address to[ \t:]*+" + _ADDR_AFTER)),
    ("please use", rxcache.compile(r"please use(?: the address)?[ \t:]*+" + _ADDR_AFTER)),
    # (two: the audit cannot tell that an optional word after "alternat(e|ive)" lets no
    # match start inside a run, tests/bounce/test_bounce_hostile.py)
    ("alternat", rxcache.compile(r"alternat(?:e|ive) address(?:es)?(?: is| are)?[ \t:]*+"
                                 + _ADDR_AFTER)),
    ("alternat", rxcache.compile(r"alternat(?:e|ive) e-?mail address(?:es)?(?: is| are)?"
                                 r"[ \t:]*+" + _ADDR_AFTER)),
    # whom the report was copied to ("A copy of this report has been sent to X",
    # "copied to X"), and on whose behalf the original was sent ("on behalf of X")
    ("cop", rxcache.compile(r"(?:cop(?:y|ies)(?: of (?:this|the|your) (?:report|message|notice|"
                            r"notification|error|e-?mail|mail))?(?: (?:has been|have been|was|"
                            r"were|is|are))? (?:sent|forwarded|delivered)|copied) to[ \t:]*+"
                            + _ADDR_AFTER)),
    ("behalf of", rxcache.compile(r"behalf of[ \t:]*+" + _ADDR_AFTER)),
    ("sent by", rxcache.compile(r"sent by[ \t:]*+" + _ADDR_AFTER)),
    # who runs the list or the system ("The list owner is X", "Administrator: X"), where
    # replies go ("Reply-To address: X"), and the address the mail came through to the
    # recipient ("forwarded from X", "alias of X", "via list X": the alias, never the
    # mailbox that failed; not "originally addressed to X", which a report writes of the
    # failed address after naming its local user, "to local user userx. (Originally
    # addressed to userx@x)"), whom else to write ("or mail X")
    ("owner", rxcache.compile(r"owner(?: of the list| address)?(?: is)?[ \t:]*+"
                              + _ADDR_AFTER)),
    ("administrator", rxcache.compile(r"administrator(?: address)?(?: is)?[ \t:]*+"
                                      + _ADDR_AFTER)),
    ("repl", rxcache.compile(r"repl(?:y-to|ies (?:go |should go )?to)(?: address)?"
                             r"(?: is)?[ \t:]*+" + _ADDR_AFTER)),
    ("forwarded from", rxcache.compile(r"forwarded from[ \t:]*+" + _ADDR_AFTER)),
    ("alias of", rxcache.compile(r"alias of[ \t:]*+" + _ADDR_AFTER)),
    ("via ", rxcache.compile(r"via (?:the )?(?:mailing list |list |alias |group )?"
                             + _ADDR_AFTER)),
    # (each starting with its literal words: the regex engine finds those by a fast scan;
    # "or" a word of its own, checked after it: "for e-mail X", "error mail X" name the
    # failed address, "Quota exceeded for email c@d")
    ("or ", rxcache.compile(r"or(?<!\wor) e?-?mail[ \t:]*+" + _ADDR_AFTER)),
    ("please ", rxcache.compile(r"please e?-?mail[ \t:]*+" + _ADDR_AFTER)),
)
# A message's identifier (RFC 5322 3.6.4: "<id-left@id-right>", an address's shape)
# that a report names by its label ("Message ID: <...>", "Original message ID",
# "Internet message id", "msg-id", "In-Reply-To") or as "your message <...>", on the
# label's own line (read in the text as written: "Your Message\n\n<a@x>: 552 ..."
# starts a recipient's entry)
_ID_AFTER = r"[<'\"]?(?<!" + _LOCAL_FIRST + r")(" + ADDR + r")"
_ID_CONTEXT = (
    ("message", rxcache.compile(r"message[- ]?id(?:entifier)?[ \t:=#]*+" + _ID_AFTER)),
    ("msg", rxcache.compile(r"msg[- ]?id[ \t:=#]*+" + _ID_AFTER)),
    ("in-reply-to", rxcache.compile(r"in-reply-to[ \t:]*+" + _ID_AFTER)),
    ("your message <", rxcache.compile(r"your message <(" + ADDR + r")>")),
)
# (the sender on the same line as its words, read in the text as written: an address
# on the next line is the next recipient, "550 Unroutable sender address\n  b@c")
_SENDER_CONTEXT = (
    ("from", rxcache.compile(r"from(?:(?<=mail from)|(?<=message from)|(?<=envelope from)"
                             r"|(?=[ \t(]*+<))[ \t:(]*+<?(" + ADDR + r")")),
    ("sender", rxcache.compile(r"sender(?: address)?[ \t:(]*+<?(" + ADDR + r")")),
)


def _not_rcpt_context(text: str) -> list[str]:
    """Addresses the text names as something other than a failed recipient (lower-case)."""
    # (the phrases read across line breaks: a reply wrapped by the reporter, "Please\n
    # contact a@b")
    lowered = text.lower()
    out = (_senders_named(lowered, _SENDER_CONTEXT + _ID_CONTEXT) + _sender_replies(lowered)
           + _labelled_senders(lowered))
    text = " ".join(text.split())
    if text.isascii():
        low = " ".join(lowered.split())     # (the same as text.lower(): ASCII)
        out += _senders_named(low, _ASK_CONTEXT)
        if not any(w in low for w in _NOT_RCPT_WORDS):
            return list(dict.fromkeys(out))
        return list(dict.fromkeys([m.group(1) for m in _NOT_RCPT_CONTEXT_LOW.finditer(low)]
                                  + _received_from(low) + out))
    # the same gate for other text (casefolded: see _unsubscribe_request), then the
    # IGNORECASE search, ~0.3 ms on a notification of a few KB
    folded = text.casefold()
    # (a text whose case folding changes its length, "ß" to "ss", reads lower-cased:
    # only the addresses the phrases name are taken, not their places)
    out += _senders_named(folded if len(folded) == len(text) else " ".join(lowered.split()),
                          _ASK_CONTEXT)
    if not any(w in folded for w in _NOT_RCPT_WORDS):
        return list(dict.fromkeys(out))
    return list(dict.fromkeys([m.group(1).lower() for m in _NOT_RCPT_CONTEXT.finditer(text)]
                              + _received_from(folded) + out))


def _senders_named(low: str, context: tuple[tuple[str, re.Pattern[str]], ...]) -> list[str]:
    """The addresses a lower-cased text names as whom to ask or as the envelope sender
    (_ASK_CONTEXT, _SENDER_CONTEXT, _ID_CONTEXT; 50 of each at most)."""
    out: list[str] = []
    for word, rx in context:
        if word in low:
            out += [m.group(1) for m in itertools.islice(rx.finditer(low), 50)]
    return out


#: Labels a report writes before the original's sender, in the languages reports come
#: in (lower-cased; a colon follows): the envelope's ("Envelope-From", "Return path",
#: X.400's "Originator"), and "Sender"/"From" as localised notices say it (French,
#: Spanish, Italian, Portuguese, Dutch, Scandinavian, Polish, Czech, Finnish, Hungarian,
#: Turkish, Greek, Russian, Japanese, Chinese, Korean), and the From field's name in
#: them ("Von:", "De :", "差出人:"); the English "From:"/"Sender:" lines are quoted
#: header lines (_QUOTED_HEADER). A label starts a word.
_SENDER_LABELS = (
    "originator", "envelope-from", "envelope from", "return path", "return-path",
    "expéditeur", "expediteur", "remitente", "mittente", "remetente", "afzender",
    "avsändare", "avsandare", "avsender", "afsender", "nadawca", "odesílatel",
    "lähettäjä", "feladó", "gönderen", "αποστολέας", "отправитель", "送信者", "送信元",
    "差出人", "发件人", "發件人", "寄件人", "보낸 사람", "발신자", "absender",
    # the "From" field's own name in those languages (a quoted original's, a notice's)
    "von", "de", "da", "van", "fra", "från", "od", "kimden", "от", "寄件者",
)
#: After a sender's label: its colon (or a full-width one), then the address.
_AFTER_LABEL = rxcache.compile(r"[ \t]*+[:\uff1a][ \t]*+[<'\"]?(" + ADDR + r")")


def _labelled_senders(low: str) -> list[str]:
    """The addresses a (lower-cased) text labels as the original's sender (_SENDER_LABELS),
    50 at most: each "@" is read once, back over its address's local part to the colon
    (or full-width one) and the label before it."""
    out: list[str] = []
    at = low.find("@")
    while at >= 0 and len(out) < 50:
        k = at
        while k > 0 and at - k < 64 and low[k - 1] in _ADDR_CHARS:
            k -= 1
        j = k
        while j > 0 and low[j - 1] in " \t<'\"":
            j -= 1
        if j > 0 and low[j - 1] in ":\uff1a":
            i = j - 1
            while i > 0 and low[i - 1] in " \t":
                i -= 1
            if _sender_label_ends(low, i):
                m = _AFTER_LABEL.match(low, i)
                if m is not None:
                    out.append(m.group(1))
        at = low.find("@", at + 1)
    return out


def _sender_label_ends(low: str, j: int) -> bool:
    """Whether a sender's label (_SENDER_LABELS) ends at ``j``, starting a word (not in
    Japanese or Chinese, written without spaces: "de:" ends "code:")."""
    head = low[max(0, j - _LABEL_MAX):j]
    for label in _SENDER_LABELS:
        if head.endswith(label):
            i = j - len(label)
            prev = low[i - 1] if i else " "
            if not (prev.isalnum() and (prev.isascii() or label.isascii())):
                return True
    return False


_LABEL_MAX = max(map(len, _SENDER_LABELS))


#: The words of a reply to MAIL FROM that follow the sender's address: Postfix's
#: "<s@x>: Sender address rejected: ...", Sendmail's "<s@x>... Sender ok".
_SENDER_REPLY_WORDS = ("sender address", "sender ok")
#: Characters an address (and the "<" before it) is written with, read backwards.
_ADDR_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+/=?^_`{|}~.@-")


def _sender_replies(low: str) -> list[str]:
    """The addresses a remote's reply to MAIL FROM names as the sender, its words after
    the address ("<s@x>: Sender address rejected: Domain not found", "<s@x>... Sender
    ok"; lower-cased text). Each occurrence of the words is read backwards over the
    address before it only (50 at most): linear in the text."""
    out: list[str] = []
    for words in _SENDER_REPLY_WORDS:
        i = low.find(words)
        while i >= 0 and len(out) < 50:
            j = i
            while j > 0 and low[j - 1] in " \t":
                j -= 1
            for mark in (":", "..."):
                if low.endswith(mark, 0, j):
                    j -= len(mark)
                    break
            else:
                j = -1
            if j > 0 and low[j - 1] == ">":
                j -= 1
            k = j
            while k > 0 and j - k < 320 and low[k - 1] in _ADDR_CHARS:
                k -= 1
            while k < j and low[k] in "'.":
                k += 1      # (a quote mark before it: a local part starts with neither)
            m = _ADDR_RE.fullmatch(low, k, j) if j > 0 else None
            line = low.rfind("\n", 0, k) + 1
            if m is not None and low[line:k].strip(" \t<") != "":
                # (not where the address starts its line: an entry of a failed recipient
                # whose reason is about the sender, "<a@x>: Sender address rejected")
                out.append(m.group(0))
            i = low.find(words, i + len(words))
    return out


def _received_from(low: str) -> list[str]:
    """Sendmail's "The original message was received at DATE from SENDER-OR-HOST" (white
    space collapsed, lower-cased): the address there is the sender (found by string
    search, each occurrence read once, 50 at most)."""
    out: list[str] = []
    i = low.find("was received at ")
    while i >= 0 and len(out) < 50:
        j = low.find(" from ", i, i + 120)
        if j >= 0:
            m = _ADDR_RE.match(low, j + 6 + (low[j + 6:j + 7] == "<"))
            if m is not None:
                out.append(m.group(0))
        i = low.find("was received at ", i + 16)
    return out


#: Characters of per-recipient blocks that one free-text notification may have
#: classified, in all (~25 ms of rules at worst). Each block is its lines plus,
#: when they hold no reply code, the 800 characters before them: 500
#: recipients on lines of rule words cost 500 classifications of ~1.3K
#: characters (170 ms on 264 KB, issue 23's second review). Past the budget a
#: recipient gets the reading of the whole notification, made once, as a block
#: that names no reason does already; real reports stay far below it (100
#: recipients of 300 characters each are 30K).
_FREE_TEXT_CLASSIFIED = 64 * 1024


_MSGID_LOCAL = rxcache.compile(r"[0-9a-f.$-]{16,}$")


def _not_recipients(ctx: _Ctx, note: str, region: str, scan: str,
                    root: mime.Part) -> tuple[set[str], set[str]]:
    """(the addresses a text's reading never takes, the returned original's senders).

    The senders (attached, or quoted inline after the notification): the sender of the
    message we sent is not its failed recipient, unless the text lists it as one, an
    entry with its reason ("<a> (expanded from <b>): ..."; an alias that led back to
    the sender, as Postfix's and Exim's reports show it).
    """
    senders = set(ctx.excluded)
    tail = _nl(note)
    for m in _INLINE_SENDER.finditer(tail, len(region), len(region) + 64 * 1024):
        a = _addr(m.group(1))
        if a:
            senders.add(a)
    excluded: set[str] = set()
    for h in ("from", "to", "return-path", "reply-to", "sender"):
        for v in root.get_all(h):
            a = _addr(v)
            if a:
                excluded.add(a)
    if ctx.envelope_rcpt:
        excluded.add(ctx.envelope_rcpt)
    excluded.update(ctx.tokens)
    # addresses the text names as something other than a failed recipient
    for a in _not_rcpt_context(scan):
        excluded.add(a.rstrip("."))
    return excluded, senders - excluded


#: The characters of a local part (_LOCAL), for reading one back past ADDR's 64.
_LOCAL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                         "!#$%&'*+/=?^_`{|}~.-")
#: How far back an encapsulated address's local part is read (an X.500 DN of
#: Exchange's is ~150 characters; the runs read back never overlap: linear).
_MAX_ENCAPSULATED = 1024


def _spelled(scan: str, m: re.Match[str]) -> str:
    """The address at match ``m`` of _iter_addrs, lower-cased, as the text spells it where
    ADDR reads only part of it: an Exchange-encapsulated address whose local part runs
    past ADDR's 64 characters ("IMCEAEX-_O=ORG_OU=..._CN=a@org.example", read whole),
    or a domain with a Unicode label in the middle ("a@mail.bücher.example": ADDR reads
    "a@mail.b"), whose last label is ASCII (an address running into the words of a
    language written without blanks, "a@x.example宛", ends at its ASCII domain)."""
    a = m.group(0).lower()
    start, end = m.start(), m.end()
    if start and scan[start - 1] in _LOCAL_CHARS:
        i, low = start - 1, max(0, start - _MAX_ENCAPSULATED)
        while i > low and scan[i - 1] in _LOCAL_CHARS:
            i -= 1
        if scan[i:i + 5].lower() == "imcea":
            return scan[i:start].lower() + a.rstrip(".")
    if end < len(scan) and scan[end].isalnum() and not scan[end].isascii():
        j, high = end, min(len(scan), end + 255)
        while j < high and (scan[j].isalnum() or scan[j] in "-."):
            j += 1
        full = (a + scan[end:j].lower()).rstrip(".")
        last = full.rpartition(".")[2]
        if last.isascii() and last.isalpha() and "." in scan[end:j]:
            dom = full.rpartition("@")[2]
            if mailbox.key("x@" + dom) != "x@" + dom:     # (a valid IDNA name)
                return full
    return a.rstrip(".")


def _named(scan: str, excluded: set[str], senders: set[str],
           later: dict[str, list[int]]) -> list[tuple[int, str]]:
    """The addresses a text names that can be failed recipients, (position, address) in
    order, each mailbox once (``later`` gets where each is named again).

    Two spellings of one mailbox are one (mailbox.key: "IMCEASMTP-a+40x+2Eexample@org"
    is a@x.example, "a@mail.bücher.example" a@mail.xn--bcher-kva.example), and so is an
    Exchange X.500 address the text ties to another address it names (mailbox.x500_candidates):
    each is judged as its mailbox (excluded, a sender's, a system address) and shown in
    the plainest spelling the text gives it anywhere."""
    spelled = [(m, _spelled(scan, m)) for m in _iter_addrs(scan)]
    keys = {a: mailbox.key(a) for _, a in spelled}
    plain = {k for a, k in keys.items() if a[:8] != "imceaex-"}
    for x in [a for a in keys if a[:8] == "imceaex-"]:
        tied = [c for c in mailbox.x500_candidates(x) if c in plain]
        if len(tied) == 1:
            keys[x] = tied[0]
    best: dict[str, str] = {}       # each mailbox's plainest spelling
    for a, k in keys.items():
        if k not in best or (mailbox.preference(a), a) < (mailbox.preference(best[k]), best[k]):
            best[k] = a
    ex_keys = {mailbox.key(x) for x in excluded}
    sender_keys = {mailbox.key(x) for x in senders}
    found: list[tuple[int, str]] = []
    seen: set[str] = set()
    named = [(m.start(), best[keys[a]]) for m, a in spelled]
    for m, a in spelled:
        k = keys[a]
        if k in seen:
            again = later.setdefault(best[k], [])
            if len(again) < 5:
                again.append(m.start())
            continue
        if k in ex_keys or k in sender_keys and not _starts_entry(scan, m.start(), m.end(),
                                                                    reason=True):
            continue
        local = k.split("@", 1)[0]
        if local[:1] in "/|":
            continue  # a file or program path that ends in an address
        if _SYSTEM_LOCAL.match(local) and not (
                _starts_entry(scan, m.start(), m.end(), reason=True)
                or _starts_entry(scan, m.start(), m.end())
                and _errorish(scan[m.end():m.end() + 400])
                or _ROLE_LOCAL.match(local) and _failed_to(scan, m.start(), m.end())):
            # (a system address is whom to ask, unless it starts an entry of the list
            # of failed recipients: "postmaster@x: Domain does not exist", or the
            # address alone on its line with the failure stated after it; not a
            # contact line at the end of the text, "Questions?\npostmaster@x")
            continue
        # skip message-id-like tokens
        before = scan[max(0, m.start() - 1):m.start()]
        if (before == "<" and scan[m.end():m.end() + 1] == ">"
                and _MSGID_LOCAL.match(local)):
            continue
        seen.add(k)
        found.append((m.start(), best[k]))
        if len(found) >= 500:
            break
    if not found:
        return found
    # an address named only in a remote's replies quoted in a transcript ("<<< 550 ...
    # Address rejected b@x" after ">>> RCPT To:<a@x>") is the remote's own rendering
    # of the recipient it refused, when the text names others as the recipients
    reply = {a for p, a in found if all(_reply_line(scan, q) for q in [p] + later.get(a, []))
             } if "<<<" in scan else set()
    if reply and len(reply) < len(found):
        found = [(p, a) for p, a in found if a not in reply]
    found = _host_renderings(scan, found, later, named)
    if len(found) > 1:
        # an address named only in a remote's reply (after a 4xx/5xx reply code on its
        # line: "said: 550 5.1.1 <b@x>: Recipient address rejected", "Remote Server
        # returned '550 <b@x>...'") after a failed recipient's entry (an address that
        # starts its line, or on a line that states the failure: "There was an error
        # delivering your mail to <a@x>.") is the remote's rendering of that recipient
        # (an alias, a canonical or tag-stripped form), not a second one
        kept = found[:1]
        stated: dict[int, bool] = {}
        for (p0, a0), (p, a) in zip(found, found[1:], strict=False):
            if not (_renders(scan, p0, a0, stated)
                    and all(_after_reply_code(scan, q) for q in [p] + later.get(a, []))):
                kept.append((p, a))
        found = kept
    if len(found) > 1:
        # a recipient listed under a heading that says its delivery succeeded (a report
        # of several outcomes, RFC 3464 2.3.3, in its text) did not bounce
        failed = [(p, a) for p, a in found if not _delivered_entry(scan, p)]
        if failed and len(failed) < len(found):
            found = failed
    if len(found) > 1 and _contact_line(scan, found[-1][0]):
        # (not the only address: a report in a language whose heading words nothing
        # reads may list its one recipient so)
        found.pop()
    return found


# The words right before an address that say the failed mail went to it: "wasn't
# delivered to X" (Gmail), "Your message to X couldn't be delivered" (Exchange Online),
# "Delivery to X failed", "could not deliver your message to X"; not "forward this
# message to X" or "send questions to X" (lower-cased; run on the line up to the address)
_FAILED_TO = rxcache.compile(
    r"(?:deliver(?:ed|y|ing)?(?: of)?(?: (?:your|the|this) (?:message|e-?mail|mail))?"
    r"|(?:your|the) (?:message|e-?mail|mail)) to[ \t]*+(?:the recipient[ \t]*+)?[<'\"]?\Z")


def _failed_to(scan: str, pos: int, end_addr: int) -> bool:
    """Whether the address at ``pos`` (to ``end_addr``) is the one its line says the mail
    failed to reach (_FAILED_TO before it, a failure stated on the line, not in a
    remote's reply), or starts its line with a failure stated under it whatever follows
    it on the line (Exchange 2003's "      webmaster@x on 12/6/2026 2:00 PM" under
    "The following recipient(s) cannot be reached:"): a role mailbox that was the
    recipient (a message to webmaster@x or L-request@x that bounced) is the failed
    recipient, not whom to ask."""
    # (the sentence around it only, 200 characters each way: each address's own read,
    # whatever the length of its line)
    line = scan.rfind("\n", max(0, pos - 200), pos) + 1 or max(0, pos - 200)
    if scan[line:pos].strip(" \t<'\"") == "" and (line == 0 or scan[line - 1] == "\n"):
        return _errorish(scan[end_addr:end_addr + 400])
    end = scan.find("\n", pos, pos + 200)
    return (_FAILED_TO.search(scan[max(line, pos - 80):pos].lower()) is not None
            and _errorish(scan[line:end if end >= 0 else pos + 200])
            and _REPLY_CODE.search(scan, line, pos) is None
            and not scan[line:pos].lstrip(" \t>").startswith("<<<"))


#: The labels of a quoted original's header block as mail clients write it in their
#: languages (Outlook's, Gmail's, Thunderbird's forward and reply headers; lower-cased):
#: the sender's, and the date's and subject's, which only a header block has.
_BLOCK_FROM = frozenset((
    "from", "von", "de", "da", "van", "差出人", "送信者", "发件人", "寄件者", "寄件人", "от",
    "från", "fra", "od", "lähettäjä", "kimden", "feladó", "αποστολέας", "afzender",
    "expéditeur", "remitente", "mittente", "remetente", "absender", "보낸 사람"))
_BLOCK_DATE_SUBJECT = frozenset((
    "date", "sent", "subject", "datum", "gesendet", "betreff", "envoyé", "objet",
    "enviado", "enviado el", "asunto", "fecha", "inviato", "oggetto", "data",
    "enviada em", "assunto", "verzonden", "onderwerp", "送信日時", "日付", "件名", "发送时间",
    "时间", "日期", "主题", "主旨", "寄件日期", "отправлено", "дата", "тема", "skickat",
    "ämne", "sendt", "emne", "wysłano", "temat", "odesláno", "předmět", "lähetetty",
    "aihe", "tarih", "konu", "elküldve", "tárgy", "ημερομηνία", "θέμα", "보낸 날짜", "제목"))
#: A notice's own label for the failed recipient (lower-cased, within a label): a run of
#: label lines with one is the report's summary of the failure ("Empfänger: b@c\nAbsender:
#: s@x\nBetreff: ...\nGrund: 550 ...", as gateways and ISPs localise it), not a client's
#: quoted header block, which writes the To field's name there ("An:", "À :", "宛先:",
#: "收件人:", "Címzett:", "Vastaanottaja:", so none of those is here).
_SUMMARY_RCPT = ("recipient", "empfänger", "empfaenger", "destinataire", "destinatario",
                 "destinatário", "destinatari", "ontvanger", "mottagare", "modtager",
                 "mottaker", "odbiorca", "příjemce", "alıcı", "получател", "受信者", "수신자")
#: ... as is a run with a remote's reply code on a line other than the subject's (its
#: reason: "理由: 550 5.1.1 User unknown" under "送信者:", "宛先:" and "件名:").
_BLOCK_SUBJECT = frozenset((
    "subject", "betreff", "objet", "asunto", "oggetto", "assunto", "onderwerp", "件名", "主题",
    "主旨", "тема", "ämne", "emne", "temat", "předmět", "aihe", "konu", "tárgy", "θέμα", "제목"))
#: A header-like line: a short label and its colon (or a full-width one).
_BLOCK_LABEL = rxcache.compile(r"[ \t>]*+([^\n:\uff1a]{1,24}?)[ \t]*+[:\uff1a]")


def _blank_header_blocks(text: str) -> str:
    """``text`` with the header blocks of quoted originals blanked out, whatever language
    the client wrote their labels in: a run of header-like lines ("Label: value") with a
    sender's label and a date's or subject's ("Von: ... Gesendet: ... An: ...
    Betreff: ...", "差出人: ... 宛先: ... 件名: ..."). Its To and Cc lines name the
    original's recipients, not failed ones (the English names are quoted header lines
    already). Line by line, each read once."""
    if not _labelled_address_line(text):
        return text
    lines = text.split("\n")
    out = list(lines)
    run: list[int] = []
    changed = False

    def close() -> None:
        nonlocal changed
        labels = [_block_label(lines[i]) for i in run]
        if any(x in _BLOCK_FROM for x in labels) and any(x in _BLOCK_DATE_SUBJECT
                                                         for x in labels) \
                and not any(w in x for x in labels for w in _SUMMARY_RCPT) \
                and not any(_REPLY_CODE.search(lines[i]) is not None
                            for i, x in zip(run, labels, strict=True)
                            if x not in _BLOCK_SUBJECT):
            for i in run:
                out[i] = ""
            changed = True

    for n, line in enumerate(lines):
        if _BLOCK_LABEL.match(line) is not None:
            run.append(n)
            continue
        if run and line[:1] in (" ", "\t") and line.strip():
            continue    # (a folded value: the run goes on)
        if len(run) >= 2:
            close()
        run = []
    if len(run) >= 2:
        close()
    return "\n".join(out) if changed else text


def _labelled_address_line(text: str) -> bool:
    """Whether a line of ``text`` that names an address starts with a label and its
    colon (a header block's first test, whose sender line may name no address, "Von:
    John Smith": each "@" read once, 200 at most)."""
    at = text.find("@")
    n = 0
    while at >= 0 and n < 200:
        line = text.rfind("\n", 0, at) + 1
        if _block_label(text[line:at]):
            return True
        n += 1
        nxt = text.find("\n", at)      # (one test a line)
        at = text.find("@", nxt) if nxt >= 0 else -1
    return False


def _block_label(line: str) -> str:
    m = _BLOCK_LABEL.match(line)
    return m.group(1).strip().lower() if m is not None else ""


#: Addresses read back from another's first naming for the one it renders (its entry's
#: other addresses: "(generated from b@x)", a host's name in a reply).
_RENDERED_BACK = 8


def _host_renderings(scan: str, found: list[tuple[int, str]], later: dict[str, list[int]],
                     named: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """``found`` without the addresses that are an address's own as a host rendered it
    inside its entry: the remote's reply, or the relay's RCPT, naming its local part at a
    host of its domain or at the domain of its host ("<a@x>: host mx.x said: 550 5.1.1
    <a@mail.x>: Recipient address rejected", qmail's "Remote host said: 550
    <a@mail.x>... User unknown" under "<a@x>:", Exim's "after RCPT TO:<a@mail.x>" under
    "  a@x"). The report ties the two: the address is named before the other's first
    naming, in the same paragraph, with no other recipient named between (``named``:
    every address the text names, in order, excluded ones too: the rendering of an
    address that is no recipient is none either), and the other never starts an entry
    of its own (two such addresses listed as the failed ones, "a@x\na@mail.x", are
    two). (The rule after it takes any address after a reply code in a remote's reply
    for the entry's; this one reads the relay's own lines, which have no reply code.)"""
    if not found or len(named) < 2:
        return found
    starts = [p for p, _ in named]
    recipients = {a for _, a in found}
    # (the blank lines, each where it starts and ends: one read of the text)
    blanks = [(m.start(), m.end()) for m in _BLANK_LINE.finditer(scan)]
    blank_starts = [b for b, _ in blanks]
    drop: set[int] = set()
    for n, (p, b) in enumerate(found):
        lb, _, db = b.rpartition("@")
        i = bisect.bisect_left(starts, p)
        for q, a in reversed(named[max(0, i - _RENDERED_BACK):i]):
            k = bisect.bisect_left(blank_starts, q)
            if k < len(blanks) and blanks[k][1] <= p:
                break       # (a blank line between: another paragraph)
            la, _, da = a.rpartition("@")
            if la == lb and a != b and (db.endswith("." + da) or da.endswith("." + db)):
                if not any(_starts_entry(scan, x, x + len(b)) for x in [p] + later.get(b, [])):
                    drop.add(n)
                break
            if a in recipients and a != b:
                break       # (another recipient's entry)
    return [f for n, f in enumerate(found) if n not in drop] if drop else found


def _free_text(ctx: _Ctx, note: str, root: mime.Part) -> list[RecipientResult]:
    region = _cut_original(note)
    ctx.check()
    # quoted headers in the notification are not recipients
    scan = _blank_header_blocks(_QUOTED_HEADER.sub("\n", "\n" + region)[1:])
    excluded, senders = _not_recipients(ctx, note, region, scan, root)
    later: dict[str, list[int]] = {}      # where a recipient is named again
    found = _named(scan, excluded, senders, later)
    if not found and "\n--" in note:
        uncut = _cut_original(note, signature=False)
        if len(uncut) > len(region):
            # the "--" line that ended the text took every address it names: the report
            # set its entries off so, each under its label ("--\nEmpfänger: b@c"); any
            # other address after it is the signature's ("E-mail: x@y", a sign-off)
            region = uncut
            scan = _blank_header_blocks(_QUOTED_HEADER.sub("\n", "\n" + region)[1:])
            excluded, senders = _not_recipients(ctx, note, region, scan, root)
            found = [(p, a) for p, a in _named(scan, excluded, senders, later)
                     if _RECIPIENT_LABEL.search(
                         scan[max(scan.rfind("\n", 0, p) + 1, p - 200):p].lower())]
    if not found:
        return []
    owners = _Owners(scan, frozenset(a for _, a in found))
    results = _recipient_blocks(scan, found, later, owners)
    out = []
    left = _FREE_TEXT_CLASSIFIED
    shared: RecipientResult | None = None     # the whole notification's reading
    for a, b in results:
        ctx.check()
        if len(b) > left:
            left = 0
            if shared is None:
                shared = _result(ctx, a, region[:4000], source="heuristic")
            out.append(replace(shared, recipient=a, diagnostic=b.strip()[:2000]))
            continue
        left -= len(b)
        # The stage from the recipient's own block, else from its paragraph as the
        # report wrote it: header-looking lines were taken out of the block, and
        # qmail-ldap writes "From: <s> RCPT: <a> 192.0.2.1 does not like recipient."
        stage, stage_source = _stage_for(b, region, a, only=len(results) == 1)
        # the host that refused: named in the recipient's block, else (one recipient)
        # in the notification
        remote = find_remote_mta(b) or (find_remote_mta(region) if len(results) == 1 else None)
        rr = _result(ctx, a, b, source="heuristic", stage=stage, stage_source=stage_source,
                     remote=remote)
        if rr.reason in ("onhold", "undefined"):
            # (the whole text but the lines tied to another recipient, and the quoted
            # header lines, which name recipients and are no one's evidence: docs
            # section 1)
            text = owners.own(scan[:4000], a) if len(found) > 1 else region[:4000]
            whole = ctx.classifier.classify(None, None, text, ctx.family)
            if whole.reason not in ("onhold", "undefined"):
                rr = _result(ctx, a, text, source="heuristic", stage=stage,
                             stage_source=stage_source, remote=remote)
                rr = replace(rr, diagnostic=b.strip()[:2000])
        out.append(rr)
    return out


def _delivered_entry(text: str, pos: int) -> bool:
    """Whether the address at ``pos`` is listed under a heading that says its delivery
    succeeded (Exchange's "Delivery to the following recipients succeeded:", Sendmail's
    "----- The following addresses had successful delivery notifications -----"): an
    entry that states no failure on its line or the next, under the closest line above
    it that ends with ":" or is set off by dashes, with only entries (addresses, their
    indented words) and blank lines between them."""
    start = text.rfind("\n", 0, pos) + 1
    end = text.find("\n", pos)
    nxt = text.find("\n", end + 1) if end >= 0 else -1
    own = text[start:nxt if nxt >= 0 else len(text)].lower()
    m = _ADDR_RE.match(text, pos)
    if _errorish(own.replace(m.group(0).lower(), " ") if m else own):
        return False
    entry_line = text[start:end if end >= 0 else len(text)]
    if m is not None:
        # (or whose own line says so after it: a table's status column, "a@b Delivered")
        status = entry_line[m.end() - start:].lower()
        if _DELIVERED_STATUS.search(status) and not any(w in f" {status} " for w in _NEGATED):
            return True
    indent = entry_line[:len(entry_line) - len(entry_line.lstrip(" \t"))]
    end = start - 1
    for _ in range(12):
        if end <= 0:
            return False
        start = text.rfind("\n", 0, end) + 1
        raw_line = text[start:end]
        line = raw_line.strip()
        end = start - 1
        if line.startswith(("---", "===")) or line.endswith(("---", ":")) and "@" not in line:
            low = line.lower()
            return (_SUCCEEDED.search(low) is not None and not _errorish(line)
                    and not any(w in f" {low} " for w in _NEGATED))
        if line and "@" not in line and raw_line[:1] not in " \t":
            return False    # (prose between: the entry is not in that list)
        if "@" in line and (not raw_line.startswith(indent)
                            or raw_line[len(indent):len(indent) + 1] in (" ", "\t")):
            return False    # (another list's entry: the entries of one list line up)
    return False


# A heading's words for delivered recipients (lower-cased)
_SUCCEEDED = any_of(r"succeeded|successful|(?:was|were|has been|have been) delivered|"
                    r"delivery (?:to these recipients or groups )?is complete")
# An entry's own status saying it was delivered (lower-cased; not "undelivered")
_DELIVERED_STATUS = any_of(r"\bdelivered\b(?!-)|\bsucceeded\b|\bsuccessful\b")
# ... and the words that turn it round ("has not succeeded:", "was unsuccessful:")
_NEGATED = (" not ", "n't ", "unsuccessful", " never ", " failed", " nicht ")


def _contact_line(text: str, pos: int) -> bool:
    """Whether the address at ``pos`` (the last one the text names) signs it off: alone on
    its line, under a line that is neither another address nor a heading ("... the
    following recipients:"), with no failure stated after it, and a closing or a team's
    name in the two lines above it ("Regards,\nThe Mail Team\nhelp@isp.example" at the end
    of a notice; not "Empfänger\nb@c", "... for the other recipient\nb@c", a list's last
    entry under words nothing reads)."""
    start = text.rfind("\n", 0, pos) + 1
    end = text.find("\n", pos)
    end = len(text) if end < 0 else end
    m = _ADDR_RE.match(text, pos)
    if m is None or text[start:end].strip(" \t<>'\"") != m.group(0):
        return False
    after = text[end:end + 400]
    if after.strip() and (_errorish(after) or _CODEISH.search(after)):
        return False
    above = text[max(0, start - 400):start].rstrip()
    prev = above[above.rfind("\n") + 1:].strip()
    if not (prev and "@" not in prev and not prev.endswith(":")
            and not _errorish(prev) and _CODEISH.search(prev) is None):
        return False
    # (the two non-blank lines above: "Regards," then the team's name; or a signature
    # separator, "--\nhelp@isp.example")
    lines = [ln for ln in above.split("\n") if ln.strip()][-2:]
    return prev == "--" or _SIGN_OFF.search("\n".join(lines).lower()) is not None


# A closing or a team's name signing a notice off (lower-cased)
_SIGN_OFF = any_of(r"regards|thanks|thank you|sincerely|cheers|team\b|support|administrat|"
                   r"postmaster|help ?desk|service|department|grüße|gruesse|cordialement|"
                   r"saludos|atentamente|saluti|groeten|met vriendelijke")


#: A 4xx or 5xx reply code (and its enhanced status) starting a remote's reply.
_REPLY_CODE = rxcache.compile(r"(?<![\w.])[45]\d\d[ -]")


def _renders(text: str, pos: int, addr: str, stated: dict[int, bool]) -> bool:
    """Whether the address at ``pos`` is a failed recipient's entry whose remote reply may
    follow it: not itself inside a reply, and starting its line or on a line that states
    the failure (``stated``: each line's answer by where it starts, so that a line naming
    many addresses is read once, not once for each: 500 on one 256 KB line took 2.4 s)."""
    if _after_reply_code(text, pos):
        return False
    if _starts_entry(text, pos, pos + len(addr)):
        return True
    line = text.rfind("\n", 0, pos) + 1
    if line not in stated:
        stated[line] = _errorish(_line_at(text, pos))
    return stated[line]


def _line_at(text: str, pos: int) -> str:
    """The line of ``text`` that holds position ``pos``."""
    end = text.find("\n", pos)
    return text[text.rfind("\n", 0, pos) + 1:end if end >= 0 else len(text)]


def _after_reply_code(text: str, pos: int) -> bool:
    """Whether position ``pos`` follows a 4xx/5xx reply code on its line, or is on a
    transcript's reply line: inside the remote's own words. Not Sendmail's own line
    for a recipient, which starts with the code, then "<address>..." ("554
    <a@x>... Remote protocol error" in its transcript)."""
    line = text.rfind("\n", 0, pos) + 1
    if _reply_line(text, pos):
        return True
    if _REPLY_CODE.search(text, line, pos) is None:
        return False
    return not (_SENDMAIL_LINE.fullmatch(text, line, pos) is not None
                and text.startswith(">...", text.find(">", pos)))


#: The start of Sendmail's own line for a recipient, up to the address: its code (and
#: enhanced status), then "<".
_SENDMAIL_LINE = rxcache.compile(r"(?m)^[ \t]*+[45]\d\d(?:[ -][245]\.\d{1,3}\.\d{1,3})?[ \t]*+<")


def _reply_line(text: str, pos: int) -> bool:
    """Whether position ``pos`` is on a transcript's reply line ("<<< 550 ...")."""
    line = text.rfind("\n", 0, pos) + 1
    return text[line:pos].lstrip(" \t>").startswith("<<<")     # (quoted: "> <<< 550")


def _starts_entry(text: str, start: int, end: int, reason: bool = False) -> bool:
    """Whether the address at text[start:end] starts its line, as an entry of a list of
    failed recipients does (blanks, "<" or a quote mark before it; after it the end of
    the line, or a ":" then the reason; with ``reason``, only the latter); Postfix's
    "(expanded from <b>)" may come between."""
    # (back over the marks before it to the line's start: not the line read from its
    # start, for each address a long line names; only an address that starts its line
    # reads on to the line's end, one a line)
    k = start
    while k > 0 and text[k - 1] in " \t<'\"":
        k -= 1
    if k > 0 and text[k - 1] != "\n":
        return False
    eol = text.find("\n", end)
    m = _ENTRY_END.match(text, end, eol if eol >= 0 else len(text))
    return m is not None and (not reason or m.group(1) == ":")


# After an address that starts an entry: its closing mark, Postfix's alias note, then a
# ":" (its reason follows) or the end of the line (its reason on the lines below).
_ENTRY_END = rxcache.compile(r"[>'\"]?(?:[ \t]*+\(expanded from [^()\n]{1,300}\))?[ \t]*+"
                             r"(:|\r?\Z)")


# A line that ties the words after it to one recipient, as reports of several write
# them: Sendmail's "<a@x>... User unknown" and a transcript's ">>> RCPT To:<a@x>"
# (Exim's "after RCPT TO:<a@x>:"), an entry "<a@x>:" or "a@x:" that starts its line
# (qmail's paragraphs, Postfix's "<a@x>: host ... said:", Courier's).
_TIE = rxcache.compile(r"(?im)rcpt to:[ \t]*+<(" + ADDR + r")>|<(" + ADDR + r")>(?:\.\.\.|:)"
                       r"|^[ \t]*+(" + ADDR + r"):")


#: A line of a report's text: itself, the addresses it names (lower-cased), the
#: recipients it ties (_TIE), whether it is addresses alone.
_Line = tuple[str, frozenset[str], frozenset[str], bool]


class _Owners:
    """Whose lines a free-text report's lines are, for its recipients ``rcpts``: each
    text's lines are read once (a report of many recipients asks about the same text
    for each of them)."""

    def __init__(self, scan: str, rcpts: frozenset[str]) -> None:
        self.rcpts = rcpts
        # the recipients a line of the text ties its words to (_TIE)
        tied = set()
        if len(rcpts) > 1 and "@" in scan:
            for m in _TIE.finditer(scan):
                a = (m.group(1) or m.group(2) or m.group(3) or "").lower().rstrip(".")
                if a in rcpts:
                    tied.add(a)
        self.tied = frozenset(tied)
        self._lines: dict[str, _Line] = {}      # (the lines read, by their text)

    def _read(self, text: str) -> list[_Line]:
        """Each line with the addresses it names, the recipients it ties, and whether it
        is addresses alone (an entry with no words of its own)."""
        lines: list[_Line] = []
        none: frozenset[str] = frozenset()
        for line in text.split("\n"):
            if "@" not in line:
                lines.append((line, none, none, False))
                continue
            info = self._lines.get(line)
            if info is None:
                named = [m.group(0) for m in _iter_addrs(line)]
                ties = frozenset(
                    x for x in ((m.group(1) or m.group(2) or m.group(3) or "").lower().rstrip(".")
                                for m in _TIE.finditer(line)) if x in self.rcpts)
                bare = line
                if ties:
                    for x in named:
                        bare = bare.replace(x, " ")
                info = (line, frozenset(x.lower().rstrip(".") for x in named), ties,
                        bare.strip(" \t<>:.'\"") == "")
                if len(self._lines) < 4096:
                    self._lines[line] = info
            lines.append(info)
        return lines

    def own(self, text: str, rcpt: str) -> str:
        """The text without the lines that belong to another of the report's recipients:
        from a line tied to another one (_TIE) to the next line that names ``rcpt`` (a
        transcript's ">>> RCPT To:<b@x>", "<<< 550 ...", "<b@x>... User unknown" are
        b's evidence, never its neighbour's: docs section 1). After the line that names
        a recipient the report ties no line to the text is kept whole: its words are
        there or shared (a remote's reply after a list can name the first address,
        "a@x\nb@x\n\n550 5.1.1 <a@x>... User Unknown", for both). An entry of another
        recipient with no words of its own right after the recipient's
        ("<a@x>:\n<b@x>:\nRemote host said: ...") is one list with it: the words after
        the list are both recipients'."""
        if len(self.rcpts) < 2 or "@" not in text:
            return text
        out: list[str] = []
        skipping = False
        words = True        # (words of the recipient's own since the line naming it)
        lines = self._read(text)
        for n, (line, named, ties, bare) in enumerate(lines):
            if rcpt in named:
                if rcpt not in self.tied:
                    out.extend(x[0] for x in lines[n:])
                    break
                skipping, words = False, False
                out.append(line)
                continue
            if ties - {rcpt} and (words or not bare):
                skipping = True
            if not skipping:
                out.append(line)
                words = words or line.strip() != ""
        return "\n".join(out)


def _recipient_blocks(scan: str, found: list[tuple[int, str]],
                      later: dict[str, list[int]], owners: _Owners) -> list[tuple[str, str]]:
    """Each found recipient with the text that states its failure (its block), keeping
    only those whose block reads as a failure when some do.

    Which recipients failed is judged on the blocks as the text has them; the block
    each one gets is its own text (_Owners.own: without the lines tied to another)."""
    results = []
    judged = []                     # the blocks as the text has them: who failed
    alone: set[int] = set()
    listed: set[int] = set()
    own_blocks: list[str] = []      # each block before the words before it were added
    for n, (pos, a) in enumerate(found):
        start = scan.rfind("\n", 0, pos) + 1
        nxt = found[n + 1][0] if n + 1 < len(found) else len(scan)
        nxt_line = scan.rfind("\n", 0, nxt) + 1 if n + 1 < len(found) else nxt
        end = max(nxt_line, scan.find("\n", pos) if scan.find("\n", pos) > 0 else len(scan))
        block = scan[start:min(end, start + 2000)]     # (no copy of a long line first)
        if n + 1 < len(found):
            own = block.strip("\n").split("\n")
            if len(own) == 1:
                alone.add(n)    # its address line only, the next recipient's line after it
            if all(not x.strip() or x[:1] in " \t" for x in own[1:]):
                listed.add(n)   # its line and indented ones: one entry of a list
        own_blocks.append(block)
        mine = owners.own(block, a)
        if not _CODEISH.search(block) and len(found) > 1 and not _errorish(
                block.lower().replace(a, " ")):
            # the error may be stated once for all recipients (before them)
            before = scan[max(0, start - 800):start]
            block = block + "\n" + before
            mine = mine + "\n" + owners.own(before, a)
        judged.append((a, block))
        results.append((a, mine))
    # recipients listed one to a line (blank lines between) share the words that follow
    # the last of them ("a@x\nb@x\n\nNo such user"): a block that is its address line
    # alone takes the next recipient's block
    # (judged by its own line: the notice's opening words before the list, "Delivery
    # to the following recipients failed", say that it failed, never why, and the next
    # recipient's words are the reason stated for both: docs section 1)
    for n in sorted(alone, reverse=True):
        a, b = judged[n]
        if not _errorish(own_blocks[n].lower().replace(a, " ")):   # (not its address's words)
            judged[n] = (a, own_blocks[n].rstrip() + "\n" + judged[n + 1][1][:2000])
            results[n] = (a, owners.own(judged[n][1], a))
    # keep only recipients whose block looks like an error, when some do
    # (a recipient named again further on, as in a report written in two languages,
    # may have its reason stated there: "neko@x" then "an MX record indicated no SMTP
    # service" in Russian, then the English text under the same address)
    err = [False] * len(judged)
    for n in range(len(judged) - 1, -1, -1):
        a, b = judged[n]
        # (and an entry of a list whose next entry is a failure: the list is of failures)
        err[n] = (_errorish(b) or any(_errorish(scan[p:p + 400]) for p in later.get(a, ()))
                  or (n in listed and err[n + 1]))
    errorish = [r for r, e in zip(results, err, strict=True) if e]
    return errorish or results


#: RFC 5322's limit on the length of a line, CRLF excluded (2.1.1).
_MAX_LINE = 998


def _flufl(ctx: _Ctx) -> list[str]:
    """flufl.bounce's reading, after ours found no recipient: its detectors know
    formats our own readings may not (none of either corpus reaches it today).

    Only small messages the MIME parser read whole: its detectors cost ~10 us per
    line each and the stdlib parser under it recurses per nesting level. And only
    messages whose lines keep RFC 5322's limit (998 characters, 2.1.1; a mail
    system's notice wraps its lines): its LLNL detector's expression takes time
    quadratic in the length of a line (30 KB of "a@" after a comma: 1.4 s).
    """
    limits, raw = ctx.limits, ctx.raw
    if (not ctx.parsed_whole or len(raw) > limits.flufl_max_bytes
            or raw.count(b"\n") > limits.flufl_max_lines
            or max(map(len, raw.split(b"\n"))) > _MAX_LINE):
        return []
    from hurricane.bounce.fluflgate import cannot_find
    if cannot_find(raw):
        return []   # (none of its detectors can answer: not worth its ~35 ms import)
    # Imported here, as is stdlib logging: almost no message gets this far, and
    # ``hurricane analyze`` should not pay ~45 ms of imports for the others.
    try:
        import email
        import logging

        # flufl.bounce logs a full traceback (stdlib logging) whenever one of its
        # detectors trips over a hostile message; we already treat a failing
        # detector as "no recipients", so those tracebacks are only noise in the
        # server log (found by fuzz/fuzz_analyze.py).
        logging.getLogger("flufl.bounce").setLevel(logging.CRITICAL)
        from flufl.bounce import all_failures
        # (message_from_bytes parses with the compat32 policy by default)
        perm, temp = all_failures(email.message_from_bytes(raw))
    except Exception:
        return []
    out: list[str] = []
    for a in list(perm) + list(temp):
        s = a.decode("latin-1", "replace").lower() if isinstance(a, bytes) else str(a).lower()
        if "@" in s and s not in out and s not in ctx.excluded:
            out.append(s)
    return out[:_MAX_RECIPIENTS]


def _listed_addrs(region: str, excluded: set[str]) -> list[str]:
    """The addresses standing alone on their lines in a notification's own text.

    The last reading of a bounce whose recipients _free_text could not tell
    from the senders and system addresses around them: a report lists the
    recipients it failed one to a line ("The following addresses had delivery
    problems:" then the address; Exim's "address:" over its indented reason;
    qmail's "<address>:"), or copies the original's "To: address" line into
    its text. Only whole lines count (a sentence naming an address is not a
    list), each read once: linear in the region.
    """
    out: list[str] = []
    for line in region.split("\n"):
        if "@" not in line or len(line) > 400:
            continue
        s = line.strip().lstrip("> \t")     # (quoted: a report forwarded inline)
        if s[:3].lower() == "to:":
            s = s[3:].strip()
        s = s.rstrip(":").rstrip()
        if s[:1] == "<" and s[-1:] == ">":
            s = s[1:-1]
        if _ADDR_RE.fullmatch(s) is None:
            continue
        a = s.lower()
        if a not in excluded and a not in out:
            out.append(a)
            if len(out) >= _MAX_RECIPIENTS:
                break
    return out


def _analyze(raw: bytes, envelope_rcpt: str | None, classifier: ReplyClassifier,
             limits: AnalysisLimits, start: float, depth: int = 0) -> Analysis:
    error = None
    if len(raw) > limits.max_bytes:
        raw = raw[:limits.max_bytes]
        error = "too-large"
    norm = mime.normalise(raw)
    deadline = start + limits.cpu_seconds
    root, perr = mime.parse(norm, max_depth=limits.max_depth, max_parts=limits.max_parts,
                            deadline=deadline, max_headers=limits.max_headers,
                            max_header_bytes=limits.max_header_bytes,
                            max_header_value=limits.max_header_value,
                            max_part_bytes=limits.max_part_bytes)
    ctx = _Ctx(root, deadline, limits, classifier, envelope_rcpt)
    ctx.error = error or perr
    ctx.raw, ctx.parsed_whole = norm, perr is None
    subject = mime.decode_words(root.get("subject")) or None
    from_hdr = mime.decode_words(root.get("from"))
    from_addr = _addr(from_hdr) or None
    base: dict[str, Any] = {"subject": subject, "from_address": from_addr}
    try:
        _collect_meta(ctx, norm)
        ctx.check()
        dsn, arf, texts, nested = _find_parts(root)
        note = _notification(ctx, texts, from_hdr, bool(dsn))
        if nested and dsn and not arf:
            named = {r.recipient for r in _free_text(ctx, note, root) if r.recipient}
            if named and not _same_mailboxes(
                    named, {a for p in dsn for a in _find_addrs(p.text()[:64 * 1024])}):
                # the report's own text names whom it failed, and the only
                # delivery-status part is inside the returned original, about others: a
                # report we had mailed, bounced in turn (Sendmail's postmaster notice of
                # a double bounce), is the original's content (docs section 1); it
                # stands for the report when the report names no one itself (a forward
                # of a report, a gateway's empty notice) or the same recipients (a
                # gateway passing on the receiving system's report, "Your message to
                # b@c could not be delivered. The report is attached.")
                dsn = []
        if depth < _MAX_FORWARDS:
            passed = _forwarded_report(ctx, note)
            if passed:
                return _passed_on([_analyze(r, envelope_rcpt, classifier, limits, start,
                                            depth + 1) for r in passed])
            inner = _inline_forward(ctx, note, subject or "") if not dsn and not arf else None
            if inner is not None:
                return _analyze(inner, envelope_rcpt, classifier, limits, start, depth + 1)
        a = _reported(ctx, dsn, arf, note)
        if a is None:
            a = _other_reports(ctx, note, subject, from_addr)
        if a is None:
            a = _written(ctx, note, subject, from_hdr, from_addr)
        return _finish(a, ctx, base)
    except _OverBudget:
        return _finish(Analysis(category="other"), ctx, base, "over-budget")
    except RecursionError:
        return _finish(Analysis(category="other"), ctx, base, "too-deep")


def _same_mailboxes(named: set[str], others: set[str]) -> bool:
    """Whether an address of ``named`` and one of ``others`` are one mailbox, however each
    is spelled (mailbox.key, mailbox.x500_candidates)."""
    keys = {mailbox.key(a) for a in others}
    return any(mailbox.key(a) in keys or any(c in keys for c in mailbox.x500_candidates(a))
               for a in named)


def _passed_on(analyses: list[Analysis]) -> Analysis:
    """The analysis of messages passed on together: the first one's, with the recipients of
    the others of its category (a bounce, a complaint; not a person's note) after its
    own, each recipient once, and their tokens."""
    first = analyses[0]
    if len(analyses) == 1:
        return first
    results = list(first.results)
    # (each mailbox once, however each report spells it: mailbox.key)
    named = {mailbox.key(r.recipient) for r in results if r.recipient}
    tokens = dict.fromkeys(first.verp_tokens)
    for a in analyses:
        if a is first or a.category != first.category:
            continue
        for r in a.results:
            k = mailbox.key(r.recipient) if r.recipient else ""
            if k and k not in named and len(results) < _MAX_RECIPIENTS:
                named.add(k)
                results.append(r)
        tokens.update(dict.fromkeys(a.verp_tokens))
    results = [r for r in results if r.recipient] or results[:1]
    return replace(first, results=tuple(results), verp_tokens=tuple(tokens)[:_MAX_TOKENS])


# A subject that says the message passes another one on: a forward, or Mailman's
# notice to the list owner of a bounce it could not read.
# (the forward prefix as mail clients write it in other languages: TR, WG, RV, I, Doorst,
# ENC, VB, VS, PD, Пересл, 転送, 转发)
_PASSED_ON = rxcache.compile(r"(?i)(?:fwd?|fw|tr|wg|rv|i|doorst|enc|vb|vs|pd|пересл|転送|转发)"
                             r" ?[:：]|uncaught bounce notification")
#: Reports forwarded inside reports read at most (a person forwarding a forward).
_MAX_FORWARDS = 2


#: Reports passed on together in one message (forwarded as attachments, a digest) read
#: at most.
_MAX_PASSED_ON = 20


def _forwarded_report(ctx: _Ctx, note: str) -> list[bytes]:
    """The attached reports when this message only passes reports on, else [].

    A person or a helpdesk forwarding a bounce as an attachment writes no failure
    of their own; the attached message is the report (a mail system's From, a
    multipart/report, a failure subject). A report whose own text says a delivery
    failed is a bounce in its own right: the message it returns is its original,
    even when that was a bounce too (docs section 1). Several messages forwarded
    together (a mail client's "forward as attachments", a digest): each is read, and
    those that are reports of the first one's kind count (_passed_on); a digest's
    reports, when a message that is not one comes first in it.
    """
    root = ctx.root
    if (root.content_type == "multipart/report" or _BOUNCE_FROM.search(root.get("from"))
            or _says_undelivered(_cut_original(note))):
        return []
    for p in root.children:
        if p.content_type in ("message/delivery-status", "message/feedback-report"):
            return []       # a report of its own
    attached = [p for c in root.children
                for p in (c.children if c.content_type == "multipart/digest" else (c,))
                if p.maintype == "message" and p.subtype == "rfc822" and p.children]
    if not attached:
        return []
    attached = attached[:_MAX_PASSED_ON]
    reports = [p for p in attached if _BOUNCE_FROM.search(p.children[0].get("from")) is not None
               or p.children[0].content_type == "multipart/report"]
    if reports and reports[0] is not attached[0] and any(
            c.content_type == "multipart/digest" for c in root.children):
        # (a digest passes on every message in it: its reports are read, a person's note
        # before them is not one; a person's own message attaching theirs is read whole)
        return [p.payload() for p in reports]
    if (not reports or reports[0] is not attached[0]) and \
            _PASSED_ON.match(mime.decode_words(root.get("subject")).lstrip()) is None:
        return []       # (the first attached message decides: the one passed on)
    return [p.payload() for p in attached]


# The line a mail client writes before a message it forwards inline (Gmail, Outlook,
# Thunderbird, Apple Mail), quoted or not. Possessive runs on one line: linear.
_FORWARD_MARK = rxcache.compile(
    r"(?im)^[ \t>]*+(?:-{2,}+[ \t]*+(?:forwarded message|original message|"
    # (the same lines in the mail clients' other languages)
    r"weitergeleitete nachricht|urspr(?:ü|ue)ngliche nachricht|message transf(?:é|e)r(?:é|e)|"
    r"message d.origine|message original|mensaje reenviado|mensaje original|"
    r"messaggio inoltrato|messaggio originale|doorgestuurd bericht|oorspronkelijk bericht|"
    r"mensagem encaminhada|mensagem original|vidarebefordrat meddelande|"
    r"ursprungligt meddelande|videresendt meddelelse|oprindelig meddelelse|"
    r"przekazana wiadomo(?:ść|sc)|oryginalna wiadomo(?:ść|sc)|пересылаемое сообщение|"
    r"исходное сообщение|転送されたメッセージ|元のメッセージ|转发的邮件|原始邮件)"
    r"[ \t]*+-*+|begin forwarded message:|anfang der weitergeleiteten nachricht:)[ \t]*+$")
# A header field line of the forwarded message: its name (in the client's language,
# "De :" and "Enviado el:" too), then a colon.
_FIELD_LINE = rxcache.compile(r"[^\W\d_][\w-]{0,30}(?: [\w-]{1,10})? ?:")
# The field names mail clients write in other languages, as RFC 5322 names them.
_FIELD_NAMES = {
    "von": "from", "de": "from", "da": "from", "van": "from", "från": "from", "fra": "from",
    "od": "from", "от": "from", "an": "to", "à": "to", "a": "to", "para": "to", "aan": "to",
    "pour": "to", "till": "to", "til": "to", "do": "to", "кому": "to", "betreff": "subject",
    "objet": "subject", "sujet": "subject", "asunto": "subject", "oggetto": "subject",
    "onderwerp": "subject", "assunto": "subject", "ämne": "subject", "emne": "subject",
    "temat": "subject", "тема": "subject", "件名": "subject", "主题": "subject",
    "gesendet": "date", "datum": "date", "envoyé": "date", "enviado": "date", "fecha": "date",
    "data": "date", "inviato": "date", "verzonden": "date", "sent": "date", "skickat": "date",
    "sendt": "date", "wysłano": "date", "отправлено": "date", "дата": "date",
}


def _english_field(line: str) -> str:
    """A forwarded header line with its field name as RFC 5322 names it."""
    name, sep, value = line.partition(":")
    key = name.strip().split(" ", 1)[0].lower()
    return _FIELD_NAMES.get(key, name.strip()) + sep + value


def _inline_forward(ctx: _Ctx, note: str, subject: str) -> bytes | None:
    """The message a person forwarded inline ("Fwd:", then the client's "Forwarded
    message" line, the message's From/Date/Subject/To and its text), as a message of its
    own; None unless this message is such a forward of a mail system's report."""
    root = ctx.root
    if (_PASSED_ON.match(subject.lstrip()) is None
            or _BOUNCE_FROM.search(root.get("from")) is not None):
        return None
    m = _FORWARD_MARK.search(note, 0, 20000)
    if m is None:
        return None
    lines = note[m.end():m.end() + ctx.limits.max_text].split("\n")
    for _ in range(_MAX_FORWARDS):
        if sum(1 for x in lines[:200] if x.startswith(">")) * 2 > len(lines[:200]):
            lines = [_QUOTE_PREFIX.sub("", x, count=1) for x in lines]
        # (the blank lines before it cut at once: one pop(0) each was quadratic)
        del lines[:next((i for i, x in enumerate(lines) if x.strip()), len(lines))]
        if not lines or _FORWARD_MARK.match(lines[0]) is None:
            break
        # a forward of a forward: the inner client's line, then its (quoted) message
        del lines[0]
    # the forwarded message's header fields, then its text
    n = 0
    while n < len(lines) and n < 30 and _FIELD_LINE.match(lines[n].strip()):
        n += 1
    fields = "\n".join(_english_field(x.strip()) for x in lines[:n])
    if n == 0 or not any(x[:5].lower() == "from:" for x in fields.split("\n")):
        return None     # (no forwarded header: the person's own text)
    # the forwarded message as a message of its own, report or not: who wrote it decides
    # (a person forwarding an ordinary message or an auto-reply "Fwd: returned mail" has
    # not forwarded a bounce)
    return (fields + "\n\n" + "\n".join(lines[n:])).encode("utf-8", "surrogateescape")


def _notification(ctx: _Ctx, texts: list[mime.Part], from_hdr: str, has_dsn: bool) -> str:
    """The human-readable notification; sets the reporter's family and the original's id."""
    note = _notification_text(texts, ctx.limits.max_text)
    ctx.family = _family(ctx.root, from_hdr, note)
    if not has_dsn and _QUOTED_DSN.search(_nl(note)):
        # a bounce forwarded inline ("> Final-Recipient: ..."): read the quoted text
        note = _QUOTE_PREFIX.sub("", note)
    if ctx.msgid is None:
        region_end = len(_cut_original(note))
        m = _MSGID_RE.search(_nl(note), region_end)
        if m is not None:
            ctx.msgid = m.group(1).strip()
    return note


def _reported(ctx: _Ctx, dsn: list[mime.Part], arf: list[mime.Part],
              note: str) -> Analysis | None:
    """A report in a machine-readable form: ARF (RFC 5965), or a DSN (RFC 3464), attached
    or inline; None when there is none (or it names no recipient)."""
    root = ctx.root
    if arf or root.params.get("report-type", "").lower() == "feedback-report":
        a = _analyze_arf(ctx, arf[0] if arf else root, root)
        if a is not None:
            return a
    ctx.check()
    if not arf and not dsn and ("eedback-" in note or "EEDBACK-" in note):
        # a complaint forwarded inline by a person or a helpdesk: its feedback-report
        # fields quoted in the text, then the original (docs section 1)
        m = _ARF_INLINE.search(_nl(note), 0, ctx.limits.max_text + 1)
        if m is not None and not _says_undelivered(note[:m.start()]):
            # (a bounce of a complaint, text first, is a bounce; the fields are read from
            # the start of the field block that holds Feedback-Type)
            begin = max(0, m.start() - 4096)
            text = _QUOTE_PREFIX.sub("", _nl(note)[begin:m.start() + ctx.limits.max_text])
            at = _ARF_INLINE.search(text)
            text = text[_block_start(text, at.start() if at is not None else 0):]
            end = _EMBEDDED_ORIGINAL.search(text, 1)
            fields = text[:end.start()] if end is not None else text
            part = mime.Part([("content-type", "message/feedback-report")],
                             fields.encode("utf-8", "replace"), 1)
            a = _analyze_arf(ctx, part, root, text[end.start():] if end is not None else "")
            if a is not None:
                return a
    results: list[RecipientResult] = []
    if dsn:
        results = _analyze_dsn(ctx, dsn, note)
    m = _DSN_FIELD.search(_nl(note), 0, ctx.limits.max_text + 1) if not results else None
    if m is not None:
        # (the fields up to the returned original: a report inside it, a bounce that was
        # itself mailed back, is the original's content, docs section 1)
        end = _EMBEDDED_ORIGINAL.search(_nl(note), m.end())
        text = note[:end.start()] if end is not None else note
        per = [mime.Part([("content-type", "message/delivery-status")],
                         text.encode("utf-8", "replace"), 1)]
        results = _analyze_dsn(ctx, per, note)
    if results and not any(r.recipient for r in results if r.action not in _SUCCESS_ACTIONS):
        # the failed recipients' blocks name no address we can read: the recipients the
        # text names (other than the delivered ones), in order
        named = {r.recipient for r in results if r.recipient}
        unnamed = [n for n, r in enumerate(results) if not r.recipient]
        alt = _free_text(ctx, note, root) if note and unnamed else []
        if not alt and note and unnamed:
            alt = [x for x in _last_resort(ctx, note) if x.recipient]
        alt = [x for x in alt if x.recipient not in named]
        if unnamed and len(alt) == len(unnamed):
            # (a block with no diagnostic of its own: its status with the words the text
            # states for that recipient)
            results = list(results)
            for n, x in zip(unnamed, alt, strict=True):
                r = results[n]
                results[n] = (replace(r, recipient=x.recipient) if r.diagnostic else
                              _result(ctx, x.recipient, x.diagnostic, code=r.code or x.code,
                                      status=r.status or x.status, action=r.action,
                                      source="dsn", remote=r.remote_mta or x.remote_mta,
                                      stage=Stage(x.stage) if x.stage else None,
                                      stage_source=x.stage_source))
        elif not named:
            results = []    # the fields cannot be paired with the recipients the text names
    results = [r for r in results if r.recipient or len(results) == 1]
    if not results:
        return None
    cat = "bounce"
    if all(r.action in ("delivered", "relayed", "expanded") for r in results):
        cat = "other"
    return Analysis(category=cat, results=tuple(results))


# Microsoft's JMRP field in an original quoted in the text (a line of its own, after
# quote marks)
_JMRP_INLINE = rxcache.compile(r"(?i)\n[ \t>]*+x-hmxmroriginalrecipient:[ \t]*+<?(" + ADDR
                               + r")")


def _other_reports(ctx: _Ctx, note: str, subject: str | None,
                   from_addr: str | None) -> Analysis | None:
    """Complaints without ARF (Microsoft's JMRP, a one-click unsubscribe) and JSON reports."""
    for orig in _original_parts(ctx):
        hm = orig.get("x-hmxmroriginalrecipient")
        if hm and _addr(hm):
            rr = RecipientResult(recipient=_addr(hm), action="failed", code=None, status=None,
                                 status_inferred=False, reason="feedback", hard=False,
                                 suppress=True, diagnostic="", remote_mta=None, source="arf",
                                 rule="feedback.jmrp", feedback_type="abuse")
            return Analysis(category="feedback", results=(rr,))
    # ... or forwarded inline by a person or a helpdesk (the original quoted in the
    # text, "> X-HmXmrOriginalRecipient: a@b"): the same field, read in the text
    m = _JMRP_INLINE.search(_nl(note), 0, ctx.limits.max_text + 1) if any(
        w in note for w in ("Xmr", "xmr", "XMR")) else None
    if m is not None:
        rr = RecipientResult(recipient=m.group(1).lower(), action="failed", code=None,
                             status=None, status_inferred=False, reason="feedback", hard=False,
                             suppress=True, diagnostic="", remote_mta=None, source="arf",
                             rule="feedback.jmrp", feedback_type="abuse")
        return Analysis(category="feedback", results=(rr,))
    ctx.check()
    js = _analyze_json(ctx, note)
    if js is not None:
        return js
    if from_addr and _unsubscribe_request(note[:4000]):
        # a mail client's one-click unsubscribe (List-Unsubscribe mailto:): a complaint
        rr = RecipientResult(recipient=from_addr, action="failed", code=None, status=None,
                             status_inferred=False, reason="feedback", hard=False,
                             suppress=True,
                             diagnostic=(subject or "")[:500], remote_mta=None, source="arf",
                             rule="feedback.unsubscribe", feedback_type="opt-out")
        return Analysis(category="feedback", results=(rr,))
    return None


def _written(ctx: _Ctx, note: str, subject: str | None, from_hdr: str,
             from_addr: str | None) -> Analysis:
    """A report in words only: an auto-reply (RFC 3834 or its typical body), else a
    free-text bounce read from its text, its headers and the original's."""
    root, limits = ctx.root, ctx.limits
    auto = _autoreply_kind(root, subject or "", from_hdr)
    reply = _person_reply(subject or "", from_hdr, from_addr)
    bouncy = (bool(_BOUNCE_FROM.search(from_hdr or ""))
              # ("Re: Undelivered Mail Returned to Sender" is a person answering one)
              or (not reply and _bounce_subject(subject or ""))
              # "From: <>": written by a mail system, not by a person who is away
              # (Exim's autoreply transport sets Auto-Submitted on its :fail: notes)
              or (not from_addr and "<>" in (from_hdr or "")))
    if (auto == "autoreply.auto-submitted" and not bouncy
            and _notice_not_reply(root, note, subject or "")):
        # RFC 3834 5: Auto-Submitted says a machine wrote it, not that it is an
        # auto-reply; mail systems mark their failure notices with it too (Sendmail
        # "auto-generated (failure)", Exim and Postfix "auto-replied"), whoever
        # they name in From:
        auto, bouncy = None, True
    if (not auto and not bouncy and from_addr and not _says_undelivered(note)
            # RFC 3834: "Auto-Submitted: no" says a person wrote it, whatever it says
            and not root.get("auto-submitted").lower().startswith("no")):
        auto = _autoreply_body(subject or "", note)
    if auto and not bouncy and _CHALLENGE.search(note[:4000].lower()) is not None:
        # a challenge-response system asks the sender to prove it is a person: not an
        # auto-reply about the recipient's absence (docs section 4, vacation / other)
        return Analysis(category="other")
    if auto and not bouncy:
        rr = RecipientResult(recipient=from_addr or "", action="delivered", code=None,
                             status=None, status_inferred=False, reason="vacation", hard=False,
                             suppress=False, diagnostic=(subject or "")[:500], remote_mta=None,
                             source="autoreply", rule=auto)
        return Analysis(category="autoreply", results=(rr,))
    if reply and not bouncy and not _reports_failure(_own_words(note)):
        # a person's reply whose own words report no failed address: the failure words
        # are in what it quotes (a bounce the person got, a thread) or about something
        # else ("the parcel could not be delivered") (docs/bounce-reasons.md section 1)
        return Analysis(category="other")
    ctx.check()
    if len(note) > limits.max_text:
        note = note[:limits.max_text]
    results = _mailing_list_error(ctx, root, note)
    if not results:
        results = _free_text(ctx, note, root) if (bouncy or _looks_bounce(note)) else []
        xfr = {mailbox.key(a): a.lower() for v in root.get_all("x-failed-recipients")
               for a in _find_addrs(v)}
        if xfr and results:
            # Exim's X-Failed-Recipients names the failed ones (so does Gmail's notice;
            # all 72 corpus reports that carry it name exactly their failed recipients
            # there): a text naming none of them names someone else (its team, a
            # contact), and the header answers; the text's other addresses beside them
            # (the original's other recipients, "addressed to a@x, c@y") did not fail.
            # Each keeps the plainer of its two spellings (an IMCEASMTP one in the text)
            results = [r if mailbox.preference(r.recipient) <= mailbox.preference(
                xfr[mailbox.key(r.recipient)]) else replace(
                r, recipient=xfr[mailbox.key(r.recipient)])
                for r in results if mailbox.key(r.recipient) in xfr]
    if not results and (bouncy or _says_undelivered(_cut_original(note))):
        # (a text that says outright that delivery failed is a bounce whoever sent it
        # and whatever its subject: a gateway's or a provider's own template)
        results = _last_resort(ctx, note)
    if results and _still_retrying(subject or "", _cut_original(note)):
        # a free-text warning: the reporter has not given up (docs step 1, action)
        results = [replace(r, action="delayed") if r.action == "failed" else r
                   for r in results]
    if results:
        return Analysis(category="bounce", results=tuple(results))
    return Analysis(category="other")


def _notice_not_reply(root: mime.Part, note: str, subject: str) -> bool:
    """Whether an Auto-Submitted message is a mail system's notice rather than an auto-reply:
    a text that says a delivery failed or is still being retried, or "auto-generated"
    (RFC 3834 5.1: a responder to a message says "auto-replied") unless its subject or
    its text is an out-of-office reply's (mail servers' vacation responders mark their
    replies auto-generated too)."""
    region = _cut_original(note)
    if _says_undelivered(region) or _STILL_RETRYING.search(region[:6000].lower()) is not None:
        return True
    if root.get("auto-submitted").lower().startswith("auto-generated"):
        return (_AUTO_SUBJECT.search(subject.strip()) is None
                and _autoreply_body(subject, note) is None)
    return False


def _last_resort(ctx: _Ctx, note: str) -> list[RecipientResult]:
    """A bounce whose text names no recipient we could read: X-Failed-Recipients, then
    the addresses its text lists one to a line, then flufl.bounce, then the original's
    To: (attached, or quoted inline)."""
    ctx.check()
    addrs = [a.lower() for v in ctx.root.get_all("x-failed-recipients")
             for a in _find_addrs(v)][:_MAX_RECIPIENTS]
    region = _cut_original(note)
    if not addrs:
        addrs = _listed_addrs(region, ctx.excluded)
    if not addrs:
        # (only what can be an address: flufl's looser detectors also read Message-Ids)
        addrs = [a for a in _flufl(ctx) if _ADDR_RE.fullmatch(a) is not None
                 and not a.split("@", 1)[0].endswith(".")]
    if not addrs:
        # the original's recipient when the text names none (when its To: names one
        # address: of several, which one failed the text does not say)
        for orig in _original_parts(ctx):
            to = list(_mailbox_addrs(orig.get_all("to")))
            addrs = to if len(to) == 1 else []
            break
    if not addrs:
        # ... or its To: quoted inline after the notification
        m = _INLINE_TO.search(_nl(note), len(region))
        named = list(_mailbox_addrs([m.group(1)])) if m is not None else []
        if len(named) == 1 and named[0] not in ctx.excluded:
            addrs = named
    results = [_result(ctx, a, region[:4000], source="heuristic") for a in addrs]
    if not _CODEISH.search(region):
        # the report names no reply and no status (only its MTA's boilerplate):
        # nothing says why, which is "undefined" rather than "onhold"
        results = [replace(r, reason="undefined", rule="undefined.no-diagnostic")
                   if r.reason == "onhold" else r for r in results]
    if not results and region.strip():
        results = [_result(ctx, "", region[:4000], source="heuristic")]
    return results


_UNSUBSCRIBE_REQUEST = rxcache.compile(r"(?i)\bsent this (?:e-?mail|message) to unsubscribe\b")
_UNSUBSCRIBE_REQUEST_LOW = rxcache.compile(_UNSUBSCRIBE_REQUEST.pattern[len("(?i)"):])


def _unsubscribe_request(text: str) -> bool:
    """_UNSUBSCRIBE_REQUEST.search, with a plain substring test first for ASCII text."""
    if text.isascii():
        low = text.lower()
        return "unsubscribe" in low and _UNSUBSCRIBE_REQUEST_LOW.search(low) is not None
    # (casefold: every character the IGNORECASE search takes for a letter of the
    # word, the long s and the Kelvin sign too, folds to that letter)
    return ("unsubscribe" in text.casefold()
            and _UNSUBSCRIBE_REQUEST.search(text) is not None)
_INLINE_TO = rxcache.compile(r"(?i)\n[ \t>]*To:[ \t]*+([^\n]*)")
_INLINE_SENDER = rxcache.compile(r"(?i)\n[ \t>]*(?:From|Sender|Return-Path):[ \t]*+([^\n]*)")
_QUOTED_DSN = rxcache.compile(r"(?i)\n>[ \t]*(?:final-recipient|diagnostic-code):")
def _block_start(text: str, at: int) -> int:
    """Where the field block holding position ``at`` starts (after the blank line before)."""
    i = text.rfind("\n\n", 0, at)
    return i + 1 if i >= 0 else 0


# A feedback report's first field in the text (quoted or not) with its type
_ARF_INLINE = rxcache.compile(r"(?i)\n[ \t>]*+feedback-type:[ \t]*+[a-z]")
_DSN_FIELD = rxcache.compile(r"(?i)\n(?:final|original)-recipient:")
_EMBEDDED_ORIGINAL = rxcache.compile(r"\n(?i:content-type:[ \t]*(?:message/rfc822|"
                                     r"text/rfc822-headers))")
_QUOTE_PREFIX = rxcache.compile(r"(?m)^>[ \t]?")
# (the list address in angle brackets or quotes: a gateway may re-render either)
_FML_RCPT = rxcache.compile(r"[<'\"](" + ADDR + r")[>'\"]")


def _mailing_list_error(ctx: _Ctx, root: mime.Part, note: str) -> list[RecipientResult]:
    """fml (a Japanese mailing-list manager) answering a post: the list address it names."""
    if "fml" not in root.get("x-mlserver").lower():
        return []
    region = _cut_original(note)
    other = set(_not_rcpt_context(region))     # (who sent the post, whom to ask)
    for m in _FML_RCPT.finditer(region):
        a = m.group(1).lower()
        if a not in other:
            return [_result(ctx, a, region[:2000], source="heuristic")]
    return []


# MTAs and providers whose reports need their own reading of the reply text
# (rules.toml: `family = [...]`), recognised by the sender or the report's words.
# (name, From: header pattern, notification pattern)
_FAMILIES = (
    ("messagelabs", rxcache.compile(r"(?i)@messagelabs\.com"),
     rxcache.compile(r"(?i)mail delivery agent at (?:messagelabs\.com|symantec email security)")),
    ("ezweb", rxcache.compile(r"(?i)@ezweb\.ne\.jp\b"), None),
)


#: Words without which a family's notification pattern cannot match ASCII text (its
#: lower-case form): a substring test skips the case-insensitive search, which is
#: tried at every character.
_FAMILY_NOTE_WORDS = {"messagelabs": "mail delivery agent at "}


def _family(root: mime.Part, from_hdr: str, note: str) -> str | None:
    head_low: str | None = None
    for name, from_rx, note_rx in _FAMILIES:
        if from_rx.search(from_hdr or ""):
            return name
        if note_rx is None:
            continue
        word = _FAMILY_NOTE_WORDS.get(name)
        if word is not None:
            if head_low is None:
                head = note[:2000]
                head_low = head.lower() if head.isascii() else ""   # "": search anyway
            if head_low and word not in head_low:
                continue
        if note_rx.search(note, 0, 2000):
            return name
    return None


# A delivery failure said outright. Narrower than _looks_bounce: an out-of-office
# note may well mention its "mailbox" ("limited access to my mailbox").
# (searched in the lower-cased text: an IGNORECASE alternation is tried character by
# character, ~0.5 ms on 20,000 characters; the lower-case one skips ahead)
_UNDELIVERED = any_of(r"could not be delivered|undeliverable|undelivered|"
                      r"delivery (?:to the following|has failed|failed)|"
                      r"permanent (?:error|failure)|not be delivered|returned to sender|"
                      r"unable to deliver|user unknown|\b[45]\d\d[ -][245]\.\d|"
                      # Exim's and qmail's fixed sentences, and "wasn't able to deliver"
                      r"created automatically by mail delivery software|"
                      r"(?:was not|wasn.t|were not|weren.t) able to deliver|"
                      r"not yet been delivered|"
                      r"error (?:has )?occurred while (?:attempting|trying) to deliver|"
                      r"(?:could|can)(?:not|n.t) deliver|"
                      # the reporters' own introductions (OpenSMTPD, Postfix)
                      r"this is the mailer-daemon|this is the mail system at host")
# The same said in the languages seen in returns (German, French, Spanish, Italian,
# Portuguese, Dutch, Russian, Chinese, Japanese), each written from a word whose first
# letter is rare in English text; searched only where the English sentences are not
# there (one regex for both tried ~40 % more alternatives at every position). Each says
# the delivery could not be made, as the English ones do: the bare verbs ("a été livrée",
# "доставлен", "zugestellt werden", "è possibile consegnare") are also what a delivery
# that was made, or a person's reply about an order, says.
_UNDELIVERED_OTHER = any_of(r"nicht zugestellt werden|unzustellbar|nicht zustellbar|"
                      r"zustellung (?:ist )?fehlgeschlagen|"
                      r"(?:n.a|n.ont|ne (?:peut|peuvent|pourra|pourront)) (?:pas )?(?:pu )?"
                      r"être (?:remis|d[ée]livr|distribu|livr|achemin)|"
                      r"impossible de (?:remettre|livrer|distribuer|d[ée]livrer|acheminer)|"
                      r"échec de (?:la )?(?:remise|livraison|distribution)|"
                      r"no (?:se )?(?:pudo|ha podido|han podido|puede) (?:ser )?entrega|"
                      r"non (?:è|e) (?:stato )?possibile (?:consegnare|recapitare)|"
                      r"impossibile (?:consegnare|recapitare)|"
                      r"não (?:foi|é) possível entregar|impossível entregar|"
                      r"não pôde ser entregue|"
                      r"kon niet (?:worden )?(?:afgeleverd|bezorgd)|onbestelbaar|"
                      r"недоставл|не (?:может|могло|могут) быть доставлен|"
                      r"не удалось доставить|невозможно доставить|"
                      r"无法(?:发送|送达|投递|递送)|投递失败|发送失败|退信|"
                      r"無法(?:傳送|送達|投遞|遞送)|傳送失敗|"
                      r"(?:配信|配送|送信)(?:できません|に失敗|エラー)|届けられませんでした|不達")


def _undelivered(low: str) -> bool:
    """Whether a lower-cased text says a delivery failed, in English or another language."""
    return _UNDELIVERED.search(low) is not None or (
        not low.isascii() or "zu" in low or "kon niet" in low or "bestelbaar" in low
        or "entrega" in low or "possibile" in low or "impossible de" in low
    ) and _UNDELIVERED_OTHER.search(low) is not None


def _says_undelivered(note: str) -> bool:
    """Whether the text says a delivery failed (not merely that it mentions a mailbox)."""
    return _undelivered(note[:20000].lower())


# A free-text report that says the reporter is still trying: a delay warning,
# not a failure (a DSN says so in its Action field; free text says it in words).
# Gmail's "THIS IS A WARNING MESSAGE ONLY ... will be retried for 2 more day(s)",
# Exim's "Warning: message X delayed 24 hours ... Delivery attempts will
# continue", Sendmail's "Warning: could not send message for past 4 hours",
# Exchange's "Delivery Status Notification (Delay)".
_STILL_RETRYING = any_of(
    r"this is a warning message only|this is a warning only|will be retried|"
    r"delivery attempts will continue|"
    r"(?:will|shall) (?:continue|keep) (?:to )?try(?:ing)?|still (?:be )?trying|"
    r"no action is required on your part|will try (?:again|to deliver)|has not yet been delivered|"
    r"not been delivered yet|is still in the queue|will retry")
_DELAY_SUBJECT = any_of(r"(?i)\(delay\)|delayed mail|^warning: (?:message|could not send)|"
                        r"delivery delayed|delay(?:ed)? (?:notification|warning)|"
                        r"still being retried")
# ...unless the same text says it gave up after all.
# ("will give up" is the warning's future, not a give-up)
_GAVE_UP = any_of(r"(?:given|gave|giving) up|permanent(?:ly)? (?:error|fail)|"
                  # (Postfix's delay warning: "could not be delivered for more than 4 hour(s)")
                  r"will not (?:be )?retr|could not be delivered(?! for (?:more than|the past|\d))|"
                  r"has been rejected|not going to try again")
_GAVE_UP_WORDS = (" up", "permanent", "will not", "could not be delivered", "has been rejected",
                  "not going to try again")


def _still_retrying(subject: str, region: str) -> bool:
    """Whether a free-text report is a delay warning (the reporter is still retrying).

    The text is lower-cased once and searched case-sensitively: an
    IGNORECASE alternation of phrases is tried character by character at
    every position (~100 us on 6,000 characters, a fifth of a whole
    analysis), the lower-case one is not.
    """
    head = region[:6000].lower()
    # (each alternative of _GAVE_UP holds one of these words: a substring test per
    # word is a fast scan, the alternation tries every position)
    if any(w in head for w in _GAVE_UP_WORDS) and _GAVE_UP.search(head) is not None:
        return False
    return (_DELAY_SUBJECT.search(subject) is not None
            or _STILL_RETRYING.search(head) is not None)


_LOOKS_BOUNCE = any_of(
    r"could not be delivered|undeliverable|"
    r"delivery (?:to the following|has failed|failed)|"
    r"permanent (?:error|failure)|following (?:address|recipient)|"
    r"not be delivered|"
    r"returned to sender|unable to deliver|user unknown|mailbox|550|554")


def _looks_bounce(note: str) -> bool:
    """Whether a text reads like a bounce (searched lower-cased, as _says_undelivered)."""
    low = note[:20000].lower()
    return _LOOKS_BOUNCE.search(low) is not None or _undelivered(low)


# The typical bodies and subjects of auto-replies, by cause: the person is away
# (out of office, on leave, back on a date), or the message was received and will
# be answered (a helpdesk's acknowledgement), in the languages seen in returns.
_AUTO_BODY = any_of(
    r"out of (?:the )?office|"
    r"on (?:annual |parental |maternity |paternity |sick )?(?:leave|vacation|holiday)|"
    r"(?:maternity|paternity|parental) leave|"
    r"away from (?:the|my) (?:office|desk)|i(?: am|.m) (?:currently )?(?:away|out|travell?ing)|"
    r"i will be (?:back|out|away|travell?ing)|i will return|i.ll be back|back in the office|"
    r"(?:limited|intermittent|no) access to (?:my )?e-?mail|"
    r"thank you for (?:your |you )?(?:e-?mail|message|enquiry|inquiry|contacting)|"
    r"i will (?:(?:try|endeavou?r|do my best) to )?(?:reply|respond|answer|get back to you)"
    r"[^.\n]{0,40}as soon as|"
    r"this is an? auto(?:mated|matic|matically generated)? ?(?:reply|response|message)|"
    r"auto-?reply|abwesen|nicht im b(?:ü|ue)ro|au(?:ß|ss)er haus|im urlaub|"
    r"absente? du bureau|je suis absent|en cong[ée]|fuera de la oficina|estar[ée] ausente|"
    r"fuori ufficio|sar[òo] assente|niet op kantoor|afwezig|不在|休暇|"
    # (Portuguese, Polish, Czech, Russian, Finnish, the Scandinavian languages, Chinese)
    r"estou de f[ée]rias|fora do escrit[óo]rio|estarei ausente|jestem na urlopie|"
    r"poza biurem|jsem na dovolen|mimo kancel|в отпуске|вне офиса|olen lomalla|"
    r"poissa toimistolta|jeg er p[åa] ferie|jag [äa]r p[åa] semester|ikke p[åa] kontoret|"
    r"inte p[åa] kontoret|休假|不在办公室")


def _autoreply_body(subject: str, note: str) -> str | None:
    """"autoreply.body" when a short, non-bounce message reads like an auto-reply."""
    head = note[:2000].lower()
    if len(note) > 20000:
        return None       # a long text is a newsletter or a conversation, not an auto-reply
    if _AUTO_BODY.search(subject.lower()) is not None or _AUTO_BODY.search(head) is not None:
        return "autoreply.body"
    return None


_AUTO_PREFIX = rxcache.compile(r"(?i)auto")
# Challenge-response systems (TMDA, SpamArrest, Boxbe, Mailblocks and the like): the reply
# asks the sender to confirm it is a person before the message is delivered.
_CHALLENGE = any_of(
    r"challenge[ -]response|"
    r"(?:confirm|verify|prove) (?:that )?you are (?:a )?(?:human|real|person)|"
    r"(?:confirm|verify) (?:that )?you (?:sent|are the sender)|"
    r"add yourself to (?:my|the|their) (?:approved|guest|allowed|trusted)|spam ?arrest|boxbe|"
    r"mailblocks|tmda|(?:is|has been) (?:being )?held (?:pending|until) (?:your )?(?:verification|"
    r"confirmation)|(?:is|has been) (?:being )?held\. please (?:verify|confirm)|"
    r"please (?:verify|confirm) that you are")


#: Mail systems' own header for a message their auto-reply rule wrote, where they do
#: not set RFC 3834's Auto-Submitted (header, a word of its value): iCloud's vacation
#: rule, the "X-Autogenerated: Reply" of Microsoft's consumer mail, FirstClass.
_VENDOR_AUTOREPLY = (("x-apple-action", "vacation"), ("x-autogenerated", "reply"),
                     ("x-fc-machinegenerated", "true"))


def _autoreply_kind(root: mime.Part, subject: str, from_hdr: str) -> str | None:
    v = root.get("auto-submitted").lower()
    if v and not v.startswith("no"):
        return "autoreply.auto-submitted"
    for h in ("x-autoreply", "x-autorespond", "x-autoresponder", "x-auto-reply",
              "x-mail-autoreply"):
        if root.get(h):
            return "autoreply." + h
    for h, value in _VENDOR_AUTOREPLY:
        if value in root.get(h).lower():
            return "autoreply." + h
    prec = root.get("precedence").lower()
    if prec in ("auto_reply", "auto-reply"):
        return "autoreply.precedence"
    if _AUTO_SUBJECT.search(subject.strip()):
        return "autoreply.subject"
    if root.get("x-auto-response-suppress") and _AUTO_PREFIX.match(subject):
        return "autoreply.subject"
    return None


def _one_per_mailbox(results: tuple[RecipientResult, ...]) -> tuple[RecipientResult, ...]:
    """The results with one per mailbox named in two spellings (mailbox.key; an Exchange
    X.500 address tied to another's, mailbox.x500_candidates), whichever reading named them
    (the delivery-status blocks, the text's entries, its list of addresses, X-Failed-
    Recipients): the first result of each, in the plainest spelling of its mailbox.
    Results with the same address, or of different actions, are left as they are."""
    if len(results) < 2:
        return results
    keys = [(mailbox.key(r.recipient), r.action) if r.recipient else None for r in results]
    groups: dict[tuple[str, str], list[int]] = {}
    for n, k in enumerate(keys):
        if k is not None:
            groups.setdefault(k, []).append(n)
    drop: set[int] = set()
    spelling: dict[int, str] = {}
    for ns in groups.values():
        names = {results[n].recipient for n in ns}
        if len(names) < 2:
            continue
        best = min(names, key=lambda x: (mailbox.preference(x), x))
        for n in ns:
            if results[n].recipient == results[ns[0]].recipient:
                spelling[n] = best
            else:
                drop.add(n)
    if any(r.recipient[:8] == "imceaex-" for r in results):
        kept = {k for n, k in enumerate(keys) if k is not None and n not in drop
                and results[n].recipient[:8] != "imceaex-"}
        for n, r in enumerate(results):
            if r.recipient[:8] == "imceaex-" and any(
                    (c, r.action) in kept for c in mailbox.x500_candidates(r.recipient)):
                drop.add(n)
    if not drop and not spelling:
        return results
    return tuple(replace(r, recipient=spelling[n]) if n in spelling else r
                 for n, r in enumerate(results) if n not in drop)


def _finish(a: Analysis, ctx: _Ctx, base: dict[str, Any], error: str | None = None) -> Analysis:
    if len(a.results) > 1:
        a = replace(a, results=_one_per_mailbox(a.results))
    return replace(a, original_message_id=a.original_message_id or ctx.msgid,
                   verp_tokens=tuple(ctx.tokens), envid=a.envid or ctx.envid,
                   subject=base.get("subject"), from_address=base.get("from_address"),
                   error=error or ctx.error)


def analyze(raw: bytes, envelope_rcpt: str | None = None, *,
            classifier: ReplyClassifier | None = None,
            limits: AnalysisLimits = AnalysisLimits()) -> Analysis:  # noqa: B008 (frozen)
    """Analyze the raw bytes of a returned message; never raises."""
    start = time.process_time()
    clf = classifier or default_classifier()
    try:
        if not isinstance(raw, (bytes, bytearray, memoryview)):
            raw = str(raw).encode("utf-8", "surrogateescape")
        return _analyze(bytes(raw), envelope_rcpt, clf, limits, start)
    except RecursionError:
        return Analysis(category="other", error="too-deep")
    except Exception as e:  # never raise on any input
        return Analysis(category="other", error="unparseable: %s" % type(e).__name__)


_SUCCESS_ACTIONS = ("delivered", "relayed", "expanded")


def to_prediction(analysis: Analysis, file: str) -> dict[str, Any]:
    """The score.py / CLI JSON line for one analyzed file."""
    cat = analysis.category
    named = analysis.results
    if cat == "bounce":
        # a report of several recipients with different outcomes: the ones delivered,
        # relayed or expanded did not bounce (their results stay below, with their action)
        named = tuple(r for r in named if r.action not in _SUCCESS_ACTIONS) or named
    rs = [r for r in named if r.recipient]
    first = named[0] if named else None
    reason = first.reason if first else ""
    return {
        "file": file,
        "category": cat,
        "recipients": list(dict.fromkeys(r.recipient for r in rs)),
        "status": (first.status or "") if first and cat == "bounce" else "",
        "replycode": (first.code or "") if first else "",
        "reason": reason,
        "hard": first.hard if first else None,
        "error": analysis.error,
        "results": [{"recipient": r.recipient, "status": r.status or "", "replycode": r.code or "",
                     "reason": r.reason, "hard": r.hard, "diagnostic": r.diagnostic[:300],
                     "action": r.action, "source": r.source, "rule": r.rule,
                     "stage": r.stage, "decided_by": r.decided_by, "runner_up": r.runner_up}
                    for r in analysis.results],
    }
