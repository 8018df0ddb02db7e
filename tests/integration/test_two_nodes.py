"""Two Hurricane nodes on one PostgreSQL database never send a delivery twice."""

from __future__ import annotations

import glob
import os
import re
import shutil
import tempfile
import time
from collections import Counter
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from hurricane.app import build_service, store_from_config
from hurricane.config import config_from_dict
from hurricane.model import NewMessage, NewRecipient, State
from tests.e2e.helpers import postgres_url
from tests.peers import missing_peer
from tests.process import free_port, start_smtp_sink

SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
MESSAGES = 2000


class TwoNodesTests(TestCase):
    """Two service trees share a database and deliver a load exactly once."""

    timeout = 240

    def setUp(self) -> None:
        if not os.path.exists(SMTP_SINK):
            missing_peer("smtp-sink (Debian package postfix) is not installed")
        self.url = postgres_url(self)  # a fresh database, dropped afterwards
        self.dir = tempfile.mkdtemp()
        os.chmod(self.dir, 0o755)  # smtp-sink runs as nobody and must reach the dump dir
        self.dump = os.path.join(self.dir, "sink")
        os.mkdir(self.dump)
        os.chmod(self.dump, 0o777)  # smtp-sink drops privileges to nobody
        self.sink_port = free_port()
        self.sink = start_smtp_sink(SMTP_SINK, self.sink_port, self, backlog=256,
                                    dump_dir=self.dump)

    def node(self, name: str) -> Any:
        config = config_from_dict({
            "server": {"hostname": f"{name}.test", "data_dir": os.path.join(self.dir, name),
                       "node_id": name},
            "store": {"url": self.url, "pool_size": 2},
            "bounce": {"domain": "bounces.test", "listen": ["tcp:0:interface=127.0.0.1"],
                       "keys_file": os.path.join(self.dir, "verp-keys.json")},
            "submission": {"listen": ["tcp:0:interface=127.0.0.1"]},
            "web": {"listen": ["tcp:0:interface=127.0.0.1"]},
            "routes": {"*": f"127.0.0.1:{self.sink_port}"},
            "delivery": {"first_retry": 1.0, "max_retry_interval": 2.0, "poll_interval": 0.2,
                         "lease_seconds": 60.0, "max_connections_per_destination": 4},
        })
        fatal: list[str] = []
        service = build_service(config, reactor, on_fatal=fatal.append)
        return service, fatal

    async def wait_until(self, predicate: Any, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if await predicate():
                return
            await deferLater(reactor, 0.25, lambda: None)
        self.fail("timed out")

    def test_no_duplicates(self) -> Deferred[None]:
        """2,000 queued messages, two schedulers racing: each reaches the sink exactly once."""
        return Deferred.fromCoroutine(self._no_duplicates())

    async def _no_duplicates(self) -> None:
        a, fatal_a = self.node("node-a")
        a.startService()
        await a.started
        self.addCleanup(lambda: a.running and a.stopService())
        b, fatal_b = self.node("node-b")
        b.startService()
        await b.started
        self.addCleanup(lambda: b.running and b.stopService())
        store = a.store
        # both schedulers are running while the queue fills: they race for rows
        domains = [f"d{i}.test" for i in range(5)]
        for i in range(MESSAGES):
            rcpt = f"user{i}@{domains[i % len(domains)]}"
            body = f"Subject: m{i}\r\nMessage-ID: <m{i}@app.test>\r\n\r\nbody {i}\r\n".encode()
            message = NewMessage("app@app.test", (NewRecipient(rcpt),), body)
            await store.enqueue(message, time.time())

        async def drained() -> bool:
            depth = await store.queue_depth()
            return sum(depth.values()) == 0

        await self.wait_until(drained, 180)
        await a.stopService()
        await b.stopService()
        self.assertEqual(fatal_a + fatal_b, [])

        # every message file the sink wrote names its recipient
        seen: Counter[str] = Counter()
        for path in glob.glob(os.path.join(self.dump, "*")):
            with open(path, "rb") as fp:
                head = fp.read(4096).decode("latin-1")
            m = re.search(r"X-Rcpt-Args: <([^>]+)>", head)
            self.assertIsNotNone(m, head)
            assert m is not None
            seen[m.group(1)] += 1
        self.assertEqual(len(seen), MESSAGES)
        self.assertEqual([r for r, n in seen.items() if n > 1], [])

        # and the store agrees: all delivered, attempts split between the nodes
        reader = store_from_config(a.config, reactor)
        await reader.open()
        self.addCleanup(lambda: Deferred.fromCoroutine(reader.close()))
        summary = await reader.summary()
        self.assertEqual(summary.by_state.get(State.delivered.value, 0), MESSAGES)
