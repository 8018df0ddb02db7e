#!/usr/bin/env python3
"""Queue depth: throughput and memory with 10^3, 10^4 (and, opt-in, 10^5) queued recipients.

    python bench/scale.py [--sizes 1000,10000] [--big] [--no-append]

For each size N: a fresh ``twistd -n hurricane`` (SQLite) whose route points
at a port where nothing listens yet; ``smtp-source`` enqueues N messages
(each delivery is attempted, refused, and deferred); then ``hurricane sink``
starts on that port and the queue drains. Reported: enqueue rate, drain
rate (messages/s until the sink counted N), per-message cost (ms), and
Hurricane's RSS after enqueueing, peak RSS and RSS at the end. Flat
per-message cost and RSS that does not grow with N are the goal. ``--big``
adds 10^5 (slow: minutes). Every wait is bounded.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (  # noqa: E402
    Hurricane,
    Sink,
    append_results,
    free_port,
    machine,
    peak_rss_mib,
    rss_mib,
    smtp_source,
    wait_for,
)


def one(n: int, timeout: float) -> list[Any]:
    """Measure one queue size; the table row."""
    port = free_port()
    h = Hurricane({
        "submission": {"listen": ["tcp:0:interface=127.0.0.1:backlog=1024"],
                       "max_connections_per_ip": 100},
        "bounce": {"listen": ["tcp:0:interface=127.0.0.1"]},
        "web": {"listen": []},
        "delivery": {"poll_interval": 0.2, "first_retry": 1.0, "max_retry_interval": 1.0,
                     "retry_jitter": 0.0, "max_connections_per_destination": 20},
        "routes": {"*": f"127.0.0.1:{port}"},
    })
    sink = None
    try:
        enq_s = smtp_source(h.ports["submission"], 20, n, size=2000, timeout=timeout)
        rss_queued = rss_mib(h.proc.pid)
        time.sleep(1.0)  # let the first attempts fail and defer
        sink = _sink_on(port)
        t0 = time.monotonic()
        ok = wait_for(lambda: sink.accepted() >= n, timeout, 0.1)
        drain_s = time.monotonic() - t0
        got = sink.accepted()
        peak = peak_rss_mib(h.proc.pid)
        end = rss_mib(h.proc.pid)
    finally:
        h.stop()
        if sink is not None:
            sink.stop()
    rate = got / drain_s
    print(f"N={n:<7} enqueue {n / enq_s:7.0f} msg/s  drain {rate:7.0f} msg/s "
          f"({1000 / rate:.2f} ms/msg)  RSS queued {rss_queued:.0f} MiB, peak {peak:.0f}, "
          f"end {end:.0f}{'' if ok else '  INCOMPLETE ' + str(got)}")
    return [n, f"{n / enq_s:.0f}", f"{rate:.0f}" + ("" if ok else f" (only {got})"),
            f"{1000 / rate:.2f}", f"{rss_queued:.0f}", f"{peak:.0f}", f"{end:.0f}"]


def _sink_on(port: int) -> Sink:
    """A sink listening on exactly ``port``."""
    s = Sink.__new__(Sink)
    import re
    import subprocess
    import tempfile

    from _common import HURRICANE

    s.dir = tempfile.mkdtemp(prefix="bench-sink-")
    s.stats_file = os.path.join(s.dir, "stats.json")
    s.out = open(os.path.join(s.dir, "out"), "w+")
    s.proc = subprocess.Popen(
        [HURRICANE, "sink", "--listen", f"tcp:{port}:interface=127.0.0.1:backlog=1024",
         "--stats-file", s.stats_file, "--stats-interval", "0.1", "--no-returns"],
        stdout=s.out, stderr=subprocess.DEVNULL)
    s.port = 0

    def ready() -> bool:
        s.out.seek(0)
        m = re.search(r"sink listening on 127\.0\.0\.1:(\d+)", s.out.read())
        if m:
            s.port = int(m.group(1))
        return bool(m) or s.proc.poll() is not None

    wait_for(ready, 20)
    if s.port != port:
        raise RuntimeError(f"the sink could not listen on {port}")
    return s


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000,10000")
    ap.add_argument("--big", action="store_true", help="add 100000")
    ap.add_argument("--timeout", type=float, default=900.0, help="per phase, seconds")
    ap.add_argument("--no-append", action="store_true")
    args = ap.parse_args()
    sizes = [int(x) for x in args.sizes.split(",") if x]
    if args.big and 100000 not in sizes:
        sizes.append(100000)
    print(f"machine: {machine()}")
    rows = [one(n, args.timeout) for n in sizes]
    if not args.no_append:
        print(append_results(
            "Scale: queue depth (enqueue with the sink down, then drain)",
            ["queued N", "enqueue msg/s", "drain msg/s", "ms/msg", "RSS queued MiB",
             "peak RSS MiB", "RSS end MiB"], rows,
            ["SQLite (synchronous FULL), 2000-octet messages, smtp-source -s 20; no peer "
             "comparison here (Postfix's queue is on disk too; see outbound).",
             "Drain starts when the sink comes up; deferred recipients retry after 1 s."]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
