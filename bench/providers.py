#!/usr/bin/env python3
"""Closed-loop delivery (issue 19): the targets, measured on loopback.

    python bench/providers.py [--stores sqlite,postgres] [--messages 600] [--mailing 2000]
                              [--no-baseline] [--append]

1. A receiver that accepts 20 recipients a second and answers 421 4.7.28
   beyond (the sink's ``[provider] rate_limit``), with the provider
   configured at 100 a second (``rate_per_minute = 6000``): the share of
   refused attempts and the time to deliver ``--messages`` (from the first
   submission to the last delivery). Target: < 15 % refused, 600 in < 60 s.
   The baseline runs the same with ``[delivery.adaptive] enabled = false``
   (fixed limits, throttled messages wait for their backoff, here 5-10 s),
   bounded at 180 s.
2. A mailing of ``--mailing`` recipients, 30 % unknown users: how many were
   attempted when its breaker held it (target: fewer than half), how many
   were held, and after ``release`` whether every recipient has exactly one
   outcome and no address was accepted twice by the sink.

Hurricane runs in process (``hurricane.demo.Rig``: the real service tree and
the smart sink on one reactor). Every wait is bounded in time; the loops are
bounded in count.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _common import append_results, fresh_postgres_db, postgres_dsn  # noqa: E402

PROVIDER = {"name": "sinkmail", "domains": ["*.test"], "max_connections": 10,
            "rate_per_minute": 6000}


def make_rig(reactor: Any, root: str, store_url: str, provider: dict[str, Any],
             adaptive: bool) -> Any:
    from hurricane.demo import Rig
    from hurricane.sink.scenario import scenario_from_dict

    return Rig(reactor, root, scenario_from_dict({"provider": provider}), store_url=store_url,
               web=False, delivery={
                   "first_retry": 5.0, "max_retry_interval": 10.0, "max_age": 600.0,
                   "providers": [PROVIDER],
                   "adaptive": {"enabled": adaptive, "interval": 1.0}})


async def wait_delivered(rig: Any, mailing: str, want: int, timeout: float) -> float | None:
    """Seconds until ``want`` recipients of ``mailing`` are delivered, None on timeout."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        summary = await rig.store.mailing_summary(mailing)
        if summary.by_state.get("delivered", 0) >= want:
            return time.monotonic() - start
        await rig.sleep(0.1)
    return None


async def rate_limited(reactor: Any, store_url: str, n: int, adaptive: bool) -> dict[str, Any]:
    root = tempfile.mkdtemp(prefix="bench-providers-")
    rig = make_rig(reactor, root, store_url, {"rate_limit": 20}, adaptive)
    await rig.start()
    try:
        rig.sink.keep = True
        rcpts = [f"r{i}@x.test" for i in range(n)]
        start = time.monotonic()
        sub = rig.submit(rcpts, mailing_id="rate-1", connections=4)
        from twisted.internet.defer import Deferred

        submitted = Deferred.fromCoroutine(sub)
        took = await wait_delivered(rig, "rate-1", n, 180.0)
        await submitted
        elapsed = time.monotonic() - start if took is not None else None
        refused = rig.sink.stats.counts["deferred"]["provider-rate"]
        accepted = Counter(acc.rcpt for acc, _ in rig.sink.accepted)
        return {"refused": refused, "attempts": refused + sum(accepted.values()),
                "delivered": len(accepted), "twice": sum(1 for v in accepted.values() if v > 1),
                "seconds": elapsed}
    finally:
        await rig.stop()
        shutil.rmtree(root, ignore_errors=True)


async def breaker(reactor: Any, store_url: str, n: int) -> dict[str, Any]:
    root = tempfile.mkdtemp(prefix="bench-breaker-")
    rig = make_rig(reactor, root, store_url, {}, True)
    await rig.start()
    try:
        rig.sink.keep = True
        rcpts = [f"unknown-{i}@x.test" if i % 10 < 3 else f"r{i}@x.test" for i in range(n)]
        await rig.submit(rcpts, mailing_id="list-1", connections=8)
        await rig.wait_settled(120)
        before = await rig.store.mailing_summary("list-1")
        held = before.by_state.get("held", 0)
        attempted = before.recipients - held
        ops = rig.root.operations
        hold = (await ops.mailing_hold("list-1")).as_json()
        released = await ops.release_mailing("list-1", "bench")
        await rig.wait_settled(180)
        after = await rig.store.mailing_summary("list-1")
        accepted = Counter(acc.rcpt for acc, _ in rig.sink.accepted)
        good = sum(1 for r in rcpts if not r.startswith("unknown-"))
        return {"attempted_at_hold": attempted, "held": held, "released": released,
                "cause": (hold.get("breaker") or {}).get("cause"),
                "after": dict(after.by_state), "recipients": after.recipients,
                "accepted_once": sum(1 for v in accepted.values() if v == 1),
                "twice": sum(1 for v in accepted.values() if v > 1), "good": good}
    finally:
        await rig.stop()
        shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stores", default="sqlite")
    parser.add_argument("--messages", type=int, default=600)
    parser.add_argument("--mailing", type=int, default=2000)
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--append", action="store_true")
    args = parser.parse_args()

    from twisted.internet import reactor, task

    rows: list[list[Any]] = []
    notes: list[str] = []

    async def run(_: Any) -> None:
        drops: list[Any] = []

        def fresh(store: str) -> str:
            if store != "postgres":
                return ""
            url, drop = fresh_postgres_db(postgres_dsn())
            drops.append(drop)
            return str(url)

        for store in args.stores.split(","):
            for adaptive in ((True,) if args.no_baseline else (True, False)):
                r = await rate_limited(reactor, fresh(store), args.messages, adaptive)
                share = r["refused"] / max(1, r["attempts"])
                secs = f"{r['seconds']:.1f}" if r["seconds"] is not None else "> 180"
                print(f"{store} rate-limited, adaptive={adaptive}: {r}", flush=True)
                rows.append([store, "20/s receiver, provider at 100/s",
                             "adaptive" if adaptive else "fixed (baseline)",
                             f"{r['refused']}/{r['attempts']} = {share * 100:.1f} %",
                             f"{r['delivered']} in {secs} s", r["twice"]])
            b = await breaker(reactor, fresh(store), args.mailing)
            print(f"{store} breaker: {b}", flush=True)
            ok = (b["after"].get("delivered", 0) == b["good"]
                  and b["after"].get("failed", 0) == args.mailing - b["good"]
                  and b["accepted_once"] == b["good"])
            rows.append([store, f"mailing of {args.mailing}, 30 % unknown",
                         f"held at {b['attempted_at_hold']} attempted ({b['cause']})",
                         f"{b['held']} held, {b['released']} released",
                         f"after release: {b['after']}", b["twice"]])
            notes.append(f"{store}: after release every recipient has one outcome and "
                         f"each good address was accepted once: {'yes' if ok else 'NO'}")
        for drop in drops:
            drop()
        header = ["store", "case", "mode", "refused attempts", "delivered / outcome",
                  "sent twice"]
        for row in rows:
            print(" | ".join(str(c) for c in row))
        if args.append:
            append_results("Closed-loop delivery: providers and breaker (issue 19)", header,
                           rows, notes)

    from twisted.internet.defer import Deferred

    task.react(lambda r: Deferred.fromCoroutine(run(r)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
