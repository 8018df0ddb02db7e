"""The submission listener on a real loopback socket: smtplib with STARTTLS and AUTH, swaks."""

from __future__ import annotations

import dataclasses
import os
import shutil
import smtplib
import ssl
import subprocess
import tempfile

import trustme
from twisted.internet import reactor, threads
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.protocol import ClientCreator, Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from hurricane.config import SubmissionConfig
from hurricane.passwords import hash_password
from hurricane.smtpd.tls import tls_context_from_files
from hurricane.store.memory import MemoryStore
from hurricane.submission.server import build_submission_factory
from tests.peers import missing_peer
from tests.smtpd.helpers import SWAKS, wait_for_no_connections

MESSAGE = (b"From: app@example.org\r\nTo: a@example.com\r\nSubject: loopback\r\n"
           b"X-Hurricane-Mailing-Id: loop-1\r\n\r\nHello over TLS.\r\n")


class SubmissionLoopbackTests(TestCase):
    def setUp(self) -> None:
        self.store = MemoryStore()
        self.successResultOf(Deferred.fromCoroutine(self.store.open()))
        self.ca = trustme.CA()
        cert = self.ca.issue_cert("localhost", "127.0.0.1")
        # Not self.mktemp(): under pytest that writes into the work tree.
        tmp = tempfile.mkdtemp(prefix="hurricane-test-")
        self.addCleanup(shutil.rmtree, tmp, True)
        self.cert_path = os.path.join(tmp, "cert.pem")
        self.key_path = os.path.join(tmp, "key.pem")
        with open(self.cert_path, "wb") as fp:
            for blob in cert.cert_chain_pems:
                fp.write(blob.bytes())
        cert.private_key_pem.write_to_path(self.key_path)
        users_file = os.path.join(tmp, "users")
        with open(users_file, "w") as fp:
            fp.write("# comment\n\nalice:" + hash_password("s3cret", iterations=1000) + "\n")
        config = dataclasses.replace(
            SubmissionConfig(), users_file=users_file, require_auth=True,
            tls_certificate=self.cert_path, tls_key=self.key_path)
        self.woken = 0
        self.factory = build_submission_factory(config, self.store, "submit.test.example",
                                                reactor, self.wake)
        self.port = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)

    def wake(self, message_pk: int, body: bytes | None) -> None:
        self.woken += 1

    async def _deliveries(self) -> list:
        await wait_for_no_connections(self.factory, reactor)
        return await self.store.find_deliveries()

    def test_smtplib_starttls_auth_plain(self) -> None:
        """smtplib negotiates STARTTLS with the configured certificate, AUTH PLAIN, and sends."""
        port = self.port.getHost().port

        def client() -> dict:
            context = ssl.create_default_context()
            self.ca.configure_trust(context)
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
                s.ehlo("app.example")
                s.starttls(context=context)
                s.ehlo("app.example")
                assert "PLAIN" in s.esmtp_features["auth"], s.esmtp_features
                s.login("alice", "s3cret")
                return s.sendmail("app@example.org", ["a@example.com"], MESSAGE)

        d = threads.deferToThread(client)

        def check(refused: dict) -> Deferred:
            self.assertEqual(refused, {})
            return Deferred.fromCoroutine(self._deliveries())

        def stored(deliveries: list) -> None:
            (delivery,) = deliveries
            self.assertEqual((delivery.recipient, delivery.mailing_id),
                             ("a@example.com", "loop-1"))
            self.assertEqual(self.woken, 1)

        return d.addCallback(check).addCallback(stored)

    def test_swaks(self) -> None:
        """swaks (a real third-party client) submits over STARTTLS with AUTH PLAIN."""
        if not os.path.exists(SWAKS):
            missing_peer(f"{SWAKS} not installed (apt-get install swaks)")
        port = self.port.getHost().port

        def client() -> subprocess.CompletedProcess:
            return subprocess.run(
                [SWAKS, "--server", "127.0.0.1", "--port", str(port), "--ehlo", "app.example",
                 "--from", "app@example.org", "--to", "b@example.com", "--tls",
                 "--auth", "PLAIN", "--auth-user", "alice", "--auth-password", "s3cret",
                 "--header", "X-Hurricane-Message-Id: swaks-1", "--timeout", "10"],
                capture_output=True, text=True, timeout=30)

        def check(result: subprocess.CompletedProcess) -> Deferred:
            self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
            self.assertIn("250 2.0.0 Ok: queued as", result.stdout)
            return Deferred.fromCoroutine(self._deliveries())

        def stored(deliveries: list) -> None:
            (delivery,) = deliveries
            self.assertEqual((delivery.recipient, delivery.message_id),
                             ("b@example.com", "swaks-1"))

        return threads.deferToThread(client).addCallback(check).addCallback(stored)


class TLSContextTests(TestCase):
    def test_bad_files_name_the_file(self) -> None:
        """A missing or wrong certificate file raises ValueError naming it."""
        # Not self.mktemp(): under pytest that writes into the work tree.
        tmp = tempfile.mkdtemp(prefix="hurricane-test-")
        self.addCleanup(shutil.rmtree, tmp, True)
        missing = os.path.join(tmp, "missing.pem")
        with self.assertRaises(ValueError) as cm:
            tls_context_from_files(missing, missing)
        self.assertIn("missing.pem", str(cm.exception))
        junk = os.path.join(tmp, "junk.pem")
        with open(junk, "w") as fp:
            fp.write("not a certificate\n")
        with self.assertRaises(ValueError) as cm:
            tls_context_from_files(junk, junk)
        self.assertIn("junk.pem", str(cm.exception))


class _Greeting(Protocol):
    """Reads the server's first reply line, then waits to be closed."""

    def __init__(self) -> None:
        self.greeted: Deferred[bytes] = Deferred()
        self.closed: Deferred[None] = Deferred()
        self._buffer = b""

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        if b"\r\n" in self._buffer and not self.greeted.called:
            self.greeted.callback(self._buffer.split(b"\r\n", 1)[0])

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not self.greeted.called:
            self.greeted.callback(b"")
        self.closed.callback(None)


class ConnectionPoolLoopbackTests(TestCase):
    """Connection pools over real loopback sockets: trusted ones are not capped per address."""

    timeout = 60

    def setUp(self) -> None:
        self.store = MemoryStore()
        self.successResultOf(Deferred.fromCoroutine(self.store.open()))
        # 127.0.0.1 is trusted; 127.0.0.2 (also loopback) is not.
        config = dataclasses.replace(SubmissionConfig(), trusted_networks=("127.0.0.1/32",))
        self.factory = build_submission_factory(config, self.store, "submit.test.example",
                                                reactor)
        self.port = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)

    async def _open(self, count: int, source: str) -> list[tuple[_Greeting, bytes]]:
        """Open ``count`` connections at once from ``source``; each with its greeting line."""
        port = self.port.getHost().port
        connecting = [
            ClientCreator(reactor, _Greeting).connectTCP("127.0.0.1", port, timeout=10,
                                                         bindAddress=(source, 0))
            for _ in range(count)
        ]
        protos: list[_Greeting] = await gatherResults(connecting)
        lines = await gatherResults([p.greeted for p in protos])
        return list(zip(protos, lines, strict=True))

    async def _close(self, opened: list[tuple[_Greeting, bytes]]) -> None:
        for proto, _ in opened:
            proto.transport.loseConnection()
        await gatherResults([proto.closed for proto, _ in opened])
        await wait_for_no_connections(self.factory, reactor)

    async def _pool(self) -> None:
        trusted = await self._open(50, "127.0.0.1")
        untrusted = await self._open(21, "127.0.0.2")
        try:
            self.assertEqual([line[:4] for _, line in trusted], [b"220 "] * 50)
            # which of the 21 is refused depends on accept order; the count does not
            self.assertEqual(sorted(line[:4] for _, line in untrusted),
                             [b"220 "] * 20 + [b"421 "])
        finally:
            await self._close(trusted + untrusted)

    def test_trusted_pool_greeted(self) -> Deferred[None]:
        """50 connections at once from trusted 127.0.0.1 are all greeted (the per-address
        limit is 20); from untrusted 127.0.0.2 the 21st gets 421."""
        return Deferred.fromCoroutine(self._pool())
