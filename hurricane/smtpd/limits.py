"""Limits of one ESMTP listener, and the connection counter that enforces two of them."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hurricane.credentials import address_key

if TYPE_CHECKING:
    from hurricane.config import BounceConfig, SubmissionConfig

MIB = 1024 * 1024

#: A DATA line longer than this is refused (discarded to end of data). RFC 5322
#: says 998, but applications send unwrapped HTML; delivery re-encodes lines,
#: so a generous bound only has to keep memory bounded.
DEFAULT_DATA_LINE_LENGTH = 64 * 1024


@dataclass(frozen=True)
class ServerLimits:
    """What one listener allows (DESIGN.md, "Limits").

    Args:
        max_message_size: advertised with SIZE; larger messages get 552 5.3.4.
        max_recipients: recipients per transaction; more get 452 4.5.3.
        max_line_length: longest command line; longer ones get 500 5.5.2.
        max_unterminated: command input with no CRLF beyond this closes the
            connection (after 500 5.5.6).
        max_data_line_length: longest line inside DATA; a longer one fails the
            message (554 5.3.4 after the dot) but the session stays in DATA.
        idle_timeout: seconds to wait for each command (421 4.4.2 after).
        max_errors: error replies before 421 4.7.0 and close.
        max_connections_per_ip: concurrent connections from one address,
            among those the listener counts (:class:`ConnectionLimiter`;
            submission counts neither trusted networks nor authenticated
            connections).
        max_connections: concurrent connections in all, counted or not.
        reject_bare_line_endings: True refuses a message holding a bare CR or
            LF (550 5.6.2 after the dot); False turns each into CRLF.
    """

    max_message_size: int = 25 * MIB
    max_recipients: int = 100
    max_line_length: int = 2048
    max_unterminated: int = 4096
    max_data_line_length: int = DEFAULT_DATA_LINE_LENGTH
    idle_timeout: float = 300.0
    max_errors: int = 20
    max_connections_per_ip: int = 20
    max_connections: int = 200
    reject_bare_line_endings: bool = True

    @classmethod
    def from_config(cls, config: SubmissionConfig | BounceConfig, *,
                    reject_bare_line_endings: bool) -> ServerLimits:
        """The limits of a listener section (``[submission]`` or ``[bounce]``).

        Both sections name their limits alike; unterminated input may run to
        twice a command line (4 KiB at least) before the connection closes.
        """
        return cls(
            max_message_size=config.max_message_size,
            max_recipients=config.max_recipients,
            max_line_length=config.max_line_length,
            max_unterminated=max(4096, 2 * config.max_line_length),
            idle_timeout=config.idle_timeout,
            max_errors=config.max_errors,
            max_connections_per_ip=config.max_connections_per_ip,
            max_connections=config.max_connections,
            reject_bare_line_endings=reject_bare_line_endings,
        )


class ConnectionLimiter:
    """Counts open connections per client address and in total.

    Every connection takes one of the ``total`` slots. The per-address limit
    counts only the connections that are subject to it: its job is to stop
    one unknown client from holding the listener, not to cap the operator's
    own applications. A connection admitted with ``per_ip=False`` (a trusted
    network) never counts against its address, and one that proves who it is
    (AUTH) stops counting through :meth:`leave_per_ip` while keeping its
    global slot. Postfix does the same for ``$mynetworks``
    (``smtpd_client_connection_limit_exceptions``).

    An address is counted as the web and AUTH failure limiters count it
    (:func:`hurricane.credentials.address_key`): an IPv4 address, or an IPv6
    /64. One IPv6 host usually holds a whole /64, so a limit on single
    addresses let it open as many connections as the total allows (issue
    23's second review).

    Args:
        per_ip: most counted connections one address may hold.
        total: most connections in all, counted or not.
    """

    def __init__(self, per_ip: int, total: int) -> None:
        self.per_ip = per_ip
        self.total = total
        self._by_ip: Counter[str] = Counter()
        self._count = 0

    def admit(self, ip: str, *, per_ip: bool = True) -> bool:
        """Take a slot for ``ip``.

        Args:
            ip: the client address.
            per_ip: whether this connection counts against ``ip``'s limit.

        Returns:
            False (and nothing taken) when a limit that applies is reached.
        """
        if self._count >= self.total:
            return False
        if per_ip:
            key = address_key(ip)
            if self._by_ip[key] >= self.per_ip:
                return False
            self._by_ip[key] += 1
        self._count += 1
        return True

    def leave_per_ip(self, ip: str) -> None:
        """Stop counting one admitted, counted connection against ``ip``'s limit.

        The connection keeps its slot in the total until :meth:`release`
        (with ``per_ip=False``).
        """
        self._drop(ip)

    def release(self, ip: str, *, per_ip: bool = True) -> None:
        """Give back a slot taken by :meth:`admit`.

        Args:
            ip: the client address.
            per_ip: whether the connection still counts against ``ip``'s
                limit (admitted with ``per_ip=True`` and never passed to
                :meth:`leave_per_ip`).
        """
        if per_ip:
            self._drop(ip)
        self._count -= 1

    def _drop(self, ip: str) -> None:
        key = address_key(ip)
        if self._by_ip[key] <= 1:
            del self._by_ip[key]
        else:
            self._by_ip[key] -= 1

    def count(self, ip: str | None = None) -> int:
        """Counted connections from ``ip``'s address (its /64 for IPv6), or every
        open connection when None."""
        return self._count if ip is None else self._by_ip.get(address_key(ip), 0)

    def is_full(self) -> bool:
        """Whether the total is reached (no connection can be admitted)."""
        return self._count >= self.total
