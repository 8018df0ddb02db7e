"""create_store and redact_url."""

from __future__ import annotations

import os

from twisted.internet import reactor
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from hurricane.store.factory import create_store, redact_url
from hurricane.store.interface import IOutcomeStore, StoreConfigError
from hurricane.store.memory import MemoryStore
from hurricane.store.postgres import PostgresStore
from hurricane.store.sqlite import SqliteStore


class CreateStoreTests(SynchronousTestCase):
    """Store URLs map to engines; bad ones are refused with the URL named."""

    def test_memory(self) -> None:
        """memory: gives a MemoryStore."""
        store = create_store("memory:", reactor)
        self.assertIsInstance(store, MemoryStore)
        self.assertTrue(verifyObject(IOutcomeStore, store))

    def test_sqlite_absolute(self) -> None:
        """sqlite:///abs/path.db names an absolute file."""
        store = create_store("sqlite:///var/lib/h/h.db", reactor, synchronous="NORMAL")
        assert isinstance(store, SqliteStore)
        self.assertEqual(store.path, "/var/lib/h/h.db")
        self.assertEqual(store.url, "sqlite:///var/lib/h/h.db")

    def test_sqlite_relative(self) -> None:
        """sqlite:relative/path.db is relative to data_dir (else the working directory)."""
        store = create_store("sqlite:db/h.db", reactor, data_dir="/srv/data")
        assert isinstance(store, SqliteStore)
        self.assertEqual(store.path, "/srv/data/db/h.db")
        store = create_store("sqlite:h.db", reactor)
        assert isinstance(store, SqliteStore)
        self.assertEqual(store.path, os.path.abspath("h.db"))

    def test_postgres(self) -> None:
        """postgresql:// and postgres:// give a PostgresStore whose url has no password."""
        for scheme in ("postgresql", "postgres"):
            store = create_store(f"{scheme}://u:pw@db.test:5433/mail", reactor, pool_size=2)
            self.assertIsInstance(store, PostgresStore)
            self.assertEqual(store.url, f"{scheme}://u:***@db.test:5433/mail")

    def test_unknown_scheme(self) -> None:
        """An unknown scheme raises StoreConfigError naming the URL without password."""
        error = self.assertRaises(StoreConfigError, create_store,
                                  "mysql://u:pw@h/db", reactor)
        self.assertIn("mysql://u:***@h/db", str(error))
        self.assertNotIn("pw", str(error))

    def test_bad_urls_and_options(self) -> None:
        """Malformed SQLite URLs and unknown options raise StoreConfigError."""
        for url in ("sqlite://host/x.db", "sqlite:", "sqlite:///"):
            self.assertRaises(StoreConfigError, create_store, url, reactor)
        self.assertRaises(StoreConfigError, create_store, "sqlite:x.db", reactor, bogus=1)
        self.assertRaises(StoreConfigError, create_store, "sqlite:x.db", reactor,
                          synchronous="SOMETIMES")
        self.assertRaises(StoreConfigError, create_store, "memory:", reactor, pool_size=1)


class RedactUrlTests(SynchronousTestCase):
    """redact_url removes passwords and nothing else."""

    def test_redact(self) -> None:
        """Passwords in the userinfo and the query are replaced by ***."""
        self.assertEqual(redact_url("postgresql://u:s3cret@h:5432/db"),
                         "postgresql://u:***@h:5432/db")
        self.assertEqual(redact_url("postgresql://h/db?user=u&password=x&sslmode=require"),
                         "postgresql://h/db?user=u&password=***&sslmode=require")
        for url in ("postgresql://u@h/db", "sqlite:///a/b.db", "memory:"):
            self.assertEqual(redact_url(url), url)
