"""Who may relay through the submission listener, and when AUTH is offered. Pure."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from hurricane.smtp_reply import Reply
from hurricane.smtpd.protocol import is_loopback

RELAY_DENIED = Reply(550, "5.7.1", "Error: relay access denied")
AUTH_NEEDS_TLS = Reply(538, "5.7.11", "Error: encryption required for authentication")


class SubmissionPolicy:
    """Relay and AUTH decisions for one submission listener.

    Args:
        trusted_networks: CIDRs whose clients may relay without AUTH.
        require_auth: when True, only authenticated clients may relay.
    """

    def __init__(self, trusted_networks: Sequence[str], require_auth: bool = False) -> None:
        self.networks = [ipaddress.ip_network(n, strict=False) for n in trusted_networks]
        self.require_auth = require_auth

    def is_trusted(self, ip: str) -> bool:
        """True when ``ip`` is in a trusted network."""
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return any(addr.version == net.version and addr in net for net in self.networks)

    def may_relay(self, ip: str, user: str | None) -> bool:
        """True when a client at ``ip`` (authenticated as ``user``) may send anywhere."""
        if user is not None:
            return True
        return not self.require_auth and self.is_trusted(ip)

    def auth_offered(self, ip: str, tls: bool) -> bool:
        """AUTH is offered only over TLS, or to a loopback client (nothing to sniff)."""
        return tls or is_loopback(ip)
