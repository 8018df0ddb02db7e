"""The hardened ESMTP server base shared by the submission and bounce listeners.

``twisted.mail.smtp.ESMTP`` is subclassed, but its line framing, DATA mode,
STARTTLS and end-of-message handling are replaced: DESIGN.md ("Known traps in
the libraries") lists what the stock code gets wrong. The decisions that do
not need a connection (address syntax, HELO syntax, connection counting, the
DATA state machine) live in plain objects in this package.
"""

__all__ = [
    "address",
    "data",
    "limits",
    "protocol",
    "reply",
    "tls",
]
