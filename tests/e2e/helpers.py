"""Shared pieces of the end-to-end tests: temporary directories, PostgreSQL databases,
the ``hurricane outcomes`` command, and real-time waiting."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections import Counter
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from twisted.trial.unittest import SkipTest

HURRICANE = os.path.join(os.path.dirname(sys.executable), "hurricane")
TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")


def tmpdir(test: Any) -> str:
    """A temporary directory removed after the test (not self.mktemp(): the work tree)."""
    path = tempfile.mkdtemp(prefix="hurricane-e2e-")
    test.addCleanup(shutil.rmtree, path, True)
    return path


def postgres_url(test: Any) -> str:
    """A fresh, empty database for this test on ``HURRICANE_TEST_POSTGRES``.

    Skips without the variable, unless ``HURRICANE_REQUIRE_POSTGRES=1``.
    """
    dsn = os.environ.get("HURRICANE_TEST_POSTGRES", "")
    if not dsn:
        if os.environ.get("HURRICANE_REQUIRE_POSTGRES") == "1":
            raise RuntimeError("HURRICANE_REQUIRE_POSTGRES=1 but HURRICANE_TEST_POSTGRES "
                               "is unset")
        raise SkipTest("PostgreSQL end-to-end tests need "
                       "HURRICANE_TEST_POSTGRES=postgresql://user@host:port/db")
    import psycopg2

    name = "hurricane_e2e_" + uuid.uuid4().hex[:12]
    admin = psycopg2.connect(dsn)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")

    def drop() -> None:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()

    test.addCleanup(drop)
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


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
