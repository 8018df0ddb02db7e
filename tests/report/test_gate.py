"""Request bodies are refused before they are read: the gate on a StringTransport and a socket."""

from __future__ import annotations

import json
import re
import threading

from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import SynchronousTestCase, TestCase

from hurricane import passwords
from hurricane.config import Config, SubmissionConfig, WebConfig
from hurricane.credentials import SecretVerifier, threadpool_runner
from hurricane.passwords import generate_token, hash_password, hash_token
from hurricane.report.web import GuardedChannel, build_web_site
from hurricane.store.memory import MemoryStore
from tests.pools import Pbkdf2Recorder, QueuedRunner

from .helpers import T0, run

OUTSIDE = IPv4Address("TCP", "203.0.113.9", 40000)
LOCAL = IPv4Address("TCP", "127.0.0.1", 40000)
FAST_TOKEN = generate_token()
OLD_TOKEN = "an-older-token-hashed-with-pbkdf2"
MESSAGE = json.dumps({"recipients": ["a@x.test"], "raw": "Subject: hi\r\n\r\nhi\r\n"}).encode()


def head(method: str, path: str, *headers: str, length: int | None = None,
         chunked: bool = False) -> bytes:
    """A request line and headers, up to the blank line."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *headers]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body."""
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


class _Gate:
    """A site on a MemoryStore and Clock, one StringTransport connection per request."""

    def __init__(self, testcase: SynchronousTestCase, *, listen: str = "tcp:8025",
                 users: dict[str, str] | None = None, tokens: bool = True,
                 max_message_size: int = 25 * 1024 * 1024) -> None:
        self.pool = QueuedRunner()
        self.store = MemoryStore()
        run(self.store.open())
        self.clock = Clock()
        self.clock.advance(T0)
        token_hashes = ({"app": hash_token(FAST_TOKEN),
                         "old": hash_password(OLD_TOKEN, iterations=1000)} if tokens else {})
        user_hashes = {n: hash_password(p, iterations=1000) for n, p in (users or {}).items()}
        config = Config(web=WebConfig(listen=(listen,), tokens=token_hashes, users=user_hashes),
                        submission=SubmissionConfig(max_message_size=max_message_size))
        self.site = build_web_site(config, self.store, self.clock, on_enqueued=lambda: None,
                                   verifier=SecretVerifier(self.pool))
        self.testcase = testcase
        # Registered first, so it runs after every connection is closed.
        testcase.addCleanup(self._no_timers_left)

    def connect(self, peer: IPv4Address = OUTSIDE) -> tuple[GuardedChannel, StringTransport]:
        """A channel on a StringTransport from ``peer``."""
        channel = self.site.buildProtocol(peer)
        assert isinstance(channel, GuardedChannel)
        transport = StringTransport(peerAddress=peer,
                                    hostAddress=IPv4Address("TCP", "10.0.0.1", 8025))
        channel.makeConnection(transport)
        self.testcase.addCleanup(self._close, channel, transport)
        return channel, transport

    @staticmethod
    def _close(channel: GuardedChannel, transport: StringTransport) -> None:
        del transport
        channel.connectionLost(Failure(ConnectionError("test over")))

    def _no_timers_left(self) -> None:
        """Every connection's idle timer went with it."""
        self.testcase.assertEqual(self.clock.getDelayedCalls(), [])


def status(transport: StringTransport) -> bytes:
    """The status line written so far (b"" when nothing was)."""
    return transport.value().split(b"\r\n", 1)[0]


class RefusedBeforeBodyTests(SynchronousTestCase):
    """Unauthenticated and oversized requests are answered when their headers are in."""

    def test_unauthenticated_50mb_post(self) -> None:
        """A 50 MB POST without credentials gets 401 and a close on its headers alone."""
        gate = _Gate(self)
        channel, transport = gate.connect()
        channel.dataReceived(head("POST", "/api/v1/messages", length=50_000_000))
        self.assertEqual(status(transport), b"HTTP/1.1 401 Unauthorized")
        self.assertIn(b"Connection: close", transport.value())
        self.assertIn(b"WWW-Authenticate: Bearer", transport.value())
        self.assertTrue(transport.disconnecting)
        body = json.loads(transport.value().split(b"\r\n\r\n", 1)[1])
        self.assertIn("bearer token", body["error"])
        # Whatever the client still sends is dropped, not stored.
        written = transport.value()
        channel.dataReceived(b"x" * 65536)
        self.assertEqual(transport.value(), written)
        self.assertEqual(gate.pool.jobs, [])

    def test_wrong_fast_token(self) -> None:
        """A wrong token is refused at once when only sha256 tokens could match it."""
        gate = _Gate(self)
        gate.site.access.tokens._legacy.clear()
        channel, transport = gate.connect()
        channel.dataReceived(head("POST", "/api/v1/messages", "Authorization: Bearer nope",
                                  length=len(MESSAGE)))
        self.assertEqual(status(transport), b"HTTP/1.1 401 Unauthorized")
        self.assertTrue(transport.disconnecting)

    def test_over_the_route_limit(self) -> None:
        """Content-Length over the route's limit gets 413 before any verification."""
        gate = _Gate(self, max_message_size=1000)
        cases = [
            (head("POST", "/api/v1/messages", f"Authorization: Bearer {FAST_TOKEN}",
                  length=1000 * 2 + 1024 * 1024 + 1), b"larger than"),
            (head("POST", "/api/v1/suppressions", length=64 * 1024 + 1), b"larger than"),
            (head("POST", "/suppressions/add", length=16 * 1024 + 1), b"larger than"),
            (head("GET", "/api/v1/summary", length=10), b"takes no body"),
            (head("POST", "/metrics", length=1), b"takes no body"),
            (head("PUT", "/", length=1), b"takes no body"),
            (head("POST", "/%61pi/v1/summary", length=1), b"takes no body"),
        ]
        for request, message in cases:
            channel, transport = gate.connect()
            channel.dataReceived(request)
            self.assertEqual(status(transport), b"HTTP/1.1 413 Request Entity Too Large",
                             request)
            self.assertIn(message, transport.value())
            self.assertTrue(transport.disconnecting)
        self.assertEqual(gate.pool.jobs, [])

    def test_login_free_from_outside(self) -> None:
        """A form POST from a non-loopback client without users is refused with 403."""
        gate = _Gate(self, listen="tcp:8025:interface=127.0.0.1", tokens=False)
        channel, transport = gate.connect(OUTSIDE)
        channel.dataReceived(head("POST", "/suppressions/add", length=20))
        self.assertEqual(status(transport), b"HTTP/1.1 403 Forbidden")
        channel, transport = gate.connect(LOCAL)
        channel.dataReceived(head("POST", "/suppressions/add", "X-Forwarded-For: 192.0.2.1",
                                  length=20))
        self.assertEqual(status(transport), b"HTTP/1.1 403 Forbidden")
        self.assertIn(b"proxy", transport.value())

    def test_over_the_failure_limit(self) -> None:
        """An address over the failure limit gets 429 with Retry-After and no verification;
        the right sha256 token, which costs no verification, still passes the gate."""
        gate = _Gate(self)
        gate.site.access.tokens._legacy.clear()
        for i in range(10):
            channel, transport = gate.connect()
            channel.dataReceived(head("POST", "/api/v1/messages", f"Authorization: Bearer w{i}",
                                      length=len(MESSAGE)))
            self.assertEqual(status(transport), b"HTTP/1.1 401 Unauthorized")
        channel, transport = gate.connect()
        channel.dataReceived(head("POST", "/api/v1/messages", "Authorization: Bearer w10",
                                  length=len(MESSAGE)))
        self.assertEqual(status(transport), b"HTTP/1.1 429 Too Many Requests")
        self.assertIn(b"Retry-After: 60", transport.value())
        channel, transport = gate.connect()
        channel.dataReceived(head("POST", "/api/v1/messages", f"Authorization: Bearer {FAST_TOKEN}",
                                  length=len(MESSAGE)))
        self.assertEqual(transport.value(), b"")   # let in: the body is awaited


class ChunkedTests(SynchronousTestCase):
    """A chunked body is counted as it arrives and cut at the limit."""

    def test_cut_at_the_limit(self) -> None:
        """An allowed chunked suppression body over 64 KiB gets 413; nothing is stored."""
        gate = _Gate(self)
        channel, transport = gate.connect()
        channel.dataReceived(head("POST", "/api/v1/suppressions",
                                  f"Authorization: Bearer {FAST_TOKEN}", chunked=True))
        self.assertEqual(transport.value(), b"")
        for _ in range(4):
            channel.dataReceived(chunk(b" " * 16384))
        self.assertEqual(transport.value(), b"")
        channel.dataReceived(chunk(b" "))
        self.assertEqual(status(transport), b"HTTP/1.1 413 Request Entity Too Large")
        self.assertTrue(transport.disconnecting)
        channel.dataReceived(chunk(b'{"address": "a@x.test"}') + b"0\r\n\r\n")
        self.assertEqual(run(gate.store.suppressions(after=None, limit=10)), [])

    def test_within_the_limit(self) -> None:
        """A chunked body within the limit is read and handled."""
        gate = _Gate(self)
        channel, transport = gate.connect()
        channel.dataReceived(head("POST", "/api/v1/messages",
                                  f"Authorization: Bearer {FAST_TOKEN}", chunked=True))
        channel.dataReceived(chunk(MESSAGE[:10]) + chunk(MESSAGE[10:]) + b"0\r\n\r\n")
        self.assertEqual(status(transport), b"HTTP/1.1 201 Created")


class PendingCheckTests(SynchronousTestCase):
    """While a pbkdf2 token waits for the pool, the connection stops reading."""

    def test_wrong_token_waits_then_401(self) -> None:
        """The transport pauses, nothing is answered; after the pool, 401 and a close."""
        gate = _Gate(self)
        channel, transport = gate.connect()
        channel.dataReceived(head("POST", "/api/v1/messages", "Authorization: Bearer wrong",
                                  length=50_000_000) + b"x" * 1000)
        self.assertEqual(transport.producerState, "paused")
        self.assertEqual(transport.value(), b"")
        self.assertEqual(len(gate.pool.jobs), 1)
        gate.pool.run_all()
        self.assertEqual(status(transport), b"HTTP/1.1 401 Unauthorized")
        self.assertTrue(transport.disconnecting)

    def test_right_token_resumes(self) -> None:
        """After the pool says yes, the held bytes and the rest of the body make the request."""
        gate = _Gate(self)
        channel, transport = gate.connect()
        channel.dataReceived(head("POST", "/api/v1/messages", f"Authorization: Bearer {OLD_TOKEN}",
                                  length=len(MESSAGE)) + MESSAGE[:20])
        self.assertEqual(transport.producerState, "paused")
        gate.pool.run_all()
        self.assertEqual(transport.producerState, "producing")
        self.assertEqual(transport.value(), b"")
        channel.dataReceived(MESSAGE[20:])
        self.assertEqual(status(transport), b"HTTP/1.1 201 Created")
        match = re.search(rb'"queue_id": "(\w+)"', transport.value())
        assert match is not None
        queue_id = match.group(1).decode()
        self.assertIsNotNone(run(gate.store.get_message(queue_id)))
        self.assertEqual(len(gate.pool.jobs), 0)  # the resource's own check hit the cache

    def test_whole_request_in_one_read(self) -> None:
        """A body that arrived with the headers is processed once the pool says yes."""
        gate = _Gate(self)
        channel, transport = gate.connect()
        channel.dataReceived(head("POST", "/api/v1/messages", f"Authorization: Bearer {OLD_TOKEN}",
                                  length=len(MESSAGE)) + MESSAGE)
        self.assertEqual(transport.value(), b"")
        gate.pool.run_all()
        self.assertEqual(status(transport), b"HTTP/1.1 201 Created")

    def test_expect_continue(self) -> None:
        """"100 Continue" goes out only once the credentials are verified."""
        gate = _Gate(self)
        channel, transport = gate.connect()
        channel.dataReceived(head("POST", "/api/v1/messages", f"Authorization: Bearer {OLD_TOKEN}",
                                  "Expect: 100-continue", length=len(MESSAGE)))
        self.assertEqual(transport.value(), b"")
        gate.pool.run_all()
        self.assertEqual(transport.value(), b"HTTP/1.1 100 Continue\r\n\r\n")
        transport.clear()
        channel.dataReceived(MESSAGE)
        self.assertEqual(status(transport), b"HTTP/1.1 201 Created")

    def test_expect_continue_refused(self) -> None:
        """A refused request with Expect: 100-continue gets the refusal and no 100."""
        gate = _Gate(self)
        channel, transport = gate.connect()
        channel.dataReceived(head("POST", "/api/v1/messages", "Expect: 100-continue",
                                  length=len(MESSAGE)))
        self.assertEqual(status(transport), b"HTTP/1.1 401 Unauthorized")
        self.assertNotIn(b"100 Continue", transport.value())

    def test_client_gone(self) -> None:
        """A client that leaves while its check waits is simply forgotten."""
        gate = _Gate(self)
        channel, transport = gate.connect()
        channel.dataReceived(head("POST", "/api/v1/messages", f"Authorization: Bearer {OLD_TOKEN}",
                                  length=len(MESSAGE)))
        channel.connectionLost(Failure(ConnectionError("gone")))
        gate.pool.run_all()
        self.assertEqual(transport.value(), b"")


class _Client(Protocol):
    """Sends bytes on connect and collects the answer until the server closes."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.received = b""
        self.done: Deferred[bytes] = Deferred()

    def connectionMade(self) -> None:  # noqa: N802 - Twisted
        assert self.transport is not None
        self.transport.write(self.data)

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted
        self.received += data

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]  # noqa: N802
        self.done.callback(self.received)


class LoopbackGateTests(TestCase):
    """Over a real socket on 127.0.0.1: the answer comes before any body byte is sent."""

    async def start(self, verifier: SecretVerifier | None = None) -> int:
        """Listen with a site whose API needs a token; the port."""
        store = MemoryStore()
        await store.open()
        config = Config(web=WebConfig(
            listen=("tcp:0:interface=127.0.0.1",),
            tokens={"app": hash_token(FAST_TOKEN),
                    "old": hash_password(OLD_TOKEN, iterations=1000)}))
        site = build_web_site(config, store, reactor, on_enqueued=lambda: None,
                              verifier=verifier)
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(site)
        self.addCleanup(port.stopListening)
        return port.getHost().port

    async def send(self, port: int, data: bytes) -> bytes:
        """Send ``data`` (and nothing after it); the whole answer once the server closes."""
        client = _Client(data)
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)
        return await client.done

    async def test_headers_only_50mb_post(self) -> None:
        """A 50 MB POST without a token: 401 and a close, though no body byte was sent."""
        port = await self.start()
        answer = await self.send(port, head("POST", "/api/v1/messages", length=50_000_000))
        self.assertTrue(answer.startswith(b"HTTP/1.1 401 Unauthorized\r\n"), answer)

    async def test_wrong_pbkdf2_token_in_the_pool(self) -> None:
        """A wrong token checked against pbkdf2 hashes is hashed on pool threads only."""
        pool = ThreadPool(1, 2, name="test-web-auth")
        pool.start()
        self.addCleanup(pool.stop)
        port = await self.start(SecretVerifier(threadpool_runner(reactor, pool)))
        recorder = Pbkdf2Recorder()
        self.patch(passwords, "hashlib", recorder)
        answer = await self.send(port, head("POST", "/api/v1/messages", "Authorization: Bearer x",
                                            length=50_000_000))
        self.assertTrue(answer.startswith(b"HTTP/1.1 401 Unauthorized\r\n"), answer)
        self.assertEqual(len(recorder.calls), 1)
        self.assertNotIn(threading.get_ident(), recorder.threads())

    async def test_right_token_is_served(self) -> None:
        """With the right token the body is read and the message queued (201)."""
        port = await self.start()
        answer = await self.send(port, head("POST", "/api/v1/messages", "Connection: close",
                                            f"Authorization: Bearer {FAST_TOKEN}",
                                            length=len(MESSAGE)) + MESSAGE)
        self.assertTrue(answer.startswith(b"HTTP/1.1 201 Created\r\n"), answer)
