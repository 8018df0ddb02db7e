"""Writing to a TCP transport without waiting for the reactor's next turn.

Twisted's TCP transports queue every ``write`` and send it when the reactor
next finds the socket writable: an ``epoll_ctl`` to ask, a pass of the
reactor loop, the ``send``, another ``epoll_ctl`` to stop asking. For a
protocol that says one thing and then waits for the peer (an SMTP reply, a
pipelined group of commands), that turn is pure latency and CPU, paid on
every round trip of every session. :func:`write_now` tries the socket at
once when nothing else is queued, as asyncio's transports do, and hands
whatever is left to Twisted's own queue.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import tcp
from twisted.internet.interfaces import IConsumer, IPushProducer, ISystemHandle, ITLSTransport


class IStreamTransport(ITLSTransport, IPushProducer, IConsumer, ISystemHandle):
    """A connected TCP stream as Hurricane's SMTP protocols use it: write,
    STARTTLS, abort, pause and resume reading, and producers for large
    writes. Twisted's TCP connections provide all of it (and
    ``StringTransport`` does in tests); this only names it for the type
    checker, which knows a protocol's transport as a bare ``ITransport``."""

#: The private parts of Twisted's TCP transport that write_now reads. Should
#: a Twisted release rename one, write_now falls back to transport.write
#: (slower, never wrong) instead of guessing.
_KNOWN_TRANSPORT = all(hasattr(tcp.Connection, name) for name in (
    "TLS", "connected", "disconnecting", "_aborting", "_writeDisconnected", "producer",
    "dataBuffer", "offset"))


def write_now(transport: Any, data: bytes) -> None:
    """``transport.write(data)``, sending at once when that cannot reorder anything.

    Only a plain (not TLS) TCP connection that is open (not closing, not
    aborted), has nothing queued and no producer attached is written to
    directly; every other transport, and whatever part of ``data`` the
    socket does not take, goes through ``transport.write``. A socket error
    is left for Twisted to find on its queued write, so the connection is
    closed and reported the usual way.

    Args:
        transport: the protocol's transport.
        data: octets to send.
    """
    if (
        data
        and _KNOWN_TRANSPORT
        and isinstance(transport, tcp.Connection)
        and not transport.TLS
        and transport.connected
        and not transport.disconnecting
        and not transport._aborting
        and not transport._writeDisconnected
        and transport.producer is None
        and getattr(transport, "_tempDataBuffer", None) == []
        and transport.offset == len(transport.dataBuffer)
        and hasattr(transport, "socket")
    ):
        try:
            sent = transport.socket.send(data)
        except OSError:
            sent = 0  # EAGAIN, or an error the queued write will meet and report
        if sent >= len(data):
            return
        data = data[sent:]
    transport.write(data)
