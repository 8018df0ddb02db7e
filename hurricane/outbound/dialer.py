"""A connection to a destination: its addresses in order, until one answers.

:class:`Dialer` asks the MX resolver for a destination's addresses, tries at
most :data:`MAX_ADDRESSES_PER_ROUND` of them through the connector with the
domain's TLS policy, and tells the resolver which worked (so the next round
starts with a good one). It is the seam where per-connection choices are
made: the TLS policy today; the source address of a sending pool and an
MTA-STS policy later (issue 21).
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import CancelledError
from twisted.logger import Logger

from hurricane.config import TlsPolicyConfig
from hurricane.outbound.interface import ConnectionFailed, IConnector, ISMTPConnection
from hurricane.outbound.mx import Destination, MXResolver
from hurricane.outcome import Phase, Reason, TlsPolicy

__all__ = ["MAX_ADDRESSES_PER_ROUND", "DialFailed", "Dialer"]

log = Logger()

#: Addresses (MX hosts times their A/AAAA records) tried for one destination in one round.
MAX_ADDRESSES_PER_ROUND = 10


class DialFailed(Exception):
    """No address of a destination gave a session; ``target`` and ``error``
    are the last one tried and how it failed."""

    def __init__(self, target: Destination, error: ConnectionFailed) -> None:
        super().__init__(str(error))
        self.target = target
        self.error = error


class Dialer:
    """Opens a session to a destination domain.

    Args:
        resolver: the destination's addresses (MX, routes), and a memory of
            which failed.
        connector: opens one session.
        helo: the name we EHLO with.
        tls: the TLS policy per domain and the default.
    """

    def __init__(self, resolver: MXResolver, connector: IConnector, helo: str,
                 tls: TlsPolicyConfig | None = None) -> None:
        self._resolver = resolver
        self._connector = connector
        self._helo = helo
        self._tls = tls or TlsPolicyConfig()

    def tls_policy(self, domain: str) -> TlsPolicy:
        """The TLS policy for a domain: its own, else the default."""
        return self._tls.domains.get(domain.lower()) or self._tls.default

    async def dial(self, domain: str, stopping: Callable[[], bool]) -> ISMTPConnection | None:
        """A session to ``domain``, trying its addresses in order.

        Args:
            domain: the destination domain.
            stopping: True when the caller no longer wants a session.

        Returns:
            the session, or None when ``stopping`` said so between two tries.

        Raises:
            DestinationError: DNS gave no address (its reason says whether
                that is permanent).
            DialFailed: every address tried failed.
        """
        targets = await self._resolver.resolve(domain)
        last: DialFailed | None = None
        for target in targets[:MAX_ADDRESSES_PER_ROUND]:
            if stopping():
                return None
            try:
                conn = await self._connector.connect(
                    target.host, target.ip, target.port,
                    tls_policy=self.tls_policy(domain), helo=self._helo,
                )
            except ConnectionFailed as e:
                failure = e
            except CancelledError:
                raise
            except Exception as e:
                # a connector bug must not strand the queue: count it as
                # a network error and move on
                log.failure("connector failed for {host} [{ip}]", host=target.host, ip=target.ip)
                failure = ConnectionFailed(str(e) or e.__class__.__name__, Phase.connect,
                                           reason=Reason.networkerror)
            else:
                self._resolver.mark_succeeded(target)
                return conn
            log.info("connection to {domain} via {host} [{ip}]:{port} failed in "
                     "{phase}: {error}", domain=domain, host=target.host,
                     ip=target.ip, port=target.port, phase=failure.phase.value,
                     error=str(failure))
            self._resolver.mark_failed(target)
            last = DialFailed(target, failure)
        assert last is not None  # resolve() never returns an empty list
        raise last
