"""Sending pools: which local address a connection is made from (issue 21).

A pool (``[[delivery.pools]]``) is a list of local addresses, each with the
HELO name it must use (its reverse DNS) and a weight. :meth:`SendingPool.choose`
picks one per connection by smooth weighted round robin (equal weights:
plain round robin), skipping addresses whose warm-up limit for the
provider is spent today; the connection keeps its address for its whole
life. :class:`Pools` resolves a pool name ("" = the ``[delivery] pool``
default) so a stream or a message can name its own later (F20's
``[[streams]] pool``: :meth:`hurricane.outbound.dialer.Dialer.dial` takes it).
"""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Mapping, Sequence

from twisted.application.internet import TimerService
from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from hurricane.config import DeliveryConfig, SendingPoolConfig
from hurricane.outbound.interface import (
    ISMTPConnection,
    OutboundMessage,
    RecipientReply,
    SessionInfo,
)
from hurricane.outbound.mtasts import MtaSts, TxtLookup
from hurricane.outbound.stsfetch import fetcher, https_agent
from hurricane.outbound.warmup import Warmup, WarmupSchedule
from hurricane.outcome import Phase
from hurricane.store.transport import ITransportStore

__all__ = ["DialedConnection", "Pools", "SendingPool", "transport_services", "unbindable"]

log = Logger()

#: Seconds between saves of the warm-up's day counts (a crash loses at most these).
WARMUP_SAVE_INTERVAL = 2.0


class SendingPool:
    """Local addresses with their HELO names, weights and warm-up.

    Args:
        name: the pool's name.
        addresses: the local addresses.
        helo: address -> EHLO name (others use the server's).
        weights: address -> share (default 1).
        warmup: the warm-up counters (None: no limit).
    """

    def __init__(self, name: str, addresses: Sequence[str], *,
                 helo: Mapping[str, str] | None = None, weights: Mapping[str, int] | None = None,
                 warmup: Warmup | None = None) -> None:
        self.name = name
        self.addresses = tuple(addresses)
        self._helo = dict(helo or {})
        self._weights = {a: max(1, (weights or {}).get(a, 1)) for a in self.addresses}
        self._current = dict.fromkeys(self.addresses, 0)
        self.warmup = warmup

    def helo_for(self, address: str, default: str) -> str:
        """The EHLO name of a connection from ``address``."""
        return self._helo.get(address, default)

    def available(self, address: str, provider: str) -> bool:
        """True when ``address`` may still send to ``provider`` today."""
        return self.warmup is None or self.warmup.remaining(address, provider) != 0

    def choose(self, provider: str) -> str | None:
        """The address of the next connection to ``provider``, or None when
        every address spent its warm-up limit for today.

        Smooth weighted round robin (nginx's): each candidate gains its weight,
        the largest is chosen and loses the candidates' total.
        """
        candidates = [a for a in self.addresses if self.available(a, provider)]
        if not candidates:
            return None
        total = 0
        for a in candidates:
            self._current[a] += self._weights[a]
            total += self._weights[a]
        chosen = max(candidates, key=lambda a: self._current[a])
        self._current[chosen] -= total
        return chosen


class Pools:
    """Every configured pool, by name, and the default one.

    Args:
        configs: ``[[delivery.pools]]``.
        default: ``[delivery] pool`` ("" = no pool: ``bind_address``).
        clock: the warm-up's days.
    """

    def __init__(self, configs: Sequence[SendingPoolConfig], default: str,
                 clock: IReactorTime) -> None:
        self.default = default
        self._pools: dict[str, SendingPool] = {}
        schedules: dict[str, WarmupSchedule] = {}
        for c in configs:
            schedule = WarmupSchedule.of(c.warmup, c.warmup_curve)
            if schedule is not None:
                schedules.update(dict.fromkeys(c.addresses, schedule))
        self.warmup = Warmup(clock, schedules)
        for c in configs:
            self._pools[c.name] = SendingPool(c.name, c.addresses, helo=c.helo,
                                              weights=c.weights, warmup=self.warmup)

    def get(self, name: str = "") -> SendingPool | None:
        """The pool ``name`` names ("" = the default), or None for no pool."""
        return self._pools.get(name or self.default)


class DialedConnection:
    """A session from a warming-up address: a warm-up grant before each transaction.

    A transaction with more recipients than the address may still send to
    the provider today goes out with as many as it may; the others get a
    reply-less answer (deferred, tried again later or from another address),
    and the connection stops being :attr:`usable`, so the pool dials again
    and the next connection comes from an address with budget left.

    Args:
        inner: the connected session.
        pool: the sending pool the source came from, or None.
        source: the pool address the connection was bound to.
        provider: whose warm-up limit the transactions count against.
    """

    def __init__(self, inner: ISMTPConnection, pool: SendingPool | None = None,
                 source: str = "", provider: str = "") -> None:
        self._inner = inner
        self.info: SessionInfo = inner.info
        self._pool = pool
        self._source = source
        self._provider = provider

    @property
    def usable(self) -> bool:
        """The session is usable and its address may still send today."""
        return self._inner.usable and (
            self._pool is None or self._pool.available(self._source, self._provider))

    async def send(self, message: OutboundMessage) -> list[RecipientReply]:
        """Send to as many recipients as the warm-up grants; defer the others."""
        warmup = self._pool.warmup if self._pool is not None else None
        wanted = len(message.recipients)
        granted = wanted if warmup is None else warmup.take(self._source, self._provider,
                                                             wanted)
        replies: list[RecipientReply] = []
        if granted:
            replies = await self._inner.send(dataclasses.replace(
                message, recipients=message.recipients[:granted]))
        error = (f"warm-up: {self._source} reached today's limit for {self._provider}")
        return replies + [RecipientReply(r.delivery_id, None, Phase.connect, error=error)
                          for r in message.recipients[granted:]]

    async def close(self) -> None:
        """QUIT and close."""
        await self._inner.close()


def unbindable(configs: Sequence[SendingPoolConfig]) -> list[str]:
    """One line per pool address this host cannot send from (not on an interface).

    A connection from such an address fails with "Cannot assign requested
    address", so every mail its pool carries would be deferred: ``hurricane
    check-config`` says so before the server starts.
    """
    problems = []
    for i, pool in enumerate(configs):
        for address in pool.addresses:
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            with socket.socket(family, socket.SOCK_STREAM) as s:
                try:
                    s.bind((address, 0))
                except OSError as e:
                    problems.append(f"[delivery] pools[{i}] addresses: {address} is not an "
                                    f"address of this host ({e.strerror})")
    return problems


def transport_services(config: DeliveryConfig, reactor: IReactorTime, txt: TxtLookup,
                       store: object) -> tuple[Pools | None, MtaSts | None, list[Service]]:
    """The pools and MTA-STS of ``[delivery]``, with the services that keep them.

    Args:
        config: ``[delivery]``.
        reactor: the reactor (timers, HTTPS).
        txt: TXT look-up (the server's DNS resolver).
        store: the outcome store (kept policies and first uses when it can).

    Returns:
        the pools (None without any), MTA-STS (None unless enabled), and
        services to start: the warm-up's first uses loaded, policies refreshed.
    """
    keeper = store if isinstance(store, ITransportStore) else None
    services: list[Service] = []
    pools = None
    if config.pools:
        pools = Pools(config.pools, config.pool, reactor)
        if keeper is not None:
            services.append(_FirstUses(pools.warmup, keeper, reactor))
    sts = None
    if config.mta_sts.enabled:
        sts = MtaSts(reactor, txt, fetcher(https_agent(reactor), reactor,
                                           config.mta_sts.fetch_timeout), keeper)
        refresh = TimerService(config.mta_sts.refresh_interval,
                               lambda: Deferred.fromCoroutine(sts.refresh()))
        refresh.clock = reactor
        services.append(refresh)
    return pools, sts, services


class _FirstUses(Service):
    """Loads the warm-up's first uses and day counts at start; saves what changed
    every :data:`WARMUP_SAVE_INTERVAL` seconds and at stop."""

    def __init__(self, warmup: Warmup, store: ITransportStore, clock: IReactorTime) -> None:
        self._warmup = warmup
        self._store = store
        self._loop = LoopingCall(self._save)
        self._loop.clock = clock
        #: Fires when the kept counts are loaded (after :meth:`startService`).
        self.loaded: Deferred[None] = Deferred()
        self._saving: set[Deferred[None]] = set()

    async def load(self) -> None:
        """Read what the store kept (before mail goes: the service starts first)."""
        self._warmup.load(await self._store.first_uses())

    def _save(self) -> Deferred[None]:
        rows = self._warmup.changed()
        if not rows:
            return succeed(None)
        d = Deferred.fromCoroutine(self._store.save_warmup(rows))

        def failed(f: Failure) -> None:
            log.failure("saving warm-up counts failed; kept for the next save", f)
            self._warmup.mark(rows)
        d.addErrback(failed)
        self._saving.add(d)
        d.addBoth(lambda _: self._saving.discard(d))
        return d

    def startService(self) -> None:  # noqa: N802 (Twisted API)
        """Load, then save periodically."""
        Service.startService(self)

        def started(_: object) -> None:
            if self.running and not self._loop.running:
                self._loop.start(WARMUP_SAVE_INTERVAL, now=False)
            self.loaded.callback(None)
        d = Deferred.fromCoroutine(self.load())
        d.addErrback(lambda f: log.failure("loading warm-up first uses failed", f))
        d.addCallback(started)

    def stopService(self) -> Deferred[None]:  # noqa: N802 (Twisted API)
        """Stop the loop and save what changed (after any save under way)."""
        Service.stopService(self)
        if self._loop.running:
            self._loop.stop()
        self._save()
        done: Deferred[None] = DeferredList(list(self._saving)).addCallback(lambda _: None)
        return done
