#!/usr/bin/env python3
"""Benchmark the bounce analyzer on the corpus, side by side with Sisimai.

    python bench/analyze.py [--corpus DIR] [--repeat N] [--no-sisimai]

Prints the accuracy (score.py run on the analyzer's predictions), messages
per second (parse time only, one core: CPU time of this process, files read
into memory first, one warm-up pass), the same for Debian's Sisimai (Perl,
package libsisimai-perl; timed inside Perl so start-up is excluded), their
ratio and the machine.  Sisimai is skipped with a message when missing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import append_results, machine  # noqa: E402  (shared by every benchmark)

from hurricane.bounce.analyze import analyze, to_prediction  # noqa: E402
from hurricane.bounce.classify import default_classifier  # noqa: E402

PERL = r"""
use strict; use warnings;
use Sisimai; use Time::HiRes qw(clock);
my $repeat = shift @ARGV;
my @data;
for my $f (@ARGV) {
    open(my $fh, '<:raw', $f) or die "$f: $!"; local $/; push @data, scalar <$fh>; close $fh;
}
my $call = Sisimai->can('rise') ? 'rise' : 'make';
my $found = 0;
for my $d (@data) { my $v = Sisimai->$call(\$d, 'input' => 'string'); $found++ if $v && @$v; }
my $t0 = clock();
for (1 .. $repeat) { for my $d (@data) { Sisimai->$call(\$d, 'input' => 'string'); } }
my $el = clock() - $t0;
printf "%d %.6f %d %s\n", scalar(@data) * $repeat, $el, $found, $Sisimai::VERSION;
"""


def default_corpus() -> str:
    env = os.environ.get("HURRICANE_BOUNCE_CORPUS")
    if env:
        return env
    return os.path.normpath(os.path.join(ROOT, "..", "shared", "bounce-corpus"))



def sisimai(files: list[str], repeat: int) -> tuple[float, str] | str:
    """(msgs/s, version), or a reason why Sisimai could not run."""
    perl = shutil.which("perl")
    if perl is None:
        return "perl is not installed"
    if subprocess.run([perl, "-MSisimai", "-e", "1"], capture_output=True).returncode != 0:
        return ("Sisimai is not installed (Debian: apt-get install libsisimai-perl); "
                "skipping the comparison")
    with tempfile.NamedTemporaryFile("w", suffix=".pl", delete=False) as fp:
        fp.write(PERL)
        script = fp.name
    try:
        p = subprocess.run([perl, script, str(repeat), *files], capture_output=True, text=True)
    finally:
        os.unlink(script)
    if p.returncode != 0:
        return f"Sisimai failed: {p.stderr.strip()[-500:]}"
    n, el, _found, version = p.stdout.split()
    return int(n) / float(el), version


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default=default_corpus())
    ap.add_argument("--repeat", type=int, default=3, help="timed passes over the corpus")
    ap.add_argument("--no-sisimai", action="store_true")
    ap.add_argument("--no-append", action="store_true", help="do not write RESULTS.md")
    a = ap.parse_args()
    emails = os.path.join(a.corpus, "emails")
    if not os.path.isdir(emails):
        print(f"corpus not found at {a.corpus} (set HURRICANE_BOUNCE_CORPUS)")
        return 2
    files = sorted(os.path.join(emails, f) for f in os.listdir(emails) if f.endswith(".eml"))
    data = []
    for f in files:
        with open(f, "rb") as fp:
            data.append((f, fp.read()))
    clf = default_classifier()
    preds = [to_prediction(analyze(raw, classifier=clf), "emails/" + os.path.basename(f))
             for f, raw in data]                               # warm-up pass
    # Each timed pass starts with an empty classifier cache: otherwise the
    # warm-up pass would have classified every diagnostic text already and
    # the passes would time the cache, not the rules. Within a pass, texts
    # that repeat across messages hit the cache, as they do in real traffic.
    el = 0.0
    for _ in range(a.repeat):
        clf._cache.clear()
        t0 = time.process_time()
        for _f, raw in data:
            analyze(raw, classifier=clf)
        el += time.process_time() - t0
    ours = len(data) * a.repeat / el
    errors = sum(1 for p in preds if p.get("error"))

    print(f"machine: {machine()}")
    print(f"corpus: {a.corpus} ({len(data)} messages, "
          f"{sum(len(r) for _, r in data) / 1e6:.1f} MB)")
    score = os.path.join(a.corpus, "score.py")
    expected = os.path.join(a.corpus, "expected.jsonl")
    if os.path.exists(score) and os.path.exists(expected):
        with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as fp:
            for p in preds:
                fp.write(json.dumps(p) + "\n")
            pfile = fp.name
        try:
            out = subprocess.run([sys.executable, score, pfile, expected],
                                 capture_output=True, text=True).stdout
        finally:
            os.unlink(pfile)
        print("accuracy (score.py):")
        for line in out.splitlines():
            if line.startswith("Per recipient"):
                break
            if any(k in line for k in ("exact set match", "found nothing", "  status", "replycode",
                                       "  hard  ", "  reason", "  category")):
                print("  " + line.strip())
    print(f"analysis errors (limits): {errors}")
    print(f"hurricane: {ours:8.0f} msgs/s  ({len(data)} messages x {a.repeat} passes, "
          f"{el:.3f} s CPU, one core)")
    if a.no_sisimai:
        print("sisimai: skipped (--no-sisimai)")
        return 0
    r = sisimai(files, a.repeat)
    if isinstance(r, str):
        print(f"sisimai: {r}")
        return 0
    theirs, version = r
    print(f"sisimai {version}: {theirs:8.0f} msgs/s  (Perl, timed inside Perl, same files, "
          "same run)")
    print(f"ratio: {ours / theirs:.2f}x Sisimai's messages per second")
    if not a.no_append:
        print(append_results(
            "Analyzer alone: Hurricane vs Sisimai on the public corpus",
            ["messages x passes", "Hurricane msgs/s", "Sisimai msgs/s", "ratio"],
            [[f"{len(data)} x {a.repeat}", f"{ours:.0f}", f"{theirs:.0f}",
              f"{ours / theirs:.2f}"]],
            ["Both parse the same files in memory, one core each; Hurricane's time is "
             "process CPU time, each pass starting with an empty classifier cache; "
             f"Sisimai {version} is timed inside Perl (clock)."]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
