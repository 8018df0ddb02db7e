"""hurricane.xtext: RFC 3461 xtext, encoded by the client and decoded on the bounce side."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from hurricane.xtext import xtext_decode, xtext_encode


class XtextTests(SynchronousTestCase):
    """Both directions of the one encoding."""

    def test_encode(self) -> None:
        """xtext escapes "+", "=", space, controls and non-ASCII."""
        self.assertEqual(xtext_encode("a+b=c d\x01é"), "a+2Bb+3Dc+20d+01+C3+A9")

    def test_decode_lenient(self) -> None:
        """Escapes decode; a "+" that starts none (sub-addressing) is kept."""
        self.assertEqual(xtext_decode("h1k+2Bab+3D"), "h1k+ab=")
        self.assertEqual(xtext_decode("user+tag"), "user+tag")
        self.assertEqual(xtext_decode("end+4"), "end+4")
        self.assertEqual(xtext_decode("plain"), "plain")

    @given(st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=127), max_size=60))
    def test_round_trip(self, value: str) -> None:
        """Any ASCII value (our ENVID and ORCPT tokens are ASCII) decodes to itself."""
        self.assertEqual(xtext_decode(xtext_encode(value)), value)
