#!/usr/bin/env python3
"""One stage of the inbound path alone, as a server, for bench/inbound.py's stage ladder.

    python bench/_stages.py STAGE PORT KEYS_FILE DOMAIN WORK_DIR

Stages, each the previous one plus one piece of the real path:

- ``twisted``: stock ``twisted.mail.smtp.ESMTP``, every message accepted
  and thrown away (what the SMTP library alone costs).
- ``listener``: Hurricane's bounce listener (``BounceFactory``: hardened
  framing, policy, VERP signature check, Received line, the "stored" log
  lines) over the in-memory store: everything before the durable write.
- ``listener-sqlite``: the same over the SQLite store with Hurricane's
  settings (WAL, synchronous FULL, group commit): a 250 only after the
  commit, as the real server; no analysis, no correlation, no recording.

The real server (all of that plus analysis, correlation and recording) is
the last rung, measured by bench/inbound.py itself. Logging goes to
``WORK_DIR/stage.log`` through Hurricane's own text-log observer, as under
``twistd``. Prints ``listening`` once the port is open.
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from typing import Any  # noqa: E402

from twisted.internet import defer  # noqa: E402

#: The rungs below the whole server, cheapest first.
STAGES = ("twisted", "listener", "listener-sqlite")


def stock_twisted() -> object:
    """Stock twisted.mail ESMTP that accepts everything and keeps nothing."""
    from twisted.mail import smtp
    from zope.interface import implementer

    @implementer(smtp.IMessage)
    class Discard:
        def lineReceived(self, line: bytes) -> None:
            pass

        def eomReceived(self) -> defer.Deferred[None]:
            return defer.succeed(None)

        def connectionLost(self) -> None:
            pass

    @implementer(smtp.IMessageDelivery)
    class Delivery:
        def receivedHeader(self, helo: object, origin: object, recipients: object) -> None:
            return None

        def validateFrom(self, helo: object, origin: object) -> object:
            return origin

        def validateTo(self, user: object) -> object:
            return Discard

    class Factory(smtp.SMTPFactory):
        def buildProtocol(self, addr: object) -> smtp.ESMTP:
            p = smtp.ESMTP()
            p.factory = self
            p.delivery = Delivery()
            return p

    return Factory()


async def listener(reactor: Any, stage: str, keys_file: str, domain: str, work: str) -> object:
    """Hurricane's bounce listener over the memory or the SQLite store."""
    from hurricane.config import BounceConfig
    from hurricane.inbound.server import build_bounce_factory
    from hurricane.verp import VerpCodec, load_keys

    store: Any
    if stage == "listener":
        from hurricane.store.memory import MemoryStore
        store = MemoryStore()
    else:
        from hurricane.store.sqlite import SqliteStore
        store = SqliteStore(os.path.join(work, "stage.sqlite3"), reactor)
    await store.open()
    config = BounceConfig(domain=domain, max_connections_per_ip=1000)
    codec = VerpCodec(domain, load_keys(keys_file), config.token_max_age_days)
    return build_bounce_factory(config, codec, store, "mx.stage.test", reactor)


async def start(reactor: Any, stage: str, port: int, keys_file: str, domain: str,
                work: str) -> None:
    from twisted.internet import endpoints

    factory: Any = stock_twisted() if stage == "twisted" else \
        await listener(reactor, stage, keys_file, domain, work)
    endpoint = endpoints.TCP4ServerEndpoint(reactor, port, interface="127.0.0.1")
    await endpoint.listen(factory)
    print("listening", flush=True)


def main() -> None:
    stage, port, keys_file, domain, work = sys.argv[1:6]
    if stage not in STAGES:
        raise SystemExit(f"unknown stage {stage!r}; one of {', '.join(STAGES)}")
    from twisted.internet import reactor
    from twisted.logger import FileLogObserver, globalLogBeginner

    from hurricane.textlog import format_event
    log = open(os.path.join(work, "stage.log"), "a")
    globalLogBeginner.beginLoggingTo([FileLogObserver(log, format_event)],
                                     redirectStandardIO=False)

    def failed(f: object) -> None:
        print(f"stage {stage} did not start: {f}", file=sys.stderr, flush=True)
        reactor.stop()  # type: ignore[attr-defined]

    reactor.callWhenRunning(  # type: ignore[attr-defined]
        lambda: defer.ensureDeferred(start(reactor, stage, int(port), keys_file, domain, work))
        .addErrback(failed))
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
