"""The reply writer and the idle timer of a server connection, on their own."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from hurricane.netio import StreamWriter
from hurricane.smtpd.connection import IdleTimer, ReplyWriter, render


class _Recording(StringTransport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        super().write(data)


class ReplyWriterTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.t = _Recording()
        self.replies = ReplyWriter(StreamWriter(self.t))

    def test_render(self) -> None:
        """A multi-line reply uses ``code-`` on every line but the last."""
        self.assertEqual(render(250, ["mx Hello", "PIPELINING", "8BITMIME"]),
                         b"250-mx Hello\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
        self.assertEqual(render(334, [""]), b"334 \r\n")

    def test_uncorked_replies_leave_at_once(self) -> None:
        """Without a cork, each reply is one write, at once."""
        self.replies.send(250, ["2.0.0 Ok"])
        self.replies.send(221, ["2.0.0 Bye"])
        self.assertEqual(self.t.writes, [b"250 2.0.0 Ok\r\n", b"221 2.0.0 Bye\r\n"])

    def test_corked_replies_leave_together(self) -> None:
        """Replies sent while corked (nested corks too) leave in one write at the last uncork."""
        self.replies.cork()
        self.replies.send(250, ["2.1.0 Ok"])
        self.replies.cork()
        self.replies.send(250, ["2.1.5 Ok"])
        self.replies.uncork()
        self.assertEqual(self.t.writes, [])
        self.replies.send(354, ["End data with <CR><LF>.<CR><LF>"])
        self.replies.uncork()
        self.assertEqual(self.t.writes, [b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
                                         b"354 End data with <CR><LF>.<CR><LF>\r\n"])

    def test_flush_inside_a_cork(self) -> None:
        """flush() sends what is gathered now (the 220 before TLS starts)."""
        self.replies.cork()
        self.replies.send(220, ["2.0.0 Ready to start TLS"])
        self.replies.flush()
        self.assertEqual(self.t.writes, [b"220 2.0.0 Ready to start TLS\r\n"])
        self.replies.uncork()
        self.assertEqual(len(self.t.writes), 1)

    def test_nothing_after_close(self) -> None:
        """Once closed, gathered and later replies are dropped."""
        self.replies.cork()
        self.replies.send(250, ["2.0.0 Ok"])
        self.replies.close()
        self.replies.uncork()
        self.replies.send(250, ["2.0.0 Ok"])
        self.assertEqual(self.t.writes, [])


class IdleTimerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.fired: list[float] = []
        self.timer = IdleTimer(self.clock, 30, lambda: self.fired.append(self.clock.seconds()))

    def test_fires_after_idle_time(self) -> None:
        """Started and left alone, it fires once after its time."""
        self.timer.start()
        self.clock.advance(29)
        self.assertEqual(self.fired, [])
        self.clock.advance(1)
        self.assertEqual(self.fired, [30])
        self.assertFalse(self.timer.running)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_reset_counts_from_now(self) -> None:
        """reset() while running counts the whole time again."""
        self.timer.start()
        self.clock.advance(20)
        self.timer.reset()
        self.clock.advance(29)
        self.assertEqual(self.fired, [])
        self.clock.advance(1)
        self.assertEqual(self.fired, [50])

    def test_reset_does_not_start(self) -> None:
        """A stopped timer stays stopped on reset() (input while we work on a hook)."""
        self.timer.reset()
        self.timer.start()
        self.timer.stop()
        self.timer.reset()
        self.clock.advance(100)
        self.assertEqual(self.fired, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_start_again(self) -> None:
        """start() while running restarts the count instead of adding a second call."""
        self.timer.start()
        self.clock.advance(10)
        self.timer.start()
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(30)
        self.assertEqual(self.fired, [40])
