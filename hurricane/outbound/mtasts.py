"""MTA-STS (RFC 8461): which MX hosts a domain accepts mail on, over verified TLS.

A domain publishes ``_mta-sts.DOMAIN`` TXT (``v=STSv1; id=...``) and a
policy file at ``https://mta-sts.DOMAIN/.well-known/mta-sts.txt``, fetched
over HTTPS with a verified certificate, no redirect followed (RFC 8461
3.3), at most :data:`MAX_POLICY_BYTES`. :class:`MtaSts` keeps each policy
until its ``max_age`` (in memory and in the store when it has
:class:`~hurricane.store.transport.ITransportStore`), fetches again when the
TXT id changes, and :meth:`MtaSts.refresh` renews the kept policies in the
background (the service runs it from a ``LoopingCall``).

The dialer (:mod:`hurricane.outbound.dialer`) applies a policy: in
``enforce`` mode only MX hosts matching a ``mx`` pattern, over ``verify``
TLS, else the attempt is deferred with the reason; in ``testing`` mode the
mail goes as without a policy and the failure is recorded. Every attempt
records the policy (``tls_policy_type`` ``sts`` with ``tls_policy_id``
``MODE ID``, or ``no-policy-found``) and its result (:func:`tls_result_of`),
which the TLS report (:mod:`hurricane.tlsrpt`) counts.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from twisted.internet.interfaces import IReactorTime, IResolver
from twisted.logger import Logger
from twisted.names import dns, error

from hurricane.outbound.interface import ConnectionFailed
from hurricane.outcome import Phase, Reason
from hurricane.store.transport import ITransportStore, StoredStsPolicy

__all__ = ["MAX_AGE_LIMIT", "MAX_POLICY_BYTES", "MtaSts", "StsCertificateError", "StsError",
           "StsInvalid", "StsPolicy",
           "parse_policy", "sts_record_id", "tls_result_of", "txt_lookup"]

log = Logger()

#: The policy file is at most this long (RFC 8461 3.3 suggests 64 KiB).
MAX_POLICY_BYTES = 65536
#: max_age at most one year (RFC 8461 3.2).
MAX_AGE_LIMIT = 31557600
#: Seconds a domain without a policy is not asked again.
NO_POLICY_SECONDS = 3600.0

#: TXT look-up: name -> the record strings (empty when none).
TxtLookup = Callable[[str], Awaitable[list[str]]]
#: Policy fetch: domain -> the policy file's bytes (raises on any failure).
PolicyFetch = Callable[[str], Awaitable[bytes]]


class StsError(Exception):
    """A policy that could not be fetched (RFC 8460 ``sts-policy-fetch-error``)."""

    result = "sts-policy-fetch-error"


class StsInvalid(StsError):
    """A policy file that is not a valid policy (``sts-policy-invalid``)."""

    result = "sts-policy-invalid"


class StsCertificateError(StsError):
    """The policy host's certificate did not verify (``sts-webpki-invalid``)."""

    result = "sts-webpki-invalid"


@dataclass(frozen=True)
class StsPolicy:
    """One domain's policy."""

    domain: str
    policy_id: str
    mode: str  # enforce, testing, none
    mx: tuple[str, ...]
    max_age: float
    text: str

    @property
    def enforce(self) -> bool:
        """True in ``enforce`` mode."""
        return self.mode == "enforce"

    @property
    def label(self) -> str:
        """``MODE ID``, the attempt's ``tls_policy_id``."""
        return f"{self.mode} {self.policy_id}"

    def matches(self, host: str) -> bool:
        """True when MX ``host`` matches a pattern (``*.`` covers one label, 3.4)."""
        name = host.lower().rstrip(".")
        for pattern in self.mx:
            p = pattern.lower().rstrip(".")
            if p.startswith("*."):
                head, _, tail = name.partition(".")
                if head and tail == p[2:]:
                    return True
            elif p == name:
                return True
        return False


def sts_record_id(records: list[str]) -> str | None:
    """The ``id`` of the one ``v=STSv1`` TXT record, or None (none, or several: 3.1)."""
    found = [r for r in records if r.startswith("v=STSv1")]
    if len(found) != 1:
        return None
    fields = dict(part.strip().partition("=")[::2] for part in found[0].split(";") if part.strip())
    record_id = fields.get("id", "")
    if not record_id or len(record_id) > 32 or not record_id.isalnum():
        return None
    return record_id


def parse_policy(domain: str, body: bytes, policy_id: str) -> StsPolicy:
    """The policy of a fetched file (RFC 8461 3.2), line by line.

    Raises:
        StsInvalid: too long, not UTF-8, or a required field missing or wrong.
    """
    if len(body) > MAX_POLICY_BYTES:
        raise StsInvalid("policy file too long")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise StsInvalid("policy file is not UTF-8") from None
    fields: dict[str, str] = {}
    mx: list[str] = []
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        if key == "mx":
            mx.append(value)
        else:
            fields.setdefault(key, value)
    mode = fields.get("mode", "")
    if fields.get("version") != "STSv1" or mode not in ("enforce", "testing", "none"):
        raise StsInvalid("policy needs version: STSv1 and mode: enforce, testing or none")
    age = fields.get("max_age", "")
    if not age.isdigit() or len(age) > 10:
        raise StsInvalid("policy needs max_age in seconds")
    if mode != "none" and not mx:
        raise StsInvalid("policy has no mx")
    return StsPolicy(domain.lower(), policy_id, mode, tuple(mx),
                     float(min(int(age), MAX_AGE_LIMIT)), text)


def tls_result_of(error: ConnectionFailed) -> str | None:
    """The RFC 8460 result type of a failed session (None: not a TLS failure)."""
    if error.phase is not Phase.starttls:
        return None
    text = str(error).lower()
    if "not offered" in text or error.reply is not None:
        return "starttls-not-supported"
    if error.reason is Reason.securityerror:
        if "certificate has expired" in text:  # OpenSSL X509_V_ERR_CERT_HAS_EXPIRED
            return "certificate-expired"
        if "hostname" in text or "mismatch" in text or "match" in text:
            return "certificate-host-mismatch"
        if "self signed" in text or "self-signed" in text or "issuer" in text:
            return "certificate-not-trusted"
    return "validation-failure"


def txt_lookup(resolver: IResolver, timeout: int = 10) -> TxtLookup:
    """A TXT look-up on a twisted.names resolver (no record: an empty list)."""
    async def lookup(name: str) -> list[str]:
        try:
            result = await resolver.lookupText(name, (timeout,))
        except (error.DomainError, error.AuthoritativeDomainError):
            return []
        answers: Sequence[dns.RRHeader] = result[0]  # type: ignore[assignment]
        found: list[str] = []
        for rr in answers:
            if rr.type == dns.TXT and isinstance(rr.payload, dns.Record_TXT):
                found.append(b"".join(rr.payload.data).decode("utf-8", "replace"))
        return found
    return lookup


class MtaSts:
    """The policies of destination domains, fetched and kept.

    Args:
        clock: the time (expiry).
        lookup: TXT look-up.
        fetch: the policy file fetch (:func:`hurricane.outbound.stsfetch.fetcher`).
        store: keeps policies across restarts (None: memory only).
    """

    def __init__(self, clock: IReactorTime, lookup: TxtLookup, fetch: PolicyFetch,
                 store: ITransportStore | None = None) -> None:
        self._clock = clock
        self._lookup = lookup
        self._fetch = fetch
        self._store = store
        self._kept: dict[str, tuple[StsPolicy, float]] = {}
        self._absent: dict[str, float] = {}
        #: Domains whose last fetch failed, with the error (the TLS report's
        #: ``sts-policy-fetch-error``).
        self.fetch_errors: dict[str, str] = {}
        #: The RFC 8460 result type of each of those failures.
        self.fetch_results: dict[str, str] = {}

    def _valid(self, domain: str) -> StsPolicy | None:
        kept = self._kept.get(domain)
        if kept is not None and kept[1] > self._clock.seconds():
            return kept[0]
        return None

    async def policy(self, domain: str) -> StsPolicy | None:
        """The policy that applies to ``domain`` now, or None (no policy)."""
        domain = domain.lower().rstrip(".")
        found = self._valid(domain)
        if found is not None:
            return found if found.mode != "none" else None
        if self._absent.get(domain, 0.0) > self._clock.seconds():
            return None
        if domain not in self._kept and self._store is not None:
            stored = await self._store.load_sts_policy(domain)
            if stored is not None:
                self._kept[domain] = (StsPolicy(stored.domain, stored.policy_id, stored.mode,
                                                stored.mx, stored.max_age, stored.policy),
                                      stored.expires_at)
                found = self._valid(domain)
                if found is not None:
                    return found if found.mode != "none" else None
        found = await self.fetch(domain)
        return found if found is not None and found.mode != "none" else None

    async def fetch(self, domain: str, force: bool = False) -> StsPolicy | None:
        """Look the record up and fetch the policy when its id is new (or ``force``).

        A failed fetch keeps the last policy until it expires (RFC 8461 5.1)
        and is remembered in :attr:`fetch_errors`.
        """
        now = self._clock.seconds()
        try:
            record_id = sts_record_id(await self._lookup(f"_mta-sts.{domain}"))
        except Exception as e:
            log.info("MTA-STS TXT look-up for {domain} failed: {error}", domain=domain,
                     error=str(e))
            return self._valid(domain)
        if record_id is None:
            self._absent[domain] = now + NO_POLICY_SECONDS
            return self._valid(domain)
        kept = self._kept.get(domain)
        if kept is not None and kept[0].policy_id == record_id and kept[1] > now and not force:
            return kept[0]
        try:
            policy = parse_policy(domain, await self._fetch(domain), record_id)
        except Exception as e:
            self.fetch_errors[domain] = str(e) or e.__class__.__name__
            self.fetch_results[domain] = (e.result if isinstance(e, StsError)
                                          else StsError.result)
            log.info("MTA-STS policy fetch for {domain} failed: {error}", domain=domain,
                     error=str(e))
            return self._valid(domain)
        self.fetch_errors.pop(domain, None)
        self.fetch_results.pop(domain, None)
        self._kept[domain] = (policy, now + policy.max_age)
        if self._store is not None:
            await self._store.save_sts_policy(StoredStsPolicy(
                domain, policy.policy_id, policy.mode, policy.mx, policy.max_age, policy.text,
                now, now + policy.max_age))
        return policy

    async def refresh(self) -> int:
        """Look again at every kept policy's record (background); return how many.

        A policy past half its ``max_age`` is fetched again even when its id
        did not change (RFC 8461 10.2, proactive refresh), so a domain in
        use never finds its policy expired at send time.
        """
        domains = list(self._kept)
        now = self._clock.seconds()
        for domain in domains:
            policy, expires = self._kept[domain]
            try:
                await self.fetch(domain, force=expires - now < policy.max_age / 2)
            except Exception:
                log.failure("MTA-STS refresh of {domain} failed", domain=domain)
        return len(domains)
