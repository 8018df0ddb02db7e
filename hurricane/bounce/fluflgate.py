"""Whether flufl.bounce could name any recipient of a message, decided without importing it.

flufl.bounce is the analyzer's very last reading (analyze._flufl), reached by a
bounce naming no recipient we could read; importing it costs ~130 M instructions
(~35 ms: its seventeen detectors compile ~70 regular expressions, and it brings
the stdlib's email parser), as much as fifty analyses. :func:`cannot_find` is a
*necessary-condition* test: it says True only when none of flufl.bounce 6.0's
detectors (``flufl.bounce._scan._DETECTORS``) can return an address for the
message, so skipping the import then changes no answer. Each detector returns
something only after a line of the text it reads matched its trigger (its
"start" expression, a required header or content type), and every trigger
contains a fixed phrase listed below; when none of them is in the message, no
detector can return anything.

The test reads the raw bytes, and holds as long as what the detectors read
shows a phrase only where the bytes do:

- A part's text is read as it was sent, but for a non-ASCII payload, which the
  stdlib first decodes with the part's declared charset (``get_payload``). That
  keeps every ASCII byte in place when the charset is UTF-8 or one of the
  single-byte ASCII-compatible ones (a non-ASCII byte becomes a non-ASCII
  character, U+FFFD at worst), except for four characters that a detector's
  case-blind expression takes for an ASCII letter (U+0130 and U+0131 for "i",
  U+017F for "s", U+212A for "k"). Any other charset (UTF-16, UTF-7, Shift_JIS,
  ISO-2022-JP, Turkish ISO-8859-9...) or one of those four characters answers False.
  The declared charset is read as get_param reads it (whatever str.strip()
  takes off the name may stand before its "="; a non-ASCII byte of the name is
  U+FFFD), and every "charset" anywhere counts.
- Five detectors (AOL, Microsoft, Netscape, Postfix, Yale) read a part's payload
  with its transfer encoding undone: quoted-printable is undone in place over the
  whole body (binascii.a2b_qp, as the stdlib does; on LF-only bytes it is local
  and starts afresh at each line, so each part's decoded text is a substring of
  the whole's) and their phrases are looked for there too. A line of a part's
  decoded text starts where a line of the bytes does, but not always where a
  line of the whole's decoded text does (a soft line break before the part's
  start joins them): Postfix's trigger, read at a line's start, is looked for
  at each place a line of the bytes starts (_POSTFIX_QP). A base64 or
  uuencoded payload cannot be undone that way: answers False.
- The senders some detectors require are read as they read them: Yahoo's
  through parseaddr, which drops comments ("mailer(x)-daemon@yahoo.com").
- The str expressions' white space (``\\s``, str.strip()) is Unicode's:
  \\x1c-\\x1f are white space to them, not to a bytes expression.

- A message with a CR byte is not judged (False). The stdlib's parser ends a
  line at a CR as at an LF, so a part may start right after a CR, where no
  line of ours starts (Postfix's trigger is read at a line's start), a
  parameter's name may end in a CR (``charset\\r =utf-16``), and
  quoted-printable's ``=\\r`` (binascii.a2b_qp) drops everything up to the
  next LF, across parts: decoding the whole body at once could drop a
  trigger that one part's decoding keeps. The analyzer gives LF-only bytes
  (mime.normalise), so this costs it nothing.

Otherwise it answers False and flufl.bounce runs as before.
tests/bounce/test_fluflgate.py checks the phrases against the installed
flufl.bounce's own patterns, and messages built to hit each detector.
"""

from __future__ import annotations

import binascii
import codecs
import re

from hurricane.bounce import rxcache

__all__ = ["cannot_find", "PHRASES", "HEADER_PHRASES", "DETECTORS"]

#: The detectors, in flufl.bounce 6.0's order, whose triggers are covered here.
DETECTORS = ("DSN", "Exim", "Sina", "Yahoo", "Yale", "SMTP32", "Postfix", "Qmail", "GroupWise",
             "Microsoft", "Caiwireless", "Exchange", "Netscape", "AOL", "SimpleMatch",
             "SimpleWarning", "LLNL")

#: A phrase (lower case) in the message's top header block whenever the
#: detector's trigger (a header of the message) is there.
HEADER_PHRASES: tuple[bytes, ...] = (
    b"x-failed-recipients",             # Exim: the header
    b"mailer-daemon@sina.com",          # Sina: the From address, compared whole
    b"<smtp32 v",                       # SMTP32: X-Mailer starts with it
)

#: A phrase (lower case) in the message's body whenever the detector's trigger
#: (a line of a part's text) matched: one is enough for the detector to run its course.
PHRASES: tuple[bytes, ...] = (
    b"message not delivered to the following",    # Yale (and SimpleMatch's uci.edu)
    # Qmail: a line starting with one of its introductions
    b"we're sorry. there's a problem", b"check your send e-mail address.",
    b"hi. the mta program at", b"hi. this is the", b"this is the mail delivery agent at",
    b"unfortunately, your mail was not delivered", b"your mail message to the following",
    b"transcript of session follows",   # Microsoft
    b"the following recipients did not receive this message:",  # Caiwireless
    b"did not reach the following recipient",       # Exchange, and SimpleMatch's gomaps
    b"this message was undeliverable due to the following reason:",  # Netscape
    b"mail to the following recipients could not be delivered",     # AOL
    # SimpleMatch: its start expressions
    b"here is your list of failed recipients", b"the following addresses had",
    b"this message was created automatically by mail delivery",
    b"message from interscan e-mail viruswall nt", b"failed addresses follow:",
    b"this is the machine generated message from mail service",
    b"the following addresses did not receive a copy of your message:",
    b"intended recipient:", b"undeliverable address:", b"user's mailbox is full:",
    b"the email below could not be delivered to the following user:",
    b"delivery to the following recipient failed",
    b"a message that you sent could not be delivered",
    b"very to the following recipients ",          # Del(i|e)very to the following ...
    b"unable to deliver message to", b"sorry, unable to deliver your message to",
    b"a message could not be delivered to:", b"invalid final delivery userid:",
    b"------ failed recipients ------", b"--> error description:",
    b"your message could not be delivered", b"your message has encountered delivery problems",
    b"this is the deliver program at", b"this is the email server at", b"- no such user here",
    b"the following address failed:", b"the following recipient(s) could not be reached",
    b"could not deliver message to the following recipient",
    b"was automatically rejected",      # Dovecot's "^Your message": its address line says it
    b"a message that you sent was rejected", b"message could not be delivered to some recipients",
    b"wasn't able to deliver the following message",
    b"this is a delivery failure notification message", b"delivery has failed",
    # SimpleWarning
    b"not yet been delivered", b"your message to:", b"your message with subject:",
    b"delivery to the following recipient has been delayed", b"this is an advisory-only email",
)

#: Postfix: a part described as "notification" and, in it, a line that starts
#: with what one of its two expressions (pcre, rcre) matches at a line's start.
_POSTFIX = rxcache.compile(rb"(?m)^(?:[ \t]*the\s*(?:bns\s*)?(?:postfix|keftamail|smtp_gateway)"
                           rb"|failure reason:)")


def _nul_spread(word: bytes) -> bytes:
    """``word`` as a pattern that lets NULs in between its characters."""
    return rb"\x00*".join(re.escape(word[i:i + 1]) for i in range(len(word)))


#: Postfix's trigger in quoted-printable text decoded whole with a NUL put after
#: each LF of the bytes first, so a NUL (or the start) marks each place a line
#: of the bytes starts (a part's text may start at any): past the blanks there,
#: the trigger, NULs anywhere in it (soft line breaks). A part's line may start
#: where the whole's decoding has no line start: after a header line ending in
#: "=" (a part with no blank line before its body), whose LF the whole's
#: decoding takes for a soft line break. Linear: a run of blanks and NULs is
#: read from its first character only (the look-behind).
_POSTFIX_QP = rxcache.compile(
    rb"(?<![ \t\x00])(?:\A|[ \t]*+\x00)[ \t\x00]*+(?:" + _nul_spread(b"the") + rb"[\s\x00]*+(?:"
    + _nul_spread(b"bns") + rb"[\s\x00]*+)?(?:"
    + b"|".join(_nul_spread(w) for w in (b"postfix", b"keftamail", b"smtp_gateway"))
    + rb")|" + _nul_spread(b"failure reason:") + rb")")

_YAHOO_SORRY = b"sorry, we were unable to deliver your message to the following address"

#: A From field of the header block (its folded lines too) with a comment in it.
_FROM_COMMENT = rxcache.compile(rb"(?m)^from:[^\n(]*+(?:\n[ \t][^\n(]*+)*+\(")

#: Transfer encodings that cannot be undone in place over the whole body
#: (email.message.Message.get_payload(decode=True)).
_ENCODINGS = (b"base64", b"uue")

#: A charset parameter (compat32's _parseparam: the value runs to ";", or to the
#: line's end here: a value continued on the next line is not judged), or an
#: RFC 2231 one ("charset*"), which get_param returns as a tuple. Between the
#: name and "=" or "*", whatever str.strip() takes off the name: ASCII white
#: space, \x1c-\x1f among it, and any number of folded lines
#: ("charset\x0c=utf-16", "charset\n \n =utf-16" are UTF-16 to get_param).
_CHARSET = rxcache.compile(rb"charset[\s\x1c-\x1f]*(\*|=([^;\n]*))")

#: Distinct charset names looked up at most: each unknown name costs
#: codecs.lookup an import attempt (~14 us, and an entry in encodings' cache);
#: a message naming more is given to flufl.bounce.
_MAX_CHARSETS = 16

#: Codecs (codecs.lookup(...).name) that leave every ASCII byte in place: a
#: non-ASCII byte never takes an ASCII one with it.
_IN_PLACE = frozenset(["ascii", "utf-8", "latin-1", "koi8-r", "koi8-u"]
                      + [f"iso8859-{n}" for n in (1, 2, 4, 5, 6, 7, 8, 10, 11, 13, 14, 15, 16)]
                      + [f"cp{n}" for n in (1250, 1251, 1252, 1253, 1255, 1256, 1257, 1258)])

#: The non-ASCII characters that match an ASCII letter in a case-blind str
#: expression, as UTF-8: İ ı ſ K (the charsets above give none of them but UTF-8;
#: ISO-8859-3 and -9 and cp1254 do, and are left out of _IN_PLACE).
_FOLDS = tuple(c.encode() for c in "\u0130\u0131\u017f\u212a")


#: email.feedparser's header line (its headerRE): the message's header block is
#: the lines that match it, from the first; the body starts at the first that does not.
_FEED_HEADER = rxcache.compile(rb"From |[\041-\071\073-\176]*:|[\t ]")


def _body_start(raw: bytes) -> int:
    """Where the stdlib parser starts the body of ``raw`` (line ends LF only):
    no detector reads a line before it as text. (Given the lowered bytes, it
    ends the header block at a line starting "From ", which the stdlib takes
    for a header, but for the body's first line when it is the block's last.)"""
    pos, n = 0, len(raw)
    while pos < n:
        nl = raw.find(b"\n", pos)
        end = n if nl < 0 else nl + 1
        if _FEED_HEADER.match(raw, pos, end) is None:
            return pos
        pos = end
    return n


def cannot_find(raw: bytes) -> bool:
    """True when no detector of flufl.bounce can return an address for ``raw``.

    Args:
        raw: the message, line ends normalised to LF (mime.normalise), as
            flufl.bounce is given it.

    Linear in the size of ``raw``: each expression here reads a run of bytes from
    one start only (tests/bounce/test_bounce_hostile.py audits them), LLNL's is
    read by :func:`_llnl_matches`, and at most _MAX_CHARSETS charset names are
    looked up.
    """
    if b"\r" in raw:
        return False    # (see the module's docstring: CR ends a line to the stdlib only)
    low = raw.lower()
    if any(e in low for e in _ENCODINGS) or any(p in low for p in HEADER_PHRASES):
        return False
    ascii_only = raw.isascii()
    if not ascii_only and not _decoded_in_place(raw, low):
        return False
    start = _body_start(low)
    body = low[start:]
    if any(p in body for p in PHRASES):
        return False
    notification = b"notification" in low
    if notification and _POSTFIX.search(body) is not None:
        return False
    if b"quoted-printable" in low:
        text = raw[start:]
        decoded = binascii.a2b_qp(text).lower()
        if any(p in decoded for p in PHRASES):
            return False
        if notification:
            marked = binascii.a2b_qp(text.replace(b"\x00", b"\x01").replace(b"\n", b"\n\x00"))
            if _POSTFIX_QP.search(marked.lower()) is not None:
                return False
    # DSN: a message/delivery-status part, a failed or delayed action, a recipient field
    if (b"message/delivery-status" in low and b"action" in body
            and (b"original-recipient" in body or b"final-recipient" in body)):
        return False
    # Yahoo: From mailer-daemon@yahoo... (to parseaddr, which drops comments:
    # "mailer(x)-daemon@yahoo.com" is one), and "message from yahoo.X" or its apology
    # (the header block as the stdlib reads it: _body_start(low) ends it early at
    # a "From " line, which may be the unix From line before the headers)
    if ((b"yahoo." in body or _YAHOO_SORRY in body)
            and (b"mailer-daemon" in low or _FROM_COMMENT.search(low, 0, _body_start(raw)))):
        return False
    # GroupWise: an X-Mailer whose value starts with nov, ntm or int (any case)
    if rxcache.compile(rb"x-mailer:[ \t]*(?:nov|ntm|int)").search(low) is not None:
        return False
    # SimpleMatch's hartford.com: a line that is "Your message" and blanks, as its
    # str expression reads them (\s: \x1c-\x1f too; a non-ASCII byte may be part
    # of a white space character once decoded)
    if rxcache.compile(rb"your message[\s\x1c-\x1f\x80-\xff]*(?:\n|\Z)").search(body) is not None:
        return False
    # LLNL: its own expression, read line by line as it reads the text
    if ascii_only:
        return not any(_llnl_matches(line) for line in body.decode("ascii").split("\n"))
    return not any(_llnl_matches(line) if line.isascii() else _llnl_may_match(line)
                   for line in body.decode("latin-1").split("\n"))


def _decoded_in_place(raw: bytes, low: bytes) -> bool:
    """Whether each part's text, decoded with its declared charset, keeps every
    ASCII byte of ``raw`` where it was and adds no character a case-blind
    expression reads as an ASCII letter."""
    if any(f in raw for f in _FOLDS):
        return False
    values: set[bytes] = set()
    for m in _CHARSET.finditer(low):
        end = m.end()
        continued = low[end:end + 1] == b"\n" and low[end + 1:end + 2] in (b" ", b"\t")
        if m.group(1) == b"*" or continued:
            return False
        value = m.group(2).strip()
        if value[:1] == b'"' and value[-1:] == b'"' and len(value) > 1:
            value = value[1:-1]
        if b'"' in value or b"\\" in value:
            return False
        values.add(value)
        if len(values) > _MAX_CHARSETS:
            return False
    for value in values:
        try:
            # (a header with a non-ASCII byte is an email.header.Header, whose str()
            # get_param reads has U+FFFD for each: the name codecs.lookup is given)
            name = codecs.lookup(value.decode("ascii", "replace")).name
        except LookupError:
            continue    # (get_payload falls back to ASCII, each byte in place)
        except ValueError:
            return False    # (a NUL in the name: get_payload raises, as flufl.bounce will)
        if name not in _IN_PLACE:
            return False
    return True


#: LLNL's expression (flufl.bounce._detectors.llnl), searched in each line of the text.
LLNL = r",\s*(?P<addr>\S+@[^,]+),"


def _llnl_matches(line: str) -> bool:
    """Whether LLNL's expression matches in ``line``, found in time linear in it.

    The expression itself is quadratic: from one comma, ``\\S+`` may end at each "@"
    of a run and ``[^,]+`` then reads to the end of the line (a 30 KB line of "a@"
    after a comma cost 1.4 s). It matches when, after a comma and the white space
    after it (``\\s*``), a run of non-space characters (``\\S+``) holds an "@" past
    its first character that is followed by a character other than a comma, itself
    before a later comma (``[^,]+,``). The earlier that run starts the better, so
    each run is read once, from the first place a comma lets it start.
    """
    last = line.rfind(",")
    head = line[:last] if last > 0 else ""     # (an "@" must come before the last comma
    n = len(head)                               # but one, the last comma closes the match)
    after_comma = False
    for run in _RUN.finditer(head):
        start, end = run.span()
        if after_comma:
            p = start
        else:
            c = head.find(",", start, end - 1)
            p = c + 1 if c >= 0 else -1
        if p >= 0:
            q = head.find("@", p + 1, end)
            while q >= 0:
                if q + 1 < n and head[q + 1] != ",":
                    return True
                q = head.find("@", q + 1, end)
        after_comma = head[end - 1] == ","
    return False


#: A run of non-space characters, as ``\S`` reads them in a str.
_RUN = rxcache.compile(r"\S+")


#: White space to a str expression's ``\s``, among ASCII characters.
_ASCII_SPACE = frozenset(" \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f")


def _llnl_may_match(line: str) -> bool:
    """Whether LLNL's expression could match ``line`` once its non-ASCII characters
    (here one per byte, read as latin-1) are decoded: each may turn out white space
    or not, so each is taken as both. True whenever the expression matches some
    decoding of the line; one pass, two states.

    The states after a prefix: ``w``, a comma then only white space (``,\\s*``);
    ``n``, a comma, white space, then at least one non-space character (``,\\s*\\S+``).
    An "@" in state ``n`` matches when a character other than a comma follows it
    and a comma comes later (``@[^,]+,``).
    """
    last = line.rfind(",")
    w = n = False
    for i, c in enumerate(line):
        if c == "@" and n and i + 1 < last and line[i + 1] != ",":
            return True
        if c >= "\x80":
            n = w or n
        elif c in _ASCII_SPACE:
            n = False
        else:
            n = w or n
            w = c == ","
            continue
        # (white space keeps a comma's w; a non-ASCII character may be white space too)
    return False
