"""Store URLs as they may be shown: without their secrets.

A module of its own, imported by the factory (which builds stores from URLs)
and by the engines (which name themselves in messages), so that neither
imports the other: ``factory`` imports the engines lazily, and the
PostgreSQL engine used to import ``factory`` for this one function, a cycle.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = ["redact_url"]

_SECRET_PARAMS = frozenset({"password", "sslpassword"})


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***`` (for messages and logs).

    Args:
        url: a store URL; anything unparseable is returned as ``<unparseable>``
            rather than risk printing a secret.

    Returns:
        The redacted URL.
    """
    try:
        parts = urlsplit(url)
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        secret_query = any(k.lower() in _SECRET_PARAMS for k, _ in pairs)
        if parts.password is None and not secret_query:
            return url  # nothing to hide: keep the URL exactly as written
        netloc = parts.netloc
        if parts.password is not None:
            userinfo, _, hostinfo = netloc.rpartition("@")
            user = userinfo.partition(":")[0]
            netloc = f"{user}:***@{hostinfo}"
        query = parts.query
        if secret_query:
            query = urlencode([(k, "***" if k.lower() in _SECRET_PARAMS else v)
                               for k, v in pairs], safe="*/")
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:
        return "<unparseable store URL>"
