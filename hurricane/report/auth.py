"""Who may see the report and call the API, and CSRF protection of the forms.

Rules (the web issue):

- Pages: when ``[web.users]`` is configured, HTTP basic authentication is
  required. Without users, pages are served only when every listener is on
  loopback and only to loopback clients.
- API: when any ``[web.tokens]`` is configured, every call needs
  ``Authorization: Bearer <token>``. Without tokens the API is read-only and
  answers only on loopback listeners to loopback clients; writes get 403
  explaining how to configure a token.
- Secrets are stored hashed (:mod:`hurricane.passwords`, pbkdf2). A
  successful verification is cached in memory keyed by the SHA-256 of the
  secret, so pbkdf2 is paid once per secret and process; failed ones are
  cached too (bounded), so repeating a wrong token costs nothing either.
- Forms that change state are POST only, carry a CSRF token (an HMAC of the
  user name under a per-process random secret) and, when the browser sends
  ``Origin`` or ``Referer``, must come from this site.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from twisted.logger import Logger
from twisted.web.server import Request

from hurricane.passwords import verify_password

__all__ = ["AccessPolicy", "SecretCache", "Denied", "listen_is_loopback", "client_is_loopback"]

log = Logger()

#: Header telling browsers how to log in to the report.
BASIC_REALM = b'Basic realm="Hurricane", charset="UTF-8"'


@dataclass(frozen=True)
class Denied(Exception):
    """A request that may not proceed: the status and a message for the client."""

    code: int
    message: str
    #: Set for 401 answers: the WWW-Authenticate value.
    challenge: bytes | None = None


class SecretCache:
    """Verify secrets against pbkdf2 hashes, remembering answers by SHA-256.

    Args:
        hashes: name -> hash (``[web.tokens]`` or ``[web.users]``).
        max_failures: how many distinct wrong secrets to remember.
    """

    def __init__(self, hashes: Mapping[str, str], max_failures: int = 1024) -> None:
        self._hashes = dict(hashes)
        self._ok: dict[bytes, str] = {}
        self._failed: OrderedDict[bytes, None] = OrderedDict()
        self._max_failures = max_failures
        #: pbkdf2 verifications actually run (for tests).
        self.verifications = 0

    def __bool__(self) -> bool:
        return bool(self._hashes)

    def check(self, secret: str, name: str | None = None) -> str | None:
        """The name the secret belongs to, or None.

        Args:
            secret: the token, or the password when ``name`` is given.
            name: for passwords, the user name the secret must belong to.

        Returns:
            The matching name, or None when nothing matches.
        """
        key = hashlib.sha256(f"{name or ''}\0{secret}".encode("utf-8", "replace")).digest()
        if key in self._ok:
            return self._ok[key]
        if key in self._failed:
            self._failed.move_to_end(key)
            return None
        candidates = ([(name, self._hashes[name])] if name is not None and name in self._hashes
                      else [] if name is not None else list(self._hashes.items()))
        for candidate, encoded in candidates:
            self.verifications += 1
            if verify_password(secret, encoded):
                self._ok[key] = candidate
                return candidate
        self._failed[key] = None
        while len(self._failed) > self._max_failures:
            self._failed.popitem(last=False)
        return None


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


class AccessPolicy:
    """The access rules above, for one site.

    Args:
        listen: the ``[web] listen`` descriptions.
        tokens: ``[web.tokens]`` name -> hash.
        users: ``[web.users]`` name -> hash.
        csrf_secret: the per-process CSRF key (random when omitted).
    """

    def __init__(self, listen: Sequence[str], tokens: Mapping[str, str],
                 users: Mapping[str, str], csrf_secret: bytes | None = None) -> None:
        self.loopback_only = listen_is_loopback(listen)
        self.tokens = SecretCache(tokens)
        self.users = SecretCache(users)
        self._csrf_secret = csrf_secret or os.urandom(32)

    # -- pages ---------------------------------------------------------------

    def page_user(self, request: Request) -> str:
        """The user a page request is made for.

        Raises:
            Denied: 401 with a basic challenge, or 403 where pages are closed.
        """
        if self.users:
            auth = header(request, b"authorization") or ""
            scheme, _, value = auth.partition(" ")
            if scheme.lower() == "basic":
                try:
                    name, _, password = base64.b64decode(value.strip(), validate=True).decode(
                        "utf-8").partition(":")
                except (ValueError, UnicodeDecodeError):
                    name, password = "", ""
                if name and self.users.check(password, name) is not None:
                    return name
            raise Denied(401, "Log in with a user of [web.users].", BASIC_REALM)
        if not self.loopback_only:
            raise Denied(403, "The web report listens on a non-loopback address: configure "
                              "[web.users] (name = hash from 'hurricane passwd') to log in.")
        if not client_is_loopback(request):
            raise Denied(403, "Only loopback clients may use the report without a login.")
        require_loopback_host(request)
        return "local"

    # -- API -----------------------------------------------------------------

    def api_client(self, request: Request, write: bool) -> str:
        """The token name (or ``"local"``) an API request is made with.

        Args:
            request: the request.
            write: True for calls that change something (injection, suppression).

        Raises:
            Denied: 401 without a valid token, 403 for writes without tokens configured.
        """
        auth = header(request, b"authorization") or ""
        scheme, _, token = auth.partition(" ")
        if self.tokens:
            if scheme.lower() == "bearer" and token.strip():
                name = self.tokens.check(token.strip())
                if name is not None:
                    return name
            raise Denied(401, "A valid bearer token is required (Authorization: Bearer ...).",
                         b'Bearer realm="Hurricane"')
        if not (self.loopback_only and client_is_loopback(request)):
            raise Denied(401, "No API token is configured: the API answers only loopback "
                              "clients on a loopback listener. Configure [web.tokens].",
                         b'Bearer realm="Hurricane"')
        require_loopback_host(request)
        if write:
            raise Denied(403, "No API token is configured, so the API is read-only. Add "
                              "[web.tokens] name = \"<hash>\" (hash from 'hurricane passwd') "
                              "and send Authorization: Bearer <token>.")
        return "local"

    def metrics_allowed(self, request: Request) -> None:
        """Allow /metrics to loopback, or to a user or token holder.

        Raises:
            Denied: as for pages.
        """
        auth = (header(request, b"authorization") or "").partition(" ")
        if auth[0].lower() == "bearer" and self.tokens:
            if self.tokens.check(auth[2].strip()) is not None:
                return
            raise Denied(401, "Invalid bearer token.", b'Bearer realm="Hurricane"')
        self.page_user(request)

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
