"""Client TLS options for STARTTLS, one per delivery policy.

Policies (the ``tls_policy`` argument of :meth:`IConnector.connect`):

- ``none``: never STARTTLS.
- ``opportunistic``: STARTTLS when offered; any certificate is accepted,
  because an unauthenticated encrypted channel is still better than plain
  text, and most MX certificates would fail a strict check (RFC 7435).
- ``require``: STARTTLS must be offered and must succeed; the certificate is
  still not checked (encryption against passive eavesdroppers only).
- ``verify``: as ``require``, plus the chain is checked against the trust
  roots and the certificate must name the MX host (service-identity).

The options objects returned here are
:class:`~twisted.internet.interfaces.IOpenSSLClientConnectionCreator`
providers, which ``ITLSTransport.startTLS`` accepts directly.

Trust roots: Twisted's ``platformTrust()`` and ``trustRootFromCertificates()``
are either/or, and the interface that would let us combine them
(``IOpenSSLTrustRoot``, with its one private method) lives in Twisted's
private SSL verification module. :class:`ExtraTrust` does it with public
names only: ``optionsForClientTLS`` with one of Twisted's roots, then the
extra CA certificates added to the new connection's certificate store
(pyOpenSSL's public ``Context.get_cert_store``) before the handshake reads
it. The upstream ticket to file: "export IOpenSSLTrustRoot from
twisted.internet.ssl and give it a public method, or accept several trust
roots in optionsForClientTLS".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from OpenSSL import SSL
from twisted.internet import ssl
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.protocols.tls import TLSMemoryBIOProtocol
from zope.interface import Interface, implementer

from hurricane.address import to_a_label
from hurricane.outcome import TlsPolicy

#: Every policy the client understands (:class:`~hurricane.outcome.TlsPolicy`).
POLICIES: Final = frozenset(TlsPolicy)


class ITrustRoots(Interface):
    """The certificate authorities a ``verify`` STARTTLS checks the server's chain against."""

    def verifying_options(host: str) -> IOpenSSLClientConnectionCreator:
        """Client TLS options that verify the chain against these roots and the name ``host``."""


#: The name client.py imports (it was Twisted's private interface; now ours).
IOpenSSLTrustRoot = ITrustRoots


@implementer(ITrustRoots)
class ExtraTrust:
    """Trust some extra CA certificates, plus (by default) the platform's CA store.

    A test, or an operator with a private CA, wants both; see the module
    docstring for how this is done with public names.

    Args:
        extra: additional CA certificates to trust (at least one).
        include_platform: also trust OpenSSL's default verify paths.
    """

    def __init__(self, extra: Sequence[ssl.Certificate], include_platform: bool = True) -> None:
        if not extra:
            raise ValueError("ExtraTrust needs at least one certificate")
        self.extra = tuple(extra)
        self.include_platform = include_platform

    def verifying_options(self, host: str) -> IOpenSSLClientConnectionCreator:
        """``optionsForClientTLS`` for ``host`` that also trusts :attr:`extra`."""
        if not self.include_platform:
            return ssl.optionsForClientTLS(
                host, trustRoot=ssl.trustRootFromCertificates(list(self.extra)))
        return _AddCertificates(
            ssl.optionsForClientTLS(host, trustRoot=ssl.platformTrust()), self.extra)


@implementer(IOpenSSLClientConnectionCreator)
class _AddCertificates:
    """Wraps client TLS options: each connection's store also gets ``extra``.

    The certificate store belongs to the connection's context, which the
    handshake reads only after this returns, so the extra roots count for
    this connection's verification.
    """

    def __init__(self, inner: IOpenSSLClientConnectionCreator,
                 extra: Sequence[ssl.Certificate]) -> None:
        self._inner = inner
        self._extra = tuple(extra)
        self._added: set[int] = set()

    def clientConnectionForTLS(  # noqa: N802 (Twisted API)
        self, tlsProtocol: TLSMemoryBIOProtocol,  # noqa: N803
    ) -> SSL.Connection:
        """The inner options' connection, its context trusting the extra roots."""
        connection = self._inner.clientConnectionForTLS(tlsProtocol)
        context = connection.get_context()
        # optionsForClientTLS makes one context for all its connections: add
        # the certificates to it once.
        if id(context) not in self._added:
            store = context.get_cert_store()
            assert store is not None  # a client context always has one
            for cert in self._extra:
                store.add_cert(cert.original)
            self._added.add(id(context))
        return connection


@implementer(IOpenSSLClientConnectionCreator)
class UnverifiedClientTLS:
    """Client TLS that encrypts but does not authenticate the server.

    Server Name Indication is still sent for DNS names, because some
    receivers pick their certificate (or refuse the handshake) by SNI.

    Args:
        host: the MX host name (used only for SNI).
    """

    def __init__(self, host: str) -> None:
        # verify=False: OpenSSL's VERIFY_NONE, any certificate is accepted.
        self._options = ssl.CertificateOptions(verify=False)
        self._sni: bytes | None = None
        if host and not (isIPAddress(host) or isIPv6Address(host)):
            try:
                self._sni = to_a_label(host).encode("ascii")
            except ValueError:
                # A name we cannot encode is still worth encrypting to.
                self._sni = None

    def clientConnectionForTLS(  # noqa: N802 (Twisted API)
        self, tlsProtocol: TLSMemoryBIOProtocol,  # noqa: N803
    ) -> SSL.Connection:
        """Build the OpenSSL connection for one handshake.

        Args:
            tlsProtocol: the TLS protocol that will drive the connection.

        Returns:
            a client-side OpenSSL connection with SNI set.
        """
        connection = self._options.clientConnectionForTLS(tlsProtocol)
        if self._sni is not None:
            connection.set_tlsext_host_name(self._sni)
        return connection


def client_tls_options(
    policy: TlsPolicy, host: str, trust_roots: ITrustRoots | None = None,
) -> IOpenSSLClientConnectionCreator:
    """Client TLS options for one STARTTLS under ``policy``.

    Args:
        policy: ``opportunistic``, ``require`` or ``verify``.
        host: the MX host name the certificate must match under ``verify``.
        trust_roots: the roots to verify against under ``verify``
            (default: the platform's trust store).

    Returns:
        an options object to pass to ``ITLSTransport.startTLS``.

    Raises:
        ValueError: for ``none`` or an unknown policy.
    """
    try:
        policy = TlsPolicy(policy)  # its plain word is accepted too
    except ValueError:
        raise ValueError(f"no TLS options for policy {policy!r}") from None
    if policy in (TlsPolicy.opportunistic, TlsPolicy.require):
        return UnverifiedClientTLS(host)
    if policy is TlsPolicy.verify:
        if trust_roots is not None:
            return trust_roots.verifying_options(host.rstrip("."))
        return ssl.optionsForClientTLS(host.rstrip("."), trustRoot=ssl.platformTrust())
    raise ValueError(f"no TLS options for policy {policy!r}")


def trust_roots_with(
    extra: Sequence[ssl.Certificate | bytes] | None, include_platform: bool = True,
) -> ITrustRoots | None:
    """Trust roots made of the platform store plus ``extra`` CA certificates.

    Args:
        extra: PEM bytes or loaded certificates; None or empty means "the
            platform store only" (returns None, the caller's default).
        include_platform: also trust the platform store.

    Returns:
        a trust root, or None when there is nothing extra to add.
    """
    if not extra:
        return None
    certs = [c if isinstance(c, ssl.Certificate) else ssl.Certificate.loadPEM(c) for c in extra]
    return ExtraTrust(certs, include_platform=include_platform)
