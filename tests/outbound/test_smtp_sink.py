"""200 messages on one connection to Postfix's smtp-sink on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from typing import Any

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from hurricane.outbound.client import Connector
from tests.peers import missing_peer

from .helpers import TIMEOUTS, message

SMTP_SINK = "/usr/sbin/smtp-sink"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_listening(port: int, deadline: float) -> None:
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


class SmtpSinkTests(TestCase):
    """The client against a real, independent ESMTP implementation."""

    timeout = 60

    def setUp(self) -> None:
        path = shutil.which("smtp-sink") or (SMTP_SINK if os.path.exists(SMTP_SINK) else None)
        if path is None:
            missing_peer(f"Postfix smtp-sink not installed ({SMTP_SINK}; Debian package postfix)")
        self.port = _free_port()
        args = [path]
        if os.geteuid() == 0:
            args += ["-u", "nobody"]
        self.sink = subprocess.Popen(
            [*args, f"127.0.0.1:{self.port}", "1024"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self.addCleanup(self._stop_sink)
        _wait_listening(self.port, time.monotonic() + 5)

    def _stop_sink(self) -> None:
        self.sink.terminate()
        try:
            self.sink.wait(5)
        except subprocess.TimeoutExpired:
            self.sink.kill()
            self.sink.wait()

    @defer.inlineCallbacks
    def test_200_messages_on_one_connection(self) -> Any:
        """All 200 messages get a 2xx after the dot on a single pipelined connection."""
        from twisted.internet import reactor

        connector = Connector(reactor, TIMEOUTS)
        conn = yield defer.Deferred.fromCoroutine(connector.connect(
            "localhost", "127.0.0.1", self.port, tls_policy="none", helo="client.test"))
        self.assertIn("PIPELINING", conn.extensions)
        body = b"Subject: sink test\r\n\r\n" + (b"." + b"x" * 76 + b"\n") * 64
        codes = []
        for i in range(200):
            result = yield defer.Deferred.fromCoroutine(
                conn.send(message(f"user{i}@example.test", "other@example.test", body=body)))
            codes.extend((r.reply.code if r.reply else None, r.phase) for r in result)
            self.assertTrue(conn.usable)
        self.assertEqual(codes, [(250, "dot")] * 400)
        yield defer.Deferred.fromCoroutine(conn.close())
        # Let the transport finish closing before the reactor is checked.
        yield conn.protocol.when_lost()
