"""Who may see the report and call the API, and CSRF protection of the forms.

Rules (the web issue, and issue 23 items 4 and 5):

- Pages: when ``[web.users]`` is configured, HTTP basic authentication is
  required. Without users, pages are served only when every listener is on
  loopback, only to loopback clients naming a loopback Host, and never to a
  request that came through a reverse proxy (``Forwarded``,
  ``X-Forwarded-For``, ``X-Real-IP``...): behind a proxy every client looks
  local, so the report then needs a login.
- API: when any ``[web.tokens]`` is configured, every call needs
  ``Authorization: Bearer <token>``. Without tokens the API is read-only and
  answers only loopback clients on loopback listeners (no proxy either);
  writes get 403 explaining how to configure a token.
- Secrets are stored hashed (:mod:`hurricane.passwords`) and verified by
  :mod:`hurricane.credentials`: pbkdf2 in a thread pool, never on the
  reactor thread; ``sha256$`` tokens by one dict lookup. Unknown user names
  cost a dummy hash, like known ones.
- Failed logins are counted per client address (an IPv6 /64): past
  ``[web] max_auth_failures`` within ``auth_block_seconds`` the address gets
  429 with Retry-After, and no pbkdf2 is run for it. What costs no pbkdf2
  still lets its holder in: a ``sha256$`` token (one digest), or a password
  or older token already verified since the start. Otherwise one client
  guessing, or any client behind the same proxy, would lock every valid
  user of that address out (issue 23's second review).
- Forms that change state are POST only, carry a CSRF token (an HMAC of the
  user name under a per-process random secret) and, when the browser sends
  ``Origin`` or ``Referer``, must come from this site.

Every check is async (it may wait for the pool); the request gate of
:mod:`hurricane.report.web` runs the same checks when the headers are in,
before a request body is read.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import math
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlsplit

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.logger import Logger
from twisted.web.server import Request

from hurricane.credentials import (
    FailureLimiter,
    PasswordBook,
    SecretVerifier,
    TokenBook,
    VerifierBusy,
)

__all__ = ["AccessPolicy", "Denied", "PROXY_HEADERS", "listen_is_loopback", "client_is_loopback"]

log = Logger()

_T = TypeVar("_T")

#: Header telling browsers how to log in to the report.
BASIC_REALM = b'Basic realm="Hurricane", charset="UTF-8"'
BEARER_REALM = b'Bearer realm="Hurricane"'

#: Headers a reverse proxy adds (RFC 7239, the de facto X- ones, RFC 9110
#: Via). A browser on this machine sends none of them.
PROXY_HEADERS = (b"forwarded", b"x-forwarded-for", b"x-forwarded-host", b"x-forwarded-proto",
                 b"x-real-ip", b"x-client-ip", b"true-client-ip", b"via")


@dataclass(frozen=True)
class Denied(Exception):
    """A request that may not proceed: the status and a message for the client."""

    code: int
    message: str
    #: Set for 401 answers: the WWW-Authenticate value.
    challenge: bytes | None = None
    #: Set for 429 and 503 answers: seconds before trying again.
    retry_after: float | None = None


def _endpoint_host(description: str) -> str | None:
    """The interface of a Twisted server endpoint string (None: all interfaces)."""
    parts = description.split(":")
    kind = parts[0].lower()
    if kind == "unix":
        return "127.0.0.1"  # a socket file: local only
    for part in parts[1:]:
        if part.startswith("interface="):
            return part.partition("=")[2].replace("\\:", ":")
    return None


def _is_loopback_ip(text: str) -> bool:
    try:
        addr = ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return text == "localhost"
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


def header(request: Request, name: bytes) -> str | None:
    """A request header as text (latin-1, as HTTP headers are), or None."""
    value = request.getHeader(name)
    if value is None:
        return None
    return value.decode("latin-1") if isinstance(value, bytes) else str(value)


def listen_is_loopback(listen: Sequence[str]) -> bool:
    """True when every listener description binds a loopback interface only."""
    for description in listen:
        host = _endpoint_host(description.replace("\\:", "\0"))
        if host is None or not _is_loopback_ip(host.replace("\0", ":")):
            return False
    return True


def client_is_loopback(request: Request) -> bool:
    """True when the request came from a loopback address."""
    host = getattr(request.getClientAddress(), "host", None)
    return isinstance(host, str) and _is_loopback_ip(host)


def require_loopback_host(request: Request) -> None:
    """Refuse a login-free request whose Host is not a loopback name (DNS rebinding).

    Without a login, access rests on the client being on this machine; a page
    on evil.example that re-resolves its own name to 127.0.0.1 runs in a
    local browser but still sends ``Host: evil.example``.

    Raises:
        Denied: 403 naming the host.
    """
    host = (header(request, b"host") or "").strip().lower()
    name = host.rsplit(":", 1)[0] if not host.startswith("[") else host[1:].split("]")[0]
    try:
        loopback = name == "localhost" or ipaddress.ip_address(name).is_loopback
    except ValueError:  # a name, not an address literal
        loopback = False
    if not loopback:
        raise Denied(403, f"Host {host!r} is not a loopback name: without a login the report "
                          "answers only http://127.0.0.1 or http://localhost.")


def client_host(request: Request) -> str:
    """The client's IP address as text ("local" for a UNIX socket)."""
    address = request.getClientAddress()
    if isinstance(address, (IPv4Address, IPv6Address)):
        return address.host
    return "local"


def proxy_header(request: Request) -> str | None:
    """The name of the first reverse-proxy header the request carries, or None."""
    for name in PROXY_HEADERS:
        if request.requestHeaders.hasHeader(name):
            return name.decode("ascii")
    return None


def parse_basic(value: str) -> tuple[str, str] | None:
    """``(name, password)`` of an HTTP basic Authorization value, or None."""
    scheme, _, encoded = value.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        name, sep, password = base64.b64decode(encoded.strip(), validate=True).decode(
            "utf-8").partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    return (name, password) if sep and name else None


def bearer_token(value: str) -> str | None:
    """The token of a Bearer Authorization value, or None."""
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


class AccessPolicy:
    """The access rules above, for one site.

    Args:
        listen: the ``[web] listen`` descriptions.
        tokens: ``[web.tokens]`` name -> token hash.
        users: ``[web.users]`` name -> password hash.
        verifier: where hashes are verified (a thread pool in production).
        limiter: failed logins per client address.
        csrf_secret: the per-process CSRF key (random when omitted).
    """

    def __init__(self, listen: Sequence[str], tokens: Mapping[str, str],
                 users: Mapping[str, str], *, verifier: SecretVerifier,
                 limiter: FailureLimiter, csrf_secret: bytes | None = None) -> None:
        self.loopback_only = listen_is_loopback(listen)
        self.verifier = verifier
        self.tokens = TokenBook(tokens, verifier)
        self.users = PasswordBook(users, verifier)
        self.limiter = limiter
        self._csrf_secret = csrf_secret or os.urandom(32)

    # -- verification ----------------------------------------------------------

    async def _verified(self, request: Request, check: Callable[[], Awaitable[_T]],
                        free: Callable[[], _T]) -> _T:
        """Run one credential check under the per-address failure limit.

        Args:
            request: the request (its client address is what is limited).
            check: the full check (it may wait for pbkdf2 in the pool).
            free: the same check from what costs no hashing (a ``sha256$``
                token, a remembered success); falsy when that cannot tell.

        Raises:
            Denied: 429 when the address is over the limit and ``free`` does
                not let the credentials in (no pbkdf2 is run then), 503 when
                the verifier is busy.
        """
        client = client_host(request)
        attempt = self.limiter.attempt(client)
        if attempt is None:
            result = free()
            if result:
                return result
            wait = self.limiter.retry_after(client)
            raise Denied(429, f"Too many failed logins from this address: try again in "
                              f"{math.ceil(wait)} s.", retry_after=wait)
        try:
            result = await check()
        except VerifierBusy:
            attempt.succeeded()  # nothing was verified: not the client's failure
            raise Denied(503, "Too many logins are being checked: try again in a moment.",
                         retry_after=1.0) from None
        if result:
            attempt.succeeded()
        else:
            attempt.failed()
            log.info("failed web login from {client}", client=client)
        return result

    async def _token_name(self, request: Request, token: str) -> str | None:
        """The name of a bearer token (None: wrong), under the failure limit."""
        return await self._verified(request, lambda: self.tokens.check(token),
                                    lambda: self.tokens.remembered(token))

    def _login_free(self, request: Request, denied: Callable[[str], Denied]) -> None:
        """Allow a request without credentials only from this machine, directly.

        Raises:
            Denied: made by ``denied`` from the reason.
        """
        if not client_is_loopback(request):
            raise denied("Only loopback clients may use the report without a login.")
        proxied = proxy_header(request)
        if proxied is not None:
            raise denied(f"This request came through a reverse proxy ({proxied} header): "
                         "behind a proxy every client looks local, so a login is required. "
                         "Configure [web.users] and [web.tokens].")
        require_loopback_host(request)

    # -- pages ---------------------------------------------------------------

    async def page_user(self, request: Request) -> str:
        """The user a page request is made for.

        Raises:
            Denied: 401 with a basic challenge, 403 where pages are closed,
                429 for an address over the failure limit.
        """
        if self.users:
            credentials = parse_basic(header(request, b"authorization") or "")
            if credentials is not None:
                name, password = credentials
                if await self._verified(request, lambda: self.users.check(name, password),
                                        lambda: self.users.remembered(name, password)):
                    return name
            raise Denied(401, "Log in with a user of [web.users].", BASIC_REALM)
        if not self.loopback_only:
            raise Denied(403, "The web report listens on a non-loopback address: configure "
                              "[web.users] (name = hash from 'hurricane passwd') to log in.")
        self._login_free(request, lambda reason: Denied(403, reason))
        return "local"

    # -- API -----------------------------------------------------------------

    async def api_client(self, request: Request, write: bool) -> str:
        """The token name (or ``"local"``) an API request is made with.

        Args:
            request: the request.
            write: True for calls that change something (injection, suppression).

        Raises:
            Denied: 401 without a valid token, 403 for writes without tokens
                configured, 429 for an address over the failure limit.
        """
        token = bearer_token(header(request, b"authorization") or "")
        if self.tokens:
            if token is not None:
                name = await self._token_name(request, token)
                if name is not None:
                    return name
            raise Denied(401, "A valid bearer token is required (Authorization: Bearer ...).",
                         BEARER_REALM)
        if not self.loopback_only:
            raise Denied(401, "No API token is configured: the API answers only loopback "
                              "clients on a loopback listener. Configure [web.tokens].",
                         BEARER_REALM)
        self._login_free(request, lambda reason: Denied(401, reason, BEARER_REALM))
        if write:
            raise Denied(403, "No API token is configured, so the API is read-only. Add "
                              "[web.tokens] name = \"<hash>\" (hash from 'hurricane passwd "
                              "--token') and send Authorization: Bearer <token>.")
        return "local"

    async def metrics_allowed(self, request: Request) -> None:
        """Allow /metrics to loopback, or to a user or token holder.

        Raises:
            Denied: as for pages.
        """
        token = bearer_token(header(request, b"authorization") or "")
        if token is not None and self.tokens:
            if await self._token_name(request, token) is not None:
                return
            raise Denied(401, "Invalid bearer token.", BEARER_REALM)
        await self.page_user(request)

    # -- CSRF ----------------------------------------------------------------

    def csrf_token(self, user: str) -> str:
        """The CSRF token forms carry for ``user``."""
        mac = hmac.new(self._csrf_secret, b"csrf\0" + user.encode("utf-8"), hashlib.sha256)
        return mac.hexdigest()

    def check_csrf(self, request: Request, user: str, token: str | None) -> None:
        """Refuse a state-changing form post from another site.

        Raises:
            Denied: 403 naming the check that failed.
        """
        if request.method != b"POST":
            raise Denied(405, "Use POST.")
        if not token or not hmac.compare_digest(token, self.csrf_token(user)):
            raise Denied(403, "Missing or invalid CSRF token: reload the page and try again.")
        host = header(request, b"host") or ""
        for name in (b"origin", b"referer"):
            value = header(request, name)
            if value is None:
                continue
            if value == "null" or urlsplit(value).netloc.lower() != host.lower():
                raise Denied(403, f"Cross-site request refused ({name.decode()}: {value}).")
            break
