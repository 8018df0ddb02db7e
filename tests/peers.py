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
