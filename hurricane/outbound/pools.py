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
from collections.abc import Mapping, Sequence

from twisted.application.internet import TimerService
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

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

__all__ = ["DialedConnection", "Pools", "SendingPool", "transport_services"]

log = Logger()


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
            services.append(_FirstUses(pools.warmup, keeper))
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
    """Loads the warm-up's first uses at start; records new ones as they come."""

    def __init__(self, warmup: Warmup, store: ITransportStore) -> None:
        self._warmup = warmup
        self._store = store

    def startService(self) -> None:  # noqa: N802 (Twisted API)
        """Load the kept first uses; keep new ones in the store."""
        Service.startService(self)

        def record(address: str, provider: str, at: float) -> None:
            d = Deferred.fromCoroutine(self._store.record_first_use(address, provider, at))
            d.addErrback(lambda f: log.failure("recording a first use failed", f))

        async def load() -> None:
            self._warmup.load(await self._store.first_uses())
        d = Deferred.fromCoroutine(load())
        d.addErrback(lambda f: log.failure("loading warm-up first uses failed", f))
        self._warmup.first_used = record
