"""kill -9 during a load of submissions and bounces, then restart: nothing lost or doubled."""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from tests.hardening.harness import Hurricane, SmtpSink, fresh_postgres_database, temp_dir
from tests.hardening.load import crash_overrides, run_crash_load

SEED = 20261127
KILLS = 4


class CrashSQLiteTests(TestCase):
    """kill -9 at seeded random moments with the SQLite store."""

    timeout = 240

    def test_kill9_during_load(self) -> None:
        """Every 250 is delivered and recorded once; duplicates only from in-flight work."""
        sink = SmtpSink(self).start()
        server = Hurricane(temp_dir(self), crash_overrides(sink.port))
        self.addCleanup(server.kill)
        report = run_crash_load(server, sink, SEED, KILLS)
        print("\n".join(["sqlite:", *report.lines()]))  # shown with pytest -s
        self.assertGreater(report.messages_250, 20, report.lines())
        self.assertGreater(report.bounces_250, 5, report.lines())


class CrashPostgresTests(TestCase):
    """kill -9 at seeded random moments with the PostgreSQL store (a fresh database)."""

    timeout = 240

    def test_kill9_during_load(self) -> None:
        """Every 250 is delivered and recorded once; duplicates only from in-flight work."""
        url = fresh_postgres_database(self)
        sink = SmtpSink(self).start()
        server = Hurricane(temp_dir(self), crash_overrides(sink.port, url))
        self.addCleanup(server.kill)
        report = run_crash_load(server, sink, SEED + 1, KILLS)
        print("\n".join(["postgresql:", *report.lines()]))  # shown with pytest -s
        self.assertGreater(report.messages_250, 20, report.lines())
        self.assertGreater(report.bounces_250, 5, report.lines())
