#!/usr/bin/env python3
"""The analysis pool alone: the server's CPU per message to hand work to a worker and back.

    PYTHONPATH=TREE python bench/analysis_pool.py [--batches 500] [--size 4] [--in-flight 4]

Runs ``--batches`` calls of ``--size`` corpus messages (the first 64 of
``$HURRICANE_BOUNCE_CORPUS``, default /work/shared/bounce-corpus) through an
``AnalysisProcessPool`` of one worker on the real reactor, ``--in-flight``
calls at a time, after one call that starts the worker. Prints this
process's CPU per message (user + system, every thread: getrusage), the wall
time per message and this process's thread count. The analyses themselves
run in the worker and are not counted: what is left is the pool's cost in the
server (pickling, pipes, threads and their hand-offs). With PYTHONPATH set to
another tree, the same script measures that tree's pool.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from typing import Any


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--batches", type=int, default=500)
    ap.add_argument("--size", type=int, default=4)
    ap.add_argument("--in-flight", type=int, default=4)
    args = ap.parse_args()

    from twisted.internet import defer, reactor

    from hurricane.inbound.workers import AnalysisProcessPool

    corpus = os.path.join(os.environ.get("HURRICANE_BOUNCE_CORPUS",
                                         "/work/shared/bounce-corpus"), "emails")
    raws = []
    for name in sorted(os.listdir(corpus))[:64]:
        with open(os.path.join(corpus, name), "rb") as fp:
            raws.append(fp.read())

    async def run() -> None:
        pool = AnalysisProcessPool(reactor, 1)  # type: ignore[arg-type]
        await pool.analyze([(raws[0], None)])  # starts the worker
        work = [[(raws[(i * args.size + j) % len(raws)], None) for j in range(args.size)]
                for i in range(args.batches)]
        sem = defer.DeferredSemaphore(args.in_flight)
        c0, t0 = cpu(), time.monotonic()
        await defer.gatherResults([sem.run(pool.analyze, w) for w in work])
        c1, t1 = cpu(), time.monotonic()
        n = args.batches * args.size
        print(f"{n} messages: server CPU {(c1 - c0) / n * 1e6:.1f} us/message, "
              f"wall {(t1 - t0) / n * 1e6:.1f} us/message, "
              f"threads {len(os.listdir('/proc/self/task'))}")
        pool.stop()

    def start() -> None:
        d: Any = defer.ensureDeferred(run())
        d.addErrback(lambda f: f.printTraceback())
        d.addBoth(lambda _: reactor.callLater(0.2, reactor.stop))  # type: ignore[attr-defined]

    reactor.callWhenRunning(start)  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
