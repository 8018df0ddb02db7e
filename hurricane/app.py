"""The composition root: every component built from the configuration.

``build_service`` creates the objects with explicit constructor arguments and
attaches them, in start order, to one :class:`HurricaneService`. ``tap.py``
calls it with the global reactor; tests and ``hurricane demo`` call it with
their own.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from twisted.internet import endpoints
from twisted.logger import Logger

from hurricane.config import Config
from hurricane.service import HurricaneService, ListenerService

log = Logger()


class StartupError(Exception):
    """The server cannot start with this configuration (printed without traceback)."""


def _preflight_store(config: Config) -> None:
    """Fail fast, naming the URL, when the store cannot be reached at all.

    twistd cannot exit non-zero once the reactor runs, so the common mistakes
    (unwritable data directory, PostgreSQL down, wrong database) are caught
    here, synchronously, before the reactor starts.
    """
    from hurricane.store.factory import redact_url

    url = config.store_url
    if url.startswith("sqlite:"):
        import sqlite3

        path = url.split("sqlite:", 1)[1]
        if path.startswith("///"):
            path = path[2:]
        try:
            os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
            sqlite3.connect(path, timeout=5).close()
        except (OSError, sqlite3.Error) as e:
            raise StartupError(f"cannot open store {redact_url(url)}: {e}") from None
    elif url.startswith(("postgresql:", "postgres:")):
        import psycopg2

        try:
            psycopg2.connect(url, connect_timeout=10).close()
        except psycopg2.Error as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise StartupError(f"cannot open store {redact_url(url)}: {first}") from None


def build_service(
    config: Config, reactor: Any, *, on_fatal: Callable[[str], None],
    preflight: bool = True,
) -> HurricaneService:
    """Build the whole service tree.

    Args:
        config: the validated configuration.
        reactor: provides IReactorTime, IReactorTCP, IReactorThreads...
        on_fatal: called when asynchronous start-up fails.
        preflight: check synchronously that the store is reachable.

    Raises:
        StartupError: for problems found before the reactor runs.
    """
    from hurricane.store.factory import create_store
    from hurricane.store.interface import StoreError
    from hurricane.verp import codec_from_config

    try:
        os.makedirs(config.data_dir, exist_ok=True)
    except OSError as e:
        raise StartupError(f"cannot create data_dir {config.data_dir}: {e.strerror}") from None
    if preflight:
        _preflight_store(config)
    try:
        store = create_store(
            config.store_url, reactor, data_dir=config.data_dir,
            sqlite_synchronous=config.store.sqlite_synchronous,
            pool_size=config.store.pool_size,
        )
    except StoreError as e:
        raise StartupError(str(e)) from None
    try:
        codec = codec_from_config(config)
    except (OSError, ValueError) as e:
        raise StartupError(f"VERP keys: {e}") from None

    root = HurricaneService(store, on_fatal)
    root.components.update(config=config, store=store, codec=codec, reactor=reactor)
    _build_components(root, config, reactor)
    return root


def add_listeners(root: HurricaneService, kind: str, descriptions: Any, factory: Any,
                  reactor: Any) -> None:
    """Attach one :class:`ListenerService` per endpoint string."""
    for description in descriptions:
        endpoint = endpoints.serverFromString(reactor, description)
        ListenerService(kind, description, endpoint, factory).setServiceParent(root)


def _build_components(root: HurricaneService, config: Config, reactor: Any) -> None:
    """Workers first (they start after the store), listeners last."""
