"""Writing to a TCP transport without waiting for the reactor's next turn.

Twisted's TCP transports buffer every ``write`` until the reactor next finds
the socket writable (``FileDescriptor.write`` says so): an ``epoll_ctl`` to
ask, a pass of the reactor loop, the ``send``, another ``epoll_ctl`` to stop
asking. For a protocol that says one thing and then waits for the peer (an
SMTP reply, a pipelined group of commands), that turn is pure latency and
CPU, paid on every round trip of every session. asyncio's transports try the
socket at once when nothing is buffered; :class:`StreamWriter` does the same
with public Twisted API only.

Knowing that "nothing is buffered" is the hard part: Twisted has no public
way to ask a transport for the size of its write buffer. So the writer knows
it from its own history: it is the only path to the transport (every write,
STARTTLS, close and abort of its owner goes through it), and it only sends
directly while none of its bytes were ever handed to ``transport.write``.
The first time the socket does not take everything (a full socket buffer),
the rest goes to Twisted's queue and every later write follows it there,
in order, for the rest of the connection. On SMTP replies and ordinary
messages that never happens; a body larger than the socket buffer costs the
fast path of that one connection.

Upstream ticket this would file (twisted/twisted): "ITransport/IConsumer:
expose the write buffer size (asyncio's ``get_write_buffer_size``), or let
``FileDescriptor.write`` send at once when nothing is buffered, as asyncio's
selector transports do". With either, this module reduces to a plain
``transport.write``; ``tests/test_netio.py`` pins the behaviour it
relies on, so an upgrade that changes it shows up there first.
"""

from __future__ import annotations

import socket

from twisted.internet import tcp
from twisted.internet.interfaces import (
    IConsumer,
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
    IPushProducer,
    ISSLTransport,
    ISystemHandle,
    ITLSTransport,
)


class IStreamTransport(ITLSTransport, IPushProducer, IConsumer, ISystemHandle):
    """A connected TCP stream as Hurricane's SMTP protocols use it: write,
    STARTTLS, abort, pause and resume reading, and producers for large
    writes. Twisted's TCP connections provide all of it (and
    ``StringTransport`` does in tests); this only names it for the type
    checker, which knows a protocol's transport as a bare ``ITransport``."""


def direct_socket(transport: object) -> socket.socket | None:
    """The socket under ``transport`` when writing to it directly is safe, else None.

    Only a plain TCP connection qualifies: not TLS (its bytes must go through
    the TLS layer), not a wrapper or a test transport (they may transform or
    record what is written). Call it before anything was written to the
    transport, and only then.

    Args:
        transport: a protocol's transport.
    """
    if not isinstance(transport, tcp.Connection) or ISSLTransport.providedBy(transport):
        return None
    handle = ISystemHandle(transport).getHandle()
    return handle if isinstance(handle, socket.socket) else None


class StreamWriter:
    """All writes of one connection, sent at once while nothing of ours is queued.

    Build it when the connection is made, before anything is written, and
    send everything through it: bytes, STARTTLS, closing and aborting. A
    socket error during a direct send is left for Twisted to meet on the
    queued write, so the connection is closed and reported the usual way.

    Args:
        transport: the connection's transport.
    """

    def __init__(self, transport: IStreamTransport) -> None:
        self.transport = transport
        #: Where direct sends go; None once anything may be queued in the
        #: transport (then, and for good, every write goes through it).
        self._socket = direct_socket(transport)

    @property
    def direct(self) -> bool:
        """True while writes may still go straight to the socket."""
        return self._socket is not None

    def write(self, data: bytes) -> None:
        """Send ``data``: at once when possible, else through the transport's queue.

        Args:
            data: octets to send.
        """
        sock = self._socket
        if sock is not None and data:
            try:
                sent = sock.send(data)
            except OSError:
                sent = 0  # EAGAIN, or an error the queued write will meet and report
            if sent >= len(data):
                return
            data = data[sent:]
            self._socket = None
        self.transport.write(data)

    def queued(self) -> None:
        """Someone else writes to the transport from now on (a producer): stop
        sending directly so that nothing overtakes what they queue."""
        self._socket = None

    def start_tls(
        self, context: IOpenSSLClientConnectionCreator | IOpenSSLServerConnectionCreator,
    ) -> None:
        """Start TLS on the transport; from now on the TLS layer gets every byte.

        Args:
            context: the context factory for ``ITLSTransport.startTLS``.
        """
        self._socket = None
        ITLSTransport(self.transport).startTLS(context)

    def lose_connection(self) -> None:
        """Close after the pending writes."""
        self._socket = None
        self.transport.loseConnection()

    def abort(self) -> None:
        """Close at once; nothing written afterwards may reach the peer."""
        self._socket = None
        self.transport.abortConnection()

    def connection_lost(self) -> None:
        """The connection is gone: never touch its socket again."""
        self._socket = None
