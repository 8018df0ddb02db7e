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


def write_now(transport: Any, data: bytes) -> None:
    """``transport.write(data)``, sending at once when that cannot reorder anything.

    Only a plain (not TLS) TCP connection that is open (not closing, not
    aborted), has nothing queued and no producer attached is written to
    directly; every other transport,
    and whatever part of ``data`` the socket does not take, goes through
    ``transport.write``. A socket error is left for Twisted to find on its
    queued write, so the connection is closed and reported the usual way.

    Args:
        transport: the protocol's transport.
        data: octets to send.
    """
    if (
        data
        and isinstance(transport, tcp.Connection)
        and not transport.TLS
        and transport.connected
        and not transport.disconnecting
        and not getattr(transport, "_aborting", False)
        and not transport._writeDisconnected
        and transport.producer is None
        and not transport._tempDataBuffer
        and transport.offset == len(transport.dataBuffer)
    ):
        try:
            sent = transport.socket.send(data)
        except OSError:
            sent = 0  # EAGAIN, or an error the queued write will meet and report
        if sent >= len(data):
            return
        data = data[sent:]
    transport.write(data)
