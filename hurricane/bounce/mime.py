"""A small, bounded, non-recursive MIME reader for returned messages.

The stdlib ``email`` parser costs about half a millisecond per bounce and
recurses once per nesting level; this reader only splits what the analyzer
needs (headers, content types, bodies, nested messages), walks the tree with
an explicit stack, and stops at the depth, part and time limits it is given.

Everything in a returned message comes from whoever sent it, so the work and
the memory of the reader are bounded before it starts (DESIGN.md, habit 24):

- **No copies of bodies.** A part is an offset range into the message's one
  buffer; a multipart is split by searching that buffer between offsets, so
  50 nested multiparts of a 5 MiB message hold the message once, not 50
  times. Only transfer-decoded bodies (base64, quoted-printable) are new
  buffers, and each is cut to ``max_part_bytes`` of input first.
- **Decoded message parts are budgeted**: the bodies of encoded
  ``message/*`` parts decoded to read the message inside count against
  ``decode_factor`` times the message's size. Quoted-printable decoding of
  plain text gives back the same bytes, so without this each of 49 nested
  levels held its own copy of everything below it (5 MB -> 275 MiB, issue
  23's second review); past the budget a part is left undecoded and ``parse``
  reports ``over-budget``.
- **Headers are cut before they are parsed or decoded**: a header block to
  ``max_header_bytes``, each value to ``max_header_value`` characters, the
  fields of the whole tree to ``max_headers``; RFC 2047 decoding (the
  stdlib's, which is quadratic in the number of encoded words) only ever
  sees a cut value.
- **Boundary searches are budgeted**: every multipart body searched costs its
  length, in all at most ``scan_factor`` times the message (plus 8 MiB), so
  deep nesting cannot make the reader read the same bytes 50 times; lines
  that start like a delimiter but are not one are counted too
  (``max_false_delimiters``). When a budget runs out the multipart is left
  unsplit (its body stays readable as text) and ``parse`` reports
  ``over-budget``.
- Every pattern here is linear: no nested or overlapping quantifiers over
  unbounded text (see each pattern's comment).
"""

from __future__ import annotations

import binascii
import codecs
import re
import time
from collections.abc import Iterator

from hurricane.bounce import rxcache

__all__ = ["Part", "LimitExceeded", "parse", "parse_headers", "decode_words", "to_text",
           "normalise", "split_head", "MAX_HEADER_BYTES", "MAX_HEADER_VALUE", "MAX_HEADERS",
           "MAX_PART_BYTES"]

#: Bytes of one header block that are parsed (the rest of the block is skipped).
MAX_HEADER_BYTES = 64 * 1024
#: Characters of one header value that are kept, before any decoding.
MAX_HEADER_VALUE = 8 * 1024
#: Header fields parsed in the whole tree of one message.
MAX_HEADERS = 20_000
#: Bytes of one part's body that are transfer- and charset-decoded at most.
MAX_PART_BYTES = 1024 * 1024
#: Multipart bodies searched for boundaries: this many times the message, plus
#: _SCAN_FLOOR (so that a small message can nest to the depth limit).
SCAN_FACTOR = 4
_SCAN_FLOOR = 8 * 1024 * 1024
#: Lines that start like a delimiter ("--" and the boundary) but are not one.
MAX_FALSE_DELIMITERS = 10_000
#: Bytes of encoded message/* bodies decoded to parse the message inside, in
#: all: this many times the message. Decoding never grows a body, so one
#: encoded original of any size always fits, and a second nested inside it.
DECODE_FACTOR = 2


class LimitExceeded(Exception):
    """Raised inside the reader when a limit is reached; carries the error word."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


# Linear: a literal newline, then one run of blanks.
_UNFOLD = rxcache.compile(r"\n[ \t]+")
# Does a line start like a header field? Used with .match on the first line
# of a block, cut to 200 bytes. The name class excludes ":" and the blanks, so
# the runs cannot trade characters. (The old str pattern went on with
# "[ \t]*(.*)$", which the rest of a line always matches: the same answer,
# without decoding the line first.)
_HEADER_NAME = rxcache.compile(rb"[!-9;-~]+[ \t]*:")
# _HEADER_LINE for every line of a block at once: run on "\n" + block, the
# leading newline is a literal prefix that the regex engine skips to quickly.
# Each attempt reads at most one line (no class contains "\n").
_HEADER_LINES = rxcache.compile(r"\n([!-9;-~]+)[ \t]*:[ \t]*+(.*)")
# Anchored (.match) on a header value cut to MAX_HEADER_VALUE; \s and the
# token class are disjoint.
_CT = rxcache.compile(r"^\s*([a-z0-9!#$&.+^_`{|}~-]+)\s*/\s*([a-z0-9!#$&.+^_`{|}~-]+)", re.I)
# One attempt per ";"; a quoted string's two alternatives start with disjoint
# characters, so a string that never closes costs one scan to the end of the
# (cut) value, and the match then falls back to the bare value.
_PARAM = rxcache.compile(r';\s*([a-z0-9*_.-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;\s]*))', re.I)
# Searched in a part's first 64 KiB only; the boundary run is bounded (200)
# and the blank run cannot match what the boundary class matches.
_GUESS_BOUNDARY = rxcache.compile(rb"(?m)^--([0-9A-Za-z'()+_,./:=?-]{8,200})[ \t]*$")
# What follows "--boundary" on a delimiter line that does not close: blanks
# and dashes to the end of the line (possessive: no backtracking).
_DELIMITER_TAIL = rxcache.compile(rb"[ \t-]*+(\n|\Z)")
# Leading line breaks (always matches).
_NEWLINES = rxcache.compile(rb"\n*")
# Any byte that bytes.strip() would not remove: a body that is not blank.
_NOT_BLANK = rxcache.compile(rb"[^ \t\n\r\x0b\x0c]")
# Bytes outside the base64 alphabet (with and without the padding "="),
# deleted with bytes.translate: one C pass, no regex over the body.
_BASE64_JUNK = bytes(set(range(256)) - set(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="))
_BASE64_JUNK_AND_PAD = _BASE64_JUNK + b"="


def _decode_bytes(b: bytes) -> str:
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return b.decode("latin-1")


def parse_headers(text: str, max_value: int = MAX_HEADER_VALUE,
                  max_fields: int | None = None) -> list[tuple[str, str]]:
    """Split an (already unfoldable) header block into (lower name, value) pairs.

    Args:
        text: the header block.
        max_value: characters kept of each value (the rest is cut off
            before anyone decodes it).
        max_fields: fields kept at most (None: all).

    Returns:
        The fields in order, names lower-cased, values stripped and cut.
    """
    if "\n " in text or "\n\t" in text:     # only then can _UNFOLD match
        text = _UNFOLD.sub(" ", text)
    # findall (tuples) rather than finditer (match objects): the block is cut
    # already, and this is the reader's hottest line on ordinary mail
    found = _HEADER_LINES.findall("\n" + text)
    if max_fields is not None and len(found) > max_fields:
        del found[max(0, max_fields):]
    return [(k.lower(), v.strip()[:max_value]) for k, v in found]


def decode_words(value: str, max_value: int = MAX_HEADER_VALUE) -> str:
    """Decode RFC 2047 encoded words, tolerating bad charsets and garbage.

    The value is cut to ``max_value`` characters first: the stdlib's decoder
    takes time quadratic in the number of encoded words.
    """
    if "=?" not in value:
        return value
    value = value[:max_value]
    try:
        chunks = []
        for data, charset in decode_header(value):
            if isinstance(data, bytes):
                chunks.append(to_text(data, charset or "us-ascii"))
            else:
                chunks.append(data)
        return "".join(chunks)
    except Exception:
        return value


# email.header.decode_header's, for str values (CPython 3.11), written out here:
# importing email.header (email.quoprimime, email.base64mime, email.charset,
# string, base64, struct...) was ~15 M instructions of every analyze's start-up.
_ENCODED_WORD = rxcache.compile(r'''
  =\?                   # literal =?
  (?P<charset>[^?]*?)   # non-greedy up to the next ? is the charset
  \?                    # literal ?
  (?P<encoding>[qQbB])  # either a "q" or a "b", case insensitive
  \?                    # literal ?
  (?P<encoded>.*?)      # non-greedy up to the next ?= is the encoded string
  \?=                   # literal ?=
  ''', re.VERBOSE | re.MULTILINE)
_Q_ESCAPE = rxcache.compile(r"=[a-fA-F0-9]{2}", re.ASCII)


def _q_unquote(m: re.Match[str]) -> str:
    return chr(int(m.group(0)[1:3], 16))


def decode_header(header: str) -> list[tuple[str | bytes, str | None]]:
    """``email.header.decode_header(header)`` for a str: (bytes, charset) pairs, one per run
    of words in one charset (None for the unencoded runs); [(header, None)] when
    there is no encoded word. Raises binascii.Error on bad base64, as it does
    (there, as a HeaderParseError)."""
    if not _ENCODED_WORD.search(header):
        return [(header, None)]
    words: list[tuple[str, str | None, str | None]] = []
    for line in header.splitlines():
        parts = _ENCODED_WORD.split(line)
        first = True
        while parts:
            unencoded = parts.pop(0)
            if first:
                unencoded = unencoded.lstrip()
                first = False
            if unencoded:
                words.append((unencoded, None, None))
            if parts:
                charset = parts.pop(0).lower()
                encoding = parts.pop(0).lower()
                encoded = parts.pop(0)
                words.append((encoded, encoding, charset))
    # the white space between two encoded words goes
    droplist = []
    for n, w in enumerate(words):
        if n > 1 and w[1] and words[n - 2][1] and words[n - 1][0].isspace():
            droplist.append(n - 1)
    for d in reversed(droplist):
        del words[d]
    decoded_words: list[tuple[str | bytes, str | None]] = []
    for encoded_string, encoding, charset in words:
        if encoding is None:
            decoded_words.append((encoded_string, charset))
        elif encoding == "q":
            decoded_words.append((_Q_ESCAPE.sub(_q_unquote, encoded_string.replace("_", " ")),
                                  charset))
        else:   # "b"
            paderr = len(encoded_string) % 4   # Postel's law: add missing padding
            if paderr:
                encoded_string += "==="[:4 - paderr]
            decoded_words.append((binascii.a2b_base64(
                encoded_string.encode("raw-unicode-escape")) if encoded_string else b"",
                charset))
    # runs of words in one charset joined (the unencoded ones with a space)
    collapsed: list[tuple[str | bytes, str | None]] = []
    last_word: bytes | None = None
    last_charset: str | None = None
    for dword, dcharset in decoded_words:
        word = bytes(dword, "raw-unicode-escape") if isinstance(dword, str) else dword
        if last_word is None:
            last_word = word
            last_charset = dcharset
        elif dcharset != last_charset:
            collapsed.append((last_word, last_charset))
            last_word = word
            last_charset = dcharset
        elif last_charset is None:
            last_word += b" " + word
        else:
            last_word += word
    collapsed.append((last_word or b"", last_charset))
    return collapsed


_CHARSET_ALIASES = {"utf8": "utf-8", "x-unknown": "latin-1", "unknown-8bit": "latin-1",
                    "ks_c_5601-1987": "cp949", "x-sjis": "shift_jis", "shift-jis": "shift_jis"}
#: Text codecs written in Python whose decoding is slow or worse than linear on
#: hostile bytes (punycode's is quadratic); a part that names one is read as
#: UTF-8 or Latin-1 instead.
_SLOW_CODECS = frozenset({"punycode", "idna"})


def to_text(data: bytes, charset: str | None) -> str:
    """Decode body bytes with a declared charset, falling back to UTF-8/Latin-1."""
    cs = (charset or "").strip().strip('"').lower()
    cs = _CHARSET_ALIASES.get(cs, cs)
    if cs and cs not in ("us-ascii", "ascii", "utf-8"):
        try:
            if codecs.lookup(cs).name not in _SLOW_CODECS:
                return data.decode(cs, "replace")
        except (LookupError, ValueError):
            pass
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        if cs in ("", "us-ascii", "ascii"):
            # undeclared 8-bit: often ISO-2022-JP already (7-bit) or Shift_JIS
            return data.decode("latin-1")
        return data.decode("utf-8", "replace")


class Part:
    """One MIME entity: headers, content type, body and child parts.

    The body is the range ``start:end`` of ``buf``, a buffer that the part
    shares with its parent and siblings (the message, or the decoded body of
    a transfer-encoded message part): building a part copies nothing.
    """

    __slots__ = ("headers", "maintype", "subtype", "params", "children", "depth",
                 "_buf", "_start", "_end", "_max_body", "_text", "_hmap")

    def __init__(self, headers: list[tuple[str, str]], buf: bytes, depth: int,
                 start: int = 0, end: int | None = None, *,
                 max_body: int = MAX_PART_BYTES) -> None:
        """Args:
            headers: (lower name, value) pairs.
            buf: the buffer that holds the body.
            depth: nesting level (the root is 0).
            start: where the body starts in ``buf``.
            end: where it ends (None: the end of ``buf``).
            max_body: bytes of the body that :meth:`payload` decodes at most.
        """
        self.headers = headers
        self._buf = buf
        self._start = start
        self._end = len(buf) if end is None else end
        self._max_body = max_body
        self.depth = depth
        self.children: list[Part] = []
        self._text: str | None = None
        self._hmap: dict[str, str] | None = None
        ct = self.get("content-type")
        self.params: dict[str, str] = {}
        m = _CT.match(ct) if ct else None
        if m is not None:
            self.maintype = m.group(1).lower()
            self.subtype = m.group(2).lower()
            for pm in _PARAM.finditer(ct, m.end()):
                self.params[pm.group(1).lower()] = (
                    pm.group(2) if pm.group(2) is not None else pm.group(3))
        else:
            self.maintype, self.subtype = "text", "plain"

    @property
    def content_type(self) -> str:
        return self.maintype + "/" + self.subtype

    @property
    def raw_body(self) -> bytes:
        """The body as it is in the message (a copy unless it is the whole buffer)."""
        if self._start == 0 and self._end == len(self._buf):
            return self._buf
        return self._buf[self._start:self._end]

    @property
    def body_size(self) -> int:
        """The length of the raw body in bytes."""
        return self._end - self._start

    def body_is_blank(self) -> bool:
        """Whether the raw body holds only white space (``not raw_body.strip()``)."""
        return _NOT_BLANK.search(self._buf, self._start, self._end) is None

    def with_type(self, content_type: str) -> Part:
        """A part of another content type over the same body (no copy), its
        content-transfer-encoding kept."""
        headers = [("content-type", content_type)]
        cte = self.get("content-transfer-encoding")
        if cte:
            headers.append(("content-transfer-encoding", cte))
        return Part(headers, self._buf, self.depth, self._start, self._end,
                    max_body=self._max_body)

    def get(self, name: str, default: str = "") -> str:
        """The first value of a header (lower-case name), or default."""
        hm = self._hmap
        if hm is None:
            hm = self._hmap = dict(reversed(self.headers))   # the first value of each name wins
        return hm.get(name, default)

    def get_all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name]

    def payload(self) -> bytes:
        """The body with its content-transfer-encoding undone.

        At most ``max_body`` bytes of the raw body are read: a part's
        decoded size, and the work of decoding it, are bounded whatever the
        message's size.
        """
        cte = self.get("content-transfer-encoding").lower()
        body = self._buf[self._start:min(self._end, self._start + self._max_body)]
        if "base64" in cte:
            try:
                return binascii.a2b_base64(body.translate(None, _BASE64_JUNK) + b"==")
            except (binascii.Error, ValueError):
                try:
                    clean = body.translate(None, _BASE64_JUNK_AND_PAD)
                    clean = clean[: len(clean) // 4 * 4]
                    return binascii.a2b_base64(clean)
                except (binascii.Error, ValueError):
                    return body
        if "quoted-printable" in cte:
            if b"= " in body or b"=\t" in body:
                # RFC 2045 6.7 (3): blanks at a line's end were added in transport and
                # are deleted, so that "=" before them is still a soft line break
                body = b"\n".join(line.rstrip(b" \t") for line in body.split(b"\n"))
            try:
                return binascii.a2b_qp(body)
            except (binascii.Error, ValueError):
                return body
        return body

    def text(self) -> str:
        """The decoded body as text (cached)."""
        if self._text is None:
            self._text = to_text(self.payload(), self.params.get("charset")).replace("\r", "")
        return self._text

    def walk(self) -> Iterator[Part]:
        stack = [self]
        while stack:
            p = stack.pop()
            yield p
            stack.extend(reversed(p.children))


def split_head(data: bytes) -> tuple[bytes, bytes]:
    """Split bytes into the header block and the body at the first empty line."""
    if data.startswith(b"\n"):
        return b"", data[1:]
    i = data.find(b"\n\n")
    if i < 0:
        # no body; but only when the whole thing looks like headers
        return data, b""
    return data[:i], data[i + 2:]


class _Budget:
    """What is left of one parse's limits (shared by the whole tree)."""

    __slots__ = ("parts", "headers", "scan", "false_delimiters", "max_header_bytes",
                 "max_header_value", "max_body", "decoded", "error")

    def __init__(self, size: int, max_parts: int, max_headers: int, max_header_bytes: int,
                 max_header_value: int, max_body: int, scan_factor: int,
                 max_false_delimiters: int, decode_factor: int = DECODE_FACTOR) -> None:
        self.parts = max_parts - 1
        self.decoded = decode_factor * size
        self.headers = max_headers
        self.scan = scan_factor * size + _SCAN_FLOOR
        self.false_delimiters = max_false_delimiters
        self.max_header_bytes = max_header_bytes
        self.max_header_value = max_header_value
        self.max_body = max_body
        self.error: str | None = None

    def fail(self, what: str) -> None:
        self.error = self.error or what


def _make_part(buf: bytes, start: int, end: int, depth: int, budget: _Budget) -> Part:
    if start < end and buf[start] == 0x0A:
        return Part([], buf, depth, start + 1, end, max_body=budget.max_body)  # no headers
    hs = start
    i = buf.find(b"\n\n", start, end)
    he, bs = (end, end) if i < 0 else (i, i + 2)
    if hs < he:
        if buf.startswith(b"From ", hs):
            nl = buf.find(b"\n", hs, he)
            hs = nl + 1 if nl >= 0 else he
        else:
            # A header block must start with a header line (in its first 200
            # bytes); otherwise all of it is body.
            first_end = hs + 200 if hs + 200 < he else he
            nl = buf.find(b"\n", hs, first_end)
            if _HEADER_NAME.match(buf, hs, nl if nl >= 0 else first_end) is None:
                return Part([], buf, depth, start, end, max_body=budget.max_body)
    headers: list[tuple[str, str]] = []
    if hs < he and budget.headers > 0:
        head = buf[hs:he if he - hs <= budget.max_header_bytes else hs + budget.max_header_bytes]
        headers = parse_headers(_decode_bytes(head), budget.max_header_value, budget.headers)
        budget.headers -= len(headers)
    return Part(headers, buf, depth, bs, end, max_body=budget.max_body)


def _split_multipart(buf: bytes, start: int, end: int, boundary: bytes,
                     budget: _Budget) -> list[tuple[int, int]]:
    """Offsets of the parts' bodies between the boundary delimiter lines.

    A delimiter line is "--" and the boundary at the start of a line, then
    either "--" (the close, whatever follows) or only blanks and dashes. The
    body's first line counts as a line start.
    """
    delim = b"\n--" + boundary
    n = len(delim)
    parts: list[tuple[int, int]] = []
    part_start = -1
    # i: where the delimiter's line break is; the body's first line has none
    # in the body, so a delimiter there is found "at" start - 1
    if buf.startswith(delim[1:], start, end):
        i, found = start - 1, True
    else:
        i = buf.find(delim, start, end)
        found = i >= 0
    while found:
        j = i + n
        if buf.startswith(b"--", j, end):      # the close delimiter
            if part_start >= 0:
                parts.append((part_start, max(i, part_start)))
            return parts
        m = _DELIMITER_TAIL.match(buf, j, end)
        if m is None:
            # a longer boundary that only starts like ours
            budget.false_delimiters -= 1
            if budget.false_delimiters < 0:
                budget.fail("over-budget")
                break
        else:
            if part_start >= 0:
                parts.append((part_start, max(i, part_start)))
            # the next part starts on the next line; there is none after the last line
            part_start = m.end() if m.group(1) else end + 1
            if len(parts) > budget.parts:
                return parts   # enough to know there are too many
        i = buf.find(delim, j, end)
        found = i >= 0
    if 0 <= part_start <= end:
        parts.append((part_start, end))
    return parts


def _skip_newlines(buf: bytes, start: int, end: int) -> int:
    """The offset of the first byte at or after ``start`` that is not a line break."""
    m = _NEWLINES.match(buf, start, end)
    return m.end() if m is not None else start


def normalise(raw: bytes) -> bytes:
    """CRLF and bare CR to LF."""
    if b"\r" in raw:
        raw = raw.replace(b"\r\n", b"\n")
        if b"\r" in raw:
            raw = raw.replace(b"\r", b"\n")
    return raw


def parse(raw: bytes, *, max_depth: int = 50, max_parts: int = 2000,
          deadline: float | None = None, max_headers: int = MAX_HEADERS,
          max_header_bytes: int = MAX_HEADER_BYTES, max_header_value: int = MAX_HEADER_VALUE,
          max_part_bytes: int = MAX_PART_BYTES, scan_factor: int = SCAN_FACTOR,
          max_false_delimiters: int = MAX_FALSE_DELIMITERS,
          decode_factor: int = DECODE_FACTOR) -> tuple[Part, str | None]:
    """Parse normalised message bytes into a Part tree.

    Args:
        raw: the message, line ends normalised (:func:`normalise`).
        max_depth: nesting levels read at most.
        max_parts: parts in the tree at most.
        deadline: a ``time.process_time()`` after which the reader stops.
        max_headers: header fields parsed in the whole tree.
        max_header_bytes: bytes of each header block parsed.
        max_header_value: characters of each header value kept.
        max_part_bytes: bytes of each body transfer-decoded at most.
        scan_factor: multipart bodies searched for boundaries, in all, at
            most this many times ``len(raw)`` plus 8 MiB.
        max_false_delimiters: lines that start like a delimiter without
            being one, in all.
        decode_factor: bytes of encoded message/* bodies decoded, in all, at
            most this many times ``len(raw)``.

    Returns:
        The root and an error word when a limit cut the tree short
        ("too-deep", "too-many-parts", "over-budget"); the tree is still usable.
    """
    budget = _Budget(len(raw), max_parts, max_headers, max_header_bytes, max_header_value,
                     max_part_bytes, scan_factor, max_false_delimiters, decode_factor)
    root = _make_part(raw, _skip_newlines(raw, 0, len(raw)), len(raw), 0, budget)
    stack = [root]
    while stack:
        p = stack.pop()
        if p.maintype == "multipart" or p.maintype == "message" and p.subtype in (
                "rfc822", "global", "partial") or p.content_type == "text/rfc822-headers":
            if p.depth >= max_depth:
                budget.fail("too-deep")
                continue
            if deadline is not None and time.process_time() > deadline:
                budget.error = "over-budget"
                break
            buf, bstart, bend = p._buf, p._start, p._end
            if p.maintype == "multipart":
                if budget.scan < bend - bstart:
                    budget.fail("over-budget")   # searched enough: leave it unsplit
                    continue
                budget.scan -= bend - bstart
                b = p.params.get("boundary")
                chunks = (_split_multipart(buf, bstart, bend, b.encode("utf-8", "replace"), budget)
                          if b else [])
                if not chunks:
                    # no boundary parameter (e.g. written unfolded on the next line), or
                    # one that the body does not use: guess the one it does use
                    m = _GUESS_BOUNDARY.search(buf, bstart, min(bend, bstart + 64 * 1024))
                    if m is not None and budget.scan >= bend - bstart:
                        budget.scan -= bend - bstart
                        chunks = _split_multipart(buf, bstart, bend, m.group(1), budget)
                for s, e in chunks:
                    if budget.parts <= 0:
                        budget.fail("too-many-parts")
                        break
                    child = _make_part(buf, s, e, p.depth + 1, budget)
                    if p.subtype == "digest" and not child.get("content-type"):
                        # (a digest's part is a message unless it says otherwise, RFC
                        # 2046 5.1.5: Mailman's and a mail client's digests say nothing)
                        child = child.with_type("message/rfc822")
                    p.children.append(child)
                    budget.parts -= 1
                stack.extend(reversed(p.children))
            else:
                cte = p.get("content-transfer-encoding").lower()
                if "base64" in cte or "quoted-printable" in cte:
                    # A new buffer that the parts inside keep alive: counted
                    # before it is made (its size is at most the input's).
                    if budget.decoded < min(bend - bstart, budget.max_body):
                        budget.fail("over-budget")
                        continue
                    buf = normalise(p.payload())
                    budget.decoded -= len(buf)
                    bstart, bend = 0, len(buf)
                if p.content_type == "text/rfc822-headers":
                    he = buf.find(b"\n\n", bstart, bend)
                    he = bend if he < 0 else he
                    head = buf[bstart:min(he, bstart + budget.max_header_bytes)]
                    headers = parse_headers(_decode_bytes(head), budget.max_header_value,
                                            budget.headers)
                    budget.headers -= len(headers)
                    child = Part(headers, b"", p.depth + 1, max_body=budget.max_body)
                else:
                    bstart = _skip_newlines(buf, bstart, bend)
                    child = _make_part(buf, bstart, bend, p.depth + 1, budget)
                if budget.parts <= 0:
                    budget.fail("too-many-parts")
                    continue
                p.children.append(child)
                budget.parts -= 1
                stack.append(child)
    return root, budget.error
