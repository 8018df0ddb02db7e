"""Evidence about one failed recipient, gathered before any reason is decided.

docs/bounce-reasons.md, section 1: the SMTP stage at which the recipient
failed, the reply code, the enhanced status code (and whether it is specific
or a catch-all), the diagnostic text and its type, the DSN action, the remote
MTA and the reporting MTA's family.  :func:`find_stage` reads the stage from
the words the usual MTAs use for it; ``hurricane.bounce.decide`` decides the
reason from an :class:`Evidence` alone.
"""

from __future__ import annotations

import binascii
import functools
import marshal
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from hurricane.bounce import rxcache
from hurricane.bounce.model import Record

TYPE_CHECKING = False   # (typing costs ~4 ms to import; mypy reads this as typing's)
if TYPE_CHECKING:
    from typing import Any

__all__ = ["Stage", "Evidence", "find_stage", "find_remote_mta", "is_catch_all", "STAGE_TEXT_LIMIT",
           "trie_regex"]


class Stage(StrEnum):
    """The SMTP step at which a recipient was refused."""

    conn = "conn"      # connecting, or the server's greeting
    helo = "helo"      # EHLO / HELO
    mail = "mail"      # MAIL FROM: the envelope sender
    rcpt = "rcpt"      # RCPT TO: this recipient
    data = "data"      # the DATA command, the end of data, or after it


#: The stage is read from at most this many characters (the end of a long text:
#: transcripts end with the failing command). Bounded work on hostile input.
STAGE_TEXT_LIMIT = 8192

# The phrases, by MTA (lower-cased text, white space collapsed):
#   Postfix    "(in reply to RCPT TO command)", "(in reply to end of DATA command)",
#              "refused to talk to me" (greeting), smtpd's "Helo command rejected"
#   Exim       "SMTP error from remote mail server after RCPT TO:<a>:",
#              "after pipelined MAIL FROM:", "after end of data", "after initial connection"
#   Sendmail   the transcript ">>> RCPT To:<a>" then "<<< 550 ..."; ">>> DATA", ">>> ."
#   qmail      "does not like recipient", "failed after I sent the message",
#              "sender was rejected", "greeting failed", "my name was rejected",
#              "Sorry, I wasn't able to establish an SMTP connection"
#   Courier    ">>> RCPT TO:<a>"; others "in response to RCPT TO", "RCPT command"
# Each regex starts with a literal word, so the regex engine jumps from one
# occurrence of that word to the next (one alternation of phrases that start
# differently costs ~300 us on a 2 KB text; these cost a few); the fixed
# phrases are plain substring searches. All are linear in the text.
_PREFIXED = (
    rxcache.compile(r"in (?:reply|response) to (?:the )?(?:(?P<data>(?:end of )?data|bdat)\b|"
                    r"(?P<rcpt>rcpt)\b|(?P<mail>mail from)\b|(?P<helo>ehlo|helo)\b|"
                    r"(?P<conn>initial))"),
    rxcache.compile(r"after (?:(?P<data>(?:the )?(?:end of )?data\b|pipelined (?:data|bdat)\b|"
                    r"bdat\b|sending data block|"
                    r"(?:sending )?(?:the )?message\b)|(?P<rcpt>(?:pipelined )?rcpt)\b|"
                    r"(?P<mail>(?:pipelined )?mail from)\b|(?P<helo>ehlo|helo)\b|"
                    r"(?P<conn>initial connection))"),
    rxcache.compile(r">>> (?:(?P<data>data\b|bdat\b|\.(?!\S))|(?P<rcpt>rcpt)\b|"
                    r"(?P<mail>mail from)\b|(?P<helo>ehlo|helo)\b)"),
    rxcache.compile(r"did(?: not|n.t) like our (?:(?P<rcpt>rcpt)|(?P<mail>mail from)|"
                    r"(?P<data>(?:final )?data))"),
    rxcache.compile(r"for (?:(?P<data>text|data)|(?P<rcpt>rcpt)|(?P<mail>mail)) command"),
    rxcache.compile(r"performing the (?P<helo>helo|ehlo) handshake"),
    rxcache.compile(r"smtp command:? (?P<data>data)\b"),
    rxcache.compile(r"during (?:the )?(?:(?P<data>data)\b|(?P<conn>initial connection)|"
                    r"(?P<rcpt>rcpt)\b|(?P<mail>mail from)\b|(?P<helo>ehlo|helo)\b)"),
    # Sendmail names the phase it was in when the reply was bad or never came
    # ("timeout waiting for input from mx.example. during client RCPT", "... during
    # client greeting", "client DATA status")
    rxcache.compile(r"during client (?:(?P<conn>greeting)|(?P<helo>ehlo|helo)\b|(?P<mail>mail)\b|"
                    r"(?P<rcpt>rcpt)\b|(?P<data>data)\b)"),
    # Google (Gmail, Workspace) tags the reply with the step its session had reached:
    # "(SENT_HELO)", "(SENT_SECOND_EHLO)" (the EHLO after STARTTLS), "(SENT_MAIL)",
    # "(SENT_RCPT)", "(SENT_DATA)", "(SENT_MESSAGE)" (the message had been sent)
    rxcache.compile(r"sent_(?<=\(sent_)(?:(?P<helo>(?:second_)?(?:ehlo|helo))|(?P<mail>mail(?:_from)?)|"
                    r"(?P<rcpt>rcpt(?:_to)?)|(?P<data>data|message|body))\)"),
    # "reply to RCPT TO: 550 ...", "response to RCPT" without Postfix's "in"
    rxcache.compile(r"reply to (?:the )?(?:(?P<rcpt>rcpt)\b|(?P<mail>mail from)\b)"),
    rxcache.compile(r"response to (?:the )?(?:(?P<rcpt>rcpt)\b|(?P<mail>mail from)\b)"),
    rxcache.compile(r"while (?:(?P<data>sending (?:the )?message|sending (?:end of )?data\b)|"
                    r"(?P<conn>connecting|receiving the initial server greeting)|"
                    r"(?P<rcpt>sending rcpt)|(?P<mail>sending mail from)|"
                    r"(?P<helo>sending [eh][eh]lo))"),
    # Postfix's "connect to mx.example[192.0.2.1]:25: Connection timed out"
    rxcache.compile(r"(?P<conn>connect to [^\s\[\]]{1,255}\[)"),
)


def _lead(rx: re.Pattern[str]) -> str:
    """The literal text every match of ``rx`` starts with ("" when none is known): its
    leading letters, digits, blanks and ">", unless the pattern is an alternation."""
    if rx.flags & (re.IGNORECASE | re.VERBOSE) or _top_level_bar(rx.pattern):
        return ""
    source = rx.pattern
    n = 0
    while n < len(source) and (source[n].isalnum() or source[n] in " >"):
        n += 1
    if source[n:n + 1] in ("?", "*", "+", "{"):
        n -= 1      # (a quantifier makes the character before it optional)
    return source[:max(n, 0)]


def _top_level_bar(source: str) -> bool:
    """Whether a regex source has a "|" outside every group (escapes and classes skipped)."""
    depth = 0
    i = 0
    while i < len(source):
        ch = source[i]
        if ch == "\\":
            i += 1
        elif ch == "[":
            i += 1
            if source[i:i + 1] == "^":
                i += 1
            if source[i:i + 1] == "]":
                i += 1
            while i < len(source) and source[i] != "]":
                i += 2 if source[i] == "\\" else 1
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "|" and depth == 0:
            return True
        i += 1
    return False


#: Each of _PREFIXED with the text its matches start with.
_PREFIXED_LEADS = tuple((rx, _lead(rx)) for rx in _PREFIXED)


_PHRASES = (
    ("data command", Stage.data), ("[data]", Stage.data), ("failed after i sent the message",
                                                             Stage.data),
    ("end of data", Stage.data), ("rejected after data", Stage.data),
    ("[rcpt_to]", Stage.rcpt), ("does not like recipient", Stage.rcpt),
    ("following rcpt command", Stage.rcpt), ("following the rcpt command", Stage.rcpt),
    ("to the rcpt command", Stage.rcpt), ("to rcpt command", Stage.rcpt),
    ("rcpt command", Stage.rcpt), ("unknown recipient or mailbox unavailable", Stage.rcpt),
    ("rcpt to command", Stage.rcpt), ("[rcpt to]", Stage.rcpt), ("rejected at rcpt", Stage.rcpt),
    ("[mail_from]", Stage.mail), ("sender was rejected", Stage.mail),
    ("mail from command", Stage.mail),
    ("my name was rejected", Stage.helo), ("helo command", Stage.helo),
    ("ehlo command", Stage.helo),
    ("greeting failed", Stage.conn), ("refused to talk to me", Stage.conn),
    ("establish an smtp connection", Stage.conn), ("rejected at connect", Stage.conn),
    ("at connect time", Stage.conn), ("failed connect()", Stage.conn),
    ("requests to connect", Stage.conn), ("unable to connect successfully", Stage.conn),
    # Postfix smtpd's restriction replies name what they refused, one per command
    # (with smtpd_delay_reject they are all sent in reply to RCPT TO, but the
    # stage is the step whose check failed): client, HELO, sender, recipient, DATA.
    # Exchange and Office 365 write the same "Sender address rejected" at MAIL FROM.
    # ("Recipient address rejected" is left out: the public corpus labels a Postfix
    # "Recipient address rejected: User unknown" with no enhanced status `filtered`,
    # as the no-stage rule of docs section 2 step 5 does, and its guard may not drop.)
    ("client host rejected", Stage.conn), ("sender address rejected", Stage.mail),
    ("relay access denied", Stage.rcpt), ("data command rejected", Stage.data),
    # Session transcripts that name the command sent (hMailServer "sent: RCPT TO:<a>
    # Remote server replied: 550 ...", and the like)
    ("sent: rcpt to", Stage.rcpt), ("sent: mail from", Stage.mail), ("sent: data", Stage.data),
    ("sent: bdat", Stage.data), ("sent: ehlo", Stage.helo), ("sent: helo", Stage.helo),
    # Yahoo's tag after the remote reply ("Remote host said: 554 ... [BODY]"), as its
    # "[RCPT_TO]" and "[MAIL_FROM]": the reply to the message body
    ("[body]", Stage.data),
    # The reporter could not reach a server at all: its own connection attempt
    # failed (Postfix "connect to ...: Connection timed out", Sendmail "Connection
    # refused by mx.example", Gmail "Could not initiate SMTP conversation", qmail
    # "unable to connect to remote server") ...
    ("connection timed out", Stage.conn), ("connection refused", Stage.conn),
    ("could not initiate smtp conversation", Stage.conn), ("no route to host", Stage.conn),
    ("unable to connect to remote server", Stage.conn), ("host not reachable", Stage.conn),
    ("network is unreachable", Stage.conn),
    # ... or its own DNS lookup of where to connect failed (Postfix "Host or domain
    # name not found. Name service error for name=...", Sendmail "host name lookup
    # failure" / "Host unknown (Name server: ...)", Gmail "DNS Error: ... DNS type
    # 'mx' lookup of ...", qmail "couldn't find a mail exchanger or IP address",
    # Yahoo "No mx record found for domain=", Mailgun "no MX or A for domain"):
    # no SMTP session began, so the failure is at the connection step.
    ("host or domain name not found", Stage.conn), ("name service error", Stage.conn),
    ("host name lookup failure", Stage.conn), ("(name server:", Stage.conn),
    ("dns type 'mx' lookup", Stage.conn), ("find a mail exchanger", Stage.conn),
    ("no mx record", Stage.conn), ("no mx or a for domain", Stage.conn),
    # Exchange's own words for the same two failures ("451 4.4.0 DNS query failed",
    # "Failed to connect. Winsock error code: 10060") and Exim's for a null MX (RFC
    # 7505: "an MX or SRV record indicated no SMTP service"): the reply code there is
    # the reporter's, not a server's refusal, so they are never the stage default
    # `blocked` (blocked.connection-phase's `unless`)
    ("dns query failed", Stage.conn), ("winsock error", Stage.conn),
    ("indicated no smtp service", Stage.conn),
)

#: The phrases of _PHRASES above that a reporter writes when no server answered:
#: they name the connection step only when nothing else in the text names a step.
_REPORTER_ONLY = ("dns query failed", "winsock error", "indicated no smtp service")


@functools.lru_cache(maxsize=256)
def find_stage(text: str) -> Stage | None:
    """The SMTP stage a diagnostic or notification text names, or None.

    Remembered for the last texts asked about: one recipient's text is read
    for its stage by the analyzer and again by the decision (about ten
    regexes over up to 8 KiB each time).

    The last mention wins: a session transcript lists the commands that
    succeeded before the one that failed.

    Args:
        text: the text, in any case and with any white space.

    Returns:
        The stage, or None when the text names none.
    """
    if not text:
        return None
    tail = text[-STAGE_TEXT_LIMIT:]
    if ">>> " in tail or "In:" in tail or "<-- " in tail:
        stage = _transcript_stage(tail)
        if stage is not None:
            return stage
    low = " ".join(tail.split()).lower()
    best, stage = -1, None
    for rx, lead in _PREFIXED_LEADS:
        if lead not in low:
            continue    # (a substring test: no match can start without its lead)
        last = None
        for last in rx.finditer(low):  # noqa: B007 (the last match counts)
            pass
        if last is not None and last.start() > best and last.lastgroup is not None:
            best, stage = last.start(), Stage(last.lastgroup)
    # The phrase that occurs last; of several starting there, the first listed.
    # (a phrase found inside a regex's match, "end of data" in "in reply to
    # end of data command", names the same stage)
    i, st = _last_phrase(low)
    if i > best and low.startswith(_REPORTER_ONLY, i):
        # words only a reporter writes when no server answered (Exchange's "DNS query
        # failed", "Winsock error", Exim's null-MX words) name the connection only
        # when nothing else names a step: quoted in a server's reply after the
        # command it answered ("after MAIL FROM:<s@a>: 550 ... DNS query failed")
        # the step is that command's (docs/bounce-reasons.md, stage)
        for w in _REPORTER_ONLY:
            low = low.replace(w, " " * len(w))
        j, st2 = _last_phrase(low)
        if j > best:
            best, stage = j, st2
        return stage if best >= 0 else st
    if i > best:
        stage = st
    return stage


#: A character trie: each character leads to the rest; the key "" marks a word's end.
_Trie = dict[str, "_Trie"]


def trie_regex(words: Sequence[str]) -> str:
    """A regex that matches, at one position, the longest of ``words`` found there."""
    trie: _Trie = {}
    for w in words:
        node = trie
        for ch in w:
            node = node.setdefault(ch, {})
        node[""] = {}

    def emit(node: _Trie) -> str:
        alts = [re.escape(ch) + emit(sub) for ch, sub in sorted(node.items()) if ch]
        if not alts:
            return ""
        end = "" in node
        if len(alts) == 1 and not end:
            return alts[0]
        # the longer continuations first; the empty one (a word ends here) last
        return "(?:" + "|".join(alts) + ("|)" if end else ")")

    return "|".join(re.escape(ch) + emit(sub) for ch, sub in sorted(trie.items()))


#: Each phrase: its place in _PHRASES (the first, if listed twice) and its stage.
_PHRASE_ORDER: dict[str, tuple[int, Stage]] = {}
for _n, (_phrase, _st) in enumerate(_PHRASES):
    _PHRASE_ORDER.setdefault(_phrase, (_n, _st))
del _n, _phrase, _st
#: One scan finds, at each position, the longest phrase that starts there ...
#: (the trie's source is derived from the sorted phrases, ~800 calls of emit(): the
#: compiled-regex cache keeps it with the program, under the phrases and a
#: fingerprint of trie_regex's code)
_TRIE_TAG = binascii.crc32(marshal.dumps(trie_regex.__code__))
_PHRASE_WORDS = sorted(_PHRASE_ORDER)
_PHRASE_SCAN = rxcache.compile("\n".join(_PHRASE_WORDS), derive=lambda: trie_regex(_PHRASE_WORDS),
                               tag=_TRIE_TAG)
#: ... and the phrases that are prefixes of it start there too: (place, stage) of each.
_PHRASES_AT = {w: tuple(_PHRASE_ORDER[w[:k]] for k in range(1, len(w) + 1)
                        if w[:k] in _PHRASE_ORDER) for w in _PHRASE_ORDER}


def _last_phrase(low: str) -> tuple[int, Stage | None]:
    """(where, stage) of the phrase of _PHRASES that starts last in ``low``, the first
    listed of those that start there; (-1, None) when none occurs.

    The same answer as ``low.rfind(phrase)`` for each phrase in turn, keeping the
    greatest (the first on a tie), in one scan of the text: the scan restarts one
    character after each hit, so it stops at every position where a phrase starts.
    """
    search = _PHRASE_SCAN.search
    m = search(low)
    if m is None:
        return -1, None
    while True:
        at = m.start()
        nxt = search(low, at + 1)
        if nxt is None:
            return at, min(_PHRASES_AT[m.group()])[1]
        m = nxt


_SENT_COMMAND = {"data": Stage.data, ".": Stage.data, "bdat": Stage.data, "rcpt": Stage.rcpt,
                 "mail": Stage.mail,
                 "ehlo": Stage.helo, "helo": Stage.helo, "lhlo": Stage.helo}
# DATA refused because no recipient had been accepted: the failure that came
# first answered a RCPT sent in the same pipelined batch (RFC 2920).
_NO_RECIPIENTS = rxcache.compile(r"need rcpt|no valid recipients|no recipients|"
                                 r"rcpt commands were rejected|start afresh|"
                                 r"need (?:a )?recipient|no recipient")


def _transcript_stage(text: str) -> Stage | None:
    """The stage from a session transcript (">>> RCPT To:<a>" then "<<< 550 ...").

    Sendmail, Courier and others quote the session: the command that got the
    first 4xx/5xx reply failed. With pipelining the client sends RCPT and DATA
    together, so the transcript shows ">>> DATA" before the RCPT's refusal; a
    later "503 need RCPT" (DATA refused for want of recipients) says the first
    refusal answered the RCPT.
    """
    last: Stage | None = None
    failed: Stage | None = None
    for line in text.splitlines():
        line = line.strip()
        # Postfix's own session transcripts (notify_classes) write "In:  RCPT TO:<a>"
        # and "Out: 550 ...": the same shape
        if line.startswith("In: "):
            line = ">>> " + line[4:].lstrip()
        elif line.startswith("Out: "):
            line = "<<< " + line[5:].lstrip()
        elif "--> " in line or "<-- " in line:
            # MDaemon and others write arrows after a time stamp ("Mon 2005-01-03
            # 10:00:01: --> RCPT To:<a>", "<-- 550 ..."): the same shape
            i = line.find("--> ")
            j = line.find("<-- ")
            if i >= 0 and (j < 0 or i < j):
                line = ">>> " + line[i + 4:].lstrip()
            elif j >= 0:
                line = "<<< " + line[j + 4:].lstrip()
        if line.startswith(">>> "):
            word = line[4:].split(" ", 1)[0].split(":", 1)[0].lower()
            if word in _SENT_COMMAND:
                last = _SENT_COMMAND[word]
        elif line.startswith("<<< ") and line[4:5] in ("4", "5"):
            if failed is None:
                failed = last
            elif failed is Stage.data and _NO_RECIPIENTS.search(line.lower()) is not None:
                return Stage.rcpt
    return failed


#: Enhanced status codes that only name an area (RFC 3463's "other or
#: undefined" details), plus x.7.1, which every filter uses for every reason.
# The host that refused, as a report's text names it (section 1, "remote MTA"):
#   Exim       "host mx.example.jp [192.0.2.153]: 550 ..." (or the line before "SMTP error")
#   Postfix    "host mx.example.jp[192.0.2.1] said: 550 ...", "refused to talk to me",
#              "connect to mx.example.jp[192.0.2.1]:25: Connection refused"
#   Sendmail   "... while talking to mx.example.jp.:"
#   Gmail      "rejected by the server for the recipient domain x by mx.example.jp. [192.0.2.25].",
#              "[(0) mx.example.jp. [192.0.2.135]:25: socket error]"
#   GMX        "SMTP error from remote server for TEXT command, host: mx.example.fr (192.0.2.1)"
#   MailFoundry "Server mx.example.org[192.0.2.222] failed with: 550 ..."
# Each starts with a literal and reads a bounded host name: linear in the text.
_HOST = r"([a-z0-9][a-z0-9-]{0,62}(?:\.[a-z0-9-]{1,63}){1,10})\.?"
_IP = r"\[(?:ipv6:)?[0-9a-f.:]{2,45}\]"
# Each alternative starts with its literal and checks the word boundary just after
# it ("h(?<!\wh)ost" is "\bhost"): an alternation of literals gives the regex
# engine a set of first characters to skip to, ten times faster than trying every
# alternative at every position ("\bhost|..." gives it none).
_REMOTE_MTA = rxcache.compile(
    r"h(?<!\wh)ost " + _HOST + r" ?" + _IP + r"|"
    r"s(?<!\ws)erver " + _HOST + r" ?" + _IP + r"|"
    r"h(?<!\wh)ost: " + _HOST + r" \(|"
    r"\(0\) " + _HOST + r" ?" + _IP + r"|"
    r"c(?<!\wc)onnect to " + _HOST + _IP + r"|"
    r"w(?<!\ww)hile talking to " + _HOST + r":|"
    r"f(?<!\wf)or the recipient domain \S{1,253} by " + _HOST + r" " + _IP)


def find_remote_mta(text: str) -> str | None:
    """The remote MTA a report's text names, lower-cased, or None.

    Args:
        text: a recipient's block or the notification (read up to
            :data:`STAGE_TEXT_LIMIT` characters).

    Returns:
        The host name ("mx.example.jp") of the first host the text names as
        the one it talked to.
    """
    # (white space collapsed: a report wraps its lines anywhere)
    m = _REMOTE_MTA.search(" ".join(text[:STAGE_TEXT_LIMIT].lower().split()))
    if m is None:
        return None
    return next(g for g in m.groups() if g)


_CATCH_ALL_DETAIL = {"0"}


def is_catch_all(status: str | None) -> bool:
    """Whether an enhanced status code names an area rather than one cause.

    Args:
        status: "5.1.1" or None.

    Returns:
        True for x.Y.0, x.7.1 and for no status at all.
    """
    if not status:
        return True
    parts = status.split(".")
    if len(parts) != 3:
        return True
    return parts[2] in _CATCH_ALL_DETAIL or parts[1:] == ["7", "1"]


_set = object.__setattr__   # (the frozen record's __init__)


@dataclass(init=False, repr=False, eq=False)
class Evidence(Record):
    """What a returned message (or our own SMTP session) says about one recipient."""

    text: str = ""
    code: str | None = None
    status: str | None = None
    stage: Stage | None = None
    stage_source: str | None = None       # "text", "notification", "session"
    diagnostic_type: str | None = None    # "smtp", "x-unix", ... (lower-case)
    action: str = "failed"
    remote_mta: str | None = None
    family: str | None = None

    def __init__(self, text: str = "",
                 code: str | None = None,
                 status: str | None = None,
                 stage: Stage | None = None,
                 stage_source: str | None = None,
                 diagnostic_type: str | None = None,
                 action: str = "failed",
                 remote_mta: str | None = None,
                 family: str | None = None) -> None:
        _set(self, "text", text)
        _set(self, "code", code)
        _set(self, "status", status)
        _set(self, "stage", stage)
        _set(self, "stage_source", stage_source)
        _set(self, "diagnostic_type", diagnostic_type)
        _set(self, "action", action)
        _set(self, "remote_mta", remote_mta)
        _set(self, "family", family)

    def to_json(self) -> dict[str, Any]:
        """The evidence as stored with the event and shown by ``--explain``."""
        return {
            "stage": self.stage.value if self.stage else None,
            "stage_source": self.stage_source,
            "code": self.code,
            "status": self.status,
            "status_kind": None if not self.status else
            ("catch-all" if is_catch_all(self.status) else "specific"),
            "diagnostic_type": self.diagnostic_type,
            "action": self.action,
            "remote_mta": self.remote_mta,
            "family": self.family,
        }
