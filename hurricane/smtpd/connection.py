"""The two pieces of I/O an ESMTP server connection needs besides reading: replies out, and
the idle timer.

:class:`ReplyWriter` formats replies and decides when they leave: replies
produced while a read (or a hook's late answer and the pipelined commands
behind it) is being processed are gathered and leave in one write, so a
pipelined group is answered in one packet (RFC 2920) and no reply waits for
the client's delayed ACK of the previous one (Nagle). Every byte goes through
one :class:`~hurricane.netio.StreamWriter`.

:class:`IdleTimer` is the per-command timeout on an injected clock (the
stock ``TimeoutMixin`` schedules on the global reactor unless overridden,
and is untyped).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from hurricane.netio import StreamWriter

__all__ = ["IdleTimer", "ReplyWriter"]


def render(code: int, lines: Sequence[str]) -> bytes:
    """One reply, possibly multi-line (``250-...`` then ``250 ...``), as octets."""
    if len(lines) == 1:  # nearly every reply
        return f"{code:03d} {lines[0]}\r\n".encode("ascii", "replace")
    last = len(lines) - 1
    return "".join([f"{code:03d}{' ' if i == last else '-'}{text}\r\n"
                    for i, text in enumerate(lines)]).encode("ascii", "replace")


class ReplyWriter:
    """Sends the replies of one connection, gathering them while corked.

    Args:
        writer: the connection's writer.
    """

    def __init__(self, writer: StreamWriter) -> None:
        self.writer = writer
        self._pending: list[bytes] = []
        self._corked = 0
        self._closed = False

    def cork(self) -> None:
        """Gather replies until the matching :meth:`uncork` (calls nest)."""
        self._corked += 1

    def uncork(self) -> None:
        """End one :meth:`cork`; the outermost one sends what was gathered."""
        self._corked -= 1
        if not self._corked and self._pending:
            self.flush()

    def send(self, code: int, lines: Sequence[str]) -> None:
        """Send one reply now, or with the others at the end of the current cork.

        Args:
            code: the reply code.
            lines: the text of each line (one line for most replies).
        """
        if self._closed:
            return
        data = render(code, lines)
        if self._corked:
            self._pending.append(data)
        else:
            self.writer.write(data)

    def flush(self) -> None:
        """Send the gathered replies now (before STARTTLS, before closing)."""
        if self._pending:
            data = b"".join(self._pending)
            self._pending = []
            if not self._closed:
                self.writer.write(data)

    def close(self) -> None:
        """The connection is gone or aborted: drop what is gathered and what comes."""
        self._closed = True
        self._pending = []


class IdleTimer:
    """Calls ``on_timeout`` when ``seconds`` pass without :meth:`reset`, while running.

    Args:
        clock: where the timer is scheduled.
        seconds: the idle time allowed.
        on_timeout: called once when it runs out.
    """

    def __init__(self, clock: IReactorTime, seconds: float,
                 on_timeout: Callable[[], None]) -> None:
        self.clock = clock
        self.seconds = seconds
        self.on_timeout = on_timeout
        self._call: IDelayedCall | None = None

    @property
    def running(self) -> bool:
        """True while the timer counts."""
        return self._call is not None

    def start(self) -> None:
        """Count ``seconds`` from now (again, if already running)."""
        if self._call is not None:
            self._call.reset(self.seconds)
        else:
            self._call = self.clock.callLater(self.seconds, self._expired)

    def reset(self) -> None:
        """Input arrived: count from now, if running (a stopped timer stays stopped)."""
        if self._call is not None:
            self._call.reset(self.seconds)

    def stop(self) -> None:
        """Stop counting (while we work the client waits on us, not the reverse)."""
        if self._call is not None:
            self._call.cancel()
            self._call = None

    def _expired(self) -> None:
        self._call = None
        self.on_timeout()
