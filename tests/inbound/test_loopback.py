"""The bounce receiver on a real loopback socket: smtplib and swaks."""

from __future__ import annotations

import os
import smtplib
import subprocess

from twisted.internet import reactor, threads
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from hurricane.config import BounceConfig
from hurricane.inbound.server import build_bounce_factory
from hurricane.model import ReturnedMessage
from hurricane.store.memory import MemoryStore
from tests.inbound.test_policy import CODEC, DOMAIN, GOOD
from tests.peers import missing_peer
from tests.smtpd.helpers import SWAKS, wait_for_no_connections

DSN = (b"From: MAILER-DAEMON@mx.example.net\r\nSubject: failure notice\r\n\r\n"
       b"550 5.1.1 <someone@example.net>: user unknown\r\n")


class BounceLoopbackTests(TestCase):
    def keep(self, bounce_id: int, message: ReturnedMessage) -> None:
        """on_stored: the id, and the message it was stored from."""
        self.stored.append(bounce_id)
        self.messages.append(message)

    def setUp(self) -> None:
        self.store = MemoryStore()
        self.successResultOf(Deferred.fromCoroutine(self.store.open()))
        self.stored: list[int] = []
        self.messages: list[ReturnedMessage] = []
        self.factory = build_bounce_factory(BounceConfig(domain=DOMAIN), CODEC, self.store,
                                            "mx.bounces.example.com", reactor,
                                            self.keep)
        self.port = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)

    async def _stored(self) -> list:
        await wait_for_no_connections(self.factory, reactor)
        return [await self.store.load_bounce(i) for i in self.stored]

    def test_smtplib_null_sender(self) -> None:
        """A DSN from the null sender to a VERP address is stored with its delivery id."""
        port = self.port.getHost().port

        def client() -> tuple[dict, tuple[int, bytes]]:
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
                s.ehlo("mx.example.net")
                refused = s.sendmail("", [GOOD], DSN)
                relay = s.rcpt("victim@example.com") if s.mail("") else None
                return refused, relay

        def check(result: tuple[dict, tuple[int, bytes]]) -> Deferred:
            refused, relay = result
            self.assertEqual(refused, {})
            self.assertEqual(relay[0], 550)
            self.assertTrue(relay[1].startswith(b"5.7.1"))
            return Deferred.fromCoroutine(self._stored())

        def stored(bounces: list) -> None:
            (bounce,) = bounces
            self.assertEqual((bounce.delivery_id, bounce.mail_from, bounce.rcpt_to),
                             (42, "", GOOD))
            self.assertTrue(bounce.raw.endswith(DSN))

        return threads.deferToThread(client).addCallback(check).addCallback(stored)

    def test_swaks(self) -> None:
        """swaks sends a bounce to postmaster and to a VERP address: stored once for both."""
        if not os.path.exists(SWAKS):
            missing_peer(f"{SWAKS} not installed (apt-get install swaks)")
        port = self.port.getHost().port

        def client() -> subprocess.CompletedProcess:
            return subprocess.run(
                [SWAKS, "--server", "127.0.0.1", "--port", str(port), "--ehlo", "mx.example.net",
                 "--from", "<>", "--to", f"{GOOD},postmaster@{DOMAIN}", "--timeout", "10"],
                capture_output=True, text=True, timeout=30)

        def check(result: subprocess.CompletedProcess) -> Deferred:
            self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
            return Deferred.fromCoroutine(self._stored())

        def stored(bounces: list) -> None:
            (bounce,) = bounces
            self.assertEqual([(r.address, r.delivery_id) for r in bounce.recipients],
                             [(GOOD, 42), (f"postmaster@{DOMAIN}", None)])

        return threads.deferToThread(client).addCallback(check).addCallback(stored)
