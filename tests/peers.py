"""Skipping for a missing real peer: allowed on a developer's machine, a failure in CI.

CI sets ``HURRICANE_REQUIRE_PEERS=1`` after installing every peer the suite
talks to (smtp-sink, swaks, ssh, chromium, chattr...), so a skip there
would hide a check that did not run.
"""

from __future__ import annotations

import os
from typing import NoReturn

from twisted.trial.unittest import SkipTest


def missing_peer(reason: str) -> NoReturn:
    """Skip the test, or fail it under ``HURRICANE_REQUIRE_PEERS=1``."""
    if os.environ.get("HURRICANE_REQUIRE_PEERS") == "1":
        raise AssertionError(f"HURRICANE_REQUIRE_PEERS=1 but {reason}")
    raise SkipTest(reason)


#: The checkout's root (the corpus lives next to it, in ../shared).
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def corpus_dir() -> str | None:
    """The public bounce corpus: ``$HURRICANE_BOUNCE_CORPUS``, else
    ``../shared/bounce-corpus`` next to the checkout; None when absent."""
    env = os.environ.get("HURRICANE_BOUNCE_CORPUS")
    candidates = [env] if env else [os.path.join(_ROOT, "..", "shared", "bounce-corpus")]
    for c in candidates:
        if c and os.path.isfile(os.path.join(c, "expected.jsonl")) \
                and os.path.isdir(os.path.join(c, "emails")):
            return os.path.normpath(c)
    return None


def require_corpus() -> str:
    """The corpus directory; skip without it, or fail under ``HURRICANE_REQUIRE_CORPUS=1``."""
    d = corpus_dir()
    if d is None:
        msg = ("bounce corpus not found: set HURRICANE_BOUNCE_CORPUS or put it at "
               "../shared/bounce-corpus next to the checkout")
        if os.environ.get("HURRICANE_REQUIRE_CORPUS") == "1":
            raise AssertionError(msg + " (HURRICANE_REQUIRE_CORPUS=1)")
        raise SkipTest(msg)
    return d


def corpus2_dir() -> str | None:
    """Bounce corpus 2: ``$HURRICANE_BOUNCE_CORPUS_2``, else ``../shared/bounce-corpus-2``
    next to the checkout; None when absent."""
    env = os.environ.get("HURRICANE_BOUNCE_CORPUS_2")
    c = env or os.path.join(_ROOT, "..", "shared", "bounce-corpus-2")
    if os.path.isfile(os.path.join(c, "expected.jsonl")) \
            and os.path.isdir(os.path.join(c, "emails")):
        return os.path.normpath(c)
    return None


def require_corpus2() -> str:
    """Corpus 2's directory; skip without it, or fail under ``HURRICANE_REQUIRE_CORPUS=1``."""
    d = corpus2_dir()
    if d is None:
        msg = ("bounce corpus 2 not found: set HURRICANE_BOUNCE_CORPUS_2 or put it at "
               "../shared/bounce-corpus-2 next to the checkout")
        if os.environ.get("HURRICANE_REQUIRE_CORPUS") == "1":
            raise AssertionError(msg + " (HURRICANE_REQUIRE_CORPUS=1)")
        raise SkipTest(msg)
    return d
