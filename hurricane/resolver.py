"""The DNS resolver of MX lookups: the system's name servers, on the injected reactor.

``twisted.names.client.createResolver`` uses the global reactor, and
``client.Resolver(resolv=...)`` re-reads resolv.conf on a timer of its own,
kept in a private attribute (``_parseCall``) that no public name can cancel:
a stopped server (or a test's reactor) is left with a pending call.

:class:`ResolvConfResolver` keeps Twisted's resolver and its parser
(``parseConfig``) but overrides the public ``maybeParseConfig`` so that it
only reads the file when it changed and schedules nothing;
:class:`ResolverService` asks it to look again every minute from a
``LoopingCall`` on the injected clock, started and stopped with the service.
Upstream, the fix would be a public way to stop the re-read (a
``stopParsing()`` / ``IService``-like resolver, or a ``clock`` for the
timer); the ticket to file: "twisted.names.client.Resolver: the resolv.conf
re-read timer cannot be cancelled without touching _parseCall".

Each UDP query opens a fresh ``DNSDatagramProtocol`` (a random source port
per query, against spoofing), and a datagram protocol is ``noisy`` by
default: "Starting protocol ..." and "Stopping protocol ..." in the log for
every lookup, four lines per MX lookup and its address lookup, burying the
lines that matter. Twisted quiets its own DNS TCP factories (``noisy = 0``)
but builds the datagram protocol in a private method. The resolver gets
its reactor through :class:`QuietDatagramReactor`, which turns ``noisy``
off on each protocol handed to the public ``listenUDP`` and passes every
other call through. The ticket to file: "twisted.names.client.Resolver:
DNSDatagramProtocol logs Starting/Stopping protocol for every query; make it
quiet like DNSClientFactory".
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from twisted.application.service import Service
from twisted.internet.interfaces import (
    IConnector,
    IDelayedCall,
    IListeningPort,
    IReactorTCP,
    IReactorTime,
    IReactorUDP,
)
from twisted.internet.protocol import ClientFactory, DatagramProtocol, ServerFactory
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.names import client, hosts, resolve
from zope.interface import implementer

from hurricane.reactors import IResolverReactor

__all__ = ["REREAD_INTERVAL", "QuietDatagramReactor", "ResolvConfResolver",
           "ResolverService"]

log = Logger()

#: Seconds between looks at resolv.conf (Twisted's own interval).
REREAD_INTERVAL = 60.0

#: The modification time recorded for a missing file.
_MISSING = -1.0


@implementer(IReactorUDP, IReactorTCP, IReactorTime)
class QuietDatagramReactor:
    """The resolver's reactor: every datagram protocol it listens with is quiet.

    Args:
        reactor: the real reactor, which does all the work.
    """

    def __init__(self, reactor: IResolverReactor) -> None:
        self.reactor = reactor

    def listenUDP(self, port: int, protocol: DatagramProtocol,  # noqa: N802 - Twisted's
                  interface: str = "", maxPacketSize: int = 8192) -> IListeningPort:  # noqa: N803
        """Listen with ``protocol`` made quiet (no "Starting protocol" log line)."""
        protocol.noisy = False
        return self.reactor.listenUDP(port, protocol, interface, maxPacketSize)

    def listenTCP(self, port: int, factory: ServerFactory,  # noqa: N802 - Twisted's
                  backlog: int = 50, interface: str = "") -> IListeningPort:
        """Passed through."""
        return self.reactor.listenTCP(port, factory, backlog, interface)

    def connectTCP(self, host: str, port: int, factory: ClientFactory[Any],  # noqa: N802
                   timeout: float = 30.0,
                   bindAddress: tuple[str, int] | None = None) -> IConnector:  # noqa: N803
        """Passed through (TCP retries of truncated answers)."""
        return self.reactor.connectTCP(host, port, factory, timeout, bindAddress)

    def seconds(self) -> float:
        """Passed through."""
        return self.reactor.seconds()

    def callLater(self, delay: float, callable: Callable[..., object],  # noqa: N802,A002
                  *args: object, **kwargs: object) -> IDelayedCall:
        """Passed through (query timeouts)."""
        return self.reactor.callLater(delay, callable, *args, **kwargs)

    def getDelayedCalls(self) -> list[IDelayedCall]:  # noqa: N802 - Twisted's name
        """Passed through."""
        return list(self.reactor.getDelayedCalls())


class ResolvConfResolver(client.Resolver):
    """``client.Resolver`` that reads resolv.conf when asked, and only when it changed.

    Args:
        path: the resolv.conf(5) file; a missing one means "127.0.0.1", as
            Twisted treats it.
        reactor: where queries and their timeouts run.

    Raises:
        OSError: the file exists but cannot be read.
    """

    def __init__(self, path: str, reactor: IResolverReactor) -> None:
        #: The file (Twisted keeps it as ``resolv``, untyped).
        self.path = path
        #: The file's modification time when it was last parsed (None: never).
        self.resolv_mtime: float | None = None
        # Twisted's __init__ ends by calling maybeParseConfig (ours): the
        # servers are known before the first query.
        super().__init__(resolv=path, reactor=QuietDatagramReactor(reactor))

    def maybeParseConfig(self) -> None:  # noqa: N802 - Twisted's name
        """Parse the file if it changed since the last look; schedule nothing."""
        try:
            mtime = os.stat(self.path).st_mtime
        except FileNotFoundError:
            if self.resolv_mtime != _MISSING:
                self.parseConfig(())
                self.resolv_mtime = _MISSING
            return
        if mtime == self.resolv_mtime:
            return
        with open(self.path, "rb") as fp:
            self.parseConfig(fp)
        self.resolv_mtime = mtime
        servers: Sequence[tuple[str, int]] = self.dynServers
        log.info("name servers from {path}: {servers}", path=self.path,
                 servers=", ".join(f"{host}:{port}" for host, port in servers))


class ResolverService(Service):
    """The resolver chain of MX lookups (hosts file, then resolv.conf's name servers).

    Args:
        reactor: where queries, their timeouts and the re-read run.
        resolv_conf: the resolv.conf(5) file.
        hosts_file: the hosts(5) file, asked first.
        interval: seconds between looks at ``resolv_conf`` while running.
    """

    def __init__(self, reactor: IResolverReactor, *, resolv_conf: str = "/etc/resolv.conf",
                 hosts_file: bytes = b"/etc/hosts",
                 interval: float = REREAD_INTERVAL) -> None:
        self.client = ResolvConfResolver(resolv_conf, reactor)
        self.resolver = resolve.ResolverChain([hosts.Resolver(file=hosts_file), self.client])
        self.interval = interval
        self._loop = LoopingCall(self._reread)
        self._loop.clock = reactor
        self.setName("dns")

    def _reread(self) -> None:
        try:
            self.client.maybeParseConfig()
        except OSError as e:
            # Keep the servers we have; the next look may succeed.
            log.warn("cannot read {path}: {error}", path=self.client.path, error=e.strerror)

    def startService(self) -> None:
        """Look at resolv.conf again every ``interval`` seconds (it was read at construction)."""
        Service.startService(self)
        self._loop.start(self.interval, now=False)

    def stopService(self) -> None:
        """Stop looking: no call is left on the reactor."""
        Service.stopService(self)
        if self._loop.running:
            self._loop.stop()
