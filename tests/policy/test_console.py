"""The same release, cancel and providers through the console and the command
(issue 19: every front end goes through Operations)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

from twisted.internet import reactor, threads
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from hurricane.admin.manhole import make_namespace
from hurricane.config import DeliveryConfig, ProviderConfig
from hurricane.operations import InvalidRequest, Operations
from hurricane.policy.providers import PolicyAction, ProviderLimiter, ProviderMap
from hurricane.service import HurricaneService
from hurricane.store.policy import PolicyStore
from hurricane.store.sqlite import SqliteStore
from tests.store.contract import T0, message

CONFIG = """
[server]
data_dir = "{data}"
[delivery]
rate_per_minute = 0
[[delivery.providers]]
name = "google"
mx = ["*.google.com"]
rate_per_minute = 6000
"""


class ConsoleAndCommandTests(TestCase):
    """A held mailing released from the console, another cancelled by the command."""

    async def setUp(self) -> None:
        self.data = tempfile.mkdtemp()
        self.store = SqliteStore(os.path.join(self.data, "hurricane.db"), reactor)
        await self.store.open()
        self.addCleanup(lambda: Deferred.fromCoroutine(self.store.close()))
        self.policy = PolicyStore(self.store)
        for mailing in ("Spring", "Summer"):
            await self.store.enqueue(message("a@x.test", "b@x.test", mailing_id=mailing), T0)
            await self.policy.hold_mailing(mailing, T0, "n", [], PolicyAction(
                T0, "mailing", mailing, "hold", "hard_bounce_rate 0.5 > 0.05", "sending",
                "held", {"decided": 50, "hard": 25}))

    async def test_console(self) -> None:
        root = HurricaneService(self.store, on_fatal=lambda msg: None)
        limiter = ProviderLimiter(ProviderMap(DeliveryConfig(providers=(ProviderConfig(
            name="google", mx=("*.google.com",), rate_per_minute=6000),))),
            DeliveryConfig().adaptive)
        ops = Operations(self.store, reactor, limiter=limiter)
        ns = make_namespace(root, ops)
        self.assertEqual(await ns["release_mailing"]("Spring"), 2)
        with self.assertRaises(InvalidRequest):
            await ns["cancel_mailing"]("no-such-mailing")
        rows = await ns["providers"]()
        self.assertEqual([r["provider"] for r in rows], ["google", "default"])
        self.assertEqual(rows[0]["rate_per_minute"], 6000)

    async def test_command(self) -> None:
        path = os.path.join(self.data, "h.toml")
        with open(path, "w") as fp:
            fp.write(CONFIG.format(data=self.data))

        def hurricane(*argv: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-m", "hurricane.cli", *argv],
                                  capture_output=True, text=True, timeout=60)

        done = await threads.deferToThread(hurricane, "mailing", "cancel", "--config", path,
                                           "Summer")
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertIn("cancelled 2 held recipients of Summer", done.stdout)
        again = await threads.deferToThread(hurricane, "mailing", "release", "--config",
                                            path, "nope")
        self.assertEqual(again.returncode, 2)
        self.assertIn("nope was never held", again.stderr)
        shown = await threads.deferToThread(hurricane, "mailing", "show", "--config", path,
                                            "summer")
        self.assertEqual(json.loads(shown.stdout)["breaker"]["state"], "cancelled")
        listed = await threads.deferToThread(hurricane, "providers", "--config", path,
                                             "--json")
        self.assertEqual(listed.returncode, 0, listed.stderr)
        rows = json.loads(listed.stdout)["providers"]
        self.assertEqual(rows[0]["provider"], "google")
        self.assertEqual(rows[0]["mx"], ["*.google.com"])
        text = await threads.deferToThread(hurricane, "providers", "--config", path)
        self.assertIn("google: max_connections 5, rate 6000/min configured", text.stdout)
