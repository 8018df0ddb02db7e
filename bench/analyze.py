#!/usr/bin/env python3
"""Benchmark the bounce analyzer on both corpora, side by side with Sisimai.

    python bench/analyze.py [--rounds N] [--repeat N] [--no-sisimai] [--append]

Three scored sets, each next to Debian's Sisimai 4.25 (libsisimai-perl) on the
same files in the same run:

* the public corpus (../shared/bounce-corpus),
* the unsealed two thirds of ../shared/bounce-corpus-2,
* the SEALED third of bounce-corpus-2 (bench/_seal.py): only its aggregate
  figures are printed, never a file name or a per-file answer.

Columns (score.py, strict): recipients exact, reason, hard (Sisimai's
hardbounce), status over real codes (not Sisimai's x.0.9xx pseudo codes) and
category.  Then the stage coverage (the share of bounces whose analysis names
the SMTP stage at which the recipient failed), over all sets and per set, and speed:

* whole process: ``hurricane analyze --json FILES`` against ``perl`` running
  Sisimai over the same files (start-up, reading and printing included), CPU
  time of the child process (user + system), the median of --rounds runs,
  after one untimed run of each, Python with its bytecode cached as an
  installed package has it;
* in-process: analyze() over the files in memory (process CPU time) against
  Sisimai timed inside Perl, start-up excluded.

No timing threshold here is a test: this script only reports.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

from _common import append_results, machine  # noqa: E402  (shared by every benchmark)
from _seal import corpus1, load_expected, sets  # noqa: E402

HURRICANE = os.path.join(os.path.dirname(sys.executable), "hurricane")
ORACLE = os.path.join(HERE, "sisimai_oracle.pl")

# Sisimai timed inside Perl (start-up excluded): the in-process comparison.
PERL_INPROC = r"""
use strict; use warnings;
use Sisimai; use Time::HiRes qw(clock);
my $repeat = shift @ARGV;
my @data;
for my $f (@ARGV) {
    open(my $fh, '<:raw', $f) or die "$f: $!"; local $/; push @data, scalar <$fh>; close $fh;
}
my $call = Sisimai->can('rise') ? 'rise' : 'make';
for my $d (@data) { Sisimai->$call(\$d, 'input' => 'string'); }
my $t0 = clock();
for (1 .. $repeat) { for my $d (@data) { Sisimai->$call(\$d, 'input' => 'string'); } }
my $el = clock() - $t0;
printf "%d %.6f %s\n", scalar(@data) * $repeat, $el, $Sisimai::VERSION;
"""

FIELDS = ("recipients", "reason", "hard", "status~real", "category")


def _score_module(corpus: str) -> Any:
    spec = importlib.util.spec_from_file_location("bounce_corpus_score",
                                                  os.path.join(corpus, "score.py"))
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def figures(score: Any, preds: dict[str, dict[str, Any]],
            exps: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """The five strict figures (fractions) of score.py for one set."""
    exps = {k: e for k, e in exps.items() if e.get("source") != "none"}
    m, acc, _conf, _per, _has = score.score(preds, exps)

    def frac(name: str) -> float | None:
        a = acc[name]
        return a.strict / a.n if a.n else None

    return {"recipients": m["rcpt_exact"] / m["emails"] if m["emails"] else None,
            "reason": frac("reason"), "hard": frac("hard"), "status~real": frac("status~real"),
            "category": frac("category")}


#: The children run as an installed package does: with its bytecode cached
#: (pip compiles it at install). A session that sets PYTHONDONTWRITEBYTECODE
#: would otherwise time Python compiling nine modules' source at every start.
CHILD_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def run_timed(cmd: list[str], out_path: str) -> tuple[float, float, int]:
    """Run ``cmd`` with stdout to ``out_path``: (CPU seconds of the child, wall, exit)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    with open(out_path, "wb") as out:
        p = subprocess.run(cmd, stdout=out, stderr=subprocess.PIPE, timeout=600, env=CHILD_ENV)
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if p.returncode != 0:
        sys.stderr.write(p.stderr.decode("utf-8", "replace")[-2000:])
    return cpu, wall, p.returncode


def read_jsonl(path: str) -> dict[str, dict[str, Any]]:
    out = {}
    with open(path, encoding="utf-8") as fp:
        for line in fp:
            if line.strip():
                r = json.loads(line)
                out[os.path.basename(r["file"])] = r
    return out


def sisimai_available() -> str | None:
    """None when Perl and Sisimai are there, else why not."""
    if shutil.which("perl") is None:
        return "perl is not installed"
    if subprocess.run(["perl", "-MSisimai", "-e", "1"], capture_output=True).returncode != 0:
        return "Sisimai is not installed (Debian: apt-get install libsisimai-perl)"
    return None


def stage_coverage(preds: dict[str, dict[str, Any]],
                   exps: dict[str, dict[str, Any]]) -> tuple[int, int] | None:
    """(bounce recipients whose stage is known, bounce recipients); None if not reported."""
    known = total = 0
    reported = False
    for k, e in exps.items():
        if e.get("category") != "bounce":
            continue
        p = preds.get(k) or {}
        for r in p.get("results") or []:
            if "stage" in r:
                reported = True
            total += 1
            known += bool(r.get("stage"))
    return (known, total) if reported else None


def pct(v: float | None) -> str:
    return "    -" if v is None else f"{100 * v:5.1f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3, help="whole-process runs of each engine")
    ap.add_argument("--repeat", type=int, default=3, help="in-process passes over the files")
    ap.add_argument("--no-sisimai", action="store_true")
    ap.add_argument("--append", action="store_true", help="append the figures to RESULTS.md")
    a = ap.parse_args()
    scored = sets()
    for label, corpus, files, _sealed in scored:
        if not files:
            print(f"{label}: no files at {corpus}")
            return 2
    all_files = [f for _l, _c, files, _s in scored for f in files]
    why_not = None if not a.no_sisimai else "skipped (--no-sisimai)"
    why_not = why_not or sisimai_available()

    tmp = tempfile.mkdtemp(prefix="bench-analyze-")
    try:
        ours_cpu, ours_wall, theirs_cpu, theirs_wall = [], [], [], []
        ours_out = os.path.join(tmp, "ours.jsonl")
        theirs_out = os.path.join(tmp, "sisimai.jsonl")
        # one untimed run of each: bytecode written, files in the page cache
        run_timed([HURRICANE, "analyze", "--json", all_files[0]], ours_out)
        if why_not is None:
            run_timed(["perl", ORACLE, all_files[0]], theirs_out)
        for _ in range(max(1, a.rounds)):
            cpu, wall, rc = run_timed([HURRICANE, "analyze", "--json", *all_files], ours_out)
            if rc != 0:
                print(f"hurricane analyze failed (exit {rc})")
                return 1
            ours_cpu.append(cpu)
            ours_wall.append(wall)
            if why_not is None:
                cpu, wall, rc = run_timed(["perl", ORACLE, *all_files], theirs_out)
                if rc != 0:
                    why_not = f"Sisimai failed (exit {rc})"
                else:
                    theirs_cpu.append(cpu)
                    theirs_wall.append(wall)
        ours = read_jsonl(ours_out)
        theirs = read_jsonl(theirs_out) if why_not is None else {}

        print(f"machine: {machine()}")
        print("figures: score.py strict, % (recipients = exact set match; status over real "
              "codes)")
        print(f"  {'set':<20} {'n':>4}  {'engine':<9}" + "".join(f"{f:>12}" for f in FIELDS))
        rows = []
        cov_known = cov_total = 0
        cov_reported = True
        cov_sets: list[str] = []
        for label, corpus, files, _sealed in scored:
            score = _score_module(corpus1())
            exp_all = load_expected(corpus)
            names = {os.path.basename(f) for f in files}
            exps = {k: e for k, e in exp_all.items() if k in names}
            engines = [("hurricane", ours)] + ([("sisimai", theirs)] if theirs else [])
            for engine, preds in engines:
                fig = figures(score, {k: v for k, v in preds.items() if k in names}, exps)
                rows.append((label, len(files), engine, fig))
                print(f"  {label:<20} {len(files):>4}  {engine:<9}"
                      + "".join(f"{pct(fig[f]):>12}" for f in FIELDS))
            cov = stage_coverage(ours, exps)
            if cov is None:
                cov_reported = False
            else:
                cov_known += cov[0]
                cov_total += cov[1]
                if cov[1]:
                    cov_sets.append(f"{label} {100 * cov[0] / cov[1]:.1f} % of {cov[1]}")
        if cov_reported and cov_total:
            print(f"stage coverage: {cov_known}/{cov_total} bounce results "
                  f"({100 * cov_known / cov_total:.1f} %) name the SMTP stage (all three sets)")
            print("  per set: " + "; ".join(cov_sets))
        else:
            print("stage coverage: not reported by this analyzer (no 'stage' in its results)")

        n = len(all_files)
        oc, ow = statistics.median(ours_cpu), statistics.median(ours_wall)
        print(f"whole process, {n} files, median of {len(ours_cpu)} runs:")
        print(f"  hurricane analyze --json: {n / oc:7.0f} msgs/s CPU ({oc:.2f} s), "
              f"{n / ow:7.0f} msgs/s wall")
        ratio_whole = None
        if theirs_cpu:
            tc, tw = statistics.median(theirs_cpu), statistics.median(theirs_wall)
            ratio_whole = tc / oc
            print(f"  perl + Sisimai:           {n / tc:7.0f} msgs/s CPU ({tc:.2f} s), "
                  f"{n / tw:7.0f} msgs/s wall")
            print(f"  ratio: {ratio_whole:.2f}x Sisimai (CPU), {tw / ow:.2f}x (wall)")
        else:
            print(f"  sisimai: {why_not}")

        # in-process: parse time only, files in memory
        from hurricane.bounce.analyze import analyze
        from hurricane.bounce.classify import default_classifier
        data = []
        for f in all_files:
            with open(f, "rb") as fp:
                data.append(fp.read())
        clf = default_classifier()
        for raw in data:
            analyze(raw, classifier=clf)
        el = 0.0
        for _ in range(a.repeat):
            clf._cache.clear()      # time the rules, not the cache of a previous pass
            t0 = time.process_time()
            for raw in data:
                analyze(raw, classifier=clf)
            el += time.process_time() - t0
        inproc = n * a.repeat / el
        print(f"in process ({n} files x {a.repeat} passes):")
        print(f"  hurricane: {inproc:7.0f} msgs/s")
        ratio_in = None
        if why_not is None:
            script = os.path.join(tmp, "inproc.pl")
            with open(script, "w") as fp:
                fp.write(PERL_INPROC)
            p = subprocess.run(["perl", script, str(a.repeat), *all_files],
                               capture_output=True, text=True, timeout=600)
            if p.returncode == 0:
                cnt, sec, version = p.stdout.split()
                theirs_in = int(cnt) / float(sec)
                ratio_in = inproc / theirs_in
                print(f"  sisimai {version}: {theirs_in:7.0f} msgs/s (timed inside Perl)")
                print(f"  ratio: {ratio_in:.2f}x")
        if a.append:
            table = [[label, str(nf), engine] + [pct(fig[f]).strip() for f in FIELDS]
                     for label, nf, engine, fig in rows]
            notes = [f"Whole process: {ratio_whole:.2f}x Sisimai's messages per CPU second"
                     if ratio_whole else "Whole process: Sisimai not run",
                     f"in process: {ratio_in:.2f}x" if ratio_in else "in process: -",
                     f"stage coverage {100 * cov_known / cov_total:.1f} % "
                     f"({'; '.join(cov_sets)})"
                     if cov_reported and cov_total else "stage coverage not reported"]
            print(append_results("Analyzer accuracy on three sets, and speed against Sisimai",
                                 ["set", "n", "engine", *FIELDS], table, notes))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
