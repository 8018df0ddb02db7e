"""Numbered schema migrations, Synapse style.

Migration files live in the ``hurricane.store.migrations`` package and are
read with :mod:`importlib.resources`, so they are found in an installed wheel
(or a zip) exactly as in a source checkout. A migration is named by its file
stem, ``NNNN_name``:

- ``NNNN_name.sql`` is run by every engine;
- ``NNNN_name.sqlite.sql`` / ``NNNN_name.postgres.sql`` replace it for one
  engine where the dialects differ (either may exist without the other or
  without a common file; an engine with no file for a number records it as
  applied all the same, so numbers stay aligned).

Two bookkeeping tables record progress: ``applied_migrations`` (one row per
migration name) and ``schema_version`` (one row: the highest number). Each
migration runs in its own transaction together with its bookkeeping rows, so
a failure leaves the database at the previous version, and rerunning
:func:`migrate` applies only what is missing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

from twisted.logger import Logger

from hurricane.store import sql
from hurricane.store.sql import Dialect
from hurricane.store.txn.core import Txn

__all__ = ["Migration", "load_migrations", "latest_version", "applied_txn",
           "apply_migration_txn", "schema_version_txn"]

log = Logger()

_FILE = re.compile(
    r"^(?P<number>\d{4})_(?P<label>[a-z0-9_]+?)(?:\.(?P<engine>sqlite|postgres))?\.sql$")


@dataclass(frozen=True)
class Migration:
    """One numbered migration as one engine runs it."""

    number: int
    #: ``NNNN_label``: the key in ``applied_migrations``.
    name: str
    statements: tuple[str, ...]


def load_migrations(dialect: Dialect,
                    package: str = "hurricane.store.migrations") -> list[Migration]:
    """Read the migrations of ``package`` for one engine, in order.

    Args:
        dialect: the engine; its name selects engine-specific files.
        package: where the ``.sql`` files are (a test may point elsewhere).

    Returns:
        The migrations ordered by number.

    Raises:
        ValueError: two migrations share a number, or a name is malformed.
    """
    common: dict[str, str] = {}
    specific: dict[str, str] = {}
    for entry in resources.files(package).iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _FILE.match(entry.name)
        if match is None:
            raise ValueError(f"badly named migration file {entry.name!r} in {package}")
        stem = f"{match['number']}_{match['label']}"
        engine = match["engine"]
        if engine is None:
            common[stem] = entry.read_text(encoding="utf-8")
        elif engine == dialect.name:
            specific[stem] = entry.read_text(encoding="utf-8")
        else:
            # Another engine's file still reserves the name, so that
            # numbering stays the same for every engine.
            common.setdefault(stem, "")
    migrations: list[Migration] = []
    seen: dict[int, str] = {}
    for stem in sorted(set(common) | set(specific)):
        number = int(stem[:4])
        if number in seen:
            raise ValueError(f"migrations {seen[number]} and {stem} share number {number}")
        seen[number] = stem
        script = specific.get(stem, common.get(stem, ""))
        migrations.append(Migration(number, stem, tuple(sql.split_statements(script))))
    return migrations


def latest_version(package: str = "hurricane.store.migrations") -> int:
    """The number of the newest migration this version of Hurricane ships.

    Numbers are the same for every engine (another engine's file reserves its
    name), so any dialect gives the same answer: what ``hurricane migrate``
    brings a database to, and what ``check-config --connect`` compares with.

    Args:
        package: where the ``.sql`` files are.

    Returns:
        The highest number, 0 when there are no migrations.
    """
    from hurricane.store.sql import SQLITE

    return max((m.number for m in load_migrations(SQLITE, package)), default=0)


async def _ensure_bookkeeping(txn: Txn) -> None:
    await txn.execute(sql.CREATE_SCHEMA_VERSION)
    await txn.execute(sql.CREATE_APPLIED_MIGRATIONS)


async def applied_txn(txn: Txn) -> set[str]:
    """Create the bookkeeping tables if needed and return the applied names."""
    if txn.dialect.migration_lock:
        await txn.execute(txn.dialect.migration_lock)
    await _ensure_bookkeeping(txn)
    await txn.execute(sql.SELECT_APPLIED)
    return {row[0] for row in txn.fetchall()}


async def apply_migration_txn(txn: Txn, migration: Migration, now: float) -> bool:
    """Apply one migration and record it, unless another node just did.

    Args:
        txn: an open transaction (the whole migration commits or nothing).
        migration: what to run.
        now: epoch seconds for ``applied_at``.

    Returns:
        True when the migration was applied here, False when it already was.
    """
    if txn.dialect.migration_lock:
        await txn.execute(txn.dialect.migration_lock)
    await _ensure_bookkeeping(txn)
    await txn.execute(sql.SELECT_APPLIED_ONE, (migration.name,))
    if txn.fetchone() is not None:
        return False
    for statement in migration.statements:
        await txn.execute(statement)
    await txn.execute(sql.INSERT_APPLIED, (migration.number, migration.name, now))
    await txn.execute(sql.SELECT_SCHEMA_VERSION)
    row = txn.fetchone()
    if row is None or row[0] < migration.number:
        await txn.execute(sql.DELETE_SCHEMA_VERSION)
        await txn.execute(sql.INSERT_SCHEMA_VERSION, (migration.number,))
    return True


async def schema_version_txn(txn: Txn) -> int:
    """The number of the last applied migration, 0 when there is none."""
    await txn.execute(txn.dialect.table_exists, ("schema_version",))
    if txn.fetchone() is None:
        return 0
    await txn.execute(sql.SELECT_SCHEMA_VERSION)
    row = txn.fetchone()
    return int(row[0]) if row is not None else 0
