"""``hurricane providers`` and ``hurricane mailing show|release|cancel`` (issue 19).

Both go through :class:`hurricane.operations.Operations`, like every other
front end. The providers' current limits come from the store (every node
writes its actions there), over the configuration's providers.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from hurricane.cli import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    CommandError,
    _add_config,
    _config,
    _run_store,
)
from hurricane.config import Config
from hurricane.operations import InvalidRequest, Operations
from hurricane.policy.operate import NoPolicyStore
from hurricane.policy.providers import ProviderLimiter, ProviderMap
from hurricane.reactors import IStoreReactor
from hurricane.store.interface import IOutcomeStore

__all__ = ["add_parser", "cmd_mailing", "cmd_providers"]


class _Subcommands(Protocol):
    def add_parser(self, name: str, **kwargs: object) -> argparse.ArgumentParser:
        """A parser for subcommand ``name``."""


def _with_operations(config: Config, work: Callable[[Operations], Awaitable[int]]) -> int:
    async def run(store: IOutcomeStore, reactor: IStoreReactor) -> int:
        limiter = ProviderLimiter(ProviderMap(config.delivery), config.delivery.adaptive)
        try:
            return await work(Operations(store, reactor, limiter=limiter))
        except InvalidRequest as e:
            raise CommandError(e.message, EXIT_USAGE) from None
        except NoPolicyStore as e:
            raise CommandError(str(e), EXIT_USAGE) from None

    return _run_store(config, run)


def _when(t: object) -> str:
    if not isinstance(t, float):
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t)) + "Z"


def cmd_providers(args: argparse.Namespace) -> int:
    """Print every provider's configured and current limits, and its recent actions."""
    config = _config(args)

    async def work(operations: Operations) -> int:
        rows = await operations.providers()
        if args.json:
            print(json.dumps({"providers": rows}, indent=2))
            return EXIT_OK
        for row in rows:
            rate = row["current_rate_per_minute"]
            print(f"{row['provider']}: max_connections {row['max_connections']}, "
                  f"rate {row['rate_per_minute'] or 'unlimited'}/min configured, "
                  f"{rate or 'unlimited'}/min now"
                  + (f", suspended until {_when(row['suspended_until'])}"
                     if row["suspended_until"] else "")
                  + (f", paused until {_when(row['paused_until'])}"
                     if row["paused_until"] else "")
                  + (f" ({row['cause']})" if row["cause"] else ""))
            actions = row["recent_actions"]
            assert isinstance(actions, list)
            for a in actions:
                print(f"  {_when(a['at'])} {a['action']} ({a['cause']}): "
                      f"{a['before']} -> {a['after']} {json.dumps(a['evidence'])}")
        return EXIT_OK

    return _with_operations(config, work)


def cmd_mailing(args: argparse.Namespace) -> int:
    """Show, release or cancel a mailing held by its circuit breaker."""
    config = _config(args)

    async def work(operations: Operations) -> int:
        if args.action == "show":
            hold = await operations.mailing_hold(args.mailing_id)
            print(json.dumps(hold.as_json(), indent=2))
            return EXIT_OK
        if args.action == "release":
            count = await operations.release_mailing(args.mailing_id, "command")
            print(f"released {count} held recipients of {args.mailing_id.strip()}")
        else:
            count = await operations.cancel_mailing(args.mailing_id, "command")
            print(f"cancelled {count} held recipients of {args.mailing_id.strip()}")
        return EXIT_OK if count >= 0 else EXIT_FAILED

    return _with_operations(config, work)


def add_parser(sub: _Subcommands) -> None:
    """Add ``providers`` and ``mailing`` to the ``hurricane`` command."""
    p = sub.add_parser("providers", help="show provider limits as they adapted",
                       description="Every provider's configured limits, its current rate, "
                       "pause or suspension, and its recent policy actions (from the store: "
                       "every node's).")
    _add_config(p)
    p.add_argument("--json", action="store_true", help="one JSON document")
    p.set_defaults(func=cmd_providers)

    m = sub.add_parser("mailing", help="show, release or cancel a held mailing",
                       description="A mailing whose circuit breaker tripped is held: "
                       "release sends its held recipients (and keeps the breaker off for "
                       "it), cancel moves them to the final state cancelled.")
    msub = m.add_subparsers(dest="action", metavar="ACTION")
    msub.required = True
    for action, text in (("show", "print the mailing's breaker and counts as JSON"),
                         ("release", "send the held recipients"),
                         ("cancel", "cancel the held recipients")):
        p = msub.add_parser(action, help=text, description=text[0].upper() + text[1:] + ".")
        _add_config(p)
        p.add_argument("mailing_id", metavar="MAILING_ID")
        p.set_defaults(func=cmd_mailing)
