"""Throughput of one client connection to Postfix's smtp-sink (not a test).

Usage: /work/venv/bin/python -m tests.outbound.bench_sink [MESSAGES]

Starts ``smtp-sink -u nobody 127.0.0.1:PORT 1024`` on a free loopback port,
sends MESSAGES (default 5000) messages of about 5 KB, one recipient each, on
one pipelined connection, and prints messages/s and CPU per message.
"""

from __future__ import annotations

import resource
import sys
import time

from twisted.internet import defer

from hurricane.config import TimeoutsConfig
from hurricane.outbound.client import Connector
from hurricane.outbound.interface import OutboundMessage, OutboundRecipient
from tests.process import free_port, smtp_sink_argv, stop_process, wait_port

from .test_smtp_sink import SMTP_SINK


async def _run(reactor: object, port: int, count: int) -> None:
    connector = Connector(reactor, TimeoutsConfig())  # type: ignore[arg-type]
    conn = await connector.connect("localhost", "127.0.0.1", port, tls_policy="none",
                                   helo="bench.test")
    body = b"Subject: bench\r\n\r\n" + (b"y" * 78 + b"\r\n") * 62
    msg = OutboundMessage("b@example.com", (OutboundRecipient(1, "u@example.test"),), body)
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    delivered = 0
    for _ in range(count):
        delivered += (await conn.send(msg))[0].delivered
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) / count
    print(f"{count} messages of {len(body)} B on one connection: {elapsed:.2f} s, "
          f"{count / elapsed:.0f} msg/s, {cpu * 1e6:.0f} us CPU/msg, delivered {delivered}")
    await conn.close()


def main() -> None:
    """Run the benchmark."""
    import subprocess

    from twisted.internet import reactor

    count = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    port = free_port()
    sink = subprocess.Popen(smtp_sink_argv(SMTP_SINK, port, 1024))
    try:
        wait_port(port, 5)
        d = defer.Deferred.fromCoroutine(_run(reactor, port, count))
        d.addErrback(lambda f: f.printTraceback())
        d.addBoth(lambda _: reactor.stop())  # type: ignore[attr-defined]
        reactor.run()  # type: ignore[attr-defined]
    finally:
        stop_process(sink, 5)


if __name__ == "__main__":
    main()
