"""Tests for hurricane.bounce.mime: a bounded reader (memory, headers, boundaries, decoding)."""

from __future__ import annotations

import base64
import re
import tracemalloc

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from hurricane.bounce import mime
from tests.bounce import hostile

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))


def _reference_split(body: bytes, boundary: bytes) -> list[bytes]:
    """The multipart splitter as it was before offsets (the semantics to keep)."""
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
            pos = j
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


def _budget() -> mime._Budget:
    return mime._Budget(1000, 2000, mime.MAX_HEADERS, mime.MAX_HEADER_BYTES,
                        mime.MAX_HEADER_VALUE, mime.MAX_PART_BYTES, mime.SCAN_FACTOR,
                        mime.MAX_FALSE_DELIMITERS)


class SplitTests(SynchronousTestCase):
    """Splitting a multipart by offsets finds exactly the parts the old splitter found."""

    @SETTINGS
    @given(st.lists(st.sampled_from([b"--b", b"--b--", b"--bb", b"--b -", b"--b x", b"x",
                                     b"", b"--b\t", b"-", b"--", b"b", b" --b", b"--b---x"]),
                    max_size=12),
           st.binary(max_size=3), st.binary(max_size=3), st.booleans())
    def test_same_parts_as_before(self, lines: list[bytes], before: bytes, after: bytes,
                                  final_newline: bool) -> None:
        """Any body (delimiters first, last, repeated, closed or not) gives the same parts,
        also inside a larger buffer."""
        body = b"\n".join(lines) + (b"\n" if final_newline else b"")
        buf = before + body + after
        got = mime._split_multipart(buf, len(before), len(before) + len(body), b"b", _budget())
        self.assertEqual([buf[s:e] for s, e in got], _reference_split(body, b"b"))

    def test_false_delimiters_are_budgeted(self) -> None:
        """Lines that only start like the delimiter are counted; past the budget the
        multipart is left with what was found and the parse says over-budget."""
        raw = hostile.boundary_prefixes(1024 * 1024)
        root, error = mime.parse(mime.normalise(raw), max_false_delimiters=100)
        self.assertEqual(error, "over-budget")
        root, error = mime.parse(mime.normalise(raw))
        self.assertEqual(error, "over-budget")   # 10,000 by default, and there are more


class MemoryTests(SynchronousTestCase):
    """Parts are offsets into the message: nesting costs no copies."""

    def _peak(self, raw: bytes) -> int:
        tracemalloc.start()
        try:
            root, _error = mime.parse(raw)
            for p in root.walk():
                p.headers  # noqa: B018 (touch the tree)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    def test_nested_multiparts_hold_the_message_once(self) -> None:
        """49 nested multiparts of 4.9 MB (289 MB of RSS in the review): the parse
        allocates less than the message's size again."""
        raw = mime.normalise(hostile.nested_multipart(4_900_000))
        self.assertLess(self._peak(raw), len(raw))

    def test_deep_multiparts_hold_the_message_once(self) -> None:
        """Multiparts nested to the depth limit in 5 MiB: the same bound."""
        raw = mime.normalise(hostile.deep_multipart(hostile.MAX_SIZE))
        self.assertLess(self._peak(raw), len(raw))

    def test_nested_quoted_printable_messages(self) -> None:
        """Quoted-printable message/rfc822 parts nested 49 deep, five times in 5 MiB
        (275 MiB of RSS in issue 23's second review): the decoded bodies the parse
        keeps come to at most twice the message, and it says over-budget."""
        raw = mime.normalise(hostile.nested_qp_rfc822(hostile.MAX_SIZE))
        self.assertLess(self._peak(raw), 2.5 * len(raw))   # DECODE_FACTOR 2, and the tree
        root, error = mime.parse(raw)
        self.assertEqual(error, "over-budget")
        decoded = {id(p._buf): len(p._buf) for p in root.walk() if p._buf is not raw}
        self.assertLessEqual(sum(decoded.values()), mime.DECODE_FACTOR * len(raw))

    def test_one_encoded_original_is_decoded(self) -> None:
        """A message whose original is one quoted-printable (or base64) message/rfc822
        part, as large as the message allows, is still read inside: the budget cuts
        nesting, not the ordinary case."""
        inner = b"Subject: hi\nX-Hurricane-Token: h1kabc@bounce.example\n\n" + b"y" * 50_000
        for cte, body in ((b"quoted-printable", inner), (b"base64", base64.encodebytes(inner))):
            raw = (b"Content-Type: message/rfc822\nContent-Transfer-Encoding: " + cte
                   + b"\n\n" + body)
            root, error = mime.parse(raw)
            self.assertIsNone(error, cte)
            self.assertEqual(root.children[0].get("x-hurricane-token"), "h1kabc@bounce.example")

    def test_children_share_the_buffer(self) -> None:
        """A part's body is a range of its parent's buffer, not a copy."""
        raw = mime.normalise(hostile.nested_multipart(100_000))
        root, _ = mime.parse(raw)
        parts = list(root.walk())
        self.assertGreater(len(parts), 49)
        self.assertTrue(all(p._buf is raw for p in parts))

    def test_scan_budget(self) -> None:
        """Multipart bodies are searched for boundaries up to four times the message
        (plus 8 MiB): deep nesting of a big message stops there, with over-budget."""
        raw = mime.normalise(hostile.nested_multipart(hostile.MAX_SIZE))
        root, error = mime.parse(raw)
        self.assertEqual(error, "over-budget")
        depth = max(p.depth for p in root.walk())
        self.assertLess(depth, 49)
        self.assertGreater(depth, 4)
        small = mime.normalise(hostile.nested_multipart(200_000))
        self.assertIsNone(mime.parse(small)[1])     # a small one nests to the end


class HeaderTests(SynchronousTestCase):
    """Headers are cut before they are parsed or decoded."""

    def test_value_cut_before_decoding(self) -> None:
        """40,000 encoded words: the RFC 2047 decoder sees MAX_HEADER_VALUE characters."""
        seen: list[int] = []
        real = mime.decode_header

        def spy(value: str) -> object:
            seen.append(len(value))
            return real(value)

        self.patch(mime, "decode_header", spy)
        raw = mime.normalise(hostile.encoded_words(40_000 * 22))
        root, _ = mime.parse(raw)
        self.assertEqual(len(root.get("subject")), mime.MAX_HEADER_VALUE)
        self.assertTrue(mime.decode_words(root.get("subject")).startswith("cafécafé"))
        mime.decode_words("=?utf-8?q?a?= " * 10_000)
        self.assertEqual(seen, [mime.MAX_HEADER_VALUE, mime.MAX_HEADER_VALUE])

    def test_header_block_cut(self) -> None:
        """A header block of megabytes is parsed to MAX_HEADER_BYTES only."""
        raw = mime.normalise(hostile.header_lines(2 * 1024 * 1024))
        root, _ = mime.parse(raw)
        self.assertLess(len(root.headers), mime.MAX_HEADER_BYTES // len(b"X-A: b\n") + 10)
        self.assertEqual(root.get("from")[:4], "Mail")   # the first fields are there

    def test_fields_in_the_tree(self) -> None:
        """At most max_headers fields are parsed in the whole tree."""
        raw = mime.normalise(hostile.many_parts(1024 * 1024))
        root, _ = mime.parse(raw, max_headers=500)
        self.assertLessEqual(sum(len(p.headers) for p in root.walk()), 500)

    def test_parse_headers_limits(self) -> None:
        """Values are cut, and fields stop at max_fields."""
        fields = mime.parse_headers("a: " + "x" * 100 + "\nb: y\nc: z\n", max_value=10,
                                    max_fields=2)
        self.assertEqual(fields, [("a", "x" * 10), ("b", "y")])


class DecodingTests(SynchronousTestCase):
    """Bodies are decoded up to a bound, in one pass, never by a slow codec."""

    @SETTINGS
    @given(st.binary(max_size=200))
    def test_base64_as_before(self, body: bytes) -> None:
        """Deleting non-alphabet bytes with translate decodes as the regex did."""
        part = mime.Part([("content-transfer-encoding", "base64")], body, 0)

        def before(data: bytes) -> bytes:
            import binascii
            try:
                return binascii.a2b_base64(re.sub(rb"[^A-Za-z0-9+/=]", b"", data) + b"==")
            except (binascii.Error, ValueError):
                try:
                    clean = re.sub(rb"[^A-Za-z0-9+/]", b"", data)
                    return binascii.a2b_base64(clean[: len(clean) // 4 * 4])
                except (binascii.Error, ValueError):
                    return data

        self.assertEqual(part.payload(), before(body))

    def test_payload_bounded(self) -> None:
        """A part's payload decodes max_body bytes of its body at most."""
        body = base64.encodebytes(b"x" * 3_000_000)
        part = mime.Part([("content-transfer-encoding", "base64")], body, 0, max_body=4096)
        self.assertLessEqual(len(part.payload()), 4096)
        self.assertEqual(len(mime.Part([], b"y" * 10_000, 0, max_body=100).payload()), 100)

    def test_slow_codecs_refused(self) -> None:
        """A part that names punycode (quadratic in Python) is read as UTF-8/Latin-1."""
        self.assertEqual(mime.to_text(b"abc-def", "punycode"), "abc-def")
        self.assertEqual(mime.to_text(b"xn--abc", "IDNA"), "xn--abc")
        self.assertEqual(mime.to_text("é".encode("latin-1"), "latin-1"), "é")

    def test_blank_body(self) -> None:
        """body_is_blank answers as raw_body.strip() would, without a copy."""
        for body in (b"", b" \n\t\r\x0b\x0c", b"  x  "):
            part = mime.Part([], b"abc" + body + b"def", 0, 3, 3 + len(body))
            self.assertEqual(part.body_is_blank(), not body.strip())
            self.assertEqual(part.raw_body, body)


_WORD_PIECES = ["=?", "?=", "?q?", "?Q?", "?b?", "?B?", "utf-8", "ISO-8859-1", "_", "=41", "=4",
                "=zz", " ", "\t", "\n", "\r\n", "abc", "SGVsbG8", "=", "?", "\u00e9", "\u20ac",
                "\x00", "=?utf-8?b?w6k=?=", "=?utf-8?q?caf=C3=A9?="]


class DecodeHeaderTests(SynchronousTestCase):
    """mime.decode_header is the stdlib's email.header.decode_header, without its imports."""

    @settings(max_examples=2000, deadline=None)
    @given(st.lists(st.sampled_from(_WORD_PIECES), max_size=16).map("".join))
    def test_same_as_stdlib(self, value: str) -> None:
        import email.header

        def outcome(f: object) -> object:
            try:
                return f(value)  # type: ignore[operator]
            except Exception:
                return "error"
        self.assertEqual(outcome(mime.decode_header), outcome(email.header.decode_header))
