"""Property-based tests (hypothesis): the command parsers, the DATA reader and whole sessions.

Bounded for CI with ``max_examples``; ``fuzz/fuzz_smtp.py`` runs the same
properties for as long as you like.
"""

from __future__ import annotations

import json
import re
import time

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from hurricane.bounce.analyze import AnalysisLimits, analyze
from hurricane.bounce.model import Analysis
from hurricane.config import BounceConfig, SubmissionConfig
from hurricane.inbound.server import build_bounce_factory
from hurricane.passwords import hash_password
from hurricane.smtpd.address import parse_params, parse_path
from hurricane.smtpd.data import DataReader
from hurricane.smtpd.reply import ReplyError
from hurricane.smtpd.session import ServerState
from hurricane.store.memory import MemoryStore
from hurricane.submission.server import build_submission_factory
from hurricane.verp import VerpCodec, VerpKey
from tests.bounce.strategies import hostile_mail
from tests.hardening.strategies import returned_mail

REPLY_LINE = re.compile(rb"\A[2345]\d\d[ -][\x20-\x7e]*\Z")
SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=list(HealthCheck))

#: Pieces of SMTP that steer a random session into every state.
TOKENS = [
    b"EHLO client.test\r\n", b"HELO x\r\n", b"MAIL FROM:<a@b.test>\r\n", b"MAIL FROM:<>\r\n",
    b"RCPT TO:<postmaster@bounces.fuzz.test>\r\n", b"RCPT TO:<u@sink.test>\r\n", b"DATA\r\n",
    b"RSET\r\n", b"NOOP\r\n", b"QUIT\r\n", b"STARTTLS\r\n", b"AUTH PLAIN\r\n",
    b"AUTH LOGIN\r\n", b"AUTH PLAIN AGFsaWNlAHB3\r\n", b"*\r\n", b"YWxpY2U=\r\n", b".\r\n",
    b"\r\n", b"\n", b"\r", b".", b"..\r\n", b"\n.\n", b"\r\n.\r\n",
    b"MAIL FROM:<a@b.test> SIZE=1\r\n",
    b"MAIL FROM:<a@b.test> BODY=8BITMIME AUTH=<>\r\n", b"VRFY x\r\n", b"\x00\xff\r\n",
    b"RCPT TO:<@a.test,@b.test:u@c.test>\r\n", b"RCPT TO:<\"a b\"@c.test>\r\n",
    b"X" * 3000 + b"\r\n", b"Y" * 5000,
]
chunks = st.lists(st.one_of(st.sampled_from(TOKENS), st.binary(max_size=64)), max_size=40)
path_text = st.one_of(
    st.text(max_size=80),
    st.text(alphabet="<>@\"\\:,.[]%!aZ09 -_+=IPv6", max_size=80),
    st.from_regex(r"<[a-z.\"@%!:,\[\]0-9]{0,40}>( [A-Z]+=[a-z0-9]+)*", fullmatch=True),
)


class ParserFuzzTests(SynchronousTestCase):
    """parse_path and parse_params return a value or raise ReplyError, nothing else."""

    @SETTINGS
    @given(path_text, st.sampled_from(["sender", "recipient"]))
    @example("0 \x1f", "sender")  # found by Hypothesis: a control character after a bare address
    @example("<> \x1f", "recipient")
    def test_parse_path(self, text: str, kind: str) -> None:
        """Any text gives a Path whose parts are printable ASCII, or a 5xx ReplyError."""
        try:
            path, rest = parse_path(text, kind)  # type: ignore[arg-type]
        except ReplyError as e:
            self.assertIn(e.reply.code, (501, 553))
            return
        for part in (path.local, path.domain or "", *path.route, rest):
            self.assertFalse(any(ord(ch) < 0x20 or ord(ch) == 0x7f for ch in part), part)
        self.assertLessEqual(len(path.address), 256 + 1)

    @SETTINGS
    @given(st.text(max_size=120))
    def test_parse_params(self, text: str) -> None:
        """Any text gives upper-case keys without '=' or a 501 ReplyError."""
        try:
            params = parse_params(text)
        except ReplyError as e:
            self.assertEqual(e.reply.code, 501)
            return
        for key in params:
            self.assertEqual(key, key.upper())
            self.assertNotIn("=", key)


class DataReaderFuzzTests(SynchronousTestCase):
    """Only CRLF.CRLF ends DATA, however the bytes are split."""

    @SETTINGS
    @given(st.binary(max_size=400), st.lists(st.integers(0, 400), max_size=8),
           st.booleans())
    def test_only_crlf_dot_crlf_ends(self, body: bytes, cuts: list[int], reject: bool) -> None:
        """A body with no CRLF.CRLF never ends the message; the real terminator always does."""
        framed = b"\r\n" + body
        if b"\r\n.\r\n" in framed + b"\r\n":
            return  # the body itself terminates: not this property
        stream = body + b"\r\n.\r\nNEXT"
        points = sorted({c for c in cuts if c < len(body)})
        pieces = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
        reader = DataReader(1 << 20, 1000, reject)
        leftover = None
        for i, piece in enumerate(pieces):
            leftover = reader.feed(piece)
            if leftover is not None:
                self.assertEqual(i, len(pieces) - 1, "ended early")
        self.assertTrue(reader.finished)
        self.assertEqual(leftover, b"NEXT")
        message = reader.message()
        if reader.failure is None:
            self.assertNotIn(b"\n", message.replace(b"\r\n", b""))
            self.assertNotIn(b"\r", message.replace(b"\r\n", b""))


def _submission() -> object:
    store = MemoryStore()
    Deferred.fromCoroutine(store.open())
    config = SubmissionConfig(users={"alice": hash_password("pw", iterations=1000)},
                              trusted_networks=(), require_auth=True, max_errors=1000)
    return build_submission_factory(config, store, "mx.fuzz.test", Clock())


def _bounce() -> object:
    store = MemoryStore()
    Deferred.fromCoroutine(store.open())
    codec = VerpCodec("bounces.fuzz.test", [VerpKey(0, b"k" * 32, 0.0)])
    return build_bounce_factory(BounceConfig(domain="bounces.fuzz.test", max_errors=1000),
                                codec, store, "mx.fuzz.test", Clock())


class SessionFuzzTests(SynchronousTestCase):
    """A protocol fed random bytes never raises, writes only reply lines and keeps answering."""

    def _session(self, factory: object, pieces: list[bytes], ip: str) -> None:
        addr = IPv4Address("TCP", ip, 1234)
        proto = factory.buildProtocol(addr)  # type: ignore[attr-defined]
        transport = StringTransport(peerAddress=addr)
        proto.makeConnection(transport)
        for piece in pieces:
            proto.dataReceived(piece)  # must not raise
            if proto.state is not ServerState.WAITING:
                # bounded buffering: never more than the unterminated-line limit
                self.assertLessEqual(len(proto.input_buffer), proto.limits.max_unterminated
                                     + len(piece))
        closing = transport.disconnecting or proto.state is ServerState.CLOSING
        if not closing:
            # bring it back to command mode and ask for a NOOP: it must answer
            if proto.state is ServerState.DATA:
                proto.dataReceived(b"\r\n.\r\n")
            elif proto.state is ServerState.AUTH:
                proto.dataReceived(b"*\r\n")
            else:
                proto.dataReceived(b"\r\n")  # end a partial command line
            transport.clear()
            proto.dataReceived(b"NOOP\r\n")
            if not (transport.disconnecting or proto.state is ServerState.CLOSING):
                self.assertTrue(transport.value().endswith(b"250 2.0.0 Ok\r\n"),
                                transport.value()[-300:])
        out = transport.value()
        for line in out.split(b"\r\n")[:-1]:
            self.assertRegex(line, REPLY_LINE)
        proto.connectionLost(None)
        self.assertEqual(factory.connections.count(), 0)  # type: ignore[attr-defined]

    @SETTINGS
    @given(chunks, st.sampled_from(["127.0.0.1", "203.0.113.9"]))
    def test_submission(self, pieces: list[bytes], ip: str) -> None:
        """The submission protocol survives any input (loopback and remote clients)."""
        self._session(_submission(), pieces, ip)

    @SETTINGS
    @given(chunks)
    def test_bounce(self, pieces: list[bytes]) -> None:
        """The bounce receiver survives any input."""
        self._session(_bounce(), pieces, "198.51.100.7")


class AnalyzerFuzzTests(SynchronousTestCase):
    """Random MIME trees of returned mail are analysed within budget, never raising."""

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(returned_mail)
    def test_mime_trees(self, raw: bytes) -> None:
        """Any tree gives an Analysis that serialises, within the CPU budget plus slack."""
        limits = AnalysisLimits(cpu_seconds=2.0)
        started = time.process_time()
        result = analyze(raw, limits=limits)
        self.assertIsInstance(result, Analysis)
        json.dumps(result.to_json())
        self.assertLess(time.process_time() - started, limits.cpu_seconds + 1.0)

    @settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
    @given(hostile_mail)
    def test_hostile_mime(self, raw: bytes) -> None:
        """Random, truncated and hostile MIME (runs of one character, bombs, junk spliced
        in anywhere) gives an Analysis that serialises, with at most a limit's error."""
        result = analyze(raw)
        self.assertIsInstance(result, Analysis)
        json.dumps(result.to_json())
        self.assertIn(result.error, (None, "too-large", "too-deep", "too-many-parts",
                                     "over-budget"))
