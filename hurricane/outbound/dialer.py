"""A connection to a destination: its addresses in order, until one answers.

:class:`Dialer` asks the MX resolver for a destination's addresses, tries at
most :data:`MAX_ADDRESSES_PER_ROUND` of them through the connector with the
domain's TLS policy, and tells the resolver which worked (so the next round
starts with a good one). It is the seam where per-connection choices are
made (issue 21): the source address of a sending pool and its EHLO name
(:mod:`hurricane.outbound.pools`, with the warm-up of
:mod:`hurricane.outbound.warmup`), and the MTA-STS policy
(:mod:`hurricane.outbound.mtasts`: ``enforce`` dials only the policy's MX
hosts with ``verify``; ``testing`` falls back and records). Each session's
``info`` and each failure (:class:`DialFailed`) carry the attempt's transport
facts: the source address, the TLS policy and the RFC 8460 result.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet.defer import CancelledError
from twisted.logger import Logger

from hurricane.config import TlsPolicyConfig
from hurricane.outbound.interface import (
    ConnectionFailed,
    IConnector,
    ISMTPConnection,
    TransportFacts,
)
from hurricane.outbound.mtasts import MtaSts, StsPolicy, tls_result_of
from hurricane.outbound.mx import Destination, DestinationError, MXResolver
from hurricane.outbound.pools import DialedConnection, Pools, SendingPool
from hurricane.outbound.warmup import ProviderOf, mx_provider
from hurricane.outcome import Phase, Reason, TlsPolicy

__all__ = ["MAX_ADDRESSES_PER_ROUND", "DialFailed", "Dialer"]

log = Logger()

#: Addresses (MX hosts times their A/AAAA records) tried for one destination in one round.
MAX_ADDRESSES_PER_ROUND = 10


class DialFailed(Exception):
    """No address of a destination gave a session; ``target`` and ``error``
    are the last one tried and how it failed."""

    def __init__(self, target: Destination, error: ConnectionFailed,
                 facts: TransportFacts | None = None) -> None:
        super().__init__(str(error))
        self.target = target
        self.error = error
        #: The attempt's transport facts (source_ip, tls_*; issue 21).
        self.facts = facts or TransportFacts()


class PolicyMismatch(DialFailed):
    """An MX host the enforced MTA-STS policy does not name: not tried."""


@dataclass(frozen=True)
class _Plan:
    """How one dial goes: the source address, the EHLO name, the MTA-STS policy."""

    source: str
    helo: str
    pool: SendingPool | None
    provider: str
    sts: StsPolicy | None
    tls_policy: TlsPolicy
    #: The domain publishes MTA-STS but its policy could not be had: the
    #: RFC 8460 type (``sts-policy-fetch-error``, ``sts-policy-invalid``,
    #: ``sts-webpki-invalid``).
    fetch_error: str | None = None

    def facts(self, result: str | None) -> TransportFacts:
        """An attempt's transport facts under this plan (a session that succeeded
        without the policy it should have had counts as the policy's failure)."""
        if self.fetch_error and result == "success":
            result = self.fetch_error
        return TransportFacts(
            self.source or None, "sts" if self.sts is not None else "no-policy-found",
            self.sts.label if self.sts is not None else None, result)


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
                 tls: TlsPolicyConfig | None = None, *, pools: Pools | None = None,
                 sts: MtaSts | None = None, provider_of: ProviderOf = mx_provider) -> None:
        self._resolver = resolver
        self._connector = connector
        self._helo = helo
        self._tls = tls or TlsPolicyConfig()
        self._pools = pools
        self._sts = sts
        #: (domain, MX host) -> provider: swap for named providers (issue 19).
        self.provider_of = provider_of

    def tls_policy(self, domain: str) -> TlsPolicy:
        """The TLS policy for a domain: its own, else the default."""
        return self._tls.domains.get(domain.lower()) or self._tls.default

    async def _plan(self, domain: str, first: Destination, pool: str) -> _Plan:
        """The source, EHLO name and policies of a dial to ``domain``.

        Raises:
            DestinationError: every address of the pool spent its warm-up
                limit for the provider today (temporary: the mail waits).
        """
        provider = self.provider_of(domain, first.host)
        sending = self._pools.get(pool) if self._pools is not None else None
        source, helo = "", self._helo
        if sending is not None:
            chosen = sending.choose(provider)
            if chosen is None:
                raise DestinationError(False, Reason.exceedlimit, (
                    f"warm-up: every address of pool {sending.name} reached today's "
                    f"limit for {provider}"))
            source, helo = chosen, sending.helo_for(chosen, self._helo)
        sts = None
        fetch_error = None
        if self._sts is not None and domain.lower() not in self._tls.domains:
            # a per-domain tls_policy overrides MTA-STS
            sts = await self._sts.policy(domain)
            fetch_error = None if sts is not None else self._sts.fetch_results.get(
                domain.lower())
        return _Plan(source, helo, sending, provider, sts, self.tls_policy(domain), fetch_error)

    async def dial(self, domain: str, stopping: Callable[[], bool],
                   pool: str = "") -> ISMTPConnection | None:
        """A session to ``domain``, trying its addresses in order.

        Args:
            domain: the destination domain.
            stopping: True when the caller no longer wants a session.
            pool: the sending pool ("" = the default; a stream's, issue 20).

        Returns:
            the session, or None when ``stopping`` said so between two tries.

        Raises:
            DestinationError: DNS gave no address (its reason says whether
                that is permanent), or the pool's warm-up limits are spent.
            DialFailed: every address tried failed.
        """
        targets = await self._resolver.resolve(domain)
        plan = await self._plan(domain, targets[0], pool)
        last: DialFailed | None = None
        for target in targets[:MAX_ADDRESSES_PER_ROUND]:
            if stopping():
                return None
            try:
                conn = await self._dial_one(domain, target, plan)
            except PolicyMismatch as e:
                # not the host's fault, and a real failure says more
                last = last or e
                continue
            except DialFailed as e:
                log.info("connection to {domain} via {host} [{ip}]:{port} failed in "
                         "{phase}: {error}", domain=domain, host=target.host,
                         ip=target.ip, port=target.port, phase=e.error.phase.value,
                         error=str(e.error))
                self._resolver.mark_failed(target)
                last = e
                continue
            self._resolver.mark_succeeded(target)
            return conn
        assert last is not None  # resolve() never returns an empty list
        raise last

    async def _dial_one(self, domain: str, target: Destination,
                        plan: _Plan) -> ISMTPConnection:
        """One address under the plan: MTA-STS applied, the result's facts set.

        Raises:
            DialFailed: with the attempt's facts.
        """
        sts = plan.sts
        failure: str | None = None
        tls_policy = plan.tls_policy
        if sts is not None:
            tls_policy = TlsPolicy.verify
            if not sts.matches(target.host):
                failure = "validation-failure"
                error = ConnectionFailed(
                    f"MTA-STS {sts.label}: MX {target.host} does not match the policy",
                    Phase.connect, reason=Reason.securityerror)
                if sts.enforce:
                    raise PolicyMismatch(target, error, plan.facts(failure))
        try:
            conn = await self._connect(target, tls_policy, plan)
        except ConnectionFailed as e:
            result = tls_result_of(e)
            if sts is None or sts.enforce or result is None:
                if sts is not None and sts.enforce and result is not None:
                    e = ConnectionFailed(f"MTA-STS {sts.label}: {e}", e.phase, e.reply,
                                         e.temporary, e.reason)
                raise DialFailed(target, e, plan.facts(result or failure)) from None
            # testing: deliver as without a policy, and record the failure
            failure = result
            try:
                conn = await self._connect(target, plan.tls_policy, plan)
            except ConnectionFailed as again:
                raise DialFailed(target, again,
                                 plan.facts(tls_result_of(again) or failure)) from None
        facts = plan.facts(failure or self._session_result(conn, tls_policy))
        conn.info = dataclasses.replace(
            conn.info, source_ip=conn.info.source_ip or facts.source_ip,
            tls_policy_type=facts.tls_policy_type, tls_policy_id=facts.tls_policy_id,
            tls_result=facts.tls_result)
        if plan.pool is None or plan.pool.warmup is None:
            return conn
        return DialedConnection(conn, plan.pool, plan.source, plan.provider)

    @staticmethod
    def _session_result(conn: ISMTPConnection, policy: TlsPolicy) -> str | None:
        """``success`` for an encrypted session, else why not (None: no TLS wanted)."""
        if conn.info.tls:
            return "success"
        return None if policy is TlsPolicy.none else "starttls-not-supported"

    async def _connect(self, target: Destination, tls_policy: TlsPolicy,
                       plan: _Plan) -> ISMTPConnection:
        """The connector's session (a connector bug counts as a network error)."""
        try:
            return await self._connector.connect(
                target.host, target.ip, target.port, tls_policy=tls_policy, helo=plan.helo,
                source=plan.source)
        except (ConnectionFailed, CancelledError):
            raise
        except Exception as e:
            # a connector bug must not strand the queue: count it as
            # a network error and move on
            log.failure("connector failed for {host} [{ip}]", host=target.host, ip=target.ip)
            raise ConnectionFailed(str(e) or e.__class__.__name__, Phase.connect,
                                   reason=Reason.networkerror) from e
