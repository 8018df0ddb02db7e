#!/usr/bin/env python3
"""CPU and memory of the bounce analyzer on hostile returned mail, one input at a time.

    python bench/hostile.py [--size BYTES] [--timeout S] [--only NAME ...] [--no-append]

Builds each input of ``tests/bounce/hostile.py`` (the review's six of issue 23,
then one per parser step) at ``--size`` bytes (default 5 MiB, the bounce
listener's limit) and analyzes it in a fresh process of its own: the CPU
time of ``analyze()`` (``time.process_time``, the best of up to three runs,
the classifier loaded and warmed up first), the peak RSS of that process
minus its RSS just before the call (the input built, the rules loaded), the
peak RSS itself, and what the analysis answered. An
input that runs past ``--timeout`` seconds is reported as such and killed.
Prints one line per input, then the maximum; the target is well under
100 ms each on one core.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

from _common import append_results, machine  # noqa: E402

from tests.bounce.hostile import BUILDERS, MAX_SIZE, build  # noqa: E402


def _rss_mib() -> float:
    """This process's current RSS (MiB), from /proc."""
    try:
        with open("/proc/self/statm") as fp:
            pages = int(fp.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)
    except (OSError, ValueError, IndexError):
        return float("nan")


def one(name: str, size: int) -> dict[str, object]:
    """Analyze one input in this process; its figures."""
    from hurricane.bounce.analyze import analyze
    from hurricane.bounce.classify import default_classifier

    clf = default_classifier()
    analyze(build("addresses", 4096), classifier=clf)     # load and warm up the rules
    raw = build(name, size)
    before = _rss_mib()
    best = None
    result = None
    for _ in range(3):
        clf._cache.clear()
        t0 = time.process_time()
        result = analyze(raw, classifier=clf)
        spent = time.process_time() - t0
        best = spent if best is None else min(best, spent)
        if spent > 1.0:
            break  # slow: one run says enough
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    assert result is not None and best is not None
    return {"name": name, "bytes": len(raw), "cpu_ms": best * 1000,
            "rss_mib": max(0.0, peak - before), "peak_mib": peak, "category": result.category,
            "results": len(result.results), "error": result.error}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=MAX_SIZE, help="bytes per input (default 5 MiB)")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per input")
    ap.add_argument("--only", nargs="*", default=None, metavar="NAME",
                    help="only these inputs (names as printed)")
    ap.add_argument("--no-append", action="store_true", help="do not write RESULTS.md")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        print(json.dumps(one(a.one, a.size)))
        return 0
    names = a.only or list(BUILDERS)
    print(f"machine: {machine()}")
    print(f"{'input':24} {'bytes':>9} {'CPU ms':>9} {'+RSS MiB':>9} {'peak MiB':>9}  answer")
    rows = []
    worst = 0.0
    for name in names:
        cmd = [sys.executable, os.path.abspath(__file__), "--one", name, "--size", str(a.size)]
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=a.timeout)
        except subprocess.TimeoutExpired:
            print(f"{name:24} {'':>9} {'>%d' % (a.timeout * 1000):>9} {'':>9} {'':>9}  timed out")
            rows.append([name, "", f"> {a.timeout * 1000:.0f}", "", "", "timed out"])
            worst = float("inf")
            continue
        if p.returncode != 0:
            print(f"{name:24} failed: {p.stderr.strip()[-300:]}")
            rows.append([name, "", "", "", "", "failed"])
            continue
        r = json.loads(p.stdout.strip().splitlines()[-1])
        answer = f"{r['category']} ({r['results']})" + (f" [{r['error']}]" if r["error"] else "")
        print(f"{name:24} {r['bytes']:>9} {r['cpu_ms']:>9.1f} {r['rss_mib']:>9.1f} "
              f"{r['peak_mib']:>9.1f}  {answer}")
        rows.append([name, r["bytes"], f"{r['cpu_ms']:.1f}", f"{r['rss_mib']:.1f}",
                     f"{r['peak_mib']:.1f}", answer])
        worst = max(worst, r["cpu_ms"])
    print(f"max: {worst:.1f} ms CPU per message ({len(names)} inputs)")
    if not a.no_append:
        print(append_results(
            "Analyzer on hostile returned mail (bench/hostile.py)",
            ["input", "bytes", "CPU ms", "+RSS MiB", "peak RSS MiB", "answer"], rows,
            [f"Each input analyzed in its own process, best of up to 3 runs; max {worst:.1f} ms.",
             "The inputs are tests/bounce/hostile.py's builders."]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
