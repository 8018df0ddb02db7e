"""Where mail for a domain goes: routes, MX records, addresses, and a memory of bad hosts.

RFC 5321 5.1 in order: a configured route (``[routes]``: the exact domain,
then the ``"*"`` smarthost) wins over DNS; else the MX records, sorted by
preference with ties shuffled, each host expanded to its A then AAAA
addresses; only when the domain has no MX record at all (an empty answer) is
the domain itself the "implicit MX". NXDOMAIN and RFC 7505's null MX are
permanent; SERVFAIL, timeouts and other resolver trouble are temporary.

We do not use ``twisted.mail.relaymanager.MXCalculator``: it raises
TypeError when two MX records share a preference and returns a null MX as an
empty host name (DESIGN.md, known traps). ``twisted.names``' plain lookups
are used instead, with our own ordering.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.internet.interfaces import IReactorTime, IResolver
from twisted.logger import Logger
from twisted.names import dns, error

from hurricane.address import to_a_label
from hurricane.config import parse_host_port
from hurricane.outcome import Reason

__all__ = ["Destination", "DestinationError", "MXResolver"]

log = Logger()

#: The SMTP port used for MX hosts.
SMTP_PORT = 25
#: Seconds a host that failed to connect is tried after the others.
DEFAULT_FAILURE_MEMORY = 300.0
#: Seconds one DNS lookup may take before the domain is deferred.
DEFAULT_LOOKUP_TIMEOUT = 30.0
#: Seconds an empty answer is kept (twisted.names does not expose the SOA's
#: negative TTL to lookup callers; RFC 2308 suggests 1-3 hours, we stay short).
NEGATIVE_TTL = 300.0


@dataclass(frozen=True)
class Destination:
    """One address to try for a domain, in the order given by :meth:`MXResolver.resolve`.

    Attributes:
        host: the MX host name (or the route's host), used for TLS name checks and logs.
        ip: the address to connect to.
        port: the TCP port.
        preference: the MX preference (0 for routes and the implicit MX).
    """

    host: str
    ip: str
    port: int
    preference: int


class DestinationError(Exception):
    """No destination could be found for a domain.

    Args:
        permanent: True when retrying will not help (NXDOMAIN, null MX).
        reason: the reason word for the outcome (``hostunknown``, ``networkerror``).
        message: what went wrong, for the record.
    """

    def __init__(self, permanent: bool, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.reason = Reason(reason)
        self.message = message

    @property
    def status(self) -> str:
        """An RFC 3463 status for the record: 5.1.10 for a null MX (RFC 7505),
        5.1.2 for another permanent failure, 4.4.3 for a temporary one."""
        if not self.permanent:
            return "4.4.3"
        return "5.1.10" if "null MX" in self.message else "5.1.2"


def _a_label(domain: str) -> str:
    """:func:`hurricane.address.to_a_label`, failing as a destination does.

    Raises:
        DestinationError: permanent ``hostunknown`` when the name is not valid.
    """
    try:
        return to_a_label(domain)
    except ValueError as e:
        raise DestinationError(True, Reason.hostunknown, str(e)) from None


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


class _NoAddress(Exception):
    """A host has no address records (NXDOMAIN or an empty answer)."""


_K = TypeVar("_K")
_V = TypeVar("_V")
#: A ``twisted.names`` lookup (IResolver's methods, called with the name
#: alone so the resolver's own timeouts apply): it fires with (answers,
#: authority, additional), which IResolver's annotations get wrong, so the
#: result is checked, not trusted (:meth:`MXResolver._query`).
_Lookup = Callable[..., Deferred[_V]]


@dataclass
class _CacheEntry(Generic[_V]):
    expires: float
    value: _V


class MXResolver:
    """Resolves a destination domain to an ordered list of addresses to try.

    Args:
        resolver: a ``twisted.names`` resolver (``client.createResolver()`` in
            production, a fake in tests).
        clock: the clock that ages cache entries and times lookups out.
        routes: ``[routes]``: domain (or ``"*"``) -> ``"host:port"``.
        cache_seconds: the longest an answer is kept; a shorter TTL wins.
        rng: shuffles MX records of equal preference; inject a seeded one in tests.
        failure_memory: seconds a host that just failed to connect is tried
            after the others.
        lookup_timeout: seconds one DNS query may take.
        port: the SMTP port of MX hosts.
    """

    def __init__(
        self,
        resolver: IResolver,
        clock: IReactorTime,
        routes: Mapping[str, str],
        cache_seconds: float,
        rng: random.Random | None = None,
        failure_memory: float = DEFAULT_FAILURE_MEMORY,
        lookup_timeout: float = DEFAULT_LOOKUP_TIMEOUT,
        port: int = SMTP_PORT,
    ) -> None:
        self._resolver = resolver
        self._clock = clock
        self._cache_seconds = cache_seconds
        self._rng = rng if rng is not None else random.Random()
        self._failure_memory = failure_memory
        self._lookup_timeout = lookup_timeout
        self._port = port
        # Route keys are compared in A-label form, like the domains we resolve.
        self._routes: dict[str, tuple[str, int]] = {}
        for key, target in routes.items():
            name = key if key == "*" else _a_label(key)
            self._routes[name] = parse_host_port(target)
        self._mx_cache: dict[str, _CacheEntry[list[tuple[int, str]] | None]] = {}
        self._addr_cache: dict[tuple[str, int], _CacheEntry[list[str]]] = {}
        # (host, ip) -> until when it counts as recently failed
        self._failed: dict[tuple[str, str], float] = {}

    # -- public ----------------------------------------------------------------

    async def resolve(self, domain: str) -> list[Destination]:
        """The addresses to try for ``domain``, best first.

        Args:
            domain: the recipient domain (U-label or A-label).

        Returns:
            At least one destination. Hosts that failed recently come last.

        Raises:
            DestinationError: permanent (NXDOMAIN, null MX, invalid name) or
                temporary (SERVFAIL, timeout, no reachable MX address).
        """
        name = _a_label(domain)
        route = self._routes.get(name) or self._routes.get("*")
        if route is not None:
            destinations = await self._route(name, *route)
        else:
            destinations = await self._mx(name)
        return self._demote_failed(destinations)

    def mark_failed(self, destination: Destination) -> None:
        """Remember that a connection to ``destination`` just failed, so the
        next delivery to that domain tries the other hosts first.

        Args:
            destination: the address that failed.
        """
        until = self._clock.seconds() + self._failure_memory
        self._failed[(destination.host, destination.ip)] = until

    def mark_succeeded(self, destination: Destination) -> None:
        """Forget an earlier failure of ``destination``.

        Args:
            destination: the address that accepted a connection.
        """
        self._failed.pop((destination.host, destination.ip), None)

    def clear_cache(self) -> None:
        """Forget every cached answer (an operator command)."""
        self._mx_cache.clear()
        self._addr_cache.clear()

    # -- routes ----------------------------------------------------------------

    async def _route(self, domain: str, host: str, port: int) -> list[Destination]:
        if _is_ip(host):
            return [Destination(host, host, port, 0)]
        try:
            ips = await self._addresses(_a_label(host))
        except _NoAddress:
            # A route is our own configuration: a typo must not fail the
            # recipients for good, so this is temporary.
            raise DestinationError(
                False, Reason.networkerror, f"route host {host} for {domain} has no address"
            ) from None
        return [Destination(host, ip, port, 0) for ip in ips]

    # -- MX --------------------------------------------------------------------

    async def _mx(self, domain: str) -> list[Destination]:
        records = await self._mx_records(domain)
        if records is None:
            # No MX record at all: the domain itself is the implicit MX
            # (RFC 5321 5.1), with preference 0.
            try:
                ips = await self._addresses(domain)
            except _NoAddress:
                raise DestinationError(
                    True, Reason.hostunknown, f"{domain} has no MX and no address record"
                ) from None
            return [Destination(domain, ip, self._port, 0) for ip in ips]

        ordered = self._order(records)
        destinations: list[Destination] = []
        temporary: DestinationError | None = None
        for preference, host in ordered:
            try:
                ips = await self._addresses(host)
            except _NoAddress:
                log.info("MX host {host} of {domain} has no address", host=host, domain=domain)
                continue
            except DestinationError as e:
                # one MX host's resolver trouble must not hide the others
                temporary = e
                continue
            destinations.extend(Destination(host, ip, self._port, preference) for ip in ips)
        if destinations:
            return destinations
        if temporary is not None:
            raise temporary
        # Every MX host is NXDOMAIN or has no address: the domain cannot
        # receive mail, as Postfix and Exim decide too.
        raise DestinationError(
            True, Reason.hostunknown, f"no MX host of {domain} has an address"
        )

    def _order(self, records: Sequence[tuple[int, str]]) -> list[tuple[int, str]]:
        """Sort by preference and shuffle equal preferences (RFC 5321 5.1)."""
        by_pref: dict[int, list[str]] = {}
        for preference, host in records:
            by_pref.setdefault(preference, []).append(host)
        ordered: list[tuple[int, str]] = []
        for preference in sorted(by_pref):
            hosts = sorted(set(by_pref[preference]))  # sorted first: seeded shuffles repeat
            self._rng.shuffle(hosts)
            ordered.extend((preference, h) for h in hosts)
        return ordered

    async def _mx_records(self, domain: str) -> list[tuple[int, str]] | None:
        """MX records as (preference, host); None when the domain has none.

        Raises:
            DestinationError: NXDOMAIN or null MX (permanent), resolver
                trouble (temporary).
        """
        now = self._clock.seconds()
        entry = self._mx_cache.get(domain)
        if entry is not None and entry.expires > now:
            return entry.value

        try:
            answers = await self._query(self._resolver.lookupMailExchange, domain)
        except error.DNSNameError:
            raise DestinationError(True, Reason.hostunknown, f"{domain}: no such domain") from None

        records: list[tuple[int, str]] = []
        ttls: list[int] = []
        for rr in answers:
            if rr.type != dns.MX:
                continue  # a CNAME on the way, for example
            payload = rr.payload
            if not isinstance(payload, dns.Record_MX):
                continue
            host = payload.name.name.decode("ascii", "replace").rstrip(".").lower()
            records.append((int(payload.preference), host))
            ttls.append(int(rr.ttl))

        null = [r for r in records if r[1] == ""]
        if null:
            if len(records) == 1:
                # RFC 7505: the domain says it accepts no mail at all.
                raise DestinationError(
                    True, Reason.hostunknown, f"{domain} does not accept mail (null MX)"
                )
            # A null MX next to real ones is a misconfiguration (RFC 7505
            # 3 says MUST NOT); the real ones are still worth trying.
            records = [r for r in records if r[1] != ""]

        result: list[tuple[int, str]] | None = records or None
        self._store(self._mx_cache, domain, result, ttls)
        return result

    async def _addresses(self, host: str) -> list[str]:
        """A then AAAA addresses of ``host``.

        Raises:
            _NoAddress: neither lookup found an address and neither failed
                temporarily.
            DestinationError: temporary resolver trouble and no address.
        """
        v4 = await self._address_records(host, dns.A)
        v6 = await self._address_records(host, dns.AAAA)
        ips = [ip for found in (v4, v6) if isinstance(found, list) for ip in found]
        if ips:
            return ips
        for found in (v4, v6):
            if isinstance(found, DestinationError):
                raise found
        raise _NoAddress(host)

    async def _address_records(self, host: str, rtype: int) -> list[str] | DestinationError:
        """One address lookup; a temporary failure is returned, not raised, so
        the caller can still use the other address family."""
        if _is_ip(host):
            version = ipaddress.ip_address(host).version
            return [host] if (version == 4) == (rtype == dns.A) else []
        key = (host, rtype)
        now = self._clock.seconds()
        entry = self._addr_cache.get(key)
        if entry is not None and entry.expires > now:
            return entry.value
        lookup = (
            self._resolver.lookupAddress if rtype == dns.A else self._resolver.lookupIPV6Address
        )
        try:
            answers = await self._query(lookup, host)
        except error.DNSNameError:
            ips: list[str] = []
            self._store(self._addr_cache, key, ips, [])
            return ips
        except DestinationError as e:
            return e
        ips = []
        ttls: list[int] = []
        for rr in answers:
            record = rr.payload
            if rr.type == rtype and isinstance(record, dns.Record_A):
                ips.append(record.dottedQuad())
            elif rr.type == rtype and isinstance(record, dns.Record_AAAA):
                ips.append(ipaddress.ip_address(record.address).compressed)
            else:
                continue
            ttls.append(int(rr.ttl))
        self._store(self._addr_cache, key, ips, ttls)
        return ips

    async def _query(self, lookup: _Lookup[_V], name: str) -> list[dns.RRHeader]:
        """Run one lookup with a timeout on our clock.

        Returns:
            the answer section's records.

        Raises:
            error.DNSNameError: NXDOMAIN (the caller decides what it means).
            DestinationError: temporary for every other failure.
        """
        d = lookup(name)
        d.addTimeout(self._lookup_timeout, self._clock)
        try:
            result = await d
        except error.DNSNameError:
            raise
        except (error.DNSQueryTimeoutError, TimeoutError, CancelledError):
            raise DestinationError(False, Reason.networkerror, f"DNS timeout for {name}") from None
        except error.DNSServerError:
            raise DestinationError(False, Reason.networkerror, f"DNS SERVFAIL for {name}") from None
        except Exception as e:  # refused, format error, socket trouble: all temporary
            raise DestinationError(
                False, Reason.networkerror, f"DNS lookup for {name} failed: {e.__class__.__name__}"
            ) from None
        answers: object = result[0] if isinstance(result, tuple) and result else None
        if not isinstance(answers, list):
            raise DestinationError(False, Reason.networkerror,
                                   f"DNS lookup for {name} gave no answer section")
        return [rr for rr in answers if isinstance(rr, dns.RRHeader)]

    def _store(self, cache: dict[_K, _CacheEntry[_V]], key: _K, value: _V,
               ttls: Sequence[int]) -> None:
        # Cache by the smallest TTL of the answer, capped by configuration;
        # an empty answer is kept for NEGATIVE_TTL.
        ttl = float(min(ttls)) if ttls else NEGATIVE_TTL
        ttl = min(ttl, self._cache_seconds)
        if ttl <= 0:
            return
        cache[key] = _CacheEntry(self._clock.seconds() + ttl, value)

    def _demote_failed(self, destinations: list[Destination]) -> list[Destination]:
        now = self._clock.seconds()
        for key, until in list(self._failed.items()):
            if until <= now:
                del self._failed[key]
        if not self._failed:
            return destinations
        # A stable sort keeps the preference order among good and bad hosts.
        return sorted(destinations, key=lambda d: (d.host, d.ip) in self._failed)

