#!/usr/bin/env python3
"""Before and after in the same run: inbound and submission benchmarks on several trees.

    python bench/compare.py [--rounds 8] [--jobs protocol,inbound,...] NAME=REV_OR_DIR ...

e.g. ``python bench/compare.py base=main new=HEAD``. Each tree is a git
revision (exported with ``git archive`` into a temporary directory) or a
directory holding a checkout. Every round runs, for each tree in turn (the
order rotates every round, so no tree always goes first on a warm or cold
machine), with the tree first on ``PYTHONPATH`` (so the server, the sink and
anything else they start import that tree's ``hurricane``; the benchmark
scripts themselves are this checkout's, so every tree is measured the same
way):

- ``bench/protocol.py``: CPU of the server protocol per transaction, no
  I/O (the steadiest figure);
- ``bench/inbound.py --no-sisimai --no-stages --rounds 1 --bounces 1000``:
  returns recorded per second and server CPU per return;
- ``bench/outbound.py --no-postfix --stores sqlite --concurrency 1`` (500
  messages) and ``--concurrency 10`` (1000): submission accepted per
  second, delivered per second, Hurricane CPU per message.

It prints each run and then the medians per tree. This machine is shared and
its speed moves by tens of percent within minutes: compare medians over
several rounds, and trust CPU per message more than rates. Every run is
bounded (600 s); nothing is written to RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

#: name -> (script and arguments, {metric: regex on its output})
JOBS: dict[str, tuple[list[str], dict[str, str]]] = {
    "protocol": (
        ["protocol.py", "--transactions", "5000"],
        {
            "us/tx pipelined": r"pipelined ([\d.]+) us",
            "us/tx lock-step": r"lock-step ([\d.]+) us",
        },
    ),
    "inbound": (
        ["inbound.py", "--no-sisimai", "--no-stages", "--rounds", "1", "--bounces", "1000",
         "--no-append"],
        {
            "recorded/s": r"-- medians.*accepted\+analyzed\+recorded (\d+)/s",
            "server us/return": r"-- medians.*CPU per return: server (\d+) µs",
            "reactor us/return": r"-- medians.*server's reactor thread (\d+) µs",
            "workers us/return": r"-- medians.*analysis workers (\d+) µs",
        },
    ),
    "submission c=1": (
        ["outbound.py", "--no-postfix", "--stores", "sqlite", "--concurrency", "1",
         "--messages", "500", "--rounds", "1", "--no-append"],
        {
            "accepted/s": r"c=1\s+accept\s+(\d+) msg/s",
            "delivered/s": r"c=1\s+accept\s+\d+ msg/s\s+delivered\s+(\d+) msg/s",
            "us/message": r"c=1\s+accept.*CPU\s+(\d+) µs/msg",
        },
    ),
    "submission c=10": (
        ["outbound.py", "--no-postfix", "--stores", "sqlite", "--concurrency", "10",
         "--messages", "1000", "--rounds", "1", "--no-append"],
        {
            "accepted/s": r"c=10\s+accept\s+(\d+) msg/s",
            "delivered/s": r"c=10\s+accept\s+\d+ msg/s\s+delivered\s+(\d+) msg/s",
            "us/message": r"c=10\s+accept.*CPU\s+(\d+) µs/msg",
        },
    ),
}


def tree_dir(spec: str, work: str) -> str:
    """A directory holding the tree ``spec`` (a directory, or a git revision exported)."""
    if os.path.isdir(spec):
        return os.path.abspath(spec)
    target = tempfile.mkdtemp(prefix="tree-", dir=work)
    archive = subprocess.run(["git", "-C", ROOT, "archive", spec], capture_output=True,
                             check=True, timeout=120).stdout
    subprocess.run(["tar", "-x", "-C", target], input=archive, check=True, timeout=120)
    return target


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--jobs", default=",".join(JOBS),
                    help=f"comma-separated, among: {', '.join(JOBS)}")
    ap.add_argument("trees", nargs="+", metavar="NAME=REV_OR_DIR")
    args = ap.parse_args()
    if not 1 <= args.rounds <= 50:
        ap.error("--rounds: 1 to 50")
    jobs = [j.strip() for j in args.jobs.split(",") if j.strip()]
    if not jobs or any(j not in JOBS for j in jobs):
        ap.error(f"--jobs: among {', '.join(JOBS)}")
    work = tempfile.mkdtemp(prefix="bench-compare-")
    try:
        compare(ap, args.rounds, jobs, args.trees, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def compare(ap: argparse.ArgumentParser, rounds: int, jobs: list[str], specs: list[str],
            work: str) -> None:
    """Run the ``jobs`` on every tree, ``rounds`` times, and print the medians."""
    trees = []
    for item in specs:
        name, sep, spec = item.partition("=")
        if not sep:
            ap.error(f"{item!r}: expected NAME=REV_OR_DIR")
        trees.append((name, tree_dir(spec, work)))
        print(f"{name}: {spec} -> {trees[-1][1]}", flush=True)
    results: dict[tuple[str, str, str], list[float]] = {}
    for r in range(rounds):
        k = r % len(trees)
        for name, tree in trees[k:] + trees[:k]:
            env = dict(os.environ, PYTHONPATH=tree)
            for job in jobs:
                argv, patterns = JOBS[job]
                started = time.monotonic()
                proc = subprocess.run([sys.executable, os.path.join(HERE, argv[0]), *argv[1:]],
                                      env=env, capture_output=True, text=True, timeout=600)
                got = {}
                for metric, pattern in patterns.items():
                    m = re.search(pattern, proc.stdout)
                    if m:
                        results.setdefault((job, metric, name), []).append(float(m.group(1)))
                        got[metric] = m.group(1)
                print(f"round {r + 1} {name:10} {job:16} {got or proc.stderr[-300:]} "
                      f"({time.monotonic() - started:.0f} s)", flush=True)
    print(f"\nmedians over {rounds} rounds:")
    for job in jobs:
        for metric in JOBS[job][1]:
            cells = []
            for name, _ in trees:
                values = results.get((job, metric, name), [])
                median = statistics.median(values) if values else float("nan")
                cells.append(f"{name} {median:7.1f}" if median < 100 else
                             f"{name} {median:7.0f}")
            print(f"  {job:16} {metric:17} " + "  ".join(cells))


if __name__ == "__main__":
    sys.exit(main())
