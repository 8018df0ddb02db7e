#!/usr/bin/env python3
"""Queue depth: drain throughput and memory with 10^3, 10^4 and 10^5 queued recipients.

    python bench/scale.py [--sizes 1000,10000,100000] [--no-append]

For each size N: N messages (2,000 octets, one recipient each, spread over
ten domains) are written straight into a fresh SQLite store (the store's own
group-committed ``enqueue``, in a child process), so the queue really is N
deep when the server starts; then ``hurricane sink`` starts, then a real
``twistd -n hurricane`` on that data directory with every route pointing at
the sink, and the queue drains. Reported: the drain rate (messages/s from
the moment the server listens until the sink counted N), the
per-message cost (ms), and Hurricane's RSS two seconds in, its peak and at
the end. Flat per-message cost and RSS that does not grow with N are the
goal: the scheduler claims in bounded pages, so nothing in memory should
follow queue depth. Every wait is bounded.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from _common import (  # noqa: E402
    ROOT,
    Hurricane,
    Sink,
    append_results,
    machine,
    peak_rss_mib,
    rss_mib,
    wait_for,
)

DOMAINS = 10


def prefill(path: str, n: int) -> None:
    """Enqueue ``n`` messages into the SQLite store at ``path`` (child-process mode)."""
    sys.path.insert(0, ROOT)
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred, ensureDeferred, gatherResults
    from twisted.internet.task import react

    from hurricane.model import NewMessage, NewRecipient
    from hurricane.store.sqlite import SqliteStore

    filler = b"x" * 76 + b"\r\n"

    def one(i: int) -> NewMessage:
        head = (f"From: app@bench.test\r\nTo: r{i}@d{i % DOMAINS}.test\r\n"
                f"Subject: scale {i}\r\nMessage-ID: <scale-{i}@bench.test>\r\n\r\n").encode()
        body = head + filler * ((2000 - len(head)) // len(filler))
        return NewMessage(sender="app@bench.test",
                          recipients=(NewRecipient(f"r{i}@d{i % DOMAINS}.test"),), body=body)

    async def run(_: Any) -> None:
        store = SqliteStore(path, reactor, "NORMAL")
        await store.open()
        now = time.time()
        t0 = time.monotonic()
        for start in range(0, n, 1000):
            await gatherResults([Deferred.fromCoroutine(store.enqueue(one(i), now))
                                 for i in range(start, min(n, start + 1000))])
        await store.close()
        print(f"prefilled {n} in {time.monotonic() - t0:.1f} s", flush=True)

    react(lambda r: ensureDeferred(run(r)))


def mib(value: float | None) -> str:
    """A memory figure for the table; n/a when it was never sampled."""
    return "n/a" if value is None else f"{value:.0f}"


def one(n: int, timeout: float) -> list[Any]:
    """Measure one queue size; the table row."""
    base = tempfile.mkdtemp(prefix="bench-scale-")
    data_dir = os.path.join(base, "data")
    os.makedirs(data_dir)
    subprocess.run([sys.executable, os.path.abspath(__file__), "--prefill",
                    os.path.join(data_dir, "hurricane.db"), str(n)], check=True, timeout=timeout)
    sink = Sink()
    h = None
    peak_seen = [0.0]
    rss_2s: list[float | None] = [None]
    stop = threading.Event()
    try:
        t0 = time.monotonic()
        h = Hurricane({
            "server": {"data_dir": data_dir},
            "submission": {"listen": ["tcp:0:interface=127.0.0.1"]},
            "bounce": {"listen": ["tcp:0:interface=127.0.0.1"]},
            "web": {"listen": []},
            "delivery": {"poll_interval": 0.2, "max_connections_per_destination": 20},
            "routes": {"*": f"127.0.0.1:{sink.port}"},
        })
        pid = h.proc.pid
        # From here: the server is listening (the store is open, migrations
        # done); deliveries made during start-up are left out of the rate.
        t_ready = time.monotonic()
        base_count = sink.accepted()

        def sample() -> None:
            # Memory is sampled beside the drain, never in its way: a small
            # queue drains in well under the 2 s mark, and a drain timed
            # after a sleep to that mark would count the sleep.
            while not stop.wait(0.05):
                peak_seen[0] = max(peak_seen[0], rss_mib(pid))
                if rss_2s[0] is None and time.monotonic() - t0 >= 2.0:
                    rss_2s[0] = rss_mib(pid)

        threading.Thread(target=sample, daemon=True).start()
        ok = wait_for(lambda: sink.accepted() >= n, timeout, 0.02)
        drain_s = time.monotonic() - t_ready
        got = sink.accepted()
        wait_for(lambda: rss_2s[0] is not None, 10, 0.05)
        start_s = t_ready - t0
        peak = max(peak_rss_mib(pid), peak_seen[0])
        end = rss_mib(pid)
    finally:
        stop.set()
        if h is not None:
            h.stop()
        sink.stop()
        import shutil
        shutil.rmtree(base, ignore_errors=True)
    rate = (got - base_count) / drain_s
    print(f"N={n:<7} start {start_s:.1f} s ({base_count} sent meanwhile)  drain {rate:7.0f} "
          f"msg/s ({1000 / rate:.2f} ms/msg)  RSS at 2 s "
          f"{mib(rss_2s[0])} MiB, peak {peak:.0f}, end {end:.0f}"
          f"{'' if ok else '  INCOMPLETE ' + str(got)}", flush=True)
    return [n, f"{rate:.0f}" + ("" if ok else f" (only {got})"), f"{1000 / rate:.2f}",
            mib(rss_2s[0]), f"{peak:.0f}", f"{end:.0f}"]


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--prefill":
        prefill(sys.argv[2], int(sys.argv[3]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--timeout", type=float, default=1200.0, help="per phase, seconds")
    ap.add_argument("--no-append", action="store_true")
    args = ap.parse_args()
    sizes = [int(x) for x in args.sizes.split(",") if x]
    print(f"machine: {machine()}")
    rows = [one(n, args.timeout) for n in sizes]
    if not args.no_append:
        print(append_results(
            "Scale: queue depth (N queued at start, then drain)",
            ["queued N", "drain msg/s", "ms/msg", "RSS at 2 s MiB", "peak RSS MiB",
             "RSS end MiB"], rows,
            ["SQLite (synchronous FULL), 2000-octet messages, one recipient each over "
             f"{DOMAINS} domains, written into the store before the server starts; the "
             "drain is timed from the moment the server listens. No peer: this measures how "
             "Hurricane's own cost and memory change with queue depth."]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
