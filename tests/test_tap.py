"""tap.py's reactor handling: narrowed with a check, stopped by signals with public names."""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

from twisted.internet.error import ReactorNotRunning
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from hurricane.reactors import IServerReactor, missing_interfaces, server_reactor
from hurricane.tap import STOP_SIGNALS, stop_cleanly_on_signals


class FakeReactor:
    """Records start-up hooks and calls from threads; stops once, like a reactor."""

    def __init__(self) -> None:
        self.startup: list[Callable[[], object]] = []
        self.from_thread: list[Callable[[], object]] = []
        self.stops = 0

    def callWhenRunning(self, f: Callable[[], object]) -> None:  # noqa: N802 - Twisted
        """Keep the hook."""
        self.startup.append(f)

    def callFromThread(self, f: Callable[[], object]) -> None:  # noqa: N802 - Twisted
        """Keep the call."""
        self.from_thread.append(f)

    def stop(self) -> None:
        """Stop; a second stop raises, as a reactor's does."""
        self.stops += 1
        if self.stops > 1:
            raise ReactorNotRunning()


class StopSignalTests(SynchronousTestCase):
    """SIGTERM and SIGINT stop the reactor without leaving a signal for twistd to re-raise."""

    def test_installed_once_running(self) -> None:
        """The handlers replace the reactor's own only once it runs, for both signals."""
        reactor = FakeReactor()
        installed: dict[int, Any] = {}
        stop_cleanly_on_signals(reactor, install=installed.__setitem__)  # type: ignore[arg-type]
        self.assertEqual(installed, {})
        for hook in reactor.startup:
            hook()
        self.assertEqual(sorted(installed), sorted(STOP_SIGNALS))
        self.assertEqual(set(STOP_SIGNALS), {signal.SIGTERM, signal.SIGINT})

    def test_handler_stops_from_the_reactor_thread(self) -> None:
        """A signal stops the reactor through callFromThread; a second one is harmless."""
        reactor = FakeReactor()
        installed: dict[int, Any] = {}
        stop_cleanly_on_signals(reactor, install=installed.__setitem__)  # type: ignore[arg-type]
        for hook in reactor.startup:
            hook()
        installed[signal.SIGTERM](signal.SIGTERM, None)
        self.assertEqual(reactor.stops, 0)  # nothing happens in the signal handler itself
        installed[signal.SIGINT](signal.SIGINT, None)
        for call in reactor.from_thread:
            call()
        self.assertEqual(reactor.stops, 2)
        self.assertFalse(hasattr(reactor, "_exitSignal"))


class ServerReactorTests(SynchronousTestCase):
    """server_reactor checks the interfaces instead of casting blindly."""

    def test_global_reactor(self) -> None:
        """The global reactor provides everything the server asks of it."""
        from twisted.internet import reactor

        self.assertIs(server_reactor(reactor), reactor)
        self.assertEqual(missing_interfaces(reactor, IServerReactor), [])

    def test_missing_named(self) -> None:
        """A reactor without UDP or threads is refused, naming what it lacks."""
        with self.assertRaises(TypeError) as raised:
            server_reactor(MemoryReactorClock())
        self.assertIn("IReactorUDP", str(raised.exception))
        self.assertIn("IReactorThreads", str(raised.exception))
