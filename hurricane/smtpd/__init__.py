"""The hardened ESMTP server shared by the submission and bounce listeners (and the sink).

The protocol is our own (:mod:`~hurricane.smtpd.protocol` for the commands,
:mod:`~hurricane.smtpd.channel` for the connection under them), built on
Twisted's public ``Protocol``: DESIGN.md ("Known traps in the libraries")
lists what twisted.mail's ``ESMTP`` gets wrong. The decisions that do not
need a connection (address syntax, HELO syntax, command framing and parsing,
connection counting, the DATA state machine, the Received header) live in
plain objects in this package.
"""

__all__ = [
    "address",
    "channel",
    "commands",
    "connection",
    "data",
    "limits",
    "protocol",
    "reply",
    "session",
    "tls",
]
