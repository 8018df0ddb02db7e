"""200 messages on one connection to Postfix's smtp-sink on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
from typing import Any

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from hurricane.outbound.client import Connector
from tests.peers import missing_peer
from tests.process import free_port, start_smtp_sink

from .helpers import TIMEOUTS, message

SMTP_SINK = "/usr/sbin/smtp-sink"


class SmtpSinkTests(TestCase):
    """The client against a real, independent ESMTP implementation."""

    timeout = 60

    def setUp(self) -> None:
        path = shutil.which("smtp-sink") or (SMTP_SINK if os.path.exists(SMTP_SINK) else None)
        if path is None:
            missing_peer(f"Postfix smtp-sink not installed ({SMTP_SINK}; Debian package postfix)")
        self.port = free_port()
        self.sink = start_smtp_sink(path, self.port, self, backlog=1024, timeout=5)

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
