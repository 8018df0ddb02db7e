"""A real ``twistd -n hurricane --config FILE`` process: start, submit with swaks, deliver
to the sink, SIGTERM, exit 0."""

from __future__ import annotations

import os
import shutil
import subprocess

from twisted.internet import reactor, threads
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from hurricane.demo import write_toml
from hurricane.sink.scenario import default_scenario
from hurricane.sink.server import SinkFactory
from tests.e2e.helpers import tmpdir
from tests.process import (
    listeners,
    read_log,
    sleep,
    start_twistd,
    stop_process_async,
    wait_started_async,
)

SWAKS = shutil.which("swaks") or "/usr/bin/swaks"


async def terminate(proc: subprocess.Popen[bytes]) -> int | None:
    """SIGTERM ``proc`` and wait (at most 15 s) for its exit status."""
    return await stop_process_async(proc, 15.0)


async def run_twistd(test: TestCase, config: str,
                     work: str) -> tuple[subprocess.Popen[bytes], dict[str, int], str]:
    """Start ``twistd -n hurricane --config FILE`` (tests.process); wait until it has
    started, and return it with its submission and bounce ports and its log."""
    log_path = os.path.join(work, "twistd.log")
    proc = start_twistd(["--config", config], work, log_path, test)
    text = await wait_started_async(proc, log_path, 30.0)
    ports = {kind: port for kind, host, port in listeners(text)
             if kind in ("submission", "bounce") and host == "127.0.0.1"}
    test.assertEqual(set(ports), {"submission", "bounce"}, text)
    return proc, ports, log_path


def write_config(work: str, sink_port: int) -> str:
    """A configuration on loopback port 0, routing everything to the sink."""
    config = os.path.join(work, "hurricane.toml")
    write_toml({
        "server": {"hostname": "twistd.hurricane.test", "data_dir": os.path.join(work, "data")},
        "submission": {"listen": ["tcp:0:interface=127.0.0.1"]},
        "bounce": {"listen": ["tcp:0:interface=127.0.0.1"]},
        "web": {"listen": []},
        "delivery": {"poll_interval": 0.2, "first_retry": 1.0},
        "routes": {"*": f"127.0.0.1:{sink_port}"},
    }, config)
    return config


class TwistdProcessTests(TestCase):
    """The packaged twistd plugin as an operator runs it."""

    timeout = 60

    def test_start_submit_deliver_sigterm(self) -> Deferred[None]:
        """twistd logs its listeners, swaks submits, the sink receives, SIGTERM exits 0."""
        if not os.path.exists(SWAKS):
            if os.environ.get("HURRICANE_REQUIRE_PEERS") == "1":
                raise AssertionError("swaks missing (apt-get install swaks)")
            self.skipTest("swaks not installed (apt-get install swaks)")
        return Deferred.fromCoroutine(self._scenario())

    async def _scenario(self) -> None:
        work = tmpdir(self)
        sink = SinkFactory(default_scenario(), reactor)
        sink.keep = True
        port = reactor.listenTCP(0, sink, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        config = write_config(work, port.getHost().port)
        proc, ports, log_path = await run_twistd(self, config, work)

        def swaks() -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [SWAKS, "--server", "127.0.0.1", "--port", str(ports["submission"]),
                 "--ehlo", "app.test", "--from", "app@shop.test", "--to", "reader@x.test",
                 "--header", "X-Hurricane-Mailing-Id: twistd-1", "--timeout", "10"],
                capture_output=True, text=True, timeout=30)

        result = await threads.deferToThread(swaks)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn("250 2.0.0 Ok: queued as", result.stdout)
        for _ in range(100):
            if sink.accepted:
                break
            await sleep(0.1)
        ((acc, behaviour),) = sink.accepted
        self.assertEqual((acc.rcpt, behaviour.name), ("reader@x.test", "accept"))
        self.assertTrue(acc.mail_from.endswith("@bounces.localhost"), acc.mail_from)
        self.assertIn(b"X-Hurricane-Token: " + acc.mail_from.encode(), acc.data)
        self.assertNotIn(b"X-Hurricane-Mailing-Id", acc.data)
        rc = await terminate(proc)
        text = read_log(log_path)
        self.assertIn("hurricane stopped", text)
        self.assertIn("Server Shut Down.", text)
        self.assertEqual(rc, 0)
        for _ in range(50):  # let the delivery connection close on our side
            if not sink.connections.count():
                break
            await sleep(0.05)

    def test_sigterm_exits_zero(self) -> Deferred[None]:
        """SIGTERM ends twistd with status 0 (operators and systemd read it as success)."""
        async def scenario() -> None:
            work = tmpdir(self)
            proc, _, _ = await run_twistd(self, write_config(work, 9), work)
            self.assertEqual(await terminate(proc), 0)

        return Deferred.fromCoroutine(scenario())


