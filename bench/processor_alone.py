#!/usr/bin/env python3
"""The bounce processor alone: CPU per return of the server's part after the 250.

    python bench/processor_alone.py SERVER_DIR [--batch N (8)] [--rounds R (3)]

What bench/inbound.py's stage ladder leaves as "the rest" (hand-off to the
analysis worker, correlation, events, recording), measured without SMTP,
without the analyzer and without a load generator, so that a change to it
shows in a few seconds and within a few percent:

1. SERVER_DIR is a server directory left by ``bench/inbound.py --profile
   FILE`` (which keeps it): its SQLite file holds real deliveries and the
   returns they got, its ``verp-keys.json`` the keys. The file is copied and
   put back as before the analysis (returns pending, deliveries delivered,
   no bounce events, no suppressions).
2. Every return is analyzed once, in this process, before timing; the
   executor then answers each batch with those analyses one reactor turn
   later, pickled both ways as a worker process's are. What a worker does
   beyond the analysis (correlating and building the events of a return when
   the tree under test does that there) is run too, and its CPU reported
   apart ("worker").
3. The returns are submitted ``--batch`` at a time as one batch, the next
   batch once everything is recorded: exact batch sizes, whatever the
   machine's speed. Under a flood the real server's batches range from 1 to
   32 (bench/inbound.py; smaller on a faster machine).

Reported per return: the server's CPU (this process less the "worker"
share), of which its reactor thread and its other threads (the SQLite pool
thread). Run it on two trees with ``PYTHONPATH=TREE`` to compare them.
"""

from __future__ import annotations

import argparse
import os
import pickle
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.append(os.path.dirname(HERE))  # last: a tree on PYTHONPATH comes first

from twisted.internet import defer, reactor  # noqa: E402

RESET = """
DELETE FROM events WHERE kind IN ('bounce', 'complaint', 'autoreply', 'delayed', 'relayed');
UPDATE deliveries SET state = 'delivered', reason = NULL, hard = 0, bounced_at = NULL;
DELETE FROM suppressions; DELETE FROM scoped_suppressions;
UPDATE bounces SET status = 'pending', analysis = NULL, category = NULL, correlation = NULL;
"""


def thread_cpu() -> dict[int, float]:
    """CPU seconds of each thread of this process, by thread id."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for t in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{t}/stat") as fp:
            f = fp.read().rsplit(")", 1)[1].split()
        out[int(t)] = (int(f[11]) + int(f[12])) / tick
    return out


def load_returns(db: str) -> dict[int, Any]:
    """The stored returns as the listener handed them to the processor, by id."""
    from hurricane.model import ReturnedMessage, ReturnedRecipient

    c = sqlite3.connect(db)
    envelopes: dict[int, list[Any]] = {}
    for bounce_id, address, delivery_id, per_message in c.execute(
            "SELECT bounce_id, rcpt_to, delivery_id, per_message FROM bounce_recipients"
            " ORDER BY bounce_id, position"):
        envelopes.setdefault(bounce_id, []).append(
            ReturnedRecipient(address, delivery_id, bool(per_message)))
    out = {}
    for bounce_id, raw, mail_from, rcpt_to, at, delivery_id, client in c.execute(
            "SELECT bounce_id, raw, mail_from, rcpt_to, received_at, delivery_id, client"
            " FROM bounces ORDER BY bounce_id"):
        out[bounce_id] = ReturnedMessage(
            raw=bytes(raw), mail_from=mail_from, rcpt_to=rcpt_to, received_at=at,
            delivery_id=delivery_id, client=client,
            recipients=tuple(envelopes.get(bounce_id, ())))
    c.close()
    return out


class CannedExecutor:
    """Answers with analyses made in advance, as a worker process would."""

    isolates = True

    def __init__(self, analyses: dict[bytes, Any]) -> None:
        from hurricane.inbound import analysis_worker

        self.analyses = analyses
        self.worker_cpu = 0.0
        # the tree's own worker-side preparation, when it has one
        self.prepare = getattr(analysis_worker, "_prepare", None)
        self.analyzed = analysis_worker.Analyzed

    def submit(self, work: Any, *, alone: bool = False) -> Any:
        t0 = time.thread_time()
        out = []
        for w in work:
            analysis, fingerprint, record = self.analyses[w[0]]
            context = w[2] if len(w) > 2 else None
            prepared = None
            if context is not None and self.prepare is not None:
                prepared = self.prepare(analysis, fingerprint, record, w)
            out.append((analysis, fingerprint, record) if prepared is None
                       else (None, fingerprint, None, prepared))
        blob = pickle.dumps(out)
        self.worker_cpu += time.thread_time() - t0
        d: Any = defer.Deferred()
        reactor.callLater(0, lambda: d.callback([self.analyzed(*a) for a in pickle.loads(blob)]))
        return d

    def start(self) -> None:
        pass

    def stop(self, wait: bool) -> None:
        pass


async def one_round(source_db: str, keys: str, returns: dict[int, Any],
                    analyses: dict[bytes, Any], batch: int) -> dict[str, float]:
    from hurricane.inbound.processor import BounceProcessor, ProcessorConfig
    from hurricane.store.sqlite import SqliteStore
    from hurricane.verp import VerpCodec, load_keys

    work = tempfile.mkdtemp(prefix="bench-processor-")
    try:
        db = os.path.join(work, "hurricane.db")
        shutil.copy(source_db, db)
        c = sqlite3.connect(db, isolation_level=None)
        c.executescript(RESET)
        c.close()
        store = SqliteStore(db, reactor)
        await store.open()
        executor = CannedExecutor(analyses)
        processor = BounceProcessor(store, VerpCodec("bounces.invalid", load_keys(keys)),
                                    reactor, executor, ProcessorConfig(concurrency=4))
        # Private hooks, for exact batches: the whole group is queued before
        # the processor pumps, and the next group goes once all is recorded.
        processor._start_sweep = lambda: None  # the returns come from submit()
        idle: list[Any] = []
        finished = processor._batch_finished

        def batch_finished(*a: Any, **kw: Any) -> None:
            finished(*a, **kw)
            stats = processor.stats()
            if idle and not stats["queued"] and not stats["in_flight"]:
                reactor.callLater(0, idle.pop().callback, None)

        processor._batch_finished = batch_finished  # type: ignore[method-assign]
        processor.startService()
        ids = sorted(returns)
        cpu0, wall0 = thread_cpu(), time.perf_counter()
        for start in range(0, len(ids), batch):
            processor._pumping = True
            for bounce_id in ids[start:start + batch]:
                processor.submit(bounce_id, returns[bounce_id])
            processor._pumping = False
            idle[:] = [defer.Deferred()]
            processor._pump()
            stats = processor.stats()
            if stats["queued"] or stats["in_flight"]:
                await idle[0]
        wall = time.perf_counter() - wall0
        cpu1 = thread_cpu()
        worker = executor.worker_cpu
        main = threading.get_native_id()
        reactor_cpu = cpu1[main] - cpu0.get(main, 0.0) - worker
        other = sum(t - cpu0.get(k, 0.0) for k, t in cpu1.items() if k != main)
        recorded = processor.stats()["analyzed"]
        await processor.stopService()
        await store.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    n = len(ids)
    if recorded != n:
        raise RuntimeError(f"{recorded} of {n} returns recorded")
    return {"server": (reactor_cpu + other) / n * 1e6, "reactor": reactor_cpu / n * 1e6,
            "other": other / n * 1e6, "worker": worker / n * 1e6, "wall": wall / n * 1e6}


async def main(args: argparse.Namespace) -> None:
    from hurricane.bounce.analyze import analyze
    from hurricane.bounce.classify import ReplyClassifier
    from hurricane.inbound.analysis_worker import encode_analysis
    from hurricane.inbound.fingerprint import message_fingerprint

    source = os.path.join(args.server_dir, "data", "hurricane.db")
    keys = os.path.join(args.server_dir, "data", "verp-keys.json")
    returns = load_returns(source)
    classifier = ReplyClassifier.load([])
    analyses = {}
    for m in returns.values():
        a = analyze(m.raw, m.rcpt_to, classifier=classifier)
        analyses[m.raw] = (a, message_fingerprint(m.raw), encode_analysis(a))
    rounds = [await one_round(source, keys, returns, analyses, args.batch)
              for _ in range(args.rounds)]
    for r in rounds:
        print(f"server {r['server']:.0f} us per return (reactor thread {r['reactor']:.0f}, "
              f"other threads {r['other']:.0f}); worker share {r['worker']:.0f}; "
              f"wall {r['wall']:.0f}")
    med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    print(f"-- {len(returns)} returns in batches of {args.batch}, medians over {len(rounds)} "
          f"round(s): server {med['server']:.0f} us per return (reactor thread "
          f"{med['reactor']:.0f}, other threads {med['other']:.0f}); worker share "
          f"{med['worker']:.0f} us")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("server_dir", help="a server directory kept by bench/inbound.py --profile")
    ap.add_argument("--batch", type=int, default=8, help="returns per batch")
    ap.add_argument("--rounds", type=int, default=3)
    parsed = ap.parse_args()
    failure: list[Any] = []

    def run() -> None:
        d = defer.ensureDeferred(main(parsed))
        d.addErrback(failure.append)
        d.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(run)
    reactor.run()
    if failure:
        failure[0].printTraceback()
        sys.exit(1)
