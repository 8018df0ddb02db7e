"""twistd's text log, the same lines for less CPU.

twistd writes every event through ``formatEventAsClassicLogText``: an
RFC 3339 time stamp made with ``strftime`` and the message rendered by a
pure-Python ``string.Formatter``, about 20 us an event here. A mail server
writes a line for every message queued, delivered or returned, so that is
several percent of the reactor's time at volume. :func:`format_event` gives
byte-for-byte the same line: the time stamp is made once per second and a
plain format string goes through ``str.format_map`` (in C); anything else
(call syntax, a missing key, a failure, flattened events) takes Twisted's
own path.

:func:`twistd_observer` picks the same destination twistd would (standard
output with ``-n``, else ``--logfile``, rotated on SIGUSR1 as twistd does)
and leaves ``--syslog`` and ``--logger`` to twistd. twistd uses an
``ILogObserver`` component of the application instead of its own observer
(``twisted.application.app.AppLogger.start``);
:class:`hurricane.service.HurricaneService` sets it.

Two more observers serve ``twistd --logger`` and ``[server] json_log``
(:mod:`hurricane.admin.logs`):

- :func:`utc_text_observer`: the same lines with an ISO 8601 UTC time stamp
  to the millisecond (``2026-03-01T12:34:56.789Z``), one clock for every
  node whatever its time zone, and sortable as text;
- :func:`json_observer`: one JSON object per line, every format field kept
  (``recipient``, ``queue_id``...) for queries, plus ``log_text``, the
  message as rendered (a failure's traceback included). A JSON event keeps
  its template (``log_format``: "delivered {queue_id} to {recipient}"); a
  reader without Twisted's formatter (``jq``) would print the template
  unfilled. Twisted's bridge for legacy ``log.msg`` events already puts
  their text in ``log_text``: the same field now holds it for every event.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable
from datetime import datetime
from types import FrameType
from typing import IO, cast

from twisted.application import app
from twisted.logger import (
    FileLogObserver,
    ILogObserver,
    LogEvent,
    eventAsText,
    formatEventAsClassicLogText,
    jsonFileLogObserver,
    timeFormatRFC3339,
)
from twisted.python.logfile import LogFile
from zope.interface import provider

__all__ = ["format_event", "format_event_utc", "json_observer", "twistd_observer",
           "utc_stamp", "utc_text_observer"]

#: (second, its stamp): one tuple, so a thread logging meanwhile sees a pair.
_stamp_cache: tuple[int, str] = (-1, "")


def _stamp(when: float) -> str:
    """``formatTime(when)``: RFC 3339 in local time, made once per second."""
    global _stamp_cache
    second = int(when)
    # datetime rounds to the microsecond: the last half microsecond of a
    # second (and any time before 1970) is not cached.
    if second == _stamp_cache[0] and when - second < 0.9999995:
        return _stamp_cache[1]
    # astimezone() gives the local offset of that instant, as
    # FixedOffsetTimeZone.fromLocalTimeStamp does.
    text = datetime.fromtimestamp(when).astimezone().strftime(timeFormatRFC3339)
    if when >= 0 and when - second < 0.9999995:
        _stamp_cache = (second, text)
    return text


#: (second, its UTC stamp without the fraction), as _stamp_cache.
_utc_cache: tuple[int, str] = (-1, "")


def utc_stamp(when: float | None) -> str:
    """``when`` as ISO 8601 in UTC to the millisecond: ``2026-03-01T12:34:56.789Z``.

    Args:
        when: epoch seconds (None, for an event without a time, gives "-",
            as Twisted's own formatTime does).
    """
    global _utc_cache
    if when is None:
        return "-"
    millis = int(when * 1000)
    second, fraction = divmod(millis, 1000)
    if second != _utc_cache[0]:
        _utc_cache = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return f"{_utc_cache[1]}.{fraction:03d}Z"


def _system(event: LogEvent) -> str:
    system = event.get("log_system")
    if system is None:
        level = event.get("log_level")
        return f"{event.get('log_namespace', '-')}#{'-' if level is None else level.name}"
    return str(system)


def format_event(event: LogEvent) -> str | None:
    """The line ``formatEventAsClassicLogText(event)`` gives, or None for an empty event."""
    return _format(event, _stamp, None)


def format_event_utc(event: LogEvent) -> str | None:
    """The same line with :func:`utc_stamp` as its time stamp."""
    return _format(event, utc_stamp, utc_stamp)


def _format(event: LogEvent, stamp: Callable[[float], str],
            twisted_stamp: Callable[[float | None], str] | None) -> str | None:
    """A classic log line with ``stamp(time)``; ``twisted_stamp`` is the formatTime
    given to Twisted's own path (None: its default, the local RFC 3339 time)."""
    fmt = event.get("log_format")
    when = event.get("log_time")
    if (type(fmt) is not str or "log_failure" in event or "log_flattened" in event
            or type(when) is not float or type(event.get("log_system", "")) is not str
            or "__" in fmt):
        # Twisted wraps each field for its call syntax, so a dunder attribute
        # ("{e.__class__}") names the wrapper: only its own path says the same.
        return _classic(event, twisted_stamp)
    try:
        text = fmt.format_map(event)
    except BaseException:
        # "{f()}" call syntax, a missing key, a failing __format__: Twisted's
        # formatter says what it can (it catches BaseException too).
        return _classic(event, twisted_stamp)
    if not text:
        return None
    line = f"{stamp(when)} [{_system(event)}] {text}"
    return line.replace("\n", "\n\t") + "\n"


def _classic(event: LogEvent, stamp: Callable[[float | None], str] | None) -> str | None:
    if stamp is None:
        return formatEventAsClassicLogText(event)
    return formatEventAsClassicLogText(event, formatTime=stamp)


def utc_text_observer(out: IO[str]) -> ILogObserver:
    """Classic text lines with ISO 8601 UTC time stamps to ``out``."""
    return FileLogObserver(out, format_event_utc)


def json_observer(out: IO[str]) -> ILogObserver:
    """One JSON object per line (no RFC 7464 separator) to ``out``, each with its
    rendered message in ``log_text`` (see the module docstring)."""
    write = jsonFileLogObserver(out, recordSeparator="")

    @provider(ILogObserver)
    def observe(event: LogEvent) -> None:
        if "log_text" in event:
            write(event)  # a legacy event: Twisted's bridge put its text there
            return
        # A copy: other observers of the same event must not see our field.
        write({**event, "log_text": eventAsText(event, includeTimestamp=False,
                                                includeSystem=False)})

    return cast(ILogObserver, observe)


def twistd_observer(twistd_options: object) -> ILogObserver | None:
    """A text observer writing where twistd's own would, or None to leave twistd's.

    Args:
        twistd_options: twistd's ``ServerOptions`` (the plugin options'
            ``parent``); None outside twistd.
    """
    # twistd's options only: `twist` names its options differently and logs
    # by itself.
    if not isinstance(twistd_options, app.ServerOptions) or sys.platform == "win32":
        return None
    try:
        if twistd_options.get("logger") or twistd_options.get("syslog"):
            return None
        name = twistd_options.get("logfile")
        nodaemon = twistd_options.get("nodaemon")
    except (AttributeError, TypeError):
        return None
    out: IO[str]
    if name == "-" or (nodaemon and not name):
        if not nodaemon:
            return None  # twistd refuses: "Daemons cannot log to stdout"
        out = sys.stdout
    else:
        logfile = LogFile.fromFullPath(name or "twistd.log")  # writes like a text file
        out = logfile
        if not signal.getsignal(signal.SIGUSR1):
            def rotate(signum: int, frame: FrameType | None) -> None:
                from twisted.internet import reactor

                reactor.callFromThread(logfile.rotate)  # type: ignore[attr-defined]

            signal.signal(signal.SIGUSR1, rotate)
    return FileLogObserver(out, format_event)
