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
from twisted.internet.defer import Deferred
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
