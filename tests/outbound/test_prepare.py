"""Wire bytes: token header, line endings, 8-bit and SMTPUTF8 detection."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from hurricane.outbound.prepare import (
    header_value,
    normalise_message,
    prepare_message,
    wire_address,
)

TOKEN = "hak00000000001aaabcdefghijklmnop.news@bounce.example.com"
MESSAGE = (
    b"From: Shop <news@shop.example>\n"
    b"To: alice@example.com\n"
    b"X-Hurricane-Token: forged@evil.example\n"
    b"Subject: hello\n"
    b"Message-ID: <1@shop.example>\n"
    b"Date: Mon, 1 Jan 2024 00:00:00 +0000\n"
    b"\n"
    b"Body line\n"
)


class PrepareTests(SynchronousTestCase):
    """prepare.py builds the bytes of one transaction."""

    def test_token_header_added_from_untouched(self) -> None:
        """The token header is added once with our token; From and the rest are unchanged."""
        message = normalise_message(MESSAGE)
        prepared = prepare_message(message, TOKEN, [TOKEN, "alice@example.com"])
        self.assertEqual(header_value(prepared.body, b"x-hurricane-token"), TOKEN.encode())
        self.assertEqual(prepared.body.count(b"X-Hurricane-Token"), 1)
        self.assertNotIn(b"forged", prepared.body)
        self.assertIn(b"From: Shop <news@shop.example>\r\n", prepared.body)
        self.assertIn(b"Message-ID: <1@shop.example>\r\n", prepared.body)
        self.assertTrue(prepared.body.endswith(b"\r\n\r\nBody line\r\n"))

    def test_crlf_normalised(self) -> None:
        """LF and bare CR become CRLF, and CRLF stays CRLF."""
        self.assertEqual(normalise_message(b"A: b\nC: d\r\n\r\nx\ry\r\n"),
                         b"A: b\r\nC: d\r\n\r\nx\r\ny\r\n")

    def test_folded_forged_token_removed(self) -> None:
        """A folded application token header is removed with its continuation line."""
        message = normalise_message(b"X-Hurricane-Token: a\n b\nSubject: s\n\nbody\n")
        self.assertEqual(message, b"Subject: s\r\n\r\nbody\r\n")

    def test_seven_bit(self) -> None:
        """An ASCII message needs neither 8BITMIME nor SMTPUTF8."""
        prepared = prepare_message(normalise_message(MESSAGE), TOKEN, [TOKEN, "a@example.com"])
        self.assertFalse(prepared.eight_bit)
        self.assertFalse(prepared.smtputf8)

    def test_eight_bit_body(self) -> None:
        """Octets above 127 in the body ask for 8BITMIME, not SMTPUTF8."""
        raw = "Subject: s\n\nGrüße\n".encode()
        prepared = prepare_message(normalise_message(raw), TOKEN, [TOKEN, "a@example.com"])
        self.assertTrue(prepared.eight_bit)
        self.assertFalse(prepared.smtputf8)

    def test_smtputf8_for_address_and_header(self) -> None:
        """A non-ASCII local part or raw UTF-8 in a header needs SMTPUTF8."""
        message = normalise_message(MESSAGE)
        self.assertTrue(prepare_message(message, TOKEN, [TOKEN, "jörg@example.com"]).smtputf8)
        utf8_header = normalise_message("Subject: Grüße\n\nx\n".encode())
        self.assertTrue(prepare_message(utf8_header, TOKEN, [TOKEN, "a@b.example"]).smtputf8)

    def test_wire_address_idn(self) -> None:
        """The recipient domain goes on the wire in A-label form; the local part stays."""
        self.assertEqual(wire_address("jörg@bücher.example"), "jörg@xn--bcher-kva.example")
        self.assertEqual(wire_address("a@example.com"), "a@example.com")


def _reference_normalise(raw: bytes) -> bytes:
    """normalise_message as it was before its fast paths: always substitute and rebuild."""
    import re

    from hurricane.outbound.prepare import TOKEN_HEADER, _header_lines, split_headers

    # The substitution always, and the header block always rebuilt (the
    # field splitting itself is prepare's own: the fast paths skip it).
    message = re.sub(rb"\r\n|\r|\n", b"\r\n", raw)
    headers, body = split_headers(message)
    token = TOKEN_HEADER.lower()
    return b"".join(f for f in _header_lines(headers)
                    if f.split(b":", 1)[0].strip().lower() != token) + body


_PIECES = [b"\r\n", b"\r", b"\n", b"\r\n\r\n", b"X-Hurricane-Token: t@x", b"x-hurricane-token:",
           b" folded", b"\t", b"Subject: s", b"From: a@b", b":", b"body text", b"\xc3\xa9",
           b"\x80", b"X-Hurricane-Tokens: kept"]


class FastPathTests(SynchronousTestCase):
    """The fast paths give the bytes and flags the general ones gave."""

    def test_normalise_matches_the_reference(self) -> None:
        """Any mix of CR, LF, CRLF, token fields and folding: the same bytes."""
        from hypothesis import given, settings
        from hypothesis import strategies as st

        @settings(max_examples=400, deadline=None)
        @given(st.lists(st.sampled_from(_PIECES), max_size=30))
        def check(parts: list[bytes]) -> None:
            raw = b"".join(parts)
            self.assertEqual(normalise_message(raw), _reference_normalise(raw))

        check()

    def test_prepare_flags_match_a_byte_scan(self) -> None:
        """eight_bit and smtputf8 say whether an octet above 127 is in the body / headers."""
        from hypothesis import given, settings
        from hypothesis import strategies as st

        @settings(max_examples=300, deadline=None)
        @given(st.lists(st.sampled_from(_PIECES), max_size=30),
               st.sampled_from(["a@b.example", "é@b.example"]))
        def check(parts: list[bytes], address: str) -> None:
            message = normalise_message(b"".join(parts))
            prepared = prepare_message(message, TOKEN, [TOKEN, address])
            headers = prepared.body.split(b"\r\n\r\n", 1)[0] if not \
                prepared.body.startswith(b"\r\n") else b""
            self.assertEqual(prepared.eight_bit, any(c > 127 for c in prepared.body))
            self.assertEqual(prepared.smtputf8,
                             not address.isascii() or any(c > 127 for c in headers))

        check()
