"""Build a store from its URL: ``memory:``, ``sqlite:...`` or ``postgresql://...``."""

from __future__ import annotations

import os
from typing import Any

from twisted.internet.interfaces import IReactorCore
from twisted.logger import Logger

from hurricane.store.interface import IOutcomeStore, StoreConfigError
from hurricane.store.urls import redact_url

__all__ = ["create_store", "redact_url", "sqlite_file"]

log = Logger()


def _sqlite_path(url: str, rest: str, data_dir: str | None) -> str:
    if rest.startswith("///"):
        path = rest[2:]  # sqlite:///abs/path.db -> /abs/path.db
    elif rest.startswith("//"):
        raise StoreConfigError(
            f"{url}: use sqlite:///absolute/path.db or sqlite:relative/path.db")
    else:
        path = rest  # sqlite:relative/path.db
        if not os.path.isabs(path) and data_dir is not None:
            path = os.path.join(data_dir, path)
    if not path or path.endswith("/"):
        raise StoreConfigError(f"{url}: no database file named")
    return os.path.abspath(path)


def sqlite_file(url: str, data_dir: str | None = None) -> str | None:
    """The database file a ``sqlite:`` URL names, resolved as :func:`create_store`
    resolves it; None for any other URL.

    Tools use it to look at the file without opening (and so creating) it.

    Raises:
        StoreConfigError: a malformed ``sqlite:`` URL.
    """
    scheme, sep, rest = url.partition(":")
    if scheme.lower() != "sqlite" or not sep:
        return None
    return _sqlite_path(redact_url(url), rest, data_dir)


def create_store(url: str, reactor: IReactorCore, *, data_dir: str | None = None,
                 **options: Any) -> IOutcomeStore:
    """A store for ``url``, not yet opened (call ``open()``).

    Args:
        url: ``memory:``, ``sqlite:///abs/path.db``, ``sqlite:relative/path.db``
            (relative to ``data_dir`` when given), ``postgresql://user@host:port/db``
            or ``postgres://...``.
        reactor: the reactor the engine runs on.
        data_dir: base directory of a relative SQLite path.
        options: engine options (``synchronous`` for SQLite, ``pool_size`` and
            ``connect_kwargs`` for PostgreSQL).

    Returns:
        The store.

    Raises:
        StoreConfigError: unknown scheme, malformed URL or unknown option;
            the message names the URL without its password.
    """
    shown = redact_url(url)
    scheme, sep, rest = url.partition(":")
    scheme = scheme.lower()
    try:
        if scheme == "memory" and sep:
            from hurricane.store.memory import MemoryStore

            if options:
                raise TypeError(f"unexpected options {sorted(options)}")
            return MemoryStore(url)
        if scheme == "sqlite" and sep:
            from hurricane.store.sqlite import SqliteStore

            path = _sqlite_path(shown, rest, data_dir)
            return SqliteStore(path, reactor, url=shown, **options)
        if scheme in ("postgresql", "postgres") and rest.startswith("//"):
            from hurricane.store.postgres import PostgresStore

            # libpq accepts both schemes; we show the canonical one.
            return PostgresStore(url, reactor, url=shown, **options)
    except (TypeError, ValueError) as e:
        raise StoreConfigError(f"store {shown}: {e}") from e
    raise StoreConfigError(
        f"unknown store URL {shown!r}: expected memory:, sqlite:///path.db or "
        "postgresql://user@host:port/db")
