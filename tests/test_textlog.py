"""hurricane.textlog: twistd's text log lines, made for less CPU."""

from __future__ import annotations

import io
import os
import sys
import tempfile
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.application.service import Application
from twisted.logger import (
    FileLogObserver,
    ILogObserver,
    Logger,
    LogLevel,
    LogPublisher,
    formatEventAsClassicLogText,
)
from twisted.python.failure import Failure
from twisted.python.logfile import LogFile
from twisted.trial.unittest import SynchronousTestCase

from hurricane.textlog import format_event, twistd_observer

T = 1_795_000_000.25


def event(fmt: Any, **fields: Any) -> dict[str, Any]:
    """An event as twisted.logger.Logger.emit builds it."""
    base: dict[str, Any] = {"log_format": fmt, "log_time": T, "log_level": LogLevel.info,
                            "log_namespace": "hurricane.test", "log_logger": None,
                            "log_source": None}
    base.update(fields)
    return base


def _boom() -> Failure:
    try:
        raise ZeroDivisionError("boom")
    except ZeroDivisionError:
        return Failure()
    raise AssertionError("unreachable")


CASES: list[dict[str, Any]] = [
    event("queued {queue_id} from {client} for {count} recipients",
          queue_id="4AbCdEfGhJ", client="127.0.0.1", count=1),
    event("repr {x!r} spec {n:05d} attr {e.args[0]}", x="a'b", n=42, e=ValueError("v")),
    event("two\nlines {x}", x="and\nthree"),
    event("unicode {x}", x="déjà vu ✓"),
    event("{x}", x=""),  # renders empty: no line at all
    event("with system {x}", x=1, log_system="pool-3"),
    event("system None {x}", x=1, log_system=None),
    event("no level {x}", x=1, log_level=None),
    event("no namespace {x}", x=1, log_namespace=None),
    event("missing {absent}"),
    event("call {f()}", f=lambda: "called"),
    event("failure {x}", x=1, log_failure=_boom()),
    event(None, x=1),
    event(b"bytes format {x}", x=1),
    event("no time {x}", x=1, log_time=None),
    event("int time {x}", x=1, log_time=1_795_000_000),
    event("braces {{literal}} {x}", x=1),
    event("bad spec {x:d}", x="not a number"),
]


class FormatEventTests(SynchronousTestCase):
    """format_event gives exactly twistd's line (formatEventAsClassicLogText)."""

    def test_cases(self) -> None:
        """Plain, repr, spec, attributes, several lines, systems, levels, failures,
        missing keys, call syntax, odd formats and times: the same text."""
        for e in CASES:
            self.assertEqual(format_event(dict(e)), formatEventAsClassicLogText(dict(e)),
                             e["log_format"])

    def test_time_stamp_follows_the_clock(self) -> None:
        """The per-second cache never repeats an earlier second's stamp."""
        for when in (T, T + 0.5, T + 1.0, T - 3600.0, T + 86400 * 180, T + 1.999):
            e = event("at {x}", x=when, log_time=when)
            self.assertEqual(format_event(dict(e)), formatEventAsClassicLogText(dict(e)))

    def test_last_microsecond_and_time_zones(self) -> None:
        """A time that rounds up to the next second, before 1970, and zones with
        offsets and daylight saving: the stamp Twisted makes."""
        import time as _time

        def check() -> None:
            for when in (1000.2, 1000.9999996, 1000.9999994, 1001.0, -0.5, 0.5,
                         1_774_746_000.5, 1_774_749_600.5, T):
                e = event("at {x}", x=1, log_time=when)
                self.assertEqual(format_event(dict(e)), formatEventAsClassicLogText(dict(e)),
                                 when)

        saved = os.environ.get("TZ")

        def restore() -> None:
            if saved is None:
                os.environ.pop("TZ", None)
            else:
                os.environ["TZ"] = saved
            _time.tzset()

        self.addCleanup(restore)
        for zone in ("UTC", "Europe/Dublin", "America/New_York", "Australia/Lord_Howe"):
            os.environ["TZ"] = zone
            _time.tzset()
            check()

    def test_dunder_and_base_exceptions(self) -> None:
        """A dunder attribute, and a __format__ raising a BaseException: as Twisted."""

        class Odd(BaseException):
            pass

        class Bad:
            def __format__(self, spec: str) -> str:
                raise Odd("no")

        for e in (event("{e.__class__.__name__}", e=ValueError("v")),
                  event("bad {b}", b=Bad())):
            self.assertEqual(format_event(dict(e)), formatEventAsClassicLogText(dict(e)))

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.sampled_from(["{a}", "{b!r}", "{c:>6}", "text ", "\n", "{{", "}}", "é",
                                     "{a} {b}"]), max_size=12),
           st.text(max_size=20), st.one_of(st.integers(), st.text(max_size=10)),
           st.sampled_from([None, "sys", ""]))
    def test_any_format(self, parts: list[str], a: str, b: Any, system: str | None) -> None:
        """Random formats and values: the same text as Twisted's."""
        fields: dict[str, Any] = {"a": a, "b": b, "c": "x"}
        if system is not None:
            fields["log_system"] = system
        e = event("".join(parts), **fields)
        self.assertEqual(format_event(dict(e)), formatEventAsClassicLogText(dict(e)))

    def test_observer_writes_the_lines(self) -> None:
        """Through a Logger: one line per event, as twistd's observer writes it."""
        ours, theirs = io.StringIO(), io.StringIO()
        publisher = LogPublisher(FileLogObserver(ours, format_event),
                                 FileLogObserver(theirs, formatEventAsClassicLogText))
        log = Logger(namespace="hurricane.test", observer=publisher)
        log.info("delivery {delivery_id} to {recipient}: {state}", delivery_id=7,
                 recipient="a@example.org", state="delivered")
        log.failure("boom", _boom())
        self.assertEqual(ours.getvalue(), theirs.getvalue())
        self.assertIn("delivery 7 to a@example.org: delivered", ours.getvalue())


def Options(**values: Any) -> Any:  # noqa: N802 - stands for twistd's ServerOptions
    """twistd's (Unix) ServerOptions with these values, as if from the command line."""
    from twisted.scripts.twistd import ServerOptions

    options = ServerOptions()
    options.update(values)
    return options


class TwistdObserverTests(SynchronousTestCase):
    """twistd_observer writes where twistd would, and leaves syslog and --logger alone."""

    def test_left_to_twistd(self) -> None:
        """No twistd, --syslog, --logger, or a daemon told to log to stdout: None."""
        self.assertIsNone(twistd_observer(None))
        # `twist` (not twistd) logs by itself, with options of its own.
        from twisted.application.twist._options import TwistOptions

        self.assertIsNone(twistd_observer(TwistOptions()))
        self.assertIsNone(twistd_observer(Options(syslog=1, nodaemon=1)))
        self.assertIsNone(twistd_observer(Options(logger="x.y", nodaemon=1)))
        self.assertIsNone(twistd_observer(Options(logfile="-", nodaemon=0)))

    def test_stdout_with_nodaemon(self) -> None:
        """``-n`` (with no --logfile, or --logfile -): standard output."""
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        for options in (Options(nodaemon=1, logfile=None), Options(nodaemon=1, logfile="-")):
            observer = twistd_observer(options)
            assert observer is not None
            observer(event("hello {x}", x=1))
        self.assertEqual(out.getvalue().count("hello 1\n"), 2)

    def test_log_file(self) -> None:
        """--logfile PATH: that file, a LogFile (rotated like twistd's)."""
        import signal

        previous = signal.getsignal(signal.SIGUSR1)
        self.addCleanup(signal.signal, signal.SIGUSR1, previous)
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)
        path = os.path.join(tempfile.mkdtemp(), "t.log")
        observer = twistd_observer(Options(nodaemon=1, logfile=path))
        assert isinstance(observer, FileLogObserver)
        observer(event("to the file {x}", x=2))
        self.assertIsInstance(observer._outFile, LogFile)
        observer._outFile.close()
        with open(path) as fp:
            self.assertTrue(fp.read().endswith("to the file 2\n"))
        self.assertTrue(callable(signal.getsignal(signal.SIGUSR1)))

    def test_application_gets_the_observer(self) -> None:
        """makeService under twistd options: the application's ILogObserver is ours."""
        from twisted.scripts.twistd import ServerOptions

        from hurricane import app, tap
        from hurricane.service import HurricaneService
        from hurricane.store.memory import MemoryStore

        # The service tree itself is not the point (and would start a
        # resolver on the global reactor): the root alone.
        self.patch(app, "build_service",
                   lambda config, reactor, on_fatal: HurricaneService(MemoryStore(), on_fatal))
        config = ServerOptions()
        config.parseOptions(["-n", "--pidfile=", "hurricane"])
        service = tap.makeService(config.subOptions)
        self.assertIsInstance(service.log_observer, FileLogObserver)
        application = Application("hurricane")
        service.setServiceParent(application)
        self.assertIs(application.getComponent(ILogObserver), service.log_observer)

        config = ServerOptions()
        config.parseOptions(["-n", "--pidfile=", "--syslog", "hurricane"])
        service = tap.makeService(config.subOptions)
        self.assertIsNone(service.log_observer)
        application = Application("hurricane")
        service.setServiceParent(application)
        self.assertIsNone(application.getComponent(ILogObserver, None))

    def test_cheaper_than_twisted(self) -> None:
        """Same line, less work: fewer Python function calls than Twisted's formatter."""
        import cProfile
        import pstats

        e = CASES[0]

        def calls(fn: Any) -> int:
            profile = cProfile.Profile()
            profile.enable()
            for _ in range(10):
                fn(dict(e))
            profile.disable()
            return int(pstats.Stats(profile).total_calls)  # type: ignore[attr-defined]

        format_event(dict(e))  # warm the time stamp cache
        self.assertLess(calls(format_event) * 3, calls(formatEventAsClassicLogText))


class UtcStampTests(SynchronousTestCase):
    """utc_stamp: ISO 8601 in UTC to the millisecond, whatever the local time zone."""

    def test_values(self) -> None:
        """The epoch, a fraction (cut, not rounded up past the second) and a later day."""
        from hurricane.textlog import utc_stamp

        self.assertEqual(utc_stamp(0.0), "1970-01-01T00:00:00.000Z")
        self.assertEqual(utc_stamp(1.9996), "1970-01-01T00:00:01.999Z")
        self.assertEqual(utc_stamp(1e9 + 0.25), "2001-09-09T01:46:40.250Z")
        self.assertEqual(utc_stamp(1e9 + 1), "2001-09-09T01:46:41.000Z")
        self.assertEqual(utc_stamp(None), "-")
