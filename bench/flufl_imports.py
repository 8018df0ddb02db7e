#!/usr/bin/env python3
"""Which unsealed corpus files make the analyzer import flufl.bounce (fluflgate let them by).

    python bench/flufl_imports.py

analyze._flufl skips flufl.bounce when fluflgate.cannot_find says none of its
detectors can answer; ordinary mail should never pay for its import. Sealed
files (bench/_seal.py) are skipped, not read. Prints each unsealed file that
imported it (none expected), how many files reached the gate and how many it
let through, and how many of all unsealed files the gate alone would skip (its
strength on ordinary mail, whether or not the analyzer gets that far).
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from _seal import sets  # noqa: E402

from hurricane.bounce import analyze, fluflgate, mime  # noqa: E402


def main() -> int:
    calls: list[bool] = []
    real = fluflgate.cannot_find

    def spy(raw: bytes) -> bool:
        calls.append(real(raw))
        return calls[-1]

    fluflgate.cannot_find = spy     # (analyze._flufl imports the name when it runs)
    imported = reached = passed = skipped = total = 0
    for label, _corpus, files, is_sealed in sets():
        if is_sealed:
            continue
        for f in files:
            before = "flufl.bounce" in sys.modules
            del calls[:]
            with open(f, "rb") as fp:
                raw = fp.read()
            analyze.analyze(raw)
            total += 1
            skipped += real(mime.normalise(raw))
            reached += bool(calls)
            passed += calls.count(False)
            if "flufl.bounce" in sys.modules and not before:
                imported += 1
                print(label, os.path.basename(f), "imported flufl.bounce")
    print(f"gate reached {reached}, let through {passed}, flufl.bounce imported by {imported}")
    print(f"the gate alone skips {skipped} of {total} unsealed files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
