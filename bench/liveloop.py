#!/usr/bin/env python3
"""The live loop as a score table: real MTAs bounce Hurricane's real deliveries.

    python bench/liveloop.py [--mta postfix] [--mta exim] [--keep DIR] [--append]

Hurricane delivers one message per case to a throwaway Postfix (and Exim,
when ``exim`` is on the PATH or ``$HURRICANE_EXIM`` names one:
tests/integration/unpack-exim.sh unpacks Debian's beside Postfix) on
loopback; each MTA fails it for a known cause and its own bounce code mails
the DSN to the VERP return path (tests/integration/liveloop.py has the
cases, each with the reason docs/bounce-reasons.md gives for its cause).
Prints, per MTA and cause, the reason / hard / state recorded against the
expected ones, and the share recorded right. Needs root. ``--keep DIR``
copies every returned message there for reading.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

from _common import append_results, machine  # noqa: E402

from tests.integration import liveloop  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mta", action="append", choices=("postfix", "exim"),
                    help="the MTAs to run (default: every one installed)")
    ap.add_argument("--keep", metavar="DIR", help="copy the returned messages into DIR")
    ap.add_argument("--append", action="store_true", help="append the table to RESULTS.md")
    a = ap.parse_args()
    why = liveloop.why_not_root()
    if why is not None:
        print(f"liveloop: {why}")
        return 2
    wanted = a.mta or ["postfix"] + (["exim"] if liveloop.find_exim() else [])
    classes = {"postfix": liveloop.PostfixMta, "exim": liveloop.EximMta}
    mtas = {m: classes[m] for m in wanted}

    from twisted.internet import defer, task

    result: list[Any] = []

    def run(reactor: Any) -> Any:
        root = liveloop.temp_root()

        async def go() -> None:
            try:
                result.extend(await liveloop.run_loop(reactor, root, liveloop.CASES, mtas,
                                                      timeout=90, keep_returns=a.keep))
            finally:
                liveloop.cleanup(root)

        return defer.ensureDeferred(go())

    try:
        task.react(run)
    except SystemExit as e:     # (react exits; the table comes after)
        if e.code:
            return int(e.code)
    return report(wanted, result, a.append)


def report(wanted: list[str], result: list[Any], append: bool) -> int:
    """Print the table (and append it to RESULTS.md); 0 when every case is right."""
    print(f"machine: {machine()}")
    rows = []
    for mta in wanted:
        outs = [o for o in result if o.case.mta == mta]
        print(f"\n{mta}: {sum(o.right for o in outs)}/{len(outs)} recorded right "
              "(reason, hard and state)")
        print(f"  {'cause':42} {'expected':28} {'recorded':28}")
        for o in outs:
            exp = f"{o.case.reason}/{'hard' if o.case.hard else 'soft'}/{o.case.state}"
            got = f"{o.reason}/{'hard' if o.hard else 'soft'}/{o.state}"
            mark = "ok" if o.right else "WRONG"
            print(f"  {o.case.cause:42} {exp:28} {got:28} {mark}")
            rows.append([mta, o.case.cause, exp, got, "yes" if o.right else "**no**"])
    right = sum(o.right for o in result)
    reason_right = sum(o.reason == o.case.reason for o in result)
    print(f"\nall: {right}/{len(result)} right ({100 * right / max(1, len(result)):.1f} %); "
          f"reason right {reason_right}/{len(result)}")
    if append:
        print(append_results("Live loop: real MTAs bounce Hurricane's deliveries",
                             ["MTA", "cause", "expected", "recorded", "right"], rows,
                             [f"{right}/{len(result)} right (reason, hard and state); "
                              f"reason right {reason_right}/{len(result)}"]))
    return 0 if right == len(result) else 1


if __name__ == "__main__":
    sys.exit(main())
