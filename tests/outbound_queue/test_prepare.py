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
