#!/usr/bin/env python3
"""Fuzz the bounce analyzer: random bytes, hostile MIME trees and runs, mangled corpus messages.

    python fuzz/fuzz_analyze.py --seconds 600

Properties: ``analyze`` never raises, its result serialises to JSON, and it
stays within the CPU budget (``AnalysisLimits.cpu_seconds``, plus slack for
the machine). When the bounce corpus is present (``HURRICANE_BOUNCE_CORPUS``
or ``../shared/bounce-corpus``) its messages are mutated too; they are only
read, never copied.
"""

from __future__ import annotations

import json
import os
import sys
import time

from _runner import HERE, main
from hypothesis import strategies as st

from hurricane.bounce.analyze import AnalysisLimits, analyze
from hurricane.bounce.model import Analysis
from tests.bounce.strategies import hostile_mail
from tests.hardening.strategies import returned_mail

LIMITS = AnalysisLimits(cpu_seconds=2.0)
SLACK = 1.0


def check(raw: bytes) -> None:
    started = time.process_time()
    result = analyze(raw, limits=LIMITS)
    spent = time.process_time() - started
    assert isinstance(result, Analysis), type(result)
    json.dumps(result.to_json())
    assert spent < LIMITS.cpu_seconds + SLACK, f"{spent:.2f}s CPU on {len(raw)} bytes"


def corpus() -> list[bytes]:
    root = os.environ.get("HURRICANE_BOUNCE_CORPUS") or os.path.join(
        os.path.dirname(HERE), "..", "shared", "bounce-corpus")
    found = []
    for dirpath, _, names in os.walk(root):
        for name in sorted(names):
            if name.endswith((".eml", ".txt", ".msg")) or "." not in name:
                with open(os.path.join(dirpath, name), "rb") as fp:
                    found.append(fp.read(1 << 20))
    return found


def mutate(base: bytes, cut: int, at: int, junk: bytes, repeat: int) -> bytes:
    """Truncate, splice junk in, and repeat a slice (a cheap mutation engine)."""
    if not base:
        return junk
    cut %= len(base) + 1
    at %= cut + 1
    data = base[:cut]
    piece = data[at:at + 64] * repeat
    return data[:at] + junk + piece + data[at:]


_CORPUS = corpus()
PROPERTIES = [
    ("random_bytes", check, (st.binary(max_size=5000),)),
    ("mime_trees", check, (returned_mail,)),
    ("hostile_mime", check, (hostile_mail,)),
]
if _CORPUS:
    PROPERTIES.append((
        "corpus_mutations",
        lambda base, cut, at, junk, repeat: check(mutate(base, cut, at, junk, repeat)),
        (st.sampled_from(_CORPUS), st.integers(0, 1 << 20), st.integers(0, 1 << 20),
         st.binary(max_size=200), st.integers(0, 2000)),
    ))

if __name__ == "__main__":
    sys.exit(main(__doc__.splitlines()[0], PROPERTIES))
