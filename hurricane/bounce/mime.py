"""A small, bounded, non-recursive MIME reader for returned messages.

The stdlib ``email`` parser costs about half a millisecond per bounce and
recurses once per nesting level; this reader only splits what the analyzer
needs (headers, content types, bodies, nested messages), walks the tree with
an explicit stack, and stops at the depth, part and time limits it is given.
"""

from __future__ import annotations

import binascii
import codecs
import re
import time
from collections.abc import Iterator
from email.header import decode_header

__all__ = ["Part", "LimitExceeded", "parse", "parse_headers", "decode_words", "to_text"]


class LimitExceeded(Exception):
    """Raised inside the reader when a limit is reached; carries the error word."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


_UNFOLD = re.compile(r"\n[ \t]+")
_HEADER_LINE = re.compile(r"^([!-9;-~]+)[ \t]*:[ \t]*(.*)$")
# _HEADER_LINE for every line of a block at once: run on "\n" + block, the
# leading newline is a literal prefix that the regex engine skips to quickly.
_HEADER_LINES = re.compile(r"\n([!-9;-~]+)[ \t]*:[ \t]*(.*)")
_CT = re.compile(r"^\s*([a-z0-9!#$&.+^_`{|}~-]+)\s*/\s*([a-z0-9!#$&.+^_`{|}~-]+)", re.I)
_PARAM = re.compile(r';\s*([a-z0-9*_.-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;\s]*))', re.I)
_ENCODED_WORD = re.compile(r"=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=")


def _decode_bytes(b: bytes) -> str:
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return b.decode("latin-1")


def parse_headers(text: str) -> list[tuple[str, str]]:
    """Split an (already unfoldable) header block into (lower name, value) pairs."""
    if "\n " in text or "\n\t" in text:     # only then can _UNFOLD match
        text = _UNFOLD.sub(" ", text)
    return [(k.lower(), v.strip()) for k, v in _HEADER_LINES.findall("\n" + text)]


def decode_words(value: str) -> str:
    """Decode RFC 2047 encoded words, tolerating bad charsets and garbage."""
    if "=?" not in value:
        return value
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


_CHARSET_ALIASES = {"utf8": "utf-8", "x-unknown": "latin-1", "unknown-8bit": "latin-1",
                    "ks_c_5601-1987": "cp949", "x-sjis": "shift_jis", "shift-jis": "shift_jis"}


def to_text(data: bytes, charset: str | None) -> str:
    """Decode body bytes with a declared charset, falling back to UTF-8/Latin-1."""
    cs = (charset or "").strip().strip('"').lower()
    cs = _CHARSET_ALIASES.get(cs, cs)
    if cs and cs not in ("us-ascii", "ascii", "utf-8"):
        try:
            codecs.lookup(cs)
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
    """One MIME entity: headers, content type, raw body and child parts."""

    __slots__ = ("headers", "maintype", "subtype", "params", "raw_body", "children", "depth",
                 "_text", "_hmap")

    def __init__(self, headers: list[tuple[str, str]], raw_body: bytes, depth: int) -> None:
        self.headers = headers
        self.raw_body = raw_body
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

    def get(self, name: str, default: str = "") -> str:
        """The first value of a header (lower-case name), or default."""
        hm = self._hmap
        if hm is None:
            hm = self._hmap = dict(reversed(self.headers))   # the first value of each name wins
        return hm.get(name, default)

    def get_all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name]

    def payload(self) -> bytes:
        """The body with its content-transfer-encoding undone."""
        cte = self.get("content-transfer-encoding").lower()
        body = self.raw_body
        if "base64" in cte:
            try:
                return binascii.a2b_base64(re.sub(rb"[^A-Za-z0-9+/=]", b"", body) + b"==")
            except (binascii.Error, ValueError):
                try:
                    clean = re.sub(rb"[^A-Za-z0-9+/]", b"", body)
                    clean = clean[: len(clean) // 4 * 4]
                    return binascii.a2b_base64(clean)
                except (binascii.Error, ValueError):
                    return body
        if "quoted-printable" in cte:
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


def _make_part(data: bytes, depth: int) -> Part:
    head, body = split_head(data)
    # A header block must start with a header line; otherwise all of it is body.
    if head and not _HEADER_LINE.match(_decode_bytes(head[:200].split(b"\n", 1)[0])) \
            and not head.startswith(b"From "):
        return Part([], data, depth)
    if head.startswith(b"From "):
        nl = head.find(b"\n")
        head = head[nl + 1:] if nl >= 0 else b""
    return Part(parse_headers(_decode_bytes(head)), body, depth)


def _split_multipart(body: bytes, boundary: bytes) -> list[bytes]:
    """Bodies of the parts between the boundary delimiter lines."""
    delim = b"\n--" + boundary
    data = b"\n" + body
    parts: list[bytes] = []
    start = -1
    pos = 0
    n = len(delim)
    while True:
        i = data.find(delim, pos)
        if i < 0:
            break
        j = i + n
        eol = data.find(b"\n", j)
        if eol < 0:
            eol = len(data)
        tail = data[j:eol]
        closing = tail.startswith(b"--")
        if tail.strip(b" \t-") and not closing:
            pos = j   # a longer boundary that only starts like ours
            continue
        if start >= 0:
            parts.append(data[start:i])
        if closing:
            start = -1
            break
        start = eol + 1
        pos = eol
    if start >= 0 and start <= len(data):
        parts.append(data[start:])
    return parts


_GUESS_BOUNDARY = re.compile(rb"(?m)^--([0-9A-Za-z'()+_,./:=?-]{8,200})[ \t]*$")


def normalise(raw: bytes) -> bytes:
    """CRLF and bare CR to LF."""
    if b"\r" in raw:
        raw = raw.replace(b"\r\n", b"\n")
        if b"\r" in raw:
            raw = raw.replace(b"\r", b"\n")
    return raw


def parse(raw: bytes, *, max_depth: int = 50, max_parts: int = 2000,
          deadline: float | None = None) -> tuple[Part, str | None]:
    """Parse normalised message bytes into a Part tree.

    Returns the root and an error word when a limit cut the tree short
    ("too-deep", "too-many-parts", "over-budget"); the tree is still usable.
    """
    root = _make_part(raw.lstrip(b"\n") if raw[:1] == b"\n" else raw, 0)
    count = 1
    error: str | None = None
    stack = [root]
    while stack:
        p = stack.pop()
        if p.maintype == "multipart" or p.maintype == "message" and p.subtype in (
                "rfc822", "global", "partial") or p.content_type == "text/rfc822-headers":
            if p.depth >= max_depth:
                error = error or "too-deep"
                continue
            if deadline is not None and time.process_time() > deadline:
                error = "over-budget"
                break
            if p.maintype == "multipart":
                b = p.params.get("boundary")
                # no boundary parameter (e.g. written unfolded on the next line): guess it
                chunks = _split_multipart(p.raw_body, b.encode("utf-8", "replace")) if b else []
                if not chunks:
                    # a boundary that the body does not use: guess the one it does use
                    m = _GUESS_BOUNDARY.search(p.raw_body[:64 * 1024])
                    if m is not None:
                        chunks = _split_multipart(p.raw_body, m.group(1))
                if not chunks:
                    continue
                for c in chunks:
                    if count >= max_parts:
                        error = error or "too-many-parts"
                        break
                    child = _make_part(c, p.depth + 1)
                    p.children.append(child)
                    count += 1
                stack.extend(reversed(p.children))
            else:
                body = p.raw_body
                cte = p.get("content-transfer-encoding").lower()
                if "base64" in cte or "quoted-printable" in cte:
                    body = normalise(p.payload())
                if p.content_type == "text/rfc822-headers":
                    head = body.split(b"\n\n", 1)[0]
                    child = Part(parse_headers(_decode_bytes(head)), b"", p.depth + 1)
                else:
                    child = _make_part(body.lstrip(b"\n"), p.depth + 1)
                if count >= max_parts:
                    error = error or "too-many-parts"
                    continue
                p.children.append(child)
                count += 1
                stack.append(child)
    return root, error
