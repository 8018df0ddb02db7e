"""Server TLS context from PEM files (``tls_certificate`` / ``tls_key``)."""

from __future__ import annotations

import re

from OpenSSL import crypto
from twisted.internet import ssl

_PEM_CERT_RE = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


def tls_context_from_files(certificate: str, key: str) -> ssl.CertificateOptions:
    """Build the context factory STARTTLS hands to ``transport.startTLS``.

    Args:
        certificate: PEM file with the server certificate first, then any
            intermediate certificates of its chain.
        key: PEM file with the private key.

    Returns:
        Options allowing TLS 1.2 and later, checked now so that a wrong file
        fails at start-up rather than at the first STARTTLS.

    Raises:
        ValueError: naming the file that could not be used.
    """
    try:
        with open(certificate, "rb") as fp:
            cert_pem = fp.read()
    except OSError as e:
        raise ValueError(f"{certificate}: cannot read certificate: {e.strerror}") from None
    try:
        with open(key, "rb") as fp:
            key_pem = fp.read()
    except OSError as e:
        raise ValueError(f"{key}: cannot read key: {e.strerror}") from None
    blocks = _PEM_CERT_RE.findall(cert_pem)
    if not blocks:
        raise ValueError(f"{certificate}: no PEM certificate found")
    try:
        certs = [ssl.Certificate.loadPEM(block).original for block in blocks]
    except Exception as e:  # pyOpenSSL raises its own Error types
        raise ValueError(f"{certificate}: bad certificate: {e}") from None
    try:
        private_key = crypto.load_privatekey(crypto.FILETYPE_PEM, key_pem)
    except Exception as e:
        raise ValueError(f"{key}: bad private key: {e}") from None
    options = ssl.CertificateOptions(
        privateKey=private_key,
        certificate=certs[0],
        extraCertChain=certs[1:],
        raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
    )
    try:
        options.getContext()  # checks that the key matches the certificate
    except Exception as e:
        raise ValueError(f"{key}: does not match {certificate}: {e}") from None
    return options
