"""Mail addresses and domain names: their syntax and their forms, in one place.

Pure functions, no protocol, nothing from the rest of Hurricane but the
reply type their errors carry:

- the strict syntax of what an SMTP client names (:func:`parse_path` for
  MAIL/RCPT paths, :func:`is_valid_helo`, :func:`parse_params` for ESMTP
  parameters). It is stricter than twisted.mail's ``Address`` (which
  silently drops source routes and invents a default domain) because the
  bounce receiver must see exactly what the client asked for to refuse
  relay attempts, and because nothing a client says may carry CR or LF into
  a header we write. The submission and bounce listeners and the HTTP API
  use it.
- the lenient reading of an address found in a returned message
  (:func:`bare_address`: a DSN field, a header, a display name);
- the forms we compare and send: :func:`fold` (the case-insensitive key of
  the suppression list), :func:`domain_of`, and :func:`to_a_label`, the one
  IDNA conversion (the ``idna`` package's IDNA 2008 with UTS 46 mapping; the
  stdlib codec is IDNA 2003 and maps some names differently).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Literal

import idna

from hurricane.smtp_reply import Reply, ReplyError

__all__ = [
    "Kind",
    "MAX_DOMAIN",
    "MAX_LOCAL_PART",
    "MAX_PATH",
    "Path",
    "bare_address",
    "domain_of",
    "fold",
    "is_address_literal",
    "is_valid_domain",
    "is_valid_helo",
    "parse_params",
    "parse_path",
    "to_a_label",
]

#: RFC 5322 atext, the characters of an unquoted local part besides ".".
_ATEXT = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~"
)
_LABEL_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\Z")
# HELO names in the wild carry underscores (Windows host names); accept them
# there, but not in mail domains.
_HELO_LABEL_RE = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\Z")
_PARAM_KEY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*\Z")
_PARAM_VALUE_RE = re.compile(r"[\x21-\x3c\x3e-\x7e]+\Z")

MAX_LOCAL_PART = 64
MAX_DOMAIN = 255
MAX_PATH = 256

Kind = Literal["sender", "recipient"]


@dataclass(frozen=True)
class Path:
    """A reverse-path or forward-path as the client gave it.

    Args:
        local: the local part as sent (quoted form kept, quotes included).
        domain: the domain or address literal (``[192.0.2.1]``); None when the
            client sent a bare local part (only ``Postmaster`` is legal so).
        route: the source-route domains of ``<@a,@b:u@d>``, which RFC 5321
            says to ignore but which a relay policy may want to refuse.
        quoted: True when the local part is a quoted string.
    """

    local: str
    domain: str | None
    route: tuple[str, ...] = ()
    quoted: bool = False

    @property
    def is_null(self) -> bool:
        """True for the null reverse-path ``<>``."""
        return self.local == "" and self.domain is None

    @property
    def address(self) -> str:
        """``local@domain`` ("" for the null path, the local part when no domain)."""
        if self.domain is None:
            return self.local
        return f"{self.local}@{self.domain}"

    @property
    def is_literal(self) -> bool:
        """True when the domain is an address literal such as ``[192.0.2.1]``."""
        return self.domain is not None and self.domain.startswith("[")

    def __str__(self) -> str:
        return f"<{self.address}>"


def _bad(kind: Kind, why: str) -> ReplyError:
    # RFC 3463: X.1.7 bad sender mailbox syntax, X.1.3 bad destination syntax.
    status = "5.1.7" if kind == "sender" else "5.1.3"
    what = "sender" if kind == "sender" else "recipient"
    return ReplyError(Reply(553, status, f"Error: bad {what} address syntax ({why})"))


def is_valid_domain(domain: str) -> bool:
    """True for an LDH host name (A-labels), no trailing dot, at most 255 octets."""
    if not domain or len(domain) > MAX_DOMAIN:
        return False
    return all(_LABEL_RE.match(label) for label in domain.split("."))


def is_address_literal(text: str) -> bool:
    """True for ``[192.0.2.1]`` or ``[IPv6:2001:db8::1]`` (RFC 5321 4.1.3)."""
    if len(text) < 3 or text[0] != "[" or text[-1] != "]":
        return False
    inner = text[1:-1]
    try:
        if inner[:5].lower() == "ipv6:":
            ipaddress.IPv6Address(inner[5:])
        else:
            ipaddress.IPv4Address(inner)
    except ValueError:
        return False
    return True


def is_valid_helo(argument: str) -> bool:
    """True when a HELO/EHLO argument is one domain name or one address literal.

    Anything else (spaces, CR/LF, control characters, several words) is refused
    so that the argument can be copied into a Received header safely.
    """
    if not argument or len(argument) > MAX_DOMAIN:
        return False
    if argument.startswith("["):
        return is_address_literal(argument)
    name = argument[:-1] if argument.endswith(".") else argument
    return bool(name) and all(_HELO_LABEL_RE.match(label) for label in name.split("."))


def _find_close(text: str) -> int:
    """Index of the ``>`` closing a path that starts at ``text[0] == "<"``, or -1."""
    in_quote = False
    i = 1
    while i < len(text):
        ch = text[i]
        if in_quote:
            if ch == "\\":
                i += 1
            elif ch == '"':
                in_quote = False
        elif ch == '"':
            in_quote = True
        elif ch == ">":
            return i
        i += 1
    return -1


def _split_route(inner: str, kind: Kind) -> tuple[tuple[str, ...], str]:
    """Split ``@a,@b:mailbox`` into the route domains and the mailbox."""
    colon = -1
    depth = 0
    for i, ch in enumerate(inner):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        elif ch == ":" and depth == 0:
            colon = i
            break
    if colon < 0:
        raise _bad(kind, "malformed source route")
    route = []
    for hop in inner[:colon].split(","):
        if not hop.startswith("@") or not (is_valid_domain(hop[1:]) or is_address_literal(hop[1:])):
            raise _bad(kind, "malformed source route")
        route.append(hop[1:])
    return tuple(route), inner[colon + 1 :]


def _parse_mailbox(text: str, kind: Kind) -> tuple[str, str | None, bool]:
    """Split a mailbox into (local part, domain or None, quoted)."""
    quoted = text.startswith('"')
    if quoted:
        i = 1
        while i < len(text):
            ch = text[i]
            if ch == "\\":
                if i + 1 >= len(text) or not " " <= text[i + 1] <= "~":
                    raise _bad(kind, "bad quoted local part")
                i += 2
                continue
            if ch == '"':
                break
            if not (" " <= ch <= "~"):
                raise _bad(kind, "bad quoted local part")
            i += 1
        else:
            raise _bad(kind, "unterminated quoted local part")
        local, rest = text[: i + 1], text[i + 1 :]
    else:
        at = text.find("@")
        local, rest = (text, "") if at < 0 else (text[:at], text[at:])
        if not local or any(ch not in _ATEXT and ch != "." for ch in local):
            raise _bad(kind, "bad local part")
    if len(local) > MAX_LOCAL_PART:
        raise _bad(kind, "local part longer than 64 octets")
    if not rest:
        return local, None, quoted
    if not rest.startswith("@"):
        raise _bad(kind, "bad local part")
    domain = rest[1:]
    if not (is_valid_domain(domain) or is_address_literal(domain)):
        raise _bad(kind, "bad domain")
    return local, domain, quoted


def parse_path(text: str, kind: Kind) -> tuple[Path, str]:
    """Parse the argument of ``MAIL FROM:`` or ``RCPT TO:``.

    Accepts ``<path>`` (RFC 5321) and, leniently, a bare address without
    brackets, with optional spaces before it.

    Args:
        text: everything after the colon, ASCII, no CR/LF.
        kind: "sender" or "recipient", which selects the error codes.

    Returns:
        The path and the rest of the line (the ESMTP parameters, stripped).

    Raises:
        ReplyError: 501 5.5.4 for a missing address, 553 5.1.7 / 5.1.3 for a
            malformed one.
    """
    s = text.lstrip(" ")
    if not s:
        raise ReplyError(Reply(501, "5.5.4", "Error: missing address"))
    if s.startswith("<"):
        end = _find_close(s)
        if end < 0:
            raise _bad(kind, "unbalanced <>")
        inner, rest = s[1:end], s[end + 1 :]
        if rest and not rest.startswith(" "):
            raise _bad(kind, "text after >")
    else:
        inner, _, rest = s.partition(" ")
        if "<" in inner or ">" in inner:
            raise _bad(kind, "unbalanced <>")
    if len(inner) > MAX_PATH:
        raise _bad(kind, "path longer than 256 octets")
    if inner == "":
        return Path("", None), _parameter_text(rest)
    route: tuple[str, ...] = ()
    if inner.startswith("@"):
        route, inner = _split_route(inner, kind)
    local, domain, quoted = _parse_mailbox(inner, kind)
    return Path(local, domain, route, quoted), _parameter_text(rest)


def _parameter_text(rest: str) -> str:
    """What follows the path, stripped; a control character in it is a 501.

    The parameters are printable ASCII (RFC 5321 4.1.2); refusing a control
    character here means no caller ever sees one.
    """
    rest = rest.strip(" ")
    if any(ch < " " or ch == "\x7f" for ch in rest):
        raise ReplyError(Reply(501, "5.5.4", "Error: malformed ESMTP parameter"))
    return rest


def parse_params(text: str) -> dict[str, str | None]:
    """Parse ESMTP parameters ``KEY[=VALUE] ...`` (keys upper-cased).

    Raises:
        ReplyError: 501 5.5.4 for a malformed or repeated parameter.
    """
    params: dict[str, str | None] = {}
    for item in text.split():
        key, eq, value = item.partition("=")
        if not _PARAM_KEY_RE.match(key) or (eq and not _PARAM_VALUE_RE.match(value)):
            raise ReplyError(Reply(501, "5.5.4", "Error: malformed ESMTP parameter"))
        key = key.upper()
        if key in params:
            raise ReplyError(Reply(501, "5.5.4", f"Error: parameter {key} given twice"))
        params[key] = value if eq else None
    return params


# -- forms ------------------------------------------------------------------


def fold(address: str) -> str:
    """The case-insensitive key of an address (the suppression list, duplicates).

    RFC 5321 lets a server treat local parts as case-sensitive; in practice
    none does, and an application that sends to "Bob@" and "bob@" means one
    person.
    """
    return address.strip().lower()


def domain_of(address: str) -> str:
    """The lower-cased domain of an address: what follows its last ``@`` (the
    whole text, lower-cased, when there is none)."""
    return address.rpartition("@")[2].lower()


def to_a_label(domain: str) -> str:
    """The lower-case A-label (punycode) form of a domain, one trailing dot removed.

    An ASCII name is returned lower-cased as it is: it already is its
    A-label form, and whether DNS knows it is DNS's to answer.

    Args:
        domain: a domain in U-label or A-label form.

    Returns:
        The A-label form.

    Raises:
        ValueError: an empty name, or one IDNA 2008 refuses.
    """
    name = domain.strip()
    if name.endswith("."):
        name = name[:-1]
    if not name:
        raise ValueError("empty domain")
    if name.isascii():
        return name.lower()
    try:
        return idna.encode(name, uts46=True).decode("ascii").lower()
    except idna.IDNAError as e:
        raise ValueError(f"invalid domain {domain!r}: {e}") from None


def bare_address(value: str | None) -> str | None:
    """Lower-cased bare address from an address, ``<address>`` or ``type;address``.

    For addresses found in returned messages, whose syntax nobody checked:
    nothing is refused, only the wrapping is taken off.

    Args:
        value: an address as found in a DSN field (Final-Recipient,
            Original-Recipient) or header, possibly with an address type or
            a display name.

    Returns:
        The address lower-cased without angle brackets or type, or None for
        an empty value.
    """
    if value is None:
        return None
    text = value.strip()
    if ";" in text:
        kind, _, rest = text.partition(";")
        if "@" not in kind:
            # No xtext decoding here: "user+ab@" (sub-addressing) would
            # decode to nonsense, and analyzers already give decoded forms.
            text = rest
    text = text.strip()
    lt, gt = text.rfind("<"), text.rfind(">")
    if 0 <= lt < gt:  # "Display Name <address>"
        text = text[lt + 1 : gt]
    text = text.strip().strip("<>").strip()
    return text.lower() or None
