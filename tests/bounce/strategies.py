"""Hypothesis strategies for hostile returned mail: the builders, truncated and spliced."""

from __future__ import annotations

from hypothesis import strategies as st

from tests.bounce import hostile
from tests.hardening.strategies import returned_mail

#: Units whose long runs a pattern could try at every position.
RUNS = [b"<", b">", b"@", b"=?", b"?=", b";", b":", b"(", b'"', b"\\", b" ", b"\t", b"=\r\n",
        b"\r\n", b"\n", b"\r", b"--", b"-", b"a", b"5.", b"&", b"%", b"=", b"\xff", b"\x00",
        b"X-Hurricane-Token: ", b"Final-Recipient: rfc822; a@b.c\r\n", b"<p", b"<script>",
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"]

#: A run of one unit, up to 64 KiB.
run = st.builds(lambda unit, n: (unit * n)[:64 * 1024], st.sampled_from(RUNS),
                st.integers(0, 20_000))

#: One of the hostile builders, at up to 64 KiB.
built = st.builds(hostile.build, st.sampled_from(sorted(hostile.BUILDERS)),
                  st.integers(0, 64 * 1024))


def _splice(base: bytes, cut: int, at: int, piece: bytes, tail: bytes) -> bytes:
    """``base`` truncated at ``cut``, with ``piece`` inserted at ``at`` and ``tail`` after."""
    cut %= len(base) + 1
    data = base[:cut]
    at %= len(data) + 1
    return data[:at] + piece + data[at:] + tail


#: Random, truncated and hostile MIME: a returned message or a builder's output,
#: cut anywhere, with a run and random bytes spliced in.
hostile_mail = st.builds(
    _splice, st.one_of(returned_mail, built, st.binary(max_size=2000)),
    st.integers(0, 1 << 20), st.integers(0, 1 << 20), st.one_of(run, built),
    st.binary(max_size=64))
