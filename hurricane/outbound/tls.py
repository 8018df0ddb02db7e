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
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from OpenSSL import SSL
from twisted.internet import ssl

# Only exported from the private module; it is a documented interface.
from twisted.internet._sslverify import IOpenSSLTrustRoot
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.protocols.tls import TLSMemoryBIOProtocol
from zope.interface import implementer

from hurricane.address import to_a_label
from hurricane.outcome import TlsPolicy

#: Every policy the client understands (:class:`~hurricane.outcome.TlsPolicy`).
POLICIES: Final = frozenset(TlsPolicy)


@implementer(IOpenSSLTrustRoot)
class PlatformPlusExtraTrust:
    """Trust the platform's CA store plus some extra CA certificates.

    Twisted's ``platformTrust()`` and ``trustRootFromCertificates()`` are
    either/or; a test (or an operator with a private CA) wants both.

    Args:
        extra: additional CA certificates to trust.
        include_platform: also trust OpenSSL's default verify paths.
    """

    def __init__(self, extra: Sequence[ssl.Certificate], include_platform: bool = True) -> None:
        self._extra = tuple(extra)
        self._include_platform = include_platform

    def _addCACertsToContext(self, context: SSL.Context) -> None:  # noqa: N802 (Twisted API)
        if self._include_platform:
            context.set_default_verify_paths()
        store = context.get_cert_store()
        assert store is not None
        for cert in self._extra:
            store.add_cert(cert.original)


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
    policy: TlsPolicy, host: str, trust_roots: IOpenSSLTrustRoot | None = None,
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
    if policy in (TlsPolicy.opportunistic, TlsPolicy.require):
        return UnverifiedClientTLS(host)
    if policy is TlsPolicy.verify:
        roots = trust_roots if trust_roots is not None else ssl.platformTrust()
        return ssl.optionsForClientTLS(host.rstrip("."), trustRoot=roots)
    raise ValueError(f"no TLS options for policy {policy!r}")


def trust_roots_with(
    extra: Sequence[ssl.Certificate | bytes] | None, include_platform: bool = True,
) -> IOpenSSLTrustRoot | None:
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
    return PlatformPlusExtraTrust(certs, include_platform=include_platform)
