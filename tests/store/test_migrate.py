"""Numbered migrations: bookkeeping, idempotence and packaging."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import tempfile
import zipfile

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase, TestCase

import hurricane
from hurricane.store import migrate
from hurricane.store.sql import POSTGRES, SQLITE, split_statements
from hurricane.store.sqlite import SqliteStore


class MigrateTests(TestCase):
    """migrate() and schema_version() on an SQLite file."""

    async def test_migrate_twice(self) -> None:
        """An empty database is at version 0; migrate applies all, then nothing."""
        path = os.path.join(os.path.join(tempfile.mkdtemp(), "t"), "m.db")
        store = SqliteStore(path, reactor)
        # Connect without open(), which would migrate.
        await store._connect()
        store._open = True
        self.addCleanup(lambda: Deferred.fromCoroutine(store.close()))
        self.assertEqual(await store.schema_version(), 0)
        names = [m.name for m in migrate.load_migrations(SQLITE)]
        self.assertEqual(await store.migrate(), names)
        self.assertEqual(await store.schema_version(), int(names[-1][:4]))
        self.assertEqual(await store.migrate(), [])
        conn = sqlite3.connect(path)
        try:
            rows = conn.execute("SELECT name FROM applied_migrations ORDER BY version").fetchall()
            self.assertEqual([r[0] for r in rows], names)
            self.assertEqual(conn.execute("SELECT COUNT(*) FROM schema_version").fetchone(), (1,))
        finally:
            conn.close()

    async def test_open_migrates(self) -> None:
        """open() applies pending migrations; reopening applies none."""
        path = os.path.join(os.path.join(tempfile.mkdtemp(), "t"), "m.db")
        for _ in range(2):
            store = SqliteStore(path, reactor)
            await store.open()
            self.assertEqual(await store.migrate(), [])
            self.assertGreater(await store.schema_version(), 0)
            await store.close()


    async def test_open_without_migrating(self) -> None:
        """open(migrate=False) connects and leaves an empty database at version 0,
        so a tool can report what migrate() then applies."""
        path = os.path.join(os.path.join(tempfile.mkdtemp(), "t"), "m.db")
        store = SqliteStore(path, reactor)
        await store.open(migrate=False)
        self.addCleanup(lambda: Deferred.fromCoroutine(store.close()))
        self.assertEqual(await store.schema_version(), 0)
        names = [m.name for m in migrate.load_migrations(SQLITE)]
        self.assertEqual(await store.migrate(), names)
        self.assertEqual(await store.schema_version(), migrate.latest_version())


class MigrationFilesTests(SynchronousTestCase):
    """The migration files and how they are found."""

    def test_engine_files(self) -> None:
        """Both engines see the same numbered names; dialect files replace common ones."""
        sqlite = migrate.load_migrations(SQLITE)
        postgres = migrate.load_migrations(POSTGRES)
        self.assertEqual([m.name for m in sqlite], [m.name for m in postgres])
        self.assertEqual([m.number for m in sqlite], sorted({m.number for m in sqlite}))
        self.assertIn("AUTOINCREMENT", " ".join(sqlite[0].statements))
        self.assertIn("IDENTITY", " ".join(postgres[0].statements))

    def test_latest_version(self) -> None:
        """latest_version is the highest migration number, the same for both engines."""
        numbers = [m.number for m in migrate.load_migrations(POSTGRES)]
        self.assertEqual(migrate.latest_version(), max(numbers))

    def test_split_statements(self) -> None:
        """Comments are dropped and statements split on semicolons."""
        self.assertEqual(split_statements("-- c;\nCREATE TABLE a (x INT);\n\n-- d\nSELECT 1;"),
                         ["CREATE TABLE a (x INT)", "SELECT 1"])

    def test_found_when_installed(self) -> None:
        """Migrations load through importlib.resources from a zipped package, not the tree."""
        archive = os.path.abspath(os.path.join(tempfile.mkdtemp(), "t") + ".zip")
        root = os.path.dirname(os.path.dirname(os.path.abspath(hurricane.__file__)))
        with zipfile.ZipFile(archive, "w") as zf:
            for folder, _, files in os.walk(os.path.join(root, "hurricane")):
                for name in files:
                    if name.endswith((".py", ".sql", ".toml")):
                        full = os.path.join(folder, name)
                        zf.write(full, os.path.relpath(full, root))
        code = (
            "import hurricane.store.migrate as m, hurricane.store.sql as s\n"
            "assert m.__file__.startswith(%r), m.__file__\n"
            "print(len(m.load_migrations(s.SQLITE)), len(m.load_migrations(s.POSTGRES)))\n"
        ) % archive
        env = dict(os.environ, PYTHONPATH=archive)
        out = subprocess.run([sys.executable, "-c", code], env=env, cwd=os.path.dirname(archive),
                             capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        count = len(migrate.load_migrations(SQLITE))
        self.assertEqual(out.stdout.split(), [str(count), str(count)])
