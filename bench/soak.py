#!/usr/bin/env python3
"""Soak: a load of submissions and bounces against Hurricane, kill -9 in a loop.

    python bench/soak.py --minutes 10 [--store postgresql://...] [--seed N]

Runs ``twistd -n hurricane`` (SQLite in a temp dir by default, or a fresh
``hx_<random>`` database on the PostgreSQL server of ``--store``), Postfix's
smtp-sink as the destination, client threads submitting messages and
returning bounces, and kills the server with SIGKILL at seeded random moments
(one round of ``--kills`` kills per round, rounds until the time is up).
After each round it checks, and prints:

- every message answered 250 is recorded exactly once and reaches the sink
  at least once; a refused one is never recorded; an unknown one at most once;
- every bounce answered 250 is stored exactly once and analysed;
- duplicates at the sink stay within what was in flight at the kills.

Exit status 0 when every round passed. Uses the helpers of
``tests/hardening`` (run it from a checkout).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.hardening.harness import Hurricane, SmtpSink  # noqa: E402
from tests.hardening.load import crash_overrides, run_crash_load  # noqa: E402


class _Cleanups:
    """Stands in for a TestCase: runs what the helpers register, at exit."""

    def __init__(self) -> None:
        self.items: list = []

    def addCleanup(self, fn, *args) -> None:  # noqa: N802 (TestCase's name)
        self.items.append((fn, args))

    def run(self) -> None:
        for fn, args in reversed(self.items):
            try:
                fn(*args)
            except Exception as e:  # keep cleaning up
                print(f"cleanup {fn!r}: {e}", file=sys.stderr)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=5.0, help="how long to soak (default 5)")
    p.add_argument("--kills", type=int, default=5, help="kill -9 points per round (default 5)")
    p.add_argument("--seed", type=int, default=None, help="seed (default: random, printed)")
    p.add_argument("--store", default="",
                   help="PostgreSQL DSN: run on a fresh database of that server "
                        "(default: SQLite in a temp dir)")
    p.add_argument("--in-flight", type=int, default=20, help="[delivery] max_in_flight")
    args = p.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    print(f"soak: seed {seed}, {args.minutes} min, {args.kills} kills per round, "
          f"store {'postgresql' if args.store else 'sqlite'}")
    deadline = time.monotonic() + args.minutes * 60
    cleanups = _Cleanups()
    failures = 0
    rounds = 0
    totals = {"kills": 0, "messages_250": 0, "bounces_250": 0, "duplicates": 0}
    try:
        if args.store:
            os.environ["HURRICANE_TEST_POSTGRES"] = args.store
        while time.monotonic() < deadline:
            rounds += 1
            round_cleanups = _Cleanups()
            server = None
            try:
                url = ""
                if args.store:
                    from tests.hardening.harness import fresh_postgres_database

                    url = fresh_postgres_database(round_cleanups)
                sink = SmtpSink(round_cleanups).start()
                workdir = tempfile.mkdtemp(prefix="hurricane-soak-")
                server = Hurricane(workdir, crash_overrides(sink.port, url, args.in_flight))
                round_cleanups.addCleanup(server.kill)
                report = run_crash_load(server, sink, seed + rounds, args.kills,
                                        max_in_flight=args.in_flight)
                print(f"round {rounds}: PASS")
                for line in report.lines():
                    print("  " + line)
                totals["kills"] += report.kills
                totals["messages_250"] += report.messages_250
                totals["bounces_250"] += report.bounces_250
                totals["duplicates"] += report.duplicates
                server.stop()
                shutil.rmtree(workdir, ignore_errors=True)
            except AssertionError as e:
                failures += 1
                print(f"round {rounds}: FAIL: {e}")
                if server is not None:
                    print(f"  kept for inspection: {server.workdir}")
            finally:
                round_cleanups.run()
    finally:
        cleanups.run()
    print(f"soak: {rounds} rounds, {failures} failed; {totals['kills']} kills, "
          f"{totals['messages_250']} messages and {totals['bounces_250']} bounces accepted "
          f"and checked, {totals['duplicates']} duplicate deliveries; seed {seed}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
