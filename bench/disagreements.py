#!/usr/bin/env python3
"""List where the analyzer disagrees with the expected answers (and with Sisimai 4.25).

    python bench/disagreements.py [--set public|unsealed] [--field reason|hard|recipients]
                                  [--no-sisimai]

One line per disagreeing file: expected, ours, Debian's Sisimai 4.25, the
status codes, the rule and the start of the diagnostic.  Only the public
corpus and the UNSEALED part of bounce-corpus-2 can be listed: the sealed
third (bench/_seal.py) is refused here, so it can only ever be scored in
aggregate (bench/analyze.py).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from _seal import corpus1, corpus2, emails, load_expected, sealed  # noqa: E402

HURRICANE = os.path.join(os.path.dirname(sys.executable), "hurricane")


def run_jsonl(cmd: list[str]) -> dict[str, dict[str, Any]]:
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    out = {}
    for line in p.stdout.splitlines():
        if line.strip():
            r = json.loads(line)
            out[os.path.basename(r["file"])] = r
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", choices=("public", "unsealed"), default="unsealed")
    ap.add_argument("--field", choices=("reason", "hard", "recipients", "category"),
                    default="reason")
    ap.add_argument("--no-sisimai", action="store_true")
    a = ap.parse_args()
    corpus = corpus1() if a.set == "public" else corpus2()
    files = emails(corpus)
    if a.set == "unsealed":
        files = [f for f in files if not sealed(f)]
    names = {os.path.basename(f) for f in files}
    exps = {k: e for k, e in load_expected(corpus).items() if k in names}
    ours = run_jsonl([HURRICANE, "analyze", "--json", *files])
    sis = {} if a.no_sisimai else run_jsonl(["perl", os.path.join(HERE, "sisimai_oracle.pl"),
                                             *files])
    n = 0
    for name, e in sorted(exps.items()):
        assert not (a.set == "unsealed" and sealed(name))   # the seal, checked once more
        if e.get("source") == "none":
            continue
        o, s = ours.get(name, {}), sis.get(name, {})
        r0 = (o.get("results") or [{}])[0]
        if a.field == "reason":
            if not e.get("reason") or o.get("reason") == e["reason"]:
                continue
        elif a.field == "hard":
            if e.get("category") != "bounce" or bool(o.get("hard")) == bool(e.get("hardbounce")):
                continue
        elif a.field == "category":
            if o.get("category") == e.get("category"):
                continue
        else:
            er = sorted(x.lower() for x in e.get("recipients", []))
            pr = sorted(x.lower() for x in o.get("recipients", []))
            if er == pr:
                continue
            print(f"{name:45s} exp={er} ours={pr} sis425={s.get('recipients')}")
            n += 1
            continue
        n += 1
        print(f"{name:45s} exp={e.get('reason', ''):15s} ours={o.get('reason', ''):15s} "
              f"sis425={s.get('reason', ''):15s} hard={e.get('hardbounce')}/{o.get('hard')} "
              f"st={e.get('status')}/{o.get('status')} stage={r0.get('stage')} "
              f"rule={r0.get('rule')} diag={(r0.get('diagnostic') or '')[:140]!r}")
    print(f"{n} disagreements on {a.field} in {len(exps)} files ({a.set})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
