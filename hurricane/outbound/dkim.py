"""DKIM signing of outgoing mail, off the reactor thread.

One key per From domain (``[[delivery.dkim]]``), chosen by the From header's
domain: the exact domain, then its parent domains, so a key for
``example.com`` also signs mail from ``news.example.com`` (relaxed DMARC
alignment). RSA and ed25519 keys are read with ``cryptography`` and handed
to dkimpy in the forms it wants (PKCS#1 PEM; the base64 seed for ed25519,
which needs PyNaCl at run time).

dkimpy is pure Python: about 7 ms per RSA-2048 signature. At volume that
would stall the reactor, so signing goes through a *runner*: in production
:func:`threadpool_runner` (``deferToThreadPool``), in tests a synchronous one.
"""

from __future__ import annotations

import base64
import email.utils
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

import dkim  # type: ignore[import-untyped]  # dkimpy ships no type hints
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from hurricane.address import domain_of, to_a_label
from hurricane.config import DkimKeyConfig
from hurricane.outbound.prepare import header_value

__all__ = ["SIGNED_HEADERS", "DkimKey", "DkimSigner", "Runner", "threadpool_runner",
           "synchronous_runner"]

log = Logger()

#: Runs a blocking callable somewhere and gives back its result.
Runner = Callable[[Callable[[], bytes]], Awaitable[bytes]]

#: Headers covered by the signature (those absent are signed as absent,
#: which stops them being added later).
SIGNED_HEADERS: tuple[bytes, ...] = (
    b"from", b"to", b"cc", b"subject", b"date", b"message-id", b"reply-to",
    b"mime-version", b"content-type", b"content-transfer-encoding",
    b"list-unsubscribe", b"list-unsubscribe-post", b"in-reply-to", b"references",
    b"feedback-id",
)


async def synchronous_runner(work: Callable[[], bytes]) -> bytes:
    """Run ``work`` right here (tests, and tools without a reactor).

    Args:
        work: the signing call.

    Returns:
        Its result.
    """
    return work()


def threadpool_runner(reactor: IReactorFromThreads, pool: ThreadPool) -> Runner:
    """A runner that signs in ``pool`` and delivers the result on the reactor thread.

    Args:
        reactor: the reactor to call back on.
        pool: a started thread pool (stop it with the service tree).

    Returns:
        The runner.
    """

    def run(work: Callable[[], bytes]) -> Awaitable[bytes]:
        return deferToThreadPool(reactor, pool, work)

    return run


@dataclass(frozen=True)
class DkimKey:
    """One loaded signing key.

    Attributes:
        domain: the signing domain (``d=``), A-label, lower case.
        selector: the selector (``s=``).
        algorithm: ``rsa-sha256`` or ``ed25519-sha256``.
        private: the key in the form dkimpy takes.
    """

    domain: str
    selector: str
    algorithm: str
    private: bytes

    @classmethod
    def from_config(cls, entry: DkimKeyConfig) -> DkimKey:
        """Read the key file of one ``[[delivery.dkim]]`` entry.

        Args:
            entry: the configuration entry.

        Returns:
            The loaded key.

        Raises:
            ValueError: naming the file, when it cannot be read or is not an
                RSA / ed25519 private key, or does not match ``algorithm``.
        """
        try:
            with open(entry.key_file, "rb") as fp:
                data = fp.read()
        except OSError as e:
            raise ValueError(f"{entry.key_file}: cannot read DKIM key: {e.strerror}") from None
        algorithm, private = _load_private_key(data, entry.key_file)
        if entry.algorithm and entry.algorithm != algorithm:
            raise ValueError(
                f"{entry.key_file}: an {algorithm} key, but the configuration says "
                f"{entry.algorithm}"
            )
        try:
            domain = to_a_label(entry.domain)
        except ValueError as e:
            raise ValueError(f"DKIM domain {entry.domain!r}: {e}") from None
        return cls(domain, entry.selector, algorithm, private)


def _load_private_key(data: bytes, path: str) -> tuple[str, bytes]:
    """(algorithm, key in dkimpy's form) from a PEM key, or a bare base64
    ed25519 seed as dkimpy's ``dknewkey`` writes it."""
    if b"-----BEGIN" not in data:
        try:
            seed = base64.b64decode(data.strip(), validate=True)
        except ValueError:
            seed = b""
        if len(seed) == 32:
            return "ed25519-sha256", base64.b64encode(seed)
        raise ValueError(f"{path}: not a PEM private key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{path}: cannot load DKIM private key: {e}") from None
    if isinstance(key, rsa.RSAPrivateKey):
        # dkimpy parses PKCS#1 only; PKCS#8 ("BEGIN PRIVATE KEY") is converted.
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        return "rsa-sha256", pem
    if isinstance(key, ed25519.Ed25519PrivateKey):
        raw = key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        return "ed25519-sha256", base64.b64encode(raw)
    raise ValueError(f"{path}: DKIM keys must be RSA or ed25519")


def from_domain(message: bytes) -> str | None:
    """The A-label domain of the From header's (first) address, or None.

    Args:
        message: a CRLF message.

    Returns:
        The lower-case domain, or None when there is no usable From.
    """
    value = header_value(message, b"from")
    if value is None:
        return None
    text = value.decode("utf-8", "replace")
    for _, address in email.utils.getaddresses([text]):
        if "@" in address:
            try:
                return to_a_label(domain_of(address))
            except ValueError:
                return None
    return None


class DkimSigner:
    """Signs messages with the key of their From domain.

    Args:
        keys: loaded keys (:meth:`from_config` reads them from configuration).
        runner: where the pure-Python signing runs; :func:`threadpool_runner`
            in production. Defaults to :func:`synchronous_runner`.
    """

    def __init__(self, keys: Sequence[DkimKey], runner: Runner | None = None) -> None:
        self._keys: Mapping[str, DkimKey] = {k.domain: k for k in keys}
        self._runner: Runner = runner or synchronous_runner

    @classmethod
    def from_config(cls, entries: Sequence[DkimKeyConfig],
                    runner: Runner | None = None) -> DkimSigner:
        """Load every ``[[delivery.dkim]]`` key.

        Args:
            entries: the configuration entries.
            runner: see the class.

        Returns:
            The signer.

        Raises:
            ValueError: for a key that cannot be used, naming its file.
        """
        return cls([DkimKey.from_config(e) for e in entries], runner)

    def key_for(self, domain: str) -> DkimKey | None:
        """The key for a From domain: exact, then each parent domain.

        Args:
            domain: an A-label domain.

        Returns:
            The key, or None when no key covers the domain.
        """
        labels = domain.lower().split(".")
        for i in range(len(labels) - 1):  # never a bare top-level domain
            key = self._keys.get(".".join(labels[i:]))
            if key is not None:
                return key
        return None

    def sign_now(self, message: bytes) -> bytes:
        """Sign synchronously (in whatever thread calls this).

        Args:
            message: a CRLF message.

        Returns:
            The message with a DKIM-Signature header on top, or unchanged
            when no key covers its From domain.
        """
        domain = from_domain(message)
        key = self.key_for(domain) if domain else None
        if key is None:
            return message
        signature: bytes = dkim.sign(
            message,
            key.selector.encode("ascii"),
            key.domain.encode("ascii"),
            key.private,
            canonicalize=(b"relaxed", b"relaxed"),
            signature_algorithm=key.algorithm.encode("ascii"),
            include_headers=list(SIGNED_HEADERS),
        )
        return signature + message

    async def sign(self, message: bytes) -> bytes:
        """Sign through the runner (off the reactor thread in production).

        A signing error is logged and the message goes out unsigned: a bad
        key is an operator's problem to fix, and holding every message of the
        domain back would turn it into a delivery outage.

        Args:
            message: a CRLF message.

        Returns:
            The signed (or, on error or without a key, unchanged) message.
        """
        if not self._keys:
            return message
        try:
            return await self._runner(lambda: self.sign_now(message))
        except Exception:
            log.failure("DKIM signing failed; sending unsigned")
            return message
