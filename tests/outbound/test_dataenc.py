"""The DATA encoder: normalisation, dot-stuffing, folding, smuggling defence."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from hurricane.outbound.dataenc import MAX_LINE, DataEncoder, encode_data

_EOL = re.compile(rb"\r\n|\r|\n")


def normalise(body: bytes) -> bytes:
    """The body as it should arrive: CRLF everywhere, ending with CRLF."""
    text = _EOL.sub(b"\r\n", body)
    if text and not text.endswith(b"\r\n"):
        text += b"\r\n"
    return text


def unstuff(wire: bytes) -> bytes:
    """What a receiver reconstructs from the DATA payload."""
    assert wire.endswith(b".\r\n")
    payload = wire[:-3]
    assert payload == b"" or payload.endswith(b"\r\n")
    lines = payload.split(b"\r\n")[:-1]
    return b"".join((line[1:] if line.startswith(b".") else line) + b"\r\n" for line in lines)


def encode_in_chunks(body: bytes, cuts: list[int], max_line: int = MAX_LINE) -> bytes:
    """Encode ``body`` split at the (sorted, clipped) offsets ``cuts``."""
    encoder = DataEncoder(max_line)
    out = []
    start = 0
    for cut in sorted({min(c, len(body)) for c in cuts}):
        out.append(encoder.feed(body[start:cut]))
        start = cut
    out.append(encoder.feed(body[start:]))
    out.append(encoder.finish())
    return b"".join(out)


def assert_wire_safe(test: SynchronousTestCase, wire: bytes) -> None:
    """Only CRLF line endings, and the only CRLF.CRLF is the final one."""
    test.assertEqual(wire.count(b"\r"), wire.count(b"\r\n"))
    test.assertEqual(wire.count(b"\n"), wire.count(b"\r\n"))
    test.assertEqual((b"\r\n" + wire).find(b"\r\n.\r\n"), len(wire) - 3)


# Bodies rich in the interesting octets: dots, CR, LF, and a letter.
_bodies = st.lists(
    st.sampled_from([b".", b"\r", b"\n", b"\r\n", b"a", b"..", b"\n.\n", b"\r.\r", b"\r\n.\n"]),
    max_size=60,
).map(b"".join) | st.binary(max_size=300)


class DataEncoderTests(SynchronousTestCase):
    """Examples of what goes on the wire."""

    def test_first_line_dot_is_stuffed(self) -> None:
        """A "." at the very start of the body is doubled (Twisted misses it)."""
        self.assertEqual(encode_data(b".hidden\r\nx\r\n"), b"..hidden\r\nx\r\n.\r\n")

    def test_dot_at_16k_chunk_boundary_is_stuffed(self) -> None:
        """A "." line starting exactly at a 16384-byte chunk boundary is doubled."""
        head = (b"x" * 78 + b"\r\n") * 204 + b"y" * 62 + b"\r\n"
        body = head + b".\r\nafter\r\n"
        self.assertEqual(len(head), 16384)
        wire = encode_in_chunks(body, [16384])
        self.assertEqual(wire, head + b"..\r\nafter\r\n.\r\n")
        # Folded or not, the receiver gets the original lines back.
        self.assertEqual(unstuff(encode_in_chunks(body, [16383, 16384, 16385])), body)

    def test_crlf_is_not_doubled(self) -> None:
        """CRLF input stays CRLF (Twisted turns it into CR CR LF)."""
        self.assertEqual(encode_data(b"a\r\nb\r\n"), b"a\r\nb\r\n.\r\n")

    def test_crlf_split_across_chunks(self) -> None:
        """A CR at the end of one chunk and LF at the start of the next is one line end."""
        encoder = DataEncoder()
        out = b"".join([encoder.feed(b"a\r"), encoder.feed(b"\n.b\r"), encoder.feed(b"\nc"),
                        encoder.finish()])
        self.assertEqual(out, b"a\r\n..b\r\nc\r\n.\r\n")

    def test_bare_lf_and_cr_become_crlf(self) -> None:
        """Bare LF and bare CR line endings are normalised to CRLF."""
        self.assertEqual(encode_data(b"a\nb\rc\r\n"), b"a\r\nb\r\nc\r\n.\r\n")

    def test_smuggling_sequences_never_end_data(self) -> None:
        """\\n.\\n, \\r.\\r and \\r\\n.\\n inside a body cannot end DATA early."""
        for body in (b"a\n.\nMAIL FROM:<x>\n", b"a\r.\rRCPT TO:<y>\r", b"a\r\n.\nDATA\r\n",
                     b"a\n.\r\nQUIT\r\n", b".\n", b"\r.\r"):
            with self.subTest(body=body):
                wire = encode_data(body)
                assert_wire_safe(self, wire)
                self.assertEqual(unstuff(wire), normalise(body))

    def test_unterminated_body_gets_crlf_before_dot(self) -> None:
        """finish() adds CRLF before the dot when the last line is unterminated."""
        self.assertEqual(encode_data(b"abc"), b"abc\r\n.\r\n")
        self.assertEqual(encode_data(b""), b".\r\n")

    def test_long_lines_are_folded(self) -> None:
        """A line over 998 octets is hard-wrapped; no output line exceeds 998."""
        body = b"y" * 2500 + b"\r\n"
        wire = encode_data(body)
        lines = wire.split(b"\r\n")
        self.assertEqual([len(x) for x in lines], [998, 998, 504, 1, 0])
        self.assertEqual(wire.replace(b"\r\n", b""), b"y" * 2500 + b".")

    def test_folding_stuffs_a_dot_moved_to_line_start(self) -> None:
        """A "." that folding puts at the start of a line is stuffed too."""
        wire = encode_data(b"a" * 998 + b".\r\n.\r\n")
        self.assertEqual(wire, b"a" * 998 + b"\r\n..\r\n..\r\n.\r\n")
        assert_wire_safe(self, wire)

    def test_folding_across_chunks(self) -> None:
        """A long line fed in many small chunks folds at the same places."""
        body = b"z" * 3000
        self.assertEqual(encode_in_chunks(body, list(range(0, 3000, 7))), encode_data(body))

    def test_feed_after_finish_raises(self) -> None:
        """The encoder refuses input after finish()."""
        encoder = DataEncoder()
        encoder.finish()
        self.assertRaises(RuntimeError, encoder.feed, b"x")
        self.assertRaises(RuntimeError, encoder.finish)

    @settings(max_examples=400, deadline=None)
    @given(body=_bodies, cuts=st.lists(st.integers(0, 300), max_size=8))
    def test_property_wire_safe_and_lossless(self, body: bytes, cuts: list[int]) -> None:
        """Any body, split anywhere: CRLF only, one final CRLF.CRLF, unstuffs to the input."""
        wire = encode_in_chunks(body, cuts)
        assert_wire_safe(self, wire)
        self.assertEqual(unstuff(wire), normalise(body))
        self.assertEqual(wire, encode_data(body))

    @settings(max_examples=300, deadline=None)
    @given(body=_bodies, cuts=st.lists(st.integers(0, 300), max_size=8),
           max_line=st.integers(1, 12))
    def test_property_folding(self, body: bytes, cuts: list[int], max_line: int) -> None:
        """With folding forced (short limit) the wire is still safe and lines are bounded."""
        wire = encode_in_chunks(body, cuts, max_line)
        assert_wire_safe(self, wire)
        for line in wire.split(b"\r\n"):
            self.assertLessEqual(len(line[1:] if line.startswith(b".") else line), max_line)
        # Removing the folds (and the stuffing) gives back the normalised text.
        self.assertEqual(
            unstuff(wire).replace(b"\r\n", b""), normalise(body).replace(b"\r\n", b""),
        )
        self.assertEqual(wire, encode_data(body, max_line))
