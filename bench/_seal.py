"""The sealed third of bounce-corpus-2, and the corpora's places.

A third of ``bounce-corpus-2`` is chosen by a hash of each file's name
(``int(sha256(basename).hexdigest(), 16) % 3 == 0``: 42 of its 141 files) and
sealed: nobody working on the analyzer reads those messages or their expected
answers, so their aggregate score says how the analyzer does on mail it was
not fitted to.  Every tool in bench/ goes through this module and prints
per-file details only for files where ``sealed(name)`` is false.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def sealed(name: str) -> bool:
    """Whether the corpus-2 file ``name`` (any path; its base name counts) is sealed."""
    base = os.path.basename(name)
    return int(hashlib.sha256(base.encode()).hexdigest(), 16) % 3 == 0


def corpus1() -> str:
    """The public corpus: $HURRICANE_BOUNCE_CORPUS, else ../shared/bounce-corpus."""
    return os.environ.get("HURRICANE_BOUNCE_CORPUS") or os.path.normpath(
        os.path.join(ROOT, "..", "shared", "bounce-corpus"))


def corpus2() -> str:
    """Corpus 2: $HURRICANE_BOUNCE_CORPUS_2, else ../shared/bounce-corpus-2."""
    return os.environ.get("HURRICANE_BOUNCE_CORPUS_2") or os.path.normpath(
        os.path.join(ROOT, "..", "shared", "bounce-corpus-2"))


def emails(corpus: str) -> list[str]:
    """The corpus's email files, sorted."""
    d = os.path.join(corpus, "emails")
    return sorted(os.path.join(d, f) for f in os.listdir(d) if f.endswith(".eml"))


def load_expected(corpus: str) -> dict[str, dict[str, Any]]:
    """The corpus's expected.jsonl by base name (read, never printed, for sealed files)."""
    out = {}
    with open(os.path.join(corpus, "expected.jsonl")) as fp:
        for line in fp:
            if line.strip():
                e = json.loads(line)
                out[os.path.basename(e["file"])] = e
    return out


def sets() -> list[tuple[str, str, list[str], bool]]:
    """(label, corpus dir, files, sealed) for the three scored sets."""
    c1, c2 = corpus1(), corpus2()
    f2 = emails(c2)
    return [
        ("public corpus", c1, emails(c1), False),
        ("corpus-2 unsealed", c2, [f for f in f2 if not sealed(f)], False),
        ("corpus-2 SEALED", c2, [f for f in f2 if sealed(f)], True),
    ]
