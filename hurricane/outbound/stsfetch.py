"""The MTA-STS policy file over verified HTTPS (RFC 8461 3.3), with treq.

``https://mta-sts.DOMAIN/.well-known/mta-sts.txt``: the certificate must be
valid for the host (``BrowserLikePolicyForHTTPS`` with the platform's trust
store, or the operator's extra roots); a 3xx is not followed; only a 200 is
a policy; the body is read up to :data:`~hurricane.outbound.mtasts.MAX_POLICY_BYTES`
plus one byte, then the connection is dropped.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import treq
from OpenSSL import SSL
from twisted.internet import ssl
from twisted.internet.defer import Deferred
from twisted.web.client import (
    Agent,
    BrowserLikePolicyForHTTPS,
    RequestTransmissionFailed,
    ResponseFailed,
    ResponseNeverReceived,
)
from twisted.web.iweb import IAgent, IResponse

from hurricane.outbound.mtasts import MAX_POLICY_BYTES, StsCertificateError, StsError

__all__ = ["fetcher", "https_agent", "policy_url"]


def policy_url(domain: str) -> str:
    """Where a domain's policy file is."""
    return f"https://mta-sts.{domain.lower().rstrip('.')}/.well-known/mta-sts.txt"


def https_agent(reactor: object, trust: list[ssl.Certificate] | None = None) -> IAgent:
    """An agent that verifies certificates (against ``trust`` when given)."""
    root = ssl.trustRootFromCertificates(trust) if trust else None
    return Agent(reactor, contextFactory=BrowserLikePolicyForHTTPS(trustRoot=root))


def fetcher(agent: IAgent, clock: object,
            timeout: float = 30.0) -> Callable[[str], Awaitable[bytes]]:
    """A policy fetch for :class:`~hurricane.outbound.mtasts.MtaSts`."""
    async def fetch(domain: str) -> bytes:
        try:
            response: IResponse = await treq.get(policy_url(domain), agent=agent,
                                                 allow_redirects=False, timeout=timeout,
                                                 reactor=clock)  # type: ignore[arg-type]
        except (RequestTransmissionFailed, ResponseNeverReceived, ResponseFailed) as e:
            if any(f.check(SSL.Error) for f in e.reasons):
                raise StsCertificateError(f"policy host certificate: {e.reasons[0].value}"
                                          ) from e
            raise
        if response.code != 200:
            raise StsError(f"policy fetch answered HTTP {response.code}")
        chunks: list[bytes] = []
        size = 0

        def collect(data: bytes) -> None:
            nonlocal size
            size += len(data)
            if size > MAX_POLICY_BYTES:
                raise StsError("policy file too long")
            chunks.append(data)

        done: Deferred[None] = treq.collect(response, collect)
        await done
        return b"".join(chunks)
    return fetch

