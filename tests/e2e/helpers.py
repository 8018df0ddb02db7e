"""Shared pieces of the end-to-end tests: the ``hurricane outcomes`` command and its
counts; the process harness itself (executables, directories, databases) is
tests/process.py."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from typing import Any

from tests.process import HURRICANE, TWISTD, Cleanups, fresh_postgres_database, temp_dir

__all__ = ["HURRICANE", "TWISTD", "by_state", "outcomes", "postgres_url", "tmpdir"]


def tmpdir(test: Cleanups) -> str:
    """A temporary directory removed after the test (tests.process.temp_dir)."""
    return temp_dir(test, "hurricane-e2e-")


def postgres_url(test: Cleanups) -> str:
    """A fresh, empty database for this test on ``HURRICANE_TEST_POSTGRES``
    (tests.process.fresh_postgres_database): skips without the variable, unless
    ``HURRICANE_REQUIRE_POSTGRES=1``."""
    return fresh_postgres_database(test, "hurricane_e2e_")


def outcomes(config_file: str) -> list[dict[str, Any]]:
    """Run ``hurricane outcomes --config FILE`` and parse its JSON lines."""
    proc = subprocess.run([HURRICANE, "outcomes", "--config", config_file],
                          capture_output=True, text=True, timeout=60)
    if proc.returncode:
        raise AssertionError(f"hurricane outcomes failed: {proc.stderr}")
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


def by_state(records: list[dict[str, Any]]) -> Counter[str]:
    """Count records per state."""
    return Counter(r["state"] for r in records)
