"""The outbound ESMTP client: one host, one session, replies turned into data.

Three layers, bottom up, one module each:

- :mod:`hurricane.outbound.wire`: :class:`SMTPClientProtocol` speaks the
  wire (command lines out, bounded reply parsing in, in order; one reply
  timer; bodies through the DATA encoder of :mod:`hurricane.outbound.dataenc`).
- :mod:`hurricane.outbound.session`: :class:`SMTPConnection` runs the
  session (greeting, EHLO/HELO, STARTTLS per policy, MAIL/RCPT/DATA through
  one :class:`~hurricane.outbound.session.CommandPipeline` whether the server
  pipelines or not) and turns every outcome into data.
- :mod:`hurricane.outbound.connector`: :class:`Connector` opens TCP
  connections (timeouts, source address, TLS trust) and hands back greeted
  sessions.

This module names the client's public surface in one place for its users
(the server, the sink, the demo).
"""

from __future__ import annotations

from hurricane.outbound.connector import Connector
from hurricane.outbound.session import QUIT_TIMEOUT, SMTPConnection
from hurricane.outbound.tls import IOpenSSLTrustRoot
from hurricane.outbound.wire import BODY_CHUNK, MAX_REPLY_LINE, SessionError, SMTPClientProtocol

__all__ = [
    "BODY_CHUNK",
    "MAX_REPLY_LINE",
    "QUIT_TIMEOUT",
    "Connector",
    "IOpenSSLTrustRoot",
    "SMTPClientProtocol",
    "SMTPConnection",
    "SessionError",
]
